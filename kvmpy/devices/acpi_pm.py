"""ACPI fixed hardware, PIIX4 style: PM1a event/control, the PM timer, GPE0, and the reset register.

Why these registers: they are what an ACPI guest needs to power off (write SLP_TYP|SLP_EN to
PM1a_CNT), to see the power button (PWRBTN_STS through the SCI), and what Linux and SeaBIOS use as
a calibrated clock (the 3.579545 MHz PM timer). The layout follows QEMU's PIIX4 PM function, so
the FADT can describe it the way firmware and guests expect on a QEMU-like PC:

=========  ========  ====================================================================
offset     width     register
=========  ========  ====================================================================
+0         2         PM1a_STS  (write 1 to clear): TMR_STS, GBL_STS, PWRBTN_STS, ...
+2         2         PM1a_EN
+4         2         PM1a_CNT: SCI_EN (bit 0), SLP_TYP (bits 10-12), SLP_EN (bit 13, write-only)
+8         4         PM_TMR (read-only), 24-bit by default (FADT flag TMR_VAL_EXT clear)
=========  ========  ====================================================================

The rest of the 64-byte block reads zero and ignores writes. GPE0 is a separate block at
``layout.ACPI_GPE0_BASE``: status bytes (write 1 to clear) then enable bytes, half each.

**Power off.** ``SLP_EN`` with ``SLP_TYP == S5_SLP_TYP`` asks the machine to power off. The
value is the one the DSDT's ``\\_S5`` package gives; it is defined once in ``kvmpy.acpi`` (below
devices in the layers) and re-exported here. Other sleep types are not supported and are
ignored (logged once), so the guest simply continues.

**The timer** counts from ``time.monotonic_ns()`` (injectable as ``clock_ns``) with no thread:
its value is computed when read. TMR_STS is set whenever the timer's top bit (bit 23, or 31 for
a 32-bit timer) has toggled since the last look; that happens lazily on every access, and
``tick()`` lets the machine's I/O thread deliver the SCI on time when TMR_EN is set.

**The SCI** is a level: high while ``PM1_STS & PM1_EN`` has an event bit or ``GPE0_STS & GPE0_EN``
is non-zero, as QEMU's PIIX4 does. SCI_EN does not gate it: with no SMM there is nothing else
to deliver events to. Our FADT has ``SMI_CMD = 0`` (always in ACPI mode), so SCI_EN reads 1
from reset (``sci_enabled=True``, the default); with ``sci_enabled=False`` a FADT must name an
SMI_CMD port, which ``ApmControl`` (0xB2) implements.

**Reset control (0xCF9).** ``ResetControl`` is PIIX's RCR: a write with bit 2 (RST_CPU) set
resets the machine (Linux writes 0x02 then 0x06; 0x0E asks for a full reset), as on QEMU.
Port 0xCF9 lies inside the PCI configuration address register (0xCF8-0xCFB): where a PCI host
bridge owns 0xCF8, it must hand byte accesses at 0xCF9 to ``ResetControl``; without PCI it is
registered on its own, 1 byte long.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from kvmpy import layout
from kvmpy.acpi import S5_SLP_TYP
from kvmpy.events import GuestStop, StopReason, StopRequester
from kvmpy.hw.irq import IrqLine

log = logging.getLogger("kvmpy.devices.acpi_pm")

#: The PM I/O block as QEMU's PIIX4 maps it: 64 bytes at ``layout.ACPI_PM_BASE``.
ACPI_PM_LEN = 0x40
ACPI_PM_ACCESS_SIZES = (1, 2, 4)
#: Offsets and lengths inside the block, for the FADT.
PM1_EVT_OFFSET = 0x00
PM1_EVT_LEN = 4
PM1_CNT_OFFSET = 0x04
PM1_CNT_LEN = 2
PM_TMR_OFFSET = 0x08
PM_TMR_LEN = 4

#: GPE0 block: status half then enable half.
GPE0_LEN = layout.ACPI_GPE0_LEN
GPE0_ACCESS_SIZES = (1, 2, 4)

#: The PM timer's frequency (ACPI spec, 4.8.3.3).
PM_TIMER_HZ = 3_579_545

# PM1 status/enable bits (ACPI spec tables 4.16 / 4.17)
PM1_TMR = 0x0001
PM1_BM_STS = 0x0010
PM1_GBL = 0x0020
PM1_PWRBTN = 0x0100
PM1_SLPBTN = 0x0200
PM1_RTC = 0x0400
PM1_PCIEXP_WAKE = 0x4000
PM1_WAK_STS = 0x8000
#: Enable bits that exist (and the status bits that can raise an SCI).
PM1_EN_MASK = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_SLPBTN | PM1_RTC | PM1_PCIEXP_WAKE
PM1_SCI_EVENTS = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_SLPBTN | PM1_RTC

# PM1 control bits (ACPI spec table 4.18)
CNT_SCI_EN = 0x0001
CNT_BM_RLD = 0x0002
CNT_GBL_RLS = 0x0004  # write-only
CNT_SLP_TYP_SHIFT = 10
CNT_SLP_TYP_MASK = 0x7 << CNT_SLP_TYP_SHIFT
CNT_SLP_EN = 0x2000  # write-only
CNT_STORED = CNT_SCI_EN | CNT_BM_RLD | CNT_SLP_TYP_MASK

# Reset control register (PIIX3/PIIX4 datasheet, RC at 0xCF9)
RESET_CONTROL_LEN = 1
RCR_SYS_RST = 0x02  # 1 = hard reset when RST_CPU is set
RCR_RST_CPU = 0x04  # a write with this bit set starts the reset
RCR_FULL_RST = 0x08  # ICH: also cycle power
RCR_STORED = RCR_SYS_RST | RCR_FULL_RST

# APM control/status (SMI_CMD); the values the FADT declares as ACPI_ENABLE / ACPI_DISABLE
APM_LEN = 2
APM_ACCESS_SIZES = (1,)
ACPI_ENABLE_CMD = 0xF1
ACPI_DISABLE_CMD = 0xF0

_Reg = tuple[str, int, int]  # (name, offset, width in bytes)
_PM_REGS: tuple[_Reg, ...] = (("sts", 0, 2), ("en", 2, 2), ("cnt", 4, 2), ("tmr", 8, 4))


def _compose(regs: tuple[_Reg, ...], values: dict[str, int], offset: int, size: int) -> int:
    """The bytes ``[offset, offset + size)`` of a register block, little-endian; gaps read 0."""
    out = 0
    for name, base, width in regs:
        lo, hi = max(offset, base), min(offset + size, base + width)
        if lo < hi:
            part = (values[name] >> ((lo - base) * 8)) & ((1 << ((hi - lo) * 8)) - 1)
            out |= part << ((lo - offset) * 8)
    return out


def _split(regs: tuple[_Reg, ...], offset: int, size: int, value: int) -> Iterator[tuple[str, int, int]]:
    """A write of ``size`` bytes at ``offset`` as (register, value in place, byte-lane mask)."""
    for name, base, width in regs:
        lo, hi = max(offset, base), min(offset + size, base + width)
        if lo < hi:
            lanes = (1 << ((hi - lo) * 8)) - 1
            part = (value >> ((lo - offset) * 8)) & lanes
            shift = (lo - base) * 8
            yield name, part << shift, lanes << shift


@dataclass
class AcpiPmState:
    """PM1 registers, the timer's value at its reference instant, and the GPE0 registers."""

    pm1_sts: int = 0
    pm1_en: int = 0
    pm1_cnt: int = 0
    timer_at_ref: int = 0  # timer ticks (not yet masked) at the device's reference instant
    timer_msb: int = 0  # timer >> (bits - 1) when TMR_STS was last brought up to date
    gpe0_sts: int = 0
    gpe0_en: int = 0

    def reset(self) -> None:
        self.restore(AcpiPmState())

    def snapshot(self) -> AcpiPmState:
        return copy.deepcopy(self)

    def restore(self, snap: AcpiPmState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


class AcpiPm:
    """The PM1a event/control block and PM timer at ``layout.ACPI_PM_BASE`` (length
    ``ACPI_PM_LEN``), owning the GPE0 block ``self.gpe0`` (at ``layout.ACPI_GPE0_BASE``, length
    ``GPE0_LEN``) because both drive the one SCI.

    ``timer_bits`` must agree with the FADT's TMR_VAL_EXT flag (clear: 24 bits)."""

    LENGTH = ACPI_PM_LEN
    SIZES = ACPI_PM_ACCESS_SIZES

    def __init__(
        self,
        sci: IrqLine,
        stop: StopRequester,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        timer_bits: int = 24,
        sci_enabled: bool = True,
    ) -> None:
        if timer_bits not in (24, 32):
            raise ValueError("the ACPI PM timer is 24 or 32 bits wide")
        self.sci = sci
        self.stop = stop
        self.clock_ns = clock_ns
        self.timer_bits = timer_bits
        self.sci_enabled_at_reset = sci_enabled
        self.state = AcpiPmState()
        self.gpe0 = Gpe0(self)
        self._warned: set[str] = set()
        self._ref_ns = clock_ns()
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.state.reset()
        if self.sci_enabled_at_reset:
            self.state.pm1_cnt |= CNT_SCI_EN
        self._ref_ns = self.clock_ns()
        self.update_sci()

    def snapshot(self) -> AcpiPmState:
        """A copy with the timer expressed as its current value, so it resumes from there."""
        self._evaluate()
        self._rebase()
        return self.state.snapshot()

    def restore(self, snap: AcpiPmState) -> None:
        self.state.restore(snap)
        self._ref_ns = self.clock_ns()
        self.update_sci()

    # -- host side --------------------------------------------------------------------------
    def press_power_button(self) -> None:
        """The power button: PWRBTN_STS, and an SCI when the guest enabled it (ACPI shutdown)."""
        self.state.pm1_sts |= PM1_PWRBTN
        self.update_sci()

    def raise_gpe(self, bit: int) -> None:
        """Set GPE0 status bit ``bit`` (hot-plug and other platform events use these)."""
        if not 0 <= bit < self.gpe0.half * 8:
            raise ValueError(f"GPE0 has no bit {bit}")
        self.state.gpe0_sts |= 1 << bit
        self.update_sci()

    def set_sci_enabled(self, enabled: bool) -> None:
        """Switch SCI_EN (what an ACPI_ENABLE/ACPI_DISABLE write to SMI_CMD does)."""
        if enabled:
            self.state.pm1_cnt |= CNT_SCI_EN
        else:
            self.state.pm1_cnt &= ~CNT_SCI_EN
        self.update_sci()

    def timer_value(self) -> int:
        return self._ticks() & ((1 << self.timer_bits) - 1)

    def tick(self) -> float | None:
        """Bring TMR_STS and the SCI up to date; seconds until the timer's top bit next toggles
        when TMR_EN is set (the I/O thread should call again then), else None."""
        self._evaluate()
        self.update_sci()
        if not self.state.pm1_en & PM1_TMR:
            return None
        half = 1 << (self.timer_bits - 1)
        remaining = half - (self._ticks() % half)
        return remaining / PM_TIMER_HZ

    # -- guest side -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        self._evaluate()
        st = self.state
        values = {"sts": st.pm1_sts, "en": st.pm1_en, "cnt": st.pm1_cnt, "tmr": self.timer_value()}
        value = _compose(_PM_REGS, values, offset, size)
        self.update_sci()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self._evaluate()
        st = self.state
        touched = False
        for name, part, mask in _split(_PM_REGS, offset, size, value):
            touched = True
            if name == "sts":
                st.pm1_sts &= ~(part & mask)
            elif name == "en":
                st.pm1_en = (st.pm1_en & ~mask) | (part & mask & PM1_EN_MASK)
            elif name == "cnt":
                self._write_cnt(part, mask)
            else:
                self._log_once("tmr", "write to the read-only PM timer ignored")
        if not touched:
            self._log_once(f"w{offset}", "write %#x to unused PM offset %#x ignored", value, offset)
        self.update_sci()

    def _write_cnt(self, part: int, mask: int) -> None:
        st = self.state
        st.pm1_cnt = (st.pm1_cnt & ~(mask & CNT_STORED)) | (part & mask & CNT_STORED)
        if part & mask & CNT_SLP_EN:
            slp_typ = (st.pm1_cnt & CNT_SLP_TYP_MASK) >> CNT_SLP_TYP_SHIFT
            if slp_typ == S5_SLP_TYP:
                self.stop.request_stop(GuestStop.of(StopReason.POWEROFF, "ACPI S5 (soft off)"))
            else:
                self._log_once(f"slp{slp_typ}", "sleep type %d not supported; guest continues", slp_typ)

    # -- internals --------------------------------------------------------------------------
    def _ticks(self) -> int:
        return self.state.timer_at_ref + (self.clock_ns() - self._ref_ns) * PM_TIMER_HZ // 1_000_000_000

    def _rebase(self) -> None:
        now = self.clock_ns()
        self.state.timer_at_ref += (now - self._ref_ns) * PM_TIMER_HZ // 1_000_000_000
        self._ref_ns = now

    def _evaluate(self) -> None:
        msb = self._ticks() >> (self.timer_bits - 1)
        if msb != self.state.timer_msb:
            self.state.pm1_sts |= PM1_TMR
            self.state.timer_msb = msb

    def sci_level(self) -> bool:
        st = self.state
        return bool(st.pm1_sts & st.pm1_en & PM1_SCI_EVENTS) or bool(st.gpe0_sts & st.gpe0_en)

    def update_sci(self) -> None:
        self.sci.set_level(self.sci_level())

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.info("acpi-pm: " + msg, *args)


class Gpe0:
    """The GPE0 block: ``half`` status bytes (write 1 to clear), then ``half`` enable bytes.

    Its state lives in the owning ``AcpiPm`` (``gpe0_sts``/``gpe0_en``) because GPE and PM1
    events share one SCI: use the owner's ``pm.gpe0`` and register it at
    ``layout.ACPI_GPE0_BASE``, ``GPE0_LEN`` long."""

    SIZES = GPE0_ACCESS_SIZES

    def __init__(self, pm: AcpiPm, length: int = GPE0_LEN) -> None:
        if length <= 0 or length % 2:
            raise ValueError("a GPE block has an even, non-zero length")
        self.pm = pm
        self.half = length // 2
        self.LENGTH = length
        self._regs: tuple[_Reg, ...] = (("sts", 0, self.half), ("en", self.half, self.half))

    def read(self, offset: int, size: int) -> int:
        st = self.pm.state
        return _compose(self._regs, {"sts": st.gpe0_sts, "en": st.gpe0_en}, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        st = self.pm.state
        for name, part, mask in _split(self._regs, offset, size, value):
            if name == "sts":
                st.gpe0_sts &= ~(part & mask)
            else:
                st.gpe0_en = (st.gpe0_en & ~mask) | (part & mask)
        self.pm.update_sci()


@dataclass
class ResetControlState:
    rcr: int = 0

    def reset(self) -> None:
        self.rcr = 0

    def snapshot(self) -> ResetControlState:
        return copy.deepcopy(self)

    def restore(self, snap: ResetControlState) -> None:
        self.rcr = snap.rcr


class ResetControl:
    """PIIX's reset control register at port 0xCF9 (one byte)."""

    LENGTH = RESET_CONTROL_LEN
    SIZES = (1,)

    def __init__(self, stop: StopRequester) -> None:
        self.stop = stop
        self.state = ResetControlState()

    def reset(self) -> None:
        self.state.reset()

    def snapshot(self) -> ResetControlState:
        return self.state.snapshot()

    def restore(self, snap: ResetControlState) -> None:
        self.state.restore(snap)

    def read(self, offset: int, size: int) -> int:
        return self.state.rcr if offset == 0 else 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0:
            return
        if value & RCR_RST_CPU:
            kind = "full" if value & RCR_FULL_RST else "hard" if value & RCR_SYS_RST else "soft"
            self.stop.request_stop(GuestStop.of(StopReason.RESET, f"{kind} reset through port 0xcf9"))
            return
        self.state.rcr = value & RCR_STORED


@dataclass
class ApmState:
    cnt: int = 0
    sts: int = 0

    def reset(self) -> None:
        self.cnt = self.sts = 0

    def snapshot(self) -> ApmState:
        return copy.deepcopy(self)

    def restore(self, snap: ApmState) -> None:
        self.cnt, self.sts = snap.cnt, snap.sts


class ApmControl:
    """APM control (0xB2, the FADT's SMI_CMD) and status (0xB3) ports, 2 bytes, byte accesses.

    Only the ACPI mode switch is implemented: ``ACPI_ENABLE_CMD`` sets SCI_EN and
    ``ACPI_DISABLE_CMD`` clears it, which is what an SMI handler does on a PIIX4 PC. Other
    values (firmware SMIs) are stored and otherwise ignored: kvmpy emulates no SMM."""

    LENGTH = APM_LEN
    SIZES = APM_ACCESS_SIZES

    def __init__(self, pm: AcpiPm) -> None:
        self.pm = pm
        self.state = ApmState()
        self._warned: set[int] = set()

    def reset(self) -> None:
        self.state.reset()

    def snapshot(self) -> ApmState:
        return self.state.snapshot()

    def restore(self, snap: ApmState) -> None:
        self.state.restore(snap)

    def read(self, offset: int, size: int) -> int:
        return self.state.cnt if offset == 0 else self.state.sts

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset != 0:
            self.state.sts = value
            return
        self.state.cnt = value
        if value == ACPI_ENABLE_CMD:
            self.pm.set_sci_enabled(True)
        elif value == ACPI_DISABLE_CMD:
            self.pm.set_sci_enabled(False)
        elif value not in self._warned:
            self._warned.add(value)
            log.info("apm: SMI command %#x ignored (no SMM)", value)
