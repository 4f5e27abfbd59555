"""Recording a run's exits: one listener that filters, enforces the limits, and feeds the sinks
(statistics, writers), so everything recorded sees exactly the same exits.

Why one listener and not one per sink: ``--stats`` must agree with ``--events`` for the same
run, and a limit (``--limit 1000``) must cut every output at the same exit. With the filter,
the count and the fan-out under one lock, that holds even with several vCPUs.

Why the lock only with several vCPUs, and the sinks registered directly when there is nothing
to filter, count or decode: a traced exit has about a microsecond of budget for ``--stats``
(15% of an exit round trip), and a lock or one more call per exit is a tenth of that. With
one vCPU nothing else calls the sinks; the duration timer only flips flags.

Limits: ``limit`` events or ``duration`` seconds (from ``start()``). When one runs out the
recorder stops recording and, unless ``keep_running``, ends the run with status 10
(``StopReason.TRACE_STOP``); with ``keep_running`` it detaches and the guest runs on untraced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .events import ExitEvent, GuestStop, IoExit, MmioExit, StopReason
from .tracefilter import Predicate

if TYPE_CHECKING:
    from .disasm import Disassembler
    from .machine import Machine

Sink = Callable[[ExitEvent, float], None]


class Recorder:
    def __init__(self, machine: Machine, sinks: Sequence[Sink] = (), *, filter: Predicate | None = None,
                 limit: int | None = None, duration: float | None = None, keep_running: bool = False,
                 decoder: Disassembler | None = None) -> None:
        self.machine = machine
        self.sinks = list(sinks)
        self.filter = filter
        self.limit = limit
        self.duration = duration
        self.keep_running = keep_running
        self.decoder = decoder
        self.count = 0  # exits recorded (kept when there is a filter, a limit or a decoder)
        self.done = False
        self.why_done = ""
        self.started = self.finished = 0.0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._attached: list[Sink] = []

    def start(self) -> Recorder:
        """Attach to the machine's tracer and start the duration clock."""
        self.started = time.perf_counter()
        several = len(self.machine.vcpus) > 1
        if self.filter is None and self.limit is None and self.decoder is None and not several:
            self._attached = list(self.sinks)
        else:
            self._attached = [self._record_locked if several else self._record]
        for fn in self._attached:
            self.machine.tracer.add_listener(fn)
        if self.duration is not None:
            self._timer = threading.Timer(self.duration, self._reached, (f"duration of {self.duration:g} s",))
            self._timer.daemon = True
            self._timer.start()
        if self.limit == 0:
            self._reached("limit of 0 events")
        return self

    def _record_locked(self, ev: ExitEvent, handling: float) -> None:
        f = self.filter
        if f is not None and not f(ev):
            return
        with self._lock:
            self._record(ev, handling)

    def _record(self, ev: ExitEvent, handling: float) -> None:
        f = self.filter
        if (f is not None and not f(ev)) or self.done:
            return
        if self.decoder is not None and isinstance(ev, IoExit | MmioExit):
            ev.insn = self.decoder.for_exit(ev)
        for sink in self.sinks:
            sink(ev, handling)
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            self._reached_locked(f"limit of {self.limit} events")

    __call__ = _record

    def _reached(self, why: str) -> None:
        with self._lock:
            self._reached_locked(why)

    def _reached_locked(self, why: str) -> None:
        if self.done:
            return
        self.done = True
        self.why_done = why
        self.finished = time.perf_counter()
        if self.keep_running:
            self._detach()
        else:
            self.machine.request_stop(GuestStop.of(StopReason.TRACE_STOP, f"trace {why} reached"))

    def stop(self) -> None:
        """Detach (the run ended); the sinks stay open until ``close``."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if not self.done:
                self.done = True
                self.finished = time.perf_counter()
        self._detach()

    def _detach(self) -> None:
        for fn in self._attached:
            self.machine.tracer.remove_listener(fn)
        self._attached = []

    @property
    def wall(self) -> float:
        end = self.finished or time.perf_counter()
        return max(0.0, end - self.started)

    def close(self) -> None:
        self.stop()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
