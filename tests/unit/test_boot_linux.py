"""bzImage loading: boot_params layout and contents, initrd placement, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.boot.e820 import E820_ENTRY, MemoryMap
from kvmpy.boot.linux import (
    BOOT_PARAMS,
    CAN_USE_HEAP,
    LOADED_HIGH,
    load_bzimage,
    parse_setup_header,
)
from kvmpy.boot.loader import load_kernel
from kvmpy.boot.plan import Span
from kvmpy.errors import ImageError, MissingFileError, ResourceError, UsageError

try:
    from test_boot_support import make_bzimage
except ImportError:  # tests/unit imported as a package
    from .test_boot_support import make_bzimage

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parents[2]
DEBIAN_KERNEL = REPO / "build" / "debian" / "vmlinuz"


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def zero_page(plan) -> bytes:
    return plan.read(layout.BOOT_PARAMS_ADDR, 4096)


def field(zp: bytes, name: str):
    return BOOT_PARAMS.get(zp, name)


# --- the declared layout ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,offset,size",
    [
        ("acpi_rsdp_addr", 0x070, 8),
        ("ext_ramdisk_image", 0x0C0, 4),
        ("ext_ramdisk_size", 0x0C4, 4),
        ("ext_cmd_line_ptr", 0x0C8, 4),
        ("e820_entries", 0x1E8, 1),
        ("setup_sects", 0x1F1, 1),
        ("syssize", 0x1F4, 4),
        ("vid_mode", 0x1FA, 2),
        ("boot_flag", 0x1FE, 2),
        ("header", 0x202, 4),
        ("version", 0x206, 2),
        ("type_of_loader", 0x210, 1),
        ("loadflags", 0x211, 1),
        ("ramdisk_image", 0x218, 4),
        ("ramdisk_size", 0x21C, 4),
        ("heap_end_ptr", 0x224, 2),
        ("cmd_line_ptr", 0x228, 4),
        ("initrd_addr_max", 0x22C, 4),
        ("kernel_alignment", 0x230, 4),
        ("relocatable_kernel", 0x234, 1),
        ("xloadflags", 0x236, 2),
        ("cmdline_size", 0x238, 4),
        ("pref_address", 0x258, 8),
        ("init_size", 0x260, 4),
        ("kernel_info_offset", 0x268, 4),
        ("e820_table", 0x2D0, 128 * 20),
    ],
)
def test_boot_params_offsets(name, offset, size):
    assert BOOT_PARAMS.offset(name) == offset
    assert BOOT_PARAMS.field_size(name) == size


def test_boot_params_is_one_page_and_e820_table_fits():
    assert BOOT_PARAMS.size == 4096
    assert BOOT_PARAMS.fields["e820_table"].end == 0xCD0


# --- a good bzImage -----------------------------------------------------------------------


def test_basic_plan(tmp_path):
    payload = bytes(range(256)) * 64
    k = write(tmp_path, "bzImage", make_bzimage(payload, setup_sects=9))
    plan = load_bzimage(k, [], "console=ttyS0 quiet", MemoryMap(128 * MiB))
    assert plan.kind == "bzimage"
    assert plan.entry.mode == "long64"
    assert plan.entry.rip == 0x100200
    assert dict(plan.entry.regs) == {"rsi": layout.BOOT_PARAMS_ADDR}
    writes = dict(plan.writes)
    assert writes[0x100000] == payload  # the protected-mode kernel, after (9 + 1) sectors
    assert writes[layout.BOOT_CMDLINE_ADDR] == b"console=ttyS0 quiet\0"
    assert len(writes[layout.BOOT_PARAMS_ADDR]) == 4096
    s = plan.summary
    assert s.kernel == Span(0x100000, 0x100000 + len(payload))
    assert s.cmdline == "console=ttyS0 quiet" and s.cmdline_addr == 0x20000
    assert s.protocol == "Linux boot protocol 2.15"
    assert s.version == "6.99.0-test (kvmpy) #1"
    assert s.initrds == ()


def test_zero_page_contents(tmp_path):
    data = make_bzimage(b"\xcc" * 8192, setup_sects=4)
    k = write(tmp_path, "bzImage", data)
    mm = MemoryMap(128 * MiB)
    zp = zero_page(load_bzimage(k, [], "x", mm, rsdp_addr=0xE0000))
    # the file's setup header is copied in (0x1f1 up to 0x202 + jump offset)
    assert zp[0x1F1 : 0x202 + 0x6A] != data[0x1F1 : 0x202 + 0x6A]  # some fields were filled in
    for name in (
        "setup_sects",
        "syssize",
        "root_dev",
        "header",
        "version",
        "kernel_alignment",
        "pref_address",
        "xloadflags",
        "cmdline_size",
        "initrd_addr_max",
        "code32_start",
    ):
        assert field(zp, name) == BOOT_PARAMS.get(data, name), name
    assert field(zp, "type_of_loader") == 0xFF
    assert field(zp, "loadflags") == LOADED_HIGH | CAN_USE_HEAP
    assert field(zp, "heap_end_ptr") == 0xFE00
    assert field(zp, "vid_mode") == 0xFFFF
    assert field(zp, "cmd_line_ptr") == layout.BOOT_CMDLINE_ADDR
    assert field(zp, "ext_cmd_line_ptr") == 0
    assert field(zp, "ramdisk_image") == 0 and field(zp, "ramdisk_size") == 0
    assert field(zp, "acpi_rsdp_addr") == 0xE0000
    assert field(zp, "sentinel") == 0
    # e820
    assert field(zp, "e820_entries") == 4
    table = E820_ENTRY.unpack_array(zp, 4, base=0x2D0)
    assert [(e["addr"], e["size"], e["type"]) for e in table] == [(x.addr, x.size, x.type) for x in mm.e820()]
    assert zp[0x2D0 + 4 * 20 : 0xCD0] == bytes(0xCD0 - 0x2D0 - 80)


def test_rsdp_left_zero_when_not_given(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage())
    assert field(zero_page(load_bzimage(k, [], "", MemoryMap(64 * MiB))), "acpi_rsdp_addr") == 0


def test_only_the_setup_header_is_copied(tmp_path):
    # bytes past the header's end (0x202 + jump offset) belong to setup code, not boot_params
    data = bytearray(make_bzimage(header_jump=0x66))  # header ends at 0x268
    data[0x268:0x290] = b"\xee" * 0x28
    data[0x1E8] = 0x55  # outside the header, before it
    k = write(tmp_path, "bzImage", bytes(data))
    zp = zero_page(load_bzimage(k, [], "", MemoryMap(64 * MiB)))
    assert zp[0x268:0x290] == bytes(0x28)
    assert field(zp, "e820_entries") == 4


def test_setup_sects_zero_means_four(tmp_path):
    payload = b"\xab" * 1024
    data = make_bzimage(payload, setup_sects=0)
    assert len(data) == 5 * 512 + len(payload)
    k = write(tmp_path, "bzImage", data)
    plan = load_bzimage(k, [], "", MemoryMap(64 * MiB))
    assert dict(plan.writes)[0x100000] == payload


# --- initrds ------------------------------------------------------------------------------


def test_initrd_placed_high_and_page_aligned(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage())
    rd = write(tmp_path, "initrd.img", b"\x17" * 10000)
    plan = load_bzimage(k, [rd], "", MemoryMap(64 * MiB))
    zp = zero_page(plan)
    start, size = field(zp, "ramdisk_image"), field(zp, "ramdisk_size")
    assert size == 10000
    assert start % 4096 == 0
    assert start + size <= 64 * MiB
    assert start == (64 * MiB - 10000) // 4096 * 4096  # as high as possible
    assert plan.read(start, size) == b"\x17" * 10000
    assert plan.summary.initrds[0].path == rd
    assert plan.summary.initrds[0].span == Span(start, start + size)
    assert field(zp, "ext_ramdisk_image") == 0 and field(zp, "ext_ramdisk_size") == 0


def test_initrd_respects_initrd_addr_max(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(initrd_addr_max=32 * MiB - 1))
    rd = write(tmp_path, "initrd.img", b"x" * 5000)
    zp = zero_page(load_bzimage(k, [rd], "", MemoryMap(256 * MiB)))
    start, size = field(zp, "ramdisk_image"), field(zp, "ramdisk_size")
    assert start + size <= 32 * MiB
    assert start == (32 * MiB - 5000) // 4096 * 4096


def test_initrd_below_the_pci_hole_on_big_guests(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(initrd_addr_max=0xFFFF_FFFF))
    rd = write(tmp_path, "initrd.img", b"x" * 5000)
    plan = load_bzimage(k, [rd], "", MemoryMap(6 * GiB))
    zp = zero_page(plan)
    assert field(zp, "ramdisk_image") + 5000 <= layout.LOWMEM_LIMIT
    assert field(zp, "e820_entries") == 5


def test_initrds_are_concatenated_with_4_byte_padding(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage())
    a = write(tmp_path, "a.cpio", b"A" * 1001)
    b = write(tmp_path, "b.cpio", b"B" * 50)
    c = write(tmp_path, "c.cpio", b"C" * 7)
    plan = load_bzimage(k, [a, b, c], "", MemoryMap(64 * MiB))
    zp = zero_page(plan)
    start, size = field(zp, "ramdisk_image"), field(zp, "ramdisk_size")
    expected = b"A" * 1001 + bytes(3) + b"B" * 50 + bytes(2) + b"C" * 7
    assert size == len(expected)
    assert plan.read(start, size) == expected
    spans = [f.span for f in plan.summary.initrds]
    assert spans == [
        Span(start, start + 1001),
        Span(start + 1004, start + 1054),
        Span(start + 1056, start + 1063),
    ]
    assert any("concatenated" in n for n in plan.summary.notes)


def test_initrd_stays_above_the_kernel_init_area(tmp_path):
    # relocatable kernel, pref_address 16 MiB: it decompresses into [16 MiB, 16 MiB + init_size)
    init_size = 20 * MiB
    k = write(tmp_path, "bzImage", make_bzimage(init_size=init_size, pref_address=16 * MiB))
    plan = load_bzimage(k, [], "", MemoryMap(64 * MiB))
    assert plan.summary.kernel == Span(0x100000, 36 * MiB)
    big = write(tmp_path, "big.img", b"x" * (28 * MiB + 1))  # 64 - 36 = 28 MiB free
    with pytest.raises(ResourceError) as e:
        load_bzimage(k, [big], "", MemoryMap(64 * MiB))
    assert str(e.value).startswith(f"{big}: does not fit in guest RAM")
    fits = write(tmp_path, "fits.img", b"x" * (28 * MiB))
    zp = zero_page(load_bzimage(k, [fits], "", MemoryMap(64 * MiB)))
    assert field(zp, "ramdisk_image") == 36 * MiB


def test_non_relocatable_kernel_runs_at_pref_address(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(init_size=4 * MiB, pref_address=8 * MiB, relocatable=0))
    assert load_bzimage(k, [], "", MemoryMap(64 * MiB)).summary.kernel == Span(0x100000, 12 * MiB)


def test_kernel_end_counts_init_size_from_1mib_when_pref_address_is_low(tmp_path):
    k = write(
        tmp_path, "bzImage", make_bzimage(init_size=3 * MiB, pref_address=0x100000, kernel_alignment=0x1000)
    )
    assert load_bzimage(k, [], "", MemoryMap(64 * MiB)).summary.kernel == Span(0x100000, 4 * MiB)


def test_initrd_too_big(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage())
    rd = write(tmp_path, "initrd.img", b"x" * (20 * MiB))
    with pytest.raises(ResourceError, match=r"initrd\.img: does not fit in guest RAM"):
        load_bzimage(k, [rd], "", MemoryMap(16 * MiB))


def test_kernel_too_big_for_ram(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(init_size=40 * MiB, pref_address=16 * MiB))
    with pytest.raises(ResourceError, match="bzImage: does not fit in guest RAM"):
        load_bzimage(k, [], "", MemoryMap(32 * MiB))


def test_missing_initrd(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage())
    with pytest.raises(MissingFileError, match="nope.img: no such file"):
        load_bzimage(k, [str(tmp_path / "nope.img")], "", MemoryMap(64 * MiB))


# --- command line -------------------------------------------------------------------------


def test_cmdline_size_is_enforced(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(cmdline_size=16))
    load_bzimage(k, [], "x" * 16, MemoryMap(64 * MiB))
    with pytest.raises(UsageError, match="17 bytes long but at most 16"):
        load_bzimage(k, [], "x" * 17, MemoryMap(64 * MiB))


def test_cmdline_capped_by_the_cmdline_area(tmp_path):
    k = write(tmp_path, "bzImage", make_bzimage(cmdline_size=0x7FFF_FFFF))
    with pytest.raises(UsageError):
        load_bzimage(k, [], "x" * layout.BOOT_CMDLINE_MAX, MemoryMap(64 * MiB))


# --- bad images ---------------------------------------------------------------------------


def test_protocol_too_old(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(version=0x020B))
    with pytest.raises(ImageError, match=r"vmlinuz: boot protocol 2\.11 is too old"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_no_64bit_entry(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(xloadflags=0))
    with pytest.raises(ImageError, match="XLF_KERNEL_64"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_truncated_setup(tmp_path):
    data = make_bzimage(setup_sects=9)[:2000]
    k = write(tmp_path, "vmlinuz", data)
    with pytest.raises(ImageError) as e:
        load_bzimage(k, [], "", MemoryMap(64 * MiB))
    assert str(e.value) == f"{k}: truncated: the header declares 9 setup sectors but the file has 2000 bytes"


def test_truncated_payload(tmp_path):
    data = make_bzimage(b"\x90" * 4096)[:-100]
    k = write(tmp_path, "vmlinuz", data)
    with pytest.raises(ImageError, match="vmlinuz: truncated: .* 4096-byte kernel"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_no_payload_at_all(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(b"", syssize=0))
    with pytest.raises(ImageError, match="truncated"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_bad_boot_flag(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(extra={"boot_flag": 0x1234}))
    with pytest.raises(ImageError, match="boot_flag"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_zimage_refused(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(loadflags=0))
    with pytest.raises(ImageError, match="zImage"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_not_a_bzimage(tmp_path):
    k = write(tmp_path, "vmlinuz", bytes(4096))
    with pytest.raises(ImageError, match="HdrS"):
        load_bzimage(k, [], "", MemoryMap(64 * MiB))


def test_messages_are_one_sentence(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage(version=0x0200))
    with pytest.raises(ImageError) as e:
        load_bzimage(k, [], "", MemoryMap(64 * MiB))
    assert "\n" not in str(e.value) and str(e.value).startswith(k + ": ")


# --- Debian's real kernel, when another helper fetched it -----------------------------------


@pytest.mark.skipif(not DEBIAN_KERNEL.exists(), reason="build/debian/vmlinuz not fetched")
def test_debian_kernel_parses():
    data = DEBIAN_KERNEL.read_bytes()
    hdr = parse_setup_header(data, "vmlinuz")
    assert hdr.version >= 0x020C
    assert hdr.relocatable and hdr.init_size > 0
    assert len(data) >= hdr.setup_size + hdr.syssize * 16
    plan = load_kernel(str(DEBIAN_KERNEL), [], "console=ttyS0", MemoryMap(512 * MiB), 0xE0000)
    assert plan.kind == "bzimage" and plan.entry.rip == 0x100200
    assert plan.summary.version  # e.g. "6.1.0-... (debian-kernel@lists.debian.org) ..."
    zp = zero_page(plan)
    assert field(zp, "header") == b"HdrS" and field(zp, "type_of_loader") == 0xFF
    assert plan.summary.kernel.end >= hdr.pref_address + hdr.init_size
