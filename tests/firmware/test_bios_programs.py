"""kvmpy's boot-sector programs (firmware/bootsect) booted by SeaBIOS, checked from the host.

Why: a boot loader sees the PC only through the BIOS services and the VGA hardware, so these
programs use them the way MBRs, syslinux and DOS programs do (int 13h CHS and EDD calls, int 10h
mode switches, VBE with the linear framebuffer) and the tests compare what the guest reports
with what the host knows: the checksums against the image file, the written sectors on the
file afterwards, the text and pixels kvmpy's VGA shows (``text_screen``, ``render``, a PNG
screenshot) at the moment the guest says "look now" on a probe port.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hvmtools import SECTOR, HvmMachine, make_disk, read_png

# -- int13 --------------------------------------------------------------------------------------

INT13_DISK_SECTORS = 8192  # 4 MiB: 16 heads, 63 sectors a track, as SeaBIOS/QEMU translate it
#: What int13.S writes (see its header): the CHS write and the EDD write, with their seeds.
CHS_WRITE = (100, 2, 0x77)
LBA_WRITE = (6000, 8, 0x21)


def checksum(data: bytes) -> int:
    """int13.S's checksum: a += byte; s += a (32-bit, wrapping); the result is s."""
    a = s = 0
    for b in data:
        a = (a + b) & 0xFFFFFFFF
        s = (s + a) & 0xFFFFFFFF
    return s


def pattern(nbytes: int, seed: int) -> bytes:
    """int13.S's write pattern: byte j is 5*j + 17*(j >> 9) + seed."""
    return bytes((5 * j + 17 * (j >> 9) + seed) & 0xFF for j in range(nbytes))


def sectors(image: bytes, lba: int, n: int) -> bytes:
    return image[lba * SECTOR : (lba + n) * SECTOR]


