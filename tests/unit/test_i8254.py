"""The 8254 PIT and port 0x61 driven the way SeaBIOS, Linux (TSC calibration, clock events,
the PIT clocksource) and firmware/lib/pit.c drive them, on a fake clock."""

from __future__ import annotations

import random

from kvmpy.devices.i8254 import (
    NS_PER_S,
    PIT_FREQ_HZ,
    REFRESH_PERIOD_NS,
    Pit,
    PitState,
    SystemControlB,
    tick_time,
    ticks_between,
)
from kvmpy.hw.bus import PioBus
from kvmpy.hw.irq import RecordingIrqLine

CH0, CH1, CH2, MODE, PORT_B = 0x40, 0x41, 0x42, 0x43, 0x61
T0 = 1_000_000_000_000  # an arbitrary monotonic start


class Clock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance_ns(self, ns: int) -> None:
        self.t += ns

    def to_tick(self, start: int, ticks: int) -> None:
        """Move to the first nanosecond at which ``ticks`` PIT clocks have passed since start."""
        self.t = tick_time(start, ticks)


def make(min_periodic_ns: int = 0):
    clock = Clock()
    irq = RecordingIrqLine()
    changed: list[int | None] = []
    pit = Pit(irq, clock, min_periodic_ns=min_periodic_ns,
              deadline_changed=lambda: changed.append(pit.next_deadline_ns()))
    port_b = SystemControlB(pit)
    bus = PioBus()
    bus.register(0x40, Pit.LENGTH, pit, "pit", sizes=Pit.SIZES)
    bus.register(0x61, SystemControlB.LENGTH, port_b, "port61", sizes=SystemControlB.SIZES)
    return pit, bus, clock, irq, changed


def outb(bus: PioBus, port: int, value: int) -> None:
    bus.write(port, 1, value)


def inb(bus: PioBus, port: int) -> int:
    return bus.read(port, 1)


def latch_read(bus: PioBus, channel: int) -> int:
    outb(bus, MODE, channel << 6)  # counter latch command
    return inb(bus, CH0 + channel) | inb(bus, CH0 + channel) << 8


def test_tick_helpers_agree():
    for ticks in (0, 1, 2, 17, 11931, 65536, 10**9):
        t = tick_time(T0, ticks)
        assert ticks_between(T0, t) == ticks
        assert ticks_between(T0, t - 1) == max(ticks - 1, 0)


def test_reset_runs_channel0_at_18_2_hz():
    pit, bus, clock, irq, _ = make()
    assert pit.next_deadline_ns() == tick_time(T0, 65536)
    assert abs(pit.next_deadline_ns() - T0 - 54_925_000) < 1_000
    assert pit.out(2)  # channel 2: mode 3 with the gate low, OUT high
    assert not pit.gate(2) and pit.gate(0)


def test_seabios_channel0_mode2_and_latched_reads():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x34)  # channel 0, lo/hi, mode 2
    outb(bus, CH0, 0)
    outb(bus, CH0, 0)
    start = clock.t
    assert latch_read(bus, 0) == 0  # 65536 reads as 0 right after the load
    clock.to_tick(start, 1000)
    assert latch_read(bus, 0) == 65536 - 1000
    clock.to_tick(start, 65535)
    assert latch_read(bus, 0) == 1 and not pit.out(0)  # OUT low while the count is 1
    assert pit.next_deadline_ns() == tick_time(start, 65536)
    clock.to_tick(start, 65536)
    assert pit.expire() and irq.pulses == 1
    assert pit.out(0)
    assert pit.next_deadline_ns() == tick_time(start, 2 * 65536)


def test_firmware_pit_start_and_stop():
    pit, bus, clock, irq, changed = make()
    div = PIT_FREQ_HZ // 100
    outb(bus, MODE, 0x34)
    outb(bus, CH0, div & 0xFF)
    outb(bus, CH0, div >> 8)
    start = clock.t
    for k in range(1, 4):
        deadline = pit.next_deadline_ns()
        assert deadline == tick_time(start, k * div)
        clock.t = deadline - 1
        assert not pit.expire()
        clock.t = deadline
        assert pit.expire()
        assert not pit.expire()  # one edge per period
    assert irq.pulses == 3
    assert changed and changed[-1] == tick_time(start, div)
    outb(bus, MODE, 0x30)  # pit_stop: mode 0, no count written
    assert pit.next_deadline_ns() is None and changed[-1] is None
    assert not pit.out(0)
    clock.advance_ns(NS_PER_S)
    assert not pit.expire() and irq.pulses == 3


