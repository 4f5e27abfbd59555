"""Pieces every loader shares: reading files, alignment, placing files, checking the writes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from kvmpy import layout
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.plan import Span
from kvmpy.errors import ImageError, MissingFileError, ResourceError, UsageError

PAGE_SIZE = 0x1000

#: Low memory the vCPU set-up code fills for every entry mode (GDT/IDT at 0x500, the zero page or
#: start info at 0x7000, the stack below 0x9000, page tables at 0x9000..0xEFFF): no kernel image
#: may load here.
BOOT_SCRATCH = Span(0, 0x1_0000)

PathLike = str | os.PathLike


def display_name(path: PathLike) -> str:
    """The file name as the user gave it: what every message and multiboot string shows."""
    return os.fsdecode(path)


def read_file(path: PathLike) -> bytes:
    """The whole file, or MissingFileError naming it and the reason it cannot be read."""
    name = display_name(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise MissingFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise MissingFileError(f"{name}: is a directory, not a file") from None
    except OSError as e:
        raise MissingFileError(f"{name}: cannot be read: {e.strerror or e}") from None


def read_files(paths: Sequence[PathLike]) -> list[tuple[str, bytes]]:
    return [(display_name(p), read_file(p)) for p in paths]


def align_up(value: int, align: int = PAGE_SIZE) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int = PAGE_SIZE) -> int:
    return value // align * align


def encode_cmdline(cmdline: str) -> bytes:
    """The command line as the guest sees it (UTF-8, no terminator); NUL bytes are refused."""
    if "\0" in cmdline:
        raise UsageError("the kernel command line contains a NUL character")
    return cmdline.encode("utf-8")


def files_label(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else "initrds " + " + ".join(names)


def place_high(
    sizes: Sequence[int], floor: int, top: int, names: Sequence[str], what: str = "initrd"
) -> list[int]:
    """Page-aligned start addresses for files stacked in order as high as possible below ``top``.

    Each file starts on a page boundary; the block ends at or below ``top`` and starts at or
    above ``floor`` (itself rounded up to a page). ResourceError when they do not fit.
    """
    total = sum(align_up(s) for s in sizes[:-1]) + (sizes[-1] if sizes else 0)
    base = align_down(top - total)
    low = align_up(floor)
    if base < low:
        room = max(0, top - low)
        raise ResourceError(
            f"{files_label(list(names))}: does not fit in guest RAM: {what}s need {total} bytes but only "
            f"{room} bytes are free between {low:#x} and {top:#x}"
        )
    starts = []
    addr = base
    for s in sizes:
        starts.append(addr)
        addr = align_up(addr + s)
    return starts


def check_kernel_spans(
    name: str, spans: Sequence[Span], memmap: MemoryMap, reserved: Sequence[tuple[str, Span]]
) -> None:
    """Every part of the kernel image must be in RAM and clear of the loader's own areas."""
    for span in spans:
        if span.size == 0:
            continue
        if span.end > 1 << 64 or not memmap.is_ram(span.start, span.end):
            raise ResourceError(
                f"{name}: does not fit in guest RAM: it loads at {span} but RAM is {memmap.describe_ram()}"
            )
        for label, area in reserved:
            if span.overlaps(area):
                raise ImageError(f"{name}: it loads at {span}, which overlaps the {label} at {area}")


def check_disjoint(name: str, writes: Sequence[tuple[int, bytes]]) -> None:
    """A last guard: no two writes of a plan may overlap."""
    spans = sorted((Span(gpa, gpa + len(d)) for gpa, d in writes if d), key=lambda s: s.start)
    for a, b in zip(spans, spans[1:], strict=False):
        if a.overlaps(b):
            raise ImageError(f"{name}: the boot layout would overlap itself at {a} and {b}")


def check_cmdline_fits(cmdline: bytes, limit: int) -> None:
    """``limit`` counts the characters the kernel accepts, without the terminating NUL."""
    limit = min(limit, layout.BOOT_CMDLINE_MAX - 1)
    if len(cmdline) > limit:
        raise UsageError(
            f"the kernel command line is {len(cmdline)} bytes long but at most {limit} are accepted"
        )
