"""The dispatch loop: one thread per vCPU, KVM_RUN, decode the exit once, dispatch, re-enter.

The loop holds no device logic. It decodes an exit into the fields the buses need, passes PIO and
MMIO to the buses under the machine's device lock, and turns the exits that end a run (shutdown,
failed entry, internal error) into a ``GuestStop`` with a register dump. When a tracer listens
it also builds an event object per exit; when nobody listens that costs one attribute test.
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
import time
from time import perf_counter
from typing import TYPE_CHECKING

from ..errors import KvmError
from ..events import (
    ExitEvent,
    FailEntryExit,
    GuestStop,
    HltExit,
    InternalErrorExit,
    IoExit,
    MmioExit,
    OtherExit,
    ShutdownExit,
    StopReason,
    SystemEventExit,
)
from ..kvm import VcpuFd, ffi, lib

if TYPE_CHECKING:
    from ..machine import Machine

log = logging.getLogger("kvmpy.loop")

_IO_OFF = ffi.offsetof("struct kvm_run", "io")
_MMIO_OFF = ffi.offsetof("struct kvm_run", "mmio")
_REASON_OFF = ffi.offsetof("struct kvm_run", "exit_reason")
_MMIO = struct.Struct("<Q8sIB")  # phys_addr, data, len, is_write
#: exit_reason and the io member in one read: reason, direction, size, port, count, data_offset
#: (offsets from the compiled header; the io fields are meaningless for other exits)
_HEAD = struct.Struct(f"<{_REASON_OFF}xI{_IO_OFF - _REASON_OFF - 4}xBBHIQ")
_RETRY = (-errno.EINTR, -errno.EAGAIN)
_EXIT_IO = lib.KVM_EXIT_IO
_EXIT_MMIO = lib.KVM_EXIT_MMIO
_IO_OUT = lib.KVM_EXIT_IO_OUT

EXIT_NAMES = {
    getattr(lib, n): n[len("KVM_EXIT_"):].lower()
    for n in dir(lib)
    if n.startswith("KVM_EXIT_") and n not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT")
}


def register_dump(vcpu: VcpuFd) -> str:
    """The vCPU's registers as a few readable lines, for failure reports."""
    try:
        r = vcpu.get_regs()
        s = vcpu.get_sregs()
    except Exception as e:  # the vCPU may be unusable; the report must still be made
        return f"(registers unavailable: {e})"
    gp = " ".join(f"{n}={getattr(r, n):016x}" for n in ("rax", "rbx", "rcx", "rdx"))
    gp2 = " ".join(f"{n}={getattr(r, n):016x}" for n in ("rsi", "rdi", "rsp", "rbp"))
    if s.cs.l:
        mode = "long64"
    elif s.cr0 & 1:
        mode = "prot32" if s.cs.db else "prot16"
    else:
        mode = "real"
    return (
        f"vcpu{vcpu.index}: rip={r.rip:016x} rflags={r.rflags:08x} mode={mode}\n"
        f"  {gp}\n  {gp2}\n"
        f"  cs={s.cs.selector:04x} base={s.cs.base:x} ds={s.ds.selector:04x} ss={s.ss.selector:04x}\n"
        f"  cr0={s.cr0:08x} cr2={s.cr2:x} cr3={s.cr3:x} cr4={s.cr4:x} efer={s.efer:x}"
    )