@pytest.mark.parametrize("platform", [
    pytest.param([], id="in-kernel-irqchip"),
    # SeaBIOS on kvmpy's own PICs, PIT and IOAPIC (the split irqchip), with the IOMMU present
    pytest.param(["--iommu", "vtd"], id="vtd-split-irqchip"),
])
def test_int13_disk_services(hvm, bootsect, tmp_path: Path, platform: list[str]) -> None:
    """Reads through AH=02 and AH=42 return the image's bytes, AH=48 reports its size, reads
    past the end fail, and what AH=03 and AH=43 wrote is on the image file afterwards, with
    every other sector untouched."""
    disk = tmp_path / "int13.img"
    original = make_disk(disk, INT13_DISK_SECTORS * SECTOR, bootsect("int13"),
                         fill=lambda size: random.Random(13).randbytes(size))
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "64M", *platform)
    stop = h.run()
    out = h.serial
    assert stop.status == 1 and "INT13 OK" in out, f"int13 did not pass{h.report()}"
    assert "INT13 drive=0x80" in out

    geom = re.search(r"^GEOM cyls=(\d+) heads=(\d+) spt=(\d+) drives=(\d+)$", out, re.M)
    assert geom, out
    cyls, heads, spt, drives = map(int, geom.groups())
    assert drives == 1 and 1 <= heads <= 255 and 1 <= spt <= 63, geom.group(0)
    assert cyls * heads * spt <= INT13_DISK_SECTORS, f"AH=08 describes more than the disk: {geom.group(0)}"

    chs_reads = re.findall(r"^CHS READ lba=(\d+) n=(\d+) chs=(\d+)/(\d+)/(\d+) sum=0x([0-9a-f]{8})$",
                           out, re.M)
    assert len(chs_reads) == 3, out
    for row in chs_reads:
        lba, n, c, hd, s = map(int, row[:5])
        total = int(row[5], 16)
        assert (c, hd, s) == (lba // (heads * spt), lba // spt % heads, lba % spt + 1), \
            f"LBA {lba} is not CHS {c}/{hd}/{s} with {heads} heads and {spt} sectors a track"
        assert total == checksum(sectors(original, lba, n)), f"AH=02 at LBA {lba}: wrong data"

    ext = re.search(r"^EXT version=0x([0-9a-f]{2}) api=0x([0-9a-f]{4})$", out, re.M)
    assert ext and int(ext.group(2), 16) & 1, f"AH=41 must offer the DAP functions: {ext}"
    params = re.search(r"^PARAMS size=(\d+) sectors=(\d+) bps=(\d+)$", out, re.M)
    assert params and int(params.group(2)) == INT13_DISK_SECTORS and int(params.group(3)) == SECTOR, \
        f"AH=48 does not describe the {INT13_DISK_SECTORS}-sector disk: {params and params.group(0)}"

    lba_reads = re.findall(r"^LBA READ lba=(\d+) n=(\d+) sum=0x([0-9a-f]{8})$", out, re.M)
    assert [(int(lba), int(n)) for lba, n, _ in lba_reads] == [(2048, 64), (INT13_DISK_SECTORS - 4, 4)], out
    for lba, n, total in lba_reads:
        assert int(total, 16) == checksum(sectors(original, int(lba), int(n))), \
            f"AH=42 at LBA {lba}: wrong data"

    bad = re.findall(r"^BAD LBA lba=(\d+) n=1 status=0x([0-9a-f]{2})$", out, re.M)
    assert [int(lba) for lba, _ in bad] == [INT13_DISK_SECTORS, INT13_DISK_SECTORS + 0x10000], out
    assert all(int(status, 16) != 0 for _, status in bad), f"a failed read must report a status: {bad}"

    after = disk.read_bytes()
    assert len(after) == len(original), "the image changed size"
    for label, (lba, n, seed) in (("CHS WRITE", CHS_WRITE), ("LBA WRITE", LBA_WRITE)):
        line = re.search(rf"^{label} lba={lba} n={n} .*sum=0x([0-9a-f]{{8}}) readback OK$", out, re.M)
        want = pattern(n * SECTOR, seed)
        assert line and int(line.group(1), 16) == checksum(want), f"{label}: {line and line.group(0)}"
        assert sectors(after, lba, n) == want, \
            f"{label}: the sectors on the image file are not what was written"
    written = {lba + i for lba, n, _ in (CHS_WRITE, LBA_WRITE) for i in range(n)}
    changed = {lba for lba in range(INT13_DISK_SECTORS)
               if sectors(after, lba, 1) != sectors(original, lba, 1)}
    assert changed == written, f"sectors changed that nobody wrote: {sorted(changed - written)}"


# -- int10 --------------------------------------------------------------------------------------

#: The port int10.S writes its phase markers to (an unused ISA port; fw_cfg is at 0x510).
PROBE_PORT = 0x7F0
MARKERS = [0x03, 0x12, 0x13, 0x4F, 0x30]
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
#: The standard EGA/VGA palette entries the programs draw with (6-bit DAC values scaled).
EGA_RED, EGA_GREEN = (0xAA, 0, 0), (0, 0xAA, 0)


@dataclass
class Capture:
    """The screen at one marker, captured in the vCPU thread while the guest waits."""

    mode: Any
    text: list[str]
    attributes: list[bytes]
    width: int
    height: int
    rgb: bytes
    png: Path | None

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = 3 * (y * self.width + x)
        return tuple(self.rgb[i : i + 3])  # type: ignore[return-value]


def near(got: tuple[int, ...], want: tuple[int, ...], slack: int = 6) -> bool:
    """Colour equality up to the DAC's 6-to-8-bit scaling (0x3F may be 0xFC or 0xFF)."""
    return all(abs(g - w) <= slack for g, w in zip(got, want, strict=True))


def check_pixels(cap: Capture, marker: int, expected: dict[tuple[int, int], tuple[int, int, int]],
                 slack: int = 6) -> None:
    for (x, y), want in expected.items():
        got = cap.pixel(x, y)
        assert near(got, want, slack), f"marker {marker:#x}: pixel ({x}, {y}) is {got}, expected {want}"


def check_png(cap: Capture, marker: int) -> None:
    """The screenshot a user would get: the right size, the same pixels, and not blank."""
    assert cap.png is not None and cap.png.is_file(), f"marker {marker:#x}: no screenshot written"
    width, height, rgb = read_png(cap.png)
    assert (width, height) == (cap.width, cap.height), f"marker {marker:#x}: PNG is {width}x{height}"
    assert rgb == cap.rgb, f"marker {marker:#x}: the PNG's pixels differ from render()'s"
    colours = {rgb[i : i + 3] for i in range(0, len(rgb), 3 * 97)}
    assert len(colours) > 1, f"marker {marker:#x}: the screenshot is blank"


def test_int10_modes_text_and_pixels(hvm, bootsect, tmp_path: Path) -> None:
    """Mode 3 text (teletype, AH=09, stores at 0xB8000), mode 12h and 13h pixels, a VBE 32-bit
    LFB mode and the way back to text, each checked on kvmpy's screen while the guest waits."""
    disk = tmp_path / "int10.img"
    make_disk(disk, 1 << 20, bootsect("int10"))
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "64M")
    vga = h.vga
    captures: dict[int, Capture] = {}
    order: list[int] = []

    def on_marker(offset: int, value: int) -> None:
        # runs in the vCPU thread under the device lock: capture only, assert later
        order.append(value)
        width, height, rgb = vga.render()
        png = None
        if vga.display_mode().kind != "text":
            png = tmp_path / f"mode-{value:02x}.png"
            vga.screenshot(png)
        captures[value] = Capture(vga.display_mode(), vga.text_screen(), vga.text_attributes(),
                                  width, height, rgb, png)

    h.add_probe(PROBE_PORT, 8, on_marker)
    stop = h.run()
    out = h.serial
    assert order == MARKERS[: len(order)], f"markers out of order: {[hex(v) for v in order]}{h.report()}"
    assert stop.status == 1 and "INT10 OK" in out, f"int10 did not pass{h.report()}"
    assert order == MARKERS

    # mode 3: what the BIOS and the program wrote, with their attributes
    cap = captures[0x03]
    assert "MODE 0x03 cols=80" in out
    assert (cap.mode.kind, cap.mode.cols, cap.mode.rows) == ("text", 80, 25), cap.mode
    assert cap.text[0].startswith("KVMPY TELETYPE LINE 1"), cap.text[:2]
    assert cap.text[1].startswith("second line via int 10h AH=0E"), cap.text[:2]
    assert cap.text[5][10:16] == "XXXXX " and cap.attributes[5][10:15] == b"\x4e" * 5, \
        (cap.text[5], cap.attributes[5][8:17])
    assert cap.text[12][20:37] == "KVMPY DIRECT B800" and cap.attributes[12][20:37] == b"\x1f" * 17, \
        (cap.text[12], cap.attributes[12][18:39])
    assert (cap.width, cap.height) == (80 * cap.mode.char_width, 25 * cap.mode.char_height)
    assert len({cap.rgb[i : i + 3] for i in range(0, len(cap.rgb), 3)}) > 2, "mode 3 renders blank"

    # mode 12h: 640x480, 16 colours in planes
    cap = captures[0x12]
    assert re.search(r"^MODE 0x12 cols=80 pixel=0x02$", out, re.M), out
    assert (cap.mode.kind, cap.width, cap.height) == ("planar", 640, 480), cap.mode
    assert cap.text == []
    check_pixels(cap, 0x12, {(0, 0): WHITE, (79, 15): WHITE, (40, 16): EGA_RED, (79, 31): EGA_RED,
                             (80, 0): BLACK, (100, 100): EGA_GREEN, (115, 100): EGA_GREEN,
                             (116, 100): BLACK, (105, 101): BLACK, (320, 240): BLACK})
    check_png(cap, 0x12)

    # mode 13h: 320x200, a byte a pixel through the DAC
    cap = captures[0x13]
    assert re.search(r"^MODE 0x13 cols=40 pixel=0x02$", out, re.M), out
    assert (cap.mode.kind, cap.width, cap.height) == ("packed", 320, 200), cap.mode
    check_pixels(cap, 0x13, {(0, 0): WHITE, (63, 15): WHITE, (10, 16): EGA_RED, (63, 31): EGA_RED,
                             (64, 0): BLACK, (10, 32): BLACK, (100, 100): EGA_GREEN,
                             (115, 100): EGA_GREEN, (99, 100): BLACK, (200, 150): BLACK})
    check_png(cap, 0x13)

    # VBE: the mode the program found, drawn through the LFB at the address the BIOS reported
    vbe = re.search(r"^VBE mode=0x([0-9a-f]{4}) (\d+)x(\d+)x32 lfb=0x([0-9a-f]{8}) pitch=(\d+) "
                    r"current=0x([0-9a-f]{4})$", out, re.M)
    assert vbe, out
    width, height, pitch = int(vbe.group(2)), int(vbe.group(3)), int(vbe.group(5))
    assert (width, height) in ((800, 600), (640, 480)) and pitch >= 4 * width, vbe.group(0)
    assert int(vbe.group(6), 16) == int(vbe.group(1), 16) | 0x4000, "AX=4F03 lost the LFB bit"
    assert "LFB readback OK" in out
    cap = captures[0x4F]
    assert (cap.mode.kind, cap.mode.bpp, cap.width, cap.height) == ("vbe", 32, width, height), cap.mode
    mid = height // 2
    check_pixels(cap, 0x4F, {(0, 0): (255, 0, 0), (63, 31): (255, 0, 0), (0, 32): (0, 255, 0),
                             (63, 63): (0, 255, 0), (0, 64): (0, 0, 255), (63, 95): (0, 0, 255),
                             (64, 0): BLACK, (0, 96): BLACK, (0, mid): WHITE, (width - 1, mid): WHITE,
                             (width // 2, mid - 1): BLACK, (width - 1, height - 1): BLACK}, slack=0)
    check_png(cap, 0x4F)

    # back to mode 3: the VBE mode is off again and the BIOS's text console works
    cap = captures[0x30]
    assert (cap.mode.kind, cap.mode.cols) == ("text", 80), cap.mode
    assert cap.text[0].startswith("INT10 OK"), cap.text[:2]


# -- ACPI poweroff ------------------------------------------------------------------------------


def test_acpi_poweroff_through_seabios_tables(hvm, bootsect, tmp_path: Path) -> None:
    """A boot sector finds the tables SeaBIOS installed from kvmpy's table-loader files (RSDP →
    RSDT → FADT → DSDT's \\_S5), writes S5 to PM1a_CNT at the PIIX4 PM base SeaBIOS programmed,
    and the machine powers off: exit status 0, as `poweroff` in a guest OS gives."""
    disk = tmp_path / "acpioff.img"
    make_disk(disk, 64 * SECTOR, bootsect("acpioff"))
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "64M")
    stop = h.run()
    out = h.serial
    assert "ACPI POWEROFF" in out, f"acpioff did not get to the write{h.report()}"
    m = re.search(r"PM1a_CNT 0x([0-9a-f]{4}), S5 SLP_TYP 0x([0-9a-f]{2})", out, re.I)
    assert m and int(m.group(1), 16) == 0x604 and int(m.group(2), 16) == 0
    assert stop.status == 0, f"the machine did not power off{h.report()}"
