"""ACPI PM1/PM timer/GPE0, reset control and APM ports, driven the way ACPICA and SeaBIOS do."""

from __future__ import annotations

import pytest

from kvmpy import acpi, layout
from kvmpy.devices import acpi_pm as a
from kvmpy.devices.acpi_pm import AcpiPm, AcpiPmState, ApmControl, ResetControl
from kvmpy.events import RecordingStop, StopReason
from kvmpy.hw.bus import PioBus
from kvmpy.hw.irq import RecordingIrqLine

PM = layout.ACPI_PM_BASE
PM1_STS = PM + 0
PM1_EN = PM + 2
PM1_CNT = PM + 4
PM_TMR = PM + 8
GPE = layout.ACPI_GPE0_BASE
APM = 0xB2
SEC = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 123_456_789_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * SEC)


class Pm:
    def __init__(self, **kw: object) -> None:
        self.clock = Clock()
        self.sci = RecordingIrqLine()
        self.stop = RecordingStop()
        self.dev = AcpiPm(self.sci, self.stop, clock_ns=self.clock, **kw)  # type: ignore[arg-type]
        self.reset = ResetControl(self.stop)
        self.apm = ApmControl(self.dev)
        self.bus = PioBus()
        self.bus.register(PM, AcpiPm.LENGTH, self.dev, "acpi-pm", sizes=AcpiPm.SIZES)
        g = self.dev.gpe0
        self.bus.register(GPE, g.LENGTH, g, "acpi-gpe0", sizes=g.SIZES)
        self.bus.register(layout.RESET_CONTROL_PORT, ResetControl.LENGTH, self.reset, "rcr",
                          sizes=ResetControl.SIZES)  # fmt: skip
        self.bus.register(APM, ApmControl.LENGTH, self.apm, "apm", sizes=ApmControl.SIZES)

    def inw(self, port: int) -> int:
        return self.bus.read(port, 2)

    def outw(self, port: int, value: int) -> None:
        self.bus.write(port, 2, value)

    def inl(self, port: int) -> int:
        return self.bus.read(port, 4)


@pytest.fixture
def pm() -> Pm:
    return Pm()


def test_layout_matches_the_fadt() -> None:
    from kvmpy.acpi import tables

    assert a.PM1_EVT_LEN == tables.PM1_EVT_LEN
    assert a.PM1_CNT_LEN == tables.PM1_CNT_LEN
    assert a.PM_TMR_LEN == tables.PM_TMR_LEN
    assert a.PM1_CNT_OFFSET == tables.PM1A_CNT_OFFSET
    assert a.PM_TMR_OFFSET == tables.PM_TMR_OFFSET
    assert a.S5_SLP_TYP == acpi.S5_SLP_TYP
    assert AcpiPm.LENGTH == 0x40
    assert a.GPE0_LEN == layout.ACPI_GPE0_LEN


def test_power_on_state(pm: Pm) -> None:
    assert pm.inw(PM1_STS) == 0
    assert pm.inw(PM1_EN) == 0
    assert pm.inw(PM1_CNT) == a.CNT_SCI_EN  # SMI_CMD is 0 in our FADT: always in ACPI mode
    assert pm.inl(PM_TMR) == 0
    assert not pm.sci.level


def test_sci_en_clear_when_asked() -> None:
    assert Pm(sci_enabled=False).inw(PM1_CNT) == 0


# --- PM1 events and the SCI ----------------------------------------------------------------------
def test_power_button_raises_sci_only_when_enabled(pm: Pm) -> None:
    pm.dev.press_power_button()
    assert pm.inw(PM1_STS) & a.PM1_PWRBTN
    assert not pm.sci.level
    pm.outw(PM1_EN, a.PM1_PWRBTN)
    assert pm.sci.level
    assert pm.inw(PM1_EN) == a.PM1_PWRBTN
    pm.outw(PM1_STS, a.PM1_PWRBTN)  # write 1 to clear
    assert not pm.inw(PM1_STS) & a.PM1_PWRBTN
    assert not pm.sci.level


def test_status_write_zero_bits_leave_others(pm: Pm) -> None:
    pm.dev.press_power_button()
    pm.outw(PM1_STS, 0)
    pm.outw(PM1_STS, a.PM1_TMR)
    assert pm.inw(PM1_STS) == a.PM1_PWRBTN


def test_enable_keeps_only_defined_bits(pm: Pm) -> None:
    pm.outw(PM1_EN, 0xFFFF)
    assert pm.inw(PM1_EN) == a.PM1_EN_MASK


def test_evt_block_as_one_dword_and_as_bytes(pm: Pm) -> None:
    pm.dev.press_power_button()
    pm.bus.write(PM1_EN + 1, 1, a.PM1_PWRBTN >> 8)  # byte write to the enable's high byte
    assert pm.inl(PM1_STS) == a.PM1_PWRBTN | a.PM1_PWRBTN << 16
    assert pm.sci.level
    pm.bus.write(PM1_STS, 4, a.PM1_PWRBTN)  # a dword write clears status, zeroes enable
    assert pm.inl(PM1_STS) == 0
    assert not pm.sci.level


