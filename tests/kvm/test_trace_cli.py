"""``kvmpy trace`` as a user runs it, on our guest programs: the statistics agree with the event
file of the same run, the console can be rebuilt from traced writes, filters and limits hold,
hook scripts answer, stop and fail cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kvmpy.events import IoExit
from kvmpy.tracefilter import parse_filter

ROOT = Path(__file__).resolve().parents[2]


def trace(*args: str, timeout: float = 120):
    p = subprocess.run([sys.executable, "-m", "kvmpy", "trace", *args], capture_output=True,
                       timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def table(report: str, title: str) -> dict[str, int]:
    """label -> count of one --stats table."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {title}  "))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("  ..."):
            break
        label, count = re.match(r"  (.+?)\s{2,}([\d,]+)\s", line).groups()
        rows[label] = int(count.replace(",", ""))
    return rows


def test_stats_agree_with_the_events_of_the_same_run(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    rc, out, err = trace("--stats", "--top", "100", "--events", str(ev),
                         "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 0, err
    events = read_events(ev)
    total = int(re.search(r"kvmpy trace: ([\d,]+) exits to kvmpy", err).group(1).replace(",", ""))
    assert total == len(events) > 1000
    assert table(err, "exit reason") == Counter(e["reason"] for e in events)
    assert table(err, "device") == Counter(e["device"] or "(unowned)" for e in events if "device" in e)
    assert table(err, "busiest ports") == Counter(f"{e['port']:#06x}" for e in events if e["reason"] == "io")
    assert "in the kernel (KVM_GET_STATS_FD" in err
    kernel_to_us = int(re.search(r"to kvmpy\s+([\d,]+)", err).group(1).replace(",", ""))
    assert kernel_to_us >= total  # unfiltered, and counted by the loop itself
    for e in events:
        assert e["handling_us"] >= 0 and e["time"] >= 0


def rebuild_console(events: list[dict]) -> bytes:
    """What a 16550 at 0x3f8 transmitted, from the writes to its eight ports."""
    lcr = mcr = 0
    out = bytearray()
    for e in events:
        off = e["port"] - 0x3F8
        if off == 3:
            lcr = e["value"]
        elif off == 4:
            mcr = e["value"]
        elif off == 0 and not lcr & 0x80 and not mcr & 0x10:
            out += bytes.fromhex(e["data"]) if e["count"] != 1 else bytes([e["value"]])
    return bytes(out)


def test_console_rebuilt_from_traced_writes_equals_the_console(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    f = "port=0x3f8+8,direction=out"
    rc, out, err = trace("--events", str(ev), "--filter", f, "--kernel", str(guest_program("demo")),
                         "--append", "batch")
    assert rc == 0, err
    events = read_events(ev)
    assert all(0x3F8 <= e["port"] <= 0x3FF and e["direction"] == "out" for e in events)
    assert b"kvmpy demo guest" in out
    assert rebuild_console(events) == out


def test_filtered_files_hold_only_what_the_filter_claims(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    rc, out, err = trace("--events", str(ev), "--filter", "device=rtc|fw_cfg,direction=in", "--filter",
                         "port=0x604", "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 0, err
    events = read_events(ev)
    kinds = Counter((e["device"], e["direction"]) for e in events)
    assert set(kinds) == {("rtc", "in"), ("fw_cfg", "in"), ("acpi-pm", "out"), ("acpi-pm", "in")}
    assert all(e["port"] == 0x604 or e["device"] in ("rtc", "fw_cfg") and e["direction"] == "in"
               for e in events)


def test_limit_stops_the_run_with_its_status(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    rc, out, err = trace("--limit", "25", "--events", str(ev), "--kernel", str(guest_program("demo")),
                         "--append", "batch")
    assert rc == 10
    assert err.strip().splitlines()[-1] == "kvmpy: trace limit of 25 events reached (exit status 10)"
    assert len(read_events(ev)) == 25


def test_keep_running_stops_tracing_but_not_the_guest(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    rc, out, err = trace("--limit", "5", "--keep-running", "--events", str(ev),
                         "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 0, err
    assert b"demo: powering off" in out
    assert len(read_events(ev)) == 5


def test_duration_ends_a_guest_that_would_wait_forever(guest_program):
    rc, out, err = trace("--duration", "1.5", "--stats", "--kernel", str(guest_program("demo")), timeout=60)
    assert rc == 10, err
    assert "trace duration of 1.5 s reached (exit status 10)" in err
    assert b"kvmpy> " in out


def test_printed_lines_and_decoded_instructions(guest_program, tmp_path):
    ev = tmp_path / "ev.jsonl"
    rc, out, err = trace("--decode", "--print", "--events", str(ev), "--filter", "reason=io|mmio",
                         "--kernel", str(guest_program("mmio_probe")))
    assert rc == 1, err  # the guest's own debug-exit status
    events = read_events(ev)
    mmio = [e for e in events if e["reason"] == "mmio"]
    assert [e["addr"] for e in mmio] == [0xFED00000, 0xFED40F00]
    assert all(e["insn"].startswith("mov ") for e in mmio)
    io = [e for e in events if e["reason"] == "io"]
    # every port exit is explained by an in/out instruction (RIP may already be past an `out`)
    assert all(re.match(r"(rep )?(in|out)", e["insn"]) for e in io), {e["insn"] for e in io}
    printed = [line for line in err.splitlines() if " vcpu0 " in line]
    assert len(printed) == len(events)
    assert [line.split()[2:4] + line.split()[-2:] for line in printed if " mmio " in line] == [
        ["mmio", "read", "[eax]"], ["mmio", "read", "[eax]"]] or all(" mov " in line for line in printed
                                                                    if " mmio " in line)


def test_timeline_has_one_track_per_vcpu(guest_program, tmp_path):
    tl = tmp_path / "tl.json"
    rc, out, err = trace("--timeline", str(tl), "--cpus", "2", "--kernel", str(guest_program("smp")))
    assert rc == 1, err + out.decode()
    doc = json.loads(tl.read_text())
    tracks = {e["tid"] for e in doc["traceEvents"] if e["ph"] == "X"}
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert tracks == {0, 1} and names == {0: "vCPU 0", 1: "vCPU 1"}


# --- hook scripts -------------------------------------------------------------------------------
def script(tmp_path: Path, text: str) -> str:
    p = tmp_path / "hooks.py"
    p.write_text(text)
    return str(p)


def test_a_script_answering_a_port_read_changes_what_the_guest_prints(guest_program, tmp_path):
    s = script(tmp_path, """
scratch = [0]

@vm.tracer.on("io", port=0x2ff, direction="out")
def keep(event):
    scratch[0] = event.value
    event.swallow()

@tracer.on("io", port=0x2ff, direction="in")
def answer(event):
    return scratch[0]
""")
    rc, out, err = trace("--script", s, "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 0, err
    assert b"COM2 (0x2f8): 16550 UART (scratch register works)" in out
    rc, out, err = trace("--kernel", str(guest_program("demo")), "--append", "batch", "--stats")
    assert b"COM2 (0x2f8): absent" in out  # and without the script, the truth


def test_stopping_from_a_hook_ends_the_run_with_status_10(guest_program, tmp_path):
    s = script(tmp_path, """
@vm.tracer.on("io", device="fw_cfg")
def found(event):
    event.stop(f"fw_cfg touched at port {event.port:#x}")

@tracer.at_end
def report(stop):
    print("at_end:", stop.reason.name)
""")
    rc, out, err = trace("--script", s, "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 10
    assert err.strip().splitlines()[-1] == "kvmpy: fw_cfg touched at port 0x510 (exit status 10)"
    assert b"Devices:" in out and b"demo: powering off" not in out
    assert b"at_end: TRACE_STOP" in out


def test_a_failing_hook_stops_cleanly_with_the_users_traceback(guest_program, tmp_path):
    s = script(tmp_path, """
seen = []

@vm.tracer.on("io", port=0x3f8, direction="out")
def console(event):
    seen.append(event.value)
    event.swallow()
    if len(seen) == 5:
        print(len(seen) / 0)
""")
    rc, out, err = trace("--script", s, "--kernel", str(guest_program("demo")), "--append", "batch")
    assert rc == 12
    lines = err.strip().splitlines()
    assert lines[0] == ("kvmpy: trace hook console (hooks.py line 4) raised ZeroDivisionError: division by "
                        "zero (exit status 12)")
    assert "Traceback (most recent call last):" in lines
    assert any(s in line and "line 9, in console" in line for line in lines)
    assert "print(len(seen) / 0)" in err and lines[-1] == "ZeroDivisionError: division by zero"
    assert "kvmpy/" not in err  # the user's frames only
    # the four swallowed bytes never reached the UART; the fifth, whose hook failed, did: the
    # failed hook's actions were dropped and the device handled the write, nothing half-done
    assert len(out) == 1


@pytest.mark.parametrize("text,status,words", [
    ("def broken(:\n    pass\n", 65, ["hooks.py, line 1", "invalid syntax"]),
    ("x = 1\nundefined_name + 1\n", 65, ["hooks.py failed while loading at line 2",
                                         "NameError: name 'undefined_name' is not defined"]),
    ("vm.tracer.on('vmexit')\n", 65, ["failed while loading at line 1", "unknown exit kind 'vmexit'"]),
])
def test_a_broken_script_is_one_clear_sentence(guest_program, tmp_path, text, status, words):
    rc, out, err = trace("--script", script(tmp_path, text), "--kernel", str(guest_program("demo")))
    assert rc == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvmpy: hook script ") and "Traceback" not in err
    for w in words:
        assert w in lines[0]
    assert out == b""  # the guest never ran


def test_a_missing_script(guest_program, tmp_path):
    rc, out, err = trace("--script", str(tmp_path / "nope.py"), "--kernel", str(guest_program("demo")))
    assert rc == 66
    assert err.strip() == f"kvmpy: hook script {tmp_path / 'nope.py'} does not exist"


@pytest.mark.parametrize("args,words", [
    (["--filter", "port=0x3g8"], "'0x3g8' is not a number"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--duration", "soon"], "not a number of seconds"),
    (["--keep-running"], "--keep-running needs --limit or --duration"),
])
def test_bad_trace_options(guest_program, args, words):
    rc, out, err = trace(*args, "--kernel", str(guest_program("demo")))
    assert rc == 64
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err


def test_filters_on_the_command_line_and_in_python_agree(guest_program, tmp_path):
    """The events a --filter keeps are exactly those the same filter, parsed in Python, keeps
    from the unfiltered file of a run of the same deterministic guest."""
    f = "port=0x70-0x71|0x510,direction=out"
    runs = {}
    for name, extra in (("all", []), ("filtered", ["--filter", f])):
        ev = tmp_path / f"{name}.jsonl"
        rc, out, err = trace("--events", str(ev), *extra, "--kernel", str(guest_program("fwcfg")))
        assert rc == 1, err
        runs[name] = [(e["port"], e["direction"], e["value"]) for e in read_events(ev)]
    flt = parse_filter(f)
    kept = [(p, d, v) for p, d, v in runs["all"]
            if flt.matches(IoExit(0, 0.0, p, 1, d == "out", 1, None, ""))]
    assert kept == runs["filtered"] and kept
