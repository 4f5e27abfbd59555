"""ACPI tables: sizes, offsets, checksums and the direct-boot placement, pinned."""

from __future__ import annotations

import struct

import pytest

from kvmpy import layout
from kvmpy.acpi import S5_SLP_TYP, Table, aml, build_tables
from kvmpy.acpi import tables as t


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


class Blob:
    """A direct-boot blob viewed as guest memory, to follow pointers the way a guest does."""

    def __init__(self, blob: bytes, base: int) -> None:
        self.blob = blob
        self.base = base

    def at(self, addr: int, length: int) -> bytes:
        off = addr - self.base
        assert 0 <= off and off + length <= len(self.blob), f"{addr:#x} outside the blob"
        return self.blob[off : off + length]

    def table(self, addr: int) -> bytes:
        (length,) = struct.unpack("<I", self.at(addr + 4, 4))
        return self.at(addr, length)

    def scan_rsdp(self) -> int:
        """The BIOS-area scan: "RSD PTR " on a 16-byte boundary with a valid checksum."""
        addr = (self.base + 15) & ~15
        while addr + 20 <= self.base + len(self.blob):
            cand = self.at(addr, 8)
            if cand == b"RSD PTR " and sum8(self.at(addr, 20)) == 0:
                return addr
            addr += 16
        raise AssertionError("RSDP not found")


def madt_entries(madt: bytes) -> list[bytes]:
    out = []
    off = 44
    while off < len(madt):
        length = madt[off + 1]
        assert length > 0
        out.append(madt[off : off + length])
        off += length
    assert off == len(madt)
    return out


# --- individual tables -------------------------------------------------------------------------------
def test_sdt_header_layout() -> None:
    tbl = Table(b"TEST", b"\x01\x02\x03", revision=3)
    raw = tbl.to_bytes()
    assert len(raw) == 39 == tbl.length
    sig, length, rev, _cs, oem, oem_tbl, oem_rev, creator, creator_rev = struct.unpack(
        "<4sIBB6s8sI4sI", raw[:36]
    )
    assert (sig, length, rev) == (b"TEST", 39, 3)
    assert oem == b"KVMPY " and oem_tbl == b"KVMPYTES" and oem_rev == 1
    assert creator == t.CREATOR_ID and creator_rev == t.CREATOR_REVISION
    assert sum8(raw) == 0
    assert Table("MCFG", b"", oem_table_id="ABC").to_bytes()[16:24] == b"ABC     "
    with pytest.raises(ValueError):
        Table(b"TOOLONG", b"")


def test_raw_table_keeps_bytes_and_fixes_checksum() -> None:
    data = bytearray(Table(b"SSDT", b"\x10\x20").to_bytes())
    data[9] = 0
    raw = t.RawTable(bytes(data))
    assert raw.signature == b"SSDT"
    out = raw.to_bytes()
    assert sum8(out) == 0 and out[:9] == bytes(data[:9]) and out[10:] == bytes(data[10:])
    with pytest.raises(ValueError):
        t.RawTable(bytes(data[:-1]))


def test_rsdp_layout() -> None:
    rsdt = t.Rsdt([])
    xsdt = t.Xsdt([])
    rsdp = t.Rsdp(rsdt, xsdt)
    addrs = {rsdt: 0x1234_5678, xsdt: 0x1_2345_6789}
    raw = rsdp.encode(addrs.__getitem__)
    assert len(raw) == 36
    assert raw[:8] == b"RSD PTR " and raw[9:15] == b"KVMPY " and raw[15] == 2
    assert struct.unpack_from("<I", raw, 16)[0] == 0x1234_5678
    assert struct.unpack_from("<I", raw, 20)[0] == 36
    assert struct.unpack_from("<Q", raw, 24)[0] == 0x1_2345_6789
    assert sum8(raw[:20]) == 0 and sum8(raw) == 0
    assert raw[33:] == bytes(3)


def test_pointer_overflow_refused() -> None:
    rsdt = t.Rsdt([])
    with pytest.raises(ValueError):
        t.Rsdp(rsdt, None).encode(lambda _: 1 << 32)


def test_facs_layout() -> None:
    raw = t.Facs().to_bytes()
    assert len(raw) == 64 and t.Facs.alignment == 64
    assert raw[:4] == b"FACS" and struct.unpack_from("<I", raw, 4)[0] == 64
    assert raw[32] == 2  # version
    assert raw[8:32] == bytes(24) and raw[33:] == bytes(31)