# --- Sleep ---------------------------------------------------------------------------------------
def test_s5_powers_off(pm: Pm) -> None:
    cnt = pm.inw(PM1_CNT)
    pm.outw(PM1_CNT, cnt | a.S5_SLP_TYP << 10 | a.CNT_SLP_EN)
    assert [s.reason for s in pm.stop.stops] == [StopReason.POWEROFF]
    assert not pm.inw(PM1_CNT) & a.CNT_SLP_EN  # write-only


def test_s5_as_two_byte_writes(pm: Pm) -> None:
    v = a.CNT_SCI_EN | a.S5_SLP_TYP << 10 | a.CNT_SLP_EN
    pm.bus.write(PM1_CNT, 1, v & 0xFF)
    assert pm.stop.stops == []
    pm.bus.write(PM1_CNT + 1, 1, v >> 8)
    assert [s.reason for s in pm.stop.stops] == [StopReason.POWEROFF]


def test_other_sleep_types_are_ignored(pm: Pm) -> None:
    pm.outw(PM1_CNT, a.CNT_SCI_EN | 1 << 10 | a.CNT_SLP_EN)
    assert pm.stop.stops == []
    assert pm.inw(PM1_CNT) == a.CNT_SCI_EN | 1 << 10  # SLP_TYP is kept, SLP_EN is not


def test_slp_typ_without_slp_en_does_nothing(pm: Pm) -> None:
    pm.outw(PM1_CNT, a.CNT_SCI_EN | a.S5_SLP_TYP << 10)
    assert pm.stop.stops == []


# --- PM timer -------------------------------------------------------------------------------------
def test_timer_counts_at_3_579545_mhz(pm: Pm) -> None:
    t0 = pm.inl(PM_TMR)
    pm.clock.advance(1)
    assert pm.inl(PM_TMR) - t0 == a.PM_TIMER_HZ
    pm.clock.advance(0.001)
    assert pm.inl(PM_TMR) - t0 == a.PM_TIMER_HZ + 3579


def test_timer_is_24_bits_and_wraps(pm: Pm) -> None:
    pm.clock.advance(5)  # 17.9 M ticks > 2^24
    assert pm.inl(PM_TMR) == (5 * a.PM_TIMER_HZ) & 0xFFFFFF


def test_timer_32_bits() -> None:
    p = Pm(timer_bits=32)
    p.clock.advance(5)
    assert p.inl(PM_TMR) == 5 * a.PM_TIMER_HZ


def test_timer_bits_must_be_24_or_32() -> None:
    with pytest.raises(ValueError):
        AcpiPm(RecordingIrqLine(), RecordingStop(), timer_bits=16)


def test_seabios_style_timer_delay(pm: Pm) -> None:
    """A calibrated delay loop: read the timer until enough ticks have passed."""
    start = pm.inl(PM_TMR)
    loops = 0
    while (pm.inl(PM_TMR) - start) & 0xFFFFFF < 3580:  # ~1 ms
        pm.clock.advance(0.0001)
        loops += 1
    assert 9 <= loops <= 11


def test_tmr_sts_when_bit_23_toggles(pm: Pm) -> None:
    half = 1 << 23
    pm.clock.advance((half - 10) / a.PM_TIMER_HZ)
    assert not pm.inw(PM1_STS) & a.PM1_TMR
    pm.clock.advance(20 / a.PM_TIMER_HZ)
    assert pm.inw(PM1_STS) & a.PM1_TMR
    assert not pm.sci.level  # TMR_EN is off
    pm.outw(PM1_STS, a.PM1_TMR)
    assert not pm.inw(PM1_STS) & a.PM1_TMR  # stays clear until the next toggle
    pm.clock.advance(half / a.PM_TIMER_HZ)
    assert pm.inw(PM1_STS) & a.PM1_TMR


def test_tmr_sci_via_tick(pm: Pm) -> None:
    assert pm.dev.tick() is None  # TMR_EN off: nothing to wake up for
    pm.outw(PM1_EN, a.PM1_TMR)
    wait = pm.dev.tick()
    assert wait == pytest.approx((1 << 23) / a.PM_TIMER_HZ)
    assert not pm.sci.level
    pm.clock.advance(wait + 1e-6)
    pm.dev.tick()
    assert pm.sci.level
    pm.outw(PM1_STS, a.PM1_TMR)
    assert not pm.sci.level


# --- GPE0 ------------------------------------------------------------------------------------------
def test_gpe0_status_enable_and_shared_sci(pm: Pm) -> None:
    half = layout.ACPI_GPE0_LEN // 2
    pm.dev.raise_gpe(1)
    assert pm.bus.read(GPE, 1) == 0x02
    assert not pm.sci.level
    pm.bus.write(GPE + half, 1, 0x02)
    assert pm.bus.read(GPE + half, 1) == 0x02
    assert pm.sci.level
    # PM1 also wants the SCI: clearing the GPE must not drop the shared line.
    pm.outw(PM1_EN, a.PM1_PWRBTN)
    pm.dev.press_power_button()
    pm.bus.write(GPE, 1, 0x02)
    assert pm.bus.read(GPE, 1) == 0
    assert pm.sci.level
    pm.outw(PM1_STS, a.PM1_PWRBTN)
    assert not pm.sci.level


