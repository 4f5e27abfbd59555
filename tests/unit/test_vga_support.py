"""A std VGA on PIO and MMIO buses, and a tiny VGA BIOS that programs it the way SeaVGABIOS
(vgasrc/stdvga.c, stdvgaio.c, bochsvga.c) does. Shared by the test_vga_* modules.

The mode tables are the standard IBM VGA register values for modes 03h, 12h, 13h and 04h
(IBM VGA technical reference / FreeVGA); the order of the writes follows stdvga_set_mode.
"""

from __future__ import annotations

from collections.abc import Iterator

from kvmpy.devices.vga import (
    DISPI_PORT_BASE,
    DISPI_PORT_LENGTH,
    DISPI_PORT_SIZES,
    PORT_BASE,
    PORT_LENGTH,
    PORT_SIZES,
    WINDOW_BASE,
    WINDOW_LENGTH,
    WINDOW_SIZES,
    StdVga,
)
from kvmpy.hw.bus import MmioBus, PioBus

# Ports
ATTR = 0x3C0
ATTR_READ = 0x3C1
MISC_WRITE = 0x3C2
SEQ = 0x3C4
PEL_MASK = 0x3C6
DAC_READ_INDEX = 0x3C7
DAC_WRITE_INDEX = 0x3C8
DAC_DATA = 0x3C9
MISC_READ = 0x3CC
GC = 0x3CE
CRTC = 0x3D4
STATUS1 = 0x3DA
DISPI_INDEX = 0x1CE
DISPI_DATA = 0x1CF

#: (misc, sequencer 1-4, CRTC 0-0x18, attribute 0-0x13, graphics 0-8) per mode.
MODES = {
    0x03: (
        0x67,
        (0x00, 0x03, 0x00, 0x02),
        (0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x00,
         0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF),
        (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
         0x0C, 0x00, 0x0F, 0x08),
        (0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x0F, 0xFF),
    ),
    0x04: (
        0x63,
        (0x09, 0x03, 0x00, 0x02),
        (0x2D, 0x27, 0x28, 0x90, 0x2B, 0x80, 0xBF, 0x1F, 0x00, 0xC1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
         0x9C, 0x8E, 0x8F, 0x14, 0x00, 0x96, 0xB9, 0xA2, 0xFF),
        (0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
         0x01, 0x00, 0x03, 0x00),
        (0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0F, 0x0F, 0xFF),
    ),
    0x12: (
        0xE3,
        (0x01, 0x0F, 0x00, 0x06),
        (0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
         0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF),
        (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
         0x01, 0x00, 0x0F, 0x00),
        (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF),
    ),
    0x13: (
        0x63,
        (0x01, 0x0F, 0x00, 0x0E),
        (0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
         0x9C, 0x8E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF),
        (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
         0x41, 0x00, 0x0F, 0x00),
        (0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF),
    ),
}


def ega_palette() -> list[tuple[int, int, int]]:
    """The 64 EGA colours (rgbRGB: bits 2/1/0 add 2/3 intensity, bits 5/4/3 add 1/3)."""
    out = []
    for i in range(64):
        r = 0x2A * ((i >> 2) & 1) + 0x15 * ((i >> 5) & 1)
        g = 0x2A * ((i >> 1) & 1) + 0x15 * ((i >> 4) & 1)
        b = 0x2A * (i & 1) + 0x15 * ((i >> 3) & 1)
        out.append((r, g, b))
    return out


def c6(v: int) -> int:
    """A 6-bit DAC component as 8 bits, top bits repeated (what the renderer outputs)."""
    return (v << 2) | (v >> 4)


