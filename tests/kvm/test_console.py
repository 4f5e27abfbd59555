"""The console as a user at a terminal meets it: raw input, echo, Ctrl-A x, poweroff."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while marker not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} not seen; got {buf.decode(errors='replace')!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.fixture
def demo_on_a_terminal(guest_program):
    procs = []

    def start(*args):
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "kvmpy", "boot", "--kernel",
                              str(guest_program("demo")), *args],
                             stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        procs.append((p, master))
        return p, master

    yield start
    for p, master in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


def test_typing_reaches_the_guest_and_poweroff_ends_with_zero(demo_on_a_terminal):
    p, fd = demo_on_a_terminal("--memory", "64M")
    _read_until(fd, b"kvmpy> ")
    os.write(fd, b"echo hello from the host\r")
    out = _read_until(fd, b"hello from the host\r\n")
    assert b"hello from the host" in out
    os.write(fd, b"poweroff\r")
    assert p.wait(timeout=60) == 0


def test_ctrl_a_x_quits(demo_on_a_terminal):
    p, fd = demo_on_a_terminal("--memory", "64M")
    _read_until(fd, b"kvmpy> ")
    os.write(fd, b"\x01x")
    assert p.wait(timeout=30) == 8
    assert b"Ctrl-A x" in _read_until(fd, b"Ctrl-A x", timeout=10)
