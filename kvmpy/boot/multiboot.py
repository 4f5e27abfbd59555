"""Multiboot v1 direct boot, as QEMU's ``-kernel`` does it (hw/i386/multiboot.c).

The kernel carries a multiboot header (magic 0x1BADB002, flags, checksum) 4-byte aligned within
its first 8192 bytes. With header flag 16 (the "a.out kludge") the header's address fields say
where the file goes; otherwise the file must be a 32-bit ELF whose PT_LOAD segments go to their
physical addresses. The CPU starts in flat 32-bit protected mode, paging off, with
EAX = 0x2BADB002 and EBX = the multiboot information, which kvmpy builds below 640 KiB
(``layout.MULTIBOOT_INFO_ADDR`` .. ``MULTIBOOT_INFO_END``): the information structure, the
memory map, the module list and the strings. Each initrd becomes a module, page-aligned after
the kernel, whose string is its file name as given; the kernel's command line is its own file
name, a space, then the append string (QEMU's composition).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from kvmpy import layout
from kvmpy.boot.common import (
    BOOT_SCRATCH,
    PathLike,
    align_up,
    check_disjoint,
    check_kernel_spans,
    display_name,
    encode_cmdline,
    files_label,
    read_file,
    read_files,
)
from kvmpy.boot.e820 import E820_RAM, MemoryMap
from kvmpy.boot.elfimage import EM_386, PF_X, ElfImage, is_elf, load_writes, parse_elf
from kvmpy.boot.plan import MODE_PROT32, BootPlan, BootSummary, EntryState, LoadedFile, Span
from kvmpy.boot.structs import Layout
from kvmpy.errors import ImageError, ResourceError

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192
BOOT_LOADER_NAME = "kvmpy"

# Header flags. Bits 0-15 are requirements: a loader that does not know one must refuse.
MULTIBOOT_PAGE_ALIGN = 1 << 0  # modules page-aligned: we always do
MULTIBOOT_MEMORY_INFO = 1 << 1  # mem_* fields required: we always provide them
MULTIBOOT_VIDEO_MODE = 1 << 2  # a video mode: ignored, as QEMU does
MULTIBOOT_AOUT_KLUDGE = 1 << 16  # the address fields are valid
KNOWN_REQUIRED_FLAGS = MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE

# Information flags.
MULTIBOOT_INFO_MEMORY = 1 << 0
MULTIBOOT_INFO_CMDLINE = 1 << 2
MULTIBOOT_INFO_MODS = 1 << 3
MULTIBOOT_INFO_MEM_MAP = 1 << 6
MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9

#: The multiboot header in the kernel file (48 bytes with the video fields).
MULTIBOOT_HEADER = Layout(
    "multiboot_header",
    [
        ("magic", 0, "I"),
        ("flags", 4, "I"),
        ("checksum", 8, "I"),
        ("header_addr", 12, "I"),
        ("load_addr", 16, "I"),
        ("load_end_addr", 20, "I"),
        ("bss_end_addr", 24, "I"),
        ("entry_addr", 28, "I"),
        ("mode_type", 32, "I"),
        ("width", 36, "I"),
        ("height", 40, "I"),
        ("depth", 44, "I"),
    ],
)
MULTIBOOT_HEADER_MIN = 12  # magic, flags, checksum
MULTIBOOT_HEADER_AOUT = 32  # ... through entry_addr

#: struct multiboot_info (multiboot 0.6.96, 116 bytes).
MULTIBOOT_INFO = Layout(
    "multiboot_info",
    [
        ("flags", 0, "I"),
        ("mem_lower", 4, "I"),
        ("mem_upper", 8, "I"),
        ("boot_device", 12, "I"),
        ("cmdline", 16, "I"),
        ("mods_count", 20, "I"),
        ("mods_addr", 24, "I"),
        ("syms", 28, "16s"),
        ("mmap_length", 44, "I"),
        ("mmap_addr", 48, "I"),
        ("drives_length", 52, "I"),
        ("drives_addr", 56, "I"),
        ("config_table", 60, "I"),
        ("boot_loader_name", 64, "I"),
        ("apm_table", 68, "I"),
        ("vbe_control_info", 72, "I"),
        ("vbe_mode_info", 76, "I"),
        ("vbe_mode", 80, "H"),
        ("vbe_interface_seg", 82, "H"),
        ("vbe_interface_off", 84, "H"),
        ("vbe_interface_len", 86, "H"),
        ("framebuffer_addr", 88, "Q"),
        ("framebuffer_pitch", 96, "I"),
        ("framebuffer_width", 100, "I"),
        ("framebuffer_height", 104, "I"),
        ("framebuffer_bpp", 108, "B"),
        ("framebuffer_type", 109, "B"),
        ("color_info", 110, "6s"),
    ],
)
#: struct multiboot_mod_list (16 bytes).
MULTIBOOT_MODULE = Layout(
    "multiboot_mod_list",
    [("mod_start", 0, "I"), ("mod_end", 4, "I"), ("string", 8, "I"), ("reserved", 12, "I")],
)
#: struct multiboot_mmap_entry (24 bytes); ``size`` counts the bytes after itself (20).
MULTIBOOT_MMAP_ENTRY = Layout(
    "multiboot_mmap_entry",
    [("size", 0, "I"), ("addr", 4, "Q"), ("len", 12, "Q"), ("type", 20, "I")],
)
MMAP_ENTRY_SIZE_FIELD = MULTIBOOT_MMAP_ENTRY.size - 4

INFO_AREA = Span(layout.MULTIBOOT_INFO_ADDR, layout.MULTIBOOT_INFO_END)


@dataclass(frozen=True)
class MultibootHeader:
    offset: int  # file offset of the magic
    flags: int
    fields: dict  # every header field present in the file, by name

    @property
    def aout_kludge(self) -> bool:
        return bool(self.flags & MULTIBOOT_AOUT_KLUDGE)


def find_multiboot_header(data: bytes) -> MultibootHeader | None:
    """The first valid header (magic + flags + checksum == 0 mod 2**32) in the first 8 KiB."""
    limit = min(len(data), MULTIBOOT_SEARCH)
    magic = MULTIBOOT_HEADER_MAGIC.to_bytes(4, "little")
    off = data.find(magic, 0, limit)
    while off >= 0:
        if off % 4 == 0 and off + MULTIBOOT_HEADER_MIN <= limit:
            flags = MULTIBOOT_HEADER.get(data, "flags", off)
            checksum = MULTIBOOT_HEADER.get(data, "checksum", off)
            if (MULTIBOOT_HEADER_MAGIC + flags + checksum) & 0xFFFF_FFFF == 0:
                present = {
                    f.name: MULTIBOOT_HEADER.get(data, f.name, off)
                    for f in MULTIBOOT_HEADER.fields.values()
                    if off + f.end <= len(data)
                }
                return MultibootHeader(off, flags, present)
        off = data.find(magic, off + 1, limit)
    return None


@dataclass(frozen=True)
class _Kernel:
    writes: list[tuple[int, bytes]]
    spans: list[Span]
    entry: int
    form: str


def _aout_kernel(data: bytes, hdr: MultibootHeader, name: str) -> _Kernel:
    """The a.out kludge: the header's address fields place a slice of the file in memory."""
    if hdr.offset + MULTIBOOT_HEADER_AOUT > len(data):
        raise ImageError(f"{name}: truncated: the multiboot header's address fields run past the end of file")
    f = hdr.fields
    header_addr, load_addr = f["header_addr"], f["load_addr"]
    load_end_addr, bss_end_addr, entry = f["load_end_addr"], f["bss_end_addr"], f["entry_addr"]
    if header_addr < load_addr:
        raise ImageError(
            f"{name}: bad multiboot header: header_addr {header_addr:#x} is below load_addr {load_addr:#x}"
        )
    text_offset = hdr.offset - (header_addr - load_addr)
    if text_offset < 0:
        raise ImageError(
            f"{name}: bad multiboot header: load_addr {load_addr:#x} lies before the start of the file"
        )
    if load_end_addr:
        if load_end_addr < load_addr:
            raise ImageError(
                f"{name}: bad multiboot header: load_end_addr {load_end_addr:#x} is below "
                f"load_addr {load_addr:#x}"
            )
        load_size = load_end_addr - load_addr
        if text_offset + load_size > len(data):
            raise ImageError(
                f"{name}: truncated: the multiboot header loads {load_size} bytes from file offset "
                f"{text_offset:#x} but the file has {len(data)} bytes"
            )
    else:
        load_size = len(data) - text_offset
    if bss_end_addr:
        if bss_end_addr < load_addr + load_size:
            raise ImageError(
                f"{name}: bad multiboot header: bss_end_addr {bss_end_addr:#x} is below the end of "
                f"the loaded image {load_addr + load_size:#x}"
            )
        mem_size = bss_end_addr - load_addr
    else:
        mem_size = load_size
    span = Span(load_addr, load_addr + mem_size)
    if not span.start <= entry < span.end:
        raise ImageError(f"{name}: the multiboot entry_addr {entry:#x} is outside the loaded image {span}")
    image = data[text_offset : text_offset + load_size] + bytes(mem_size - load_size)
    return _Kernel([(load_addr, image)], [span], entry, "a.out kludge")


