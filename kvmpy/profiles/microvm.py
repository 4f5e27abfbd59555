"""The direct-boot machine: no firmware, the kernel is loaded straight into RAM.

Devices: COM1 (16550A), i8042 (keyboard port and the reset line), CMOS RTC, the ACPI PM block
with its PM timer, GPE0 and the 0xCF9 reset register, fw_cfg with DMA, QEMU's debug-exit port;
the PIC, IOAPIC, LAPICs and PIT are KVM's in-kernel ones. ACPI tables (RSDP, XSDT, FADT, MADT,
DSDT) are placed in the BIOS area where the standard scan finds them and handed to Linux
through boot_params too. Asked for a disk, a NIC, a PCI device or an IOMMU, the machine gets the
pc machine's i440FX host bridge and PIIX3, and its DSDT the same PCI0 root bridge and interrupt
links, so that an ACPI kernel finds them without firmware.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..acpi import build_tables, layout_tables
from ..boot import load_kernel
from ..boot.e820 import MemoryMap
from ..boot.plan import BootPlan
from ..devices.acpi_pm import AcpiPm, ResetControl
from ..devices.fw_cfg import e820_table
from ..errors import ResourceError, UsageError
from ..options import MachineConfig
from .isa import MachineStop, place_legacy_devices

if TYPE_CHECKING:
    from ..machine import Machine


def has_pci(config: MachineConfig) -> bool:
    """Whether this machine gets a PCI host bridge: only when something on PCI was asked for."""
    return bool(config.drives or config.devices or config.iommu or config.nets or config.passthrough)


def build(m: Machine, prep: Prepared | None = None) -> dict[str, Any]:
    """Create the devices and place them on the buses; return them by name."""
    stop = MachineStop(m)
    devices = place_legacy_devices(m, stop)

    pm = AcpiPm(m.irq_line(layout.IRQ_ACPI_SCI), stop)
    m.pio.register(layout.ACPI_PM_BASE, AcpiPm.LENGTH, pm, "acpi-pm", sizes=(1, 2, 4))
    gpe = pm.gpe0
    m.pio.register(layout.ACPI_GPE0_BASE, gpe.LENGTH, gpe, "acpi-gpe0", sizes=gpe.SIZES)
    reset = ResetControl(stop)
    reset_mapping = m.pio.register(layout.RESET_CONTROL_PORT, 1, reset, "reset-control", sizes=(1,))

    devices.update(acpi_pm=pm, gpe0=gpe, reset=reset)
    if has_pci(m.config):
        # PCI devices on a direct-boot machine: a PCI host bridge, the PIIX3 IDE function and
        # what --device asked for (RAM is plain RAM here: the PAM registers steer nothing)
        from .parts import (
            pci_host,
            place_extra_devices,
            place_ide,
            place_iommu,
            place_nics,
            place_passthrough,
        )

        m.pio.unregister(reset_mapping)
        pci, host, isa = pci_host(m, reset, lambda *_: None)
        devices.update(pci=pci, host_bridge=host, isa=isa, ide=place_ide(m, pci))
        devices.update(place_extra_devices(m, pci))
        devices.update(place_nics(m, pci))
        devices.update(place_passthrough(m, pci, isa))
        iommu = place_iommu(m, pci)
        if iommu is not None:
            devices["iommu"] = iommu
    return devices


@dataclass
class Prepared:
    """Everything decided from the configuration alone, before any KVM object exists: so a bad
    kernel file or an initrd that does not fit is reported without touching /dev/kvm."""

    plan: BootPlan
    memmap: MemoryMap
    acpi_blob: bytes
    rsdp: int


def prepare(config: MachineConfig) -> Prepared:
    """ACPI tables for the BIOS area, then the kernel plan (which learns where the RSDP is)."""
    if config.cpus > layout.MAX_VCPUS_DEFAULT:
        raise ResourceError(f"{config.cpus} vCPUs asked for, but kvmpy supports at most "
                            f"{layout.MAX_VCPUS_DEFAULT} (8-bit xAPIC ids)")
    from .parts import iommu_tables

    memmap = MemoryMap(config.memory)
    dsdt_extra = b""
    if has_pci(config):
        # With ACPI, Linux finds PCI only through a PNP0A03 root bridge in the DSDT (x86's
        # pci_acpi_init then skips the legacy bus scan): the pc machine's PCI0, its BAR window
        # where RAM below 4 GiB ends, and the PIIX3 links the kernel programs itself (_SRS),
        # since no firmware routed them
        from ..acpi.pc import pc_dsdt_terms

        dsdt_extra = pc_dsdt_terms(pci_hole=(memmap.lowmem_end, layout.PCI_MMIO_END))
    tables = build_tables(cpus=config.cpus, extra_tables=iommu_tables(config), dsdt_extra=dsdt_extra)
    blob, rsdp = layout_tables(tables, layout.ACPI_TABLES_ADDR)
    if layout.ACPI_TABLES_ADDR + len(blob) > layout.ACPI_TABLES_END:
        raise ResourceError(f"the ACPI tables for {config.cpus} vCPUs do not fit below 1 MiB")
    if config.kernel is None:
        raise UsageError("no kernel given: use --kernel FILE")
    plan = load_kernel(Path(config.kernel), [Path(p) for p in config.initrds], config.append,
                       memmap, rsdp_addr=rsdp)
    return Prepared(plan, memmap, blob, rsdp)


def install(m: Machine, prep: Prepared) -> None:
    """Copy the prepared tables and kernel into guest RAM and tell fw_cfg the memory map."""
    m.memory.write(layout.ACPI_TABLES_ADDR, prep.acpi_blob)
    prep.plan.apply(m.memory.write)
    fw_cfg = m.devices["fw_cfg"]
    fw_cfg.add_file("etc/e820", e820_table((e.addr, e.size, e.type) for e in prep.memmap.e820()))
