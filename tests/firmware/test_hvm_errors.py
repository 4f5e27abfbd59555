"""Bad input on the HVM path: one sentence, a distinct status, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def kvmpy(*args: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "kvmpy", "boot", *args], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return p.returncode, lines[0]


@pytest.fixture
def blank(tmp_path) -> Path:
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))
    return disk


def test_missing_disk(tmp_path, seabios):
    rc, line = kvmpy("--hvm", str(tmp_path / "nope.img"))
    assert rc == 66 and "nope.img does not exist" in line


def test_empty_disk_and_cdrom(tmp_path, seabios):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    rc, line = kvmpy("--hvm", str(empty))
    assert rc == 65 and "empty" in line
    rc, line = kvmpy("--cdrom", str(empty))
    assert rc == 65 and "empty" in line


def test_same_image_twice_read_write(blank, seabios):
    rc, line = kvmpy("--hvm", str(blank), "--drive", f"file={blank}")
    assert rc == 65 and "in use" in line


def test_bad_firmware_image(blank, tmp_path, seabios):
    bios = tmp_path / "bios.bin"
    bios.write_bytes(b"\xff" * 1000)
    rc, line = kvmpy("--hvm", str(blank), "--bios", str(bios))
    assert rc == 65 and "64 KiB" in line
    rc, line = kvmpy("--hvm", str(blank), "--bios", str(tmp_path / "missing.bin"))
    assert rc == 66 and "missing.bin" in line


@pytest.mark.parametrize("args,word", [
    (["--drive", "file=x.img,media=floppy"], "media"),
    (["--drive", "file=x.img,format=qcow2"], "raw"),
    (["--hvm", "x.img", "--boot", "z"], "--boot"),
])
def test_bad_drive_options(args, word, seabios):
    rc, line = kvmpy(*args)
    assert rc == 64 and word in line