class Machine:
    """A VGA on a PC's buses, with the CPU's view: in/out and memory accesses."""

    def __init__(self) -> None:
        self.vga = StdVga()
        self.pio = PioBus()
        self.mem = MmioBus()
        self.pio.register(PORT_BASE, PORT_LENGTH, self.vga.ports, "vga", sizes=PORT_SIZES)
        self.pio.register(DISPI_PORT_BASE, DISPI_PORT_LENGTH, self.vga.dispi, "dispi", sizes=DISPI_PORT_SIZES)
        self.mem.register(WINDOW_BASE, WINDOW_LENGTH, self.vga.memory, "vga-window", sizes=WINDOW_SIZES)

    # CPU accesses
    def inb(self, port: int) -> int:
        return self.pio.read(port, 1)

    def inw(self, port: int) -> int:
        return self.pio.read(port, 2)

    def outb(self, value: int, port: int) -> None:
        self.pio.write(port, 1, value)

    def outw(self, value: int, port: int) -> None:
        self.pio.write(port, 2, value)

    def readb(self, addr: int) -> int:
        return self.mem.read(addr, 1)

    def writeb(self, addr: int, value: int) -> None:
        self.mem.write(addr, 1, value)

    def writew(self, addr: int, value: int) -> None:
        self.mem.write(addr, 2, value)

    def memset16(self, addr: int, value: int, count: int) -> None:
        for i in range(count):
            self.writew(addr + 2 * i, value)

    # SeaVGABIOS's register helpers
    def sequ_write(self, index: int, value: int) -> None:
        self.outw((value << 8) | index, SEQ)

    def grdc_write(self, index: int, value: int) -> None:
        self.outw((value << 8) | index, GC)

    def crtc_write(self, index: int, value: int) -> None:
        self.outw((value << 8) | index, CRTC)

    def crtc_read(self, index: int) -> int:
        self.outb(index, CRTC)
        return self.inb(CRTC + 1)

    def attr_write(self, index: int, value: int) -> None:
        self.inb(STATUS1)
        orig = self.inb(ATTR)
        self.outb(index, ATTR)
        self.outb(value, ATTR)
        self.outb(orig, ATTR)

    def attr_read(self, index: int) -> int:
        self.inb(STATUS1)
        orig = self.inb(ATTR)
        self.outb(index, ATTR)
        value = self.inb(ATTR_READ)
        self.inb(STATUS1)
        self.outb(orig, ATTR)
        return value

    def attrindex_write(self, value: int) -> None:
        self.inb(STATUS1)
        self.outb(value, ATTR)

    def dac_write(self, start: int, colours: list[tuple[int, int, int]]) -> None:
        self.outb(start, DAC_WRITE_INDEX)
        for r, g, b in colours:
            self.outb(r, DAC_DATA)
            self.outb(g, DAC_DATA)
            self.outb(b, DAC_DATA)

    def planar4_plane(self, plane: int) -> None:
        """stdvga_planar4_plane: select one plane for reads and writes, -1 for all."""
        if plane < 0:
            self.sequ_write(0x02, 0x0F)
            self.grdc_write(0x04, 0)
        else:
            self.sequ_write(0x02, 1 << plane)
            self.grdc_write(0x04, plane)

    def dispi_write(self, index: int, value: int) -> None:
        self.outw(index, DISPI_INDEX)
        self.outw(value, DISPI_DATA)

    def dispi_read(self, index: int) -> int:
        self.outw(index, DISPI_INDEX)
        return self.inw(DISPI_DATA)

    # BIOS operations
    def stdvga_init(self) -> None:
        self.outb(0xC3, MISC_WRITE)  # colour addressing, RAM enabled
        self.sequ_write(0x04, 0x02)

    def set_mode(self, mode: int, palette: list[tuple[int, int, int]] | None = None) -> None:
        """stdvga_set_mode: palette, attribute, sequencer, graphics, CRTC, misc, enable."""
        misc, sequ, crtc, actl, grdc = MODES[mode]
        self.outb(0xFF, PEL_MASK)
        pal = palette if palette is not None else ega_palette()
        self.dac_write(0, pal + [(0, 0, 0)] * (256 - len(pal)))
        for i, v in enumerate(actl):
            self.attr_write(i, v)
        self.attr_write(0x14, 0x00)
        self.sequ_write(0x00, 0x03)
        for i, v in enumerate(sequ, start=1):
            self.sequ_write(i, v)
        for i, v in enumerate(grdc):
            self.grdc_write(i, v)
        crtc_port = CRTC if misc & 1 else 0x3B4
        self.outw(0x0011, crtc_port)  # drop the CR0-7 write protection
        for i, v in enumerate(crtc):
            self.outw((v << 8) | i, crtc_port)
        self.outb(misc, MISC_WRITE)
        self.attrindex_write(0x20)  # enable video

    def load_font(self, glyphs: dict[int, bytes], height: int = 16, block: int = 0) -> None:
        """stdvga_load_font: open plane 2 for sequential writes, copy glyphs, restore."""
        self.outw(0x0100, SEQ)
        self.outw(0x0402, SEQ)
        self.outw(0x0704, SEQ)
        self.outw(0x0300, SEQ)
        self.outw(0x0204, GC)
        self.outw(0x0005, GC)
        self.outw(0x0406, GC)
        base = 0xA0000 + ((block & 3) << 14) + ((block & 4) << 11)
        for ch, rows in glyphs.items():
            for i in range(height):
                self.writeb(base + ch * 32 + i, rows[i] if i < len(rows) else 0)
        self.outw(0x0100, SEQ)
        self.outw(0x0302, SEQ)
        self.outw(0x0304, SEQ)
        self.outw(0x0300, SEQ)
        v = 0x0E if self.inb(MISC_READ) & 1 else 0x0A
        self.outw((v << 8) | 0x06, GC)
        self.outw(0x0004, GC)
        self.outw(0x1005, GC)

    def bochs_set_mode(
        self, width: int, height: int, bpp: int, lfb: bool = True, noclear: bool = False
    ) -> None:
        """bochsvga_set_mode for a packed/direct mode."""
        self.dispi_write(0x4, 0x00)
        self.dispi_write(0x3, bpp)
        self.dispi_write(0x1, width)
        self.dispi_write(0x2, height)
        self.dispi_write(0x5, 0)
        self.dispi_write(0x4, 0x01 | (0x40 if lfb else 0) | (0x80 if noclear else 0))
        # VGA compatibility set-up
        self.crtc_write(0x11, 0x00)
        self.crtc_write(0x01, width // 8 - 1)
        self.crtc_write(0x12, (height - 1) & 0xFF)
        self.crtc_write(0x09, 0x00)
        self.grdc_write(0x06, 0x05)
        self.sequ_write(0x02, 0x0F)
        self.attrindex_write(0x20)

    def close(self) -> None:
        self.vga.close()


def booted() -> Iterator[Machine]:
    """For the test modules' ``m`` fixture: a machine after the VGA BIOS's init, closed after."""
    machine = Machine()
    machine.stdvga_init()
    yield machine
    machine.close()


def text_mode(m: Machine) -> None:
    m.set_mode(0x03)
    m.memset16(0xB8000, 0x0720, 80 * 25)  # clear_screen: grey-on-black spaces


def put_text(m: Machine, row: int, col: int, text: str, attr: int = 0x07) -> None:
    for i, ch in enumerate(text.encode("cp437")):
        m.writew(0xB8000 + 2 * (row * 80 + col + i), (attr << 8) | ch)
