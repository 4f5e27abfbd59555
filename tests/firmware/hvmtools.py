"""Helpers for the firmware tier: a PC machine run from a test, disk images, PNG decoding.

Why Python and not ``kvmpy boot`` in a subprocess: the checks here are about what the screen
shows at a given moment (SeaBIOS's banner, its boot menu, a guest program's drawing), so a test
must read the VGA text buffer while the machine runs, press keys on the PS/2 keyboard when a
prompt appears, and register probe ports where the guest signals "look now". ``HvmMachine``
wraps a :class:`kvmpy.machine.Machine` built from ``kvmpy boot`` options for that.

A module of its own (not conftest.py) so that the tests can import it by a unique name.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kvmpy.events import GuestStop, StopReason  # noqa: E402
from kvmpy.hw.bus import OverlapError  # noqa: E402
from kvmpy.machine import Machine  # noqa: E402
from kvmpy.options import parse_boot_args  # noqa: E402

DEBIAN_DIR = ROOT / "build" / "debian"
FIRMWARE_FILES = ("bios-256k.bin", "vgabios-stdvga.bin")
#: QEMU's debugcon port: SeaBIOS logs there when a read of it returns 0xE9.
DEBUGCON_PORT = 0x402
DEBUGCON_MAGIC = 0xE9
SECTOR = 512
#: How long a test lets SeaBIOS run at most; on a PVM host it reaches the boot in ~5 s.
DEFAULT_TIMEOUT = 60.0


def make_images(*targets: str, makefile: str = "firmware/images.mk") -> None:
    """Build targets of one of firmware/'s makefiles (images.mk, which includes debian.mk, or
    debian.mk alone) through make: the top Makefile where it includes it, else that file on its
    own. Fails the test with make's output (the tools come with the Makefile's set-up, so a
    missing one is a broken set-up, not a skip)."""
    top = ROOT / "Makefile"
    uses_top = top.exists() and makefile in top.read_text()
    cmd = ["make", "-C", str(ROOT), *([] if uses_top else ["-f", makefile]), *targets]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def firmware_missing() -> str | None:
    """Why the firmware tier cannot run here, or None."""
    missing = [name for name in FIRMWARE_FILES if not (DEBIAN_DIR / name).is_file()]
    if missing:
        return (f"Debian's SeaBIOS files are missing ({', '.join(str(DEBIAN_DIR / n) for n in missing)}): "
                "run 'make test' (or 'make debian-images') to fetch the seabios package")
    return None


class _Debugcon:
    """QEMU's debugcon: reads answer 0xE9 (so SeaBIOS logs), writes are collected."""

    def __init__(self) -> None:
        self.data = bytearray()

    def read(self, offset: int, size: int) -> int:
        return DEBUGCON_MAGIC

    def write(self, offset: int, size: int, value: int) -> None:
        self.data.append(value & 0xFF)


class _Probe:
    """A test's port: each write calls ``on_write(offset, value)`` in the vCPU thread, with the
    machine's device lock held, so the guest waits until the callback returns."""

    def __init__(self, on_write: Callable[[int, int], None]) -> None:
        self.on_write = on_write

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self.on_write(offset, value)


