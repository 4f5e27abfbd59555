"""Debian's syslinux and isolinux booted by SeaBIOS on kvmpy's PC, read off the VGA text screen.

The images come from firmware/images.mk through make (build/images/disk.img: MBR with syslinux's
mbr.bin, an active FAT16 partition with syslinux; build/images/boot.iso: El Torito with
isolinux). If make cannot build them the tests fail with make's output: the tools come with the
Makefile's set-up, so a missing one is a broken set-up, not a reason to skip.

What a person would see is what is checked: SeaBIOS's "Booting from ..." line, the loader's
banner ("SYSLINUX 6.04" / "ISOLINUX 6.04"), the SAY line of our configuration and the `boot:`
prompt, decoded from the text buffer while the machine runs; then a word typed at the prompt —
on the PS/2 keyboard for the disk, on the serial line for the CD — must be echoed after it. The
hwvirt tests choose boot labels by typing on the serial line, so that path is proven here, where
Linux itself cannot boot in useful time. The machine is stopped as soon as the echo is seen
(before the loader's 5 s timeout would start Linux).
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmpy.events import GuestStop, StopReason
from kvmpy.machine import Machine
from kvmpy.options import parse_boot_args

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # firmware/ is the repository's package, not an installed one
    sys.path.insert(0, str(ROOT))

from hvmtools import make_images  # noqa: E402

from firmware.mkdisk import SECTOR, read_table  # noqa: E402

pytestmark = pytest.mark.firmware

IMAGES = ROOT / "build" / "images"
DISK = IMAGES / "disk.img"
ISO = IMAGES / "boot.iso"
SYSLINUX_MBR = ROOT / "build/debian/syslinux-common/usr/lib/syslinux/mbr/mbr.bin"
ISOLINUX_BIN = ROOT / "build/debian/isolinux/usr/lib/ISOLINUX/isolinux.bin"
#: SeaBIOS reaches the loader in seconds and the prompt follows within ~15 s on a PVM host
#: (guest code through KVM's instruction emulator); a generous bound for slower machines
BOOT_TIMEOUT = float(os.environ.get("KVMPY_FIRMWARE_TIMEOUT", "120"))
POLL = 0.2
ISO_BLOCK = 2048
#: PS/2 scan code set 2 make codes of the letters typed at the prompt (break: F0 + make)
SET2 = {"k": 0x42, "v": 0x2A, "m": 0x3A, "p": 0x4D, "y": 0x35}
TYPED = "kvmpy"


@pytest.fixture(scope="session")
def hvm_images() -> None:
    """The two images and SeaBIOS with its VGA BIOS, built (incrementally) once per session."""
    make_images(str(DISK.relative_to(ROOT)), str(ISO.relative_to(ROOT)),
                "build/debian/bios-256k.bin", "build/debian/vgabios-stdvga.bin")


@dataclass
class RunningPc:
    """A PC machine running on a worker thread, its screen and serial console readable, its
    keyboard and serial line typable from the test."""

    machine: Machine
    thread: threading.Thread
    serial_in: int  # write end of the pipe the machine reads as its serial input
    result: dict

    def screen(self) -> str:
        with self.machine.lock:
            rows = self.machine.devices["vga"].text_screen()
        return "\n".join(r.rstrip() for r in rows).rstrip()

    def serial(self) -> str:
        return self.machine.output.decode(errors="replace").replace("\r", "")

    def describe(self) -> str:
        stop = self.result.get("stop", "none yet (still running)")
        return (f"machine stop: {stop}\n--- VGA text screen ---\n{self.screen()}\n"
                f"--- serial console (last 2000 chars) ---\n{self.serial()[-2000:]}")

    def wait_screen(self, pattern: str, timeout: float = BOOT_TIMEOUT) -> re.Match:
        """Wait until `pattern` (a regex) is on the screen; fail if the machine stops first."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.screen())
            if m:
                return m
            if not self.thread.is_alive():
                pytest.fail(f"the machine stopped before {pattern!r} appeared on the screen\n"
                            f"{self.describe()}")
            if time.monotonic() >= end:
                pytest.fail(f"no {pattern!r} on the screen within {timeout:.0f} s\n{self.describe()}")
            time.sleep(POLL)

    def type_keyboard(self, text: str) -> None:
        """Press and release each key on the PS/2 keyboard, as a person at the console would."""
        kbd = self.machine.devices["i8042"]
        for ch in text:
            with self.machine.lock:
                kbd.key_event(bytes([SET2[ch]]))
                kbd.key_event(bytes([0xF0, SET2[ch]]))
            time.sleep(0.05)

    def type_serial(self, text: str) -> None:
        os.write(self.serial_in, text.encode())

    def stop(self) -> None:
        if self.thread.is_alive():
            self.machine.request_stop(GuestStop.of(StopReason.USER, "test done"))
            self.thread.join(timeout=30)


