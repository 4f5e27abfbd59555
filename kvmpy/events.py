"""Decoded exit events, and the guest's requests to stop.

When a tracer listens, the vCPU loop describes each KVM exit once as one of these small objects,
from the same single read of ``kvm_run`` its dispatch uses; every hook and listener then sees
that one object (see ``trace``). When nobody listens, none is built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StopReason(enum.Enum):
    """Why a guest stopped. The value is the process exit status (the debug-exit reason carries
    its own status, computed from the guest's value)."""

    POWEROFF = 0  # ACPI S5 or an equivalent "power off" request
    RESET = 2  # guest asked for a reboot (i8042 pulse, port 0xcf9, ACPI reset register)
    TRIPLE_FAULT = 4  # KVM_EXIT_SHUTDOWN: the CPU gave up
    HALTED = 6  # every vCPU halted with interrupts disabled: nothing can ever wake it
    DEBUG_EXIT = 1  # isa-debug-exit: status is (value << 1) | 1
    USER = 8  # stopped from outside (Ctrl-A x, a signal)
    TRACE_STOP = 10  # a trace hook called ``event.stop()``, or a trace limit (--limit, --duration) ran out
    HOOK_ERROR = 12  # a trace hook raised: the run stopped with the hook's traceback
    TIMEOUT = 124  # the run's time limit passed (the status timeout(1) uses)
    GUEST_ERROR = 71  # KVM could not go on (failed entry, emulation failure, internal error)
    VMM_ERROR = 70  # a bug in kvmpy itself


@dataclass(frozen=True)
class GuestStop:
    """A request to end the run: what happened, with what exit status, and a sentence for users."""

    reason: StopReason
    status: int
    message: str = ""

    @classmethod
    def of(cls, reason: StopReason, message: str = "") -> GuestStop:
        return cls(reason, reason.value, message)

    @classmethod
    def debug_exit(cls, value: int) -> GuestStop:
        return cls(StopReason.DEBUG_EXIT, ((value << 1) | 1) & 0xFF, f"debug-exit value {value:#x}")


class StopRequester:
    """What devices call to end the run; the machine supplies one. Tests use ``RecordingStop``."""

    def request_stop(self, stop: GuestStop) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class RecordingStop(StopRequester):
    def __init__(self) -> None:
        self.stops: list[GuestStop] = []

    def request_stop(self, stop: GuestStop) -> None:
        self.stops.append(stop)


# --- exit events ---------------------------------------------------------------------------
@dataclass(slots=True)
class ExitEvent:
    """What every exit event has; ``reason`` (a class default) names the kind: "io", "mmio",
    "hlt", "shutdown", "system_event", "internal_error", "fail_entry" or "other"."""

    vcpu: int
    time: float  # time.perf_counter() at the exit


@dataclass(slots=True)
class IoExit(ExitEvent):
    port: int
    size: int
    is_write: bool
    count: int  # elements: 1, or more for string I/O (``rep ins``/``rep outs``)
    data: bytes | None = None  # what was written (out), or what the guest got (in; None until answered)
    device: str = ""  # the name of the device whose range holds the port; "" when nobody owns it
    reason: str = "io"
    insn: str = ""  # the instruction behind the exit, when a disassembler was asked for it

    @property
    def direction(self) -> str:
        return "out" if self.is_write else "in"

    @property
    def value(self) -> int | None:
        """The element written or read as an integer; None for string I/O and unanswered reads."""
        if self.data is None or self.count != 1:
            return None
        return int.from_bytes(self.data, "little")


@dataclass(slots=True)
class MmioExit(ExitEvent):
    addr: int
    size: int
    is_write: bool
    value: int | None = None  # what was written, or what the guest read (None until answered)
    device: str = ""
    reason: str = "mmio"
    insn: str = ""

    @property
    def direction(self) -> str:
        return "write" if self.is_write else "read"


@dataclass(slots=True)
class HltExit(ExitEvent):
    reason: str = "hlt"


@dataclass(slots=True)
class ShutdownExit(ExitEvent):
    reason: str = "shutdown"


@dataclass(slots=True)
class SystemEventExit(ExitEvent):
    kind: int = 0
    reason: str = "system_event"


@dataclass(slots=True)
class InternalErrorExit(ExitEvent):
    suberror: int = 0
    data: list[int] = field(default_factory=list)
    insn: bytes = b""
    reason: str = "internal_error"


@dataclass(slots=True)
class FailEntryExit(ExitEvent):
    hardware_reason: int = 0
    reason: str = "fail_entry"


@dataclass(slots=True)
class IommuEvent(ExitEvent):
    """Not an exit: something the emulated IOMMU did (a translation fault, an invalidation),
    reported through the tracer so `kvmpy trace` shows it beside the exits that caused it."""

    event: str = ""  # "vtd.fault", "vtd.invalidate", "vtd.wait", "vtd.queue-error", "vtd.command"
    fields: dict = field(default_factory=dict)
    reason: str = "iommu"


@dataclass(slots=True)
class OtherExit(ExitEvent):
    exit_reason: int = 0
    reason: str = "other"
