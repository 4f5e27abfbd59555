"""Turning the adapter's state into text and pixels, the way the CRT controller scans it out.

Everything here is a pure function of ``(state, vram)``: nothing is cached between calls, so a
screenshot after a restore, or from a test that only poked registers, is always right. The
work is done with whole-frame byte operations (slicing, ``bytes.translate``, big-integer
bitwise operations over a scanline) rather than per-pixel Python, which keeps a 1024x768
frame in the tens of milliseconds.

Sizes are the *logical* mode sizes a user expects: mode 13h is 320x200 and mode 0Dh 320x200
even though the CRTC scans them as 640x400 with doubled pixels and lines; text modes are
columns x character width by rows x character height (720x400 for mode 3).

What decides the picture (FreeVGA; QEMU's ``vga_update_display``):

* VBE enabled (dispi ENABLE bit 0): XRES x YRES at ``bpp`` from the VBE start offset with the
  virtual-width line length; 8 bpp goes through the DAC.
* Otherwise GR06 bit 0 chooses graphics or text; graphics use GR05's shift control: 0 planar
  16-colour (four planes, attribute palette), 1 CGA 4-colour (2 bits per pixel in planes 0/1),
  2 packed 256-colour (one VRAM byte per pixel, DAC directly).
* The CRTC supplies the start address (CR0C/CR0D), the line offset (CR13), the display end
  (CR01, CR12 + overflow), scanline repetition (CR09), CGA/Hercules address substitution (CR17)
  and the split-screen line compare (CR18 + overflow + CR09).
* The screen is blank while the attribute index has its palette address source bit (0x20)
  clear or SR01 has "screen off": ``render`` then gives black at the mode's size.
* Text cells are plane 0 (character) and plane 1 (attribute); glyphs come from plane 2 at the
  character maps SR03 selects, 32 bytes per character; a 9-dot character repeats its 8th
  column for C0h-DFh when AR10's line-graphics bit is set; with AR10's blink bit, attribute
  bit 7 blinks instead of brightening the background (shown here in its "on" phase).
"""

from __future__ import annotations

from dataclasses import dataclass

from .registers import (
    AR10_BLINK,
    AR10_LINE_GRAPHICS,
    AR10_P54_SELECT,
    AR_COLOR_SELECT,
    AR_INDEX_PAS,
    AR_MODE,
    AR_PLANE_ENABLE,
    CR0A_CURSOR_OFF,
    CR_CURSOR_END,
    CR_CURSOR_HI,
    CR_CURSOR_LO,
    CR_CURSOR_START,
    CR_H_DISP_END,
    CR_LINE_COMPARE,
    CR_MAX_SCAN,
    CR_MODE,
    CR_OFFSET,
    CR_OVERFLOW,
    CR_START_HI,
    CR_START_LO,
    CR_V_DISP_END,
    GR06_GRAPHICS,
    GR_MISC,
    GR_MODE,
    SR01_CHAR_CLK_8DOTS,
    SR01_SCREEN_OFF,
    SR_CHARACTER_MAP,
    SR_CLOCK_MODE,
)
from .state import VgaState
from .vbe import INDEX_BPP, INDEX_XRES, INDEX_YRES, STORAGE_BITS, dac_8bit, vbe_enabled

#: The VGA's own address space: four 64 KiB planes, interleaved in the first 256 KiB of VRAM.
#: CRTC addresses of the legacy modes wrap here, as the hardware address counter does.
PLANES_SIZE = 0x40000
PLANE_SIZE = 0x10000
#: Shown while the display has no sensible geometry yet (before the VGA BIOS sets a mode).
FALLBACK_SIZE = (640, 480)