def test_fadt_fields() -> None:
    facs = t.Facs()
    dsdt = t.Dsdt(b"")
    fadt = t.Fadt(facs, dsdt)
    addrs = {facs: 0xE0040, dsdt: 0xE0080}
    raw = fadt.encode(addrs.__getitem__)
    assert len(raw) == 276 and raw[:4] == b"FACP" and raw[8] == 6 and raw[131] == 0
    assert sum8(raw) == 0

    def u(fmt: str, off: int) -> int:
        return struct.unpack_from(fmt, raw, off)[0]

    assert u("<I", 36) == 0xE0040  # FIRMWARE_CTRL -> FACS
    assert u("<I", 40) == 0xE0080 and u("<Q", 140) == 0xE0080  # DSDT and X_DSDT agree
    assert u("<Q", 132) == 0  # X_FIRMWARE_CTRL unused
    assert u("<H", 46) == layout.IRQ_ACPI_SCI
    assert u("<I", 48) == 0 and raw[52] == 0 and raw[53] == 0  # SMI_CMD: ACPI always enabled
    pm = layout.ACPI_PM_BASE
    assert u("<I", 56) == pm and u("<I", 64) == pm + 4 and u("<I", 76) == pm + 8
    assert u("<I", 80) == layout.ACPI_GPE0_BASE
    assert raw[88:93] == bytes([4, 2, 0, 4, layout.ACPI_GPE0_LEN])
    assert raw[108] == 0x32  # RTC century register
    assert u("<H", 109) == t.IAPC_LEGACY_DEVICES | t.IAPC_8042
    flags = u("<I", 112)
    for bit in (
        t.FADT_F_WBINVD,
        t.FADT_F_PROC_C1,
        t.FADT_F_SLP_BUTTON,
        t.FADT_F_RTC_S4,
        t.FADT_F_RESET_REG_SUP,
    ):
        assert flags & bit
    assert not flags & t.FADT_F_HW_REDUCED_ACPI
    assert not flags & t.FADT_F_FORCE_APIC_PHYSICAL_DESTINATION_MODE
    # reset register: SystemIO, 8 bits, byte access, port 0xCF9; value 6
    assert raw[116:128] == struct.pack("<BBBBQ", 1, 8, 0, 1, 0xCF9) and raw[128] == 0x06

    def gas(off: int) -> tuple[int, int, int, int, int]:
        return struct.unpack_from("<BBBBQ", raw, off)

    assert gas(148) == (1, 32, 0, 2, pm)  # X_PM1a_EVT_BLK
    assert gas(172) == (1, 16, 0, 2, pm + 4)  # X_PM1a_CNT_BLK
    assert gas(208) == (1, 32, 0, 3, pm + 8)  # X_PM_TMR_BLK
    assert gas(220) == (1, 8 * layout.ACPI_GPE0_LEN, 0, 1, layout.ACPI_GPE0_BASE)  # X_GPE0_BLK
    for empty in (160, 184, 196, 232, 244, 256):
        assert raw[empty : empty + 12] == bytes(12)


def test_fadt_options() -> None:
    many = t.Fadt(t.Facs(), t.Dsdt(b""), cpus=16, iapc_boot_arch=t.IAPC_8042, gpe0_len=0)
    raw = many.to_bytes()
    assert struct.unpack_from("<I", raw, 112)[0] & t.FADT_F_FORCE_APIC_PHYSICAL_DESTINATION_MODE
    assert struct.unpack_from("<H", raw, 109)[0] == t.IAPC_8042
    assert struct.unpack_from("<I", raw, 80)[0] == 0 and raw[220:232] == bytes(12)