def test_late_expire_loses_ticks_instead_of_bursting():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 100)
    outb(bus, CH0, 0)
    start = clock.t
    clock.to_tick(start, 1050)  # ten periods late
    assert pit.expire()
    assert not pit.expire()
    assert irq.pulses == 1
    assert pit.next_deadline_ns() == tick_time(start, 1100)


def test_periodic_edges_are_rate_limited():
    pit, bus, clock, irq, _ = make(min_periodic_ns=200_000)
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 12)  # ~100 kHz
    outb(bus, CH0, 0)
    start = clock.t
    clock.to_tick(start, 12)
    assert pit.expire()
    first = clock.t
    assert pit.next_deadline_ns() == first + 200_000
    clock.t = first + 200_000
    assert pit.expire()
    assert irq.pulses == 2


def test_mode4_oneshot_like_linux_clockevents():
    pit, bus, clock, irq, _ = make(min_periodic_ns=200_000)
    outb(bus, MODE, 0x38)  # pit_set_oneshot: channel 0, lo/hi, mode 4
    assert pit.out(0) and pit.next_deadline_ns() is None
    outb(bus, CH0, 20)  # pit_next_event(20): not rate-limited
    outb(bus, CH0, 0)
    start = clock.t
    clock.to_tick(start, 20)
    assert not pit.out(0)  # one clock low at the terminal count
    assert pit.next_deadline_ns() == tick_time(start, 21)
    clock.to_tick(start, 21)
    assert pit.out(0) and pit.expire()
    assert pit.next_deadline_ns() is None
    outb(bus, CH0, 50)  # rewriting the count restarts the strobe
    outb(bus, CH0, 0)
    restart = clock.t
    assert pit.next_deadline_ns() == tick_time(restart, 51)
    clock.to_tick(restart, 51)
    assert pit.expire() and irq.pulses == 2


def test_linux_pit_calibrate_tsc_mode0_out2():
    """pit_calibrate_tsc: gate high and speaker off through port 0x61, channel 2 mode 0 with a
    50 ms latch, then poll port 0x61 bit 5 until OUT2 rises."""
    pit, bus, clock, irq, _ = make()
    latch = PIT_FREQ_HZ // 20
    outb(bus, PORT_B, (inb(bus, PORT_B) & ~0x02) | 0x01)
    outb(bus, MODE, 0xB0)
    outb(bus, CH2, latch & 0xFF)
    outb(bus, CH2, latch >> 8)
    start = clock.t
    assert not inb(bus, PORT_B) & 0x20
    polls = 0
    while not inb(bus, PORT_B) & 0x20:
        clock.advance_ns(997)
        polls += 1
    elapsed = clock.t - start
    assert tick_time(start, latch) - start <= elapsed < tick_time(start, latch) - start + 997
    assert abs(elapsed - 50_000_000) < 2_000
    assert polls > 1000
    clock.t = tick_time(start, latch) - 1
    assert not inb(bus, PORT_B) & 0x20  # exact to the nanosecond
    clock.t = tick_time(start, latch)
    assert inb(bus, PORT_B) & 0x20
    assert irq.pulses == 0  # channel 2 has no interrupt


def test_linux_quick_pit_calibrate_msb_reads():
    """quick_pit_calibrate: mode 0 from 0xFFFF, unlatched LSB-then-MSB reads of channel 2."""
    pit, bus, clock, _, _ = make()
    outb(bus, PORT_B, (inb(bus, PORT_B) & ~0x02) | 0x01)
    outb(bus, MODE, 0xB0)
    outb(bus, CH2, 0xFF)
    outb(bus, CH2, 0xFF)
    start = clock.t
    for i in range(0, 40):
        clock.to_tick(start, 256 * i + 5)
        lsb = inb(bus, CH2)
        msb = inb(bus, CH2)
        value = 0xFFFF - (256 * i + 5)
        assert (msb, lsb) == (value >> 8, value & 0xFF)
    # After the terminal count the counter wraps and keeps counting, OUT stays high.
    clock.to_tick(start, 0xFFFF + 10)
    assert latch_read(bus, 2) == (0xFFFF - (0xFFFF + 10)) & 0xFFFF
    assert pit.out(2)


