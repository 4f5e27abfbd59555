"""Helpers for tests that run our own guest programs (firmware/tests, firmware/demo) under KVM."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Run:
    status: int
    out: str
    err: str


@pytest.fixture(scope="session")
def guest_program():
    """Builds (incrementally) and returns the path of one of our guest programs."""
    from firmware.build import build

    return build


@pytest.fixture
def kvmpy_boot(guest_program):
    """Runs ``kvmpy boot`` on a guest program as a user would, returning status and output."""

    def run(program: str, *args: str, input: bytes | None = None, timeout: float = 120) -> Run:
        kernel = guest_program(program) if "/" not in program else Path(program)
        cmd = [sys.executable, "-m", "kvmpy", "boot", "--kernel", str(kernel), *args]
        p = subprocess.run(cmd, input=input if input is not None else b"", capture_output=True,
                           timeout=timeout, cwd=ROOT)
        return Run(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))

    return run
