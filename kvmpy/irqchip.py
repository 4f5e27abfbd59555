"""Where device interrupts go: KVM's in-kernel irqchip, or kvmpy's own (the split irqchip).

**In-kernel** (the default, fastest): KVM emulates the PICs, the IOAPIC and the PIT; a GSI is a
``KVM_IRQ_LINE``. KVM's own default routes put GSI 0 on IOAPIC pin 0, but the PC's MADT (kvmpy's
too) says ISA IRQ 0 arrives on GSI 2, and the in-kernel PIT raises GSI 0: so ``GsiRouter`` installs
the PC's table, as QEMU does (``pc_irqchip_routes``: GSI 0 on PIC pin 0 and IOAPIC pin 2, GSI 2 on
neither, the rest on the PIC and IOAPIC pins of their number), and adds MSI routes for irqfds (VFIO
vectors) on top, because ``KVM_SET_GSI_ROUTING`` replaces the whole table.

**Split** (``--iommu vtd`` with interrupt remapping, as QEMU's ``kernel-irqchip=split``): KVM keeps
only the LAPICs (``KVM_CAP_SPLIT_IRQCHIP``); the 8259 pair, the IOAPIC, the 8254 PIT and port 0x61
are kvmpy's device models. Why: IOAPIC interrupts must go through the IOMMU's interrupt remapping,
which the in-kernel IOAPIC bypasses. The wiring:

- an ISA GSI below 16 drives the PIC input of the same number and the IOAPIC pin of the same
  number, except GSI 0 (the PIT) which is IOAPIC pin 2, as the MADT's override says;
- the PIC's INT output is the boot CPU's LINT0 (ExtINT): when it rises, vCPU 0 is kicked out of
  ``KVM_RUN`` and, once KVM says it can take one (``ready_for_interrupt_injection``), the loop
  acknowledges the PIC and injects the vector with ``KVM_INTERRUPT``; until then it asks KVM for an
  interrupt-window exit;
- the IOAPIC sends every interrupt as an MSI through the IOMMU's remapping (``KVM_SIGNAL_MSI`` of
  the translated message). KVM's routes for GSIs 0-23 hold the same translated messages: KVM scans
  them to learn which level-triggered vectors must exit with ``KVM_EXIT_IOAPIC_EOI``, which the
  loop hands to ``Ioapic.eoi``. They are recomputed when the guest rewrites an RTE or invalidates
  the interrupt-entry cache;
- the PIT runs on a timer thread of its own, waking at the PIT's next deadline under the device
  lock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import layout
from .devices.i8254 import PIT_LENGTH, PIT_SIZES, Pit, SystemControlB
from .devices.i8259 import PicPair
from .devices.ioapic import IOAPIC_ACCESS_SIZES, IOAPIC_MMIO_SIZE, NUM_PINS, Ioapic
from .hw.irq import MsiSender
from .kvm import Vm, lib

if TYPE_CHECKING:
    from .kvm import VcpuFd
    from .machine import Machine

log = logging.getLogger("kvmpy.irqchip")

#: ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2 (the MADT's interrupt source override)
ISA_IRQ0_PIN = 2
#: the PIT thread's longest sleep (a guest write that moves the deadline wakes it anyway)
PIT_MAX_SLEEP = 0.1


def pc_irqchip_routes() -> list[tuple]:
    """The in-kernel irqchip's GSI table for a PC (QEMU's kvm_pc_setup_irq_routing): GSIs 0-15
    on the PIC pin of their number except 2 (the cascade), GSI 0 on IOAPIC pin 2 (the MADT's
    override for the PIT), GSIs 1 and 3-23 on the IOAPIC pin of their number."""
    routes: list[tuple] = []
    for gsi in range(layout.IOAPIC_PINS):
        if gsi < 16 and gsi != 2:
            chip = lib.KVM_IRQCHIP_PIC_MASTER if gsi < 8 else lib.KVM_IRQCHIP_PIC_SLAVE
            routes.append((gsi, "irqchip", chip, gsi % 8))
        if gsi != 2:
            routes.append((gsi, "irqchip", lib.KVM_IRQCHIP_IOAPIC, ISA_IRQ0_PIN if gsi == 0 else gsi))
    return routes


class GsiRouter:
    """KVM's GSI routing table, owned in one place: base routes plus MSI routes by GSI."""

    def __init__(self, vm: Vm, base: list[tuple], first_free_gsi: int) -> None:
        self.vm = vm
        self.base = list(base)
        self.msi: dict[int, tuple[int, int]] = {}
        self.pinned: dict[int, tuple[int, int]] = {}
        self._next = first_free_gsi
        self._free: list[int] = []
        self.commits = 0

    def add_msi_route(self, address: int, data: int) -> int:
        """A new GSI that delivers this message when signalled (an irqfd's target)."""
        gsi = self._free.pop() if self._free else self._alloc()
        self.msi[gsi] = (address, data)
        self.commit()
        return gsi

    def _alloc(self) -> int:
        gsi = self._next
        self._next += 1
        return gsi

    def update_msi_route(self, gsi: int, address: int, data: int) -> None:
        if self.msi.get(gsi) != (address, data):
            self.msi[gsi] = (address, data)
            self.commit()

    def remove_route(self, gsi: int) -> None:
        if self.msi.pop(gsi, None) is not None:
            self._free.append(gsi)
            self.commit()

    def set_pinned(self, routes: dict[int, tuple[int, int]]) -> None:
        """Replace the MSI routes of the reserved GSIs (the split IOAPIC's pins)."""
        if routes != self.pinned:
            self.pinned = dict(routes)
            self.commit()

    def routes(self) -> list[tuple]:
        table = list(self.base)
        table += [(gsi, "msi", a, d) for gsi, (a, d) in sorted(self.pinned.items())]
        table += [(gsi, "msi", a, d) for gsi, (a, d) in sorted(self.msi.items())]
        return table

    def commit(self) -> None:
        self.vm.set_gsi_routing(self.routes())
        self.commits += 1


