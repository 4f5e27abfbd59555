"""The AML encoder: pinned encodings from the ACPI 6.x grammar (the table-level iasl checks are in
test_acpi_iasl; the statement encoders are also compared with iasl here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvmpy.acpi import aml


def decode_pkg_length(buf: bytes) -> tuple[int, int]:
    """(value, bytes used): the decoder every AML parser has (cf. SeaBIOS parse_pkglength)."""
    lead = buf[0]
    follow = lead >> 6
    if follow == 0:
        return lead & 0x3F, 1
    value = lead & 0x0F
    for i in range(follow):
        value |= buf[1 + i] << (4 + 8 * i)
    return value, 1 + follow


# --- PkgLength ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x00"),
        (63, b"\x3f"),
        (64, b"\x40\x04"),
        (65, b"\x41\x04"),
        (4095, b"\x4f\xff"),
        (4096, b"\x80\x00\x01"),
        (0xFFFFF, b"\x8f\xff\xff"),
        (0x100000, b"\xc0\x00\x00\x01"),
        (0xFFFFFFF, b"\xcf\xff\xff\xff"),
    ],
)
def test_pkg_length_encoding(value: int, encoded: bytes) -> None:
    assert aml.pkg_length(value) == encoded
    assert decode_pkg_length(encoded) == (value, len(encoded))


def test_pkg_length_limits() -> None:
    with pytest.raises(ValueError):
        aml.pkg_length(1 << 28)
    with pytest.raises(ValueError):
        aml.pkg_length(-1)


@pytest.mark.parametrize(
    "content_len, header_len",
    [
        (0, 1),
        (62, 1),
        (63, 2),
        (64, 2),
        (4093, 2),
        (4094, 3),
        (4095, 3),
        (4096, 3),
        (0xFFFFC, 3),
        (0xFFFFD, 4),
    ],
)
def test_pkg_wraps_content_with_inclusive_length(content_len: int, header_len: int) -> None:
    content = bytes(content_len)
    out = aml.pkg(content)
    value, used = decode_pkg_length(out)
    assert used == header_len
    assert value == content_len + header_len == len(out)  # PkgLength counts itself
    assert out[used:] == content


def test_pkg_boundaries_by_total_length() -> None:
    # the 63/64 boundary of the *encoded value*: 62 content bytes -> total 63, one byte
    assert aml.pkg(bytes(62))[:1] == b"\x3f"
    # 63 content bytes cannot total 64 with a 1-byte header: 2-byte header, total 65
    assert aml.pkg(bytes(63))[:2] == b"\x41\x04"
    # the 4095/4096 boundary: 4093 + 2 = 4095 fits two bytes; 4094 needs three (total 4097)
    assert aml.pkg(bytes(4093))[:2] == b"\x4f\xff"
    assert aml.pkg(bytes(4094))[:3] == b"\x81\x00\x01"


# --- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, encoded",
    [
        ("_SB", b"_SB_"),
        ("COM1", b"COM1"),
        ("\\_SB", b"\\_SB_"),
        ("\\", b"\\\x00"),
        ("^PCI0", b"^PCI0"),
        ("^^A", b"^^A___"),
        ("_SB.PCI0", b"\x2e_SB_PCI0"),
        ("\\_SB.PCI0.ISA", b"\\\x2f\x03_SB_PCI0ISA_"),
        ("\\_S5", b"\\_S5_"),
    ],
)
def test_name_string(path: str, encoded: bytes) -> None:
    assert aml.name_string(path) == encoded


@pytest.mark.parametrize("bad", ["", "1ABC", "ABCDE", "a_b", "A..B", "A-B"])
def test_bad_names_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        aml.name_string(bad)


# --- data objects ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (2, b"\x0a\x02"),
        (0xFF, b"\x0a\xff"),
        (0x100, b"\x0b\x00\x01"),
        (0xFFFF, b"\x0b\xff\xff"),
        (0x10000, b"\x0c\x00\x00\x01\x00"),
        (0xFFFF_FFFF, b"\x0c\xff\xff\xff\xff"),
        (0x1_0000_0000, b"\x0e\x00\x00\x00\x00\x01\x00\x00\x00"),
    ],
)
def test_integer(value: int, encoded: bytes) -> None:
    assert aml.integer(value) == encoded


def test_integer_range() -> None:
    with pytest.raises(ValueError):
        aml.integer(-1)
    with pytest.raises(ValueError):
        aml.integer(1 << 64)


def test_string_buffer_package() -> None:
    assert aml.string("ACPI0007") == b"\x0dACPI0007\x00"
    with pytest.raises(ValueError):
        aml.string("a\0b")
    assert aml.buffer(b"\x01\x02") == b"\x11\x05\x0a\x02\x01\x02"
    assert aml.buffer(b"", size=4) == b"\x11\x03\x0a\x04"
    with pytest.raises(ValueError):
        aml.buffer(b"123", size=2)
    assert aml.package(0, 0, 0, 0) == b"\x12\x06\x04\x00\x00\x00\x00"
    assert aml.package(5, "x", aml.package()) == b"\x12\x0a\x03\x0a\x05\x0dx\x00\x12\x02\x00"
    assert aml.package(True) == b"\x12\x03\x01\x01"
    with pytest.raises(TypeError):
        aml.package(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        aml.package(*range(256))


def test_package_over_63_bytes_uses_two_byte_length() -> None:
    pkg = aml.package(*[0x12345678] * 13)  # 1 + 13*5 = 66 bytes of body
    assert pkg[0] == 0x12
    value, used = decode_pkg_length(pkg[1:])
    assert used == 2 and value == len(pkg) - 1


@pytest.mark.parametrize(
    "ident, encoded",
    [
        ("PNP0501", b"\x0c\x41\xd0\x05\x01"),
        ("PNP0303", b"\x0c\x41\xd0\x03\x03"),
        ("PNP0B00", b"\x0c\x41\xd0\x0b\x00"),
        ("PNP0F13", b"\x0c\x41\xd0\x0f\x13"),
        ("PNP0A03", b"\x0c\x41\xd0\x0a\x03"),
        ("QEMU0002", None),
    ],
)
def test_eisaid(ident: str, encoded: bytes | None) -> None:
    if encoded is None:
        with pytest.raises(ValueError):
            aml.eisaid(ident)
    else:
        assert aml.eisaid(ident) == encoded


# --- named objects ---------------------------------------------------------------------------------
def test_scope_device_name_method() -> None:
    assert aml.name("_UID", 1) == b"\x08_UID\x01"
    assert aml.name("_HID", aml.eisaid("PNP0501")) == b"\x08_HID\x0c\x41\xd0\x05\x01"
    dev = aml.device("COM1", aml.name("_UID", 1))
    assert dev == b"\x5b\x82\x0b" + b"COM1" + b"\x08_UID\x01"
    assert aml.scope("\\_SB", dev) == b"\x10\x13\\_SB_" + dev
    meth = aml.method("_STA", 0, aml.return_(0x0F))
    assert meth == b"\x14\x09_STA\x00\xa4\x0a\x0f"
    assert aml.method("_PRT", 1, serialized=True, sync_level=2)[6] == 0x01 | 0x08 | 0x20
    with pytest.raises(ValueError):
        aml.method("X", 8)


# --- resource descriptors ----------------------------------------------------------------------------
def test_resource_descriptors_pinned() -> None:
    assert aml.io(0x3F8, 0x3F8, 0, 8) == bytes([0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08])
    assert aml.fixed_io(0x3F8, 8) == bytes([0x4B, 0xF8, 0x03, 0x08])
    assert aml.irq_no_flags(4) == bytes([0x22, 0x10, 0x00])
    assert aml.irq_no_flags(1, 12) == bytes([0x22, 0x02, 0x10])
    assert aml.irq([5, 10], edge=False, active_low=True, shared=True) == bytes([0x23, 0x20, 0x04, 0x18])
    assert aml.memory32_fixed(0xFEC00000, 0x1000) == bytes(
        [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xC0, 0xFE, 0x00, 0x10, 0x00, 0x00]
    )
    assert aml.interrupt([5]) == bytes([0x89, 0x06, 0x00, 0x0D, 0x01, 0x05, 0, 0, 0])
    assert len(aml.word_bus_number(0, 0xFF)) == 16
    assert len(aml.word_io(0, 0xCF7)) == 16
    assert len(aml.dword_memory(0xC0000000, 0xFEBFFFFF)) == 26
    assert len(aml.qword_memory(1 << 32, (1 << 36) - 1)) == 46
    with pytest.raises(ValueError):
        aml.irq_no_flags(16)
    with pytest.raises(ValueError):
        aml.word_io(10, 9)
    with pytest.raises(ValueError):
        aml.interrupt([])


def test_resource_template_end_tag_checksum() -> None:
    rt = aml.resource_template(aml.io(0x3F8, 0x3F8, 0, 8), aml.irq_no_flags(4))
    assert rt[:4] == b"\x11\x10\x0a\x0d"  # Buffer, PkgLength 16, size 13
    body = rt[4:]
    assert len(body) == 13 and body[-2] == 0x79
    assert sum(body) & 0xFF == 0  # the whole template sums to zero
    assert aml.resource_template(aml.irq_no_flags(4), checksum=False)[-2:] == b"\x79\x00"
    assert aml.end_tag(b"") == b"\x79\x87"


# --- statements, expressions, regions and fields ---------------------------------------------------
def test_args_locals_and_targets() -> None:
    assert [aml.arg(i) for i in (0, 6)] == [b"\x68", b"\x6e"]
    assert [aml.local(i) for i in (0, 7)] == [b"\x60", b"\x67"]
    with pytest.raises(ValueError):
        aml.arg(7)
    with pytest.raises(ValueError):
        aml.local(8)
    # no target: NullName
    assert aml.and_(aml.arg(0), 0x80) == b"\x7b\x68\x0a\x80\x00"
    assert aml.or_(b"PRQ0", 0x80, b"PRQ0") == b"\x7dPRQ0\x0a\x80PRQ0"


def test_operation_region_and_field_pinned() -> None:
    region = aml.operation_region("P40C", aml.REGION_PCI_CONFIG, 0x60, 4)
    assert region == b"\x5b\x80P40C\x02\x0a\x60\x0a\x04"
    fld = aml.field("P40C", ("PRQ0", 8), ("PRQ1", 8), (None, 8), ("PRQ3", 8))
    assert fld == b"\x5b\x81\x17P40C\x01PRQ0\x08PRQ1\x08\x00\x08PRQ3\x08"
    # flags: DWordAcc | Lock | WriteAsZeros; a 64-bit unit takes a 2-byte PkgLength
    wide = aml.field("R", ("CAPS", 64), access=aml.ACCESS_DWORD, lock=True, update=aml.UPDATE_WRITE_AS_ZEROS)
    assert wide == b"\x5b\x81\x0cR___\x53CAPS\x40\x04"
    with pytest.raises(ValueError):
        aml.field("R", ("X", 0))
    with pytest.raises(ValueError):
        aml.field("R", ("X", 8), update=3)
    with pytest.raises(ValueError):
        aml.operation_region("R", 0x100, 0, 1)


def test_control_flow_and_logic_pinned() -> None:
    body = aml.if_(aml.lequal(aml.arg(0), 1), aml.return_(1))
    assert body == b"\xa0\x06\x93\x68\x01\xa4\x01"
    assert aml.else_(aml.return_(0)) == b"\xa1\x03\xa4\x00"
    assert aml.lnot(aml.local(0)) == b"\x92\x60"
    assert aml.land(1, 0) == b"\x90\x01\x00"
    assert aml.lor(aml.lgreater(aml.local(0), 2), aml.lless(aml.local(1), 3)) == (
        b"\x91\x94\x60\x0a\x02\x95\x61\x0a\x03"
    )
    assert aml.store(aml.arg(0), aml.local(1)) == b"\x70\x68\x61"


def test_arithmetic_and_buffer_fields_pinned() -> None:
    assert aml.add(aml.local(0), 1, aml.local(1)) == b"\x72\x60\x01\x61"
    assert aml.subtract(aml.local(0), 2) == b"\x74\x60\x0a\x02\x00"
    assert aml.shift_left(1, aml.local(0), aml.local(1)) == b"\x79\x01\x60\x61"
    assert aml.shift_right(aml.local(0), 3) == b"\x7a\x60\x0a\x03\x00"
    assert aml.increment(aml.local(0)) == b"\x75\x60"
    assert aml.decrement(aml.local(0)) == b"\x76\x60"
    assert aml.find_set_right_bit(b"IRQW", aml.local(0)) == b"\x82IRQW\x60"
    assert aml.create_byte_field(b"BUF0", 0, "BYT0") == b"\x8cBUF0\x00BYT0"
    assert aml.create_word_field(aml.arg(0), 1, "IRQW") == b"\x8b\x68\x01IRQW"
    assert aml.create_dword_field(aml.arg(0), 5, "IRQN") == b"\x8a\x68\x0a\x05IRQN"
    assert aml.create_qword_field(b"BUF0", 8, "QWD0") == b"\x8fBUF0\x0a\x08QWD0"


def test_method_call() -> None:
    assert aml.call("LKST", aml.name_string("\\_SB.PCI0.ISA.PRQ0")) == (b"LKST\\\x2f\x04_SB_PCI0ISA_PRQ0")
    assert aml.call("\\_SB.MTHD", 1, 10) == b"\\\x2e_SB_MTHD\x01\x0a\x0a"
    with pytest.raises(ValueError):
        aml.call("M", *range(8))


IASL = shutil.which("iasl")

#: Every statement/expression encoder, in the legacy ASL syntax iasl compiles without rewriting.
OPS_ASL = r"""
DefinitionBlock ("", "DSDT", 2, "KVMPY ", "KVMPYDSD", 0x00000001)
{
    OperationRegion (REG0, SystemIO, 0x80, One)
    OperationRegion (REG1, PCI_Config, 0x60, 0x04)
    OperationRegion (REG2, SystemMemory, 0xFED00000, 0x0400)
    Field (REG1, ByteAcc, NoLock, Preserve)
    {
        PRQ0,   8,
        PRQ1,   8,
        ,       8,
        PRQ3,   8
    }
    Field (REG2, DWordAcc, Lock, WriteAsZeros)
    {
        CAPS,   64,
        Offset (0x10),
        CONF,   32
    }
    Method (MTHD, 2, NotSerialized)
    {
        Return (Arg1)
    }
    Method (OPS0, 1, Serialized)
    {
        Name (BUF0, Buffer (0x10) {})
        CreateByteField (BUF0, Zero, BYT0)
        CreateWordField (Arg0, One, IRQW)
        CreateDWordField (BUF0, 0x05, DWD0)
        CreateQWordField (BUF0, 0x08, QWD0)
        Store (And (Arg0, 0x0F), Local0)
        And (Arg0, 0x0F, Local1)
        Or (PRQ0, 0x80, PRQ0)
        Store (Add (Local0, One), Local2)
        Subtract (Local2, 0x02, Local3)
        ShiftLeft (One, Local0, Local4)
        Store (ShiftRight (Local4, 0x03), Local5)
        Increment (Local5)
        Decrement (Local5)
        FindSetRightBit (IRQW, Local6)
        Store (MTHD (One, 0x0A), Local7)
        If (LEqual (Arg0, One))
        {
            Return (One)
        }
        Else
        {
            If (LAnd (LGreater (Local0, 0x02), LLess (Local1, 0x10)))
            {
                Return (Local3)
            }
        }

        If (LOr (LNot (Local6), LEqual (DWD0, BYT0)))
        {
            Store (QWD0, PRQ3)
        }

        Return (Local7)
    }
}
"""


def ops_equivalent() -> bytes:
    """OPS_ASL through the encoder."""
    a, n = aml, aml.name_string
    return b"".join(
        [
            a.operation_region("REG0", a.REGION_SYSTEM_IO, 0x80, 1),
            a.operation_region("REG1", a.REGION_PCI_CONFIG, 0x60, 4),
            a.operation_region("REG2", a.REGION_SYSTEM_MEMORY, 0xFED00000, 0x400),
            a.field("REG1", ("PRQ0", 8), ("PRQ1", 8), (None, 8), ("PRQ3", 8)),
            a.field(
                "REG2",
                ("CAPS", 64),
                (None, 64),
                ("CONF", 32),
                access=a.ACCESS_DWORD,
                lock=True,
                update=a.UPDATE_WRITE_AS_ZEROS,
            ),
            a.method("MTHD", 2, a.return_(a.arg(1))),
            a.method(
                "OPS0",
                1,
                a.name("BUF0", a.buffer(b"", size=16)),
                a.create_byte_field(n("BUF0"), 0, "BYT0"),
                a.create_word_field(a.arg(0), 1, "IRQW"),
                a.create_dword_field(n("BUF0"), 5, "DWD0"),
                a.create_qword_field(n("BUF0"), 8, "QWD0"),
                a.store(a.and_(a.arg(0), 0x0F), a.local(0)),
                a.and_(a.arg(0), 0x0F, a.local(1)),
                a.or_(n("PRQ0"), 0x80, n("PRQ0")),
                a.store(a.add(a.local(0), 1), a.local(2)),
                a.subtract(a.local(2), 2, a.local(3)),
                a.shift_left(1, a.local(0), a.local(4)),
                a.store(a.shift_right(a.local(4), 3), a.local(5)),
                a.increment(a.local(5)),
                a.decrement(a.local(5)),
                a.find_set_right_bit(n("IRQW"), a.local(6)),
                a.store(a.call("MTHD", 1, 10), a.local(7)),
                a.if_(a.lequal(a.arg(0), 1), a.return_(1)),
                a.else_(
                    a.if_(a.land(a.lgreater(a.local(0), 2), a.lless(a.local(1), 0x10)), a.return_(a.local(3)))
                ),
                a.if_(
                    a.lor(a.lnot(a.local(6)), a.lequal(n("DWD0"), n("BYT0"))),
                    a.store(n("QWD0"), n("PRQ3")),
                ),
                a.return_(a.local(7)),
                serialized=True,
            ),
        ]
    )


@pytest.mark.skipif(IASL is None, reason="iasl not installed: apt-get install acpica-tools")
def test_statement_encoders_match_iasl(tmp_path: Path) -> None:
    """Regions, fields, If/Else, Store, arithmetic, logic, buffer fields and calls, byte for byte."""
    (tmp_path / "ops.asl").write_text(OPS_ASL)
    assert IASL is not None
    proc = subprocess.run(
        [IASL, "-oa", "-p", "ops", "ops.asl"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "0 Errors" in proc.stdout, proc.stdout + proc.stderr
    assert ops_equivalent() == (tmp_path / "ops.aml").read_bytes()[36:]
