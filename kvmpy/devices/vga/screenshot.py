"""PNG output with zlib and struct: a screenshot needs no imaging library.

A PNG (RFC 2083 / ISO 15948) is the 8-byte signature and a list of chunks, each
``length (4, big-endian) | type (4) | data | CRC-32 of type + data``: IHDR (width, height,
bit depth 8, colour type 2 = RGB, compression 0, filter 0, interlace 0), one IDAT holding the
zlib stream of the scanlines, each preceded by its filter type byte (0 = none), and IEND.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE_RGB = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rgb: bytes, level: int = 6) -> bytes:
    """The PNG file for ``width`` x ``height`` pixels of packed 8-bit RGB, rows top to bottom."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a PNG needs a positive size, not {width}x{height}")
    stride = 3 * width
    if len(rgb) != stride * height:
        raise ValueError(f"{len(rgb)} bytes of pixels for {width}x{height} RGB (need {stride * height})")
    view = memoryview(rgb)
    raw = b"".join(b"\0" + view[y * stride : (y + 1) * stride].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE_RGB, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, level))
        + _chunk(b"IEND", b"")
    )


def save_png(path: str | os.PathLike[str], width: int, height: int, rgb: bytes) -> None:
    """Write the PNG atomically (a temporary file renamed over ``path``), so a viewer or a test
    polling the file never sees half a screenshot taken on a signal while the guest runs."""
    data = encode_png(width, height, rgb)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".screenshot-", suffix=".png", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the screenshot from other users
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
