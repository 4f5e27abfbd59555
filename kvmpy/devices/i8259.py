"""The PC's cascaded pair of 8259A programmable interrupt controllers, plus the PIIX3 ELCR.

Why it exists: with KVM's *split* irqchip (``KVM_CAP_SPLIT_IRQCHIP``) the kernel keeps only the
LAPICs, and the VMM must answer ports 0x20/0x21, 0xA0/0xA1 and 0x4D0/0x4D1 itself. SeaBIOS, Linux's
``i8259`` driver and our own guest programs (firmware/lib/pic.c) all program the pair, and the
master's INT output reaches the boot CPU's LINT0 (ExtINT), where the VMM asks ``acknowledge`` for
the vector at the moment it injects it: that call is the CPU's INTA cycle.

**Topology** (PC/AT): master at 0x20-0x21 and slave at 0xA0-0xA1, the slave's INT on master IR2.
Registers are 8 bits wide; the bus sees byte accesses only. The cascade input is treated as
what the wire is, a *level*: master IRR2 follows the slave's INT output. An edge model (QEMU's)
can leave a slave request stranded when the slave's output stays high across an INTA, e.g. with
AEOI; KVM's in-kernel model avoids the same trap by re-pulsing IR2 on every update. ISA "IRQ 2"
(``set_irq(2, ...)``) reaches master IR2 only when the master was initialised in single mode.

**Programming** (8259A datasheet, "Programming the 8259A"; facts cross-checked against QEMU
hw/intc/i8259.c and Linux arch/x86/kernel/i8259.c):

* ICW1 (even port, bit 4 set): starts initialisation. It clears IMR and ISR, edge-latched IRR
  bits, the priority rotation, special mask mode and the read-register select (back to IRR),
  and — if IC4 is clear — everything ICW4 selects. The edge-sense logic restarts, so an input
  that is already high must fall and rise again before it requests. Bits: IC4 (0), SNGL (1),
  ADI (2, ignored: 8086 mode), LTIM (3, all eight inputs level-triggered).
* ICW2 (odd port): the vector base, bits 7:3. ICW3 (odd, cascade mode only): the master's slave
  bitmap or the slave's ID, kept for the guest but not needed for routing (the wiring is fixed).
  ICW4 (odd, if IC4): uPM (0, assumed 8086), AEOI (1), M/S and BUF (2, 3, kept), SFNM (4).
* OCW1 (odd port after initialisation): IMR. Linux probes the chip by writing and reading it.
* OCW2 (even port, bits 4:3 = 00): bits 7:5 R/SL/EOI select non-specific EOI (001), specific EOI
  (011, level in 2:0), rotate on non-specific EOI (101), rotate on specific EOI (111), set
  priority (110, 2:0 become the lowest), rotate-in-AEOI set (100) / clear (000); 010 is a no-op.
* OCW3 (even port, bits 4:3 = 01): RR/RIS (1:0) choose IRR or ISR for even-port reads, P (2)
  makes the next read of either port a poll, ESMM/SMM (6:5) set or clear special mask mode.

**Priority** is the usual rotating 8-level order: ``priority_add`` is the input with the highest
priority (0 after initialisation). An unmasked request is presented when its priority is above
every in-service level; in special mask mode in-service levels that are masked do not count; in
special fully nested mode the master lets a request on IR2 through while IR2 is in service, so
that a higher-priority slave input can nest.

**Triggering.** Edge mode latches IRR on a rising input, and the latch stays until INTA (an input
that pulses high and low still requests, which is what ``IrqLine.pulse`` relies on). Level mode
(the ELCR bit, or LTIM) makes IRR follow the input: INTA does not clear it, so the request comes
back after EOI while the input is still high. ELCR masks are the PIIX3's: master 0xF8, slave
0xDE (IRQ 0, 1, 2, 8 and 13 are always edge).

**INTA** (``acknowledge``): the master picks its highest request; if that is the cascade, the
slave does the same and the vector is the slave's. With no request left at that moment the
answer is the spurious vector, base+7, and ISR is not touched. (Because IR2 follows the slave as
a level, a slave request that vanishes before INTA takes the master's IR2 request with it, so
the spurious vector is then the master's; should the master still pick IR2 with the slave idle,
the slave's base+7 is returned with master ISR2 set, as on hardware.) In AEOI mode ISR is not
set; with rotate-in-AEOI the acknowledged level becomes the lowest.

Reads of the even port return IRR or ISR (or the poll byte: bit 7 "request present", bits 2:0 the
level, acknowledging it like an INTA); reads of the odd port return IMR. Nothing a guest writes
raises. Place the pair with ``register`` (addresses chosen by the caller; ``PIC_*_BASE`` are the
PC's) or register ``master_port``/``slave_port``/``elcr_port`` yourself with length 2.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmpy.hw.bus import Bus

log = logging.getLogger("kvmpy.devices.i8259")

# --- Placement (PC/AT; PIIX3 datasheet 2.4.5 for the ELCR) -------------------------------------
PIC_MASTER_BASE = 0x20
PIC_SLAVE_BASE = 0xA0
PIC_ELCR_BASE = 0x4D0
PIC_LENGTH = 2
PIC_SIZES = (1,)
ELCR_LENGTH = 2
ELCR_SIZES = (1, 2)
CASCADE_IRQ = 2  # the slave's INT drives master IR2
SPURIOUS_LEVEL = 7  # the level whose vector an INTA without a request returns
#: PIIX3 ELCR1/ELCR2 writable bits: IRQ 0, 1, 2 and 8, 13 are hard-wired edge-triggered.
ELCR_MASK_MASTER = 0xF8
ELCR_MASK_SLAVE = 0xDE

# --- ICW1 (8259A datasheet, figure 7) -----------------------------------------------------------
ICW1_INIT = 0x10  # D4 = 1 on the even port marks ICW1
ICW1_IC4 = 0x01
ICW1_SNGL = 0x02
ICW1_LTIM = 0x08
ICW2_BASE_MASK = 0xF8
# --- ICW4 -----------------------------------------------------------------------------------------
ICW4_UPM = 0x01
ICW4_AEOI = 0x02
ICW4_MS = 0x04
ICW4_BUF = 0x08
ICW4_SFNM = 0x10
# --- OCW2 (figure 8): bits 7:5 = R, SL, EOI; 2:0 = level ----------------------------------------
OCW2_LEVEL = 0x07
OCW2_ROTATE_AEOI_CLEAR = 0
OCW2_NONSPECIFIC_EOI = 1
OCW2_NOP = 2
OCW2_SPECIFIC_EOI = 3
OCW2_ROTATE_AEOI_SET = 4
OCW2_ROTATE_NONSPECIFIC_EOI = 5
OCW2_SET_PRIORITY = 6
OCW2_ROTATE_SPECIFIC_EOI = 7
# --- OCW3 ----------------------------------------------------------------------------------------
OCW3_SELECT = 0x08  # D4:D3 = 01 marks OCW3
OCW3_RIS = 0x01
OCW3_RR = 0x02
OCW3_POLL = 0x04
OCW3_SMM = 0x20
OCW3_ESMM = 0x40
POLL_REQUEST = 0x80

# Initialisation sequence steps: which ICW the odd port expects next.
INIT_NONE = 0
INIT_ICW2 = 1
INIT_ICW3 = 2
INIT_ICW4 = 3


@dataclass
class PicChipState:
    """One 8259A. ``pins`` are the input levels as the wires have them (for edge detection and
    level-mode IRR); everything else is the chip's own registers and mode bits."""

    irr: int = 0
    isr: int = 0
    imr: int = 0
    pins: int = 0
    priority_add: int = 0  # the input that currently has the highest priority
    vector_base: int = 0
    icw3: int = 0
    init_step: int = INIT_NONE
    icw4_needed: bool = False
    single: bool = False
    ltim: bool = False
    auto_eoi: bool = False
    rotate_on_aeoi: bool = False
    sfnm: bool = False
    icw4: int = 0
    read_isr: bool = False
    poll: bool = False
    special_mask: bool = False
    elcr: int = 0  # not touched by ICW1; reset with the chipset

    def reset(self) -> None:
        """A hardware reset: everything, the ELCR included, back to power-on values."""
        for f in fields(self):
            if f.name != "pins":
                setattr(self, f.name, f.default)

    def snapshot(self) -> PicChipState:
        return copy.copy(self)

    def restore(self, snap: PicChipState) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(snap, f.name))


