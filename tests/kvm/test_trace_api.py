"""The tracing API from plain Python, on our guest programs: hooks as the issue shows them,
filters that select exactly what they claim, pausing, reading registers and memory from a
hook, interrupt injection, and KVM's own statistics."""

from __future__ import annotations

import threading
import time

from kvmpy import Machine
from kvmpy.kvm_stats import KernelStats
from kvmpy.tracefilter import filter_from_kwargs, parse_filter, parse_filters
from kvmpy.tracerecord import Recorder


def machine(guest_program, name: str, *args: str) -> Machine:
    return Machine.from_args(["--kernel", str(guest_program(name)), "--console", "none", *args])


def test_the_issue_example(guest_program):
    vm = machine(guest_program, "demo", "--append", "batch")
    text = bytearray()

    @vm.tracer.on("io", port=0x3F8, direction="out")
    def console(event):
        text.extend(event.data)

    with vm:
        stop = vm.run(timeout=60)
        out = vm.output
    assert stop.status == 0
    # every byte the UART sent went through the hook (plus the divisor-latch write, 0x01, first)
    assert bytes(text[1:]) == out and text[0] == 1


def test_filters_select_exactly_what_they_claim(guest_program):
    """One run, an unfiltered recorder and filtered ones side by side: each filtered list is
    exactly the matching sublist of everything (the same event objects, in order)."""
    vm = machine(guest_program, "demo", "--append", "batch")
    everything: list = []
    Recorder(vm, [lambda e, h: everything.append(e)]).start()
    filters = {
        "serial out": parse_filter("port=0x3f8-0x3ff,direction=out"),
        "not serial": parse_filter("device!=serial"),
        "unowned": parse_filter("device=unowned"),
        "rtc or reads": parse_filters(["device=rtc", "direction=in,port=0x510+2"]),
        "kwargs": filter_from_kwargs("io", port=range(0x70, 0x72), direction="in"),
    }
    got: dict[str, list] = {name: [] for name in filters}
    for name, f in filters.items():
        Recorder(vm, [lambda e, h, name=name: got[name].append(e)], filter=f).start()
    with vm:
        vm.run(timeout=60)
    assert len(everything) > 1000
    for name, f in filters.items():
        want = [e for e in everything if f.matches(e)]
        assert want, name
        assert len(got[name]) == len(want) and all(a is b for a, b in zip(got[name], want, strict=True)), name
    assert {e.port for e in got["unowned"]} >= {0x2FF, 0xCF8}
    assert {e.device for e in got["kwargs"]} == {"rtc"}


def test_registers_and_memory_from_a_hook(guest_program):
    vm = machine(guest_program, "demo", "--append", "batch")
    seen = {}

    @vm.tracer.on("io", port=0x3F8, direction="out")
    def look(event):
        if seen:
            return
        regs, sregs = event.regs(), event.sregs()
        code_virt = event.read_virt(regs.rip - 8, 16)
        code_phys = event.read_phys(event.translate(regs.rip - 8), 16)
        seen.update(rip=regs.rip, rax=regs.rax, cr0=sregs.cr0, virt=code_virt, phys=code_phys,
                    insn=event.disassemble(), value=event.value)
        event.stop("seen")

    with vm:
        stop = vm.run(timeout=60)
    assert stop.status == 10 and stop.message == "seen"
    assert 0x100000 <= seen["rip"] < 0x200000  # in the program, linked at 1 MiB
    assert seen["rax"] & 0xFF == seen["value"]  # `out dx, al` sends AL
    assert seen["cr0"] & 1  # protected mode
    assert seen["virt"] == seen["phys"] and len(seen["virt"]) == 16
    assert seen["insn"] == "out dx,al"


def test_pause_holds_the_vcpu_while_another_thread_looks(guest_program):
    vm = machine(guest_program, "demo", "--append", "batch")
    pauses = []

    @vm.tracer.on("io", device="fw_cfg")
    def hold(event):
        if not pauses:
            pauses.append(event.port)
            event.pause()

    result = {}
    with vm:
        runner = threading.Thread(target=lambda: result.update(stop=vm.run(timeout=60)))
        runner.start()
        view = vm.tracer.wait_paused(timeout=30)
        assert view is not None and vm.tracer.paused == [0]
        exits = sum(lp.exits for lp in vm.loops) + len(vm.output)
        rip = view.regs().rip
        time.sleep(0.3)
        assert view.regs().rip == rip  # nothing ran
        assert sum(lp.exits for lp in vm.loops) + len(vm.output) == exits
        assert b"fw_cfg" not in vm.output
        vm.tracer.resume()
        runner.join(60)
        out = vm.output
    assert result["stop"].status == 0 and b"fw_cfg: signature QEMU" in out


def test_a_hook_types_a_line_by_answering_the_uart_and_injecting_its_interrupt(guest_program):
    """serial_irq's receive phase sleeps in hlt until IRQ4 and then reads IIR, LSR and RBR. The
    hooks play a UART that received "hello\\n": they answer those reads and pulse IRQ4 once the
    guest enables the receive interrupt; the guest echoes the line in upper case."""
    vm = machine(guest_program, "serial_irq", "--append", "rx=ioapic")
    pending = bytearray()
    COM = 0x3F8

    @vm.tracer.on("io", port=COM + 1, direction="out")
    def ier(event):
        if event.value & 1 and not pending and b"RX READY" in vm.output:
            pending.extend(b"hello\n")
            event.inject_irq(4)

    @vm.tracer.on("io", port=[COM, COM + 2, COM + 5], direction="in")
    def uart(event):
        if not pending:
            return None  # the real UART answers
        if event.port == COM + 2:
            return 0xC4  # IIR: received data available (FIFOs on)
        if event.port == COM + 5:
            return 0x61  # LSR: data ready, transmitter empty
        return pending.pop(0)  # RBR: the next character

    with vm:
        stop = vm.run(timeout=60)
        out = vm.output.decode(errors="replace")
    assert "HELLO" in out and "RX 5" in out and "SERIAL_IRQ OK" in out, out
    assert stop.status == 1


def test_kernel_statistics_of_a_real_vm(guest_program):
    vm = machine(guest_program, "demo", "--append", "batch")
    with vm:
        ks = KernelStats.open(vm.vm, vm.vcpus)
        ks.start()
        vm.run(timeout=60)
        d = ks.delta()
        ks.close()
        ours = sum(lp.exits for lp in vm.loops)
    assert d.descs["exits"].cumulative and d.get("exits") >= ours > 1000
    assert all(f.id.startswith("kvm-") for f in ks.files)


def test_tracing_off_again_after_clear(guest_program):
    vm = machine(guest_program, "debug_exit", "--append", "code=0")
    vm.tracer.on("io")(lambda e: None)
    vm.tracer.clear()
    assert not vm.tracer.active
    with vm:
        assert vm.run(timeout=60).status == 1


def test_rare_exits_reach_hooks(guest_program):
    vm = machine(guest_program, "stop_ways", "--append", "triple", "--memory", "32M")
    seen = []
    vm.tracer.on("shutdown")(lambda e: seen.append((e.reason, e.vcpu, hex(e.rip))))
    with vm:
        stop = vm.run(timeout=60)
    assert stop.status == 4 and seen and seen[0][:2] == ("shutdown", 0)

