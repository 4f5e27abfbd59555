"""The PIIX south bridge functions of the ``pc`` machine: the PIIX3 PCI-to-ISA bridge with its
PCI interrupt router and ELCR, and the PIIX4 ACPI power-management function.

They sit in slot 1 (QEMU's and SeaBIOS's convention, which the DSDT repeats): 00:01.0 ISA
bridge, 00:01.1 IDE (a separate model), 00:01.3 PM. The ``*_DEVFN`` constants name those places;
the machine builder places the functions with ``PciBus.place``.

**PIRQ routing** (82371SB datasheet 2.2.9, PIRQRC[A:D] at 0x60-0x63; QEMU hw/isa/piix.c). Each
byte routes one PIRQ line to an ISA IRQ: bits 3:0 the IRQ, bit 7 IRQEN# (1 = not routed), bits
6:4 reserved. Reset value 0x80 (nothing routed). IRQs 0, 1, 2, 8 and 13 are reserved encodings;
such a route is treated as no route. SeaBIOS writes 10, 10, 11, 11 and sets those IRQs
level-triggered in the ELCR; an ACPI guest reprograms them through the DSDT's LNKx objects.
Several PIRQs may land on one IRQ: the line is the OR of them (PCI interrupts are shared,
level, active-low on the wire — here simply "asserted").

The router drives an ``IrqLine`` per ISA IRQ that the machine provides. It only ever lowers a
line it raised itself, so a line shared with an ISA device does not get pulled down behind
that device's back; still, KVM's KVM_IRQ_LINE keeps one level per GSI, so where a PIRQ and
another source share an IRQ (e.g. the SCI on 9), the machine must give both the same wired-OR
line.

**ELCR** (ports 0x4D0/0x4D1, datasheet 2.4.5): one bit per ISA IRQ, 1 = level-triggered. IRQs
0, 1, 2, 8 and 13 are always edge (masks 0xF8/0xDE, as KVM's in-kernel i8259 has them). Note
that with KVM's in-kernel irqchip the kernel itself claims ports 0x4D0-0x4D1 and these
accesses never reach the VMM; ``Elcr`` serves a userspace PIC and keeps the value for tests.

**PIIX4 PM** (82371AB datasheet 3.4; QEMU hw/acpi/piix4.c). PMBA (0x40, dword) holds the I/O
base of the 64-byte PM block in bits 15:6, bit 0 reads 1 (I/O space); PMREGMISC (0x80) bit 0
(PMIOSE) enables it. Whenever either changes, the ``AcpiPm`` block is moved on the PioBus
(unmapped with PMIOSE clear or a zero base). SeaBIOS writes PMBA = 0x600|1 (0xB000|1 without a
table-loader) and PMREGMISC = 1, and from then on uses the PM timer for every delay. The SMBus
controller is not implemented: SMBBA (0x90) and SMBHSTCFG (0xD2) read zero, so Linux's
i2c-piix4 sees it unconfigured. DEVACTB (0x58) has APMC_EN (bit 25) preset, QEMU's "SMM already
initialised", so SeaBIOS skips SMM set-up (there is no SMM under kvmpy). 0x5F/0x63/0x67 carry
the LPT/COM presence bits SeaBIOS's built-in DSDT reads (QEMU's values). The SCI is wired to
IRQ 9 by the ``AcpiPm`` device's own IrqLine, not through a PIRQ.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kvmpy.devices.acpi_pm import AcpiPm
from kvmpy.hw.irq import IrqLine

from .config import STS_DEVSEL_MEDIUM, STS_FAST_BACK, PciConfig
from .function import PciFunction, PciFunctionState
from .i440fx import INTEL_VENDOR_ID

log = logging.getLogger("kvmpy.pci")

#: Recommended places on bus 0 (dev, fn), as QEMU's ``pc`` machine has them.
I440FX_DEVFN = (0, 0)
PIIX3_ISA_DEVFN = (1, 0)
PIIX3_IDE_DEVFN = (1, 1)  # the IDE function is a separate model
PIIX4_PM_DEVFN = (1, 3)

PIIX3_ISA_DEVICE_ID = 0x7000
PIIX4_PM_DEVICE_ID = 0x7113
PIIX4_PM_REVISION = 0x03
CLASS_BRIDGE_ISA = 0x0601
CLASS_BRIDGE_OTHER = 0x0680

# --- PIIX3 ISA bridge -------------------------------------------------------------------------
PIRQRC = 0x60
PIRQ_COUNT = 4
PIRQ_DISABLED = 0x80
PIRQ_IRQ_MASK = 0x0F
PIRQ_WMASK = PIRQ_DISABLED | PIRQ_IRQ_MASK
#: IRQs a PIRQRC register may name (the rest of 0-15 are reserved encodings).
PIRQ_ROUTABLE_IRQS = frozenset({3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15})
#: Non-zero PIIX3 reset values besides the header (QEMU's piix_reset, from the datasheet).
PIIX3_RESET_VALUES = {
    0x4C: 0x4D,  # IORT: ISA I/O recovery timer
    0x4E: 0x03,  # XBCS: BIOS chip select
    0x69: 0x02,  # TOM: top of memory
    0x70: 0x80,  # MBIRQ0: motherboard IRQ route, disabled
    0x76: 0x0C,  # MBDMA0/1: disabled
    0x77: 0x0C,
    0x78: 0x02,  # PCSC: programmable chip select
    0xA0: 0x08,  # SMICNTL
    0xA8: 0x0F,  # FTMR: fast-off timer
}
#: PIIX3 PCICMD resets with I/O, memory and bus master enabled.
PIIX3_COMMAND_RESET = 0x0007

# --- ELCR ---------------------------------------------------------------------------------------
ELCR_PORT = 0x4D0
ELCR_LEN = 2
ELCR_SIZES = (1, 2)
#: Bits that can be set: IRQ 0-2 (ELCR1) and 8, 13 (ELCR2) are always edge-triggered.
ELCR_MASK = 0xDEF8

# --- PIIX4 PM -------------------------------------------------------------------------------------
PMBA = 0x40
PMBA_IO_SPACE = 0x01
PMBA_BASE_MASK = 0xFFC0
DEVACTB = 0x58
DEVACTB_APMC_EN = 1 << 25
DEVRESD_LPT = 0x5F
DEVRESD_COM = 0x63
DEVRESE_COM = 0x67
PMREGMISC = 0x80
PMIOSE = 0x01
SMBBA = 0x90
SMBHSTCFG = 0xD2
#: PIIX4 PM PCISTS: fast back-to-back, medium DEVSEL (QEMU's 0x0280).
PIIX4_PM_STATUS_RESET = STS_FAST_BACK | STS_DEVSEL_MEDIUM


@dataclass
class Piix3IsaState(PciFunctionState):
    """Configuration bytes plus the PIRQ input levels (QEMU's pci_irq_levels)."""

    pirq_levels: tuple[bool, ...] = (False,) * PIRQ_COUNT

    def restore(self, snap: PciFunctionState) -> None:
        super().restore(snap)
        if isinstance(snap, Piix3IsaState):
            self.pirq_levels = snap.pirq_levels


class Piix3Isa(PciFunction):
    """PIIX3 PCI-to-ISA bridge (8086:7000, class 0x0601, multifunction) and PCI IRQ router.

    ``irq_lines`` maps ISA IRQ numbers to the lines the machine wires (normally GSI == IRQ on
    the in-kernel irqchip); a PIRQ routed to an IRQ without a line is not delivered. Give it
    to the bus with ``PciBus.set_intx_router``."""

    def __init__(self, irq_lines: Mapping[int, IrqLine], *, name: str = "piix3-isa") -> None:
        cfg = PciConfig(
            INTEL_VENDOR_ID,
            PIIX3_ISA_DEVICE_ID,
            CLASS_BRIDGE_ISA,
            multifunction=True,
            command=PIIX3_COMMAND_RESET,
            status=STS_DEVSEL_MEDIUM,
            device_area_writable=True,  # chipset set-up registers: storage, as in QEMU
        )
        for off, value in PIIX3_RESET_VALUES.items():
            cfg.declare(off, 1, value, wmask=0xFF)
        for i in range(PIRQ_COUNT):
            cfg.declare(PIRQRC + i, 1, PIRQ_DISABLED, wmask=PIRQ_WMASK)
        super().__init__(cfg, name)
        self.irq_lines = dict(irq_lines)
        self.pirq_levels = [False] * PIRQ_COUNT
        self._driven: dict[int, bool] = {}  # ISA IRQ -> level this router last drove
        cfg.on_write(PIRQRC, PIRQ_COUNT, self._routes_written)

    # -- routing ---------------------------------------------------------------------------------
    def route(self, pirq: int) -> int | None:
        """The ISA IRQ PIRQ ``pirq`` (0 = A) reaches now, or None."""
        v = self.config.data[PIRQRC + pirq]
        irq = v & PIRQ_IRQ_MASK
        if v & PIRQ_DISABLED or irq not in PIRQ_ROUTABLE_IRQS:
            return None
        return irq

    def set_pirq_level(self, pirq: int, level: bool) -> None:
        """IntxRouter: the bus reports the wired-OR level of PIRQ line ``pirq``."""
        level = bool(level)
        if self.pirq_levels[pirq] != level:
            self.pirq_levels[pirq] = level
            self._update_outputs()

    def _routes_written(self, offset: int, size: int, value: int) -> None:
        self._update_outputs()

    def _update_outputs(self) -> None:
        want: dict[int, bool] = {}
        for pirq in range(PIRQ_COUNT):
            irq = self.route(pirq)
            if irq is not None:
                want[irq] = want.get(irq, False) or self.pirq_levels[pirq]
        for irq in self._driven:
            want.setdefault(irq, False)
        for irq, level in sorted(want.items()):
            if self._driven.get(irq, False) == level:
                continue
            line = self.irq_lines.get(irq)
            if line is None:
                if level:
                    self._warn_once(
                        f"irq{irq}", "%s: PIRQ routed to IRQ %d, which has no line", self.name, irq
                    )
                continue
            line.set_level(level)
            if level:
                self._driven[irq] = True
            else:
                self._driven.pop(irq, None)

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> Piix3IsaState:
        return Piix3IsaState(self.config.snapshot(), self.irq_level, tuple(self.pirq_levels))

    def restore(self, snap: PciFunctionState) -> None:
        if isinstance(snap, Piix3IsaState):
            self.pirq_levels = list(snap.pirq_levels)
        super().restore(snap)

    def _after_state_change(self) -> None:
        super()._after_state_change()
        self._update_outputs()


@dataclass
class ElcrState:
    """The 16 edge/level bits, IRQ n at bit n."""

    elcr: int = 0

    def reset(self) -> None:
        self.elcr = 0

    def snapshot(self) -> ElcrState:
        return copy.deepcopy(self)

    def restore(self, snap: ElcrState) -> None:
        self.elcr = snap.elcr


class Elcr:
    """The edge/level control registers at ``ELCR_PORT`` (2 ports, byte or word accesses).

    ``on_change(elcr)`` lets a userspace interrupt controller follow the trigger modes."""

    LENGTH = ELCR_LEN
    SIZES = ELCR_SIZES

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self.on_change = on_change
        self.state = ElcrState()

    def reset(self) -> None:
        self.state.reset()

    def snapshot(self) -> ElcrState:
        return self.state.snapshot()

    def restore(self, snap: ElcrState) -> None:
        self.state.restore(snap)

    def level_triggered(self, irq: int) -> bool:
        return bool(self.state.elcr >> irq & 1)

    def read(self, offset: int, size: int) -> int:
        return (self.state.elcr >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        lanes = ((1 << (8 * size)) - 1) << (8 * offset) & 0xFFFF
        new = (self.state.elcr & ~lanes) | ((value << (8 * offset)) & lanes & ELCR_MASK)
        if new != self.state.elcr:
            self.state.elcr = new
            if self.on_change is not None:
                self.on_change(new)


class Piix4Pm(PciFunction):
    """PIIX4 ACPI power-management function (8086:7113 rev 03, class 0x0680) that places the
    ``AcpiPm`` block where the guest programs PMBA.

    ``reset_base`` pre-programs PMBA/PMIOSE at reset, as firmware would have left them — for
    machines that start a kernel without firmware. The default is the hardware's: disabled.
    ``com1``/``com2``/``lpt`` set the presence bits SeaBIOS's DSDT reads."""

    def __init__(
        self,
        pm: AcpiPm,
        *,
        reset_base: int | None = None,
        com1: bool = True,
        com2: bool = False,
        lpt: bool = False,
        name: str = "piix4-pm",
    ) -> None:
        if reset_base is not None and (reset_base & ~PMBA_BASE_MASK or not reset_base):
            raise ValueError(f"PM base {reset_base:#x} must be a non-zero multiple of 64 below 64 KiB")
        cfg = PciConfig(
            INTEL_VENDOR_ID,
            PIIX4_PM_DEVICE_ID,
            CLASS_BRIDGE_OTHER,
            revision=PIIX4_PM_REVISION,
            interrupt_pin=1,
            status=PIIX4_PM_STATUS_RESET,
            device_area_writable=True,  # device activity/resource registers: storage, as in QEMU
        )
        cfg.declare(PMBA, 4, (reset_base or 0) | PMBA_IO_SPACE, wmask=PMBA_BASE_MASK)
        cfg.declare(PMREGMISC, 1, PMIOSE if reset_base else 0, wmask=PMIOSE)
        cfg.declare(DEVACTB, 4, DEVACTB_APMC_EN, wmask=0xFFFF_FFFF)
        cfg.declare(DEVRESD_LPT, 1, 0x10 | (0x80 if lpt else 0), wmask=0xFF)
        cfg.declare(DEVRESD_COM, 1, 0x60, wmask=0xFF)
        cfg.declare(DEVRESE_COM, 1, (0x08 if com1 else 0) | (0x90 if com2 else 0), wmask=0xFF)
        cfg.declare(SMBBA, 4, 0)
        cfg.declare(SMBHSTCFG, 1, 0)
        super().__init__(cfg, name)
        self.pm = pm
        cfg.on_write(PMBA, 4, self._pm_written)
        cfg.on_write(PMREGMISC, 1, self._pm_written)

    def programmed_base(self) -> int | None:
        """Where the guest asked for the PM block (None: disabled or base 0)."""
        cfg = self.config
        base = cfg.get(PMBA, 4) & PMBA_BASE_MASK
        return base if cfg.data[PMREGMISC] & PMIOSE and base else None

    @property
    def pm_base(self) -> int | None:
        """Where the PM block is actually mapped now."""
        bus = self.bus
        if bus is None:
            return None
        for w in bus.windows():
            if w.owner is self and w.key == "pm":
                return w.active
        return None

    def _remap_pm(self) -> None:
        bus = self.bus
        if bus is not None:
            bus.map_window(
                self,
                "pm",
                "io",
                self.programmed_base(),
                AcpiPm.LENGTH,
                self.pm,
                name=f"{self.name}.pmio",
                sizes=AcpiPm.SIZES,
            )

    def _pm_written(self, offset: int, size: int, value: int) -> None:
        self._remap_pm()

    def attached(self) -> None:
        self._remap_pm()

    def _after_state_change(self) -> None:
        super()._after_state_change()
        self._remap_pm()