@pytest.mark.parametrize("cpus", [1, 2, 8])
def test_madt_entries(cpus: int) -> None:
    raw = t.Madt(cpus).to_bytes()
    assert raw[:4] == b"APIC" and sum8(raw) == 0
    assert len(raw) == 44 + 8 * cpus + 12 + 2 * 10 + 6
    assert struct.unpack_from("<II", raw, 36) == (layout.LAPIC_BASE, 1)  # PCAT_COMPAT
    entries = madt_entries(raw)
    by_type: dict[int, list[bytes]] = {}
    for e in entries:
        by_type.setdefault(e[0], []).append(e)
    assert sorted(by_type) == [0, 1, 2, 4]
    lapics = by_type[0]
    assert len(lapics) == cpus
    for i, e in enumerate(lapics):
        assert e == struct.pack("<BBBBI", 0, 8, i, i, 1)
    (ioapic,) = by_type[1]
    assert ioapic == struct.pack("<BBBBII", 1, 12, cpus, 0, layout.IOAPIC_BASE, 0)
    assert by_type[2] == [
        struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0x0004),  # IRQ0 -> GSI2, edge, bus polarity
        struct.pack("<BBBBIH", 2, 10, 0, 9, 9, 0x000D),  # IRQ9 -> GSI9, level, active high
    ]
    assert by_type[4] == [struct.pack("<BBBHB", 4, 6, 0xFF, 0, 1)]  # LINT1 NMI, all CPUs


def test_madt_cpu_limits() -> None:
    with pytest.raises(ValueError):
        t.Madt(0)
    with pytest.raises(ValueError):
        t.Madt(255)
    assert len(madt_entries(t.Madt(254).to_bytes())) == 254 + 1 + 2 + 1


def test_rsdt_xsdt_sizes() -> None:
    a, b = Table(b"AAAA", b""), Table(b"BBBB", b"")
    addrs = {a: 0x1000, b: 0x2000}
    rsdt = t.Rsdt([a, b]).encode(addrs.__getitem__)
    xsdt = t.Xsdt([a, b]).encode(addrs.__getitem__)
    assert len(rsdt) == 36 + 8 and struct.unpack_from("<II", rsdt, 36) == (0x1000, 0x2000)
    assert len(xsdt) == 36 + 16 and struct.unpack_from("<QQ", xsdt, 36) == (0x1000, 0x2000)
    assert sum8(rsdt) == 0 and sum8(xsdt) == 0


# --- the whole set -------------------------------------------------------------------------------------
def test_blobs_all_checksummed() -> None:
    tables = build_tables(2)
    blobs = tables.blobs()
    assert list(blobs) == ["RSD PTR", "FACS", "DSDT", "FACP", "APIC", "RSDT", "XSDT"]
    for name, raw in blobs.items():
        if name == "RSD PTR":
            assert sum8(raw[:20]) == 0 and sum8(raw) == 0
        elif name != "FACS":
            assert sum8(raw) == 0, name
            assert struct.unpack_from("<I", raw, 4)[0] == len(raw), name


def test_dsdt_contents() -> None:
    dsdt = build_tables(2).dsdt.to_bytes()
    assert dsdt[:4] == b"DSDT" and dsdt[8] == 2
    s5 = aml.name("\\_S5", aml.package(S5_SLP_TYP, S5_SLP_TYP, 0, 0))
    assert s5 in dsdt
    assert b"\\_S5_\x12\x06\x04" in dsdt
    for hid in ("PNP0501", "PNP0B00", "PNP0303", "PNP0F13"):
        assert aml.name("_HID", aml.eisaid(hid)) in dsdt
    com1_crs = aml.resource_template(aml.io(0x3F8, 0x3F8, 0, 8), aml.irq_no_flags(4))
    assert aml.name("_CRS", com1_crs) in dsdt
    assert dsdt.count(aml.name("_HID", "ACPI0007")) == 2


def test_dsdt_device_selection_and_extra() -> None:
    extra = aml.scope("\\_SB", aml.device("PCI0", aml.name("_HID", aml.eisaid("PNP0A03"))))
    tables = build_tables(1, dsdt_extra=extra, i8042=False, serial=False, rtc=True, s5_slp_typ=5)
    dsdt = tables.dsdt.to_bytes()
    assert dsdt.endswith(extra)
    assert aml.eisaid("PNP0303") not in dsdt and aml.eisaid("PNP0501") not in dsdt
    assert aml.eisaid("PNP0B00") in dsdt
    assert aml.package(5, 5, 0, 0) in dsdt
    assert build_tables(1, dsdt_extra=[extra, extra]).dsdt.to_bytes().endswith(extra + extra)


