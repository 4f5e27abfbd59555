"""The guest's wish to stop ends kvmpy with a status that says which (README: exit status)."""

import pytest


@pytest.mark.parametrize("code", [0, 1, 5, 0x2A, 0x7F])
def test_debug_exit_status(kvmpy_boot, code):
    r = kvmpy_boot("debug_exit", "--append", f"code={code}")
    assert f"exiting with code {code}" in r.out
    assert r.status == ((code << 1) | 1) & 0xFF
    assert "debug-exit" in r.err


@pytest.mark.parametrize("way,status", [("poweroff", 0), ("reset", 2), ("cf9", 2), ("triple", 4)])
def test_stop_ways(kvmpy_boot, way, status):
    r = kvmpy_boot("stop_ways", "--append", way, "--memory", "32M")
    assert r.status == status, r.out + r.err
    if way == "poweroff":
        assert r.err == ""  # a clean poweroff says nothing
    if way == "triple":
        assert "triple-faulted" in r.err and "rip=" in r.err  # with a register dump


def test_timeout_stops_a_guest_that_never_ends(kvmpy_boot):
    r = kvmpy_boot("stop_ways", "--append", "halt", "--timeout", "3", timeout=60)
    assert r.status == 124
    assert "stopped after 3 s" in r.err


def test_more_vcpus_than_kvm_allows(kvmpy_boot):
    r = kvmpy_boot("debug_exit", "--cpus", "5000")
    assert r.status == 67
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "at most" in lines[0] and "Traceback" not in r.err


def test_sigterm_stops_cleanly(guest_program):
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "kvmpy", "boot", "--kernel", str(guest_program("stop_ways")),
           "--append", "halt", "--memory", "32M"]
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as p:
        seen = b""
        while b"stop_ways: halt" not in seen:
            chunk = p.stdout.read1(4096)
            assert chunk, seen
            seen += chunk
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 8
    assert b"terminated by SIGTERM" in err and b"Traceback" not in err
