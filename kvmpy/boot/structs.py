"""Declared little-endian binary layouts for the structures the loaders hand to a guest.

Why a helper: boot_params, the e820 table, the multiboot information and Xen's hvm_start_info are
all "fields at fixed offsets in a fixed-size block". Declaring each structure once, as a table of
(name, offset, format), lets the layout check itself when the module is imported (fields inside
the block, no two overlapping) and lets tests pin every offset and size against the specs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One field: its name, byte offset in the structure and a ``struct`` format (no byte order)."""

    name: str
    offset: int
    fmt: str

    @property
    def codec(self) -> struct.Struct:
        return struct.Struct("<" + self.fmt)

    @property
    def size(self) -> int:
        return self.codec.size

    @property
    def end(self) -> int:
        return self.offset + self.size


class Layout:
    """A fixed-size little-endian structure; undeclared bytes are padding and stay zero.

    ``size`` defaults to the end of the last field. Construction fails (ValueError) if a field
    lies outside the structure or two fields overlap, so a typo in an offset cannot go unnoticed.
    """

    def __init__(self, name: str, fields: Iterable[tuple[str, int, str]], size: int | None = None) -> None:
        self.name = name
        self.fields: dict[str, Field] = {}
        for fname, offset, fmt in fields:
            if fname in self.fields:
                raise ValueError(f"{name}: field {fname} declared twice")
            self.fields[fname] = Field(fname, offset, fmt)
        ordered = sorted(self.fields.values(), key=lambda f: f.offset)
        end = max((f.end for f in ordered), default=0)
        self.size = end if size is None else size
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.end > b.offset:
                raise ValueError(f"{name}: field {a.name} overlaps {b.name}")
        for f in ordered:
            if f.offset < 0 or f.end > self.size:
                raise ValueError(f"{name}: field {f.name} lies outside the {self.size}-byte structure")

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {len(self.fields)} fields, {self.size} bytes)"

    def offset(self, name: str) -> int:
        return self.fields[name].offset

    def field_size(self, name: str) -> int:
        return self.fields[name].size

    def pack(self, values: Mapping[str, object] | None = None, **kw: object) -> bytes:
        """Build the structure; fields not given are zero. Unknown names raise KeyError."""
        buf = bytearray(self.size)
        for name, value in {**(values or {}), **kw}.items():
            self.put(buf, name, value)
        return bytes(buf)

    def put(self, buf: bytearray, name: str, value: object, base: int = 0) -> None:
        """Store one field into ``buf`` (the structure starting at ``base``)."""
        f = self.fields[name]
        f.codec.pack_into(buf, base + f.offset, value)

    def get(self, buf: bytes | bytearray | memoryview, name: str, base: int = 0):
        f = self.fields[name]
        (value,) = f.codec.unpack_from(buf, base + f.offset)
        return value

    def unpack(self, buf: bytes | bytearray | memoryview, base: int = 0) -> dict[str, object]:
        """Every declared field of the structure at ``buf[base:]``, by name."""
        if len(buf) - base < self.size:
            raise ValueError(f"{self.name}: need {self.size} bytes, have {len(buf) - base}")
        return {name: self.get(buf, name, base) for name in self.fields}

    def pack_array(self, items: Iterable[Mapping[str, object]]) -> bytes:
        """Consecutive structures, one per mapping."""
        return b"".join(self.pack(item) for item in items)

    def unpack_array(self, buf: bytes | bytearray | memoryview, count: int, base: int = 0) -> list[dict]:
        return [self.unpack(buf, base + i * self.size) for i in range(count)]
