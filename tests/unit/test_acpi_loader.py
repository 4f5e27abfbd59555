"""The fw_cfg table-loader: command layout, and a run of it the way SeaBIOS's romfile_loader does."""

from __future__ import annotations

import struct

import pytest

from kvmpy import layout
from kvmpy.acpi import ACPI_RSDP_FILE, ACPI_TABLES_FILE, TABLE_LOADER_FILE, TableLoader, build_tables
from kvmpy.acpi import loader as ld
from kvmpy.devices import fw_cfg as fc
from kvmpy.devices.fw_cfg import FwCfg
from kvmpy.hw.dma import BytearrayDmaSpace


def cstr(raw: bytes) -> str:
    assert b"\0" in raw, "file names must be NUL-terminated within 56 bytes"
    return raw.split(b"\0", 1)[0].decode()


def parse(script: bytes) -> list[tuple]:
    """Decode the 128-byte commands (layout from QEMU bios-linker-loader.c / SeaBIOS)."""
    assert len(script) % 128 == 0
    out: list[tuple] = []
    for off in range(0, len(script), 128):
        e = script[off : off + 128]
        (cmd,) = struct.unpack_from("<I", e, 0)
        if cmd == ld.COMMAND_ALLOCATE:
            align, zone = struct.unpack_from("<IB", e, 60)
            out.append(("alloc", cstr(e[4:60]), align, zone))
            assert e[65:] == bytes(63)
        elif cmd == ld.COMMAND_ADD_POINTER:
            offset, size = struct.unpack_from("<IB", e, 116)
            out.append(("pointer", cstr(e[4:60]), cstr(e[60:116]), offset, size))
            assert e[121:] == bytes(7)
        elif cmd == ld.COMMAND_ADD_CHECKSUM:
            result, start, length = struct.unpack_from("<III", e, 60)
            out.append(("checksum", cstr(e[4:60]), result, start, length))
            assert e[72:] == bytes(56)
        elif cmd == ld.COMMAND_WRITE_POINTER:
            dst_off, src_off, size = struct.unpack_from("<IIB", e, 116)
            out.append(("write_pointer", cstr(e[4:60]), cstr(e[60:116]), dst_off, src_off, size))
        else:
            raise AssertionError(f"unknown command {cmd}")
    return out


class SeaBiosLoader:
    """romfile_loader_execute() in Python: allocate, add pointers, fix checksums."""

    def __init__(self, files: dict[str, bytes], mem_size: int = 1 << 20) -> None:
        self.files = files
        self.mem = bytearray(mem_size)
        self.placed: dict[str, int] = {}
        self.high = 0x8_0000  # "ZoneHigh" grows from here in this model
        self.fseg = 0xF_5A30  # deliberately not 16-aligned: the loader must align

    def run(self, script: bytes) -> None:
        for cmd in parse(script):
            getattr(self, cmd[0])(*cmd[1:])

    def alloc(self, name: str, align: int, zone: int) -> None:
        assert align & (align - 1) == 0
        data = self.files[name]
        if zone == ld.ZONE_FSEG:
            addr = (self.fseg + align - 1) & ~(align - 1)
            self.fseg = addr + len(data)
            assert self.fseg <= 0x10_0000
        else:
            assert zone == ld.ZONE_HIGH
            addr = (self.high + align - 1) & ~(align - 1)
            self.high = addr + len(data)
        self.mem[addr : addr + len(data)] = data
        self.placed[name] = addr

    def pointer(self, dest: str, src: str, offset: int, size: int) -> None:
        addr = self.placed[dest] + offset
        assert offset + size <= len(self.files[dest])
        value = int.from_bytes(self.mem[addr : addr + size], "little") + self.placed[src]
        self.mem[addr : addr + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def checksum(self, name: str, result: int, start: int, length: int) -> None:
        base = self.placed[name]
        assert result < len(self.files[name]) and start + length <= len(self.files[name])
        s = sum(self.mem[base + start : base + start + length]) & 0xFF
        self.mem[base + result] = (self.mem[base + result] - s) & 0xFF

    def table(self, addr: int) -> bytes:
        (length,) = struct.unpack_from("<I", self.mem, addr + 4)
        return bytes(self.mem[addr : addr + length])


# --- command encoding -------------------------------------------------------------------------------
def test_command_layout() -> None:
    tl = TableLoader()
    tl.allocate("etc/acpi/tables", 64, ld.ZONE_HIGH)
    tl.allocate("etc/acpi/rsdp", 16, ld.ZONE_FSEG)
    tl.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 16, 4)
    tl.add_checksum("etc/acpi/rsdp", 8, 0, 20)
    tl.write_pointer("etc/vmgenid_addr", "etc/acpi/tables", 0, 40, 8)
    raw = tl.to_bytes()
    assert len(raw) == 5 * 128 == len(tl) * 128
    assert raw[:4] == b"\x01\0\0\0" and raw[4:19] == b"etc/acpi/tables" and raw[19:60] == bytes(41)
    assert raw[60:65] == b"\x40\0\0\0\x01"
    ptr = raw[256:384]
    assert ptr[:4] == b"\x02\0\0\0" and ptr[4:17] == b"etc/acpi/rsdp" and ptr[60:75] == b"etc/acpi/tables"
    assert ptr[116:121] == b"\x10\0\0\0\x04"
    cks = raw[384:512]
    assert cks[:4] == b"\x03\0\0\0" and cks[60:72] == struct.pack("<III", 8, 0, 20)
    assert parse(raw)[4] == ("write_pointer", "etc/vmgenid_addr", "etc/acpi/tables", 0, 40, 8)


