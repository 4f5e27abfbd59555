"""Kernel format detection: one entry point that picks the right loader for a file.

Order of preference: a bzImage ("HdrS" at 0x202); an ELF file with a Xen PVH note; anything
(ELF or not) with a multiboot v1 header. An ELF file carrying both a PVH note and a multiboot
header boots through PVH.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvmpy.boot.common import PathLike, display_name, read_file
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.elf import load_pvh, pvh_entry
from kvmpy.boot.elfimage import is_elf, parse_elf
from kvmpy.boot.linux import is_bzimage, load_bzimage
from kvmpy.boot.multiboot import find_multiboot_header, load_multiboot
from kvmpy.boot.plan import BootPlan
from kvmpy.errors import ImageError

KIND_BZIMAGE = "bzimage"
KIND_PVH = "pvh"
KIND_MULTIBOOT = "multiboot"


def detect_kind(data: bytes, name: str = "kernel") -> str:
    """ "bzimage", "pvh" or "multiboot" for a kernel file's contents; ImageError otherwise."""
    if not data:
        raise ImageError(f"{name}: the file is empty, not a kernel")
    if is_bzimage(data):
        return KIND_BZIMAGE
    if is_elf(data):
        # A multiboot ELF may be malformed in ways its a.out fields make irrelevant, so only an
        # ELF without a multiboot header must parse here.
        try:
            image = parse_elf(data, name)
        except ImageError:
            if find_multiboot_header(data) is None:
                raise
            return KIND_MULTIBOOT
        if pvh_entry(image) is not None:
            return KIND_PVH
        if find_multiboot_header(data) is not None:
            return KIND_MULTIBOOT
        raise ImageError(f"{name}: an ELF file with neither a Xen PVH note nor a multiboot header")
    if find_multiboot_header(data) is not None:
        return KIND_MULTIBOOT
    raise ImageError(f"{name}: not a kernel: no bzImage header, ELF header or multiboot header")


def load_kernel(
    path: PathLike,
    initrds: Sequence[PathLike],
    cmdline: str,
    memmap: MemoryMap,
    rsdp_addr: int | None = None,
) -> BootPlan:
    """Read ``path``, recognise its format and plan its boot with ``initrds`` and ``cmdline``.

    Errors: MissingFileError (a file cannot be read), ImageError (not a kernel, bad or truncated
    header, unsupported protocol), ResourceError (kernel or initrds do not fit in guest RAM),
    UsageError (command line too long for the kernel).
    """
    name = display_name(path)
    data = read_file(path)
    kind = detect_kind(data, name)
    if kind == KIND_BZIMAGE:
        return load_bzimage(path, initrds, cmdline, memmap, rsdp_addr, data=data)
    if kind == KIND_PVH:
        return load_pvh(path, initrds, cmdline, memmap, rsdp_addr, data=data)
    return load_multiboot(path, initrds, cmdline, memmap, rsdp_addr, data=data)
