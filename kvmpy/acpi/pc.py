r"""The DSDT part of the ``pc`` machine that lets an ACPI guest find PCI and route its interrupts.

Without it a Linux guest still finds the PCI bus through port 0xCF8, but with no ``_PRT`` it has
no idea which ISA IRQ a device's INTx pin reaches through the PIIX3 router, so every PCI device
ends up with "no GSI" (or with whatever stale line register the BIOS left). QEMU's i440FX DSDT
(hw/i386/acpi-build.c: ``build_piix4_pci0_int``, ``build_link_dev``, the PCI0 ``_CRS``) and
SeaBIOS's older built-in DSDT (src/fw/acpi-dsdt.dsl) describe the same hardware; this module
describes kvmpy's model of it, written from the facts, not from their text:

``\_SB.PCI0`` -- the root bridge (``PNP0A03``, ``_ADR`` 0, ``_UID`` 0). Its ``_CRS`` lists what
the bridge forwards: bus numbers 0-0xFF; the config mechanism's ports 0xCF8-0xCFF as a consumed
IO range (Linux drops exactly this entry again, see arch/x86/pci/acpi.c
``resource_is_pcicfg_ioport``; QEMU and most PC firmware list it); the I/O windows
0x0000-0x0CF7 and 0x0D00-0xFFFF; the VGA window 0xA0000-0xBFFFF; the 32-bit PCI hole
(``layout.PCI_MMIO_START`` up to the IOAPIC) where SeaBIOS places BARs, top-down from 0xFEC00000;
optionally a 64-bit window above RAM. Linux trusts these windows (``pci=use_crs``, its default
for firmware dated 2008 or later; SeaBIOS's SMBIOS says 2014) and leaves BARs inside them alone.

``\_SB.PCI0.ISA`` -- the PIIX3 function 00:01.0 (``_ADR`` 0x00010000) with an OperationRegion over
its config bytes 0x60-0x63, PIRQRC[A:D] (82371SB datasheet 2.2.9): fields ``PRQ0``-``PRQ3``.
Each byte routes one PIRQ line: bits 3:0 the ISA IRQ, bit 7 set = not routed.

``\_SB.LNKA``-``LNKD`` -- one PCI interrupt link (``PNP0C0F``, ``_UID`` 1-4) per PIRQ line:
``_STA`` enabled unless bit 7 is set, ``_PRS`` the IRQs the OS may choose (5, 10, 11, QEMU's
list: the ISA IRQs no PC device claims), ``_CRS`` the IRQ the route byte names now (0 when
unrouted), ``_SRS`` writes the chosen IRQ (clearing bit 7), ``_DIS`` sets bit 7. The
descriptors are ``Interrupt(ResourceConsumer, Level, ActiveLow, Shared)``: PCI INTx is
level-triggered, active-low and shared; Linux takes trigger and polarity from the link's
``_PRS`` (``acpi_pci_link_check_possible``) and the OS writes ``_SRS`` with the same descriptor
type, so ``_SRS`` finds the IRQ number as a DWord at byte 5.

``\_SB.PCI0._PRT`` -- slots 1-31 x INTA-INTD -> LNKA-LNKD with the PIIX rotation of
``devices.pci.piix_slot_to_pirq``: PIRQ = (pin - 1 + slot - 1) mod 4 (pins 1-based; in ``_PRT``
they are 0-based). 124 entries; slot 0 (the host bridge) has no pin.

No MADT change is needed for the link IRQs. Linux registers each PCI GSI with the trigger and
polarity the link reports (pci_irq.c ``acpi_pci_irq_enable`` -> ``acpi_register_gsi``), and the
x86 IOAPIC code lets the first user of a legacy pin (0-15) reprogram the defaults the identity
ISA mapping gave it (io_apic.c ``mp_check_pin_attr``: "allow the first user to reprogram the
pin with real trigger and polarity attributes"). KVM's in-kernel IOAPIC does not look at the
polarity bit at all (ioapic.c ``ioapic_set_irq`` delivers on any non-zero line level), and its
i8259 only at the ELCR, so an asserted PIRQ reaches the guest however the pin is programmed.
Keep IRQ 9 out of the link IRQs: it is the SCI, which the MADT makes level, active-high.

The SCI link ``LNKS`` that QEMU's DSDT gives the PM function's INTA (slot 1, pin A) is optional
(``sci_link``) and off by default: kvmpy's PCI bus wires 00:01.3's INTA to PIRQA like any other
slot-1 pin, so LNKA is the truthful answer; and Linux (pci_link.c ``acpi_penalize_sci_irq``)
gives an SCI that is not level/active-low the ``PIRQ_PENALTY_ISA_ALWAYS`` penalty, so a link
offering only IRQ 9 fails with "No IRQ available" once a driver enables 00:01.3.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import layout
from . import aml

__all__ = [
    "LINKS",
    "LINK_IRQS",
    "PIIX3_ISA_ADR",
    "PIIX3_ROUTABLE_IRQS",
    "PIRQRC",
    "PIRQ_DISABLED",
    "PRT_SLOTS",
    "SCI_LINK",
    "pc_dsdt_terms",
    "prt_link",
]

#: The link devices, one per PIRQ line A-D, in PIRQ order (their ``_UID`` is index + 1).
LINKS = ("LNKA", "LNKB", "LNKC", "LNKD")
#: The optional link for the PM function's SCI (QEMU's LNKS), ``_UID`` 5.
SCI_LINK = "LNKS"
#: The ISA IRQs a link may be routed to: QEMU's list, free on a PC (the SCI's 9 excluded).
LINK_IRQS = (5, 10, 11)
#: The IRQs a PIRQRC byte may name; 0, 1, 2, 8 and 13 are reserved encodings (82371SB 2.2.9).
PIIX3_ROUTABLE_IRQS = frozenset({3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15})
#: PCI slots that have interrupt pins (slot 0 is the host bridge).
PRT_SLOTS = range(1, 32)
#: The PIIX3 ISA bridge, 00:01.0, as an ACPI _ADR (device << 16 | function).
PIIX3_ISA_ADR = 0x0001_0000
#: PIRQRC[A:D]: the route bytes in the PIIX3's config space; bit 7 means "not routed".
PIRQRC = 0x60
PIRQ_DISABLED = 0x80
PIRQ_IRQ_MASK = 0x0F

#: _STA values (ACPI 6.x §6.3.7): present, functioning, and enabled or not; not shown in UI.
STA_ENABLED = 0x0B
STA_DISABLED = 0x09
#: The ports of the configuration mechanism #1 (0xCF8 address, 0xCFC data).
PCI_CONFIG_PORTS = (layout.PCI_CONFIG_ADDR_PORT, 8)
#: Byte offset of the first interrupt number in an Interrupt() (extended IRQ) descriptor.
EXT_IRQ_NUMBER_OFFSET = 5

_ROUTE_FIELDS = tuple(f"PRQ{i}" for i in range(len(LINKS)))
_ISA = "\\_SB.PCI0.ISA"


def prt_link(slot: int, pin: int, *, sci_link: bool = False) -> str:
    """The link device that slot ``slot``'s pin ``pin`` (0 = INTA, as in _PRT) reaches.

    The PIIX rotation: PIRQ = (pin + slot - 1) mod 4, i.e. ``piix_slot_to_pirq`` with its
    1-based pin. With ``sci_link`` slot 1's INTA (the PM function) goes to LNKS instead.
    """
    if slot not in PRT_SLOTS or not 0 <= pin <= 3:
        raise ValueError(f"no PCI interrupt pin {pin} on slot {slot}")
    if sci_link and slot == 1 and pin == 0:
        return SCI_LINK
    return LINKS[(pin + slot - 1) & 3]


def _pci_interrupt(irqs: Sequence[int], *, active_low: bool = True) -> bytes:
    """The descriptor a PCI link reports: level, shared, consumer, ISA IRQ numbers."""
    return aml.interrupt(irqs, edge=False, active_low=active_low, shared=True)


def _template(*descriptors: bytes) -> bytes:
    return aml.resource_template(*descriptors)


def _link_helpers() -> list[bytes]:
    r"""\_SB.LKST and \_SB.LKCR: a link's _STA and _CRS from its route byte (Arg0).

    Shared by the four links so each link's methods are one call; LKCR builds a fresh
    template per call (a Name inside a Serialized method) and patches the IRQ number in.
    """
    route = aml.arg(0)
    lkst = aml.method(
        "LKST",
        1,
        aml.if_(aml.and_(route, PIRQ_DISABLED), aml.return_(STA_DISABLED)),
        aml.return_(STA_ENABLED),
    )
    irqn = aml.name_string("IRQN")
    lkcr = aml.method(
        "LKCR",
        1,
        # EndTag checksum 0 ("not checked"): the IRQ number is patched in after the fact
        aml.name("RTPL", aml.resource_template(_pci_interrupt([0]), checksum=False)),
        aml.create_dword_field(aml.name_string("RTPL"), EXT_IRQ_NUMBER_OFFSET, "IRQN"),
        aml.if_(
            aml.lnot(aml.and_(route, PIRQ_DISABLED)),
            aml.and_(route, PIRQ_IRQ_MASK, irqn),
        ),
        aml.return_(aml.name_string("RTPL")),
        serialized=True,
    )
    return [lkst, lkcr]


def _link_device(index: int, irqs: Sequence[int]) -> bytes:
    """LNKA-LNKD: PIRQ line ``index`` as a PCI interrupt link (see the module docstring)."""
    reg = aml.name_string(f"{_ISA}.{_ROUTE_FIELDS[index]}")
    return aml.device(
        LINKS[index],
        aml.name("_HID", aml.eisaid("PNP0C0F")),
        aml.name("_UID", index + 1),
        aml.name("_PRS", _template(_pci_interrupt(irqs))),
        aml.method("_STA", 0, aml.return_(aml.call("LKST", reg))),
        aml.method("_CRS", 0, aml.return_(aml.call("LKCR", reg))),
        aml.method("_DIS", 0, aml.or_(reg, PIRQ_DISABLED, reg)),
        aml.method(
            "_SRS",
            1,
            aml.create_dword_field(aml.arg(0), EXT_IRQ_NUMBER_OFFSET, "IRQN"),
            aml.store(aml.name_string("IRQN"), reg),
            serialized=True,
        ),
    )


def _sci_link_device() -> bytes:
    """LNKS: the SCI on IRQ 9, which cannot move; level, active-high to match the MADT."""
    crs = _template(_pci_interrupt([layout.IRQ_ACPI_SCI], active_low=False))
    return aml.device(
        SCI_LINK,
        aml.name("_HID", aml.eisaid("PNP0C0F")),
        aml.name("_UID", len(LINKS) + 1),
        aml.name("_PRS", crs),
        aml.method("_STA", 0, aml.return_(STA_ENABLED)),
        aml.method("_CRS", 0, aml.return_(crs)),
        aml.method("_SRS", 1),
        aml.method("_DIS", 0),
    )


def _prt(sci_link: bool) -> bytes:
    """_PRT: Package of {address (slot << 16 | 0xFFFF: any function), pin, link, 0}."""
    entries = [
        aml.package((slot << 16) | 0xFFFF, pin, aml.name_string(prt_link(slot, pin, sci_link=sci_link)), 0)
        for slot in PRT_SLOTS
        for pin in range(4)
    ]
    return aml.name("_PRT", aml.package(*entries))


def _root_crs(pci_hole: tuple[int, int], pci_hole64: tuple[int, int] | None) -> bytes:
    """PCI0's _CRS: the bus range, ports and memory windows the root bridge forwards."""
    cfg_port, cfg_len = PCI_CONFIG_PORTS
    descriptors = [
        aml.word_bus_number(0x00, 0xFF),
        aml.io(cfg_port, cfg_port, 1, cfg_len),
        aml.word_io(0x0000, cfg_port - 1),
        aml.word_io(cfg_port + cfg_len, 0xFFFF),
        aml.dword_memory(layout.LEGACY_HOLE_START, 0xB_FFFF, cacheable=True),
        aml.dword_memory(pci_hole[0], pci_hole[1] - 1),
    ]
    if pci_hole64 is not None:
        descriptors.append(aml.qword_memory(pci_hole64[0], pci_hole64[1] - 1, cacheable=True))
    return aml.name("_CRS", _template(*descriptors))


