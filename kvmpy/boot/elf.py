"""Xen PVH direct boot of an ELF kernel (Linux's vmlinux, and other PVH-aware kernels).

The kernel announces PVH support with an ELF note owned by "Xen" of type
XEN_ELFNOTE_PHYS32_ENTRY (18) whose descriptor is the 32-bit physical entry address. The loader
places the PT_LOAD segments at their physical addresses and starts the CPU there in flat 32-bit
protected mode with paging off and EBX holding the address of a ``struct hvm_start_info``
(xen/include/public/arch-x86/hvm/start_info.h): the command line, the initrds as modules, the
ACPI RSDP and the memory map.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvmpy import layout
from kvmpy.boot.common import (
    BOOT_SCRATCH,
    PathLike,
    check_cmdline_fits,
    check_disjoint,
    check_kernel_spans,
    display_name,
    encode_cmdline,
    place_high,
    read_file,
    read_files,
)
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.elfimage import EM_386, EM_X86_64, ElfImage, load_writes, parse_elf
from kvmpy.boot.plan import MODE_PROT32, BootPlan, BootSummary, EntryState, LoadedFile, Span
from kvmpy.boot.structs import Layout
from kvmpy.errors import ImageError, ResourceError

XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_NOTE_OWNER = "Xen"
XEN_HVM_START_MAGIC_VALUE = 0x336EC578
HVM_START_INFO_VERSION = 1

#: struct hvm_start_info, version 1 (56 bytes).
HVM_START_INFO = Layout(
    "hvm_start_info",
    [
        ("magic", 0, "I"),
        ("version", 4, "I"),
        ("flags", 8, "I"),
        ("nr_modules", 12, "I"),
        ("modlist_paddr", 16, "Q"),
        ("cmdline_paddr", 24, "Q"),
        ("rsdp_paddr", 32, "Q"),
        ("memmap_paddr", 40, "Q"),
        ("memmap_entries", 48, "I"),
        ("reserved", 52, "I"),
    ],
)
#: struct hvm_modlist_entry (32 bytes).
HVM_MODLIST_ENTRY = Layout(
    "hvm_modlist_entry",
    [("paddr", 0, "Q"), ("size", 8, "Q"), ("cmdline_paddr", 16, "Q"), ("reserved", 24, "Q")],
)
#: struct hvm_memmap_table_entry (24 bytes); types are the e820 ones.
HVM_MEMMAP_TABLE_ENTRY = Layout(
    "hvm_memmap_table_entry",
    [("addr", 0, "Q"), ("size", 8, "Q"), ("type", 16, "I"), ("reserved", 20, "I")],
)

#: hvm_start_info, then the memory map, then the module list, all in the page the Linux loader
#: uses for the zero page (PVH has no zero page).
START_INFO_ADDR = layout.BOOT_PARAMS_ADDR
START_INFO_AREA = Span(START_INFO_ADDR, START_INFO_ADDR + 0x1000)


def pvh_entry(image: ElfImage) -> int | None:
    """The PHYS32 entry address from the Xen note, or None when the kernel has no such note."""
    for note in image.notes:
        if note.owner == XEN_NOTE_OWNER and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
            if len(note.desc) not in (4, 8):
                return -1
            return int.from_bytes(note.desc, "little")
    return None


def _align8(n: int) -> int:
    return (n + 7) & ~7


def build_start_info(
    memmap: MemoryMap, modules: Sequence[Span], cmdline_addr: int, rsdp_addr: int | None
) -> bytes:
    """hvm_start_info at START_INFO_ADDR, followed by the memory map and the module list."""
    memmap_off = _align8(HVM_START_INFO.size)
    table = memmap.e820()
    memmap_blob = HVM_MEMMAP_TABLE_ENTRY.pack_array(
        {"addr": e.addr, "size": e.size, "type": e.type} for e in table
    )
    modlist_off = _align8(memmap_off + len(memmap_blob))
    modlist_blob = HVM_MODLIST_ENTRY.pack_array({"paddr": m.start, "size": m.size} for m in modules)
    info = HVM_START_INFO.pack(
        magic=XEN_HVM_START_MAGIC_VALUE,
        version=HVM_START_INFO_VERSION,
        nr_modules=len(modules),
        modlist_paddr=START_INFO_ADDR + modlist_off if modules else 0,
        cmdline_paddr=cmdline_addr,
        rsdp_paddr=rsdp_addr or 0,
        memmap_paddr=START_INFO_ADDR + memmap_off,
        memmap_entries=len(table),
    )
    blob = bytearray(modlist_off + len(modlist_blob))
    blob[: len(info)] = info
    blob[memmap_off : memmap_off + len(memmap_blob)] = memmap_blob
    blob[modlist_off:] = modlist_blob
    if len(blob) > START_INFO_AREA.size:
        raise ResourceError(
            f"{len(modules)} initrds are too many: the PVH start info would take {len(blob)} bytes "
            f"but has a {START_INFO_AREA.size}-byte page"
        )
    return bytes(blob)


def load_pvh(
    path: PathLike,
    initrds: Sequence[PathLike],
    cmdline: str,
    memmap: MemoryMap,
    rsdp_addr: int | None = None,
    *,
    data: bytes | None = None,
    image: ElfImage | None = None,
) -> BootPlan:
    """Plan a PVH boot of the ELF kernel at ``path`` (``data``/``image``: already read/parsed)."""
    name = display_name(path)
    if image is None:
        if data is None:
            data = read_file(path)
        image = parse_elf(data, name)
    entry = pvh_entry(image)
    if entry is None:
        raise ImageError(f"{name}: the ELF file has no Xen PVH entry note")
    if not 0 <= entry < 1 << 32:
        raise ImageError(f"{name}: bad PVH entry note: the descriptor is not a 32-bit address")
    if image.machine not in (EM_386, EM_X86_64):
        raise ImageError(f"{name}: the ELF file is not an x86 kernel")
    if not any(s.span.start <= entry < s.span.end for s in image.segments):
        raise ImageError(f"{name}: the PVH entry point {entry:#x} is not inside any loaded segment")

    cmd = encode_cmdline(cmdline)
    check_cmdline_fits(cmd, layout.BOOT_CMDLINE_MAX - 1)
    cmdline_area = Span(layout.BOOT_CMDLINE_ADDR, layout.BOOT_CMDLINE_ADDR + layout.BOOT_CMDLINE_MAX)
    check_kernel_spans(
        name,
        [s.span for s in image.segments],
        memmap,
        [
            ("boot scratch area", BOOT_SCRATCH),
            ("command line area", cmdline_area),
        ],
    )

    kernel = image.span
    loaded = read_files(initrds)
    modules: list[Span] = []
    if loaded:
        names = [n for n, _ in loaded]
        starts = place_high([len(b) for _, b in loaded], kernel.end, memmap.lowmem_end, names, "module")
        modules = [Span(s, s + len(b)) for s, (_, b) in zip(starts, loaded, strict=True)]

    start_info = build_start_info(memmap, modules, layout.BOOT_CMDLINE_ADDR, rsdp_addr)
    writes = [
        (START_INFO_ADDR, start_info),
        (layout.BOOT_CMDLINE_ADDR, cmd + b"\0"),
        *load_writes(image),
        *((m.start, b) for m, (_, b) in zip(modules, loaded, strict=True)),
    ]
    check_disjoint(name, writes)

    notes = []
    if len(loaded) > 1:
        notes.append("Linux's PVH entry takes only the first module as its initrd")
    return BootPlan(
        writes=writes,
        entry=EntryState(MODE_PROT32, entry, {"rbx": START_INFO_ADDR}),
        summary=BootSummary(
            kind="pvh",
            kernel_path=name,
            protocol=f"PVH (hvm_start_info v{HVM_START_INFO_VERSION}), ELF{image.elfclass}",
            kernel=kernel,
            initrds=tuple(LoadedFile(n, m) for (n, _), m in zip(loaded, modules, strict=True)),
            cmdline=cmdline,
            cmdline_addr=layout.BOOT_CMDLINE_ADDR,
            boot_info_addr=START_INFO_ADDR,
            notes=tuple(notes),
        ),
    )
