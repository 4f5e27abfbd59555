"""QEMU's fw_cfg "table-loader": the commands by which firmware installs our ACPI tables.

Why: firmware (SeaBIOS; OVMF too) decides where in guest memory the tables live, so the VMM
cannot fill in absolute pointers itself. Instead it hands over the tables as fw_cfg files
with pointers *relative to their file* and a script, ``etc/table-loader``, of 128-byte
little-endian commands (QEMU hw/acpi/bios-linker-loader.c, SeaBIOS src/fw/romfile_loader.c):

ALLOCATE (1)      file[56] at 4, align u32 at 60, zone u8 at 64 (1 high memory, 2 F-segment):
                  copy the fw_cfg file into memory of that zone and alignment.
ADD_POINTER (2)   dest_file[56] at 4, src_file[56] at 60, offset u32 at 116, size u8 at 120:
                  add the address of src's copy to the size-byte integer at dest + offset.
ADD_CHECKSUM (3)  file[56] at 4, result offset u32 at 60, start u32 at 64, length u32 at 68:
                  subtract the byte sum of [start, start + length) from the byte at offset.
WRITE_POINTER (4) dest_file[56] at 4, src_file[56] at 60, dst_offset u32 at 116, src_offset
                  u32 at 120, size u8 at 124: write src's address + src_offset back into a
                  (writable) fw_cfg file through DMA.

A file must be ALLOCATEd before any other command names it; names are NUL-terminated within
56 bytes. Because ADD_CHECKSUM subtracts the sum, a checksum that was already correct before
the pointers were patched ends up correct after.
"""

from __future__ import annotations

import struct

__all__ = [
    "TableLoader",
    "ENTRY_SIZE",
    "FILE_NAME_SIZE",
    "COMMAND_ALLOCATE",
    "COMMAND_ADD_POINTER",
    "COMMAND_ADD_CHECKSUM",
    "COMMAND_WRITE_POINTER",
    "ZONE_HIGH",
    "ZONE_FSEG",
]

ENTRY_SIZE = 128
FILE_NAME_SIZE = 56

COMMAND_ALLOCATE = 1
COMMAND_ADD_POINTER = 2
COMMAND_ADD_CHECKSUM = 3
COMMAND_WRITE_POINTER = 4

ZONE_HIGH = 1
ZONE_FSEG = 2

_ALLOCATE = struct.Struct("<I56sIB")
_ADD_POINTER = struct.Struct("<I56s56sIB")
_ADD_CHECKSUM = struct.Struct("<I56sIII")
_WRITE_POINTER = struct.Struct("<I56s56sIIB")


def _name(file: str) -> bytes:
    raw = file.encode("ascii")
    if not raw or len(raw) >= FILE_NAME_SIZE or b"\0" in raw:
        raise ValueError(f"table-loader file name {file!r} must be 1..{FILE_NAME_SIZE - 1} characters")
    return raw


class TableLoader:
    """Builds the ``etc/table-loader`` file one command at a time (in the order given)."""

    def __init__(self) -> None:
        self._entries: list[bytes] = []
        self._allocated: set[str] = set()

    def _append(self, packed: bytes) -> None:
        self._entries.append(packed.ljust(ENTRY_SIZE, b"\0"))

    def _check_allocated(self, *files: str) -> None:
        for f in files:
            if f not in self._allocated:
                raise ValueError(f"table-loader: {f!r} is used before it is allocated")

    def allocate(self, file: str, align: int, zone: int) -> None:
        if align <= 0 or align & (align - 1):
            raise ValueError("table-loader alignment must be a power of two")
        if zone not in (ZONE_HIGH, ZONE_FSEG):
            raise ValueError(f"unknown table-loader zone {zone}")
        if file in self._allocated:
            raise ValueError(f"table-loader: {file!r} allocated twice")
        self._append(_ALLOCATE.pack(COMMAND_ALLOCATE, _name(file), align, zone))
        self._allocated.add(file)

    def add_pointer(self, dest_file: str, src_file: str, offset: int, size: int) -> None:
        if size not in (1, 2, 4, 8):
            raise ValueError("pointer size must be 1, 2, 4 or 8")
        self._check_allocated(dest_file, src_file)
        self._append(_ADD_POINTER.pack(COMMAND_ADD_POINTER, _name(dest_file), _name(src_file), offset, size))

    def add_checksum(self, file: str, result_offset: int, start: int, length: int) -> None:
        self._check_allocated(file)
        self._append(_ADD_CHECKSUM.pack(COMMAND_ADD_CHECKSUM, _name(file), result_offset, start, length))

    def write_pointer(
        self, dest_file: str, src_file: str, dst_offset: int, src_offset: int, size: int
    ) -> None:
        """Ask firmware to write src's address back into the fw_cfg file ``dest_file``."""
        if size not in (1, 2, 4, 8):
            raise ValueError("pointer size must be 1, 2, 4 or 8")
        self._check_allocated(src_file)
        self._append(
            _WRITE_POINTER.pack(
                COMMAND_WRITE_POINTER, _name(dest_file), _name(src_file), dst_offset, src_offset, size
            )
        )

    def __len__(self) -> int:
        return len(self._entries)

    def to_bytes(self) -> bytes:
        return b"".join(self._entries)