class VcpuLoop:
    """Runs one vCPU until the machine stops."""

    def __init__(self, machine: Machine, vcpu: VcpuFd) -> None:
        self.machine = machine
        self.vcpu = vcpu
        self.index = vcpu.index
        self.exits = 0
        #: the thread running this vCPU (the split irqchip kicks the boot CPU's)
        self.thread: threading.Thread | None = None
        #: vCPU 0 with the split irqchip: PIC interrupts are injected from this loop
        chip = machine.irqchip
        self.injector = chip if chip is not None and vcpu.index == 0 else None

    def run(self) -> None:
        self.thread = threading.current_thread()
        try:
            self._run()
        except BaseException as e:  # any failure in a vCPU thread must end the run, with a report
            log.debug("vcpu%d loop failed", self.index, exc_info=True)
            self.machine.fail(e)

    def _run(self) -> None:
        m = self.machine
        vcpu = self.vcpu
        runmm = vcpu.run_mmap
        pio = m.pio
        lock = m.lock
        tracer = m.tracer
        exit_io = lib.KVM_EXIT_IO
        exit_mmio = lib.KVM_EXIT_MMIO
        head_unpack = _HEAD.unpack_from
        from_bytes = int.from_bytes
        out_dir = lib.KVM_EXIT_IO_OUT
        ioctl = lib.kvmpy_ioctl
        fd = vcpu.fd
        KVM_RUN = lib.KVM_RUN
        NULL = ffi.NULL
        exits = 0
        try:
            while not m.stopping:
                r = ioctl(fd, KVM_RUN, NULL)
                if r:
                    if r in _RETRY:
                        # EINTR (a kick) or EAGAIN (INIT/SIPI in progress): re-enter, with the
                        # PIC's interrupt when the kick was the split irqchip's
                        if self.injector is not None:
                            self.injector.inject(vcpu)
                        continue
                    raise KvmError("KVM_RUN", -r)
                exits += 1
                reason, direction, size, port, count, data_off = head_unpack(runmm, 0)
                if tracer.active:
                    self._traced(reason, direction, size, port, count, data_off)
                elif reason == exit_io:
                    if count == 1:
                        if direction == out_dir:
                            value = from_bytes(runmm[data_off : data_off + size], "little")
                            with lock:
                                pio.write(port, size, value)
                        else:
                            with lock:
                                value = pio.read(port, size)
                            runmm[data_off : data_off + size] = value.to_bytes(size, "little")
                    else:
                        self._string_io(direction == out_dir, port, size, count, data_off)
                elif reason == exit_mmio:
                    self._mmio()
                else:
                    self._other(reason)
        finally:
            self.exits += exits

    def _string_io(self, out: bool, port: int, size: int, count: int, data_off: int) -> None:
        """``rep ins``/``rep outs``: KVM hands over up to a page of elements in one exit."""
        runmm = self.vcpu.run_mmap
        pio = self.machine.pio
        with self.machine.lock:
            if out:
                for o in range(data_off, data_off + size * count, size):
                    pio.write(port, size, int.from_bytes(runmm[o : o + size], "little"))
            else:
                for o in range(data_off, data_off + size * count, size):
                    runmm[o : o + size] = pio.read(port, size).to_bytes(size, "little")

    def _mmio(self) -> int:
        runmm = self.vcpu.run_mmap
        addr, data, length, is_write = _MMIO.unpack_from(runmm, _MMIO_OFF)
        mmio = self.machine.mmio
        with self.machine.lock:
            if is_write:
                value = int.from_bytes(data[:length], "little")
                mmio.write(addr, length, value)
            else:
                value = mmio.read(addr, length)
                runmm[_MMIO_OFF + 8 : _MMIO_OFF + 8 + length] = value.to_bytes(length, "little")
        return value

    def _traced(self, reason: int, direction: int, size: int, port: int, count: int,
                data_off: int) -> None:
        """The same dispatch as the fast path, for a tracer that listens (the io fields come
        from the fast path's one read of ``kvm_run``; they mean nothing for other exits).

        The event is built *before* dispatch, so a hook can answer a read or drop a write
        instead of the device; the listeners then get the completed event (the value the
        guest got) and the time the device took, which excludes the tracer's own work. Hooks
        run outside the device lock: a slow hook never blocks other vCPUs' devices. Port I/O
        is inlined here because it is nearly every exit a traced guest makes."""
        if reason != _EXIT_IO:
            if reason == _EXIT_MMIO:
                self._traced_mmio()
            else:
                self._other(reason)
            return
        m = self.machine
        tracer = m.tracer
        if tracer.hooked:
            self._traced_io_hooked(direction, size, port, count, data_off)
            return
        # nobody can act on the access: dispatch exactly as the fast path does, then describe it
        runmm = self.vcpu.run_mmap
        end = data_off + size * count
        owner = m.pio.find(port)
        t1 = perf_counter()
        if count != 1:
            self._string_io(direction == _IO_OUT, port, size, count, data_off)
            data = runmm[data_off:end]
        elif direction == _IO_OUT:
            data = runmm[data_off:end]
            with m.lock:
                m.pio.write(port, size, int.from_bytes(data, "little"))
        else:
            with m.lock:
                value = m.pio.read(port, size)
            data = value.to_bytes(size, "little")
            runmm[data_off:end] = data
        handling = perf_counter() - t1
        ev = IoExit(self.index, t1, port, size, direction == _IO_OUT, count, data,
                    owner.name if owner is not None else "")
        if tracer.plain:
            for fn in tracer.listeners:
                fn(ev, handling)
        else:
            tracer.after(ev, handling, None)

    def _traced_io_hooked(self, direction: int, size: int, port: int, count: int, data_off: int) -> None:
        """Port I/O when hooks exist: the event first, then the hooks, then the device (unless
        a hook answered or swallowed the access), then the completed event to the listeners."""
        m = self.machine
        tracer = m.tracer
        runmm = self.vcpu.run_mmap
        out = direction == _IO_OUT
        end = data_off + size * count
        owner = m.pio.find(port)
        ev = IoExit(self.index, perf_counter(), port, size, out, count,
                    runmm[data_off:end] if out else None, owner.name if owner is not None else "")
        ctx = tracer.before(ev)
        t1 = perf_counter()
        if ctx is None or (ctx.answer_data is None and not ctx.swallowed):
            if count != 1:
                self._string_io(out, port, size, count, data_off)
            elif out:
                with m.lock:
                    m.pio.write(port, size, int.from_bytes(ev.data, "little"))  # type: ignore[arg-type]
            else:
                with m.lock:
                    value = m.pio.read(port, size)
                runmm[data_off:end] = value.to_bytes(size, "little")
        elif ctx.answer_data is not None:
            runmm[data_off:end] = ctx.answer_data
        handling = perf_counter() - t1
        if not out:
            ev.data = runmm[data_off:end]
        tracer.after(ev, handling, ctx)

    def _traced_mmio(self) -> None:
        m = self.machine
        tracer = m.tracer
        runmm = self.vcpu.run_mmap
        addr, data, length, is_write = _MMIO.unpack_from(runmm, _MMIO_OFF)
        owner = m.mmio.find(addr)
        ev = MmioExit(self.index, 0.0, addr, length, bool(is_write),
                      int.from_bytes(data[:length], "little") if is_write else None,
                      owner.name if owner is not None else "")
        ctx = None
        hooked = tracer.hooked
        if hooked:
            ev.time = perf_counter()
            ctx = tracer.before(ev)
        t1 = perf_counter()
        if not hooked:
            ev.time = t1
        lo, hi = _MMIO_OFF + 8, _MMIO_OFF + 8 + length
        if ctx is None or (ctx.answer_data is None and not ctx.swallowed):
            if is_write:
                with m.lock:
                    m.mmio.write(addr, length, ev.value)  # type: ignore[arg-type]
            else:
                with m.lock:
                    value = m.mmio.read(addr, length)
                runmm[lo:hi] = value.to_bytes(length, "little")
        elif ctx.answer_data is not None:
            runmm[lo:hi] = ctx.answer_data
        handling = perf_counter() - t1
        if not is_write:
            ev.value = int.from_bytes(runmm[lo:hi], "little")
        tracer.after(ev, handling, ctx)

    def _other(self, reason: int) -> None:
        """The rare exits: everything here may be slow."""
        m = self.machine
        run = self.vcpu.run_struct
        now = time.perf_counter()
        if reason == lib.KVM_EXIT_SHUTDOWN:
            self._trace(ShutdownExit(self.index, now))
            m.request_stop(GuestStop.of(StopReason.TRIPLE_FAULT,
                                        f"the guest triple-faulted\n{register_dump(self.vcpu)}"))
        elif reason == lib.KVM_EXIT_SYSTEM_EVENT:
            kind = run.system_event.type
            self._trace(SystemEventExit(self.index, now, kind))
            if kind == lib.KVM_SYSTEM_EVENT_RESET:
                m.request_stop(GuestStop.of(StopReason.RESET, "the guest asked for a reset"))
            elif kind == lib.KVM_SYSTEM_EVENT_CRASH:
                m.request_stop(GuestStop.of(StopReason.GUEST_ERROR, "the guest reported a crash"))
            else:
                m.request_stop(GuestStop.of(StopReason.POWEROFF, "the guest powered off"))
        elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
            self._internal_error(run)
        elif reason == lib.KVM_EXIT_FAIL_ENTRY:
            hw = run.fail_entry.hardware_entry_failure_reason
            self._trace(FailEntryExit(self.index, now, hw))
            m.request_stop(GuestStop.of(
                StopReason.GUEST_ERROR,
                f"KVM could not enter the guest (hardware reason {hw:#x})\n{register_dump(self.vcpu)}"))
        elif reason == lib.KVM_EXIT_HLT:
            # only without an in-kernel LAPIC; a halted CPU with nothing to wake it is the end
            self._trace(HltExit(self.index, now))
            regs = self.vcpu.get_regs()
            if not regs.rflags & (1 << 9):
                m.request_stop(GuestStop.of(StopReason.HALTED, "the guest halted with interrupts off"))
        elif reason == lib.KVM_EXIT_IOAPIC_EOI:
            # split irqchip: the EOI of a level-triggered vector the IOAPIC sent
            if m.irqchip is not None:
                m.irqchip.eoi(run.eoi.vector)
        elif reason in (lib.KVM_EXIT_INTR, lib.KVM_EXIT_IRQ_WINDOW_OPEN):
            if self.injector is not None:
                self.injector.inject(self.vcpu)
        else:
            name = EXIT_NAMES.get(reason, str(reason))
            self._trace(OtherExit(self.index, now, reason, name))
            m.request_stop(GuestStop.of(
                StopReason.GUEST_ERROR,
                f"unexpected KVM exit '{name}'\n{register_dump(self.vcpu)}"))

    def _trace(self, event: ExitEvent) -> None:
        """A rare exit, for a tracer that listens: hooks (which may stop or pause), listeners."""
        if self.machine.tracer.active:
            self.machine.tracer.emit(event, 0.0)

    def _internal_error(self, run) -> None:
        m = self.machine
        sub = run.internal.suberror
        ndata = min(run.internal.ndata, 16)
        data = [run.internal.data[i] for i in range(ndata)]
        insn = b""
        if sub == lib.KVM_INTERNAL_ERROR_EMULATION and ndata >= 2 and (
            run.emulation_failure.flags & lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        ):
            n = min(run.emulation_failure.insn_size, 15)
            insn = bytes(run.emulation_failure.insn_bytes[0:n])
        self._trace(InternalErrorExit(self.index, time.perf_counter(), sub, data, insn))
        if insn and m.pvm is not None:
            with m.lock:
                done = m.pvm.complete(self.vcpu, insn)
            if done:
                return
        what = {
            lib.KVM_INTERNAL_ERROR_EMULATION: "KVM could not emulate an instruction",
            lib.KVM_INTERNAL_ERROR_SIMUL_EX: "the guest raised an exception while delivering one",
            lib.KVM_INTERNAL_ERROR_DELIVERY_EV: "KVM failed to deliver an event to the guest",
        }.get(sub, f"KVM internal error {sub}")
        detail = f" (instruction bytes {insn.hex(' ')})" if insn else ""
        m.request_stop(GuestStop.of(StopReason.GUEST_ERROR, f"{what}{detail}\n{register_dump(self.vcpu)}"))
