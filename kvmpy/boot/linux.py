"""bzImage loading through the Linux x86 64-bit boot protocol.

Reference: Documentation/arch/x86/boot.rst and arch/x86/include/uapi/asm/bootparam.h. The file
starts with the real-mode setup code, ``setup_sects`` 512-byte sectors after the boot sector
(0 means 4); the protected-mode kernel follows and is loaded at 1 MiB. We skip the real-mode code
entirely and enter the 64-bit entry point (load address + 0x200) in long mode with RSI pointing
at a ``boot_params`` page ("zero page") built from the file's setup header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvmpy import layout
from kvmpy.boot.common import (
    PathLike,
    align_up,
    check_cmdline_fits,
    check_disjoint,
    display_name,
    encode_cmdline,
    files_label,
    place_high,
    read_file,
    read_files,
)
from kvmpy.boot.e820 import E820_ENTRY, MemoryMap
from kvmpy.boot.plan import MODE_LONG64, BootPlan, BootSummary, EntryState, LoadedFile, Span
from kvmpy.boot.structs import Layout
from kvmpy.errors import ImageError, ResourceError

SECTOR_SIZE = 512
SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = b"HdrS"  # at 0x202
BOOT_FLAG_MAGIC = 0xAA55  # at 0x1fe
MIN_PROTOCOL = 0x020C  # 2.12: xloadflags, hence XLF_KERNEL_64
DEFAULT_SETUP_SECTS = 4  # setup_sects == 0 means 4

# loadflags (0x211)
LOADED_HIGH = 1 << 0
KASLR_FLAG = 1 << 1
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7

# xloadflags (0x236)
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1

TYPE_OF_LOADER_UNDEFINED = 0xFF
VID_MODE_NORMAL = 0xFFFF
#: heap_end_ptr: end of the setup heap, relative to the real-mode code, minus 0x200; as QEMU
#: computes it with the real-mode code at 0x10000 and the command line at 0x20000.
HEAP_END_PTR = 0xFE00

KERNEL_LOAD_ADDR = layout.HIGH_RAM_START  # 1 MiB
ENTRY64_OFFSET = 0x200
E820_MAX_ENTRIES_ZEROPAGE = 128
BOOT_PARAMS_SIZE = 0x1000
#: The setup header ends at 0x202 + the byte at 0x201 and never runs into _pad7 / edd buffers.
SETUP_HEADER_LIMIT = 0x290

#: struct boot_params: the fields kvmpy reads or writes, at their offsets in the zero page. The
#: setup header (0x1f1..) sits at the same offsets in the bzImage file itself.
BOOT_PARAMS = Layout(
    "boot_params",
    [
        ("acpi_rsdp_addr", 0x070, "Q"),
        ("ext_ramdisk_image", 0x0C0, "I"),
        ("ext_ramdisk_size", 0x0C4, "I"),
        ("ext_cmd_line_ptr", 0x0C8, "I"),
        ("e820_entries", 0x1E8, "B"),
        ("sentinel", 0x1EF, "B"),
        # struct setup_header
        ("setup_sects", 0x1F1, "B"),
        ("root_flags", 0x1F2, "H"),
        ("syssize", 0x1F4, "I"),
        ("ram_size", 0x1F8, "H"),
        ("vid_mode", 0x1FA, "H"),
        ("root_dev", 0x1FC, "H"),
        ("boot_flag", 0x1FE, "H"),
        ("jump", 0x200, "H"),
        ("header", 0x202, "4s"),
        ("version", 0x206, "H"),
        ("realmode_swtch", 0x208, "I"),
        ("start_sys_seg", 0x20C, "H"),
        ("kernel_version", 0x20E, "H"),
        ("type_of_loader", 0x210, "B"),
        ("loadflags", 0x211, "B"),
        ("setup_move_size", 0x212, "H"),
        ("code32_start", 0x214, "I"),
        ("ramdisk_image", 0x218, "I"),
        ("ramdisk_size", 0x21C, "I"),
        ("bootsect_kludge", 0x220, "I"),
        ("heap_end_ptr", 0x224, "H"),
        ("ext_loader_ver", 0x226, "B"),
        ("ext_loader_type", 0x227, "B"),
        ("cmd_line_ptr", 0x228, "I"),
        ("initrd_addr_max", 0x22C, "I"),
        ("kernel_alignment", 0x230, "I"),
        ("relocatable_kernel", 0x234, "B"),
        ("min_alignment", 0x235, "B"),
        ("xloadflags", 0x236, "H"),
        ("cmdline_size", 0x238, "I"),
        ("hardware_subarch", 0x23C, "I"),
        ("hardware_subarch_data", 0x240, "Q"),
        ("payload_offset", 0x248, "I"),
        ("payload_length", 0x24C, "I"),
        ("setup_data", 0x250, "Q"),
        ("pref_address", 0x258, "Q"),
        ("init_size", 0x260, "I"),
        ("handover_offset", 0x264, "I"),
        ("kernel_info_offset", 0x268, "I"),
        # after the header
        ("e820_table", 0x2D0, f"{E820_MAX_ENTRIES_ZEROPAGE * E820_ENTRY.size}s"),
    ],
    size=BOOT_PARAMS_SIZE,
)


@dataclass(frozen=True)
class SetupHeader:
    """The parts of a bzImage's setup header the loader needs, already validated."""

    version: int
    setup_sects: int  # after the 0 -> 4 rule
    syssize: int
    loadflags: int
    xloadflags: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int
    pref_address: int
    init_size: int
    header_end: int  # file offset just past the setup header
    version_string: str

    @property
    def setup_size(self) -> int:
        """Bytes of real-mode code (boot sector included) before the protected-mode kernel."""
        return (self.setup_sects + 1) * SECTOR_SIZE

    @property
    def protocol(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    def runtime_start(self, load_addr: int) -> int:
        """Where the kernel decompresses to (boot.rst, "the kernel runtime start address")."""
        if self.relocatable:
            start = max(load_addr, self.pref_address)
            align = self.kernel_alignment
            return align_up(start, align) if align and align & (align - 1) == 0 else start
        return self.pref_address or load_addr


def is_bzimage(data: bytes) -> bool:
    return data[0x202:0x206] == HDRS_MAGIC


def parse_setup_header(data: bytes, name: str) -> SetupHeader:
    """Validate a bzImage's setup header for 64-bit direct boot; ImageError says what is wrong."""
    if len(data) < SECTOR_SIZE or not is_bzimage(data):
        raise ImageError(f'{name}: not a bzImage: no "HdrS" signature at offset 0x202')
    h = {f: BOOT_PARAMS.get(data, f) for f in ("setup_sects", "syssize", "boot_flag", "version")}
    if h["boot_flag"] != BOOT_FLAG_MAGIC:
        raise ImageError(f"{name}: bad setup header: boot_flag is {h['boot_flag']:#06x}, not 0xaa55")
    version = h["version"]
    proto = f"{version >> 8}.{version & 0xFF:02d}"
    if version < MIN_PROTOCOL:
        raise ImageError(f"{name}: boot protocol {proto} is too old: 64-bit direct boot needs 2.12 or newer")
    header_end = min(0x202 + data[0x201], SETUP_HEADER_LIMIT)
    if header_end < BOOT_PARAMS.fields["kernel_alignment"].end:
        raise ImageError(f"{name}: bad setup header: it ends at {header_end:#x}, before the 2.12 fields")
    setup_sects = h["setup_sects"] or DEFAULT_SETUP_SECTS
    setup_size = (setup_sects + 1) * SECTOR_SIZE
    if len(data) < setup_size:
        raise ImageError(
            f"{name}: truncated: the header declares {setup_sects} setup sectors "
            f"but the file has {len(data)} bytes"
        )
    payload_declared = h["syssize"] * 16
    if len(data) < setup_size + payload_declared:
        raise ImageError(
            f"{name}: truncated: the header declares {setup_sects} setup sectors and a "
            f"{payload_declared}-byte kernel but the file has {len(data)} bytes"
        )
    if len(data) == setup_size:
        raise ImageError(f"{name}: truncated: the file ends after the setup code, with no kernel")

    def get(field: str) -> int:
        f = BOOT_PARAMS.fields[field]
        return BOOT_PARAMS.get(data, field) if f.end <= header_end else 0

    if not get("loadflags") & LOADED_HIGH:
        raise ImageError(f"{name}: not a bzImage: it is a zImage that loads below 1 MiB")
    xloadflags = get("xloadflags")
    if not xloadflags & XLF_KERNEL_64:
        raise ImageError(f"{name}: the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear)")
    kv = get("kernel_version")
    return SetupHeader(
        version=version,
        setup_sects=setup_sects,
        syssize=h["syssize"],
        loadflags=get("loadflags"),
        xloadflags=xloadflags,
        initrd_addr_max=get("initrd_addr_max") or 0x37FF_FFFF,
        kernel_alignment=get("kernel_alignment"),
        relocatable=bool(get("relocatable_kernel")),
        cmdline_size=get("cmdline_size") or 255,
        pref_address=get("pref_address"),
        init_size=get("init_size"),
        header_end=header_end,
        version_string=_version_string(data, kv + 0x200) if kv else "",
    )


def _version_string(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset, offset + 256)
    if offset >= len(data) or end < 0:
        return ""
    return data[offset:end].decode("ascii", "replace")


def build_boot_params(
    data: bytes,
    hdr: SetupHeader,
    memmap: MemoryMap,
    cmdline_addr: int,
    ramdisk: Span | None,
    rsdp_addr: int | None,
) -> bytes:
    """The zero page: the file's setup header, then what the loader fills in."""
    zp = bytearray(BOOT_PARAMS_SIZE)
    zp[SETUP_HEADER_OFFSET : hdr.header_end] = data[SETUP_HEADER_OFFSET : hdr.header_end]
    put = BOOT_PARAMS.put
    put(zp, "vid_mode", VID_MODE_NORMAL)
    put(zp, "type_of_loader", TYPE_OF_LOADER_UNDEFINED)
    put(zp, "loadflags", hdr.loadflags | CAN_USE_HEAP)
    put(zp, "heap_end_ptr", HEAP_END_PTR)
    put(zp, "cmd_line_ptr", cmdline_addr & 0xFFFF_FFFF)
    put(zp, "ext_cmd_line_ptr", cmdline_addr >> 32)
    if ramdisk is not None:
        put(zp, "ramdisk_image", ramdisk.start & 0xFFFF_FFFF)
        put(zp, "ramdisk_size", ramdisk.size & 0xFFFF_FFFF)
        put(zp, "ext_ramdisk_image", ramdisk.start >> 32)
        put(zp, "ext_ramdisk_size", ramdisk.size >> 32)
    if rsdp_addr is not None:
        put(zp, "acpi_rsdp_addr", rsdp_addr)
    e820 = memmap.e820()
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:  # pragma: no cover - our maps have five entries
        raise ResourceError("the memory map has more e820 entries than the zero page holds")
    put(zp, "e820_entries", len(e820))
    put(zp, "e820_table", memmap.pack_e820())
    return bytes(zp)


def concat_initrds(blobs: Sequence[bytes]) -> bytes:
    """Initrds back to back, each but the last padded with zeros to 4 bytes (the cpio alignment
    the kernel's initramfs unpacker expects between concatenated archives, as GRUB does)."""
    out = bytearray()
    for i, blob in enumerate(blobs):
        out += blob
        if i < len(blobs) - 1:
            out += bytes(-len(out) % 4)
    return bytes(out)


def load_bzimage(
    path: PathLike,
    initrds: Sequence[PathLike],
    cmdline: str,
    memmap: MemoryMap,
    rsdp_addr: int | None = None,
    *,
    data: bytes | None = None,
) -> BootPlan:
    """Plan a 64-bit boot of the bzImage at ``path``; ``data`` is its contents if already read."""
    name = display_name(path)
    if data is None:
        data = read_file(path)
    hdr = parse_setup_header(data, name)
    kernel = data[hdr.setup_size :]

    load = KERNEL_LOAD_ADDR
    # boot.rst: init_size bytes from the kernel's runtime start (where it decompresses, which for
    # a relocatable kernel is at least pref_address) must stay free until it reads its memory map.
    kernel_end = load + len(kernel)
    if hdr.init_size:
        kernel_end = max(kernel_end, hdr.runtime_start(load) + hdr.init_size)
    if kernel_end > memmap.lowmem_end:
        raise ResourceError(
            f"{name}: does not fit in guest RAM: it needs memory up to {kernel_end:#x} "
            f"but RAM below 4 GiB ends at {memmap.lowmem_end:#x}"
        )

    cmd = encode_cmdline(cmdline)
    check_cmdline_fits(cmd, hdr.cmdline_size)

    loaded = read_files(initrds)
    ramdisk: Span | None = None
    placed: list[LoadedFile] = []
    writes: list[tuple[int, bytes]] = []
    if loaded:
        blob = concat_initrds([b for _, b in loaded])
        top = min(hdr.initrd_addr_max + 1, memmap.lowmem_end)
        (start,) = place_high([len(blob)], kernel_end, top, [n for n, _ in loaded])
        ramdisk = Span(start, start + len(blob))
        writes.append((start, blob))
        off = start
        for i, (n, b) in enumerate(loaded):
            placed.append(LoadedFile(n, Span(off, off + len(b))))
            off += len(b) + (-(off + len(b)) % 4 if i < len(loaded) - 1 else 0)

    zero_page = build_boot_params(data, hdr, memmap, layout.BOOT_CMDLINE_ADDR, ramdisk, rsdp_addr)
    writes[:0] = [
        (layout.BOOT_PARAMS_ADDR, zero_page),
        (layout.BOOT_CMDLINE_ADDR, cmd + b"\0"),
        (load, kernel),
    ]
    check_disjoint(name, writes)

    notes = []
    if len(loaded) > 1:
        notes.append(f"{files_label([n for n, _ in loaded])} are concatenated into one ramdisk")
    return BootPlan(
        writes=writes,
        entry=EntryState(MODE_LONG64, load + ENTRY64_OFFSET, {"rsi": layout.BOOT_PARAMS_ADDR}),
        summary=BootSummary(
            kind="bzimage",
            kernel_path=name,
            protocol=f"Linux boot protocol {hdr.protocol}",
            kernel=Span(load, kernel_end),
            initrds=tuple(placed),
            cmdline=cmdline,
            cmdline_addr=layout.BOOT_CMDLINE_ADDR,
            boot_info_addr=layout.BOOT_PARAMS_ADDR,
            version=hdr.version_string,
            notes=tuple(notes),
        ),
    )
