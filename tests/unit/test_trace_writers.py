"""The trace writers: every --events line is JSON with the documented fields (the hand-written
fast formatter agrees with the reference), and --timeline is a valid Chrome trace file."""

from __future__ import annotations

import io
import json

import pytest

from kvmpy.errors import KvmpyError
from kvmpy.events import InternalErrorExit, IoExit, MmioExit, ShutdownExit, SystemEventExit
from kvmpy.tracewriters import ChromeTraceWriter, JsonLinesWriter, TextWriter, event_fields, format_text

ORIGIN = 100.0
EVENTS = [
    (IoExit(0, 100.5, 0x3F8, 1, True, 1, b"K", "serial"), 2.5e-6),
    (IoExit(0, 100.6, 0x3FD, 1, False, 1, b"\x60", "serial"), 1e-6),
    (IoExit(1, 100.7, 0x7F0, 4, False, 1, b"\xff\xff\xff\xff", ""), 3e-6),
    (IoExit(0, 100.8, 0x511, 1, False, 4, b"QEMU", 'fw"cfg'), 9e-6),
    (MmioExit(0, 101.0, 0xD0000004, 4, True, 0x789ABCDE, "probe"), 4e-6),
    (MmioExit(1, 101.1, 0xFEC00000, 8, False, 0x11, ""), 5e-6),
    (ShutdownExit(0, 102.0), 0.0),
    (SystemEventExit(1, 102.5, 5), 0.0),
    (InternalErrorExit(0, 103.0, 1, [3, 4], b"\x0f\x0b"), 0.0),
]


def write_events(path, events=EVENTS):
    w = JsonLinesWriter(path, ORIGIN)
    for ev, h in events:
        w(ev, h)
    w.close()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_line_is_json_and_agrees_with_the_reference(tmp_path):
    lines = write_events(tmp_path / "ev.jsonl")
    assert len(lines) == len(EVENTS)
    for got, (ev, h) in zip(lines, EVENTS, strict=True):
        want = event_fields(ev, h, ORIGIN)
        assert got.keys() == want.keys(), ev
        for k in want:
            if isinstance(want[k], float):
                assert got[k] == pytest.approx(want[k], abs=1e-3), (k, ev)
            else:
                assert got[k] == want[k], (k, ev)


def test_the_documented_fields(tmp_path):
    out, inn, unowned, string, mw, mr, shutdown, sysev, internal = write_events(tmp_path / "ev.jsonl")
    assert out == {"time": 0.5, "vcpu": 0, "reason": "io", "port": 0x3F8, "size": 1, "direction": "out",
                   "value": ord("K"), "count": 1, "device": "serial", "handling_us": 2.5}
    assert inn["direction"] == "in" and inn["value"] == 0x60
    assert unowned["device"] is None and unowned["vcpu"] == 1 and unowned["value"] == 0xFFFFFFFF
    assert string["count"] == 4 and string["value"] is None and string["data"] == b"QEMU".hex()
    assert string["device"] == 'fw"cfg'
    assert mw == {"time": pytest.approx(1.0), "vcpu": 0, "reason": "mmio", "addr": 0xD0000004, "size": 4,
                  "direction": "write", "value": 0x789ABCDE, "device": "probe", "handling_us": 4.0}
    assert mr["direction"] == "read" and mr["device"] is None and mr["size"] == 8
    assert shutdown["reason"] == "shutdown" and shutdown["time"] == 2.0
    assert sysev["kind"] == 5
    assert internal["suberror"] == 1 and internal["data"] == [3, 4] and internal["insn"] == "0f0b"


def test_decoded_instructions_are_written(tmp_path):
    ev = IoExit(0, 100.5, 0x3F8, 1, True, 1, b"K", "serial", insn="out dx,al")
    (line,) = write_events(tmp_path / "ev.jsonl", [(ev, 1e-6)])
    assert line["insn"] == "out dx,al" and line["port"] == 0x3F8


def test_timeline_is_a_chrome_trace_with_one_track_per_vcpu(tmp_path):
    path = tmp_path / "tl.json"
    w = ChromeTraceWriter(path, ORIGIN)
    for ev, h in EVENTS:
        w(ev, h)
    w.close()
    doc = json.loads(path.read_text())
    evs = doc["traceEvents"]
    complete = [e for e in evs if e["ph"] == "X"]
    instant = [e for e in evs if e["ph"] == "i"]
    meta = [e for e in evs if e["ph"] == "M"]
    assert len(complete) == 6 and len(instant) == 3
    first = complete[0]
    assert first["ts"] == pytest.approx(0.5e6) and first["dur"] == pytest.approx(2.5)
    assert first["tid"] == 0 and first["pid"] == 1 and first["name"] == "out 0x3f8"
    assert first["args"]["device"] == "serial" and first["args"]["value"] == ord("K")
    assert {e["tid"] for e in complete} == {0, 1}
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert names == {0: "vCPU 0", 1: "vCPU 1"}
    assert any(e["name"] == "process_name" for e in meta)
    assert instant[0]["name"] == "shutdown" and instant[0]["s"] == "t"


def test_an_empty_timeline_is_still_valid(tmp_path):
    path = tmp_path / "tl.json"
    ChromeTraceWriter(path, ORIGIN).close()
    assert [e["name"] for e in json.loads(path.read_text())["traceEvents"]] == ["process_name"]


def test_text_lines():
    line = format_text(*EVENTS[0], ORIGIN)
    assert line.split()[:7] == ["0.500000", "vcpu0", "io", "out", "port", "0x03f8", "size"]
    assert "value 0x4b" in line and "serial" in line and line.endswith("µs")
    assert "x4" in format_text(*EVENTS[3], ORIGIN)
    assert "(unowned)" in format_text(*EVENTS[5], ORIGIN)
    assert "shutdown" in format_text(*EVENTS[6], ORIGIN)
    s = io.StringIO()
    TextWriter(s, ORIGIN)(*EVENTS[4])
    assert "write 0xd0000004 size 4 value 0x789abcde" in s.getvalue()


def test_an_unwritable_path_is_one_clear_error(tmp_path):
    with pytest.raises(KvmpyError) as e:
        JsonLinesWriter(tmp_path / "missing" / "ev.jsonl", ORIGIN)
    assert "cannot write the events to" in str(e.value)
    with pytest.raises(KvmpyError):
        ChromeTraceWriter(tmp_path, ORIGIN)