def test_seabios_tsc_calibration_restores_port61():
    pit, bus, clock, _, _ = make()
    orig = inb(bus, PORT_B)
    outb(bus, PORT_B, (orig & ~0x02) | 0x01)
    outb(bus, MODE, 0xB0)
    outb(bus, CH2, 0x00)
    outb(bus, CH2, 0x08)  # CALIBRATE_COUNT 0x800
    start = clock.t
    while not inb(bus, PORT_B) & 0x20:
        clock.advance_ns(1000)
    assert ticks_between(start, clock.t) >= 0x800
    outb(bus, PORT_B, orig)
    assert not pit.gate(2)


def test_gate_pauses_mode0():
    pit, bus, clock, _, _ = make()
    outb(bus, PORT_B, 0x01)
    outb(bus, MODE, 0xB0)
    outb(bus, CH2, 100)
    outb(bus, CH2, 0)
    start = clock.t
    clock.to_tick(start, 40)
    outb(bus, PORT_B, 0x00)  # gate low: counting stops
    clock.advance_ns(NS_PER_S)
    assert latch_read(bus, 2) == 60 and not pit.out(2)
    outb(bus, PORT_B, 0x01)
    resume = clock.t
    clock.to_tick(resume, 59)
    assert not pit.out(2)
    clock.to_tick(resume, 60)
    assert pit.out(2)


def test_count_loaded_with_gate_low_waits():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0xB0)
    outb(bus, CH2, 10)
    outb(bus, CH2, 0)
    clock.advance_ns(NS_PER_S)
    assert latch_read(bus, 2) == 10 and not pit.out(2)
    outb(bus, PORT_B, 0x01)
    go = clock.t
    clock.to_tick(go, 10)
    assert pit.out(2)


def test_mode0_first_byte_stops_counting():
    pit, bus, clock, irq, changed = make()
    outb(bus, MODE, 0x30)
    outb(bus, CH0, 0x00)
    outb(bus, CH0, 0x10)  # 0x1000
    start = clock.t
    clock.to_tick(start, 0x1000)
    assert pit.out(0) and pit.expire()
    outb(bus, CH0, 0x20)  # LSB of a new count: OUT low, counting stopped
    assert not pit.out(0) and pit.next_deadline_ns() is None
    outb(bus, CH0, 0x00)
    again = clock.t
    assert pit.next_deadline_ns() == tick_time(again, 0x20)


def test_mode1_hardware_oneshot_on_channel2():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0xB2)  # channel 2, lo/hi, mode 1
    outb(bus, CH2, 50)
    outb(bus, CH2, 0)
    assert pit.out(2)  # armed, waiting for a trigger
    outb(bus, PORT_B, 0x01)  # rising gate: trigger
    t = clock.t
    assert not pit.out(2)
    clock.to_tick(t, 49)
    assert latch_read(bus, 2) == 1 and not pit.out(2)
    clock.to_tick(t, 50)
    assert pit.out(2)
    outb(bus, CH2, 80)  # a new count waits for the next trigger
    outb(bus, CH2, 0)
    assert pit.out(2)
    outb(bus, PORT_B, 0x00)
    outb(bus, PORT_B, 0x01)
    t2 = clock.t
    clock.to_tick(t2, 79)
    assert not pit.out(2)
    clock.to_tick(t2, 80)
    assert pit.out(2)


def test_mode1_and_5_never_trigger_on_channel0():
    pit, bus, clock, irq, _ = make()
    for cw in (0x32, 0x3A):
        outb(bus, MODE, cw)
        outb(bus, CH0, 10)
        outb(bus, CH0, 0)
        assert pit.next_deadline_ns() is None
        clock.advance_ns(NS_PER_S)
        assert not pit.expire() and pit.out(0)


def test_mode2_count_sequence_and_gate():
    pit, bus, clock, _, _ = make()
    outb(bus, PORT_B, 0x01)
    outb(bus, MODE, 0xB4)
    outb(bus, CH2, 5)
    outb(bus, CH2, 0)
    start = clock.t
    seen = []
    for d in range(11):
        clock.to_tick(start, d)
        seen.append((latch_read(bus, 2), pit.out(2)))
    assert seen == [(5, True), (4, True), (3, True), (2, True), (1, False)] * 2 + [(5, True)]
    clock.to_tick(start, 14)  # count 1, OUT low
    outb(bus, PORT_B, 0x00)
    assert pit.out(2)  # gate low forces OUT high
    outb(bus, PORT_B, 0x01)
    t = clock.t
    clock.to_tick(t, 2)
    assert latch_read(bus, 2) == 3  # reloaded on the rising gate