def test_extra_tables_are_listed() -> None:
    mcfg = Table(b"MCFG", bytes(8) + struct.pack("<QHBBI", 0xB0000000, 0, 0, 255, 0))
    dmar_raw = Table(b"DMAR", bytes(12)).to_bytes()
    tables = build_tables(2, extra_tables=[mcfg, dmar_raw])
    blob, rsdp = tables.layout_tables()
    mem = Blob(blob, layout.ACPI_TABLES_ADDR)
    r = mem.at(rsdp, 36)
    rsdt = mem.table(struct.unpack_from("<I", r, 16)[0])
    xsdt = mem.table(struct.unpack_from("<Q", r, 24)[0])
    rsdt_sigs = [mem.at(a, 4) for a in struct.unpack_from("<4I", rsdt, 36)]
    xsdt_sigs = [mem.at(a, 4) for a in struct.unpack_from("<4Q", xsdt, 36)]
    assert rsdt_sigs == xsdt_sigs == [b"FACP", b"APIC", b"MCFG", b"DMAR"]


@pytest.mark.parametrize("base", [layout.ACPI_TABLES_ADDR, 0xE0008, 0x9_0000])
def test_layout_tables_direct_boot(base: int) -> None:
    tables = build_tables(4)
    blob, rsdp_gpa = tables.layout_tables(base)
    mem = Blob(blob, base)
    assert rsdp_gpa % 16 == 0
    assert mem.scan_rsdp() == rsdp_gpa  # the standard scan finds it
    rsdp = mem.at(rsdp_gpa, 36)
    assert sum8(rsdp[:20]) == 0 and sum8(rsdp) == 0 and rsdp[15] == 2
    rsdt_addr, xsdt_addr = struct.unpack_from("<I", rsdp, 16)[0], struct.unpack_from("<Q", rsdp, 24)[0]
    rsdt, xsdt = mem.table(rsdt_addr), mem.table(xsdt_addr)
    assert rsdt[:4] == b"RSDT" and xsdt[:4] == b"XSDT"
    entries = list(struct.unpack_from("<2I", rsdt, 36))
    assert entries == list(struct.unpack_from("<2Q", xsdt, 36))
    found = {mem.at(a, 4): a for a in entries}
    assert set(found) == {b"FACP", b"APIC"}
    fadt = mem.table(found[b"FACP"])
    facs_addr = struct.unpack_from("<I", fadt, 36)[0]
    dsdt_addr = struct.unpack_from("<I", fadt, 40)[0]
    assert struct.unpack_from("<Q", fadt, 140)[0] == dsdt_addr
    assert facs_addr % 64 == 0 and mem.at(facs_addr, 4) == b"FACS"
    dsdt = mem.table(dsdt_addr)
    assert dsdt[:4] == b"DSDT" and b"_S5_" in dsdt
    for tbl in (rsdt, xsdt, fadt, dsdt, mem.table(found[b"APIC"])):
        assert sum8(tbl) == 0, tbl[:4]
    # tables do not overlap and all lie inside the blob
    spans = sorted(
        [(rsdp_gpa, 36), (facs_addr, 64)]
        + [(a, len(mem.table(a))) for a in (rsdt_addr, xsdt_addr, dsdt_addr, *entries)]
    )
    for (a, n), (b, _) in zip(spans, spans[1:], strict=False):
        assert a + n <= b
    assert blob == tables.layout_tables(base)[0]  # deterministic


def test_layout_fits_the_bios_area() -> None:
    blob, rsdp = build_tables(254).layout_tables()
    assert layout.ACPI_TABLES_ADDR + len(blob) <= layout.ACPI_TABLES_END
    assert layout.BIOS_AREA_START <= rsdp < 0x10_0000


def test_layout_refuses_addresses_above_4g() -> None:
    with pytest.raises(ValueError):
        build_tables(1).layout_tables(0xFFFF_FF00)


def test_module_level_placement_functions() -> None:
    from kvmpy.acpi import layout_tables, loader_files

    tables = build_tables(2)
    assert layout_tables(tables, 0xE0000) == tables.layout_tables(0xE0000)
    assert layout_tables(tables) == tables.layout_tables(layout.ACPI_TABLES_ADDR)
    assert loader_files(tables) == tables.loader_files()


