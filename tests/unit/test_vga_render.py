"""What the screen shows: text decoding, and pixels for text, planar, CGA, 256-colour and VBE
modes, each programmed the way the VGA BIOS programs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_vga_support import Machine, booted, c6, ega_palette, put_text, text_mode

from kvmpy.devices.vga import vbe


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def pixel(frame: tuple[int, int, bytes], x: int, y: int) -> tuple[int, int, int]:
    width, height, rgb = frame
    assert 0 <= x < width and 0 <= y < height
    i = 3 * (y * width + x)
    return rgb[i], rgb[i + 1], rgb[i + 2]


def ega(index: int) -> tuple[int, int, int]:
    r, g, b = ega_palette()[index]
    return c6(r), c6(g), c6(b)


# --- text --------------------------------------------------------------------------------------
def test_text_screen_mode_3(m: Machine) -> None:
    text_mode(m)
    put_text(m, 0, 0, "SeaBIOS (version 1.16.2)")
    put_text(m, 24, 77, "end", attr=0x1E)
    screen = m.vga.text_screen()
    assert len(screen) == 25 and all(len(row) == 80 for row in screen)
    assert screen[0].rstrip() == "SeaBIOS (version 1.16.2)"
    assert screen[24].endswith("end")
    assert screen[10] == " " * 80
    attrs = m.vga.text_attributes()
    assert attrs[24][77:] == b"\x1e\x1e\x1e" and attrs[0][0] == 0x07
    mode = m.vga.display_mode()
    assert (mode.kind, mode.cols, mode.rows, mode.width, mode.height) == ("text", 80, 25, 720, 400)


def test_cp437_decoding(m: Machine) -> None:
    text_mode(m)
    for i, byte in enumerate((0xC9, 0xCD, 0xBB, 0x01, 0x03, 0x00, 0xE1, 0xB0, 0x7F, 0x82)):
        m.writew(0xB8000 + 2 * i, 0x0700 | byte)
    assert m.vga.text_screen()[0][:10] == "╔═╗☺♥ ß░⌂é"


def test_text_follows_start_address_and_line_offset(m: Machine) -> None:
    text_mode(m)
    m.memset16(0xB8000 + 0x1000, 0x0720, 80 * 25)
    put_text(m, 0, 0, "page one")
    for i, ch in enumerate(b"second page"):
        m.writew(0xB8000 + 0x1000 + 2 * i, 0x0700 | ch)
    m.crtc_write(0x0C, 0x08)  # start address 0x800 cells = 4 KiB: page 1, as int 10h AH=05h
    m.crtc_write(0x0D, 0x00)
    assert m.vga.text_screen()[0].startswith("second page")
    m.crtc_write(0x0C, 0x00)
    m.crtc_write(0x09, 0x47)  # 8-line characters: 400 / 8 = 50 rows
    assert len(m.vga.text_screen()) == 50
    m.crtc_write(0x09, 0x4F)
    m.crtc_write(0x13, 0x30)  # 96-column virtual lines: row 1 starts at cell 96
    put_text(m, 0, 96, "X")  # cell 96: the start of row 1 in 96-column lines
    assert m.vga.text_screen()[1][0] == "X"


def test_graphics_modes_have_no_text(m: Machine) -> None:
    m.set_mode(0x12)
    assert m.vga.text_screen() == [] and m.vga.text_attributes() == []
    assert m.vga.cursor_position() is None


def glyph_font(m: Machine) -> None:
    m.load_font(
        {
            0x41: bytes([0xFF] + [0x81] * 14 + [0xFF]),  # a box
            0xC4: bytes([0x00] * 7 + [0xFF, 0xFF] + [0x00] * 7),  # line graphics: a horizontal bar
            0x20: bytes(16),
        }
    )


def test_text_render_uses_font_in_plane_2_and_attributes(m: Machine) -> None:
    text_mode(m)
    glyph_font(m)
    m.writew(0xB8000, 0x1E41)  # 'A' (box) yellow on blue
    m.writew(0xB8002, 0x1EC4)  # a line-graphics character
    frame = m.vga.render()
    assert frame[:2] == (720, 400)
    yellow, blue = ega(0x3E), ega(0x01)  # attribute palette: 14 -> 0x3E, 1 -> 0x01
    assert yellow == (0xFF, 0xFF, 0x55) and blue == (0, 0, 0xAA)
    assert [pixel(frame, x, 0) for x in range(8)] == [yellow] * 8
    assert pixel(frame, 8, 0) == blue  # the 9th column of an ordinary character is background
    assert pixel(frame, 0, 1) == yellow and pixel(frame, 1, 1) == blue and pixel(frame, 7, 1) == yellow
    assert pixel(frame, 9 + 8, 7) == yellow  # C4h repeats its 8th column (AR10 line graphics)
    assert pixel(frame, 9 + 8, 6) == blue
    assert pixel(frame, 30, 0) == ega(0x00)  # a cleared cell: space, grey on black


def test_blink_bit_limits_background_to_8_colours(m: Machine) -> None:
    text_mode(m)
    glyph_font(m)
    m.writew(0xB8000, 0x9E20)  # blink + blue background
    assert pixel(m.vga.render(), 4, 4) == ega(0x01)
    m.attr_write(0x10, 0x04)  # blink off: bit 7 is background intensity
    assert pixel(m.vga.render(), 4, 4) == ega(0x39)  # attribute palette entry 9


def test_cursor(m: Machine) -> None:
    text_mode(m)
    glyph_font(m)
    m.writew(0xB8002, 0x1F20)  # cell 1: white on blue space
    m.crtc_write(0x0A, 0x0D)
    m.crtc_write(0x0B, 0x0E)
    m.crtc_write(0x0E, 0x00)
    m.crtc_write(0x0F, 0x01)
    assert m.vga.cursor_position() == (1, 0)
    white = ega(0x3F)
    plain, with_cursor = m.vga.render(), m.vga.render(cursor=True)
    assert pixel(plain, 9 + 3, 13) == ega(0x01)
    assert pixel(with_cursor, 9 + 3, 13) == white and pixel(with_cursor, 9 + 3, 14) == white
    assert pixel(with_cursor, 9 + 3, 12) == ega(0x01) and pixel(with_cursor, 9 + 3, 15) == ega(0x01)
    m.crtc_write(0x0A, 0x2D)  # cursor off
    assert m.vga.cursor_position() is None
    assert m.vga.render(cursor=True) == plain


# --- planar 16 colours: mode 12h --------------------------------------------------------------
def memset_planar(m: Machine, x: int, y: int, w: int, h: int, colour: int) -> None:
    """SeaVGABIOS gfx_planar GO_MEMSET: one plane at a time, 0xFF where the colour has it."""
    for p in range(4):
        m.planar4_plane(p)
        data = 0xFF if colour & (1 << p) else 0x00
        for row in range(y, y + h):
            for col in range(x // 8, (x + w) // 8):
                m.writeb(0xA0000 + row * 80 + col, data)
    m.planar4_plane(-1)


def test_mode_12h_rectangle(m: Machine) -> None:
    m.set_mode(0x12)
    memset_planar(m, 64, 100, 32, 20, 14)  # yellow
    frame = m.vga.render()
    assert frame[:2] == (640, 480)
    mode = m.vga.display_mode()
    assert (mode.kind, mode.bpp) == ("planar", 4)
    yellow = ega(0x3E)
    assert pixel(frame, 64, 100) == yellow and pixel(frame, 95, 119) == yellow
    assert pixel(frame, 63, 100) == (0, 0, 0) and pixel(frame, 96, 100) == (0, 0, 0)
    assert pixel(frame, 64, 99) == (0, 0, 0) and pixel(frame, 64, 120) == (0, 0, 0)
    count = sum(1 for i in range(0, len(frame[2]), 3) if frame[2][i : i + 3] == bytes(yellow))
    assert count == 32 * 20


def test_mode_12h_single_pixels_with_write_mode_2(m: Machine) -> None:
    m.set_mode(0x12)
    m.grdc_write(0x05, 0x02)
    for x, colour in ((0, 1), (1, 2), (7, 4), (8, 15)):
        m.grdc_write(0x08, 0x80 >> (x & 7))
        m.readb(0xA0000 + x // 8)
        m.writeb(0xA0000 + x // 8, colour)
    frame = m.vga.render()
    assert [pixel(frame, x, 0) for x in (0, 1, 7, 8)] == [ega(1), ega(2), ega(4), ega(0x3F)]


def test_colour_plane_enable_masks_planes(m: Machine) -> None:
    m.set_mode(0x12)
    memset_planar(m, 0, 0, 8, 1, 14)
    m.attr_write(0x12, 0x03)  # planes 0 and 1 only: 14 -> 2
    assert pixel(m.vga.render(), 0, 0) == ega(0x02)


def test_palette_registers_and_dac_choose_colours(m: Machine) -> None:
    m.set_mode(0x12)
    memset_planar(m, 0, 0, 8, 1, 5)
    m.attr_write(0x05, 0x30)  # colour 5 -> DAC entry 0x30
    m.dac_write(0x30, [(0x3F, 0x20, 0x00)])
    assert pixel(m.vga.render(), 0, 0) == (0xFF, c6(0x20), 0x00)
    m.attr_write(0x10, 0x81)  # P5/P4 from the colour select register
    m.attr_write(0x14, 0x01)  # DAC entry 0x10 | (0x30 & 0x0F)
    m.dac_write(0x10, [(0, 0, 0x3F)])
    assert pixel(m.vga.render(), 0, 0) == (0, 0, 0xFF)


# --- CGA 4 colours: mode 04h ------------------------------------------------------------------
def test_mode_04h_cga_interleave(m: Machine) -> None:
    m.set_mode(0x04)
    m.writeb(0xB8000, 0b11_10_01_00)  # even row 0: pixels 0-3 colours 3, 2, 1, 0
    m.writeb(0xB8001, 0b01_01_01_01)  # pixels 4-7 colour 1
    m.writeb(0xB8000 + 0x2000, 0b11_00_00_00)  # row 1 comes from the odd bank
    frame = m.vga.render()
    assert frame[:2] == (320, 200)
    ar = (0x00, 0x13, 0x15, 0x17)
    assert [pixel(frame, x, 0) for x in range(8)] == [ega(ar[c]) for c in (3, 2, 1, 0, 1, 1, 1, 1)]
    assert pixel(frame, 0, 1) == ega(ar[3]) and pixel(frame, 1, 1) == ega(0)


# --- 256 colours: mode 13h --------------------------------------------------------------------
def test_mode_13h_rectangle_through_the_dac(m: Machine) -> None:
    m.set_mode(0x13)
    m.dac_write(0x20, [(0x3F, 0x00, 0x20)])
    for y in range(5, 15):
        for x in range(10, 30):
            m.writeb(0xA0000 + y * 320 + x, 0x20)
    frame = m.vga.render()
    assert frame[:2] == (320, 200)
    colour = (0xFF, 0x00, c6(0x20))
    assert pixel(frame, 10, 5) == colour and pixel(frame, 29, 14) == colour
    assert pixel(frame, 9, 5) == (0, 0, 0) and pixel(frame, 30, 14) == (0, 0, 0)
    assert pixel(frame, 10, 15) == (0, 0, 0)
    m.crtc_write(0x0C, 0x00)
    m.crtc_write(0x0D, 80)  # start one line (320 bytes = 80 words) further down
    assert pixel(m.vga.render(), 10, 4) == colour


def test_pel_mask_applies_to_256_colour_pixels(m: Machine) -> None:
    m.set_mode(0x13)
    m.dac_write(0x02, [(0x3F, 0x3F, 0x3F)])
    m.writeb(0xA0000, 0x12)
    m.outb(0x0F, 0x3C6)
    assert pixel(m.vga.render(), 0, 0) == (0xFF, 0xFF, 0xFF)


# --- VBE ---------------------------------------------------------------------------------------
def test_vbe_1024x768x32_rectangle_through_the_lfb(m: Machine) -> None:
    m.bochs_set_mode(1024, 768, 32)
    vram = m.vga.vram
    line = m.vga.state.vbe_line_offset
    for y in range(50, 100):
        vram[y * line + 100 * 4 : y * line + 200 * 4] = bytes((0x40, 0x80, 0xFF, 0x00)) * 100
    frame = m.vga.render()
    assert frame[:2] == (1024, 768)
    assert pixel(frame, 100, 50) == (0xFF, 0x80, 0x40) and pixel(frame, 199, 99) == (0xFF, 0x80, 0x40)
    assert pixel(frame, 99, 50) == (0, 0, 0) and pixel(frame, 100, 100) == (0, 0, 0)
    m.dispi_write(vbe.INDEX_Y_OFFSET, 50)  # pan: the rectangle moves to the top
    m.dispi_write(vbe.INDEX_X_OFFSET, 100)
    assert pixel(m.vga.render(), 0, 0) == (0xFF, 0x80, 0x40)


@pytest.mark.parametrize(
    ("bpp", "raw", "rgb"),
    [
        (16, (0xF800).to_bytes(2, "little"), (0xFF, 0, 0)),
        (16, (0x07E0).to_bytes(2, "little"), (0, 0xFF, 0)),
        (16, (0x001F).to_bytes(2, "little"), (0, 0, 0xFF)),
        (16, (0x8410).to_bytes(2, "little"), (0x84, 0x82, 0x84)),
        (15, (0x7C00).to_bytes(2, "little"), (0xFF, 0, 0)),
        (15, (0x03E0).to_bytes(2, "little"), (0, 0xFF, 0)),
        (15, (0x001F).to_bytes(2, "little"), (0, 0, 0xFF)),
        (24, bytes((0x01, 0x02, 0x03)), (0x03, 0x02, 0x01)),
        (32, bytes((0x01, 0x02, 0x03, 0xEE)), (0x03, 0x02, 0x01)),
    ],
)
def test_vbe_direct_colour_formats(m: Machine, bpp: int, raw: bytes, rgb: tuple[int, int, int]) -> None:
    m.bochs_set_mode(640, 480, bpp)
    line = m.vga.state.vbe_line_offset
    size = len(raw)
    m.vga.vram[line * 2 + 3 * size : line * 2 + 4 * size] = raw
    frame = m.vga.render()
    assert frame[:2] == (640, 480)
    assert pixel(frame, 3, 2) == rgb
    assert pixel(frame, 2, 2) == (0, 0, 0)


def test_vbe_8bpp_banked_writes_through_the_dac(m: Machine) -> None:
    m.bochs_set_mode(800, 600, 8, lfb=False)
    m.dac_write(7, [(0x00, 0x3F, 0x00)])
    m.dispi_write(vbe.INDEX_BANK, 1)  # bank 1 = bytes 64K..128K = line 81 from x = 736
    m.writeb(0xA0000, 7)
    frame = m.vga.render()
    assert pixel(frame, 0x10000 % 800, 0x10000 // 800) == (0, 0xFF, 0)


def test_vbe_virtual_width(m: Machine) -> None:
    m.bochs_set_mode(640, 480, 32)
    m.dispi_write(vbe.INDEX_VIRT_WIDTH, 1024)
    m.vga.vram[4096 + 4 * 5 : 4096 + 4 * 6] = bytes((0, 0, 0xFF, 0))  # row 1 of 1024-pixel lines
    assert pixel(m.vga.render(), 5, 1) == (0xFF, 0, 0)


def test_power_on_and_blank_screens_render_black(m: Machine) -> None:
    w, h, rgb = m.vga.render()
    assert len(rgb) == 3 * w * h and not any(rgb)
    m.set_mode(0x13)
    m.writeb(0xA0000, 0x0F)
    m.attrindex_write(0x00)
    w, h, rgb = m.vga.render()
    assert (w, h) == (320, 200) and not any(rgb)
