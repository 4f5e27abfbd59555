"""The tracer the dispatch loop reports exits to: hooks that may act, listeners that record.

Zero cost when nobody listens: the loop tests ``tracer.active`` once per exit and, while it is
False, builds no event at all. Registering anything sets it; removing the last thing clears it.

Two kinds of subscriber, because they need different things from the loop:

- **hooks** (``@tracer.on("io", port=0x3f8, direction="out")``) are called with an
  ``ExitContext`` *before* the access is dispatched, so they can answer a read, swallow a write,
  inject an interrupt, pause the vCPU or stop the run (see ``tracectx``). ``after=True`` hooks
  run once the access is complete and see the value the guest got.
- **listeners** (``tracer.add_listener(fn)``: ``fn(event, handling_time)``) see every completed
  exit with the time the VMM spent handling it: statistics and writers (``tracerecord``).

Everything runs on the vCPU thread that took the exit. A hook that raises stops the run with
status 12 (``StopReason.HOOK_ERROR``) and the hook's own traceback; its actions are dropped and
the access completes as if nobody had hooked it, so the VM is never left half-updated.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .events import ExitEvent, GuestStop, StopReason
from .tracectx import ExitContext, VcpuView
from .tracefilter import ExitFilter, filter_from_kwargs, parse_filter

if TYPE_CHECKING:
    from .disasm import Disassembler
    from .machine import Machine

Listener = Callable[[ExitEvent, float], None]
HookFn = Callable[[ExitContext], object]
F = TypeVar("F", bound=Callable[..., object])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(eq=False)
class Hook:
    """One registered hook: the function, the exits it wants, and when it runs."""

    fn: HookFn
    filter: ExitFilter
    after: bool = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    @property
    def where(self) -> str:
        """``file line N`` of the hook's definition, for reports about it."""
        code = getattr(self.fn, "__code__", None)
        return f"{os.path.basename(code.co_filename)} line {code.co_firstlineno}" if code else "?"