class HvmMachine:
    """A PC machine (``--hvm``) run from a test, its screen and keyboard at hand.

    Construct it through the ``hvm`` fixture, which closes it after the test."""

    def __init__(self, argv: list[str]) -> None:
        config = parse_boot_args(argv)
        config.console = "none"
        self.machine = Machine(config)
        self.debugcon = _Debugcon()
        try:
            self.machine.pio.register(DEBUGCON_PORT, 1, self.debugcon, "debugcon", sizes=(1,))
        except OverlapError:
            pass  # the machine has a debugcon of its own: the report goes without SeaBIOS's log
        self.stop: GuestStop | None = None
        self.elapsed = 0.0

    # -- what the machine has and shows -------------------------------------------------------
    @property
    def devices(self) -> dict[str, Any]:
        return self.machine.devices

    @property
    def vga(self) -> Any:
        return self.machine.devices["vga"]

    def screen(self) -> list[str]:
        """The text screen's rows (right-stripped), read under the device lock."""
        with self.machine.lock:
            return [row.rstrip() for row in self.vga.text_screen()]

    def screen_text(self) -> str:
        return "\n".join(self.screen())

    @property
    def serial(self) -> str:
        return self.machine.output.decode(errors="replace")

    @property
    def debug_log(self) -> str:
        return bytes(self.debugcon.data).decode(errors="replace")

    def report(self, log_tail: int = 2500) -> str:
        """Everything a failing assertion should show: the stop, the screen, COM1, SeaBIOS's log."""
        stop = f"{self.stop.reason.name} ({self.stop.message})" if self.stop else "not run"
        screen = "\n".join(row for row in self.screen() if row) or "(empty)"
        return (f"\n--- stop after {self.elapsed:.1f} s: {stop}\n--- screen:\n{screen}\n"
                f"--- COM1:\n{self.serial or '(nothing)'}\n"
                f"--- SeaBIOS debug log (last {log_tail} characters):\n{self.debug_log[-log_tail:]}")

    # -- driving it ---------------------------------------------------------------------------
    def add_probe(self, port: int, length: int, on_write: Callable[[int, int], None]) -> None:
        """Call ``on_write(offset, value)`` for each byte the guest writes to ``port``."""
        self.machine.pio.register(port, length, _Probe(on_write), "test-probe", sizes=(1,))

    def press(self, *codes: bytes) -> None:
        """Queue PS/2 scan code set 2 sequences (one per key event) on the keyboard."""
        with self.machine.lock:
            for code in codes:
                self.devices["i8042"].key_event(code)

    def tap(self, make: int) -> None:
        """Press and release a key with a one-byte set-2 make code."""
        self.press(bytes([make]), bytes([0xF0, make]))

    def run(self, timeout: float = DEFAULT_TIMEOUT) -> GuestStop:
        """Run until the guest stops itself (debug-exit, power-off, ...) or ``timeout``."""
        t0 = time.monotonic()
        self.stop = self.machine.run(timeout=timeout)
        self.elapsed = time.monotonic() - t0
        return self.stop

    def run_until(self, condition: Callable[[HvmMachine], bool], timeout: float = DEFAULT_TIMEOUT,
                  poll: float = 0.05) -> bool:
        """Run until ``condition(self)`` holds (polled from a watcher thread), the guest stops,
        or ``timeout``; True when the condition was met. The machine is stopped either way."""
        met = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if condition(self):
                    met.set()
                    self.machine.request_stop(GuestStop.of(StopReason.USER, "test condition met"))
                    return
                done.wait(poll)

        watcher = threading.Thread(target=watch, name="hvm-test-watcher", daemon=True)
        watcher.start()
        try:
            self.run(timeout)
        finally:
            done.set()
            watcher.join(timeout=5)
        return met.is_set()

    def wait_for_screen(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> re.Match[str] | None:
        """Run until the text screen matches ``pattern`` (a regex, multi-line); the match or None."""
        rx = re.compile(pattern, re.M)
        found: list[re.Match[str]] = []

        def seen(h: HvmMachine) -> bool:
            m = rx.search(h.screen_text())
            if m:
                found.append(m)
            return m is not None

        self.run_until(seen, timeout)
        return found[0] if found else None

    def close(self) -> None:
        self.machine.close()


def make_disk(path: Path, size: int, program: Path | None = None,
              fill: Callable[[int], bytes] | None = None) -> bytes:
    """Write a raw disk image of ``size`` bytes: ``fill(size)`` (zeros by default) with the
    program's sectors at LBA 0. Returns the bytes written (the test's reference copy)."""
    data = bytearray(fill(size) if fill else bytes(size))
    if program is not None:
        code = program.read_bytes()
        assert len(code) % SECTOR == 0 and len(code) < size, f"{program} does not fit the disk"
        data[: len(code)] = code
    path.write_bytes(data)
    return bytes(data)


def read_png(path: Path) -> tuple[int, int, bytes]:
    """Decode an 8-bit RGB, non-interlaced PNG (what a screenshot is) into packed RGB rows.

    Independent of kvmpy's encoder on purpose: the test checks the file a user would open, so
    every scanline filter of the PNG specification (section 9) is undone here."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (8, 2, 0), f"{path}: not 8-bit RGB non-interlaced"
    raw = zlib.decompress(bytes(idat))
    stride = 3 * width
    assert len(raw) == (stride + 1) * height, f"{path}: {len(raw)} bytes of scanlines for {width}x{height}"
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(3, stride):
                line[i] = (line[i] + line[i - 3]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind in (3, 4):
            for i in range(stride):
                left = line[i - 3] if i >= 3 else 0
                up = prev[i]
                if kind == 3:
                    line[i] = (line[i] + (left + up) // 2) & 0xFF
                else:
                    upleft = prev[i - 3] if i >= 3 else 0
                    p = left + up - upleft
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else upleft
                    line[i] = (line[i] + pred) & 0xFF
        else:
            assert kind == 0, f"{path}: unknown filter type {kind} in row {y}"
        out += line
        prev = line
    return width, height, bytes(out)
