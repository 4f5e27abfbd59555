"""The Intel 82540EM (e1000) NIC: ``E1000`` is the PCI function; see ``device`` for the contract
with the machine (transmit callback, ``receive``/``can_receive``/``on_rx_space``, ``tick``).

The package is split by concern: ``regs`` (the register map as a table), ``eeprom`` (contents
and the Microwire bit-banging), ``phy`` (the M88 PHY behind MDIC), ``offload`` (checksums, TSO,
RX checksum status) and ``device`` (rings, interrupts, PCI).

A machine wires it like this::

    nic = E1000(mac, backend.send, rom=ipxe_rom, on_rx_space=backend.rx_ready)
    backend.attach(machine.io, machine.lock, nic.receive)   # False from receive: hold, retry
    pci.place(dev, 0, nic)                # BAR0 MMIO, BAR1 I/O and the ROM follow the guest
    nic.msi_sender = msi_sender           # for guests that enable MSI
    machine.devices["e1000"] = nic        # so the periodic device tick calls nic.tick()
"""

from .device import (
    CLASS_ETHERNET,
    DEVICE_ID,
    E1000,
    REVISION,
    SUBSYSTEM_ID,
    SUBSYSTEM_VENDOR_ID,
    VENDOR_ID,
    E1000Snapshot,
    NicState,
    check_mac,
    mac_for_index,
    parse_mac,
)

__all__ = [
    "CLASS_ETHERNET",
    "DEVICE_ID",
    "E1000",
    "E1000Snapshot",
    "NicState",
    "REVISION",
    "SUBSYSTEM_ID",
    "SUBSYSTEM_VENDOR_ID",
    "VENDOR_ID",
    "check_mac",
    "mac_for_index",
    "parse_mac",
]
