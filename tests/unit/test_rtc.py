"""The MC146818 RTC/CMOS driven through ports 0x70/0x71 the way Linux's rtc_cmos and SeaBIOS do."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kvmpy import layout
from kvmpy.devices import rtc as r
from kvmpy.devices.rtc import CmosRtc, RtcState
from kvmpy.hw.bus import PioBus
from kvmpy.hw.irq import RecordingIrqLine

INDEX = layout.RTC_PORT
DATA = layout.RTC_PORT + 1
MiB = 1 << 20
GiB = 1 << 30

START = datetime(2024, 3, 5, 13, 45, 7, 250_000, tzinfo=timezone.utc)  # a Tuesday


class Clock:
    def __init__(self, t: datetime = START) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class Cmos:
    def __init__(self, t: datetime = START) -> None:
        self.clock = Clock(t)
        self.irq = RecordingIrqLine()
        self.dev = CmosRtc(self.irq, now=self.clock)
        self.bus = PioBus()
        self.bus.register(INDEX, CmosRtc.LENGTH, self.dev, "rtc", sizes=CmosRtc.SIZES)

    def read(self, index: int) -> int:
        self.bus.write(INDEX, 1, index | 0x80)  # Linux sets the NMI-disable bit too
        return self.bus.read(DATA, 1)

    def write(self, index: int, value: int) -> None:
        self.bus.write(INDEX, 1, index)
        self.bus.write(DATA, 1, value)

    def time_regs(self) -> dict[str, int]:
        names = ("sec", "min", "hour", "dow", "day", "mon", "year")
        regs = (
            r.REG_SECONDS,
            r.REG_MINUTES,
            r.REG_HOURS,
            r.REG_DAY_OF_WEEK,
            r.REG_DAY_OF_MONTH,
            r.REG_MONTH,
            r.REG_YEAR,
        )
        out = {n: self.read(i) for n, i in zip(names, regs, strict=True)}
        out["century"] = self.read(r.REG_CENTURY)
        return out


@pytest.fixture
def c() -> Cmos:
    return Cmos()


def test_power_on_registers(c: Cmos) -> None:
    assert c.read(r.REG_A) == 0x26
    assert c.read(r.REG_B) == 0x02  # BCD, 24-hour
    assert c.read(r.REG_C) == 0
    assert c.read(r.REG_D) == r.D_VRT
    assert c.bus.read(INDEX, 1) == 0xFF  # the index port is write-only


def test_time_in_bcd_24h(c: Cmos) -> None:
    assert c.time_regs() == {
        "sec": 0x07, "min": 0x45, "hour": 0x13, "dow": 3, "day": 0x05, "mon": 0x03,
        "year": 0x24, "century": 0x20,
    }  # fmt: skip


def test_time_in_binary(c: Cmos) -> None:
    c.write(r.REG_B, r.B_24H | r.B_DM_BINARY)
    assert c.time_regs() == {
        "sec": 7, "min": 45, "hour": 13, "dow": 3, "day": 5, "mon": 3, "year": 24, "century": 20,
    }  # fmt: skip


@pytest.mark.parametrize(
    "hour,bcd,binary",
    [(0, 0x12, 12), (1, 0x01, 1), (11, 0x11, 11), (12, 0x92, 0x8C), (13, 0x81, 0x81), (23, 0x91, 0x8B)],
)
def test_twelve_hour_mode(hour: int, bcd: int, binary: int) -> None:
    c = Cmos(START.replace(hour=hour))
    c.write(r.REG_B, 0)
    assert c.read(r.REG_HOURS) == bcd
    c.write(r.REG_B, r.B_DM_BINARY)
    assert c.read(r.REG_HOURS) == binary


@pytest.mark.parametrize("day,dow", [(3, 1), (4, 2), (9, 7)])  # 2024-03-03 was a Sunday
def test_day_of_week_sunday_is_one(day: int, dow: int) -> None:
    assert Cmos(START.replace(day=day)).read(r.REG_DAY_OF_WEEK) == dow


def test_clock_advances_with_the_host(c: Cmos) -> None:
    c.clock.advance(60)
    assert c.read(r.REG_MINUTES) == 0x46


def test_naive_host_time_is_taken_as_utc() -> None:
    c = Cmos(START.replace(tzinfo=None))
    assert c.read(r.REG_HOURS) == 0x13


def test_uip_only_just_before_the_update() -> None:
    c = Cmos(START.replace(microsecond=999_900))
    assert c.read(r.REG_A) & r.A_UIP
    c.clock.advance(0.0002)  # past the update
    assert not c.read(r.REG_A) & r.A_UIP
    c.clock.advance(0.5)
    assert not c.read(r.REG_A) & r.A_UIP


def test_uip_never_stuck(c: Cmos) -> None:
    """Linux's mc146818_avoid_UIP and SeaBIOS's rtc_updating poll until UIP clears."""
    for _ in range(10_000):
        if not c.read(r.REG_A) & r.A_UIP:
            break
        c.clock.advance(0.00001)
    else:
        pytest.fail("UIP never cleared")


def test_register_a_keeps_rate_and_not_uip(c: Cmos) -> None:
    c.write(r.REG_A, 0xAF)
    assert c.read(r.REG_A) == 0x2F


def test_set_time_with_set_bit(c: Cmos) -> None:
    c.write(r.REG_B, r.B_SET | r.B_24H)
    regs = {r.REG_SECONDS: 0x30, r.REG_MINUTES: 0x59, r.REG_HOURS: 0x23, r.REG_DAY_OF_MONTH: 0x31,
            r.REG_MONTH: 0x12, r.REG_YEAR: 0x99, r.REG_CENTURY: 0x19}  # fmt: skip
    for idx, v in regs.items():
        c.write(idx, v)
    c.clock.advance(100)  # frozen while SET
    assert c.read(r.REG_SECONDS) == 0x30
    assert not c.read(r.REG_A) & r.A_UIP
    c.write(r.REG_B, r.B_24H)
    c.clock.advance(31)
    got = c.time_regs()
    assert got == {"sec": 0x01, "min": 0x00, "hour": 0x00, "dow": 7, "day": 0x01, "mon": 0x01,
                   "year": 0x00, "century": 0x20}  # fmt: skip


def test_set_bit_clears_uie(c: Cmos) -> None:
    c.write(r.REG_B, r.B_UIE | r.B_24H)
    c.write(r.REG_B, r.B_SET | r.B_UIE | r.B_24H)
    assert c.read(r.REG_B) == r.B_SET | r.B_24H


def test_time_register_write_without_set_takes_effect(c: Cmos) -> None:
    c.write(r.REG_HOURS, 0x05)
    assert c.read(r.REG_HOURS) == 0x05
    assert c.read(r.REG_MINUTES) == 0x45
    c.clock.advance(3600)
    assert c.read(r.REG_HOURS) == 0x06


def test_set_time_in_12h_binary(c: Cmos) -> None:
    c.write(r.REG_B, r.B_SET | r.B_DM_BINARY)
    c.write(r.REG_HOURS, 0x80 | 12)  # 12 PM = noon
    c.write(r.REG_B, r.B_DM_BINARY | r.B_24H)
    assert c.read(r.REG_HOURS) == 12


def test_invalid_time_is_ignored(c: Cmos) -> None:
    c.write(r.REG_B, r.B_SET | r.B_24H)
    c.write(r.REG_MONTH, 0x13)
    c.write(r.REG_B, r.B_24H)
    assert c.read(r.REG_MONTH) == 0x03  # clock unchanged


def test_register_c_and_d_are_read_only(c: Cmos) -> None:
    c.write(r.REG_C, 0xFF)
    c.write(r.REG_D, 0x00)
    assert c.read(r.REG_C) == 0
    assert c.read(r.REG_D) == r.D_VRT


# --- Interrupt flags ---------------------------------------------------------------------------
def test_update_ended_interrupt(c: Cmos) -> None:
    c.write(r.REG_A, 0x20)  # no periodic flag, so C shows exactly UF
    c.write(r.REG_B, r.B_UIE | r.B_24H)
    assert c.dev.tick() == pytest.approx(0.75)
    assert not c.irq.level
    c.clock.advance(0.75)
    c.dev.tick()
    assert c.irq.level
    assert c.read(r.REG_C) == r.C_IRQF | r.C_UF
    assert not c.irq.level
    assert c.read(r.REG_C) == 0


def test_flags_without_enables_do_not_interrupt(c: Cmos) -> None:
    c.clock.advance(2)
    assert c.dev.tick() is None
    assert c.read(r.REG_C) == r.C_UF | r.C_PF  # flags are set, IRQF is not
    assert not c.irq.level


def test_periodic_interrupt(c: Cmos) -> None:
    c.write(r.REG_A, 0x2F)  # 2 Hz
    c.write(r.REG_B, r.B_PIE | r.B_24H)
    c.read(r.REG_C)
    wait = c.dev.tick()
    assert wait is not None and 0 < wait <= 0.5
    c.clock.advance(wait)
    c.dev.tick()
    assert c.irq.level
    assert c.read(r.REG_C) & (r.C_IRQF | r.C_PF) == r.C_IRQF | r.C_PF
    assert c.read(r.REG_C) == 0


@pytest.mark.parametrize("rs,hz", [(1, 256), (2, 128), (3, 8192), (6, 1024), (15, 2)])
def test_periodic_rates(rs: int, hz: int) -> None:
    c = Cmos(START.replace(microsecond=0))
    c.write(r.REG_A, 0x20 | rs)
    c.write(r.REG_B, r.B_PIE | r.B_24H)
    assert c.dev.tick() == pytest.approx(1 / hz, abs=2e-6)


def test_rate_zero_disables_periodic(c: Cmos) -> None:
    c.write(r.REG_A, 0x20)
    c.write(r.REG_B, r.B_PIE | r.B_24H)
    assert c.dev.tick() is None
    c.clock.advance(1)
    assert not c.read(r.REG_C) & r.C_PF


def test_alarm_interrupt(c: Cmos) -> None:
    """rtc_cmos: write the alarm registers, enable AIE, take IRQ8, read C."""
    c.write(r.REG_SECONDS_ALARM, 0x09)
    c.write(r.REG_MINUTES_ALARM, 0x45)
    c.write(r.REG_HOURS_ALARM, 0x13)
    c.write(r.REG_B, r.B_AIE | r.B_24H)
    c.read(r.REG_C)
    assert c.dev.tick() == pytest.approx(1.75)
    c.clock.advance(1)
    c.dev.tick()
    assert not c.irq.level
    c.clock.advance(1)
    c.dev.tick()
    assert c.irq.level
    assert c.read(r.REG_C) & (r.C_IRQF | r.C_AF) == r.C_IRQF | r.C_AF


def test_alarm_crossed_while_nobody_looked(c: Cmos) -> None:
    c.write(r.REG_SECONDS_ALARM, 0x10)
    c.write(r.REG_MINUTES_ALARM, 0xC0)  # don't care
    c.write(r.REG_HOURS_ALARM, 0xFF)  # don't care
    c.write(r.REG_B, r.B_AIE | r.B_24H)
    c.read(r.REG_C)
    c.clock.advance(30)  # 13:45:10 passed on the way to 13:45:37
    assert c.read(r.REG_C) & r.C_AF
    c.clock.advance(20)  # 13:45:57: no :10 in between
    assert not c.read(r.REG_C) & r.C_AF


def test_alarm_every_second_with_all_dont_care(c: Cmos) -> None:
    for reg in (r.REG_SECONDS_ALARM, r.REG_MINUTES_ALARM, r.REG_HOURS_ALARM):
        c.write(reg, 0xC0)
    c.write(r.REG_B, r.B_AIE | r.B_24H)
    assert c.dev.tick() == pytest.approx(0.75)


def test_alarm_next_day_and_invalid(c: Cmos) -> None:
    c.write(r.REG_SECONDS_ALARM, 0x00)
    c.write(r.REG_MINUTES_ALARM, 0x00)
    c.write(r.REG_HOURS_ALARM, 0x01)  # 01:00:00 tomorrow
    c.write(r.REG_B, r.B_AIE | r.B_24H)
    expected = (24 - 13) * 3600 - 45 * 60 - 7.25 + 3600
    assert c.dev.tick() == pytest.approx(expected)
    c.write(r.REG_HOURS_ALARM, 0x25)  # never matches
    assert c.dev.tick() is None


def test_enabling_with_a_flag_set_raises_irq(c: Cmos) -> None:
    c.clock.advance(1)
    c.dev.tick()
    assert not c.irq.level
    c.write(r.REG_B, r.B_UIE | r.B_24H)  # UF is already set
    assert c.irq.level


def test_disabling_the_enable_lowers_irq_but_keeps_the_flag(c: Cmos) -> None:
    c.write(r.REG_B, r.B_UIE | r.B_24H)
    c.clock.advance(1)
    c.dev.tick()
    assert c.irq.level
    c.write(r.REG_B, r.B_24H)
    assert not c.irq.level
    assert c.read(r.REG_C) & (r.C_IRQF | r.C_UF) == r.C_UF


# --- CMOS memory ------------------------------------------------------------------------------------
def test_memory_info_small_machine(c: Cmos) -> None:
    c.dev.set_memory_info(32 * MiB, 0, 2)
    assert c.read(0x15) | c.read(0x16) << 8 == 640
    ext = (32 - 1) * 1024  # KiB above 1 MiB, below the 0xFFFF cap
    assert c.read(0x17) | c.read(0x18) << 8 == ext
    assert c.read(0x30) | c.read(0x31) << 8 == ext
    assert c.read(0x34) | c.read(0x35) << 8 == (32 - 16) * 16
    assert (c.read(0x5B), c.read(0x5C), c.read(0x5D)) == (0, 0, 0)
    assert c.read(0x5F) == 1


def test_memory_info_large_machine(c: Cmos) -> None:
    c.dev.set_memory_info(3 * GiB, 5 * GiB, 8)
    assert c.read(0x17) | c.read(0x18) << 8 == 0xFFFF  # capped
    assert c.read(0x30) | c.read(0x31) << 8 == 0xFFFF
    assert c.read(0x34) | c.read(0x35) << 8 == (3 * GiB - 16 * MiB) // 0x10000
    above = c.read(0x5B) | c.read(0x5C) << 8 | c.read(0x5D) << 16
    assert above == 5 * GiB // 0x10000
    assert c.read(0x5F) == 7


def test_memory_info_tiny_machine(c: Cmos) -> None:
    c.dev.set_memory_info(1 * MiB, 0, 1)
    assert c.read(0x17) == c.read(0x18) == c.read(0x34) == c.read(0x35) == 0
    assert c.read(0x5F) == 0


def test_seabios_memory_arithmetic(c: Cmos) -> None:
    """SeaBIOS: RamSize = (CMOS 0x34/0x35 << 16) + 16 MiB, high RAM from 0x5b..0x5d."""
    c.dev.set_memory_info(2 * GiB, 4 * GiB, 1)
    ram = ((c.read(0x34) << 16) | (c.read(0x35) << 24)) + 16 * MiB
    high = (c.read(0x5B) << 16) | (c.read(0x5C) << 24) | (c.read(0x5D) << 32)
    assert ram == 2 * GiB
    assert high == 4 * GiB


def test_nvram_read_write_and_guards(c: Cmos) -> None:
    c.write(0x40, 0xAB)
    assert c.read(0x40) == 0xAB
    c.dev.set_nvram(0x3D, 0x21)
    assert c.dev.nvram(0x3D) == 0x21 == c.read(0x3D)
    with pytest.raises(ValueError):
        c.dev.set_nvram(r.REG_B, 0)
    with pytest.raises(ValueError):
        c.dev.set_nvram(r.REG_CENTURY, 0)


def test_index_wraps_to_seven_bits_and_keeps_nmi_bit(c: Cmos) -> None:
    c.bus.write(INDEX, 1, 0x80 | r.REG_D)
    assert c.dev.state.nmi_disabled
    assert c.bus.read(DATA, 1) == r.D_VRT
    c.bus.write(INDEX, 1, r.REG_D)
    assert not c.dev.state.nmi_disabled


def test_nonsense_never_raises(c: Cmos) -> None:
    for idx in range(128):
        c.write(idx, 0xFF)
        c.read(idx)
    c.write(r.REG_B, r.B_24H)
    assert c.bus.read(INDEX, 2) == 0xFFFF  # wrong size: answered by the bus
    assert c.dev.read(5, 1) == 0xFF


# --- State --------------------------------------------------------------------------------------------
def test_reset_keeps_time_and_memory(c: Cmos) -> None:
    c.dev.set_memory_info(256 * MiB, 0, 4)
    c.write(r.REG_HOURS, 0x02)
    c.write(r.REG_B, r.B_PIE | r.B_AIE | r.B_UIE | r.B_24H | r.B_DM_BINARY)
    c.clock.advance(1)
    c.dev.tick()
    assert c.irq.level
    c.dev.reset()
    assert not c.irq.level
    assert c.read(r.REG_B) == r.B_24H | r.B_DM_BINARY
    assert c.read(r.REG_C) == 0
    assert c.read(r.REG_HOURS) == 2
    assert c.read(0x5F) == 3


def test_snapshot_restore_equality(c: Cmos) -> None:
    c.dev.set_memory_info(256 * MiB, 0, 2)
    c.write(r.REG_HOURS, 0x02)
    c.write(r.REG_B, r.B_UIE | r.B_24H)
    c.clock.advance(1)
    c.dev.tick()
    snap = c.dev.snapshot()
    assert isinstance(snap, RtcState)
    other = Cmos(c.clock.t)
    other.dev.restore(snap)
    assert other.dev.state == c.dev.state
    assert other.irq.level is c.irq.level is True
    assert other.time_regs() == c.time_regs()
    assert other.read(0x5F) == 1
    c.write(0x40, 0x77)
    assert snap.cmos[0x40] != 0x77  # the snapshot is a copy