@pytest.fixture
def boot_pc() -> Iterator:
    """Factory: boot_pc(*kvmpy boot args) -> RunningPc; every machine is stopped and closed."""
    started: list[tuple[RunningPc, int]] = []

    def boot(*argv: str) -> RunningPc:
        config = parse_boot_args(list(argv))
        config.console = "none"  # serial output captured in memory
        r, w = os.pipe()
        machine = Machine(config, input_fd=r)  # on the main thread: it installs the kick handler
        result: dict = {}
        thread = threading.Thread(target=lambda: result.setdefault("stop", machine.run(BOOT_TIMEOUT + 30)),
                                  name="kvmpy-pc", daemon=True)
        pc = RunningPc(machine, thread, w, result)
        started.append((pc, r))
        thread.start()
        return pc

    yield boot
    for pc, r in started:
        pc.stop()
        pc.machine.close()
        os.close(r)
        os.close(pc.serial_in)


def sparse_copy(src: Path, dst: Path) -> Path:
    """The test boots a copy: kvmpy opens a disk read-write (and locks it); the build stays as made."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


# -- the images as built ----------------------------------------------------------------------

def test_disk_image_has_an_active_fat_partition_with_syslinux(hvm_images):
    parts = read_table(DISK)
    assert len(parts) == 1, parts
    part = parts[0]
    assert part.active and part.type == 0x0E
    assert (part.start + part.sectors) * SECTOR == DISK.stat().st_size
    with open(DISK, "rb") as f:
        mbr = f.read(SECTOR)
        f.seek(part.start * SECTOR)
        vbr = f.read(SECTOR)
    boot_code = SYSLINUX_MBR.read_bytes()
    assert mbr[:len(boot_code)] == boot_code, "MBR boot code is not syslinux's mbr.bin"
    # the partition's boot sector: syslinux's (OEM name), FAT16, hidden sectors = partition start
    assert vbr[3:11] == b"SYSLINUX", vbr[:64]
    assert vbr[54:62] == b"FAT16   "
    assert struct.unpack_from("<I", vbr, 28)[0] == part.start
    assert vbr[510:] == b"\x55\xaa"
    # sparse on the host: far less allocated than its 32 MiB
    assert DISK.stat().st_blocks * 512 < DISK.stat().st_size // 2


def test_iso_is_el_torito_no_emulation_with_isolinux(hvm_images):
    with open(ISO, "rb") as f:
        f.seek(16 * ISO_BLOCK)
        pvd = f.read(ISO_BLOCK)
        brvd = f.read(ISO_BLOCK)
        assert pvd[1:6] == b"CD001" and pvd[0] == 1
        # El Torito boot record volume descriptor (sector 17) -> boot catalog
        assert brvd[0] == 0 and brvd[1:6] == b"CD001"
        assert brvd[7:30] == b"EL TORITO SPECIFICATION"
        catalog_lba = struct.unpack_from("<I", brvd, 0x47)[0]
        f.seek(catalog_lba * ISO_BLOCK)
        catalog = f.read(64)
        image_lba = struct.unpack_from("<I", catalog, 32 + 8)[0]
        f.seek(image_lba * ISO_BLOCK)
        loader = f.read(4 * 512)
    validation, initial = catalog[:32], catalog[32:64]
    assert validation[0] == 1 and validation[30:32] == b"\x55\xaa"
    assert sum(struct.unpack("<16H", validation)) & 0xFFFF == 0, "validation entry checksum"
    assert initial[0] == 0x88, "initial entry is not bootable"
    assert initial[1] == 0, "not a no-emulation boot"
    assert struct.unpack_from("<H", initial, 6)[0] == 4, "boot-load-size is not 4 sectors"
    # the boot image is Debian's isolinux.bin, with the boot info table (bytes 8-63) patched in
    # by -boot-info-table: the primary volume descriptor's LBA (16) first, then its own LBA
    isolinux = ISOLINUX_BIN.read_bytes()
    assert loader[64:] == isolinux[64:len(loader)]
    assert struct.unpack_from("<II", loader, 8) == (16, image_lba)


# -- booting them -----------------------------------------------------------------------------

def test_syslinux_prompt_from_the_disk(hvm_images, boot_pc, tmp_path):
    pc = boot_pc("--hvm", str(sparse_copy(DISK, tmp_path / "disk.img")), "--memory", "256M")
    pc.wait_screen(r"Booting from Hard Disk")
    pc.wait_screen(r"boot:")
    screen = pc.screen()
    assert "SYSLINUX 6.04" in screen, pc.describe()
    assert "kvmpy syslinux disk" in screen, pc.describe()  # our syslinux.cfg was read
    # SERIAL in the configuration: the loader talks on COM1 too
    assert "SYSLINUX 6.04" in pc.serial() and "boot:" in pc.serial(), pc.describe()
    pc.type_keyboard(TYPED)
    pc.wait_screen(rf"boot: *{TYPED}", timeout=30)


def test_isolinux_prompt_from_the_cdrom(hvm_images, boot_pc):
    pc = boot_pc("--cdrom", str(ISO), "--boot", "d", "--memory", "256M")
    pc.wait_screen(r"Booting from DVD/CD")
    pc.wait_screen(r"boot:")
    screen = pc.screen()
    assert "ISOLINUX 6.04" in screen, pc.describe()
    assert "kvmpy isolinux cd" in screen, pc.describe()
    assert "ISOLINUX 6.04" in pc.serial(), pc.describe()
    pc.type_serial(TYPED)
    pc.wait_screen(rf"boot: *{TYPED}", timeout=30)
    assert f"boot: {TYPED}" in pc.serial(), pc.describe()
