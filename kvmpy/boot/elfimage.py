"""Reading ELF kernels (pyelftools): loadable segments by physical address, and ELF notes.

Shared by the PVH loader and the multiboot loader's ELF path. Everything malformed becomes an
``ImageError`` naming the file; segments whose file bytes run past the end of the file are
reported as truncation rather than silently loaded short.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from kvmpy.boot.plan import Span
from kvmpy.errors import ImageError

ELF_MAGIC = b"\x7fELF"
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7
PF_X = 1


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD segment: ``data`` (p_filesz bytes) goes at ``paddr``, zeros up to ``memsz``."""

    paddr: int
    vaddr: int
    memsz: int
    flags: int
    data: bytes

    @property
    def span(self) -> Span:
        return Span(self.paddr, self.paddr + self.memsz)

    def image(self) -> bytes:
        """The segment as it must appear in memory: file bytes, then the zero-filled rest."""
        return self.data + bytes(self.memsz - len(self.data))


@dataclass(frozen=True)
class Note:
    owner: str
    type: int
    desc: bytes


@dataclass(frozen=True)
class ElfImage:
    elfclass: int  # 32 or 64
    machine: int
    entry: int
    segments: tuple[Segment, ...]
    notes: tuple[Note, ...]

    @property
    def span(self) -> Span:
        """From the lowest to the highest physical address any segment occupies."""
        return Span(min(s.paddr for s in self.segments), max(s.span.end for s in self.segments))


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def parse_elf(data: bytes, name: str) -> ElfImage:
    """Parse ``data`` (the whole file); ImageError when it is not a usable ELF executable."""
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.little_endian is False:
            raise ImageError(f"{name}: the ELF file is big-endian, not an x86 kernel")
        segments = []
        note_blobs: list[tuple[bytes, int]] = []
        for seg in elf.iter_segments():
            h = seg.header
            ptype = seg["p_type"]
            if ptype not in ("PT_LOAD", "PT_NOTE"):
                continue
            off, filesz, memsz = h["p_offset"], h["p_filesz"], h["p_memsz"]
            if off + filesz > len(data):
                raise ImageError(
                    f"{name}: truncated: a segment needs file bytes up to {off + filesz:#x} "
                    f"but the file has {len(data)} bytes"
                )
            blob = data[off : off + filesz]
            if ptype == "PT_NOTE":
                note_blobs.append((blob, h["p_align"]))
                continue
            if memsz < filesz:
                raise ImageError(f"{name}: bad ELF header: a segment's memory size is below its file size")
            if memsz == 0:
                continue
            segments.append(Segment(h["p_paddr"], h["p_vaddr"], memsz, h["p_flags"], blob))
        if not note_blobs:
            note_blobs = _section_notes(elf, data)
        machine = elf.header["e_machine"]
        machine_num = {"EM_386": EM_386, "EM_X86_64": EM_X86_64}.get(machine, -1)
        image = ElfImage(
            elfclass=elf.elfclass,
            machine=machine_num,
            entry=elf.header["e_entry"],
            segments=tuple(segments),
            notes=tuple(n for blob, align in note_blobs for n in parse_notes(blob, align)),
        )
    except ImageError:
        raise
    except (ELFError, struct.error, ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{name}: not a valid ELF file: {e}") from None
    if elf.header["e_type"] not in ("ET_EXEC", "ET_DYN"):
        raise ImageError(f"{name}: the ELF file is not an executable")
    if not image.segments:
        raise ImageError(f"{name}: the ELF file has nothing to load (no PT_LOAD segment)")
    return image


def _section_notes(elf: ELFFile, data: bytes) -> list[tuple[bytes, int]]:
    """Notes from SHT_NOTE sections, for files without a PT_NOTE program header. Section headers
    are optional in an executable, so unreadable ones simply yield no notes."""
    blobs = []
    try:
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                off, size = sec["sh_offset"], sec["sh_size"]
                if off + size <= len(data):
                    blobs.append((data[off : off + size], sec["sh_addralign"]))
    except (ELFError, struct.error, ValueError, KeyError, TypeError):
        return []
    return blobs


def parse_notes(blob: bytes, align: int = 4) -> list[Note]:
    """ELF notes: namesz, descsz, type, then name and desc, each padded to the alignment.

    Malformed trailing bytes end the list rather than failing: notes are advisory here, and a
    kernel without the note we look for is reported by the caller.
    """
    pad = 8 if align == 8 else 4
    notes = []
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        pos += 12
        name_end = pos + namesz
        desc_start = pos + (-namesz % pad) + namesz
        desc_end = desc_start + descsz
        if desc_end > len(blob):
            break
        owner = blob[pos:name_end].rstrip(b"\0").decode("ascii", "replace")
        notes.append(Note(owner, ntype, blob[desc_start:desc_end]))
        pos = desc_end + (-descsz % pad)
    return notes


def load_writes(image: ElfImage) -> list[tuple[int, bytes]]:
    """One write per PT_LOAD segment: its file bytes plus the zero fill, at its physical address."""
    return [(s.paddr, s.image()) for s in image.segments]