def pc_dsdt_terms(
    *,
    pci_hole: tuple[int, int] = (layout.PCI_MMIO_START, layout.PCI_MMIO_END),
    pci_hole64: tuple[int, int] | None = None,
    link_irqs: Sequence[int] = LINK_IRQS,
    sci_link: bool = False,
) -> bytes:
    r"""AML for the pc machine's PCI root, its PIIX3 interrupt router and the links (see above).

    For ``build_tables(cpus, dsdt_extra=pc_dsdt_terms())``. ``pci_hole`` is the 32-bit BAR
    window [start, end); ``pci_hole64`` an optional 64-bit window [start, end) above RAM;
    ``link_irqs`` the ISA IRQs the links offer; ``sci_link`` routes slot 1's INTA to an LNKS
    link on the SCI as QEMU does (see the module docstring for why it is off by default).

    The links come before PCI0, so the link names in ``_PRT`` refer backwards and resolve even
    in an interpreter that binds package references while it loads the table.
    """
    irqs = list(link_irqs)
    if not irqs or len(set(irqs)) != len(irqs) or not set(irqs) <= PIIX3_ROUTABLE_IRQS:
        raise ValueError(f"link IRQs {irqs} must be distinct IRQs a PIIX3 can route to (3-7, 10-12, 14, 15)")
    if layout.IRQ_ACPI_SCI in irqs:
        raise ValueError("IRQ 9 is the SCI (level, active-high in the MADT); PCI links cannot share it")
    start, end = pci_hole
    if not layout.LEGACY_HOLE_START < start < end <= 1 << 32:
        raise ValueError(f"32-bit PCI hole {start:#x}-{end:#x} is not a window below 4 GiB")
    if pci_hole64 is not None and not 1 << 32 <= pci_hole64[0] < pci_hole64[1] <= 1 << 64:
        raise ValueError(f"64-bit PCI window {pci_hole64[0]:#x}-{pci_hole64[1]:#x} is not above 4 GiB")

    links = [_link_device(i, irqs) for i in range(len(LINKS))]
    if sci_link:
        links.append(_sci_link_device())
    isa = aml.device(
        "ISA",
        aml.name("_ADR", PIIX3_ISA_ADR),
        aml.operation_region("P40C", aml.REGION_PCI_CONFIG, PIRQRC, len(LINKS)),
        aml.field("P40C", *((f, 8) for f in _ROUTE_FIELDS), access=aml.ACCESS_BYTE),
    )
    pci0 = aml.device(
        "PCI0",
        aml.name("_HID", aml.eisaid("PNP0A03")),
        aml.name("_ADR", 0),
        aml.name("_UID", 0),
        _root_crs(pci_hole, pci_hole64),
        _prt(sci_link),
        isa,
    )
    return aml.scope("\\_SB", *_link_helpers(), *links, pci0)
