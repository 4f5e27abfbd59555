"""The tracer the dispatch loop reports exits to.

When nobody listens, ``active`` is False and the loop builds no event at all: tracing costs one
attribute test per exit. Listeners get the decoded exit event and the time the VMM spent
handling it.
"""

from __future__ import annotations

from collections.abc import Callable

from .events import ExitEvent

Listener = Callable[[ExitEvent, float], None]


class Tracer:
    def __init__(self) -> None:
        self.active = False
        self._listeners: list[Listener] = []

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)
        self.active = True

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)
        self.active = bool(self._listeners)

    def emit(self, event: ExitEvent, handling_time: float) -> None:
        for fn in self._listeners:
            fn(event, handling_time)
