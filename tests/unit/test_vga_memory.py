"""The 0xA0000-0xBFFFF window: odd/even text, font loading, planar write/read modes with the
latches, chain-4, and the memory map select windows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_vga_support import Machine, booted, text_mode

from kvmpy.devices.vga.memory import WINDOW_BASE, WINDOW_LENGTH, VgaMemory


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def plane(m: Machine, p: int, offset: int) -> int:
    """Plane ``p`` byte ``offset`` (planes are interleaved in VRAM)."""
    return m.vga.vram[4 * offset + p]


def test_registration_constants() -> None:
    assert (WINDOW_BASE, WINDOW_LENGTH) == (0xA0000, 0x20000)
    assert VgaMemory.SIZES == (1, 2, 4, 8)


# --- text mode: odd/even ---------------------------------------------------------------------
def test_text_cells_go_to_planes_0_and_1(m: Machine) -> None:
    text_mode(m)
    m.writew(0xB8000 + 2 * 5, 0x1F41)  # 'A' white on blue in cell 5
    assert plane(m, 0, 5) == 0x41 and plane(m, 1, 5) == 0x1F
    assert plane(m, 2, 5) == 0 and plane(m, 3, 5) == 0  # SR02 = 3: planes 2/3 untouched
    assert m.readb(0xB8000 + 10) == 0x41 and m.readb(0xB8000 + 11) == 0x1F
    assert m.mem.read(0xB8000 + 10, 2) == 0x1F41
    m.mem.write(0xB8000 + 12, 4, 0x4E424E42)  # two cells in one dword write
    assert [plane(m, 0, 6), plane(m, 1, 6), plane(m, 0, 7), plane(m, 1, 7)] == [0x42, 0x4E, 0x42, 0x4E]


def test_text_mode_window_is_b8000_only(m: Machine) -> None:
    text_mode(m)
    assert m.readb(0xA0000) == 0xFF and m.readb(0xB0000) == 0xFF  # outside map 3: floating bus
    m.writeb(0xA0000, 0x55)  # dropped
    assert m.vga.vram[0] == 0x20  # still the cleared screen's space
    m.writeb(0xBFFFF, 0x33)  # last attribute byte of the 32 KiB window
    assert plane(m, 1, 0x3FFF) == 0x33


def test_font_loading_reaches_plane_2_and_restores_text_access(m: Machine) -> None:
    text_mode(m)
    glyph = bytes(range(1, 17))
    m.load_font({0x41: glyph})
    assert bytes(plane(m, 2, 0x41 * 32 + i) for i in range(16)) == glyph
    assert plane(m, 0, 0x41 * 32) != 1 or plane(m, 1, 0x41 * 32) != 2  # only plane 2 was written
    m.load_font({0x42: b"\xff" * 16}, block=5)  # map 5: 16 KiB + 8 KiB
    assert plane(m, 2, 0x6000 + 0x42 * 32) == 0xFF
    m.writew(0xB8000, 0x0748)  # text access is back: odd/even at B8000
    assert plane(m, 0, 0) == 0x48 and plane(m, 1, 0) == 0x07


# --- planar: mode 12h ------------------------------------------------------------------------
def test_map_mask_selects_planes(m: Machine) -> None:
    m.set_mode(0x12)
    m.planar4_plane(2)
    m.writeb(0xA0000 + 10, 0xA5)
    m.planar4_plane(-1)
    assert [plane(m, p, 10) for p in range(4)] == [0, 0, 0xA5, 0]
    m.writeb(0xA0000 + 11, 0x3C)  # all planes
    assert [plane(m, p, 11) for p in range(4)] == [0x3C] * 4


def test_read_mode_0_loads_latches_and_reads_one_plane(m: Machine) -> None:
    m.set_mode(0x12)
    for p, v in enumerate((0x11, 0x22, 0x44, 0x88)):
        m.planar4_plane(p)
        m.writeb(0xA0000, v)
    for p, v in enumerate((0x11, 0x22, 0x44, 0x88)):
        m.grdc_write(0x04, p)
        assert m.readb(0xA0000) == v
    assert m.vga.state.latch == 0x88442211


def test_write_mode_0_set_reset_and_bit_mask(m: Machine) -> None:
    m.set_mode(0x12)
    m.grdc_write(0x00, 0x05)  # set/reset colour 5 (planes 0 and 2)
    m.grdc_write(0x01, 0x0F)  # enabled for all planes: the host byte is ignored
    m.grdc_write(0x08, 0xF0)  # only the left four pixels
    m.readb(0xA0000)  # load the latches (all zero)
    m.writeb(0xA0000, 0x00)
    assert [plane(m, p, 0) for p in range(4)] == [0xF0, 0x00, 0xF0, 0x00]
    # Bits outside the mask come from the latches: fill first, then read, then overwrite.
    m.grdc_write(0x01, 0x00)
    m.grdc_write(0x08, 0xFF)
    m.writeb(0xA0000 + 1, 0xFF)  # all planes 0xFF
    m.readb(0xA0000 + 1)
    m.grdc_write(0x01, 0x0F)
    m.grdc_write(0x00, 0x00)
    m.grdc_write(0x08, 0x0F)
    m.writeb(0xA0000 + 1, 0x00)
    assert [plane(m, p, 1) for p in range(4)] == [0xF0] * 4


def test_write_mode_0_rotate_and_logical_functions(m: Machine) -> None:
    m.set_mode(0x12)
    m.writeb(0xA0000, 0x0F)  # all planes 0x0F (mode 0 defaults)
    m.readb(0xA0000)  # latches = 0x0F in every plane
    cases = {0x00: 0xF0, 0x08: 0x00, 0x10: 0xFF, 0x18: 0xFF}  # none, AND, OR, XOR
    for func, expect in cases.items():
        m.grdc_write(0x03, func)
        m.writeb(0xA0000 + 1, 0xF0)
        assert plane(m, 0, 1) == expect, hex(func)
    m.grdc_write(0x03, 0x04)  # rotate right by 4, no function
    m.writeb(0xA0000 + 2, 0x12)
    assert plane(m, 3, 2) == 0x21


def test_write_mode_1_copies_latches(m: Machine) -> None:
    m.set_mode(0x12)
    for p, v in enumerate((0x01, 0x02, 0x04, 0x08)):
        m.planar4_plane(p)
        m.writeb(0xA0000 + 100, v)
    m.planar4_plane(-1)
    m.grdc_write(0x05, 0x01)
    m.readb(0xA0000 + 100)
    m.writeb(0xA0000 + 200, 0xEE)  # the data is ignored
    assert [plane(m, p, 200) for p in range(4)] == [0x01, 0x02, 0x04, 0x08]


def test_write_mode_2_spreads_colour_over_planes(m: Machine) -> None:
    m.set_mode(0x12)
    m.grdc_write(0x05, 0x02)
    m.grdc_write(0x08, 0x81)
    m.readb(0xA0000)
    m.writeb(0xA0000, 0x0A)  # colour 10: planes 1 and 3
    assert [plane(m, p, 0) for p in range(4)] == [0x00, 0x81, 0x00, 0x81]


def test_write_mode_3_uses_data_as_bit_mask(m: Machine) -> None:
    m.set_mode(0x12)
    m.grdc_write(0x05, 0x03)
    m.grdc_write(0x00, 0x0C)  # colour 12: planes 2 and 3
    m.grdc_write(0x08, 0x3C)
    m.readb(0xA0000)
    m.writeb(0xA0000, 0x0F)  # mask = 0x0F & 0x3C = 0x0C
    assert [plane(m, p, 0) for p in range(4)] == [0x00, 0x00, 0x0C, 0x0C]


def test_read_mode_1_colour_compare(m: Machine) -> None:
    m.set_mode(0x12)
    # Pixels 0-3 colour 9 (planes 0 and 3), pixels 4-7 colour 1.
    m.grdc_write(0x05, 0x02)
    m.grdc_write(0x08, 0xF0)
    m.readb(0xA0000)
    m.writeb(0xA0000, 0x09)
    m.grdc_write(0x08, 0x0F)
    m.readb(0xA0000)  # reload the latches, or the masked-off half would be written back as 0
    m.writeb(0xA0000, 0x01)
    m.grdc_write(0x05, 0x08)  # read mode 1
    m.grdc_write(0x02, 0x09)
    m.grdc_write(0x07, 0x0F)
    assert m.readb(0xA0000) == 0xF0
    m.grdc_write(0x07, 0x07)  # plane 3 "don't care": both colours match 1 in planes 0-2
    m.grdc_write(0x02, 0x01)
    assert m.readb(0xA0000) == 0xFF


# --- chain-4: mode 13h -----------------------------------------------------------------------
def test_chain4_is_linear_vram(m: Machine) -> None:
    m.set_mode(0x13)
    m.writeb(0xA0000 + 321, 0x2C)
    assert m.vga.vram[321] == 0x2C
    assert plane(m, 1, 80) == 0x2C  # i.e. plane 1, offset 80
    m.mem.write(0xA0000 + 1000, 8, 0x0807060504030201)
    assert bytes(m.vga.vram[1000:1008]) == bytes(range(1, 9))
    assert m.mem.read(0xA0000 + 1000, 4) == 0x04030201
    assert m.readb(0xB0000) == 0xFF  # map 1: 64 KiB at A0000


def test_chain4_with_a_partial_map_mask(m: Machine) -> None:
    m.set_mode(0x13)
    m.sequ_write(0x02, 0x05)  # planes 0 and 2
    m.mem.write(0xA0000, 4, 0x44332211)
    assert bytes(m.vga.vram[0:4]) == bytes((0x11, 0, 0x33, 0))
    assert m.vga.memory.direct_window() is None
    m.sequ_write(0x02, 0x0F)
    assert m.vga.memory.direct_window() == (0, 0x10000, 0)


def test_direct_window_notification(m: Machine) -> None:
    seen = []
    m.vga.memory.on_direct_window = seen.append
    m.set_mode(0x13)
    assert seen[-1] == (0, 0x10000, 0)  # A0000-AFFFF is VRAM 0-64K: mappable as memory
    m.set_mode(0x12)
    assert seen[-1] is None

def test_unchained_256_colour_mode_x(m: Machine) -> None:
    m.set_mode(0x13)
    m.sequ_write(0x04, 0x06)  # chain-4 off
    m.sequ_write(0x02, 0x02)  # plane 1
    m.writeb(0xA0000 + 7, 0x99)
    assert m.vga.vram[4 * 7 + 1] == 0x99  # pixel 29 of the linear picture


# --- memory map select -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("select", "inside", "outside"),
    [
        (0, (0xA0000, 0xBFFFF), ()),
        (1, (0xA0000, 0xAFFFF), (0xB0000,)),
        (2, (0xB0000, 0xB7FFF), (0xAFFFF, 0xB8000)),
        (3, (0xB8000, 0xBFFFF), (0xA0000, 0xB7FFF)),
    ],
)
def test_memory_map_select(
    m: Machine, select: int, inside: tuple[int, ...], outside: tuple[int, ...]
) -> None:
    m.set_mode(0x12)
    m.grdc_write(0x06, 0x01 | (select << 2))
    for addr in inside:
        m.writeb(addr, 0x5A)
        assert m.readb(addr) == 0x5A, hex(addr)
    for addr in outside:
        m.writeb(addr, 0x5A)
        assert m.readb(addr) == 0xFF, hex(addr)


def test_128k_map_reaches_second_half(m: Machine) -> None:
    m.set_mode(0x13)
    m.grdc_write(0x06, 0x01)  # A0000 128K with chain-4
    m.writeb(0xB0005, 0x77)
    assert m.vga.vram[0x10005] == 0x77


@pytest.mark.parametrize("map_mask", [0x03, 0x0F, 0x01, 0x02])
def test_wide_text_writes_equal_byte_writes(m: Machine, map_mask: int) -> None:
    """Words and dwords take a shortcut in text mode; it must store what byte writes store."""
    text_mode(m)
    m.sequ_write(0x02, map_mask)
    m.mem.write(0xB8000 + 0x100, 4, 0x1E431F42)
    m.mem.write(0xB8000 + 0x104, 2, 0x4F44)
    wide = bytes(m.vga.vram[0x200:0x218])
    for i in range(6):
        m.writeb(0xB8000 + 0x100 + i, 0)
    for i, b in enumerate((0x42, 0x1F, 0x43, 0x1E, 0x44, 0x4F)):
        m.writeb(0xB8000 + 0x100 + i, b)
    assert bytes(m.vga.vram[0x200:0x218]) == wide
    before = m.readb(0xB8000 + 0x101), m.readb(0xB8000 + 0x102)
    m.mem.write(0xB8000 + 0x101, 2, 0x1234)  # unaligned: byte by byte, attribute then character
    assert m.readb(0xB8000 + 0x101) == (0x34 if map_mask & 2 else before[0])
    assert m.readb(0xB8000 + 0x102) == (0x12 if map_mask & 1 else before[1])
