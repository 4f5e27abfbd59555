"""PCI for the ``pc`` machine: configuration spaces declared as data, the bus behind
configuration mechanism #1 (0xCF8/0xCFC) that maps BARs onto the PIO and MMIO buses and routes
INTx, and the i440FX/PIIX chipset functions SeaBIOS and guests expect.

A machine builder wires it like this::

    rcr = ResetControl(stop)
    pci = PciBus(pio, mmio, reset_control=rcr, dma_provider=lambda rid: guest_ram_dma)
    pci.register_ports()                                   # 0xCF8-0xCFB (+0xCF9), 0xCFC-0xCFF
    host = I440fx(pam_changed=memory.switch_pam_segment)   # see i440fx.py for the contract
    isa = Piix3Isa({irq: irq_line(irq) for irq in range(16)})
    pm = Piix4Pm(acpi_pm)                                  # moves AcpiPm to where PMBA says
    pci.place(*I440FX_DEVFN, host)
    pci.place(*PIIX3_ISA_DEVFN, isa)
    pci.place(*PIIX4_PM_DEVFN, pm)
    pci.set_intx_router(isa)
    pio.register(ELCR_PORT, Elcr.LENGTH, elcr, "elcr", sizes=Elcr.SIZES)  # userspace PIC only
    host.sync_memory()                                     # once memslots exist
"""

from .bus import (
    CONFIG_ENABLE,
    ConfigAddressPort,
    ConfigDataPort,
    IntxRouter,
    PciBus,
    PciBusState,
    RomWindow,
    Window,
    piix_slot_to_pirq,
)
from .config import (
    CAP_ID_MSI,
    CAP_ID_PM,
    CMD_INTX_DISABLE,
    CMD_IO,
    CMD_MASTER,
    CMD_MEMORY,
    ROM_SLOT,
    Bar,
    BarKind,
    MsiCapability,
    PciConfig,
    PmCapability,
    RomBar,
)
from .function import PciFunction, PciFunctionState, format_bdf, requester_id
from .i440fx import PAM_SEGMENTS, I440fx, PamCallback, PamSegment
from .piix import (
    ELCR_PORT,
    I440FX_DEVFN,
    PIIX3_IDE_DEVFN,
    PIIX3_ISA_DEVFN,
    PIIX4_PM_DEVFN,
    Elcr,
    ElcrState,
    Piix3Isa,
    Piix3IsaState,
    Piix4Pm,
)

__all__ = [
    "Bar",
    "BarKind",
    "CAP_ID_MSI",
    "CAP_ID_PM",
    "CMD_INTX_DISABLE",
    "CMD_IO",
    "CMD_MASTER",
    "CMD_MEMORY",
    "CONFIG_ENABLE",
    "ConfigAddressPort",
    "ConfigDataPort",
    "ELCR_PORT",
    "Elcr",
    "ElcrState",
    "I440FX_DEVFN",
    "I440fx",
    "IntxRouter",
    "MsiCapability",
    "PAM_SEGMENTS",
    "PIIX3_IDE_DEVFN",
    "PIIX3_ISA_DEVFN",
    "PIIX4_PM_DEVFN",
    "PamCallback",
    "PamSegment",
    "PciBus",
    "PciBusState",
    "PciConfig",
    "PciFunction",
    "PciFunctionState",
    "Piix3Isa",
    "Piix3IsaState",
    "Piix4Pm",
    "PmCapability",
    "ROM_SLOT",
    "RomBar",
    "RomWindow",
    "Window",
    "format_bdf",
    "piix_slot_to_pirq",
    "requester_id",
]