def test_command_validation() -> None:
    tl = TableLoader()
    with pytest.raises(ValueError):
        tl.add_pointer("a", "b", 0, 4)  # not allocated
    with pytest.raises(ValueError):
        tl.allocate("a", 3, ld.ZONE_HIGH)
    with pytest.raises(ValueError):
        tl.allocate("a", 4, 7)
    with pytest.raises(ValueError):
        tl.allocate("x" * 56, 4, ld.ZONE_HIGH)
    tl.allocate("a", 4, ld.ZONE_HIGH)
    with pytest.raises(ValueError):
        tl.allocate("a", 4, ld.ZONE_HIGH)
    with pytest.raises(ValueError):
        tl.add_pointer("a", "a", 0, 3)
    with pytest.raises(ValueError):
        tl.add_checksum("b", 0, 0, 1)


# --- the files QEMU/SeaBIOS exchange ------------------------------------------------------------------
def test_loader_script_shape() -> None:
    files = build_tables(2).loader_files()
    assert set(files) == {ACPI_TABLES_FILE, ACPI_RSDP_FILE, TABLE_LOADER_FILE}
    assert len(files[ACPI_RSDP_FILE]) == 36
    cmds = parse(files[TABLE_LOADER_FILE])
    assert cmds[0] == ("alloc", ACPI_TABLES_FILE, 64, ld.ZONE_HIGH)
    assert cmds[1] == ("alloc", ACPI_RSDP_FILE, 16, ld.ZONE_FSEG)
    assert all(c[0] != "alloc" for c in cmds[2:])
    pointers = [c for c in cmds if c[0] == "pointer"]
    # FADT: FACS, DSDT, X_DSDT; RSDT and XSDT: 2 each; RSDP: RSDT and XSDT
    assert len(pointers) == 3 + 2 + 2 + 2
    assert [c[3:] for c in pointers if c[1] == ACPI_RSDP_FILE] == [(16, 4), (24, 8)]
    checksums = [c for c in cmds if c[0] == "checksum"]
    # DSDT, FADT, MADT, RSDT, XSDT, then the RSDP's two (first 20 bytes, then all 36)
    assert len(checksums) == 5 + 2
    assert checksums[-2:] == [("checksum", ACPI_RSDP_FILE, 8, 0, 20), ("checksum", ACPI_RSDP_FILE, 32, 0, 36)]
    # every pointer into a table is patched before that table's checksum is computed
    tables = files[ACPI_TABLES_FILE]
    for i, c in enumerate(cmds):
        if c[0] == "pointer" and c[1] == ACPI_TABLES_FILE:
            later = [k for k in cmds[i:] if k[0] == "checksum" and k[1] == ACPI_TABLES_FILE]
            assert any(k[3] <= c[3] < k[3] + k[4] for k in later)
    assert tables[:4] == b"FACS"  # offset 0: 64-byte aligned by the allocation