@dataclass
class PicPairState:
    master: PicChipState = field(default_factory=PicChipState)
    slave: PicChipState = field(default_factory=PicChipState)
    #: ISA IRQ 2's own input level; it reaches master IR2 only in single mode.
    isa_irq2: bool = False

    def reset(self) -> None:
        self.master.reset()
        self.slave.reset()

    def snapshot(self) -> PicPairState:
        return copy.deepcopy(self)

    def restore(self, snap: PicPairState) -> None:
        self.master.restore(snap.master)
        self.slave.restore(snap.slave)
        self.isa_irq2 = snap.isa_irq2


def _priority(chip: PicChipState, mask: int) -> int:
    """Rank of the highest-priority bit in ``mask`` (0 = highest), 8 when the mask is empty."""
    if not mask:
        return 8
    add = chip.priority_add
    for rank in range(8):
        if mask >> ((rank + add) & 7) & 1:
            return rank
    return 8  # unreachable for an 8-bit mask


class _Chip:
    """The register logic of one 8259A; the pair ties two together and owns the outputs."""

    def __init__(self, state: PicChipState, is_master: bool) -> None:
        self.s = state
        self.is_master = is_master

    def level_mask(self) -> int:
        s = self.s
        return 0xFF if s.ltim else s.elcr

    def pending(self) -> int:
        """The input the chip presents on INT, or -1 (QEMU's pic_get_irq, with SFNM per the
        datasheet: only the cascade input may nest on its own in-service level)."""
        s = self.s
        req = s.irr & ~s.imr & 0xFF
        rank = _priority(s, req)
        if rank == 8:
            return -1
        irq = (rank + s.priority_add) & 7
        in_service = s.isr
        if s.special_mask:
            in_service &= ~s.imr
        current = _priority(s, in_service)
        if rank < current:
            return irq
        if rank == current and s.sfnm and self.is_master and irq == CASCADE_IRQ:
            return irq
        return -1

    def set_input(self, irq: int, level: bool) -> None:
        s = self.s
        bit = 1 << irq
        if self.level_mask() & bit:
            s.irr = s.irr | bit if level else s.irr & ~bit
        elif level and not s.pins & bit:
            s.irr |= bit  # rising edge: latched until INTA
        s.pins = s.pins | bit if level else s.pins & ~bit

    def intack(self, irq: int) -> None:
        s = self.s
        bit = 1 << irq
        if s.auto_eoi:
            if s.rotate_on_aeoi:
                s.priority_add = (irq + 1) & 7
        else:
            s.isr |= bit
        if not self.level_mask() & bit:
            s.irr &= ~bit  # an edge request is consumed; a level stays while the input is high

    def refresh_levels(self) -> None:
        """Level-mode IRR bits follow the pins (after an ELCR or LTIM change)."""
        s = self.s
        lv = self.level_mask()
        s.irr = (s.irr & ~lv) | (s.pins & lv)

    # -- port accesses ------------------------------------------------------------------------
    def write_command(self, value: int) -> None:
        s = self.s
        if value & ICW1_INIT:
            self.icw1(value)
        elif value & OCW3_SELECT:
            if value & OCW3_POLL:
                s.poll = True
            if value & OCW3_RR:
                s.read_isr = bool(value & OCW3_RIS)
            if value & OCW3_ESMM:
                s.special_mask = bool(value & OCW3_SMM)
        else:
            self.ocw2(value)

    def icw1(self, value: int) -> None:
        s = self.s
        s.irr &= self.level_mask()  # edge latches are dropped; the edge sense starts over
        s.isr = 0
        s.imr = 0
        s.priority_add = 0
        s.vector_base = 0
        s.read_isr = False
        s.poll = False
        s.special_mask = False
        s.icw4_needed = bool(value & ICW1_IC4)
        s.single = bool(value & ICW1_SNGL)
        s.ltim = bool(value & ICW1_LTIM)
        # Without IC4 the ICW4 functions are all zero (datasheet); with it they are set anew.
        s.auto_eoi = s.rotate_on_aeoi = s.sfnm = False
        s.icw4 = 0
        s.init_step = INIT_ICW2
        self.refresh_levels()

    def ocw2(self, value: int) -> None:
        s = self.s
        cmd = value >> 5
        level = value & OCW2_LEVEL
        if cmd in (OCW2_ROTATE_AEOI_CLEAR, OCW2_ROTATE_AEOI_SET):
            s.rotate_on_aeoi = cmd == OCW2_ROTATE_AEOI_SET
        elif cmd in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            rank = _priority(s, s.isr)
            if rank != 8:
                irq = (rank + s.priority_add) & 7
                s.isr &= ~(1 << irq)
                if cmd == OCW2_ROTATE_NONSPECIFIC_EOI:
                    s.priority_add = (irq + 1) & 7
        elif cmd == OCW2_SPECIFIC_EOI:
            s.isr &= ~(1 << level)
        elif cmd == OCW2_SET_PRIORITY:
            s.priority_add = (level + 1) & 7
        elif cmd == OCW2_ROTATE_SPECIFIC_EOI:
            s.isr &= ~(1 << level)
            s.priority_add = (level + 1) & 7
        # OCW2_NOP: nothing

    def write_data(self, value: int) -> None:
        s = self.s
        step = s.init_step
        if step == INIT_NONE:
            s.imr = value
        elif step == INIT_ICW2:
            s.vector_base = value & ICW2_BASE_MASK
            if not s.single:
                s.init_step = INIT_ICW3
            else:
                s.init_step = INIT_ICW4 if s.icw4_needed else INIT_NONE
        elif step == INIT_ICW3:
            s.icw3 = value
            s.init_step = INIT_ICW4 if s.icw4_needed else INIT_NONE
        else:
            s.icw4 = value
            s.auto_eoi = bool(value & ICW4_AEOI)
            s.sfnm = bool(value & ICW4_SFNM)
            s.init_step = INIT_NONE
            if not value & ICW4_UPM:
                log.info("8259 %s: ICW4 selects 8080 mode; vectors are delivered 8086-style",
                         "master" if self.is_master else "slave")

    def read_register(self, offset: int) -> int:
        s = self.s
        if offset == 0:
            return s.isr if s.read_isr else s.irr
        return s.imr


