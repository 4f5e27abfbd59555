"""What a trace hook is handed: the exit, the vCPU it came from, and what the hook may do.

A hook is called with one ``ExitContext``. It reads like the exit event (``event.port``,
``event.value``, ``event.device``: every field of ``events.IoExit``/``MmioExit``/... is there)
and adds what a script needs:

- look: ``regs()``, ``sregs()``, ``rip``, ``read_phys(gpa, n)``, ``read_virt(gva, n)`` (through
  the guest's page tables, KVM_TRANSLATE), ``translate(gva)``, ``disassemble()``;
- act: ``answer(value)`` (an ``in`` or MMIO read is answered by the hook and the device is not
  called; returning an int or bytes from the hook does the same), ``swallow()`` (a write never
  reaches the device), ``inject_irq(gsi)``, ``set_irq(gsi, level)``, ``signal_msi(addr, data)``,
  ``stop(message)``, ``pause()``.

Why actions are deferred: every action is recorded and takes effect only after *all* hooks for
this exit have returned, in order, when the access is completed. If a hook raises, none of its
actions (nor those of the hooks before it) happen: the device handles the access as if nobody
had hooked it, so the guest and the devices are never left half-updated, and the run stops
with the hook's traceback. Registers and memory may be read because hooks run on the vCPU's own
thread, between KVM_RUN calls, when KVM allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import layout
from .events import ExitEvent, GuestStop, IoExit, MmioExit, StopReason

if TYPE_CHECKING:
    from .kvm import VcpuFd
    from .machine import Machine

PAGE = 4096
_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}


class HookUsageError(Exception):
    """A hook asked for something that cannot be done (answering a write, a value too wide);
    it is raised in the hook, so the user sees it with their own traceback."""


class VcpuView:
    """Registers and guest memory as one vCPU sees them. Valid on that vCPU's thread during a
    hook, or from any thread while the vCPU is paused (``Tracer.wait_paused``)."""

    def __init__(self, machine: Machine, index: int) -> None:
        self.machine = machine
        self.index = index

    @property
    def vcpu_fd(self) -> VcpuFd:
        return self.machine.vcpus[self.index]

    def regs(self) -> Any:
        """KVM_GET_REGS: ``.rax`` ... ``.r15``, ``.rip``, ``.rflags`` (a cffi struct)."""
        return self.vcpu_fd.get_regs()

    def sregs(self) -> Any:
        """KVM_GET_SREGS: segments, ``.cr0``, ``.cr3``, ``.efer`` ... (a cffi struct)."""
        return self.vcpu_fd.get_sregs()

    @property
    def rip(self) -> int:
        return self.vcpu_fd.get_regs().rip

    def read_phys(self, gpa: int, length: int) -> bytes:
        """Guest RAM at a guest-physical address (raises ``DmaFault`` outside RAM)."""
        return self.machine.memory.read(gpa, length)

    def translate(self, gva: int) -> int | None:
        """Guest-virtual (linear) to guest-physical through the vCPU's current page tables, or
        None when unmapped. With paging off it is the identity."""
        return self.vcpu_fd.translate(gva)

    def read_virt(self, gva: int, length: int) -> bytes:
        """Guest memory at a virtual (linear) address, page by page through the guest's page
        tables, so a buffer that is contiguous only virtually reads correctly."""
        out = bytearray()
        addr = gva
        while len(out) < length:
            gpa = self.translate(addr)
            if gpa is None:
                raise HookUsageError(f"guest-virtual address {addr:#x} is not mapped on vCPU {self.index}")
            chunk = min(length - len(out), PAGE - (addr & (PAGE - 1)))
            out += self.read_phys(gpa, chunk)
            addr += chunk
        return bytes(out)

    def disassemble(self) -> str:
        """The instruction at RIP, e.g. ``"out dx,al"`` (see ``kvmpy.disasm``)."""
        return self.machine.tracer.disassembler.at_rip(self.index)


class ExitContext(VcpuView):
    """The argument of a hook: the exit event's fields plus what the hook may look at and do."""

    def __init__(self, machine: Machine, event: ExitEvent, after: bool = False) -> None:
        super().__init__(machine, event.vcpu)
        self.event = event
        self._after = after  # an "after" hook sees the completed access: it can no longer answer
        self.answer_data: bytes | None = None
        self.swallowed = False
        self.actions: list[Callable[[], None]] = []
        self.stop_request: GuestStop | None = None
        self.pause_requested = False

    def __getattr__(self, name: str) -> Any:
        # only called for names the context itself lacks: the event's fields
        if name.startswith("__") or name == "event":
            raise AttributeError(name)
        return getattr(self.event, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self.event)))

    def __repr__(self) -> str:
        return f"<hook context for {self.event!r}>"

    def disassemble(self) -> str:
        """The instruction that caused this exit, e.g. ``"out dx,al"``: RIP may already be past
        it (see ``kvmpy.disasm``)."""
        return self.machine.tracer.disassembler.for_exit(self.event)

    # -- answering the access -------------------------------------------------------------
    def answer(self, value: int | bytes) -> None:
        """Answer a read (``in``, MMIO read) instead of the device, which is then not called.
        An int is one element (repeated for every element of a string ``in``); bytes must be
        the whole access (``size * count`` bytes)."""
        ev = self.event
        if self._after:
            raise HookUsageError("an 'after' hook sees the completed access: it can no longer answer it")
        if not isinstance(ev, IoExit | MmioExit) or ev.is_write:
            raise HookUsageError(f"only reads can be answered; this exit is {_describe(ev)} "
                                 "(use swallow() to drop a write)")
        count = ev.count if isinstance(ev, IoExit) else 1
        if isinstance(value, bytes | bytearray):
            if len(value) != ev.size * count:
                raise HookUsageError(f"answer of {len(value)} bytes for a read of {ev.size * count}")
            self.answer_data = bytes(value)
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise HookUsageError(f"an answer must be an int or bytes, not {type(value).__name__}")
        if not 0 <= value <= _MASKS[ev.size]:
            raise HookUsageError(f"answer {value:#x} does not fit a {ev.size}-byte read")
        self.answer_data = value.to_bytes(ev.size, "little") * count

    def swallow(self) -> None:
        """Drop a write (``out``, MMIO write): the device never sees it."""
        ev = self.event
        if self._after:
            raise HookUsageError("an 'after' hook sees the completed access: it can no longer drop it")
        if not isinstance(ev, IoExit | MmioExit) or not ev.is_write:
            raise HookUsageError(f"only writes can be swallowed; this exit is {_describe(ev)} "
                                 "(use answer() for a read)")
        self.swallowed = True

    # -- acting on the machine (after this exit completes) ----------------------------------
    def stop(self, message: str = "") -> None:
        """End the run once this exit is complete, with status 10 (``StopReason.TRACE_STOP``)."""
        text = message or f"stopped by a trace hook at {_describe(self.event)}"
        self.stop_request = GuestStop.of(StopReason.TRACE_STOP, text)

    def pause(self) -> None:
        """Hold this vCPU once this exit is complete, until ``machine.tracer.resume()`` (from
        another thread: a timer, the main program, another vCPU's hook) or the end of the run.
        Other vCPUs keep running. While it is held, ``Tracer.wait_paused`` hands out a
        ``VcpuView`` on it from any thread."""
        self.pause_requested = True
        self.machine.tracer.request_pause(self.index)

    def inject_irq(self, gsi: int) -> None:
        """Pulse an interrupt line (an edge on the in-kernel PIC/IOAPIC input ``gsi``)."""
        _check_gsi(gsi)
        vm = self.machine.vm
        self.actions.append(lambda: (vm.irq_line(gsi, True), vm.irq_line(gsi, False)))

    def set_irq(self, gsi: int, level: bool) -> None:
        """Set an interrupt line's level (for level-triggered inputs)."""
        _check_gsi(gsi)
        vm = self.machine.vm
        self.actions.append(lambda: vm.irq_line(gsi, level))

    def signal_msi(self, address: int, data: int) -> None:
        """Deliver a message-signalled interrupt (KVM_SIGNAL_MSI)."""
        vm = self.machine.vm
        self.actions.append(lambda: vm.signal_msi(address, data))

    def take_return(self, result: object) -> None:
        """A hook's return value: for a read, a non-None value is its answer; for anything else
        a value is a mistake worth reporting rather than ignoring."""
        if result is None:
            return
        ev = self.event
        if isinstance(ev, IoExit | MmioExit) and not ev.is_write and not self._after:
            self.answer(result)  # type: ignore[arg-type]
            return
        raise HookUsageError(f"the hook returned {result!r} for {_describe(ev)}: only a hook on a read "
                             "may return a value (its answer); use swallow() to drop a write")


def _check_gsi(gsi: int) -> None:
    if isinstance(gsi, bool) or not isinstance(gsi, int) or not 0 <= gsi < layout.IOAPIC_PINS:
        raise HookUsageError(f"interrupt line {gsi!r} does not exist: the IOAPIC has inputs 0 to "
                             f"{layout.IOAPIC_PINS - 1}")


def _describe(ev: ExitEvent) -> str:
    if isinstance(ev, IoExit):
        return f"an {ev.direction} of {ev.size} byte(s) at port {ev.port:#x}"
    if isinstance(ev, MmioExit):
        return f"an MMIO {ev.direction} of {ev.size} byte(s) at {ev.addr:#x}"
    return f"a '{ev.reason}' exit"