def _elf_kernel(image: ElfImage, name: str) -> _Kernel:
    """A 32-bit ELF: PT_LOADs at p_paddr; e_entry moved to physical like QEMU's load_elf does
    when it falls in an executable segment whose virtual and physical addresses differ."""
    if image.elfclass != 32 or image.machine != EM_386:
        raise ImageError(
            f"{name}: a multiboot ELF kernel must be 32-bit i386 unless its header has the "
            f"address fields (flag 16)"
        )
    entry = image.entry
    for s in image.segments:
        if s.vaddr != s.paddr and s.flags & PF_X and s.vaddr <= image.entry < s.vaddr + len(s.data):
            entry = image.entry - s.vaddr + s.paddr
            break
    return _Kernel(load_writes(image), [s.span for s in image.segments], entry, "ELF")


def load_multiboot(
    path: PathLike,
    initrds: Sequence[PathLike],
    cmdline: str,
    memmap: MemoryMap,
    rsdp_addr: int | None = None,
    *,
    data: bytes | None = None,
) -> BootPlan:
    """Plan a multiboot v1 boot. ``rsdp_addr`` is accepted for a uniform signature and unused:
    multiboot v1 has no field for it, and kernels find the RSDP by the standard scan."""
    name = display_name(path)
    if data is None:
        data = read_file(path)
    hdr = find_multiboot_header(data)
    if hdr is None:
        raise ImageError(f"{name}: not a multiboot kernel: no multiboot header in the first 8 KiB")
    unknown = hdr.flags & 0xFFFF & ~KNOWN_REQUIRED_FLAGS
    if unknown:
        raise ImageError(
            f"{name}: the multiboot header requires features kvmpy does not provide (flags {unknown:#x})"
        )
    notes = []
    if hdr.flags & MULTIBOOT_VIDEO_MODE:
        notes.append("the kernel's video mode request (multiboot flag 2) is ignored")

    if hdr.aout_kludge:
        kern = _aout_kernel(data, hdr, name)
    elif is_elf(data):
        kern = _elf_kernel(parse_elf(data, name), name)
    else:
        raise ImageError(
            f"{name}: the multiboot header has no address fields (flag 16) and the file is not ELF"
        )
    check_kernel_spans(
        name,
        kern.spans,
        memmap,
        [("boot scratch area", BOOT_SCRATCH), ("multiboot information area", INFO_AREA)],
    )
    kernel = Span(min(s.start for s in kern.spans), max(s.end for s in kern.spans))

    loaded = read_files(initrds)
    modules: list[Span] = []
    addr = align_up(max(kernel.end, layout.HIGH_RAM_START))
    for _, blob in loaded:
        modules.append(Span(addr, addr + len(blob)))
        addr = align_up(addr + len(blob))
    if modules and not memmap.is_ram(modules[0].start, modules[-1].end):
        total = modules[-1].end - modules[0].start
        raise ResourceError(
            f"{files_label([n for n, _ in loaded])}: does not fit in guest RAM: modules need {total} bytes "
            f"from {modules[0].start:#x} but RAM below 4 GiB ends at {memmap.lowmem_end:#x}"
        )

    kernel_cmdline = display_name(path) + " " + cmdline
    info = build_multiboot_info(
        memmap,
        os.fsencode(name) + b" " + encode_cmdline(cmdline),
        [(os.fsencode(n), m) for (n, _), m in zip(loaded, modules, strict=True)],
    )
    writes = [
        (INFO_AREA.start, info),
        *kern.writes,
        *((m.start, b) for m, (_, b) in zip(modules, loaded, strict=True)),
    ]
    check_disjoint(name, writes)
    return BootPlan(
        writes=writes,
        entry=EntryState(
            MODE_PROT32, kern.entry, {"rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": INFO_AREA.start}
        ),
        summary=BootSummary(
            kind="multiboot",
            kernel_path=name,
            protocol=f"multiboot v1 ({kern.form})",
            kernel=kernel,
            initrds=tuple(LoadedFile(n, m) for (n, _), m in zip(loaded, modules, strict=True)),
            cmdline=kernel_cmdline,
            cmdline_addr=MULTIBOOT_INFO.get(info, "cmdline"),
            boot_info_addr=INFO_AREA.start,
            notes=tuple(notes),
        ),
    )