def test_mode3_square_wave_even_and_odd():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x36)
    outb(bus, CH0, 8)
    outb(bus, CH0, 0)
    start = clock.t
    levels, counts = [], []
    for d in range(8):
        clock.to_tick(start, d)
        levels.append(pit.out(0))
        counts.append(pit.count(0))
    assert levels == [True] * 4 + [False] * 4
    assert counts == [8, 6, 4, 2, 8, 6, 4, 2]
    assert pit.next_deadline_ns() == tick_time(start, 8)
    # Odd count: high one clock longer than low.
    outb(bus, MODE, 0xB6)
    outb(bus, PORT_B, 0x01)
    outb(bus, CH2, 7)
    outb(bus, CH2, 0)
    s2 = clock.t
    levels = []
    for d in range(7):
        clock.to_tick(s2, d)
        levels.append(pit.out(2))
    assert levels == [True] * 4 + [False] * 3


def test_mode2_new_count_waits_for_the_period_end():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 100)
    outb(bus, CH0, 0)
    start = clock.t
    clock.to_tick(start, 30)
    outb(bus, CH0, 10)  # no control word: takes effect at the reload
    outb(bus, CH0, 0)
    assert pit.next_deadline_ns() == tick_time(start, 100)
    status = readback_status(bus, 0)
    assert status & 0x40  # NULL COUNT until the new count is in
    clock.to_tick(start, 100)
    assert pit.expire()
    assert pit.next_deadline_ns() == tick_time(tick_time(start, 100), 10)
    clock.to_tick(tick_time(start, 100), 3)
    assert latch_read(bus, 0) == 7


def readback_status(bus: PioBus, channel: int) -> int:
    outb(bus, MODE, 0xE0 | (2 << channel))  # read-back, status only
    return inb(bus, CH0 + channel)


def test_readback_status_and_count():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0x34)
    assert readback_status(bus, 0) == 0x80 | 0x40 | 0x30 | 0x04  # OUT high, NULL COUNT
    outb(bus, CH0, 0x00)
    outb(bus, CH0, 0x01)
    start = clock.t
    clock.to_tick(start, 0x40)
    outb(bus, MODE, 0xC2)  # read-back count and status of channel 0
    clock.to_tick(start, 0x80)  # latched values do not move
    assert inb(bus, CH0) == 0x80 | 0x30 | 0x04  # status first
    assert inb(bus, CH0) == 0xC0 and inb(bus, CH0) == 0x00
    assert latch_read(bus, 0) == 0x80  # then the live counter again
    # Channel 2 in mode 0 with BCD: status reflects all fields.
    outb(bus, MODE, 0xB1)
    assert readback_status(bus, 2) == 0x40 | 0x30 | 0x01  # OUT low in mode 0
    # A read-back of several channels at once.
    outb(bus, MODE, 0xDE)  # count only, channels 0-2
    assert inb(bus, CH1) | inb(bus, CH1) << 8 == pit.count(1)


def test_second_latch_is_ignored_until_read():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 0)
    outb(bus, CH0, 0x10)
    start = clock.t
    clock.to_tick(start, 5)
    outb(bus, MODE, 0x00)
    clock.to_tick(start, 50)
    outb(bus, MODE, 0x00)
    assert inb(bus, CH0) | inb(bus, CH0) << 8 == 0x1000 - 5
    outb(bus, MODE, 0x00)
    assert inb(bus, CH0) | inb(bus, CH0) << 8 == 0x1000 - 50


def test_lsb_only_and_msb_only_access():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0x50)  # channel 1, LSB only, mode 0
    outb(bus, CH1, 0x80)
    start = clock.t
    clock.to_tick(start, 0x10)
    assert inb(bus, CH1) == 0x70 and inb(bus, CH1) == 0x70
    outb(bus, MODE, 0x60)  # channel 1, MSB only, mode 0
    outb(bus, CH1, 0x02)  # count 0x200
    start = clock.t
    clock.to_tick(start, 0x100)
    assert inb(bus, CH1) == 0x01
    outb(bus, MODE, 0x40)
    assert inb(bus, CH1) == 0x01


