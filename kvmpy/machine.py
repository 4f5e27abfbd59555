"""Machine: assembles memory, vCPUs, buses and devices from a profile, runs them, stops them.

A Machine is built completely in its constructor (VM, RAM, irqchip, devices, kernel loaded,
vCPU state set), so every configuration error surfaces before the guest runs a single
instruction. ``run()`` starts one thread per vCPU and the I/O thread, waits for the guest's wish
to stop (or a timeout, or the user), and returns a ``GuestStop`` that says why.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import layout
from .console import ConsoleInput, ConsoleOutput, IoThread, RawTerminal
from .errors import KvmpyError, ResourceError
from .events import GuestStop, StopReason
from .hw.bus import MmioBus, PioBus
from .hw.irq import IrqLine, MsiSender, SharedIrq
from .kvm import Kvm, VcpuFd, is_pvm_host
from .memory import GuestMemory
from .options import MachineConfig, parse_boot_args
from .trace import Tracer
from .vcpu import cpu_state
from .vcpu.loop import VcpuLoop
from .vcpu.pvm import PvmCompleter

if TYPE_CHECKING:
    from .profiles.parts import VfioAccess

log = logging.getLogger("kvmpy.machine")

KICK_SIGNAL = signal.SIGUSR1
_kick_installed = False


def _install_kick_handler() -> None:
    """A no-op handler for the kick signal: its only job is to make KVM_RUN return EINTR.
    Without a handler the signal's default action would kill the process."""
    global _kick_installed
    if _kick_installed:
        return
    if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, None):
        if threading.current_thread() is not threading.main_thread():
            raise KvmpyError("the first Machine must be created on the main thread "
                             "(it installs the vCPU kick signal handler)")
        signal.signal(KICK_SIGNAL, lambda *_: None)
    _kick_installed = True


class _KvmMsi:
    def __init__(self, vm) -> None:
        self.vm = vm

    def send(self, address: int, data: int) -> None:
        self.vm.signal_msi(address, data)


