"""PVH boot of ELF kernels: segment loading, hvm_start_info contents, modules, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.elf import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_INFO,
    START_INFO_ADDR,
    XEN_HVM_START_MAGIC_VALUE,
    load_pvh,
)
from kvmpy.boot.elfimage import parse_elf, parse_notes
from kvmpy.boot.loader import load_kernel
from kvmpy.boot.plan import Span
from kvmpy.errors import ImageError, ResourceError

try:
    from test_boot_support import have_toolchain, make_elf, multiboot_header, toolchain_build
except ImportError:  # tests/unit imported as a package
    from .test_boot_support import have_toolchain, make_elf, multiboot_header, toolchain_build

MiB = 1 << 20
ENTRY = 0x1000040


def pvh_note(addr: int, size: int = 8):
    return ("Xen", 18, addr.to_bytes(size, "little"))


def pvh_kernel(**kw) -> bytes:
    segs = kw.pop(
        "segments",
        [
            {"paddr": 0x1000000, "vaddr": 0xFFFFFFFF81000000, "data": b"\xf4" * 0x3000, "flags": 5},
            {
                "paddr": 0x1004000,
                "vaddr": 0xFFFFFFFF81004000,
                "data": b"D" * 0x100,
                "memsz": 0x2000,
                "flags": 6,
            },
        ],
    )
    notes = kw.pop("notes", [("GNU", 3, b"buildid!"), pvh_note(ENTRY)])
    return make_elf(segs, notes=notes, entry=0xFFFFFFFF81000000, **kw)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def start_info(plan) -> dict:
    return HVM_START_INFO.unpack(plan.read(START_INFO_ADDR, HVM_START_INFO.size))


def c_string(plan, addr: int) -> bytes:
    raw = plan.read(addr, 4096)
    return raw[: raw.index(b"\0")]


def test_layouts_match_start_info_h():
    assert HVM_START_INFO.size == 56
    assert [HVM_START_INFO.offset(f) for f in HVM_START_INFO.fields] == [0, 4, 8, 12, 16, 24, 32, 40, 48, 52]
    assert HVM_MODLIST_ENTRY.size == 32
    modlist = ("paddr", "size", "cmdline_paddr", "reserved")
    assert [HVM_MODLIST_ENTRY.offset(f) for f in modlist] == [0, 8, 16, 24]
    assert HVM_MEMMAP_TABLE_ENTRY.size == 24
    assert [HVM_MEMMAP_TABLE_ENTRY.offset(f) for f in ("addr", "size", "type", "reserved")] == [0, 8, 16, 20]


def test_elf64_pvh_plan(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel())
    mm = MemoryMap(128 * MiB)
    plan = load_pvh(k, [], "console=hvc0", mm, rsdp_addr=0xE0000)
    assert plan.kind == "pvh"
    assert plan.entry.mode == "prot32"
    assert plan.entry.rip == ENTRY
    assert dict(plan.entry.regs) == {"rbx": START_INFO_ADDR}
    # segments at p_paddr, zero-filled past p_filesz
    assert plan.read(0x1000000, 0x3000) == b"\xf4" * 0x3000
    writes = dict(plan.writes)
    assert writes[0x1004000] == b"D" * 0x100 + bytes(0x2000 - 0x100)
    assert plan.summary.kernel == Span(0x1000000, 0x1006000)

    si = start_info(plan)
    assert si["magic"] == XEN_HVM_START_MAGIC_VALUE == 0x336EC578
    assert si["version"] == 1
    assert si["flags"] == 0
    assert si["nr_modules"] == 0 and si["modlist_paddr"] == 0
    assert si["rsdp_paddr"] == 0xE0000
    assert si["cmdline_paddr"] == layout.BOOT_CMDLINE_ADDR
    assert c_string(plan, si["cmdline_paddr"]) == b"console=hvc0"
    assert si["memmap_entries"] == 4
    table = HVM_MEMMAP_TABLE_ENTRY.unpack_array(plan.read(si["memmap_paddr"], 4 * 24), 4)
    assert [(e["addr"], e["size"], e["type"], e["reserved"]) for e in table] == [
        (x.addr, x.size, x.type, 0) for x in mm.e820()
    ]
    assert si["reserved"] == 0


def test_no_rsdp(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel())
    assert start_info(load_pvh(k, [], "", MemoryMap(64 * MiB)))["rsdp_paddr"] == 0


def test_elf32_with_4_byte_note(tmp_path):
    segs = [{"paddr": 0x200000, "data": b"\x90" * 64}]
    k = write(tmp_path, "k32", make_elf(segs, elfclass=32, notes=[pvh_note(0x200010, 4)], entry=0x200000))
    plan = load_pvh(k, [], "", MemoryMap(64 * MiB))
    assert plan.entry.rip == 0x200010
    assert "ELF32" in plan.summary.protocol


def test_modules(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel())
    a = write(tmp_path, "a.img", b"A" * 5000)
    b = write(tmp_path, "b.img", b"B" * 123)
    plan = load_pvh(k, [a, b], "", MemoryMap(64 * MiB))
    si = start_info(plan)
    assert si["nr_modules"] == 2
    mods = HVM_MODLIST_ENTRY.unpack_array(plan.read(si["modlist_paddr"], 64), 2)
    assert [m["size"] for m in mods] == [5000, 123]
    for m, content in zip(mods, (b"A" * 5000, b"B" * 123), strict=True):
        assert m["paddr"] % 4096 == 0
        assert m["paddr"] >= plan.summary.kernel.end
        assert plan.read(m["paddr"], m["size"]) == content
        assert m["cmdline_paddr"] == 0 and m["reserved"] == 0
    assert mods[1]["paddr"] + 123 <= 64 * MiB
    assert mods[1]["paddr"] == (64 * MiB - 123) // 4096 * 4096  # packed as high as possible
    assert [f.path for f in plan.summary.initrds] == [a, b]
    assert any("first module" in n for n in plan.summary.notes)


def test_modules_too_big(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel())
    big = write(tmp_path, "big.img", b"x" * (48 * MiB))
    with pytest.raises(ResourceError, match=r"big\.img: does not fit in guest RAM"):
        load_pvh(k, [big], "", MemoryMap(64 * MiB))


def test_segment_outside_ram(tmp_path):
    segs = [{"paddr": 0x8000000, "data": b"\x90" * 16}]
    k = write(tmp_path, "vmlinux", make_elf(segs, notes=[pvh_note(0x8000000)]))
    with pytest.raises(ResourceError, match="vmlinux: does not fit in guest RAM"):
        load_pvh(k, [], "", MemoryMap(64 * MiB))


def test_segment_over_boot_scratch(tmp_path):
    segs = [{"paddr": 0x7000, "data": b"\x90" * 16}]
    k = write(tmp_path, "vmlinux", make_elf(segs, notes=[pvh_note(0x7000)]))
    with pytest.raises(ImageError, match="overlaps the boot scratch area"):
        load_pvh(k, [], "", MemoryMap(64 * MiB))


def test_truncated_segment(tmp_path):
    data = pvh_kernel()
    # cut inside the first segment's bytes, keeping the headers
    k = write(tmp_path, "vmlinux", data[:0x200])
    with pytest.raises(ImageError, match="vmlinux: truncated"):
        load_pvh(k, [], "", MemoryMap(64 * MiB))


def test_truncated_headers(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel()[:70])
    with pytest.raises(ImageError, match="vmlinux: "):
        load_pvh(k, [], "", MemoryMap(64 * MiB))


def test_entry_outside_segments(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel(notes=[pvh_note(0x5000000)]))
    with pytest.raises(ImageError, match="not inside any loaded segment"):
        load_pvh(k, [], "", MemoryMap(128 * MiB))


def test_no_note(tmp_path):
    k = write(tmp_path, "vmlinux", pvh_kernel(notes=[("GNU", 3, b"x")]))
    with pytest.raises(ImageError, match="no Xen PVH entry note"):
        load_pvh(k, [], "", MemoryMap(64 * MiB))


def test_pvh_preferred_over_multiboot(tmp_path):
    text = multiboot_header(0) + b"\x90" * 32
    segs = [{"paddr": 0x100000, "data": text}]
    k = write(tmp_path, "both", make_elf(segs, elfclass=32, notes=[pvh_note(0x100010, 4)], entry=0x100000))
    assert load_kernel(k, [], "", MemoryMap(64 * MiB)).kind == "pvh"


def test_note_parser_handles_padding():
    blob = struct.pack("<III", 4, 3, 18) + b"Xen\0" + b"abc\0" + struct.pack("<III", 5, 0, 1) + b"Linux\0\0\0"
    notes = parse_notes(blob)
    assert [(n.owner, n.type, n.desc) for n in notes] == [("Xen", 18, b"abc"), ("Linux", 1, b"")]
    assert [n.owner for n in parse_notes(blob[:-3])] == ["Xen"]  # a cut-off note is dropped
    assert parse_notes(b"\x01\x02") == []


LD_WITH_PT_NOTE = "ENTRY(pvh_start) SECTIONS { . = 0x200000; .text : { *(.text) } .note : { *(.note.Xen) } }"
# No PT_NOTE program header: the loader must find the note through its SHT_NOTE section.
LD_SECTION_ONLY = (
    "ENTRY(pvh_start) PHDRS { text PT_LOAD; } "
    "SECTIONS { . = 0x200000; .text : { *(.text) } :text .note : { *(.note.Xen) } :text }"
)


@pytest.mark.skipif(not have_toolchain(), reason="needs the system as and ld")
@pytest.mark.parametrize("script_text", [LD_WITH_PT_NOTE, LD_SECTION_ONLY], ids=["pt_note", "sht_note"])
def test_toolchain_built_pvh_kernel(tmp_path, script_text):
    src = """
        .section .note.Xen, "a", @note
        .balign 4
        .long 4, 4, 18
        .asciz "Xen"
        .long pvh_start
        .text
        .code32
        .globl pvh_start
    pvh_start:
        hlt
        jmp pvh_start
    """
    script = tmp_path / "k.ld"
    script.write_text(script_text)
    elf = toolchain_build(tmp_path, src, bits=32, ldflags=["-T", str(script)])
    image = parse_elf(elf, "k")
    k = write(tmp_path, "pvh.elf", elf)
    plan = load_kernel(k, [], "", MemoryMap(64 * MiB))
    assert plan.kind == "pvh"
    assert plan.entry.rip == image.entry  # the note names the same symbol as e_entry
    assert plan.read(plan.entry.rip, 1) == b"\xf4"
    assert any(n.owner == "Xen" and n.type == 18 for n in image.notes)
