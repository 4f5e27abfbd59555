"""Helpers of the Linux guest tier, importable by name from the tests in this directory
(their fixtures are in conftest.py, which documents the environment variables): the skip reason,
make_targets, kernel_cmdline, GuestImages and GuestProcess."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = ROOT / "build" / "debian" / "vmlinuz"
INITRD = ROOT / "build" / "initramfs.cpio.gz"

PVM_REASON = ("needs hardware-assisted KVM (VT-x/AMD-V): this host's KVM is PVM-backed "
              "(kvm_pvm loaded), where Linux guests do not boot in useful time")
NO_KVM_REASON = "needs /dev/kvm: KVM is not available on this host"
KVM_ACCESS_REASON = "needs read/write access to /dev/kvm"

GUEST_TIMEOUT = float(os.environ.get("KVMPY_GUEST_TIMEOUT", "180"))
EXTRA_APPEND = os.environ.get("KVMPY_GUEST_APPEND", "").split()
VMM_COMMAND = shlex.split(os.environ.get("KVMPY_GUEST_VMM", "")) or [sys.executable, "-m", "kvmpy"]


def hwvirt_skip_reason() -> str | None:
    """None if this host's KVM is hardware-assisted, else why the Linux tier cannot run here."""
    if not os.path.exists("/dev/kvm"):
        return NO_KVM_REASON
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KVM_ACCESS_REASON
    if os.path.exists("/sys/module/kvm_pvm") and os.environ.get("KVMPY_HWVIRT_FORCE") != "1":
        return PVM_REASON
    return None


def is_hardware_assisted_kvm() -> bool:
    return hwvirt_skip_reason() is None


def _load_mkinitramfs():
    path = ROOT / "tests" / "guest" / "initramfs" / "mkinitramfs.py"
    spec = importlib.util.spec_from_file_location("kvmpy_test_mkinitramfs", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def make_targets(*targets: str, makefile: str = "firmware/debian.mk") -> None:
    """Build targets of ``makefile`` (firmware/debian.mk, or firmware/images.mk for the HVM images
    and the initrd with the driver overlay) through make, failing the test with make's output."""
    top = ROOT / "Makefile"
    uses_top = top.exists() and makefile in top.read_text()
    cmd = ["make", "-C", str(ROOT)] + ([] if uses_top else ["-f", makefile]) + list(targets)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


@dataclass(frozen=True)
class GuestImages:
    kernel: Path
    initrd: Path
    sample_sha256: str


def kernel_cmdline(action: str, *extra: str) -> str:
    return " ".join(["console=ttyS0", "panic=-1", "quiet", *extra, *EXTRA_APPEND, f"kvmpy.action={action}"])


class GuestProcess:
    """One `python -m kvmpy boot` run; the guest console is its stdout, its stdin the serial input."""

    def __init__(self, images: GuestImages, append: str, memory: str = "512M", cpus: int = 2,
                 timeout: float = GUEST_TIMEOUT, interactive: bool = False):
        self.append = append
        self._start([*VMM_COMMAND, "boot", "--kernel", str(images.kernel),
                     "--initrd", str(images.initrd), "--append", append,
                     "--memory", memory, "--cpus", str(cpus)], timeout, interactive)

    def _start(self, argv: list[str], timeout: float, interactive: bool) -> None:
        """Start ``argv`` with its stdout and stderr collected by two pump threads; the
        variants of this class (firmware boots, network guests) differ only in ``argv``."""
        self.argv = argv
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self._out = bytearray()
        self._err = bytearray()
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, buf: bytearray) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            with self._cond:
                buf += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        """The guest console so far, with CRs dropped."""
        with self._cond:
            return self._out.decode(errors="replace").replace("\r", "")

    @property
    def stderr(self) -> str:
        with self._cond:
            return self._err.decode(errors="replace")

    def describe(self) -> str:
        return (f"command: {self.argv}\nexit status: {self.proc.poll()}\n"
                f"--- guest console (last 4000 chars) ---\n{self.output[-4000:]}\n"
                f"--- kvmpy stderr (last 3000 chars) ---\n{self.stderr[-3000:]}")

    def wait_for(self, pattern: str, timeout: float | None = None) -> re.Match | None:
        """Wait until `pattern` (a regex) appears on the console.

        Fails the test if kvmpy exits first or the run's deadline passes; returns None if the
        optional shorter `timeout` runs out first.
        """
        rx = re.compile(pattern)
        end = self.deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        with self._cond:
            while True:
                m = rx.search(self._out.decode(errors="replace").replace("\r", ""))
                if m:
                    return m
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    pytest.fail(f"guest ended before printing {pattern!r}\n{self.describe()}")
                now = time.monotonic()
                if now >= self.deadline:
                    self.kill()
                    pytest.fail(f"no {pattern!r} within {self.timeout:.0f}s\n{self.describe()}")
                if now >= end:
                    return None
                self._cond.wait(min(end - now, 0.5))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self) -> int:
        """Wait for kvmpy to exit (within the run's deadline); returns the exit status."""
        try:
            rc = self.proc.wait(timeout=max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"kvmpy did not exit within {self.timeout:.0f}s\n{self.describe()}")
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def marker(self, name: str) -> str:
        """The text after `KVMPY-<name> ` on its line, or fail."""
        m = re.search(rf"KVMPY-{re.escape(name)} ([^\n]*)", self.output)
        if not m:
            pytest.fail(f"the guest printed no KVMPY-{name}\n{self.describe()}")
        return m.group(1).strip()