# --- Code page 437 ---------------------------------------------------------------------------
#: The glyphs the VGA font draws for 00h-1Fh and 7Fh (not control characters on screen).
_CP437_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
#: Byte -> character as it appears on a VGA text screen. NUL (an empty glyph) reads as a space.
CP437 = (
    _CP437_LOW + bytes(range(0x20, 0x7F)).decode("ascii") + "⌂" + bytes(range(0x80, 0x100)).decode("cp437")
)
assert len(CP437) == 256
_CP437_TABLE = {i: c for i, c in enumerate(CP437)}


@dataclass(frozen=True)
class DisplayMode:
    """What the adapter is showing: ``kind`` is text, planar (16-colour), cga (4-colour),
    packed (256-colour) or vbe; sizes are logical pixels (see the module docstring)."""

    kind: str
    width: int
    height: int
    bpp: int
    blank: bool
    cols: int = 0
    rows: int = 0
    char_width: int = 0
    char_height: int = 0


# --- geometry --------------------------------------------------------------------------------
def _display_lines(cr: bytearray) -> int:
    """Vertical display end + 1: the scanlines the CRTC shows (10 bits across CR12/CR07)."""
    vde = cr[CR_V_DISP_END] | ((cr[CR_OVERFLOW] & 0x02) << 7) | ((cr[CR_OVERFLOW] & 0x40) << 3)
    return vde + 1


def _line_compare(cr: bytearray) -> int:
    return cr[CR_LINE_COMPARE] | ((cr[CR_OVERFLOW] & 0x10) << 4) | ((cr[CR_MAX_SCAN] & 0x40) << 3)


def _multi_scan(state: VgaState) -> int:
    """How many extra times each source line is repeated (CR09 max scan line, double scan);
    CGA-compatible shift mode ignores the max scan line (QEMU's rule)."""
    cr = state.cr
    double = cr[CR_MAX_SCAN] >> 7
    if (state.gr[GR_MODE] >> 5) & 3 == 1:
        return double
    return (((cr[CR_MAX_SCAN] & 0x1F) + 1) << double) - 1


def _blank(state: VgaState) -> bool:
    return not state.ar_index & AR_INDEX_PAS or bool(state.sr[SR_CLOCK_MODE] & SR01_SCREEN_OFF)