def build_multiboot_info(memmap: MemoryMap, cmdline: bytes, modules: Sequence[tuple[bytes, Span]]) -> bytes:
    """The information area at ``INFO_AREA.start``: multiboot_info, mmap, module list, strings."""
    base = INFO_AREA.start
    mmap = MULTIBOOT_MMAP_ENTRY.pack_array(
        {"size": MMAP_ENTRY_SIZE_FIELD, "addr": e.addr, "len": e.size, "type": e.type} for e in memmap.e820()
    )
    mmap_off = align_up(MULTIBOOT_INFO.size, 8)
    mods_off = align_up(mmap_off + len(mmap), 8)
    strings_off = mods_off + MULTIBOOT_MODULE.size * len(modules)

    strings = bytearray()

    def add_string(s: bytes) -> int:
        addr = base + strings_off + len(strings)
        strings.extend(s + b"\0")
        return addr

    cmdline_addr = add_string(cmdline)
    mod_list = MULTIBOOT_MODULE.pack_array(
        {"mod_start": span.start, "mod_end": span.end, "string": add_string(mod_name)}
        for mod_name, span in modules
    )
    loader_name_addr = add_string(BOOT_LOADER_NAME.encode())

    lower = next(e for e in memmap.e820() if e.addr == 0 and e.type == E820_RAM)
    mbi = MULTIBOOT_INFO.pack(
        flags=MULTIBOOT_INFO_MEMORY
        | MULTIBOOT_INFO_CMDLINE
        | MULTIBOOT_INFO_MODS
        | MULTIBOOT_INFO_MEM_MAP
        | MULTIBOOT_INFO_BOOT_LOADER_NAME,
        mem_lower=lower.size // 1024,
        mem_upper=(memmap.lowmem_end - layout.HIGH_RAM_START) // 1024,
        cmdline=cmdline_addr,
        mods_count=len(modules),
        mods_addr=base + mods_off,
        mmap_length=len(mmap),
        mmap_addr=base + mmap_off,
        boot_loader_name=loader_name_addr,
    )
    blob = bytearray(strings_off + len(strings))
    blob[: len(mbi)] = mbi
    blob[mmap_off : mmap_off + len(mmap)] = mmap
    blob[mods_off:strings_off] = mod_list
    blob[strings_off:] = strings
    if len(blob) > INFO_AREA.size:
        raise ResourceError(
            f"the multiboot information (command line, module list, memory map) takes {len(blob)} bytes "
            f"but only {INFO_AREA.size} fit between {INFO_AREA.start:#x} and {INFO_AREA.end:#x}"
        )
    return bytes(blob)
