"""The 8254 programmable interval timer (ports 0x40-0x43) and system control port B (0x61).

Why it exists: with KVM's split irqchip there is no in-kernel PIT, and PC guests still lean on
one. SeaBIOS runs channel 0 at 18.2 Hz and reads it with latch commands; Linux calibrates the TSC
against channel 2 (gate and OUT2 through port 0x61, mode 0, polling bit 5, or reading the count
MSB as it falls) and may use channel 0 as its periodic (mode 2) or one-shot (mode 4) clock event;
our guest programs (firmware/lib/pit.c) tick on IRQ0 in mode 2.

**Time is a function, not a thread.** Nothing here runs on its own. Each channel remembers when
its count started (``start_ns``, from the injected ``clock``) and computes its count and OUT pin
from the elapsed PIT clocks at 1 193 182 Hz whenever asked. Channel 0's OUT drives IRQ0: the
machine asks ``next_deadline_ns()`` (the next *rising* edge of OUT0, the one the edge-triggered
PIC and IOAPIC see) and calls ``expire()`` once it has passed; ``expire`` pulses IRQ0 at most once
and schedules the next edge strictly after "now", so late calls lose ticks rather than bursting
them (QEMU does not catch up either). Port accesses deliver a due edge too, so what the guest
reads and what it was interrupted by agree. Periodic modes (2, 3) are held to one edge per
``min_periodic_ns`` (200 us, KVM's ``min_timer_period_us`` default) so that a guest asking for
MHz rates cannot make the I/O thread spin; one-shots are never delayed. ``deadline_changed`` (if
given) is called when a guest write moves channel 0's next edge, so a sleeping timer thread can
be woken.

**Counting** (Intel 82C54 datasheet, "Mode definitions"; count N, d clocks since start):

* mode 0, interrupt on terminal count: OUT low after the control word and while counting, high
  from d = N on; the count keeps wrapping. Gate low pauses counting. In lo/hi access the first
  count byte already stops counting (OUT low) until the second arrives.
* mode 1, hardware one-shot: a rising gate edge (re)starts N; OUT low until d = N. A count
  written meanwhile waits for the next trigger. Channels 0 and 1 have their gate tied high and
  so never trigger in modes 1 and 5, as on a PC.
* mode 2, rate generator: OUT high, low for the clock where the count is 1, reload at 0: rising
  edges at d = kN. Gate low stops counting and forces OUT high; a rising gate reloads.
* mode 3, square wave: OUT high for ceil(N/2) clocks and low for floor(N/2), the count falling by
  two (the odd-count sequence per the datasheet); gate as in mode 2.
* modes 4 and 5, software / hardware strobe: OUT high, low for one clock at d = N (edge at N+1).
  Mode 4 starts on the count write (gate low pauses), mode 5 on a rising gate.
* A new count written in mode 2 or 3 while counting takes effect at the end of the current
  period (the datasheet says half-period for mode 3; the period end is close enough). Modes 0
  and 4 restart at once. Control-word modes 6 and 7 are modes 2 and 3.
* BCD counting (control word bit 0) is honoured: counts are decoded from and read back as four
  BCD digits, 0 meaning 10000.

A control word resets the channel's control logic: it drops pending latches and puts OUT in its
mode's initial state (low for mode 0, high otherwise) until a count arrives; counter latch
commands (access 00) and read-back commands (0xC0 | ~COUNT<<5 | ~STATUS<<4 | channel bits) latch
the count and/or the status byte (OUT, NULL COUNT, access, mode, BCD), status read first. A
second latch before the first is read is ignored. Reading port 0x43 returns 0xFF (the 8254
leaves the bus floating there).

**Reset** follows QEMU: every channel in mode 3 with count 65536 (counting on channels 0 and 1,
channel 2 waiting for its gate), lo/hi access.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmpy.hw.irq import IrqLine

# --- Placement ----------------------------------------------------------------------------------
PIT_LENGTH = 4
PIT_SIZES = (1,)
SYSTEM_CONTROL_B_LENGTH = 1
SYSTEM_CONTROL_B_SIZES = (1,)

PIT_FREQ_HZ = 1_193_182  # 14.31818 MHz / 12
NS_PER_S = 1_000_000_000
CHANNELS = 3
PORT_CONTROL = 3
FLOATING_BUS = 0xFF
#: Shortest interval between two periodic IRQ0 edges (KVM's min_timer_period_us default).
MIN_PERIODIC_NS = 200_000

# --- Control word (82C54 datasheet, "Control Word Format") -------------------------------------
CW_SC_SHIFT = 6
CW_SC_READBACK = 3
CW_RW_SHIFT = 4
RW_LATCH = 0
RW_LSB = 1
RW_MSB = 2
RW_WORD = 3
CW_MODE_SHIFT = 1
CW_MODE_MASK = 0x07
CW_BCD = 0x01
# --- Read-back command ("Read-Back Command Format") ----------------------------------------------
RB_NOT_COUNT = 0x20
RB_NOT_STATUS = 0x10
RB_CHANNEL0 = 0x02  # channel n at bit n+1
# --- Status byte ("Status Byte") -------------------------------------------------------------------
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40

BINARY_MODULUS = 0x10000
BCD_MODULUS = 10000

# Channel phases: waiting for a count after a control word; count loaded, waiting for a gate
# trigger (modes 1 and 5); counting.
PHASE_IDLE = 0
PHASE_ARMED = 1
PHASE_RUNNING = 2

# --- System control port B (port 0x61; PIIX "NMI Status and Control Register") ------------------
SCB_GATE2 = 0x01
SCB_SPEAKER = 0x02
SCB_PARITY_DISABLE = 0x04
SCB_IOCHK_DISABLE = 0x08
SCB_WRITABLE = 0x0F
SCB_REFRESH = 0x10
SCB_OUT2 = 0x20
#: DRAM refresh request period: channel 1 programmed with count 18 by the PC BIOS (~15.085 us).
REFRESH_PERIOD_NS = 18 * NS_PER_S // PIT_FREQ_HZ


def ticks_between(start_ns: int, now_ns: int) -> int:
    """Whole PIT clocks from ``start_ns`` to ``now_ns`` (0 if ``now_ns`` is earlier)."""
    if now_ns <= start_ns:
        return 0
    return (now_ns - start_ns) * PIT_FREQ_HZ // NS_PER_S


def tick_time(start_ns: int, ticks: int) -> int:
    """The first nanosecond at which ``ticks_between(start_ns, t) >= ticks``."""
    return start_ns + -(-ticks * NS_PER_S // PIT_FREQ_HZ)


def _from_bcd(raw: int) -> int:
    return sum(((raw >> (4 * i)) & 0xF) * 10**i for i in range(4))


def _to_bcd(value: int) -> int:
    value %= BCD_MODULUS
    return sum(((value // 10**i) % 10) << (4 * i) for i in range(4))


@dataclass
class PitChannelState:
    """One counter. Times are ``clock`` nanoseconds; counts are binary clocks (1..65536)."""

    mode: int = 3  # 0-5 (control-word modes 6 and 7 folded onto 2 and 3)
    mode_bits: int = 3  # as written, for the status byte
    bcd: bool = False
    rw: int = RW_WORD
    write_msb_next: bool = False
    write_latch: int = 0
    read_msb_next: bool = False
    count_latch: int = 0  # RW_* still to be read from ``latched_count``, 0 = none
    latched_count: int = 0
    status_latched: bool = False
    status: int = 0
    count: int = BINARY_MODULUS  # the programmed initial count
    gate: bool = True
    phase: int = PHASE_RUNNING
    start_ns: int = 0  # when d = 0
    frozen: int | None = None  # elapsed clocks held while counting is stopped
    cycle: int = BINARY_MODULUS  # the count the current run uses
    pending_count: int | None = None  # modes 2/3: a new count waiting for the period end
    pending_start_ns: int = 0
    hold: int = 0  # counter value shown while not counting
    idle_out: bool = True  # OUT while not counting
    stale_count: bool = False  # modes 1/5: a count written during a run, for the next trigger


@dataclass
class PitState:
    channels: list[PitChannelState] = field(default_factory=lambda: [PitChannelState() for _ in range(3)])
    next_edge_ns: int | None = None  # channel 0's next IRQ0 edge
    last_edge_ns: int | None = None
    taken_ns: int = 0  # in a snapshot: the clock when it was taken, to rebase times on restore

    def snapshot(self) -> PitState:
        return copy.deepcopy(self)

    def restore(self, snap: PitState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


class Pit:
    """The 8254 on ports base+0..3 (byte accesses); see the module docstring."""

    LENGTH = PIT_LENGTH
    SIZES = PIT_SIZES

    def __init__(
        self,
        irq0: IrqLine,
        clock: Callable[[], int] = time.monotonic_ns,
        *,
        deadline_changed: Callable[[], None] | None = None,
        min_periodic_ns: int = MIN_PERIODIC_NS,
    ) -> None:
        self.irq0 = irq0
        self.clock = clock
        self.deadline_changed = deadline_changed
        self.min_periodic_ns = min_periodic_ns
        self.state = PitState()
        self._power_on(notify=False)

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._power_on(notify=True)

    def _power_on(self, notify: bool) -> None:
        now = self.clock()
        self.state = PitState()
        for i, ch in enumerate(self.state.channels):
            ch.gate = i != 2
            ch.start_ns = now
            if not ch.gate:
                ch.frozen = 0  # mode 3 with the gate low: stopped, OUT high
        self._reschedule(now, notify=notify)

    def snapshot(self) -> PitState:
        snap = self.state.snapshot()
        snap.taken_ns = self.clock()
        return snap

    def restore(self, snap: PitState) -> None:
        """Restore, shifting every time by how far this clock is from the one that took it."""
        st = snap.snapshot()
        shift = self.clock() - snap.taken_ns
        for ch in st.channels:
            ch.start_ns += shift
            ch.pending_start_ns += shift
        if st.next_edge_ns is not None:
            st.next_edge_ns += shift
        if st.last_edge_ns is not None:
            st.last_edge_ns += shift
        st.taken_ns = 0
        self.state = st
        if self.deadline_changed is not None:
            self.deadline_changed()

    # -- the machine's timer interface ----------------------------------------------------------
    def next_deadline_ns(self) -> int | None:
        """When channel 0's OUT next rises (an IRQ0 edge), in ``clock`` ns; None if never."""
        return self.state.next_edge_ns

    def expire(self, now_ns: int | None = None) -> bool:
        """Deliver IRQ0 if its edge is due (at most one); return whether one was delivered."""
        now = self.clock() if now_ns is None else now_ns
        nxt = self.state.next_edge_ns
        if nxt is None or now < nxt:
            return False
        self.state.last_edge_ns = now
        self._reschedule(now)
        self.irq0.pulse()
        return True

    # -- gates and outputs ----------------------------------------------------------------------
    def set_gate(self, channel: int, level: bool, now_ns: int | None = None) -> None:
        """Drive a channel's GATE input (on a PC only channel 2's is wired, to port 0x61)."""
        now = self.clock() if now_ns is None else now_ns
        ch = self.state.channels[channel]
        level = bool(level)
        if level == ch.gate:
            return
        ch.gate = level
        self._settle(ch, now)
        mode = ch.mode
        if mode in (1, 5):
            if level and ch.phase != PHASE_IDLE:
                self._start(ch, now)
        elif ch.phase == PHASE_RUNNING:
            if not level:
                ch.frozen = self._elapsed(ch, now)
                ch.pending_count = None
            elif mode in (2, 3):
                self._start(ch, now)  # a rising gate reloads
            elif ch.frozen is not None:
                ch.start_ns = now - -(-ch.frozen * NS_PER_S // PIT_FREQ_HZ)
                ch.frozen = None
        if channel == 0:
            self._reschedule(now, notify=True)

    def gate(self, channel: int) -> bool:
        return self.state.channels[channel].gate

    def out(self, channel: int, now_ns: int | None = None) -> bool:
        """The level of a channel's OUT pin now."""
        now = self.clock() if now_ns is None else now_ns
        return self._out(self.state.channels[channel], now)

    def count(self, channel: int, now_ns: int | None = None) -> int:
        """The counter as a read would show it (BCD-encoded in BCD mode)."""
        now = self.clock() if now_ns is None else now_ns
        return self._read_count(self.state.channels[channel], now)

    # -- port accesses --------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        now = self.clock()
        self.expire(now)
        offset &= 3
        if offset == PORT_CONTROL:
            return FLOATING_BUS
        ch = self.state.channels[offset]
        if ch.status_latched:
            ch.status_latched = False
            return ch.status
        if ch.count_latch:
            value = ch.latched_count
            if ch.count_latch == RW_MSB:
                ch.count_latch = 0
                return (value >> 8) & 0xFF
            ch.count_latch = RW_MSB if ch.count_latch == RW_WORD else 0
            return value & 0xFF
        value = self._read_count(ch, now)
        if ch.rw == RW_LSB:
            return value & 0xFF
        if ch.rw == RW_MSB:
            return (value >> 8) & 0xFF
        msb = ch.read_msb_next
        ch.read_msb_next = not msb
        return (value >> 8) & 0xFF if msb else value & 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        now = self.clock()
        self.expire(now)
        offset &= 3
        value &= 0xFF
        if offset == PORT_CONTROL:
            self._control(value, now)
            return
        ch = self.state.channels[offset]
        if ch.rw == RW_LSB:
            self._load(offset, value, now)
        elif ch.rw == RW_MSB:
            self._load(offset, value << 8, now)
        elif not ch.write_msb_next:
            ch.write_latch = value
            ch.write_msb_next = True
            if ch.mode == 0 and ch.phase == PHASE_RUNNING:
                # Mode 0: writing the first byte stops the count and drops OUT.
                ch.hold = self._binary_count(ch, now)
                ch.phase = PHASE_IDLE
                ch.idle_out = False
                ch.pending_count = None
                if offset == 0:
                    self._reschedule(now, notify=True)
        else:
            ch.write_msb_next = False
            self._load(offset, ch.write_latch | value << 8, now)

    # -- internals: commands --------------------------------------------------------------------
    def _control(self, value: int, now: int) -> None:
        sc = value >> CW_SC_SHIFT
        if sc == CW_SC_READBACK:
            for i, ch in enumerate(self.state.channels):
                if not value & (RB_CHANNEL0 << i):
                    continue
                if not value & RB_NOT_COUNT:
                    self._latch(ch, now)
                if not value & RB_NOT_STATUS and not ch.status_latched:
                    ch.status = self._status(ch, now)
                    ch.status_latched = True
            return
        ch = self.state.channels[sc]
        access = (value >> CW_RW_SHIFT) & 3
        if access == RW_LATCH:
            self._latch(ch, now)
            return
        ch.hold = self._binary_count(ch, now)
        ch.rw = access
        ch.mode_bits = (value >> CW_MODE_SHIFT) & CW_MODE_MASK
        ch.mode = ch.mode_bits - 4 if ch.mode_bits >= 6 else ch.mode_bits
        ch.bcd = bool(value & CW_BCD)
        ch.write_msb_next = False
        ch.read_msb_next = False
        ch.count_latch = 0
        ch.status_latched = False
        ch.phase = PHASE_IDLE
        ch.idle_out = ch.mode != 0
        ch.frozen = None
        ch.pending_count = None
        ch.stale_count = False
        if sc == 0:
            self._reschedule(now, notify=True)

    def _latch(self, ch: PitChannelState, now: int) -> None:
        if not ch.count_latch:
            ch.latched_count = self._read_count(ch, now)
            ch.count_latch = ch.rw

    def _status(self, ch: PitChannelState, now: int) -> int:
        null = ch.phase != PHASE_RUNNING or ch.pending_count is not None or ch.stale_count
        return (
            (STATUS_OUT if self._out(ch, now) else 0)
            | (STATUS_NULL_COUNT if null else 0)
            | ch.rw << CW_RW_SHIFT
            | ch.mode_bits << CW_MODE_SHIFT
            | (CW_BCD if ch.bcd else 0)
        )

    def _load(self, channel: int, raw: int, now: int) -> None:
        ch = self.state.channels[channel]
        self._settle(ch, now)
        if ch.bcd:
            n = _from_bcd(raw) or BCD_MODULUS
        else:
            n = raw or BINARY_MODULUS
        ch.count = n
        mode = ch.mode
        if mode in (1, 5):
            if ch.phase == PHASE_RUNNING:
                ch.stale_count = True  # used from the next trigger on
            else:
                ch.phase = PHASE_ARMED
        elif mode in (2, 3) and ch.phase == PHASE_RUNNING and ch.frozen is None:
            d = self._elapsed(ch, now)
            boundary = (d // ch.cycle + 1) * ch.cycle
            ch.pending_count = n
            ch.pending_start_ns = tick_time(ch.start_ns, boundary)
        else:
            self._start(ch, now)
            if not ch.gate:
                ch.frozen = 0  # loaded, but counting waits for the gate
        if channel == 0:
            self._reschedule(now, notify=True)

    def _start(self, ch: PitChannelState, now: int) -> None:
        ch.phase = PHASE_RUNNING
        ch.start_ns = now
        ch.cycle = ch.count
        ch.frozen = None
        ch.pending_count = None
        ch.stale_count = False

    # -- internals: the timeline ----------------------------------------------------------------
    @staticmethod
    def _settle(ch: PitChannelState, now: int) -> None:
        if ch.pending_count is not None and now >= ch.pending_start_ns:
            ch.start_ns = ch.pending_start_ns
            ch.cycle = ch.pending_count
            ch.pending_count = None

    @staticmethod
    def _elapsed(ch: PitChannelState, now: int) -> int:
        if ch.frozen is not None:
            return ch.frozen
        return ticks_between(ch.start_ns, now)

    def _out(self, ch: PitChannelState, now: int) -> bool:
        if ch.phase == PHASE_IDLE:
            return ch.idle_out
        if ch.phase == PHASE_ARMED:
            return True
        self._settle(ch, now)
        d = self._elapsed(ch, now)
        n = ch.cycle
        mode = ch.mode
        if mode in (0, 1):
            return d >= n
        if mode == 2:
            return ch.frozen is not None or n == 1 or d % n != n - 1
        if mode == 3:
            return ch.frozen is not None or d % n < (n + 1) // 2
        return d != n  # modes 4 and 5: one clock low at the terminal count

    def _binary_count(self, ch: PitChannelState, now: int) -> int:
        """The counting element's value (binary, before BCD encoding)."""
        modulus = BCD_MODULUS if ch.bcd else BINARY_MODULUS
        if ch.phase != PHASE_RUNNING:
            return ch.hold % modulus
        self._settle(ch, now)
        d = self._elapsed(ch, now)
        n = ch.cycle
        mode = ch.mode
        if mode == 2:
            value = n - d % n
        elif mode == 3:
            p = d % n
            high = (n + 1) // 2
            if n % 2 == 0:
                value = n - 2 * (p % (n // 2))
            elif p < high:
                value = n if p == 0 else n + 1 - 2 * p
            else:
                q = p - high
                value = n if q == 0 else n - 1 - 2 * q
        else:
            value = n - d
        return value % modulus

    def _read_count(self, ch: PitChannelState, now: int) -> int:
        value = self._binary_count(ch, now)
        return _to_bcd(value) if ch.bcd else value

    def _next_rise_ns(self, ch: PitChannelState, now: int) -> int | None:
        if ch.phase != PHASE_RUNNING or ch.frozen is not None:
            return None
        self._settle(ch, now)
        d = self._elapsed(ch, now)
        n = ch.cycle
        mode = ch.mode
        if mode in (0, 1):
            r = n if d < n else None
        elif mode in (2, 3):
            r = (d // n + 1) * n
        else:
            r = n + 1 if d < n + 1 else None
        return None if r is None else tick_time(ch.start_ns, r)

    def _reschedule(self, now: int, notify: bool = False) -> None:
        st = self.state
        ch = st.channels[0]
        nxt = self._next_rise_ns(ch, now)
        if nxt is not None and ch.mode in (2, 3) and st.last_edge_ns is not None:
            nxt = max(nxt, st.last_edge_ns + self.min_periodic_ns)
        old = st.next_edge_ns
        st.next_edge_ns = nxt
        if notify and nxt != old and self.deadline_changed is not None:
            self.deadline_changed()


@dataclass
class SystemControlBState:
    value: int = 0  # bits 3:0 as written
    refresh: bool = False
    refresh_index: int = 0  # the refresh period in which the bit last flipped


class SystemControlB:
    """Port 0x61: channel 2's gate (bit 0) and speaker enable (bit 1), the NMI source enables
    (bits 2, 3, kept), the refresh toggle (bit 4) and OUT2 (bit 5); one byte, byte accesses.

    The refresh bit flips at most once per read, and only when a ~15 us refresh period has
    passed since it last flipped, so loops that wait for a flip finish and loops that count
    flips never measure less time than real hardware would give them."""

    LENGTH = SYSTEM_CONTROL_B_LENGTH
    SIZES = SYSTEM_CONTROL_B_SIZES

    def __init__(self, pit: Pit, clock: Callable[[], int] | None = None) -> None:
        self.pit = pit
        self.clock = clock or pit.clock
        self.state = SystemControlBState()

    def reset(self) -> None:
        self.state = SystemControlBState()
        self.pit.set_gate(2, False)

    def snapshot(self) -> SystemControlBState:
        return copy.copy(self.state)

    def restore(self, snap: SystemControlBState) -> None:
        self.state = copy.copy(snap)

    @property
    def speaker_on(self) -> bool:
        """Whether OUT2 reaches the speaker (gate and data enable both set)."""
        return self.state.value & (SCB_GATE2 | SCB_SPEAKER) == SCB_GATE2 | SCB_SPEAKER

    def read(self, offset: int, size: int) -> int:
        now = self.clock()
        st = self.state
        index = now // REFRESH_PERIOD_NS
        if index != st.refresh_index:
            st.refresh_index = index
            st.refresh = not st.refresh
        value = st.value & SCB_WRITABLE & ~SCB_GATE2
        if self.pit.gate(2):
            value |= SCB_GATE2
        if st.refresh:
            value |= SCB_REFRESH
        if self.pit.out(2, now):
            value |= SCB_OUT2
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.state.value = value & SCB_WRITABLE
        self.pit.set_gate(2, bool(value & SCB_GATE2), self.clock())
