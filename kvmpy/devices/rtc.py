"""The MC146818 real-time clock and CMOS memory at ports 0x70 (index) and 0x71 (data).

Why it is more than a clock: firmware and guests treat the CMOS bytes as the machine's
configuration. SeaBIOS, as on QEMU, sizes RAM from them (see ``set_memory_info``), Linux's
``rtc_cmos`` reads and sets the time through registers 0-9 and A-D, and SeaBIOS reads the CPU
count at 0x5f. The offsets follow QEMU's ``pc_cmos_init``/microvm and SeaBIOS's ``rtc.h``.

**Time.** The clock is the host's UTC time (an injectable ``now`` for tests) plus an offset the
guest changes by setting the time. Registers 0-9 and the century byte 0x32 are computed when
read, in BCD or binary (register B's DM bit) and 12- or 24-hour form (B's 24/12 bit); while B's
SET bit is on they are frozen and take the guest's writes, and clearing SET starts the clock at
the written time. A write to a time register with SET off takes effect at once (as on QEMU).

**UIP.** Register A's update-in-progress bit is set only during the last 244 us of each second
(the window before the chip's update cycle), so it is never stuck on and code that waits for it
to rise or fall finishes.

**Flags and IRQ8.** There are no timers in a device model, so register C's flags are brought up
to date lazily, from the clock, whenever the guest touches the RTC: UF when a second boundary
passed, AF when the alarm time (with "don't care" values 0xC0-0xFF) was crossed, PF when a
periodic-interrupt boundary passed (rate from register A's RS bits). IRQF and the IRQ8 level
follow ``C & B``; reading C clears the flags and lowers the line. An interrupt that should arrive
while the guest waits without touching the RTC needs ``tick()``: the machine's I/O thread calls
it and sleeps for the number of seconds it returns (``None``: nothing enabled, no need to call).

**Reset.** ``reset()`` does what the chip's RESET pin does on a PC reset: it clears the
interrupt enables (PIE, AIE, UIE, SQWE) and C's flags. Time and the CMOS memory are
battery-backed and survive, so the memory layout SeaBIOS reads is still there after a reboot.

Register it as ``bus.register(layout.RTC_PORT, RTC_LEN, rtc, "rtc", sizes=RTC_ACCESS_SIZES)``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone

from kvmpy.hw.irq import IrqLine

log = logging.getLogger("kvmpy.devices.rtc")

#: Index port and data port, byte accesses only.
RTC_LEN = 2
RTC_ACCESS_SIZES = (1,)
CMOS_SIZE = 128

PORT_INDEX = 0
PORT_DATA = 1
INDEX_NMI_DISABLE = 0x80

# --- Clock registers (MC146818 datasheet, figure 3) -----------------------------------------
REG_SECONDS = 0x00
REG_SECONDS_ALARM = 0x01
REG_MINUTES = 0x02
REG_MINUTES_ALARM = 0x03
REG_HOURS = 0x04
REG_HOURS_ALARM = 0x05
REG_DAY_OF_WEEK = 0x06  # 1 = Sunday
REG_DAY_OF_MONTH = 0x07
REG_MONTH = 0x08
REG_YEAR = 0x09
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
REG_CENTURY = 0x32  # QEMU/SeaBIOS convention (ACPI FADT "century" points here)
TIME_REGS = (
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
)

A_UIP = 0x80
A_DV_MASK = 0x70
A_RS_MASK = 0x0F
A_RESET = 0x26  # 32.768 kHz time base, 1024 Hz periodic rate

B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_DM_BINARY = 0x04
B_24H = 0x02
B_DSE = 0x01
B_RESET = B_24H  # BCD, 24-hour: what Linux's rtc_cmos requires ("only 24-hr supported")

C_IRQF = 0x80
C_PF = 0x40
C_AF = 0x20
C_UF = 0x10
C_FLAGS = C_PF | C_AF | C_UF  # same bit positions as B's PIE/AIE/UIE

D_VRT = 0x80  # valid RAM and time: the battery is fine

HOUR_PM = 0x80  # 12-hour mode: bit 7 of the hour marks PM
ALARM_DONT_CARE = 0xC0  # an alarm byte with both top bits set matches any value

#: The update-in-progress window before each second's update (244 us on the real chip).
UIP_WINDOW_US = 244

# --- CMOS memory conventions (QEMU pc_cmos_init, SeaBIOS src/hw/rtc.h) ------------------------
CMOS_BASE_MEM_LO = 0x15  # base memory in KiB (640)
CMOS_BASE_MEM_HI = 0x16
CMOS_EXT_MEM_LO = 0x17  # memory between 1 MiB and 65 MiB, KiB, capped 0xFFFF
CMOS_EXT_MEM_HI = 0x18
CMOS_EXT_MEM2_LO = 0x30  # the same value again (SeaBIOS reads this copy)
CMOS_EXT_MEM2_HI = 0x31
CMOS_MEM_ABOVE_16M_LO = 0x34  # memory between 16 MiB and 4 GiB, 64 KiB units, capped 0xFFFF
CMOS_MEM_ABOVE_16M_HI = 0x35
CMOS_MEM_ABOVE_4G_LO = 0x5B  # memory above 4 GiB, 64 KiB units, three bytes
CMOS_MEM_ABOVE_4G_MID = 0x5C
CMOS_MEM_ABOVE_4G_HI = 0x5D
CMOS_SMP_COUNT = 0x5F  # number of CPUs minus one

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000
_DAY = 86400


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # a naive time is taken to be UTC
    td = dt - _EPOCH
    return (td.days * _DAY + td.seconds) * _US + td.microseconds


@dataclass
class RtcState:
    """Guest-visible state. ``offset_us`` is the guest's clock minus the host's UTC clock, so a
    snapshot moved to another host keeps the guest's idea of the wall time."""

    index: int = 0
    nmi_disabled: bool = False  # bit 7 of the last index write; kept for the guest to see
    cmos: list[int] = field(default_factory=lambda: _power_on_cmos())
    offset_us: int = 0
    last_second: int = 0  # RTC second at which UF/AF were last brought up to date
    last_period: int = 0  # periodic-interrupt boundary index at which PF was last updated

    def reset(self) -> None:
        """The RESET pin: interrupt enables and flags clear; time and memory survive."""
        self.cmos[REG_B] &= ~(B_PIE | B_AIE | B_UIE | B_SQWE)
        self.cmos[REG_C] = 0

    def snapshot(self) -> RtcState:
        return copy.deepcopy(self)

    def restore(self, snap: RtcState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


def _power_on_cmos() -> list[int]:
    cmos = [0] * CMOS_SIZE
    cmos[REG_A] = A_RESET
    cmos[REG_B] = B_RESET
    cmos[REG_D] = D_VRT
    cmos[CMOS_BASE_MEM_LO] = 640 & 0xFF
    cmos[CMOS_BASE_MEM_HI] = 640 >> 8
    return cmos


def _periodic_shift(reg_a: int) -> int | None:
    """log2 of the periodic interval in 32.768 kHz ticks, or None when RS is 0 (off).

    RS 3..15 give 8192 Hz .. 2 Hz; RS 1 and 2 are the same as 8 and 9 (256 Hz, 128 Hz)."""
    rs = reg_a & A_RS_MASK
    if rs == 0:
        return None
    if rs <= 2:
        rs += 7
    return rs - 1


class CmosRtc:
    """MC146818 RTC plus 128 bytes of CMOS memory; see the module docstring."""

    LENGTH = RTC_LEN
    SIZES = RTC_ACCESS_SIZES

    def __init__(self, irq: IrqLine, now: Callable[[], datetime] | None = None) -> None:
        self.irq = irq
        self.now = now or _utc_now
        self.state = RtcState()
        self._warned: set[str] = set()
        self._restart_trackers()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.state.reset()
        self._restart_trackers()
        self._update_irq()

    def snapshot(self) -> RtcState:
        return self.state.snapshot()

    def restore(self, snap: RtcState) -> None:
        self.state.restore(snap)
        self._update_irq()

    # -- host side --------------------------------------------------------------------------
    def set_memory_info(self, below_4g: int, above_4g: int, cpus: int) -> None:
        """Write the RAM sizes and CPU count where SeaBIOS (and older BIOSes) read them.

        ``below_4g``/``above_4g`` are bytes of RAM below and above 4 GiB (the e820 split)."""
        mib = 1 << 20
        ext = min(max(below_4g - mib, 0) // 1024, 0xFFFF)
        above_16m = min(max(below_4g - 16 * mib, 0) // 0x10000, 0xFFFF)
        above_4g_units = min(max(above_4g, 0) // 0x10000, 0xFF_FFFF)
        self.set_nvram(CMOS_BASE_MEM_LO, 640 & 0xFF)
        self.set_nvram(CMOS_BASE_MEM_HI, 640 >> 8)
        for lo, hi in ((CMOS_EXT_MEM_LO, CMOS_EXT_MEM_HI), (CMOS_EXT_MEM2_LO, CMOS_EXT_MEM2_HI)):
            self.set_nvram(lo, ext & 0xFF)
            self.set_nvram(hi, ext >> 8)
        self.set_nvram(CMOS_MEM_ABOVE_16M_LO, above_16m & 0xFF)
        self.set_nvram(CMOS_MEM_ABOVE_16M_HI, above_16m >> 8)
        self.set_nvram(CMOS_MEM_ABOVE_4G_LO, above_4g_units & 0xFF)
        self.set_nvram(CMOS_MEM_ABOVE_4G_MID, (above_4g_units >> 8) & 0xFF)
        self.set_nvram(CMOS_MEM_ABOVE_4G_HI, above_4g_units >> 16)
        self.set_nvram(CMOS_SMP_COUNT, min(max(cpus - 1, 0), 0xFF))

    def set_nvram(self, index: int, value: int) -> None:
        """Set one CMOS memory byte (not the clock registers 0x00-0x0D or the century)."""
        if not 0x0E <= index < CMOS_SIZE or index == REG_CENTURY:
            raise ValueError(f"CMOS index {index:#x} is not plain memory")
        self.state.cmos[index] = value & 0xFF

    def nvram(self, index: int) -> int:
        return self.state.cmos[index & 0x7F]

    def tick(self) -> float | None:
        """Bring flags and IRQ8 up to date; return seconds until the next enabled interrupt
        event (periodic, update-ended or alarm), or None when no interrupt is enabled."""
        self._evaluate()
        self._update_irq()
        st = self.state
        b = st.cmos[REG_B]
        if b & B_SET:
            return None
        now = self._rtc_us()
        waits: list[int] = []
        if b & B_UIE:
            waits.append(_US - now % _US)
        if b & B_PIE:
            shift = _periodic_shift(st.cmos[REG_A])
            if shift is not None:
                # next boundary of the periodic counter, in microseconds (rounded up)
                ticks = now * 32768 // _US
                nxt = ((ticks >> shift) + 1) << shift
                waits.append(-(-nxt * _US // 32768) - now)
        if b & B_AIE:
            at = self._next_alarm_after(now // _US)
            if at is not None:
                waits.append(at * _US - now)
        if not waits:
            return None
        return max(min(waits), 1) / _US

    # -- guest side -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset != PORT_DATA:
            return 0xFF  # the index port is write-only
        st = self.state
        self._evaluate()
        idx = st.index
        if idx == REG_A:
            value = st.cmos[REG_A] & ~A_UIP
            if self._update_in_progress():
                value |= A_UIP
        elif idx == REG_C:
            value = st.cmos[REG_C]
            st.cmos[REG_C] = 0
        elif idx == REG_D:
            value = D_VRT
        else:
            if idx in TIME_REGS and not st.cmos[REG_B] & B_SET:
                self._refresh_time()
            value = st.cmos[idx]
        self._update_irq()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        st = self.state
        value &= 0xFF
        if offset == PORT_INDEX:
            st.index = value & 0x7F
            st.nmi_disabled = bool(value & INDEX_NMI_DISABLE)
            return
        if offset != PORT_DATA:
            return
        self._evaluate()
        idx = st.index
        if idx == REG_A:
            st.cmos[REG_A] = value & ~A_UIP
            self._restart_periodic()
        elif idx == REG_B:
            self._write_b(value)
        elif idx in (REG_C, REG_D):
            self._log_once(f"ro{idx}", "write %#x to read-only register %#x ignored", value, idx)
        elif idx in TIME_REGS:
            if st.cmos[REG_B] & B_SET:
                st.cmos[idx] = value
            else:
                self._refresh_time()
                st.cmos[idx] = value
                self._commit_time()
        else:
            st.cmos[idx] = value  # alarm registers and CMOS memory
        self._update_irq()

    # -- registers --------------------------------------------------------------------------
    def _write_b(self, value: int) -> None:
        st = self.state
        old = st.cmos[REG_B]
        if value & B_SET:
            value &= ~B_UIE  # setting SET clears UIE (datasheet)
        if old & B_SET and not value & B_SET:
            self._commit_time()  # read back in the format they were written in
        st.cmos[REG_B] = value
        if value & B_SET and not old & B_SET:
            self._refresh_time()  # freeze the registers at the current time, in the new format
        self._recompute_irqf()  # IRQF follows the enables as well as the flags

    def _rtc_us(self) -> int:
        return _to_us(self.now()) + self.state.offset_us

    def _update_in_progress(self) -> bool:
        if self.state.cmos[REG_B] & B_SET:
            return False
        return self._rtc_us() % _US >= _US - UIP_WINDOW_US

    def _encode(self, v: int) -> int:
        if self.state.cmos[REG_B] & B_DM_BINARY:
            return v
        return ((v // 10) << 4) | (v % 10)

    def _decode(self, v: int) -> int:
        if self.state.cmos[REG_B] & B_DM_BINARY:
            return v
        return (v >> 4) * 10 + (v & 0x0F)

    def _encode_hour(self, hour: int) -> int:
        if self.state.cmos[REG_B] & B_24H:
            return self._encode(hour)
        h12 = hour % 12 or 12
        return self._encode(h12) | (HOUR_PM if hour >= 12 else 0)

    def _decode_hour(self, raw: int) -> int:
        if self.state.cmos[REG_B] & B_24H:
            return self._decode(raw)
        h = self._decode(raw & ~HOUR_PM) % 12
        return h + 12 if raw & HOUR_PM else h

    def _refresh_time(self) -> None:
        """Render the current RTC time into registers 0-9 and the century byte."""
        cmos = self.state.cmos
        t = _EPOCH + timedelta(microseconds=self._rtc_us())
        cmos[REG_SECONDS] = self._encode(t.second)
        cmos[REG_MINUTES] = self._encode(t.minute)
        cmos[REG_HOURS] = self._encode_hour(t.hour)
        cmos[REG_DAY_OF_WEEK] = self._encode((t.weekday() + 1) % 7 + 1)
        cmos[REG_DAY_OF_MONTH] = self._encode(t.day)
        cmos[REG_MONTH] = self._encode(t.month)
        cmos[REG_YEAR] = self._encode(t.year % 100)
        cmos[REG_CENTURY] = self._encode(t.year // 100)

    def _commit_time(self) -> None:
        """Start the clock at the time held in the registers (the guest just set it)."""
        st = self.state
        cmos = st.cmos
        try:
            t = datetime(
                self._decode(cmos[REG_CENTURY]) * 100 + self._decode(cmos[REG_YEAR]),
                self._decode(cmos[REG_MONTH]),
                self._decode(cmos[REG_DAY_OF_MONTH]),
                self._decode_hour(cmos[REG_HOURS]),
                self._decode(cmos[REG_MINUTES]),
                self._decode(cmos[REG_SECONDS]),
                tzinfo=timezone.utc,
            )
        except ValueError as e:
            self._log_once("bad-time", "guest set an invalid time (%s); clock unchanged", e)
            return
        st.offset_us = _to_us(t) - _to_us(self.now())
        self._restart_trackers()

    # -- flags and interrupts ---------------------------------------------------------------
    def _restart_trackers(self) -> None:
        self.state.last_second = self._rtc_us() // _US
        self._restart_periodic()

    def _restart_periodic(self) -> None:
        shift = _periodic_shift(self.state.cmos[REG_A])
        if shift is not None:
            self.state.last_period = (self._rtc_us() * 32768 // _US) >> shift

    def _evaluate(self) -> None:
        """Set UF/AF/PF for what happened since the last look, then IRQF."""
        st = self.state
        cmos = st.cmos
        if cmos[REG_B] & B_SET:
            self._recompute_irqf()
            return  # the clock is halted for setting: no update cycles, no new flags
        now = self._rtc_us()
        second = now // _US
        if second < st.last_second:  # the host clock stepped back
            st.last_second = second
        elif second > st.last_second:
            cmos[REG_C] |= C_UF
            alarm = self._next_alarm_after(st.last_second)
            if alarm is not None and alarm <= second:
                cmos[REG_C] |= C_AF
            st.last_second = second
        shift = _periodic_shift(cmos[REG_A])
        if shift is not None:
            period = (now * 32768 // _US) >> shift
            if period != st.last_period:
                cmos[REG_C] |= C_PF
                st.last_period = period
        self._recompute_irqf()

    def _recompute_irqf(self) -> None:
        cmos = self.state.cmos
        if cmos[REG_C] & cmos[REG_B] & C_FLAGS:
            cmos[REG_C] |= C_IRQF
        else:
            cmos[REG_C] &= ~C_IRQF

    def _alarm_field(self, reg: int, hour: bool = False) -> int | None:
        raw = self.state.cmos[reg]
        if raw & ALARM_DONT_CARE == ALARM_DONT_CARE:
            return None
        return self._decode_hour(raw) if hour else self._decode(raw)

    def _next_alarm_after(self, after: int) -> int | None:
        """The first RTC second after ``after`` whose time of day matches the alarm."""
        sec = self._alarm_field(REG_SECONDS_ALARM)
        mnt = self._alarm_field(REG_MINUTES_ALARM)
        hr = self._alarm_field(REG_HOURS_ALARM, hour=True)
        if (sec is not None and sec > 59) or (mnt is not None and mnt > 59) or (hr is not None and hr > 23):
            return None  # can never match
        start = after + 1
        day0 = start - start % _DAY
        for day in (day0, day0 + _DAY):
            for h in range(24) if hr is None else (hr,):
                if day + h * 3600 + 3599 < start:
                    continue
                for m in range(60) if mnt is None else (mnt,):
                    base = day + h * 3600 + m * 60
                    if base + 59 < start:
                        continue
                    for s in range(60) if sec is None else (sec,):
                        if base + s >= start:
                            return base + s
        return None

    def _update_irq(self) -> None:
        self.irq.set_level(bool(self.state.cmos[REG_C] & C_IRQF))

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.info("rtc: " + msg, *args)
