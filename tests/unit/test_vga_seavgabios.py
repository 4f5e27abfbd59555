"""Debian's real vgabios-stdvga.bin (SeaVGABIOS 1.16) driving StdVga, without KVM.

The ROM's 16-bit code runs in the unicorn CPU emulator; its port I/O goes through a PioBus to
the VGA and dispi ports, its 0xA0000 accesses to the memory window, the LFB at BAR0 to VRAM,
and PCI configuration reads at 0xCF8/0xCFC see a 1234:1111 function with BAR0 = 0xE0000000.
Then INT 10h does what SeaBIOS, boot loaders and DOS programs ask of it, and the host side
reads back the screen. Skipped when unicorn or the ROM is missing (``make
build/debian/vgabios-stdvga.bin`` fetches the ROM; ``pip install unicorn`` the emulator).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmpy.devices.vga import StdVga, vbe
from kvmpy.hw.bus import PioBus

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as X  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROM_PATHS = (ROOT / "build/debian/vgabios-stdvga.bin", Path("/usr/share/seabios/vgabios-stdvga.bin"))
LFB = 0xE0000000
VGA_BDF = 0x0010  # 00:02.0
STUB = 0xF0000  # IRET for every vector the ROM does not own


def find_rom() -> bytes:
    for path in ROM_PATHS:
        if path.is_file():
            return path.read_bytes()
    pytest.skip("vgabios-stdvga.bin not found (make build/debian/vgabios-stdvga.bin)")


class RealModePc:
    """Just enough PC for a VGA option ROM: low RAM, the ROM at C0000, the VGA, one PCI device."""

    def __init__(self, rom: bytes) -> None:
        self.vga = StdVga()
        self.pio = PioBus()
        self.pio.register(0x3B0, 0x30, self.vga.ports, "vga", sizes=(1, 2))
        self.pio.register(vbe.DISPI_PORT_BASE, vbe.DISPI_PORT_LENGTH, self.vga.dispi, "dispi", sizes=(1, 2))
        self.debug = bytearray()
        self.pci_address = 0
        self.config = bytearray(256)
        self.config[0:6] = struct.pack("<HHH", 0x1234, 0x1111, 0x0003)
        self.config[8:12] = struct.pack("<I", 0x03000002)
        self.config[0x10:0x14] = struct.pack("<I", LFB | 0x8)
        uc = self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
        uc.mem_map(0, 0xA0000, unicorn.UC_PROT_ALL)
        uc.mem_map(0xC0000, 0x40000, unicorn.UC_PROT_ALL)
        uc.mem_write(0xC0000, rom)
        uc.mmio_map(0xA0000, 0x20000, self._window_read, None, self._window_write, None)
        uc.mmio_map(LFB, self.vga.vram_size, self._lfb_read, None, self._lfb_write, None)
        uc.mem_write(STUB, b"\xcf")
        uc.mem_write(0, struct.pack("<HH", STUB & 0xFFFF, STUB >> 4) * 256)
        uc.mem_write(0x40E, struct.pack("<H", 0x9FC0))  # EBDA segment
        uc.mem_write(0x413, struct.pack("<H", 639))  # KiB of base memory
        uc.hook_add(unicorn.UC_HOOK_INTR, self._interrupt)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)

    # -- the machine's side -------------------------------------------------------------------
    def _window_read(self, uc: object, offset: int, size: int, _: object) -> int:
        return self.vga.memory.read(offset, size)

    def _window_write(self, uc: object, offset: int, size: int, value: int, _: object) -> None:
        self.vga.memory.write(offset, size, value)

    def _lfb_read(self, uc: object, offset: int, size: int, _: object) -> int:
        return int.from_bytes(self.vga.vram[offset : offset + size], "little")

    def _lfb_write(self, uc: object, offset: int, size: int, value: int, _: object) -> None:
        self.vga.vram[offset : offset + size] = value.to_bytes(size, "little")

    def _in(self, uc: object, port: int, size: int, _: object) -> int:
        if port == 0xCF8:
            return self.pci_address
        if 0xCFC <= port <= 0xCFF:
            if self.pci_address & 0x80000000 and (self.pci_address >> 8) & 0xFFFF == VGA_BDF:
                off = (self.pci_address & 0xFC) + port - 0xCFC
                return int.from_bytes(self.config[off : off + size], "little")
            return (1 << (8 * size)) - 1
        if size == 4:
            return self.pio.read(port, 2) | (self.pio.read(port + 2, 2) << 16)
        return self.pio.read(port, size)

    def _out(self, uc: object, port: int, size: int, value: int, _: object) -> None:
        if port == 0xCF8:
            self.pci_address = value
        elif port == 0x402:
            self.debug.append(value & 0xFF)
        elif 0xCFC <= port <= 0xCFF:
            pass
        elif size == 4:
            self.pio.write(port, 2, value & 0xFFFF)
            self.pio.write(port + 2, 2, value >> 16)
        else:
            self.pio.write(port, size, value)

    def _interrupt(self, uc: object, vector: int, _: object) -> None:
        """unicorn leaves real-mode INT to the host: push FLAGS, CS, IP and jump via the IVT."""
        u = self.uc
        sp = (u.reg_read(X.UC_X86_REG_SP) - 6) & 0xFFFF
        flags = u.reg_read(X.UC_X86_REG_EFLAGS) & 0xFFFF
        frame = struct.pack("<HHH", u.reg_read(X.UC_X86_REG_IP), u.reg_read(X.UC_X86_REG_CS), flags)
        u.mem_write(u.reg_read(X.UC_X86_REG_SS) * 16 + sp, frame)
        u.reg_write(X.UC_X86_REG_SP, sp)
        u.reg_write(X.UC_X86_REG_EFLAGS, flags & ~0x300)
        offset, segment = struct.unpack("<HH", u.mem_read(vector * 4, 4))
        u.reg_write(X.UC_X86_REG_CS, segment)
        u.reg_write(X.UC_X86_REG_IP, offset)

    # -- the CPU's side -----------------------------------------------------------------------
    def run(self, code: bytes, **regs: int) -> dict[str, int]:
        u = self.uc
        u.mem_write(0x600, code + b"\x90")
        for seg in ("CS", "DS", "ES", "SS"):
            u.reg_write(getattr(X, f"UC_X86_REG_{seg}"), 0)
        u.reg_write(X.UC_X86_REG_SP, 0x7000)
        for name, value in regs.items():
            u.reg_write(getattr(X, f"UC_X86_REG_{name.upper()}"), value)
        u.emu_start(0x600, 0x600 + len(code), count=20_000_000)
        return {r: u.reg_read(getattr(X, f"UC_X86_REG_{r.upper()}")) for r in ("ax", "bx", "cx", "dx")}

    def int10(self, **regs: int) -> dict[str, int]:
        return self.run(b"\xcd\x10", **regs)

    def tty(self, text: str, attr: int = 0x07) -> None:
        for ch in text:
            self.int10(ax=0x0E00 | ord(ch), bx=attr)


@pytest.fixture(scope="module")
def rom() -> bytes:
    return find_rom()


@pytest.fixture
def pc(rom: bytes) -> Iterator[RealModePc]:
    machine = RealModePc(rom)
    machine.run(b"\x9a\x03\x00\x00\xc0", ax=VGA_BDF)  # call far C000:0003, as SeaBIOS does
    machine.int10(ax=0x0003)  # SeaBIOS's enable_vga_console
    yield machine
    machine.vga.close()


def pixel(frame: tuple[int, int, bytes], x: int, y: int) -> bytes:
    width, _, rgb = frame
    return rgb[3 * (y * width + x) : 3 * (y * width + x) + 3]


def test_post_finds_the_dispi_interface_and_the_lfb(pc: RealModePc) -> None:
    log = pc.debug.decode(errors="replace")
    assert "VBE DISPI: lfb_addr=e0000000, size 16 MB" in log
    assert struct.unpack("<HH", pc.uc.mem_read(0x40, 4))[1] == 0xC000  # INT 10h is the ROM's


def test_text_mode_teletype_and_scrolling(pc: RealModePc) -> None:
    mode = pc.vga.display_mode()
    assert (mode.kind, mode.cols, mode.rows, mode.blank) == ("text", 80, 25, False)
    pc.tty("Hello from SeaVGABIOS\r\n")
    assert pc.vga.text_screen()[0].rstrip() == "Hello from SeaVGABIOS"
    assert pc.vga.cursor_position() == (0, 1)
    for n in range(30):
        pc.tty(f"line {n:02d}\r\n")
    screen = pc.vga.text_screen()
    assert screen[0].startswith("line 06") and screen[23].startswith("line 29") and screen[24].strip() == ""
    frame = pc.vga.render()
    assert frame[:2] == (720, 400) and any(frame[2])


def test_write_char_attribute_pages_and_8x8_font(pc: RealModePc) -> None:
    pc.int10(ax=0x0941, bx=0x004E, cx=5)  # five 'A', yellow on red
    assert pc.vga.text_screen()[0][:5] == "AAAAA" and pc.vga.text_attributes()[0][:5] == b"\x4e" * 5
    pc.int10(ax=0x0501)  # display page 1
    pc.tty("page one", attr=0x0107)
    assert pc.vga.text_screen()[0].startswith("page one")
    pc.int10(ax=0x0500)
    assert pc.vga.text_screen()[0].startswith("AAAAA")
    pc.int10(ax=0x1112, bx=0)  # 8x8 font: 80x50
    assert len(pc.vga.text_screen()) == 50


def test_mode_12h_pixels(pc: RealModePc) -> None:
    pc.int10(ax=0x0012)
    pc.int10(ax=0x0C0E, bx=0, cx=100, dx=50)  # write pixel, colour 14
    assert pc.int10(ax=0x0D00, bx=0, cx=100, dx=50)["ax"] & 0xFF == 0x0E  # read it back
    frame = pc.vga.render()
    assert frame[:2] == (640, 480)
    assert pixel(frame, 100, 50) == bytes((0xFF, 0xFF, 0x55)) and pixel(frame, 101, 50) == bytes(3)


def test_mode_13h_pixels(pc: RealModePc) -> None:
    pc.int10(ax=0x0013)
    pc.int10(ax=0x0C28, bx=0, cx=10, dx=20)  # colour 0x28 of the default 256-colour palette: red
    frame = pc.vga.render()
    assert frame[:2] == (320, 200) and pixel(frame, 10, 20) == bytes((0xFF, 0, 0))


def test_vbe_lfb_mode_1024x768x32(pc: RealModePc) -> None:
    u = pc.uc
    u.mem_write(0x2000, b"VBE2")
    assert pc.run(b"\xcd\x10", ax=0x4F00, di=0x2000)["ax"] == 0x004F
    info = bytes(u.mem_read(0x2000, 32))
    assert info[:4] == b"VESA" and struct.unpack("<H", info[18:20])[0] == 256  # 64 KiB blocks
    offset, segment = struct.unpack("<HH", info[14:18])
    modes = []
    addr = segment * 16 + offset
    while (mode := struct.unpack("<H", u.mem_read(addr, 2))[0]) != 0xFFFF and len(modes) < 256:
        modes.append(mode)
        addr += 2
    found = None
    for mode in modes:
        pc.run(b"\xcd\x10", ax=0x4F01, cx=mode, di=0x3000)
        mi = bytes(u.mem_read(0x3000, 64))
        if struct.unpack("<HH", mi[18:22]) + (mi[25],) == (1024, 768, 32):
            found = mode, struct.unpack("<I", mi[40:44])[0]
    assert found is not None and found[1] == LFB
    assert pc.int10(ax=0x4F02, bx=0x4000 | found[0])["ax"] == 0x004F
    mode_info = pc.vga.display_mode()
    assert (mode_info.kind, mode_info.width, mode_info.height, mode_info.bpp) == ("vbe", 1024, 768, 32)
    pc._lfb_write(None, (10 * 1024 + 20) * 4, 4, 0x00123456, None)  # a guest store into the LFB
    assert pixel(pc.vga.render(), 20, 10) == bytes((0x12, 0x34, 0x56))
    pc.int10(ax=0x0003)
    assert pc.vga.display_mode().kind == "text"
