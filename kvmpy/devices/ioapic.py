"""An 82093AA-style I/O APIC (version 0x20, 24 pins) for the split irqchip.

Why kvmpy has one of its own: with ``--iommu vtd`` the IOAPIC's interrupts must pass through the
IOMMU's interrupt remapping, which KVM's in-kernel IOAPIC knows nothing of. As with QEMU's
``kernel-irqchip=split``, KVM then keeps only the LAPICs and this model turns each redirection
table entry into a message-signalled interrupt: the one format both compatibility and
remappable RTEs map onto bit for bit (address = 0xFEE00000 | RTE[63:48] << 4 | RTE[11] << 2,
data = vector | delivery mode << 8 | trigger << 15). A remappable RTE (bit 48, the interrupt
format) thereby becomes a remappable MSI whose handle is the RTE's interrupt index, which is what
the VT-d specification (section 5.1.5.1) asks the IOAPIC to send.

Level-triggered pins keep Remote IRR set from delivery until the EOI of their vector, which
arrives either through the EOI register (0x40, version 0x20) or, for a LAPIC EOI, from the
machine (KVM exits with ``KVM_EXIT_IOAPIC_EOI`` for the vectors of level-triggered routes). A pin
still asserted at EOI is delivered again. Polarity is recorded but not applied, as in QEMU:
device models drive "asserted", whatever wire level that means.

The device knows nothing of KVM: it sees MMIO reads and writes at offsets, sends messages
through ``deliver(address, data)`` and says when the messages it would send changed
(``routes_changed``), so the machine can keep KVM's GSI routes for the EOI scan in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("kvmpy.ioapic")

IOAPIC_MMIO_SIZE = 0x1000
IOAPIC_ACCESS_SIZES = (1, 2, 4, 8)
IOAPIC_VERSION = 0x20
NUM_PINS = 24

# MMIO offsets (82093AA datasheet section 3.1; the EOI register is the version-0x20 addition)
IOREGSEL = 0x00
IOWIN = 0x10
IOEOI = 0x40

# indirect registers
REG_ID = 0x00
REG_VER = 0x01
REG_ARB = 0x02
REG_REDTBL = 0x10

# redirection table entry bits (datasheet section 3.2.4)
RTE_VECTOR = 0xFF
RTE_DELIVERY_SHIFT = 8
RTE_DEST_MODE = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12
RTE_POLARITY = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_TRIGGER_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
#: bits the guest cannot write: delivery status and Remote IRR
RTE_RO_BITS = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR

MSI_BASE = 0xFEE0_0000


def rte_message(rte: int) -> tuple[int, int]:
    """The MSI (address, data) an entry sends. For a remappable entry this is the remappable
    MSI carrying the entry's interrupt index as handle (VT-d spec 5.1.5.1)."""
    address = MSI_BASE | (((rte >> 48) & 0xFFFF) << 4) | (((rte >> 11) & 1) << 2)
    data = (rte & RTE_VECTOR) | (((rte >> RTE_DELIVERY_SHIFT) & 7) << 8) | (
        ((rte >> 15) & 1) << 15)
    return address, data


@dataclass
class IoapicState:
    id: int = 0
    ioregsel: int = 0
    #: pins with an interrupt pending (edge: latched until sent; level: the line is asserted)
    irr: int = 0
    #: the input line levels, to see edges
    lines: int = 0
    rte: list[int] = field(default_factory=lambda: [RTE_MASKED] * NUM_PINS)


