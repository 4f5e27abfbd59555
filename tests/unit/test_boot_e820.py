"""MemoryMap, the e820 layout, the declared-layout helper and the BootPlan/EntryState values."""

from __future__ import annotations

import struct

import pytest

from kvmpy import layout
from kvmpy.boot.e820 import E820_ENTRY, E820_RAM, E820_RESERVED, E820Entry, MemoryMap
from kvmpy.boot.plan import BootPlan, BootSummary, EntryState, Span
from kvmpy.boot.structs import Layout
from kvmpy.errors import ResourceError

MiB = 1 << 20
GiB = 1 << 30


def test_e820_entry_layout_is_packed_20_bytes():
    assert E820_ENTRY.size == 20
    assert (E820_ENTRY.offset("addr"), E820_ENTRY.offset("size"), E820_ENTRY.offset("type")) == (0, 8, 16)
    raw = E820Entry(0x1000, 0x2000, E820_RAM).pack()
    assert raw == struct.pack("<QQI", 0x1000, 0x2000, 1)


def test_small_guest_map():
    m = MemoryMap(256 * MiB)
    assert m.lowmem_end == 256 * MiB and m.highmem_size == 0
    assert m.e820() == [
        E820Entry(0, layout.EBDA_START, E820_RAM),
        E820Entry(layout.EBDA_START, 0xA0000 - layout.EBDA_START, E820_RESERVED),
        E820Entry(layout.BIOS_AREA_START, 0x100000 - layout.BIOS_AREA_START, E820_RESERVED),
        E820Entry(0x100000, 255 * MiB, E820_RAM),
    ]
    packed = m.pack_e820()
    assert len(packed) == 4 * 20
    assert E820_ENTRY.unpack(packed, 3 * 20) == {"addr": 0x100000, "size": 255 * MiB, "type": 1}


def test_large_guest_splits_around_the_pci_hole():
    m = MemoryMap(4 * GiB)
    assert m.lowmem_end == layout.LOWMEM_LIMIT == 3 * GiB
    assert m.highmem_size == 1 * GiB
    assert m.e820()[-1] == E820Entry(layout.HIGHMEM_START, 1 * GiB, E820_RAM)
    assert m.e820()[-2] == E820Entry(0x100000, 3 * GiB - 0x100000, E820_RAM)
    assert len(m.e820()) == 5


def test_exactly_lowmem_limit_has_no_high_entry():
    m = MemoryMap(layout.LOWMEM_LIMIT)
    assert m.highmem_size == 0 and len(m.e820()) == 4


def test_is_ram():
    m = MemoryMap(64 * MiB)
    assert m.is_ram(0x1000, 0x2000)
    assert m.is_ram(0x100000, 64 * MiB)
    assert not m.is_ram(0x9F000, 0xA0000)  # runs into the EBDA
    assert not m.is_ram(0xE0000, 0xE1000)  # BIOS area
    assert not m.is_ram(63 * MiB, 65 * MiB)  # past the end
    assert m.ram_ranges() == [(0, layout.EBDA_START), (0x100000, 64 * MiB)]


def test_too_small_guest_is_a_resource_error():
    with pytest.raises(ResourceError, match="too small"):
        MemoryMap(1 * MiB)


def test_layout_refuses_overlapping_or_outside_fields():
    with pytest.raises(ValueError, match="overlaps"):
        Layout("x", [("a", 0, "I"), ("b", 2, "H")])
    with pytest.raises(ValueError, match="outside"):
        Layout("x", [("a", 6, "I")], size=8)
    with pytest.raises(ValueError, match="twice"):
        Layout("x", [("a", 0, "B"), ("a", 1, "B")])


def test_layout_pack_unpack_round_trip():
    lay = Layout("t", [("a", 0, "B"), ("b", 4, "Q"), ("c", 12, "4s")], size=32)
    raw = lay.pack(a=7, b=1 << 40, c=b"abcd")
    assert len(raw) == 32 and raw[1:4] == bytes(3)
    assert lay.unpack(raw) == {"a": 7, "b": 1 << 40, "c": b"abcd"}
    with pytest.raises(KeyError):
        lay.pack(zzz=1)
    assert lay.unpack_array(lay.pack_array([{"a": 1}, {"a": 2}]), 2)[1]["a"] == 2


def test_entry_state_validation():
    e = EntryState("long64", 0x100200, {"rsi": 0x7000})
    assert dict(e.regs) == {"rsi": 0x7000}
    with pytest.raises(ValueError):
        EntryState("real16", 0)
    with pytest.raises(ValueError):
        EntryState("prot32", 0, {"esi": 1})  # 64-bit names only
    with pytest.raises(ValueError):
        EntryState("prot32", 1 << 32)
    with pytest.raises(TypeError):
        e.regs["rax"] = 1  # read-only


def test_boot_plan_apply_and_read():
    summary = BootSummary("pvh", "k", "p", Span(0x1000, 0x2000), (), "", 0, 0)
    plan = BootPlan([(0x1000, b"abc"), (0x1004, b"de")], EntryState("prot32", 0x1000), summary)
    mem = bytearray(0x3000)

    def write(gpa, data):
        mem[gpa : gpa + len(data)] = data

    plan.apply(write)
    assert mem[0x1000:0x1006] == b"abc\0de"
    assert plan.read(0xFFF, 8) == b"\0abc\0de\0"
    assert plan.spans() == [Span(0x1000, 0x1003), Span(0x1004, 0x1006)]
    assert "kernel memory: 0x1000-0x2000" in summary.describe()
