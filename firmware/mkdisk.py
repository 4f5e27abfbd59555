"""Write a sparse raw disk image with an MBR: boot code and one active partition.

Used by firmware/images.mk to lay out build/images/disk.img without root-only tools (no loop
devices, no sfdisk): the partition's file system is then made by mformat, filled by mcopy and
made bootable by syslinux's mtools installer, all working on the image file at the partition's
byte offset.

    python3 firmware/mkdisk.py OUT --size-mib 32 --mbr mbr.bin [--start 2048] [--type 0x0e]

The image is created sparse (truncate), so an almost empty 32 MiB disk takes a few MiB on the
host. The layout (`--start`, the partition's length) is printed as `OFFSET SECTORS` so the
Makefile can hand both to mformat and syslinux.

Geometry: the CHS fields use 64 heads and 32 sectors a track (mtools' "zip" geometry, also what
mformat is told), so a BIOS or boot loader that still looks at CHS sees a consistent disk;
syslinux's mbr.bin and SeaBIOS use LBA (EDD) anyway.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
MBR_CODE_LEN = 440  # boot code; then the disk signature (4), 2 reserved bytes, the table at 446
TABLE_OFFSET = 446
ENTRY = struct.Struct("<B3sB3sII")  # status, CHS first, type, CHS last, LBA first, sector count
BOOT_SIGNATURE = b"\x55\xaa"
ACTIVE = 0x80
HEADS = 64
SECTORS_PER_TRACK = 32
MAX_CYLINDER = 1023
#: FAT16 with LBA addressing: what Linux, SeaBIOS and syslinux all accept for a small FAT disk.
DEFAULT_TYPE = 0x0E
DEFAULT_START = 2048  # 1 MiB alignment, as fdisk does
DISK_SIGNATURE = 0x4B564D50  # "KVMP": a fixed signature keeps the image reproducible


def chs(lba: int) -> bytes:
    """The 3-byte CHS address of an LBA, or the 1023/254/63 'beyond CHS' marker."""
    cyl, rem = divmod(lba, HEADS * SECTORS_PER_TRACK)
    head, sec = divmod(rem, SECTORS_PER_TRACK)
    if cyl > MAX_CYLINDER:
        return bytes((0xFE, 0xFF, 0xFF))
    return bytes((head, ((cyl >> 2) & 0xC0) | (sec + 1), cyl & 0xFF))


@dataclass(frozen=True)
class Partition:
    start: int  # first sector (LBA)
    sectors: int
    type: int = DEFAULT_TYPE
    active: bool = True

    def entry(self) -> bytes:
        return ENTRY.pack(ACTIVE if self.active else 0, chs(self.start), self.type,
                          chs(self.start + self.sectors - 1), self.start, self.sectors)


def mbr(boot_code: bytes, partitions: list[Partition]) -> bytes:
    """Sector 0: the boot code (at most 440 bytes), signature, four table entries, 55 AA."""
    if len(boot_code) > MBR_CODE_LEN:
        raise ValueError(f"MBR boot code is {len(boot_code)} bytes; at most {MBR_CODE_LEN} fit")
    if len(partitions) > 4:
        raise ValueError("an MBR holds at most four primary partitions")
    table = b"".join(p.entry() for p in partitions).ljust(4 * ENTRY.size, b"\0")
    sector = (boot_code.ljust(MBR_CODE_LEN, b"\0") + struct.pack("<IH", DISK_SIGNATURE, 0)
              + table + BOOT_SIGNATURE)
    assert len(sector) == SECTOR
    return sector


def read_table(image: Path) -> list[Partition]:
    """The non-empty partition entries of an image's MBR (for tests and checks)."""
    with open(image, "rb") as f:
        sector = f.read(SECTOR)
    if len(sector) < SECTOR or sector[510:] != BOOT_SIGNATURE:
        raise ValueError(f"{image} has no MBR (no 55 AA signature)")
    parts = []
    for i in range(4):
        status, _, ptype, _, start, count = ENTRY.unpack_from(sector, TABLE_OFFSET + i * ENTRY.size)
        if ptype:
            parts.append(Partition(start, count, ptype, status == ACTIVE))
    return parts


def make_disk(out: Path, size_mib: int, boot_code: bytes, start: int = DEFAULT_START,
              ptype: int = DEFAULT_TYPE) -> Partition:
    """Create `out` (sparse, `size_mib` MiB) with one active partition from `start` to the end."""
    total = size_mib * 1024 * 1024 // SECTOR
    if not 0 < start < total:
        raise ValueError(f"partition start {start} outside a {total}-sector disk")
    part = Partition(start, total - start, ptype)
    with open(out, "wb") as f:
        f.truncate(total * SECTOR)  # sparse: only the sectors written take space
        f.write(mbr(boot_code, [part]))
    return part


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size-mib", type=int, required=True)
    p.add_argument("--mbr", type=Path, required=True, help="boot code, e.g. syslinux's mbr.bin")
    p.add_argument("--start", type=int, default=DEFAULT_START, help="first sector of the partition")
    p.add_argument("--type", type=lambda s: int(s, 0), default=DEFAULT_TYPE, help="partition type byte")
    a = p.parse_args(argv)
    try:
        part = make_disk(a.out, a.size_mib, a.mbr.read_bytes(), a.start, a.type)
    except (OSError, ValueError) as e:
        print(f"mkdisk: {e}", file=sys.stderr)
        return 1
    print(part.start * SECTOR, part.sectors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