@pytest.mark.parametrize("cpus", [1, 2, 8])
def test_loader_run_produces_valid_tables(cpus: int) -> None:
    tables = build_tables(cpus)
    files = tables.loader_files()
    fw = SeaBiosLoader(files)
    fw.run(files[TABLE_LOADER_FILE])
    rsdp_addr = fw.placed[ACPI_RSDP_FILE]
    tables_addr = fw.placed[ACPI_TABLES_FILE]
    assert rsdp_addr % 16 == 0 and layout.BIOS_AREA_START <= rsdp_addr < 0x10_0000
    assert tables_addr % 64 == 0
    rsdp = bytes(fw.mem[rsdp_addr : rsdp_addr + 36])
    assert sum(rsdp[:20]) & 0xFF == 0 and sum(rsdp) & 0xFF == 0
    rsdt = fw.table(struct.unpack_from("<I", rsdp, 16)[0])
    xsdt = fw.table(struct.unpack_from("<Q", rsdp, 24)[0])
    assert rsdt[:4] == b"RSDT" and xsdt[:4] == b"XSDT"
    entries = struct.unpack_from("<2I", rsdt, 36)
    assert entries == struct.unpack_from("<2Q", xsdt, 36)
    fadt = fw.table(entries[0])
    madt = fw.table(entries[1])
    assert fadt[:4] == b"FACP" and madt[:4] == b"APIC"
    facs = struct.unpack_from("<I", fadt, 36)[0]
    dsdt = fw.table(struct.unpack_from("<I", fadt, 40)[0])
    assert struct.unpack_from("<Q", fadt, 140)[0] == struct.unpack_from("<I", fadt, 40)[0]
    assert facs % 64 == 0 and fw.mem[facs : facs + 4] == b"FACS"
    for tbl in (rsdt, xsdt, fadt, madt, dsdt):
        assert sum(tbl) & 0xFF == 0, tbl[:4]
    assert len(madt) == 44 + 8 * cpus + 12 + 20 + 6
    assert b"_S5_" in dsdt
    # the result is exactly what direct boot would have placed at the same addresses
    blob, _ = tables.layout_tables(tables_addr - 64)  # RSDP (36 bytes, padded) then FACS
    assert fw.mem[tables_addr : tables_addr + len(files[ACPI_TABLES_FILE])] == blob[64:]


def test_loader_files_through_fw_cfg_dma() -> None:
    """Wire the files into fw_cfg as the machine builder does and read them back by DMA."""
    files = build_tables(2).loader_files()
    mem = BytearrayDmaSpace(0x20000)
    fw = FwCfg(mem)
    for name, data in files.items():
        fw.add_file(name, data)

    def dma_read(key: int, length: int, dest: int) -> bytes:
        mem.mem[0x100:0x110] = struct.pack(
            ">IIQ", fc.DMA_CTL_SELECT | fc.DMA_CTL_READ | (key << 16), length, dest
        )
        fw.dma_port.write(4, 4, int.from_bytes((0x100).to_bytes(4, "big"), "little"))
        assert mem.mem[0x100:0x104] == bytes(4)
        return bytes(mem.mem[dest : dest + length])

    raw = dma_read(fc.FW_CFG_FILE_DIR, 4 + 3 * 64, 0x1000)
    (count,) = struct.unpack(">I", raw[:4])
    directory = {}
    for i in range(count):
        size, key, _, name = struct.unpack_from(">IHH56s", raw, 4 + 64 * i)
        directory[name.rstrip(b"\0").decode()] = (key, size)
    assert set(directory) == set(files)
    loaded = {
        n: dma_read(k, s, 0x2000 + 0x4000 * i) for i, (n, (k, s)) in enumerate(sorted(directory.items()))
    }
    assert loaded == files
    fw_run = SeaBiosLoader(loaded)
    fw_run.run(loaded[TABLE_LOADER_FILE])
    rsdp = fw_run.placed[ACPI_RSDP_FILE]
    assert fw_run.mem[rsdp : rsdp + 8] == b"RSD PTR "
