"""Multiboot v1: header detection, ELF and a.out-kludge loading, the information structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.elfimage import parse_elf
from kvmpy.boot.loader import load_kernel
from kvmpy.boot.multiboot import (
    MULTIBOOT_HEADER,
    MULTIBOOT_INFO,
    MULTIBOOT_MMAP_ENTRY,
    MULTIBOOT_MODULE,
    find_multiboot_header,
    load_multiboot,
)
from kvmpy.boot.plan import Span
from kvmpy.errors import ImageError, ResourceError

try:
    from test_boot_support import have_toolchain, make_elf, multiboot_header, toolchain_build
except ImportError:  # tests/unit imported as a package
    from .test_boot_support import have_toolchain, make_elf, multiboot_header, toolchain_build

MiB = 1 << 20
AOUT = 1 << 16
INFO = layout.MULTIBOOT_INFO_ADDR


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def elf_kernel(flags: int = 0, **kw) -> bytes:
    text = multiboot_header(flags) + b"\xf4" * 0x100
    segs = kw.pop(
        "segments",
        [
            {"paddr": 0x100000, "data": text, "flags": 5},
            {"paddr": 0x102000, "data": b"DATA", "memsz": 0x3000, "flags": 6},
        ],
    )
    return make_elf(segs, elfclass=32, entry=kw.pop("entry", 0x10000C), **kw)


def mbi(plan) -> dict:
    return MULTIBOOT_INFO.unpack(plan.read(INFO, MULTIBOOT_INFO.size))


def c_string(plan, addr: int) -> bytes:
    raw = plan.read(addr, 4096)
    return raw[: raw.index(b"\0")]


# --- layouts ------------------------------------------------------------------------------


def test_layouts():
    assert MULTIBOOT_HEADER.size == 48
    assert MULTIBOOT_INFO.size == 116
    offsets = {f: MULTIBOOT_INFO.offset(f) for f in MULTIBOOT_INFO.fields}
    assert offsets["mem_lower"] == 4 and offsets["mem_upper"] == 8
    assert offsets["cmdline"] == 16 and offsets["mods_count"] == 20 and offsets["mods_addr"] == 24
    assert offsets["mmap_length"] == 44 and offsets["mmap_addr"] == 48
    assert offsets["boot_loader_name"] == 64 and offsets["framebuffer_addr"] == 88
    assert MULTIBOOT_MODULE.size == 16
    assert MULTIBOOT_MMAP_ENTRY.size == 24
    assert MULTIBOOT_MMAP_ENTRY.offset("addr") == 4 and MULTIBOOT_MMAP_ENTRY.offset("type") == 20


# --- header detection ---------------------------------------------------------------------


def test_header_found_aligned_within_8k():
    data = bytes(0x1000) + multiboot_header(3) + bytes(64)
    hdr = find_multiboot_header(data)
    assert hdr is not None and hdr.offset == 0x1000 and hdr.flags == 3


def test_header_must_be_aligned_and_checksummed():
    assert find_multiboot_header(bytes(2) + multiboot_header(0) + bytes(64)) is None
    assert find_multiboot_header(multiboot_header(0, checksum=0) + bytes(64)) is None
    assert find_multiboot_header(bytes(8192) + multiboot_header(0) + bytes(64)) is None
    # the last place a 12-byte header fits
    assert find_multiboot_header(bytes(8180) + multiboot_header(0)).offset == 8180


# --- ELF kernels --------------------------------------------------------------------------


def test_elf_plan(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    mm = MemoryMap(64 * MiB)
    plan = load_multiboot(k, [], "debug=1", mm)
    assert plan.kind == "multiboot"
    assert plan.entry.mode == "prot32"
    assert plan.entry.rip == 0x10000C
    assert dict(plan.entry.regs) == {"rax": 0x2BADB002, "rbx": INFO}
    assert plan.read(0x100000, 12) == multiboot_header(0)
    assert dict(plan.writes)[0x102000] == b"DATA" + bytes(0x3000 - 4)  # bss zero-filled
    assert plan.summary.kernel == Span(0x100000, 0x105000)
    assert plan.summary.protocol == "multiboot v1 (ELF)"

    info = mbi(plan)
    assert info["flags"] == (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)
    assert info["mem_lower"] == 639
    assert info["mem_upper"] == (64 * MiB - 1 * MiB) // 1024
    assert c_string(plan, info["cmdline"]) == k.encode() + b" debug=1"
    assert plan.summary.cmdline == k + " debug=1"
    assert c_string(plan, info["boot_loader_name"]) == b"kvmpy"
    assert info["mods_count"] == 0
    # mmap: entries preceded by their size field (20)
    n = info["mmap_length"] // 24
    assert n * 24 == info["mmap_length"] == 4 * 24
    entries = MULTIBOOT_MMAP_ENTRY.unpack_array(plan.read(info["mmap_addr"], info["mmap_length"]), n)
    assert [(e["size"], e["addr"], e["len"], e["type"]) for e in entries] == [
        (20, x.addr, x.size, x.type) for x in mm.e820()
    ]


def test_empty_append_string_keeps_qemus_trailing_space(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    plan = load_multiboot(k, [], "", MemoryMap(64 * MiB))
    assert c_string(plan, mbi(plan)["cmdline"]) == k.encode() + b" "


def test_relative_kernel_name_is_kept_as_given(tmp_path, monkeypatch):
    write(tmp_path, "kernel.elf", elf_kernel())
    monkeypatch.chdir(tmp_path)
    plan = load_multiboot("kernel.elf", [], "a b", MemoryMap(64 * MiB))
    assert c_string(plan, mbi(plan)["cmdline"]) == b"kernel.elf a b"


def test_modules(tmp_path, monkeypatch):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    write(tmp_path, "mod1.bin", b"1" * 5000)
    write(tmp_path, "mod2.bin", b"2" * 10)
    monkeypatch.chdir(tmp_path)
    plan = load_multiboot(k, ["mod1.bin", "./mod2.bin"], "", MemoryMap(64 * MiB))
    info = mbi(plan)
    assert info["mods_count"] == 2
    mods = MULTIBOOT_MODULE.unpack_array(plan.read(info["mods_addr"], 32), 2)
    # page-aligned after the kernel's highest loaded address (bss included: 0x105000)
    assert mods[0]["mod_start"] == 0x105000 and mods[0]["mod_end"] == 0x105000 + 5000
    assert mods[1]["mod_start"] == 0x107000 and mods[1]["mod_end"] == 0x107000 + 10
    assert [c_string(plan, m["string"]) for m in mods] == [b"mod1.bin", b"./mod2.bin"]
    assert plan.read(0x105000, 5000) == b"1" * 5000
    assert plan.read(0x107000, 10) == b"2" * 10
    assert [m["reserved"] for m in mods] == [0, 0]
    assert [f.path for f in plan.summary.initrds] == ["mod1.bin", "./mod2.bin"]


def test_everything_in_the_info_area(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    m = write(tmp_path, "m", b"m")
    plan = load_multiboot(k, [m, m, m], "x" * 1000, MemoryMap(64 * MiB))
    (info_write,) = [(a, d) for a, d in plan.writes if a == INFO]
    assert INFO + len(info_write[1]) <= layout.MULTIBOOT_INFO_END
    info = mbi(plan)
    for addr in (info["cmdline"], info["mods_addr"], info["mmap_addr"], info["boot_loader_name"]):
        assert INFO <= addr < INFO + len(info_write[1])


def test_cmdline_too_big_for_the_info_area(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    with pytest.raises(ResourceError, match="multiboot information"):
        load_multiboot(k, [], "x" * (layout.MULTIBOOT_INFO_END - INFO), MemoryMap(64 * MiB))


def test_modules_too_big(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel())
    big = write(tmp_path, "big.bin", b"x" * (16 * MiB))
    with pytest.raises(ResourceError, match=r"big\.bin: does not fit in guest RAM"):
        load_multiboot(k, [big], "", MemoryMap(16 * MiB))


def test_higher_half_entry_is_made_physical(tmp_path):
    segs = [{"paddr": 0x100000, "vaddr": 0xC0100000, "data": multiboot_header(0) + b"\x90" * 64, "flags": 5}]
    k = write(tmp_path, "hh.elf", make_elf(segs, elfclass=32, entry=0xC0100010))
    assert load_multiboot(k, [], "", MemoryMap(64 * MiB)).entry.rip == 0x100010


def test_elf64_without_address_fields_is_refused(tmp_path):
    segs = [{"paddr": 0x100000, "data": multiboot_header(0) + b"\x90" * 64}]
    k = write(tmp_path, "k64.elf", make_elf(segs, elfclass=64, entry=0x100000))
    with pytest.raises(ImageError, match="must be 32-bit"):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


def test_kernel_over_the_info_area(tmp_path):
    segs = [{"paddr": 0x40000, "data": multiboot_header(0) + b"\x90" * 64}]
    k = write(tmp_path, "low.elf", make_elf(segs, elfclass=32, entry=0x40000))
    with pytest.raises(ImageError, match="overlaps the multiboot information area"):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


def test_elf_segment_past_end_of_file(tmp_path):
    data = elf_kernel()
    k = write(tmp_path, "k.elf", data[:0x100])
    with pytest.raises(ImageError, match="k.elf: truncated"):
        load_kernel(k, [], "", MemoryMap(64 * MiB))


# --- header flags -------------------------------------------------------------------------


def test_memory_info_and_page_align_flags_are_honoured(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel(flags=3))
    assert mbi(load_multiboot(k, [], "", MemoryMap(64 * MiB)))["flags"] & 1


def test_video_mode_flag_is_ignored_with_a_note(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel(flags=4))
    plan = load_multiboot(k, [], "", MemoryMap(64 * MiB))
    assert any("video mode" in n for n in plan.summary.notes)


def test_unknown_required_flag_is_refused(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel(flags=1 << 3))
    with pytest.raises(ImageError, match=r"requires features kvmpy does not provide \(flags 0x8\)"):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


def test_unknown_optional_flag_is_fine(tmp_path):
    k = write(tmp_path, "kernel.elf", elf_kernel(flags=1 << 20))
    load_multiboot(k, [], "", MemoryMap(64 * MiB))


# --- the a.out kludge ---------------------------------------------------------------------


def aout_image(
    header_off=0x40, load_addr=0x100000, load_end=0, bss_end=0, entry=None, size=0x1000, flags=AOUT
):
    header_addr = load_addr + header_off
    entry = load_addr + 0x80 if entry is None else entry
    body = bytearray(size)
    for i in range(size):
        body[i] = i & 0xFF
    hdr = multiboot_header(flags, header_addr, load_addr, load_end, bss_end, entry)
    body[header_off : header_off + len(hdr)] = hdr
    return bytes(body)


def test_aout_whole_file(tmp_path):
    data = aout_image()
    k = write(tmp_path, "kernel.bin", data)
    plan = load_kernel(k, [], "", MemoryMap(64 * MiB))
    assert plan.kind == "multiboot"
    assert plan.summary.protocol == "multiboot v1 (a.out kludge)"
    assert plan.entry.rip == 0x100080
    assert dict(plan.writes)[0x100000] == data
    assert plan.summary.kernel == Span(0x100000, 0x101000)


def test_aout_slice_and_bss(tmp_path):
    # the file starts 0x20 bytes before load_addr's content: header at file 0x40 = load_addr + 0x20
    data = aout_image(header_off=0x40)
    hdr = multiboot_header(AOUT, 0x100020, 0x100000, 0x100200, 0x103000, 0x100030)
    body = bytearray(data)
    body[0x40 : 0x40 + len(hdr)] = hdr
    k = write(tmp_path, "kernel.bin", bytes(body))
    plan = load_multiboot(k, [], "", MemoryMap(64 * MiB))
    image = dict(plan.writes)[0x100000]
    assert image[:0x200] == bytes(body[0x20:0x220])  # text starts at file offset 0x40 - 0x20
    assert image[0x200:] == bytes(0x2E00)
    assert plan.summary.kernel == Span(0x100000, 0x103000)
    m = write(tmp_path, "m", b"z")
    plan = load_multiboot(k, [m], "", MemoryMap(64 * MiB))
    assert plan.summary.initrds[0].span.start == 0x103000


def test_aout_kludge_wins_in_an_elf_file(tmp_path):
    # QEMU checks flag 16 before looking at the ELF headers
    segs = [{"paddr": 0x300000, "data": bytes(0x200)}]
    elf = bytearray(make_elf(segs, elfclass=64, entry=0x300000))
    off = 0x100
    hdr = multiboot_header(AOUT, 0x100000 + off, 0x100000, 0, 0, 0x100000 + off + 32)
    elf[off : off + len(hdr)] = hdr
    k = write(tmp_path, "k.elf", bytes(elf))
    plan = load_kernel(k, [], "", MemoryMap(64 * MiB))
    assert plan.summary.protocol == "multiboot v1 (a.out kludge)"
    assert plan.entry.rip == 0x100000 + off + 32
    assert dict(plan.writes)[0x100000] == bytes(elf)


@pytest.mark.parametrize(
    "fields,message",
    [
        ((0x100000, 0x100040, 0, 0, 0x100080), "header_addr 0x100000 is below load_addr"),
        ((0x200040, 0x100000, 0, 0, 0x100080), "lies before the start of the file"),
        ((0x100040, 0x100000, 0xFF000, 0, 0x100080), "load_end_addr 0xff000 is below"),
        ((0x100040, 0x100000, 0x100800, 0x100400, 0x100080), "bss_end_addr 0x100400 is below"),
        ((0x100040, 0x100000, 0x102000, 0, 0x100080), "truncated"),
        ((0x100040, 0x100000, 0, 0, 0x200000), "entry_addr 0x200000 is outside"),
    ],
)
def test_aout_errors(tmp_path, fields, message):
    body = bytearray(0x1000)
    hdr = multiboot_header(AOUT, *fields)
    body[0x40 : 0x40 + len(hdr)] = hdr
    k = write(tmp_path, "kernel.bin", bytes(body))
    with pytest.raises(ImageError, match=message):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


def test_aout_address_fields_cut_off(tmp_path):
    k = write(tmp_path, "kernel.bin", bytes(0x40) + multiboot_header(AOUT, 0x100040))
    with pytest.raises(ImageError, match="truncated"):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


def test_raw_binary_without_address_fields(tmp_path):
    k = write(tmp_path, "kernel.bin", multiboot_header(0) + bytes(100))
    with pytest.raises(ImageError, match="no address fields"):
        load_kernel(k, [], "", MemoryMap(64 * MiB))


def test_aout_outside_ram(tmp_path):
    k = write(tmp_path, "kernel.bin", aout_image(load_addr=0x8000000))
    with pytest.raises(ResourceError, match="does not fit in guest RAM"):
        load_multiboot(k, [], "", MemoryMap(64 * MiB))


# --- a kernel built by the system toolchain ------------------------------------------------


@pytest.mark.skipif(not have_toolchain(), reason="needs the system as and ld")
def test_toolchain_built_multiboot_elf(tmp_path):
    src = """
        .section .multiboot, "a"
        .balign 4
        .long 0x1BADB002, 3, -(0x1BADB002 + 3)
        .text
        .code32
        .globl _start
    _start:
        cmpl $0x2BADB002, %eax
        hlt
        .bss
        .space 0x2000
    """
    script = tmp_path / "k.ld"
    script.write_text(
        "ENTRY(_start) SECTIONS { . = 0x100000; .text : { *(.multiboot) *(.text) } .bss : { *(.bss) } }"
    )
    elf = toolchain_build(tmp_path, src, bits=32, ldflags=["-T", str(script)])
    k = write(tmp_path, "mb.elf", elf)
    rd = write(tmp_path, "rd", b"r" * 100)
    plan = load_kernel(k, [rd], "hello", MemoryMap(32 * MiB))
    assert plan.kind == "multiboot"
    assert plan.entry.rip == parse_elf(elf, "mb.elf").entry == 0x10000C
    assert plan.read(0x10000C, 1) == b"\x3d"  # cmp $imm32, %eax
    mod = MULTIBOOT_MODULE.unpack(plan.read(mbi(plan)["mods_addr"], 16))
    assert mod["mod_start"] % 4096 == 0 and mod["mod_start"] >= plan.summary.kernel.end
    assert plan.summary.kernel.end >= 0x100000 + 0x2000


def test_bogus_section_headers_do_not_matter(tmp_path):
    data = bytearray(elf_kernel())
    data[0x20:0x24] = (0x7FFFFFF0).to_bytes(4, "little")  # e_shoff far past the end
    data[0x30:0x32] = (5).to_bytes(2, "little")  # e_shnum
    k = write(tmp_path, "k.elf", bytes(data))
    assert load_kernel(k, [], "", MemoryMap(64 * MiB)).kind == "multiboot"