def display_mode(state: VgaState) -> DisplayMode:
    """The current mode's kind and logical geometry, from the registers alone."""
    blank = _blank(state)
    if vbe_enabled(state):
        regs = state.vbe_regs
        return DisplayMode("vbe", regs[INDEX_XRES], regs[INDEX_YRES], regs[INDEX_BPP], blank)
    cr = state.cr
    lines = _display_lines(cr)
    if state.gr[GR_MISC] & GR06_GRAPHICS:
        width = (cr[CR_H_DISP_END] + 1) * 8
        groups = -(-lines // (_multi_scan(state) + 1))
        shift = (state.gr[GR_MODE] >> 5) & 3
        if shift >= 2:
            return DisplayMode("packed", width // 2, groups, 8, blank)
        if shift == 1:
            return DisplayMode("cga", width, groups, 2, blank)
        return DisplayMode("planar", width, groups, 4, blank)
    cols = cr[CR_H_DISP_END] + 1
    cheight = (cr[CR_MAX_SCAN] & 0x1F) + 1
    cwidth = 8 if state.sr[SR_CLOCK_MODE] & SR01_CHAR_CLK_8DOTS else 9
    rows = lines // cheight
    return DisplayMode("text", cols * cwidth, rows * cheight, 4, blank, cols, rows, cwidth, cheight)


# --- text ------------------------------------------------------------------------------------
def _text_row_starts(state: VgaState, rows: int, cheight: int) -> list[int]:
    """Plane offset of each text row: start address, CR13 words per row, line compare."""
    cr = state.cr
    offset = (cr[CR_START_HI] << 8) | cr[CR_START_LO]
    stride = cr[CR_OFFSET] * 2
    compare = _line_compare(cr)
    starts = []
    line = 0
    for _ in range(rows):
        starts.append(offset & (PLANE_SIZE - 1))
        offset += stride
        if line < compare <= line + cheight:  # the split screen restarts at address 0
            offset = 0
        line += cheight
    return starts


def _plane(vram: memoryview, p: int) -> bytes:
    """All 64 KiB of plane ``p``."""
    return vram[p:PLANES_SIZE:4].tobytes()


def _wrapped(data: bytes, start: int, length: int) -> bytes:
    end = start + length
    if end <= len(data):
        return data[start:end]
    return data[start:] + data[: end - len(data)]


def _text_cells(state: VgaState, vram: memoryview) -> tuple[DisplayMode, list[bytes], list[bytes]] | None:
    mode = display_mode(state)
    if mode.kind != "text" or mode.cols <= 0 or mode.rows <= 0:
        return None
    chars_plane, attrs_plane = _plane(vram, 0), _plane(vram, 1)
    starts = _text_row_starts(state, mode.rows, mode.char_height)
    chars = [_wrapped(chars_plane, s, mode.cols) for s in starts]
    attrs = [_wrapped(attrs_plane, s, mode.cols) for s in starts]
    return mode, chars, attrs


def text_screen(state: VgaState, vram: memoryview) -> list[str]:
    """The text screen, one string per row (CP437 decoded, full width); [] in graphics modes.
    The text is read even while the screen is blanked (mode sets blank it for a moment)."""
    cells = _text_cells(state, vram)
    if cells is None:
        return []
    return [row.decode("latin-1").translate(_CP437_TABLE) for row in cells[1]]


def text_attributes(state: VgaState, vram: memoryview) -> list[bytes]:
    """The attribute byte of every cell, one bytes object per row; [] in graphics modes."""
    cells = _text_cells(state, vram)
    return [] if cells is None else cells[2]


def cursor_position(state: VgaState) -> tuple[int, int] | None:
    """(column, row) of the hardware cursor, or None when it is off or outside the screen."""
    mode = display_mode(state)
    cr = state.cr
    if mode.kind != "text" or cr[CR_CURSOR_START] & CR0A_CURSOR_OFF:
        return None
    address = (cr[CR_CURSOR_HI] << 8) | cr[CR_CURSOR_LO]
    for row, start in enumerate(_text_row_starts(state, mode.rows, mode.char_height)):
        column = (address - start) & (PLANE_SIZE - 1)
        if column < mode.cols:
            return column, row
    return None


# --- colour ----------------------------------------------------------------------------------
#: A 6-bit DAC component scaled to 8 bits with its top bits repeated (0x3F -> 0xFF, 0x2A -> 0xAA).
_C6_TO_8 = bytes((((v & 0x3F) << 2) | ((v & 0x3F) >> 4)) for v in range(256))
_IDENTITY = bytes(range(256))


def _dac_tables(state: VgaState) -> tuple[bytes, bytes, bytes]:
    """Pixel value -> red, green, blue (8-bit) through the PEL mask and the DAC."""
    pal = state.palette
    conv = _IDENTITY if dac_8bit(state) else _C6_TO_8
    mask = state.pel_mask
    r = bytes(conv[pal[3 * (i & mask)]] for i in range(256))
    g = bytes(conv[pal[3 * (i & mask) + 1]] for i in range(256))
    b = bytes(conv[pal[3 * (i & mask) + 2]] for i in range(256))
    return r, g, b


def _attribute_tables(state: VgaState, plane_enable: int = 0x0F) -> tuple[bytes, bytes, bytes]:
    """4-bit colour number -> RGB through the attribute palette (AR00-AR0F, AR10 bit 7, AR14)
    and the DAC; bytes above 15 and disabled planes are masked off."""
    ar = state.ar
    dac_index = []
    for i in range(16):
        v = ar[i]
        if ar[AR_MODE] & AR10_P54_SELECT:
            v = ((ar[AR_COLOR_SELECT] & 0x0F) << 4) | (v & 0x0F)
        else:
            v = ((ar[AR_COLOR_SELECT] & 0x0C) << 4) | (v & 0x3F)
        dac_index.append(v)
    r, g, b = _dac_tables(state)
    pick = [dac_index[i & plane_enable & 0x0F] for i in range(256)]
    return bytes(r[i] for i in pick), bytes(g[i] for i in pick), bytes(b[i] for i in pick)


def _interleave(r: bytes, g: bytes, b: bytes) -> bytes:
    out = bytearray(3 * len(r))
    out[0::3] = r
    out[1::3] = g
    out[2::3] = b
    return bytes(out)


def _indexed_to_rgb(indices: bytes, tables: tuple[bytes, bytes, bytes]) -> bytes:
    r, g, b = tables
    return _interleave(indices.translate(r), indices.translate(g), indices.translate(b))


def _or_bytes(x: bytes, y: bytes) -> bytes:
    return (int.from_bytes(x, "big") | int.from_bytes(y, "big")).to_bytes(len(x), "big")


# --- glyph and plane expansion tables -------------------------------------------------------
#: Glyph byte -> one 0xFF/0x00 byte per dot (bit 7 leftmost): 8 dots, 9 dots with a blank 9th
#: column, 9 dots with the 8th column repeated (line-graphics characters).
_GLYPH8 = tuple(bytes(0xFF if b & (0x80 >> i) else 0 for i in range(8)) for b in range(256))
_GLYPH9 = tuple(g + b"\0" for g in _GLYPH8)
_GLYPH9_LINE = tuple(g + g[7:8] for g in _GLYPH8)
#: Plane byte -> eight pixels carrying that plane's bit at its position in the colour number.
_PLANE_EXPAND = tuple(
    tuple(bytes(((b >> (7 - i)) & 1) << p for i in range(8)) for b in range(256)) for p in range(4)
)
#: CGA shift mode: a byte -> four 2-bit pixels (bits 7-6 first), as an int of 4 bytes.
_PAIRS = tuple(int.from_bytes(bytes((b >> (6 - 2 * i)) & 3 for i in range(4)), "big") for b in range(256))


# --- text rendering --------------------------------------------------------------------------
def _render_text(state: VgaState, vram: memoryview, mode: DisplayMode, cursor: bool) -> bytes:
    """Colour numbers (0-15), one byte per pixel, for the whole text screen."""
    cells = _text_cells(state, vram)
    assert cells is not None
    _, chars, attrs = cells
    cw, ch, cols = mode.char_width, mode.char_height, mode.cols
    font = _plane(vram, 2)
    sel = state.sr[SR_CHARACTER_MAP]
    # Attribute bit 3 clear selects map B (SR03 bits 4, 1-0), set selects map A (bits 5, 3-2);
    # map n lives at (n & 3) * 16 KiB + (n >> 2) * 8 KiB in plane 2.
    font_base = (
        (((sel >> 4) & 1) | ((sel << 1) & 6)) * 0x2000,
        (((sel >> 5) & 1) | ((sel >> 1) & 6)) * 0x2000,
    )
    ar10 = state.ar[AR_MODE]
    bg_mask = 0x07 if ar10 & AR10_BLINK else 0x0F
    line_graphics = cw == 9 and bool(ar10 & AR10_LINE_GRAPHICS)
    plain = _GLYPH9 if cw == 9 else _GLYPH8
    repeat = [bytes((c,)) * cw for c in range(16)]
    width = cols * cw
    cursor_at = cursor_position(state) if cursor else None
    cr = state.cr
    cursor_lines = range(cr[CR_CURSOR_START] & 0x1F, min(cr[CR_CURSOR_END] & 0x1F, ch - 1) + 1)
    out = []
    for row in range(mode.rows):
        row_chars, row_attrs = chars[row], attrs[row]
        fg = b"".join([repeat[a & 0x0F] for a in row_attrs])
        bg = int.from_bytes(b"".join([repeat[(a >> 4) & bg_mask] for a in row_attrs]), "big")
        xor = int.from_bytes(fg, "big") ^ bg
        glyphs = [
            (_GLYPH9_LINE if line_graphics and 0xC0 <= c <= 0xDF else plain, font_base[(a >> 3) & 1] + 32 * c)
            for c, a in zip(row_chars, row_attrs, strict=True)
        ]
        for line in range(ch):
            dots = int.from_bytes(b"".join([table[font[base + line]] for table, base in glyphs]), "big")
            pixels = (bg ^ (dots & xor)).to_bytes(width, "big")
            if cursor_at is not None and cursor_at[1] == row and line in cursor_lines:
                x = cursor_at[0] * cw
                pixels = pixels[:x] + fg[x : x + cw] + pixels[x + cw :]
            out.append(pixels)
    return b"".join(out)


# --- graphics rendering ----------------------------------------------------------------------
def _graphic_rows(state: VgaState, start: int, line_offset: int, lines: int, multi_scan: int) -> list[int]:
    """VRAM byte address of each logical row: the CRTC's walk over ``lines`` scanlines with
    line repetition, CGA (bank in address bit 13) / Hercules substitution and line compare."""
    cr17 = state.cr[CR_MODE]
    compare = _line_compare(state.cr)
    rows = []
    addr1 = start
    y1 = 0
    run = multi_scan
    for y in range(lines):
        if run == multi_scan:
            addr = addr1
            if not cr17 & 0x01:
                shift = 14 + ((cr17 >> 6) & 1)
                addr = (addr & ~(1 << shift)) | ((y1 & 1) << shift)
            if not cr17 & 0x02:
                addr = (addr & ~0x8000) | ((y1 & 2) << 14)
            rows.append(addr)
        if run == 0:
            mask = (cr17 & 3) ^ 3
            if y1 & mask == mask:
                addr1 += line_offset
            y1 += 1
            run = multi_scan
        else:
            run -= 1
        if y == compare:
            addr1 = 0
    return rows


def _span(vram: memoryview, start: int, length: int, limit: int, step: int = 1) -> bytes:
    """``length`` bytes every ``step`` from ``start``, the address wrapping at ``limit``."""
    start %= limit
    end = start + length * step
    if end <= limit:
        return vram[start:end:step].tobytes()
    return bytes(vram[(start + i * step) % limit] for i in range(length))


def _planar_indices(vram: memoryview, rows: list[int], width: int, enable: int, limit: int) -> bytes:
    """16-colour planar: each VRAM word gives 8 pixels, bit 7 leftmost, plane p = colour bit p."""
    n = width // 8
    total = 0
    for p in range(4):
        if enable & (1 << p):
            plane = b"".join([_span(vram, a + p, n, limit, 4) for a in rows])
            total |= int.from_bytes(b"".join(map(_PLANE_EXPAND[p].__getitem__, plane)), "big")
    return total.to_bytes(n * 8 * len(rows), "big")


def _cga_indices(vram: memoryview, rows: list[int], width: int, enable: int, limit: int) -> bytes:
    """CGA 4-colour shift mode: per VRAM word, planes 0 then 1 give four 2-bit pixels each and
    planes 2/3 add bits 2-3 (QEMU's vga_draw_line2)."""
    n = width // 8
    masks = [0xFF if enable & (1 << p) else 0 for p in range(4)]
    out = []
    for a in rows:
        data = _span(vram, a, 4 * n, limit)
        for x in range(0, 4 * n, 4):
            p0, p1, p2, p3 = (data[x + i] & masks[i] for i in range(4))
            out.append((_PAIRS[p0] | (_PAIRS[p2] << 2)).to_bytes(4, "big"))
            out.append((_PAIRS[p1] | (_PAIRS[p3] << 2)).to_bytes(4, "big"))
    return b"".join(out)


def _render_vga_graphics(state: VgaState, vram: memoryview, mode: DisplayMode) -> bytes:
    cr = state.cr
    start = ((cr[CR_START_HI] << 8) | cr[CR_START_LO]) * 4
    line_offset = cr[CR_OFFSET] << 3
    rows = _graphic_rows(state, start, line_offset, _display_lines(cr), _multi_scan(state))
    enable = state.ar[AR_PLANE_ENABLE] & 0x0F
    if mode.kind == "packed":
        data = b"".join([_span(vram, a, mode.width, PLANES_SIZE) for a in rows])
        return _indexed_to_rgb(data, _dac_tables(state))
    if mode.kind == "cga":
        indices = _cga_indices(vram, rows, mode.width, enable, PLANES_SIZE)
    else:
        indices = _planar_indices(vram, rows, mode.width, enable, PLANES_SIZE)
    return _indexed_to_rgb(indices, _attribute_tables(state))


# 5- and 6-bit components scaled to 8 bits with their top bits repeated.
_C5_TO_8 = bytes((((v & 0x1F) << 3) | ((v & 0x1F) >> 2)) for v in range(256))
_C6B_TO_8 = bytes((((v & 0x3F) << 2) | ((v & 0x3F) >> 4)) for v in range(256))
# RGB565 / RGB555 pieces, per byte of the little-endian pixel word.
_R565 = bytes(_C5_TO_8[b >> 3] for b in range(256))  # from the high byte
_G565_HI = bytes((b & 0x07) << 3 for b in range(256))
_G565_LO = bytes(b >> 5 for b in range(256))
_B5 = bytes(_C5_TO_8[b & 0x1F] for b in range(256))  # from the low byte (565 and 555)
_R555 = bytes(_C5_TO_8[(b >> 2) & 0x1F] for b in range(256))
_G555_HI = bytes((b & 0x03) << 3 for b in range(256))


def _render_vbe(state: VgaState, vram: memoryview, mode: DisplayMode) -> bytes:
    bpp = mode.bpp
    bits = STORAGE_BITS.get(bpp, 8)
    size = len(vram)
    rows = [state.vbe_start + y * state.vbe_line_offset for y in range(mode.height)]
    if bpp == 4:
        indices = _planar_indices(vram, rows, mode.width, state.ar[AR_PLANE_ENABLE] & 0x0F, size)
        return _indexed_to_rgb(indices, _attribute_tables(state))
    data = b"".join([_span(vram, a, mode.width * bits // 8, size) for a in rows])
    if bits == 8:
        return _indexed_to_rgb(data, _dac_tables(state))
    if bits == 32:
        return _interleave(data[2::4], data[1::4], data[0::4])
    if bits == 24:
        return _interleave(data[2::3], data[1::3], data[0::3])
    lo, hi = data[0::2], data[1::2]
    if bpp == 16:
        green6 = _or_bytes(hi.translate(_G565_HI), lo.translate(_G565_LO))
        return _interleave(hi.translate(_R565), green6.translate(_C6B_TO_8), lo.translate(_B5))
    green5 = _or_bytes(hi.translate(_G555_HI), lo.translate(_G565_LO))
    return _interleave(hi.translate(_R555), green5.translate(_C5_TO_8), lo.translate(_B5))


def render(state: VgaState, vram: memoryview, cursor: bool = False) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes, 3 per pixel, rows top to bottom) of what the screen shows.
    ``cursor`` draws the text-mode hardware cursor (steadily; the hardware blinks it)."""
    mode = display_mode(state)
    width, height = mode.width, mode.height
    if width <= 0 or height <= 0 or width * height > 64 << 20:
        width, height = FALLBACK_SIZE
        return width, height, bytes(3 * width * height)
    if mode.blank:
        return width, height, bytes(3 * width * height)
    if mode.kind == "text":
        indices = _render_text(state, vram, mode, cursor)
        return width, height, _indexed_to_rgb(indices, _attribute_tables(state))
    if mode.kind == "vbe":
        return width, height, _render_vbe(state, vram, mode)
    return width, height, _render_vga_graphics(state, vram, mode)