def test_bcd_counting():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x31)  # channel 0, lo/hi, mode 0, BCD
    outb(bus, CH0, 0x00)
    outb(bus, CH0, 0x10)  # 1000 decimal
    start = clock.t
    assert pit.next_deadline_ns() == tick_time(start, 1000)
    clock.to_tick(start, 1)
    assert latch_read(bus, 0) == 0x0999
    clock.to_tick(start, 1001)
    assert latch_read(bus, 0) == 0x9999  # wraps through 0000 to 9999
    outb(bus, MODE, 0x35)  # mode 2, BCD, count 0 = 10000
    outb(bus, CH0, 0)
    outb(bus, CH0, 0)
    s2 = clock.t
    assert pit.next_deadline_ns() == tick_time(s2, 10000)
    outb(bus, CH0, 0xAB)  # not BCD digits: accepted, no crash
    outb(bus, CH0, 0xFF)


def test_control_word_moves_the_deadline_and_notifies():
    pit, bus, clock, _, changed = make()
    changed.clear()
    outb(bus, MODE, 0x34)
    assert changed == [None]
    outb(bus, CH0, 0x9B)
    outb(bus, CH0, 0x2E)  # Linux's LATCH for HZ=100
    assert changed[-1] == tick_time(clock.t, 0x2E9B)
    n = len(changed)
    outb(bus, MODE, 0x00)  # a latch does not move anything
    inb(bus, CH0)
    inb(bus, CH0)
    assert len(changed) == n


def test_port_access_delivers_a_due_edge():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 100)
    outb(bus, CH0, 0)
    clock.to_tick(clock.t, 100)
    latch_read(bus, 0)
    assert irq.pulses == 1


def test_port61_bits_and_refresh_toggle():
    pit, bus, clock, _, _ = make()
    outb(bus, PORT_B, 0xFF)
    v = inb(bus, PORT_B)
    assert v & 0x0F == 0x0F and not v & 0xC0
    assert pit.gate(2)
    port_b = bus.find(PORT_B).device
    assert port_b.speaker_on
    outb(bus, PORT_B, 0x01)
    assert not port_b.speaker_on
    r0 = inb(bus, PORT_B) & 0x10
    assert inb(bus, PORT_B) & 0x10 == r0  # no time passed: no flip
    clock.advance_ns(REFRESH_PERIOD_NS)
    r1 = inb(bus, PORT_B) & 0x10
    assert r1 != r0
    clock.advance_ns(10 * REFRESH_PERIOD_NS)
    assert inb(bus, PORT_B) & 0x10 != r1  # at most one flip per read, but always one
    assert abs(REFRESH_PERIOD_NS - 15_085) < 5


def test_port61_out2_follows_channel2_mode3():
    pit, bus, clock, _, _ = make()
    outb(bus, MODE, 0xB6)
    outb(bus, CH2, 100)
    outb(bus, CH2, 0)
    outb(bus, PORT_B, 0x03)
    start = clock.t
    clock.to_tick(start, 10)
    assert inb(bus, PORT_B) & 0x20
    clock.to_tick(start, 60)
    assert not inb(bus, PORT_B) & 0x20


def test_control_port_reads_float_and_nothing_raises():
    pit, bus, clock, _, _ = make()
    assert inb(bus, MODE) == 0xFF
    rng = random.Random(8254)
    ports = (CH0, CH1, CH2, MODE, PORT_B)
    for _ in range(20000):
        port = rng.choice(ports)
        if rng.random() < 0.6:
            outb(bus, port, rng.randrange(256))
        else:
            assert 0 <= inb(bus, port) <= 0xFF
        clock.advance_ns(rng.randrange(0, 200_000))
        pit.expire()
        d = pit.next_deadline_ns()
        assert d is None or d > clock.t
    assert bus.unowned.reads == 0 and bus.unowned.writes == 0


def test_snapshot_restore_rebases_times():
    pit, bus, clock, irq, _ = make()
    outb(bus, MODE, 0x34)
    outb(bus, CH0, 0)
    outb(bus, CH0, 0x10)
    start = clock.t
    clock.to_tick(start, 0x100)
    snap = pit.snapshot()
    assert isinstance(snap, PitState)
    count = latch_read(bus, 0)
    pit.restore(snap)
    assert pit.snapshot() == snap
    # Another machine whose clock reads something else entirely: the guest sees no jump.
    clock2 = Clock(5 * T0)
    other = Pit(RecordingIrqLine(), clock2)
    other.restore(snap)
    assert other.count(0) == count
    assert other.next_deadline_ns() - clock2.t == pit.next_deadline_ns() - clock.t
    pit.reset()
    assert pit.next_deadline_ns() == tick_time(clock.t, 65536)