class _PicPort:
    """One chip's two ports (offset 0 = command/status, 1 = data/IMR) as a bus device."""

    LENGTH = PIC_LENGTH
    SIZES = PIC_SIZES

    def __init__(self, pair: PicPair, chip: _Chip) -> None:
        self._pair = pair
        self._chip = chip

    def read(self, offset: int, size: int) -> int:
        return self._pair._read(self._chip, offset & 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self._pair._write(self._chip, offset & 1, value & 0xFF)


class _ElcrPort:
    """ELCR1 (offset 0, IRQ 0-7) and ELCR2 (offset 1, IRQ 8-15); byte or word accesses."""

    LENGTH = ELCR_LENGTH
    SIZES = ELCR_SIZES

    def __init__(self, pair: PicPair) -> None:
        self._pair = pair

    def read(self, offset: int, size: int) -> int:
        return (self._pair.elcr >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        lanes = (((1 << (8 * size)) - 1) << (8 * offset)) & 0xFFFF
        cur = self._pair.elcr
        self._pair.set_elcr((cur & ~lanes) | ((value << (8 * offset)) & lanes))


class _IsaInput:
    """An IrqLine bound to one PIC input."""

    __slots__ = ("_pair", "_irq")

    def __init__(self, pair: PicPair, irq: int) -> None:
        self._pair = pair
        self._irq = irq

    def set_level(self, level: bool) -> None:
        self._pair.set_irq(self._irq, bool(level))

    def pulse(self) -> None:
        self._pair.set_irq(self._irq, True)
        self._pair.set_irq(self._irq, False)


class PicPair:
    """Master and slave 8259A with the ELCR; see the module docstring.

    ``output(level)`` is called whenever the master's INT output changes (and once from
    ``restore``/``reset`` if it differs from what was last reported)."""

    def __init__(self, output: Callable[[bool], None]) -> None:
        self._output = output
        self.state = PicPairState()
        self._master = _Chip(self.state.master, True)
        self._slave = _Chip(self.state.slave, False)
        self.master_port = _PicPort(self, self._master)
        self.slave_port = _PicPort(self, self._slave)
        self.elcr_port = _ElcrPort(self)
        self._out = False
        self._update()

    # -- placement ------------------------------------------------------------------------------
    def register(
        self,
        pio: Bus,
        master_base: int = PIC_MASTER_BASE,
        slave_base: int = PIC_SLAVE_BASE,
        elcr_base: int | None = PIC_ELCR_BASE,
    ) -> None:
        """Place the chips (and, unless ``elcr_base`` is None, the ELCR) on the port bus."""
        pio.register(master_base, PIC_LENGTH, self.master_port, "pic-master", sizes=PIC_SIZES)
        pio.register(slave_base, PIC_LENGTH, self.slave_port, "pic-slave", sizes=PIC_SIZES)
        if elcr_base is not None:
            pio.register(elcr_base, ELCR_LENGTH, self.elcr_port, "elcr", sizes=ELCR_SIZES)

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Chipset reset: both chips to power-on state and the ELCR to all-edge. Input levels
        are the wires' and survive."""
        self.state.reset()
        self._update()

    def snapshot(self) -> PicPairState:
        return self.state.snapshot()

    def restore(self, snap: PicPairState) -> None:
        self.state.restore(snap)
        self._update()

    # -- device side ----------------------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        """Drive ISA input ``irq`` (0-15) to ``level``."""
        if not 0 <= irq < 16:
            raise ValueError(f"ISA IRQ {irq} does not exist")
        level = bool(level)
        if irq >= 8:
            self._slave.set_input(irq - 8, level)
        elif irq == CASCADE_IRQ:
            self.state.isa_irq2 = level
        else:
            self._master.set_input(irq, level)
        self._update()

    def irq_line(self, irq: int) -> _IsaInput:
        """An ``IrqLine`` for ISA input ``irq``."""
        if not 0 <= irq < 16:
            raise ValueError(f"ISA IRQ {irq} does not exist")
        return _IsaInput(self, irq)

    # -- CPU side -------------------------------------------------------------------------------
    def has_interrupt(self) -> bool:
        """The master's INT output: a vector is waiting for an INTA."""
        return self._out

    def acknowledge(self) -> int:
        """The INTA cycle: return the vector and move the request into service."""
        master, slave = self._master, self._slave
        irq = master.pending()
        if irq < 0:
            vector = master.s.vector_base | SPURIOUS_LEVEL
        elif irq == CASCADE_IRQ and self._cascaded():
            irq2 = slave.pending()
            if irq2 >= 0:
                slave.intack(irq2)
                vector = slave.s.vector_base | irq2
            else:
                vector = slave.s.vector_base | SPURIOUS_LEVEL
            self._settle_cascade()
            master.intack(irq)
        else:
            master.intack(irq)
            vector = master.s.vector_base | irq
        self._update()
        return vector

    def pending_irq(self) -> int | None:
        """The ISA IRQ (0-15) the next INTA would deliver, or None (spurious); for tracing."""
        irq = self._master.pending()
        if irq < 0:
            return None
        if irq == CASCADE_IRQ and self._cascaded():
            irq2 = self._slave.pending()
            return None if irq2 < 0 else 8 + irq2
        return irq

    # -- ELCR -----------------------------------------------------------------------------------
    @property
    def elcr(self) -> int:
        """Edge/level bits, IRQ n at bit n (1 = level-triggered)."""
        return self.state.master.elcr | self.state.slave.elcr << 8

    def set_elcr(self, value: int) -> None:
        """Set both ELCRs at once (fixed edge bits stay clear). Usable as the ``on_change`` hook
        of ``kvmpy.devices.pci.piix.Elcr`` when that model owns the ports instead."""
        self.state.master.elcr = value & ELCR_MASK_MASTER
        self.state.slave.elcr = (value >> 8) & ELCR_MASK_SLAVE
        self._master.refresh_levels()
        self._slave.refresh_levels()
        self._update()

    # -- internals ------------------------------------------------------------------------------
    def _cascaded(self) -> bool:
        return not self.state.master.single

    def _settle_cascade(self) -> None:
        """Master IR2 follows the slave's INT (cascade) or ISA IRQ 2 (single mode)."""
        m = self.state.master
        bit = 1 << CASCADE_IRQ
        if self._cascaded():
            # A level, whatever the trigger mode: IRR2 is the slave's request, nothing latched.
            if self._slave.pending() >= 0:
                m.irr |= bit
                m.pins |= bit
            else:
                m.irr &= ~bit
                m.pins &= ~bit
        else:
            self._master.set_input(CASCADE_IRQ, self.state.isa_irq2)

    def _update(self) -> None:
        self._settle_cascade()
        out = self._master.pending() >= 0
        if out != self._out:
            self._out = out
            self._output(out)

    def _read(self, chip: _Chip, offset: int) -> int:
        s = chip.s
        if s.poll:
            s.poll = False
            irq = chip.pending()
            if irq < 0:
                value = 0
            else:
                chip.intack(irq)
                value = POLL_REQUEST | irq
            self._update()
            return value
        return chip.read_register(offset)

    def _write(self, chip: _Chip, offset: int, value: int) -> None:
        if offset == 0:
            chip.write_command(value)
        else:
            chip.write_data(value)
        self._update()
