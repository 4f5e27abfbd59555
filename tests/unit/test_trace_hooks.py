"""Hooks without KVM: what a hook sees, what its actions do and when, how its failures are
reported, pausing, and the recorder's filter and limits. A fake machine stands in for KVM."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from kvmpy.events import IoExit, MmioExit, ShutdownExit, StopReason
from kvmpy.trace import Tracer
from kvmpy.tracefilter import parse_filter
from kvmpy.tracerecord import Recorder

PAGE = 4096


class FakeVcpu:
    def __init__(self, pages: dict[int, int]):
        self.pages = pages  # virtual page -> physical page

    def get_regs(self):
        return SimpleNamespace(rip=0x1234, rax=7)

    def translate(self, gva):
        phys = self.pages.get(gva & ~(PAGE - 1))
        return None if phys is None else phys + (gva & (PAGE - 1))


class FakeMachine:
    def __init__(self, cpus: int = 1):
        self.stops = []
        self.stopping = False
        self.irqs: list[tuple] = []
        self.ram = bytearray(range(256)) * (4 * PAGE // 256)
        self.memory = SimpleNamespace(read=lambda gpa, n: bytes(self.ram[gpa:gpa + n]))
        self.vm = SimpleNamespace(irq_line=lambda gsi, level: self.irqs.append(("line", gsi, level)),
                                  signal_msi=lambda a, d: self.irqs.append(("msi", a, d)))
        self.vcpus = [FakeVcpu({0x10000: 2 * PAGE, 0x11000: 0}) for _ in range(cpus)]
        self.tracer = Tracer(self)

    def request_stop(self, stop):
        self.stops.append(stop)
        self.stopping = True


def inb(port=0x2FF, vcpu=0):
    return IoExit(vcpu, 0.0, port, 1, False, 1, None, "")


def outb(port=0x3F8, value=0x41, vcpu=0):
    return IoExit(vcpu, 0.0, port, 1, True, 1, bytes([value]), "serial")


@pytest.fixture
def m():
    return FakeMachine()


def test_registration_turns_tracing_on_and_off(m):
    t = m.tracer
    assert not t.active

    @t.on("io", port=0x3F8)
    def h(event):
        pass

    assert t.active and t.hooked and t.plain
    t.remove(h)
    assert not t.active and not t.hooked
    t.add_listener(print)
    assert t.active and not t.hooked
    t.clear()
    assert not t.active


def test_a_hook_sees_the_exit_and_answers_a_read(m):
    seen = []

    @m.tracer.on("io", port=0x2FF, direction="in")
    def scratch(event):
        seen.append((event.port, event.size, event.direction, event.value, event.device, event.rip))
        return 0x55

    @m.tracer.on("io", port=0x3F8)
    def never(event):
        raise AssertionError("filtered out")

    ctx = m.tracer.before(inb())
    assert seen == [(0x2FF, 1, "in", None, "", 0x1234)]
    assert ctx.answer_data == b"\x55" and not ctx.swallowed
    assert m.tracer.before(inb(0x2FE)) is None


def test_string_reads_take_one_value_per_element_or_all_the_bytes(m):
    ev = IoExit(0, 0.0, 0x511, 1, False, 4, None, "fw_cfg")
    m.tracer.on("io")(lambda e: e.answer(0x51))
    assert m.tracer.before(ev).answer_data == b"QQQQ"
    m.tracer.clear()
    m.tracer.on("io")(lambda e: b"QEMU")
    assert m.tracer.before(ev).answer_data == b"QEMU"


def test_mmio_reads_and_writes(m):
    m.tracer.on("mmio", direction="read")(lambda e: 0xDEADBEEF)
    m.tracer.on("mmio", direction="write")(lambda e: e.swallow())
    ctx = m.tracer.before(MmioExit(0, 0.0, 0xD0000000, 4, False, None, ""))
    assert ctx.answer_data == (0xDEADBEEF).to_bytes(4, "little")
    assert m.tracer.before(MmioExit(0, 0.0, 0xD0000000, 4, True, 1, "")).swallowed


def test_actions_wait_for_the_exit_to_complete(m):
    @m.tracer.on("io")
    def act(event):
        event.inject_irq(4)
        event.set_irq(9, True)
        event.signal_msi(0xFEE00000, 0x31)
        event.stop("seen it")

    ctx = m.tracer.before(outb())
    assert m.irqs == [] and m.stops == []  # nothing happened yet: the access is not complete
    m.tracer.after(ctx.event, 1e-6, ctx)
    assert m.irqs == [("line", 4, True), ("line", 4, False), ("line", 9, True), ("msi", 0xFEE00000, 0x31)]
    (stop,) = m.stops
    assert stop.reason is StopReason.TRACE_STOP and stop.status == 10 and stop.message == "seen it"


def test_a_failing_hook_drops_every_action_and_stops_with_its_own_traceback(m):
    @m.tracer.on("io")
    def first(event):
        event.swallow()
        event.inject_irq(4)

    @m.tracer.on("io")
    def broken(event):
        return {}[event.port]  # KeyError in the user's code

    assert m.tracer.before(outb()) is None  # no answer, no swallow: the device handles it
    assert m.irqs == []
    (stop,) = m.stops
    assert stop.reason is StopReason.HOOK_ERROR and stop.status == 12
    first_line, *tb = stop.message.splitlines()
    assert first_line.startswith("trace hook test_a_failing_hook_drops_every_action_and_stops_with_its_own_")
    assert ".<locals>.broken (test_trace_hooks.py line " in first_line
    assert first_line.endswith(") raised KeyError: 1016")
    text = "\n".join(tb)
    assert "Traceback (most recent call last):" in text and "test_trace_hooks.py" in text
    assert "return {}[event.port]" in text and "KeyError: 1016" in text
    assert "kvmpy/trace.py" not in text  # kvmpy's own frames are not the user's business
    assert m.tracer.before(outb()) is None  # and no hook runs again


@pytest.mark.parametrize("body,words", [
    (lambda e: e.answer(1), "only reads can be answered"),
    (lambda e: 5, "only a hook on a read may return a value"),
    (lambda e: e.inject_irq(99), "interrupt line 99 does not exist"),
])
def test_mistakes_in_a_write_hook_are_reported(m, body, words):
    m.tracer.on("io")(body)
    m.tracer.before(outb())
    assert words in m.stops[0].message


@pytest.mark.parametrize("value,words", [
    (0x100, "does not fit a 1-byte read"),
    ("x", "must be an int or bytes"),
    (b"ab", "answer of 2 bytes for a read of 1"),
])
def test_bad_answers_are_reported(m, value, words):
    m.tracer.on("io")(lambda e: value)
    m.tracer.before(inb())
    (line,) = m.stops[0].message.splitlines()  # the hook's code did nothing wrong: no traceback
    assert words in line and "test_trace_hooks.py line" in line


def test_swallowing_a_read_is_a_mistake(m):
    m.tracer.on("io")(lambda e: e.swallow())
    m.tracer.before(inb())
    assert "only writes can be swallowed" in m.stops[0].message


def test_after_hooks_see_the_completed_access_and_cannot_answer(m):
    got = []
    m.tracer.on("io", after=True)(lambda e: got.append(e.value))
    assert not m.tracer.plain and not m.tracer.hooked
    ev = inb()
    ev.data = b"\x60"
    m.tracer.after(ev, 1e-6)
    assert got == [0x60]
    m.tracer.on("io", after=True)(lambda e: e.answer(1))
    m.tracer.after(ev, 1e-6)
    assert "can no longer answer" in m.stops[0].message


def test_rare_exits_reach_hooks_and_listeners(m):
    seen = []
    m.tracer.on("shutdown")(lambda e: seen.append(("hook", e.reason)))
    m.tracer.add_listener(lambda e, h: seen.append(("listener", e.reason)))
    m.tracer.emit(ShutdownExit(0, 0.0))
    assert seen == [("hook", "shutdown"), ("listener", "shutdown")]


def test_pause_holds_the_vcpu_until_resume(m):
    m.tracer.on("io")(lambda e: e.pause())
    ev = outb()
    ctx = m.tracer.before(ev)
    done = threading.Event()

    def vcpu_thread():
        m.tracer.after(ev, 0.0, ctx)
        done.set()

    threading.Thread(target=vcpu_thread, daemon=True).start()
    view = m.tracer.wait_paused(timeout=5)
    assert view is not None and view.index == 0 and m.tracer.paused == [0]
    assert view.regs().rax == 7 and not done.wait(0.2)
    m.tracer.resume()
    assert done.wait(5) and m.tracer.paused == []


def test_a_quick_resume_is_not_lost(m):
    m.tracer.on("io")(lambda e: e.pause())
    ev = outb()
    ctx = m.tracer.before(ev)
    m.tracer.resume(0)  # before the vCPU even parks
    t0 = time.monotonic()
    m.tracer.after(ev, 0.0, ctx)
    assert time.monotonic() - t0 < 1


def test_the_end_of_the_run_releases_a_paused_vcpu(m):
    m.tracer.on("io")(lambda e: e.pause())
    ev = outb()
    ctx = m.tracer.before(ev)
    threading.Timer(0.1, lambda: setattr(m, "stopping", True)).start()
    m.tracer.after(ev, 0.0, ctx)
    assert m.tracer.paused == []


def test_guest_memory_by_physical_and_virtual_address(m):
    got = {}

    @m.tracer.on("io")
    def look(event):
        got["phys"] = event.read_phys(0x10, 4)
        # virtual 0x10ffe..0x11002 straddles two pages mapped to physical 2*PAGE and 0
        got["virt"] = event.read_virt(0x10FFE, 4)
        got["unmapped"] = event.translate(0x50000)

    m.tracer.before(outb())
    assert got["phys"] == bytes([0x10, 0x11, 0x12, 0x13])
    assert got["virt"] == bytes(m.ram[2 * PAGE + 0xFFE:2 * PAGE + 0x1000]) + bytes(m.ram[0:2])
    assert got["unmapped"] is None
    m.tracer.clear()
    m.tracer.on("io")(lambda e: e.read_virt(0x50000, 1))
    m.tracer.before(outb())
    assert "0x50000 is not mapped" in m.stops[0].message


# --- the recorder ---------------------------------------------------------------------------------
def test_the_recorder_filters_and_stops_at_its_limit(m):
    got = []
    rec = Recorder(m, [lambda e, h: got.append(e.port)], filter=parse_filter("port=0x3f8"), limit=2).start()
    for port in (0x3F8, 0x3F9, 0x3F8, 0x3F8):
        for fn in m.tracer.listeners:
            fn(outb(port), 0.0)
    assert got == [0x3F8, 0x3F8] and rec.count == 2
    assert m.stops[0].reason is StopReason.TRACE_STOP and "limit of 2 events" in m.stops[0].message
    rec.close()
    assert not m.tracer.active


def test_keep_running_detaches_instead_of_stopping(m):
    got = []
    Recorder(m, [lambda e, h: got.append(e)], limit=1, keep_running=True).start()
    for fn in m.tracer.listeners:
        fn(outb(), 0.0)
    assert len(got) == 1 and m.stops == [] and not m.tracer.active


def test_duration_ends_the_run(m):
    rec = Recorder(m, [], duration=0.05).start()
    deadline = time.monotonic() + 5
    while not m.stops and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "duration of 0.05 s" in m.stops[0].message
    rec.close()


def test_several_vcpus_record_through_one_lock():
    m = FakeMachine(cpus=2)
    got = []
    rec = Recorder(m, [lambda e, h: got.append(e.vcpu)]).start()
    assert m.tracer.listeners == (rec._record_locked,)
    for v in (0, 1, 1):
        m.tracer.listeners[0](outb(vcpu=v), 0.0)
    assert got == [0, 1, 1]


# --- decoding ---------------------------------------------------------------------------------------
def test_decoding_bytes_in_each_mode():
    from kvmpy.disasm import bitness, decode

    assert decode(b"\xee", 32) == "out dx,al"
    assert decode(b"\x66\xe7\x80", 32) == "out 80h,ax"
    assert decode(b"\xe7\x80", 16) == "out 80h,ax"
    assert decode(b"\x89\x05\x10\x00\x00\x00", 64, ip=0x1000) == "mov [1016h],eax"
    assert decode(b"\x0f\xff", 32).startswith("(undecodable")
    seg = SimpleNamespace
    assert bitness(seg(cs=seg(l=1, db=0), efer=1 << 10, cr0=1)) == 64
    assert bitness(seg(cs=seg(l=0, db=1), efer=0, cr0=1)) == 32
    assert bitness(seg(cs=seg(l=0, db=0), efer=0, cr0=0)) == 16