class Ioapic:
    """Pins in, messages out. ``deliver`` gets every interrupt as an MSI (address, data)."""

    def __init__(self, ioapic_id: int, deliver: Callable[[int, int], None],
                 routes_changed: Callable[[], None] | None = None) -> None:
        self._power_on_id = ioapic_id & 0xF
        self.deliver = deliver
        self.routes_changed = routes_changed
        self.state = IoapicState(id=self._power_on_id)
        self.deliveries = 0
        self._warned: set[str] = set()

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        self.state = IoapicState(id=self._power_on_id)
        self._routes_changed()

    def snapshot(self) -> IoapicState:
        s = self.state
        return IoapicState(s.id, s.ioregsel, s.irr, s.lines, list(s.rte))

    def restore(self, snap: IoapicState) -> None:
        self.state = IoapicState(snap.id, snap.ioregsel, snap.irr, snap.lines, list(snap.rte))
        self._routes_changed()

    # -- the pins --------------------------------------------------------------------------
    def set_irq(self, pin: int, level: bool) -> None:
        if not 0 <= pin < NUM_PINS:
            return
        s = self.state
        bit = 1 << pin
        was = bool(s.lines & bit)
        s.lines = (s.lines | bit) if level else (s.lines & ~bit)
        if s.rte[pin] & RTE_TRIGGER_LEVEL:
            if level:
                s.irr |= bit
                self._service()
            else:
                s.irr &= ~bit
        elif level and not was:
            s.irr |= bit
            self._service()

    def eoi(self, vector: int) -> None:
        """The end of a level-triggered interrupt with this vector: Remote IRR clears on each
        pin using it, and a pin still asserted is delivered again."""
        s = self.state
        again = False
        for pin, rte in enumerate(s.rte):
            if (rte & RTE_VECTOR) == vector and rte & RTE_TRIGGER_LEVEL and rte & RTE_REMOTE_IRR:
                s.rte[pin] = rte & ~RTE_REMOTE_IRR
                again = again or bool(s.irr & (1 << pin))
        if again:
            self._service()

    def messages(self) -> dict[int, tuple[int, int]]:
        """The message each unmasked pin would send now, by pin (for KVM's GSI routes)."""
        return {pin: rte_message(rte) for pin, rte in enumerate(self.state.rte)
                if not rte & RTE_MASKED}

    def _service(self) -> None:
        s = self.state
        pending = s.irr
        while pending:
            pin = (pending & -pending).bit_length() - 1
            pending &= pending - 1
            rte = s.rte[pin]
            if rte & RTE_MASKED:
                continue
            if rte & RTE_TRIGGER_LEVEL:
                if rte & RTE_REMOTE_IRR:
                    continue
                s.rte[pin] = rte | RTE_REMOTE_IRR
            else:
                s.irr &= ~(1 << pin)
            self.deliveries += 1
            self.deliver(*rte_message(rte))

    def _routes_changed(self) -> None:
        if self.routes_changed is not None:
            self.routes_changed()

    # -- registers -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        base = offset & ~3
        shift = (offset & 3) * 8
        if base == IOREGSEL:
            value = self.state.ioregsel
        elif base == IOWIN:
            value = self._read_indirect(self.state.ioregsel)
        else:
            value = 0
        value >>= shift
        return value & ((1 << (size * 8)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 3:
            # drivers use 32-bit accesses; a narrow IOREGSEL write is still meaningful
            if offset == IOREGSEL and size in (1, 2):
                self.state.ioregsel = value & 0xFF
            else:
                self._warn_once("size", "ignored a %d-byte write at offset %#x", size, offset)
            return
        if offset == IOREGSEL:
            self.state.ioregsel = value & 0xFF
        elif offset == IOWIN:
            self._write_indirect(self.state.ioregsel, value)
        elif offset == IOEOI:
            self.eoi(value & 0xFF)

    def _read_indirect(self, index: int) -> int:
        s = self.state
        if index == REG_ID or index == REG_ARB:
            return s.id << 24
        if index == REG_VER:
            return IOAPIC_VERSION | ((NUM_PINS - 1) << 16)
        pin, high = divmod(index - REG_REDTBL, 2)
        if REG_REDTBL <= index and pin < NUM_PINS:
            rte = s.rte[pin]
            return (rte >> 32) & 0xFFFF_FFFF if high else rte & 0xFFFF_FFFF
        return 0xFFFF_FFFF

    def _write_indirect(self, index: int, value: int) -> None:
        s = self.state
        value &= 0xFFFF_FFFF
        if index == REG_ID:
            s.id = (value >> 24) & 0xF
            return
        pin, high = divmod(index - REG_REDTBL, 2)
        if index < REG_REDTBL or pin >= NUM_PINS:
            return  # VER and ARB are read-only; unknown indices ignore writes
        old = s.rte[pin]
        if high:
            new = (old & 0xFFFF_FFFF) | (value << 32)
        else:
            new = (old & ~0xFFFF_FFFF) | (value & ~RTE_RO_BITS) | (old & RTE_RO_BITS)
            if not new & RTE_TRIGGER_LEVEL:
                new &= ~RTE_REMOTE_IRR  # an edge pin has no Remote IRR to wait for
        s.rte[pin] = new
        if new != old:
            if not new & RTE_TRIGGER_LEVEL and old & RTE_TRIGGER_LEVEL:
                s.irr &= ~(1 << pin)  # a level latch does not turn into a pending edge
            elif new & RTE_TRIGGER_LEVEL and s.lines & (1 << pin):
                s.irr |= 1 << pin
            self._routes_changed()
            self._service()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("ioapic: " + msg, *args)