def test_gpe0_wide_access(pm: Pm) -> None:
    pm.dev.raise_gpe(9)
    pm.bus.write(GPE + 2, 2, 0x0200)
    assert pm.bus.read(GPE, 4) == 0x0200_0200
    pm.bus.write(GPE, 4, 0x0000_0200)  # clear status, zero enable
    assert pm.bus.read(GPE, 4) == 0
    with pytest.raises(ValueError):
        pm.dev.raise_gpe(16)


# --- Reset control and APM ---------------------------------------------------------------------------
def test_linux_reboot_via_cf9(pm: Pm) -> None:
    port = layout.RESET_CONTROL_PORT
    cf9 = pm.bus.read(port, 1) & ~6
    pm.bus.write(port, 1, cf9 | 2)  # request hard reset
    assert pm.stop.stops == []
    assert pm.bus.read(port, 1) == 2
    pm.bus.write(port, 1, cf9 | 6)
    assert [s.reason for s in pm.stop.stops] == [StopReason.RESET]


def test_full_reset_value(pm: Pm) -> None:
    pm.bus.write(layout.RESET_CONTROL_PORT, 1, 0x0E)
    assert [s.reason for s in pm.stop.stops] == [StopReason.RESET]


def test_reset_control_state(pm: Pm) -> None:
    pm.bus.write(layout.RESET_CONTROL_PORT, 1, 0x0A)
    snap = pm.reset.snapshot()
    other = ResetControl(RecordingStop())
    other.restore(snap)
    assert other.state == pm.reset.state
    assert other.read(0, 1) == 0x0A
    pm.reset.reset()
    assert pm.reset.read(0, 1) == 0


def test_apm_acpi_mode_switch(pm: Pm) -> None:
    pm.bus.write(APM, 1, a.ACPI_DISABLE_CMD)
    assert not pm.inw(PM1_CNT) & a.CNT_SCI_EN
    pm.bus.write(APM, 1, a.ACPI_ENABLE_CMD)
    assert pm.inw(PM1_CNT) & a.CNT_SCI_EN
    pm.bus.write(APM, 1, 0x00)  # some firmware SMI: ignored
    pm.bus.write(APM + 1, 1, 0x5A)
    assert (pm.bus.read(APM, 1), pm.bus.read(APM + 1, 1)) == (0x00, 0x5A)
    snap = pm.apm.snapshot()
    pm.apm.reset()
    assert pm.bus.read(APM + 1, 1) == 0
    pm.apm.restore(snap)
    assert pm.bus.read(APM + 1, 1) == 0x5A


# --- Robustness and state -----------------------------------------------------------------------------
def test_nonsense_never_raises(pm: Pm) -> None:
    pm.bus.write(PM_TMR, 4, 0xFFFFFFFF)  # read-only
    pm.bus.write(PM + 0x20, 4, 0xFFFFFFFF)  # unused part of the block
    assert pm.bus.read(PM + 0x20, 4) == 0
    assert pm.bus.read(PM + 6, 2) == 0
    for off in range(0, AcpiPm.LENGTH, 2):
        pm.bus.read(PM + off, 2)
    assert pm.stop.stops == []


def test_snapshot_restore_equality(pm: Pm) -> None:
    pm.outw(PM1_EN, a.PM1_PWRBTN | a.PM1_TMR)
    pm.dev.press_power_button()
    pm.dev.raise_gpe(3)
    pm.clock.advance(3)
    snap = pm.dev.snapshot()
    assert isinstance(snap, AcpiPmState)
    value = pm.inl(PM_TMR)
    other = Pm()
    other.clock.ns = 5 * SEC  # another host: a different monotonic clock
    other.dev.restore(snap)
    assert other.dev.state == pm.dev.state
    assert other.sci.level is pm.sci.level is True
    assert other.inl(PM_TMR) == value  # the timer resumes where it was
    other.clock.advance(1)
    assert other.inl(PM_TMR) == (value + a.PM_TIMER_HZ) & 0xFFFFFF
    pm.outw(PM1_STS, 0xFFFF)
    assert snap.pm1_sts & a.PM1_PWRBTN  # the snapshot is a copy


def test_reset(pm: Pm) -> None:
    pm.outw(PM1_EN, a.PM1_PWRBTN)
    pm.dev.press_power_button()
    pm.clock.advance(1)
    pm.dev.reset()
    assert pm.dev.state == AcpiPmState(pm1_cnt=a.CNT_SCI_EN)
    assert pm.inl(PM_TMR) == 0
    assert not pm.sci.level