class Machine:
    """One virtual machine."""

    def __init__(self, config: MachineConfig, *, output: Callable[[bytes], None] | None = None,
                 input_fd: int | None = None, vfio: VfioAccess | None = None) -> None:
        """``vfio``: how ``--passthrough`` reaches VFIO (``profiles.parts.VfioAccess``); only
        tests pass one (the fake backend on a host without an IOMMU), users keep the real one."""
        _install_kick_handler()
        self.config = config
        self.vfio = vfio
        self.lock = threading.Lock()
        self.tracer = Tracer(self)
        self.pio = PioBus()
        self.mmio = MmioBus()
        self.stopping = False
        self._stop: GuestStop | None = None
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closed = False

        # only the profile in use is imported: start-up time is part of every short run
        if config.hvm:
            from .profiles import pc as profile
        else:
            from .profiles import microvm as profile
        self.profile = profile
        prepared = self.profile.prepare(config)
        try:
            self._build(config, prepared, output, input_fd)
        except BaseException:
            # whatever was opened (KVM fds, guest RAM, disk images, VFIO devices) goes again
            self.close()
            raise

    def _build(self, config: MachineConfig, prepared, output: Callable[[bytes], None] | None,
               input_fd: int | None) -> None:
        profile = self.profile
        self.kvm = Kvm()
        max_cpus = min(self.kvm.max_vcpus(), layout.MAX_VCPUS_DEFAULT)
        if config.cpus > max_cpus:
            raise ResourceError(f"{config.cpus} vCPUs asked for, but KVM on this host allows at most "
                                f"{max_cpus}")
        self.vm = self.kvm.create_vm()
        self.vm.set_tss_addr(layout.KVM_TSS_ADDR)
        self.vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDR)
        self.memory = GuestMemory(config.memory)
        self.memory.register(self.vm, holes=getattr(self.profile, "MEMORY_HOLES", ()))
        self._next_slot = self.memory.next_free_slot
        self._shared_irqs: dict[int, SharedIrq] = {}
        self.irqchip = None
        if config.split_irqchip:
            # kvmpy's own PICs, IOAPIC and PIT (interrupt remapping must see the IOAPIC's
            # messages); KVM keeps the LAPICs. Before the first vCPU, as KVM requires.
            from .irqchip import SplitIrqchip
            from .kvm import lib as kvm_lib

            if not self.vm.check_extension(kvm_lib.KVM_CAP_SPLIT_IRQCHIP):
                raise ResourceError("this host's KVM has no split irqchip (KVM_CAP_SPLIT_IRQCHIP), "
                                    "which interrupt remapping needs: use --iommu vtd,intremap=off")
            self.vm.create_split_irqchip(layout.IOAPIC_PINS)
            self.irqchip = SplitIrqchip(self, ioapic_id=config.cpus)
            self.irqchip.place()
            self.gsi_router = self.irqchip.router
        else:
            from .irqchip import GsiRouter, pc_irqchip_routes

            self.vm.create_irqchip()
            self.vm.create_pit2()
            # the PC's routes: the in-kernel PIT's GSI 0 reaches IOAPIC pin 2, as the MADT says
            self.gsi_router = GsiRouter(self.vm, pc_irqchip_routes(), layout.IOAPIC_PINS)
            self.gsi_router.commit()
        self.pvm = PvmCompleter(self.memory.read, self.memory.write) if is_pvm_host() else None

        # console: where UART output goes, where input comes from
        if config.console == "stdio" and output is None:
            self.console_out = ConsoleOutput(fd=sys.stdout.fileno())
        else:
            self.console_out = ConsoleOutput(sink=output)
        if input_fd is None and config.console == "stdio":
            try:
                input_fd = sys.stdin.fileno()
            except (ValueError, OSError):
                input_fd = None
        self.input_fd = input_fd
        self.io = IoThread()
        self.net_backends: list = []
        #: called at close() before the VM goes (VFIO passthrough: unmap, release the device)
        self.closers: list[Callable[[], None]] = []

        self.devices = profile.build(self, prepared)
        if self.irqchip is not None:
            self.devices.update(self.irqchip.devices())
        self.vcpus: list[VcpuFd] = []
        supported = self.kvm.supported_cpuid()
        for i in range(config.cpus):
            v = self.vm.create_vcpu(i)
            v.set_cpuid(cpu_state.shape_cpuid(supported, i, config.cpus))
            cpu_state.setup_msrs(v)
            cpu_state.setup_lapic(v)
            self.vcpus.append(v)
        self.boot = None
        if not config.hvm:
            # direct boot: the kernel in RAM and the boot CPU in its entry mode; with firmware
            # the vCPUs keep KVM's reset state and the BIOS starts at the reset vector
            profile.install(self, prepared)
            self.boot = prepared.plan
            for gpa, data in cpu_state.entry_memory(self.boot.entry.mode):
                self.memory.write(gpa, data)
            cpu_state.set_entry_state(self.vcpus[0], self.boot.entry.mode, self.boot.entry.rip,
                                      dict(self.boot.entry.regs))
        self.loops = [VcpuLoop(self, v) for v in self.vcpus]
        self.vnc = None
        if config.display.startswith("vnc=") and "vga" in self.devices:
            from .display import VncServer

            self.vnc = VncServer(self.lock, self.devices["vga"], self.devices["i8042"], self.io,
                                 config.display)


    @classmethod
    def from_args(cls, argv: list[str], **kwargs) -> Machine:
        """Build a machine from ``kvmpy boot`` options, e.g. ``["--kernel", "bzImage"]``."""
        return cls(parse_boot_args(argv), **kwargs)

    # -- interrupts ------------------------------------------------------------------------
    def irq_line(self, gsi: int) -> IrqLine:
        """A new input to a GSI of the IOAPIC (and PIC, for ISA IRQs < 16): KVM's in-kernel
        ones, or kvmpy's split irqchip.

        KVM keeps one level per GSI, so every device that drives a GSI gets its own input of a
        wired-OR: a PCI interrupt routed onto the SCI's line cannot pull it down behind the
        PM block's back."""
        shared = self._shared_irqs.get(gsi)
        if shared is None:
            if self.irqchip is not None:
                chip = self.irqchip
                shared = SharedIrq(lambda level: chip.set_gsi(gsi, level))
            else:
                vm = self.vm
                shared = SharedIrq(lambda level: vm.irq_line(gsi, level))
            self._shared_irqs[gsi] = shared
        return shared.input()

    @property
    def msi_sender(self) -> MsiSender:
        """Delivers device MSIs to KVM's LAPICs (KVM_SIGNAL_MSI), with either irqchip."""
        return _KvmMsi(self.vm)

    # -- memory slots ----------------------------------------------------------------------
    def alloc_slots(self, count: int) -> int:
        """Reserve ``count`` consecutive KVM memslot numbers; returns the first."""
        first = self._next_slot
        self._next_slot += count
        return first

    @staticmethod
    def ffi_address(buffer) -> int:
        """Host address of a writable buffer (an mmap) for a memslot; the buffer must outlive it."""
        from .kvm import ffi

        return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))

    # -- running ---------------------------------------------------------------------------
    def run(self, timeout: float | None = None) -> GuestStop:
        """Run until the guest asks to stop, ``timeout`` seconds pass, or ``stop()`` is called."""
        if timeout is None:
            timeout = self.config.timeout
        interactive = self.input_fd is not None and os.isatty(self.input_fd)
        console_in = None
        if self.input_fd is not None:
            serial = self.devices["serial"]

            def deliver(data: bytes) -> int:
                with self.lock:
                    n = min(len(data), serial.rx_space())
                    if n:
                        serial.receive(data[:n])
                    return n

            console_in = ConsoleInput(self.input_fd, deliver, self._user_quit, escape=interactive)
            try:
                self.io.add_reader(self.input_fd, console_in.on_readable)
            except (ValueError, OSError, PermissionError):
                console_in = None  # e.g. stdin is a regular file: epoll refuses it
        if console_in is not None:
            ci = console_in
            self.io.add_periodic(lambda: ci.push() if ci.pending else None)
        self.io.add_periodic(self.console_out.flush)
        self.io.add_periodic(self._tick_devices)
        raw = RawTerminal(self.input_fd) if interactive else None
        if raw:
            raw.__enter__()
        saved_handlers = self._catch_termination()
        try:
            self.io.start()
            if self.irqchip is not None:
                self.irqchip.start()
            for lp in self.loops:
                t = threading.Thread(target=lp.run, name=f"kvmpy-vcpu{lp.index}", daemon=True)
                self._threads.append(t)
                t.start()
            if not self._stop_event.wait(timeout):
                self.request_stop(GuestStop.of(StopReason.TIMEOUT, f"stopped after {timeout:g} s"))
        except KeyboardInterrupt:
            self.request_stop(GuestStop.of(StopReason.USER, "interrupted"))
        finally:
            self._halt_threads()
            for sig, handler in saved_handlers.items():
                signal.signal(sig, handler)
            if self.config.screenshot is not None:
                self.screenshot(self.config.screenshot)
            if raw:
                raw.__exit__(None, None, None)
        assert self._stop is not None
        return self._stop

    def _catch_termination(self) -> dict:
        """SIGTERM and SIGHUP end the run like Ctrl-A x: threads stopped, terminal restored,
        output flushed, a status that says so."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        saved = {}
        for sig in (signal.SIGTERM, signal.SIGHUP):
            def on_signal(signum, _frame):
                name = signal.Signals(signum).name
                self.request_stop(GuestStop.of(StopReason.USER, f"terminated by {name}"))

            saved[sig] = signal.signal(sig, on_signal)
        if self.config.screenshot is not None and "vga" in self.devices:
            # SIGUSR2 while running: a screenshot now, to the same file (kill -USR2 PID)
            path = self.config.screenshot
            saved[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, lambda *_: self.screenshot(path))
        return saved

    def screenshot(self, path) -> bool:
        """Write what the guest's screen shows to a PNG file; False when there is no display."""
        vga = self.devices.get("vga")
        if vga is None:
            return False
        with self.lock:
            vga.screenshot(path)
        return True

    def _tick_devices(self) -> None:
        """Devices without threads (RTC, PM timer) raise their timed interrupts when asked."""
        with self.lock:
            for dev in self.devices.values():
                tick = getattr(dev, "tick", None)
                if tick is not None:
                    tick()

    def request_stop(self, stop: GuestStop) -> None:
        """Called by devices and the loop: the first request wins, the rest are ignored."""
        if self._stop is None:
            self._stop = stop
        self.stopping = True
        self._stop_event.set()
        self.kick()

    def fail(self, exc: BaseException) -> None:
        """A vCPU thread failed: end the run, reporting the failure as the reason."""
        if isinstance(exc, KvmpyError):
            self.request_stop(GuestStop(StopReason.VMM_ERROR, exc.exit_status, str(exc)))
        else:
            import traceback

            tb = "".join(traceback.format_exception(exc))
            self.request_stop(GuestStop(StopReason.VMM_ERROR, StopReason.VMM_ERROR.value,
                                        f"internal error in kvmpy: {exc!r}\n{tb}"))

    def _user_quit(self) -> None:
        self.request_stop(GuestStop.of(StopReason.USER, "quit from the console (Ctrl-A x)"))

    def kick(self) -> None:
        """Make every vCPU leave KVM_RUN now: immediate_exit covers a vCPU about to enter, the
        signal one already inside."""
        for v in self.vcpus:
            if v.run_struct is not None:
                v.set_immediate_exit(True)
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread() and t.ident is not None:
                try:
                    signal.pthread_kill(t.ident, KICK_SIGNAL)
                except ProcessLookupError:
                    pass

    def _halt_threads(self) -> None:
        self.stopping = True
        for _ in range(50):
            alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                break
            self.kick()
            for t in alive:
                t.join(timeout=0.1)
        if self.irqchip is not None:
            self.irqchip.stop()
        self.io.stop()
        self.console_out.flush()

    @property
    def output(self) -> bytes:
        """Console output captured in memory (when no file descriptor or sink was given)."""
        self.console_out.flush()
        return bytes(self.console_out.captured or b"")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if getattr(self, "vnc", None) is not None:
            self.vnc.close()
        for backend in getattr(self, "net_backends", []):
            backend.close()
        devices = getattr(self, "devices", {})
        if "ide" in devices:
            from .profiles.parts import close_drives

            close_drives(devices["ide"])
        for close in reversed(getattr(self, "closers", [])):
            close()
        for v in getattr(self, "vcpus", []):
            v.close()
        # a machine whose construction failed part-way has only some of these
        for name in ("vm", "memory", "kvm"):
            part = getattr(self, name, None)
            if part is not None:
                part.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