def user_traceback(exc: BaseException) -> str:
    """The exception's traceback without kvmpy's own frames: what the hook's author wrote
    (empty when none of it is theirs, e.g. a bad return value, which the message explains)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PACKAGE_DIR)]
    if not frames:
        return ""
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


class Tracer:
    """The hooks and listeners of one machine."""

    def __init__(self, machine: Machine | None = None) -> None:
        #: tested by the loop once per exit: False means no event is built at all
        self.active = False
        #: True while any before-hook exists: only then does the loop ask ``before``
        self.hooked = False
        self.machine = machine
        self._hooks: tuple[Hook, ...] = ()
        self._after_hooks: tuple[Hook, ...] = ()
        #: every listener, read by the loop (replaced whole, never mutated, so a vCPU iterating
        #: it while another thread registers sees a consistent tuple)
        self.listeners: tuple[Listener, ...] = ()
        #: True while no after-hook exists: the loop may then call the listeners itself
        self.plain = True
        self._end: list[Callable[[GuestStop], object]] = []
        self._failed = False
        self._cond = threading.Condition()
        self._resume: dict[int, threading.Event] = {}  # vCPUs asked to pause, by index
        self._parked: set[int] = set()  # vCPUs actually held now
        self._disassembler: Disassembler | None = None

    # -- registration ----------------------------------------------------------------------
    def on(self, kind: str = "exit", filter: str | ExitFilter | None = None, *, after: bool = False,
           **filters: object) -> Callable[[F], F]:
        """Decorator: ``@tracer.on("io", port=0x3f8, direction="out")``. ``kind`` is an exit
        reason ("io", "mmio", "hlt", "shutdown", "system_event", "internal_error",
        "fail_entry", "other") or "exit" for every exit; keyword filters and ``filter`` (the
        ``--filter`` language) narrow it down (``tracefilter``)."""
        f = self._filter(kind, filter, filters)  # a bad kind or filter fails here, not later

        def register(fn: F) -> F:
            self._add(Hook(fn, f, after))  # type: ignore[arg-type]
            return fn

        return register

    def add_hook(self, fn: HookFn, kind: str = "exit", filter: str | ExitFilter | None = None, *,
                 after: bool = False, **filters: object) -> Hook:
        """``tracer.on`` without the decorator; returns the Hook (for ``remove``)."""
        return self._add(Hook(fn, self._filter(kind, filter, filters), after))

    @staticmethod
    def _filter(kind: str, filter: str | ExitFilter | None, filters: dict[str, object]) -> ExitFilter:
        f = filter_from_kwargs(kind, **filters)
        if isinstance(filter, str):
            return f & parse_filter(filter)
        return f if filter is None else f & filter

    def _add(self, hook: Hook) -> Hook:
        with self._cond:
            if hook.after:
                self._after_hooks += (hook,)
            else:
                self._hooks += (hook,)
            self._update()
        return hook

    def add_listener(self, fn: Listener) -> None:
        """``fn(event, handling_time)`` for every completed exit (no filtering: see
        ``tracerecord.Recorder`` for filtered recording)."""
        with self._cond:
            self.listeners += (fn,)
            self._update()

    def remove_listener(self, fn: Listener) -> None:
        with self._cond:
            self.listeners = tuple(x for x in self.listeners if x is not fn)
            self._update()

    def remove(self, what: Hook | Callable[..., object]) -> None:
        """Remove a hook (the Hook or its function) or a listener."""
        with self._cond:
            def keep(h: Hook) -> bool:
                return h is not what and h.fn is not what

            self._hooks = tuple(filter(keep, self._hooks))
            self._after_hooks = tuple(filter(keep, self._after_hooks))
            self.listeners = tuple(x for x in self.listeners if x is not what)
            self._update()

    def clear(self) -> None:
        """Remove every hook and listener: the loop goes back to its untraced fast path."""
        with self._cond:
            self._hooks = self._after_hooks = ()
            self.listeners = ()
            self._update()

    def at_end(self, fn: Callable[[GuestStop], object]) -> Callable[[GuestStop], object]:
        """Decorator for a function called with the run's ``GuestStop`` when it ends (``kvmpy
        trace`` calls ``finish``; from Python, call it after ``run()`` or just write the code
        there)."""
        self._end.append(fn)
        return fn

    def finish(self, stop: GuestStop) -> None:
        for fn in self._end:
            fn(stop)

    @property
    def disassembler(self) -> Disassembler:
        """One shared ``disasm.Disassembler`` (made on first use: it needs iced-x86)."""
        if self._disassembler is None:
            from .disasm import Disassembler

            self._disassembler = Disassembler(self.machine)  # type: ignore[arg-type]
        return self._disassembler

    @property
    def hooks(self) -> tuple[Hook, ...]:
        return self._hooks + self._after_hooks

    def _update(self) -> None:
        self.hooked = bool(self._hooks)
        self.plain = not self._after_hooks
        self.active = bool(self._hooks or self._after_hooks or self.listeners)

    # -- called by the vCPU loop -------------------------------------------------------------
    def before(self, event: ExitEvent) -> ExitContext | None:
        """Run the hooks that want this exit, before it is dispatched. Returns their combined
        context (answer, swallow, actions), or None when no hook wanted it or one failed."""
        if self._failed:
            return None
        ctx: ExitContext | None = None
        for hook in self._hooks:
            if hook.filter.matches(event):
                if ctx is None:
                    ctx = ExitContext(self.machine, event)  # type: ignore[arg-type]
                try:
                    ctx.take_return(hook.fn(ctx))
                except BaseException as e:  # a user's hook: any failure ends the run, reported
                    self._hook_failed(hook, e, event)
                    return None
        return ctx

    def after(self, event: ExitEvent, handling: float, ctx: ExitContext | None = None) -> None:
        """The access is complete: apply the hooks' actions, run after-hooks and listeners, and
        hold the vCPU here if a hook paused it."""
        pause = False
        if ctx is not None:
            self._apply(ctx)
            pause = ctx.pause_requested
        if self._after_hooks and not self._failed:
            actx = self._run_after_hooks(event)
            if actx is not None:
                self._apply(actx)
                pause = pause or actx.pause_requested
        for fn in self.listeners:
            fn(event, handling)
        if pause:
            self._park(event.vcpu)

    def _run_after_hooks(self, event: ExitEvent) -> ExitContext | None:
        ctx: ExitContext | None = None
        for hook in self._after_hooks:
            if hook.filter.matches(event):
                if ctx is None:
                    ctx = ExitContext(self.machine, event, after=True)  # type: ignore[arg-type]
                try:
                    ctx.take_return(hook.fn(ctx))
                except BaseException as e:  # a user's hook: any failure ends the run, reported
                    self._hook_failed(hook, e, event)
                    return None
        return ctx

    def _apply(self, ctx: ExitContext) -> None:
        for action in ctx.actions:
            action()
        if ctx.stop_request is not None and self.machine is not None:
            self.machine.request_stop(ctx.stop_request)

    def emit(self, event: ExitEvent, handling: float = 0.0) -> None:
        """An exit with nothing to dispatch (shutdown, hlt, ...): hooks, then listeners."""
        self.after(event, handling, self.before(event))

    def _hook_failed(self, hook: Hook, exc: BaseException, event: ExitEvent) -> None:
        self._failed = True
        with self._cond:
            self._resume.pop(event.vcpu, None)
        message = f"trace hook {hook.name} ({hook.where}) raised {type(exc).__name__}: {exc}"
        tb = user_traceback(exc)
        if tb:
            message += "\n" + tb
        if self.machine is not None:
            self.machine.request_stop(GuestStop.of(StopReason.HOOK_ERROR, message))

    # -- pausing -------------------------------------------------------------------------------
    def request_pause(self, index: int) -> None:
        """Called by ``ExitContext.pause``: the vCPU will be held once its exit completes. A
        ``resume`` from now on already counts, so a quick resume can never be lost."""
        with self._cond:
            self._resume.setdefault(index, threading.Event())

    def _park(self, index: int) -> None:
        with self._cond:
            ev = self._resume.setdefault(index, threading.Event())
            self._parked.add(index)
            self._cond.notify_all()
        m = self.machine
        try:
            while not ev.wait(0.05):
                if m is None or m.stopping:
                    break
        finally:
            with self._cond:
                self._parked.discard(index)
                self._resume.pop(index, None)
                self._cond.notify_all()

    def resume(self, vcpu: int | None = None) -> None:
        """Let a paused vCPU (or every paused one) run again; safe from any thread."""
        with self._cond:
            for i, ev in self._resume.items():
                if vcpu is None or i == vcpu:
                    ev.set()

    @property
    def paused(self) -> list[int]:
        with self._cond:
            return sorted(self._parked)

    def wait_paused(self, timeout: float | None = None, vcpu: int | None = None) -> VcpuView | None:
        """Block until a vCPU (or the given one) is held by a hook's ``pause()``; returns a view
        of its registers and memory, or None on timeout."""
        def held() -> int | None:
            if vcpu is not None:
                return vcpu if vcpu in self._parked else None
            return min(self._parked) if self._parked else None

        with self._cond:
            self._cond.wait_for(lambda: held() is not None, timeout)
            index = held()
        if index is None or self.machine is None:
            return None
        return VcpuView(self.machine, index)