class SeaBiosDsdtParser:
    """A port of SeaBIOS's src/fw/dsdt_parser.c: the subset of AML its tiny parser accepts.

    SeaBIOS uses it to decide which legacy devices exist (no PNP0303 -> no PS/2 set-up), so
    our DSDT must parse without errors here, not only in ACPICA.
    """

    def __init__(self, aml_bytes: bytes) -> None:
        self.b = aml_bytes
        self.errors = 0
        self.devices: list[dict[str, int | str | None]] = []
        self.dev: dict[str, int | str | None] | None = None
        self.name = ""
        self.depth = 0
        self.termlist(0, 0, len(aml_bytes))

    def pkglength(self, p: int) -> tuple[int, int]:
        lead = self.b[p]
        n = lead >> 6
        if n == 0:
            return lead & 0x3F, 1
        value = lead & 0x0F
        for i in range(n):
            value |= self.b[p + 1 + i] << (4 + 8 * i)
        return value, 1 + n

    def namestring(self, p: int) -> int:
        start, parts = p, []
        while self.b[p] in (0x5C, 0x5E):
            p += 1
        c = self.b[p]
        if c == 0:
            return p + 1 - start
        if c == 0x2E:
            parts, p = [self.b[p + 1 : p + 5], self.b[p + 5 : p + 9]], p + 9
        elif c == 0x2F:
            count = self.b[p + 1]
            parts = [self.b[p + 2 + 4 * i : p + 6 + 4 * i] for i in range(count)]
            p += 2 + 4 * count
        elif chr(c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZ_":
            parts, p = [self.b[p : p + 4]], p + 4
        else:
            self.errors += 1
            return 1
        self.name = ".".join(seg.decode().rstrip("_") or "_" for seg in parts)
        return p - start

    def termarg_int(self, p: int) -> int:
        sizes = {0x00: 1, 0x01: 1, 0x0A: 2, 0x0B: 3, 0x0C: 5}
        if self.b[p] not in sizes:
            self.errors += 1
            return 1
        return sizes[self.b[p]]

    def termlist(self, base: int, offset: int, pkglength: int) -> None:
        while True:
            offset += self.termobj(base + offset)
            if offset == pkglength:
                return
            if offset > pkglength or self.errors:
                self.errors += 1
                return

    def termobj(self, p: int) -> int:
        if self.depth == 16:
            self.errors += 1
            return 1
        self.depth += 1
        op, off = self.b[p], 1
        if op in (0x00, 0x01):
            pass
        elif op == 0x08:
            off += self.namestring(p + off)
            name = self.name
            off += self.termobj(p + off)
            if self.dev is not None and name == "_HID":
                self.dev["hid"] = p
        elif op in (0x0A, 0x0B, 0x0C):
            off += {0x0A: 1, 0x0B: 2, 0x0C: 4}[op]
        elif op == 0x0D:
            off = self.b.index(0, p + 1) - p + 1
        elif op == 0x10:
            length, used = self.pkglength(p + 1)
            used += self.namestring(p + 1 + used)
            self.termlist(p + 1, used, length)
            off += length
        elif op == 0x11:
            length, used = self.pkglength(p + 1)
            self.termarg_int(p + 1 + used)
            off += length
        elif op in (0x12, 0x13, 0x14):
            length, _ = self.pkglength(p + 1)
            off += length
        elif op == 0x5B and self.b[p + 1] == 0x82:
            length, used = self.pkglength(p + 2)
            used += self.namestring(p + 2 + used)
            self.dev = {"name": self.name, "hid": None}
            self.devices.append(self.dev)
            self.termlist(p + 2, used, length)
            self.dev = None
            off += 1 + length
        else:
            self.errors += 1
        self.depth -= 1
        return off

    def has_eisaid(self, eisaid: int) -> bool:
        want = bytes([0x0C, 0x41, 0xD0, eisaid >> 8, eisaid & 0xFF])
        return any(
            d["hid"] is not None and self.b[d["hid"] + 5 : d["hid"] + 10] == want for d in self.devices
        )


@pytest.mark.parametrize("cpus", [1, 8, 254])
def test_seabios_dsdt_parser_accepts_our_dsdt(cpus: int) -> None:
    dsdt = build_tables(cpus).dsdt.to_bytes()
    parsed = SeaBiosDsdtParser(dsdt[36:])
    assert parsed.errors == 0
    names = [d["name"] for d in parsed.devices]
    assert {"COM1", "RTC", "KBD", "MOU"} <= set(names)
    assert len(names) == cpus + 4
    for eisaid in (0x0501, 0x0B00, 0x0303, 0x0F13):
        assert parsed.has_eisaid(eisaid)
    no_ps2 = SeaBiosDsdtParser(build_tables(1, i8042=False).dsdt.to_bytes()[36:])
    assert no_ps2.errors == 0 and not no_ps2.has_eisaid(0x0303)
