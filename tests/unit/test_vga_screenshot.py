"""PNG output, decoded back with zlib and struct, and screenshots of real modes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_vga_support import Machine, booted, c6, text_mode

from kvmpy.devices.vga import encode_png, save_png


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """A minimal decoder for what encode_png writes: checks every chunk's CRC, the IHDR fields,
    that IEND comes last, and undoes filter type 0 scanline by scanline."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    chunks: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 3 * width
    assert len(raw) == height * (stride + 1)
    rows = []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        assert line[0] == 0  # filter type none
        rows.append(line[1:])
    return width, height, b"".join(rows)


def test_encode_round_trip() -> None:
    width, height = 16, 3
    rgb = bytes((7 * i) & 0xFF for i in range(3 * width * height))
    assert decode_png(encode_png(width, height, rgb)) == (width, height, rgb)


def test_encode_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        encode_png(0, 1, b"")
    with pytest.raises(ValueError):
        encode_png(2, 2, bytes(11))


def test_save_png_writes_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "shot.png"
    save_png(target, 2, 1, bytes((255, 0, 0, 0, 255, 0)))
    assert decode_png(target.read_bytes()) == (2, 1, bytes((255, 0, 0, 0, 255, 0)))
    assert [p.name for p in tmp_path.iterdir()] == ["shot.png"]  # no temporary left behind


def test_screenshot_of_mode_13h(m: Machine, tmp_path: Path) -> None:
    m.set_mode(0x13)
    m.dac_write(0x05, [(0x3F, 0x10, 0x00)])
    for y in range(100, 120):
        for x in range(0, 320, 4):
            m.mem.write(0xA0000 + y * 320 + x, 4, 0x05050505)
    path = tmp_path / "mode13.png"
    assert m.vga.screenshot(path) == (320, 200)
    width, height, rgb = decode_png(path.read_bytes())
    assert (width, height) == (320, 200)
    row = rgb[110 * 960 : 111 * 960]
    assert row == bytes((0xFF, c6(0x10), 0x00)) * 320
    assert rgb[:960] == bytes(960)  # not blank, not all one colour
    assert (width, height, rgb) == m.vga.render()


def test_screenshot_of_text_mode_is_not_blank(m: Machine, tmp_path: Path) -> None:
    text_mode(m)
    m.load_font({0x58: b"\xff" * 16})
    m.writew(0xB8000, 0x0F58)
    path = tmp_path / "text.png"
    assert m.vga.screenshot(path) == (720, 400)
    width, height, rgb = decode_png(path.read_bytes())
    assert (width, height) == (720, 400)
    assert rgb[0:3] == b"\xff\xff\xff" and any(rgb) and rgb[-3:] == b"\x00\x00\x00"