class _PitThread:
    """Runs the PIT's expiries at its deadlines, under the device lock; ``wake`` is set when the
    guest moves the next deadline (a reprogrammed PIT)."""

    def __init__(self, pit: Pit, lock: threading.Lock, wake: threading.Event) -> None:
        self.pit = pit
        self.lock = lock
        self._wake = wake
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="kvmpy-pit", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=1)

    def _run(self) -> None:
        pit = self.pit
        while not self._stop:
            with self.lock:
                now = time.monotonic_ns()
                pit.expire(now)
                deadline = pit.next_deadline_ns()
                self._wake.clear()
            wait = PIT_MAX_SLEEP if deadline is None else (deadline - now) / 1e9
            if wait > 0:
                self._wake.wait(min(wait, PIT_MAX_SLEEP))


class SplitIrqchip:
    """kvmpy's PICs, IOAPIC and PIT in front of KVM's LAPICs (see the module docstring)."""

    def __init__(self, m: Machine, ioapic_id: int) -> None:
        self.machine = m
        self.router = GsiRouter(m.vm, [], NUM_PINS)
        self.pic = PicPair(self._pic_output)
        self.ioapic = Ioapic(ioapic_id, self._ioapic_deliver, self.refresh_routes)
        self._timer_wake = threading.Event()
        self.pit = Pit(_GsiInput(self, layout.IRQ_PIT), deadline_changed=self._timer_wake.set)
        self.port61 = SystemControlB(self.pit)
        #: where IOAPIC messages go: KVM directly, or the IOMMU's remapping in front of it
        self.ioapic_sender: MsiSender = m.msi_sender
        self.translate: Callable[[int, int], tuple[int, int] | None] = lambda a, d: (a, d)
        self.pic_level = False
        self._timer = _PitThread(self.pit, m.lock, self._timer_wake)

    def place(self) -> None:
        """Put the models at their ISA ports and MMIO window."""
        m = self.machine
        self.pic.register(m.pio, layout.PIC_MASTER_PORT, layout.PIC_SLAVE_PORT, layout.ELCR_PORT)
        m.pio.register(layout.PIT_PORT, PIT_LENGTH, self.pit, "pit", sizes=PIT_SIZES)
        m.pio.register(layout.SYSTEM_CONTROL_B_PORT, SystemControlB.LENGTH, self.port61, "port61",
                       sizes=SystemControlB.SIZES)
        m.mmio.register(layout.IOAPIC_BASE, IOAPIC_MMIO_SIZE, self.ioapic, "ioapic",
                        sizes=IOAPIC_ACCESS_SIZES)

    def set_remapping(self, sender: MsiSender,
                      translate: Callable[[int, int], tuple[int, int] | None]) -> None:
        """IOAPIC messages through the IOMMU: ``sender`` delivers (or blocks and records a
        fault), ``translate`` says what KVM's route for a pin should hold (None: blocked)."""
        self.ioapic_sender = sender
        self.translate = translate
        self.refresh_routes()

    # -- inputs ----------------------------------------------------------------------------
    def set_gsi(self, gsi: int, level: bool) -> None:
        if gsi < 16:
            self.pic.set_irq(gsi, level)
        pin = ISA_IRQ0_PIN if gsi == 0 else gsi
        if pin < NUM_PINS:
            self.ioapic.set_irq(pin, level)

    # -- the IOAPIC's side -----------------------------------------------------------------
    def _ioapic_deliver(self, address: int, data: int) -> None:
        self.ioapic_sender.send(address, data)

    def refresh_routes(self) -> None:
        """KVM's routes for GSIs 0-23 follow the IOAPIC's unmasked entries, as the IOMMU would
        translate them now (no route for a blocked one: it faults when it fires)."""
        routes = {}
        for pin, (address, data) in self.ioapic.messages().items():
            translated = self.translate(address, data)
            if translated is not None:
                routes[pin] = translated
        self.router.set_pinned(routes)

    def eoi(self, vector: int) -> None:
        """KVM_EXIT_IOAPIC_EOI: the guest's LAPIC EOI of a level-triggered IOAPIC vector."""
        with self.machine.lock:
            self.ioapic.eoi(vector)

    # -- the PIC's side: ExtINT into vCPU 0 ------------------------------------------------
    def _pic_output(self, level: bool) -> None:
        self.pic_level = level
        if level:
            self._kick_boot_cpu()

    def _kick_boot_cpu(self) -> None:
        from .machine import KICK_SIGNAL

        m = self.machine
        if not getattr(m, "loops", None):
            return
        vcpu = m.vcpus[0]
        if vcpu.run_struct is None:
            return
        vcpu.set_immediate_exit(True)
        thread = m.loops[0].thread
        if thread is not None and thread is not threading.current_thread() and thread.ident:
            try:
                signal.pthread_kill(thread.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def inject(self, vcpu: VcpuFd) -> None:
        """On vCPU 0's thread, between two KVM_RUNs: hand KVM the PIC's interrupt if it can
        take one now, else ask for an exit as soon as it can."""
        run = vcpu.run_struct
        if not self.machine.stopping:
            run.immediate_exit = 0
        if not self.pic_level:
            run.request_interrupt_window = 0
            return
        if run.ready_for_interrupt_injection:
            with self.machine.lock:
                vector = self.pic.acknowledge() if self.pic.has_interrupt() else None
            if vector is not None:
                vcpu.interrupt(vector)
            run.request_interrupt_window = 1 if self.pic_level else 0
        else:
            run.request_interrupt_window = 1

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def devices(self) -> dict[str, Any]:
        return {"pic": self.pic, "ioapic": self.ioapic, "pit": self.pit, "port61": self.port61}


class _GsiInput:
    """An IrqLine onto one GSI of the split irqchip (the PIT's OUT0)."""

    def __init__(self, chip: SplitIrqchip, gsi: int) -> None:
        self.chip = chip
        self.gsi = gsi

    def set_level(self, level: bool) -> None:
        self.chip.set_gsi(self.gsi, level)

    def pulse(self) -> None:
        self.chip.set_gsi(self.gsi, True)
        self.chip.set_gsi(self.gsi, False)
