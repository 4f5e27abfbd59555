"""Our ACPI tables and AML checked by ACPICA's own tools (``iasl``, ``acpiexec``).

Each table the guest would see is disassembled with ``iasl -d`` (no warnings, no errors), the
disassembly is compiled back and compared byte for byte, and the AML encoder's output is
compared with what iasl compiles from the equivalent ASL. The tests skip, saying why, only
when acpica-tools is not installed (``apt-get install acpica-tools``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.acpi import aml, build_tables
from kvmpy.acpi.tables import Dsdt

IASL = shutil.which("iasl")
ACPIEXEC = shutil.which("acpiexec")
needs_iasl = pytest.mark.skipif(IASL is None, reason="iasl not installed: apt-get install acpica-tools")
needs_acpiexec = pytest.mark.skipif(
    ACPIEXEC is None, reason="acpiexec not installed: apt-get install acpica-tools"
)

#: What iasl prints when something is wrong with a table it reads.
BAD_OUTPUT = re.compile(r"warning|error|incorrect|invalid|mismatch|does not contain|unknown", re.I)
#: What a disassembled table says when iasl could not decode part of it.
BAD_DSL = re.compile(r"\*\*\*\*|unknown|invalid", re.I)


def run(tool: str | None, *args: str, cwd: Path) -> str:
    assert tool is not None
    proc = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{out}"
    return out


def placed_tables(cpus: int) -> dict[str, bytes]:
    """Every table as the guest sees it after direct boot (absolute pointers filled in)."""
    tables = build_tables(cpus)
    blob, rsdp_gpa = tables.layout_tables()
    base = layout.ACPI_TABLES_ADDR

    def at(addr: int) -> bytes:
        (length,) = struct.unpack_from("<I", blob, addr - base + 4)
        return blob[addr - base : addr - base + length]

    rsdp = blob[rsdp_gpa - base : rsdp_gpa - base + 36]
    rsdt = at(struct.unpack_from("<I", rsdp, 16)[0])
    out = {"RSDP": rsdp, "RSDT": rsdt, "XSDT": at(struct.unpack_from("<Q", rsdp, 24)[0])}
    for addr in struct.unpack_from(f"<{(len(rsdt) - 36) // 4}I", rsdt, 36):
        tbl = at(addr)
        out[tbl[:4].decode()] = tbl
    fadt = out["FACP"]
    out["DSDT"] = at(struct.unpack_from("<I", fadt, 40)[0])
    facs = struct.unpack_from("<I", fadt, 36)[0] - base
    out["FACS"] = blob[facs : facs + 64]
    return out


def normalise(table: bytes, end_tags_like: bytes | None = None) -> bytes:
    """Blank what a recompile legitimately changes: checksum and the compiler ID/revision.

    With ``end_tags_like`` (iasl's AML), also blank our EndTag checksums where iasl has 0.
    """
    out = bytearray(table)
    out[9] = 0
    out[28:36] = bytes(8)
    if end_tags_like is not None:
        for i in range(37, min(len(out), len(end_tags_like))):
            if out[i - 1] == 0x79 and end_tags_like[i - 1] == 0x79 and end_tags_like[i] == 0:
                out[i] = 0
    return bytes(out)


@needs_iasl
@pytest.mark.parametrize("cpus", [1, 2, 8])
def test_iasl_disassembles_every_table_cleanly(tmp_path: Path, cpus: int) -> None:
    tables = placed_tables(cpus)
    assert set(tables) == {"RSDP", "RSDT", "XSDT", "FACP", "APIC", "DSDT", "FACS"}
    for sig, raw in tables.items():
        if sig == "RSDP":
            continue  # iasl cannot disassemble an RSDP file; see test_iasl_compiles_our_rsdp
        (tmp_path / f"{sig}.dat").write_bytes(raw)
        out = run(IASL, "-d", f"{sig}.dat", cwd=tmp_path)
        assert not BAD_OUTPUT.search(out), f"iasl -d {sig}:\n{out}"
        dsl = (tmp_path / f"{sig}.dsl").read_text()
        assert not BAD_DSL.search(dsl), f"{sig}.dsl:\n{dsl}"

        # compile the disassembly back: the same table must come out
        if sig == "DSDT":
            run(IASL, "-oa", "-p", f"rt_{sig}", f"{sig}.dsl", cwd=tmp_path)
        else:
            run(IASL, "-p", f"rt_{sig}", f"{sig}.dsl", cwd=tmp_path)
        again = (tmp_path / f"rt_{sig}.aml").read_bytes()
        if sig == "FACS":
            assert again == raw
        else:
            assert normalise(raw, again if sig == "DSDT" else None) == normalise(again), sig

    madt = (tmp_path / "APIC.dsl").read_text()
    assert madt.count("[Processor Local APIC]") == cpus
    assert madt.count("[I/O APIC]") == 1
    assert madt.count("[Interrupt Source Override]") == 2
    assert madt.count("[Local APIC NMI]") == 1
    dsdt = (tmp_path / "DSDT.dsl").read_text()
    for needle in ('EisaId ("PNP0501")', 'EisaId ("PNP0B00")', 'EisaId ("PNP0303")', "Name (\\_S5, Package"):
        assert needle in dsdt
    assert dsdt.count('"ACPI0007"') == cpus
    fadt = (tmp_path / "FACP.dsl").read_text()
    assert re.search(r"Reset Register Supported \(V2\) : 1", fadt)
    assert re.search(r"SCI Interrupt : 0009", fadt)


@needs_iasl
def test_iasl_compiles_our_rsdp(tmp_path: Path) -> None:
    """iasl's data-table compiler builds the RSDP from its fields; it must equal ours."""
    rsdp = placed_tables(2)["RSDP"]
    rsdt, length, xsdt = struct.unpack_from("<IIQ", rsdp, 16)
    src = f"""
[0008]                          Signature : "RSD PTR "
[0001]                           Checksum : 00
[0006]                             Oem ID : "KVMPY "
[0001]                           Revision : 02
[0004]                       RSDT Address : {rsdt:08X}
[0004]                             Length : {length:08X}
[0008]                       XSDT Address : {xsdt:016X}
[0001]                  Extended Checksum : 00
[0003]                           Reserved : 000000
"""
    (tmp_path / "rsdp.dsl").write_text(src)
    run(IASL, "-p", "rsdp", "rsdp.dsl", cwd=tmp_path)
    assert (tmp_path / "rsdp.aml").read_bytes() == rsdp


ASL_EQUIVALENT = r"""
DefinitionBlock ("", "DSDT", 2, "KVMPY ", "KVMPYDSD", 0x00000001)
{
    Scope (\_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (NAMS, "kvmpy")
            Method (_STA, 0, NotSerialized)
            {
                Return (0x0F)
            }
            Method (MTHD, 4, Serialized, 3)
            {
                Return (Zero)
            }
        }
    }
    Name (\_S5, Package (0x04) { Zero, Zero, Zero, Zero })
    Name (INTS, Package (0x09) { Zero, One, 0x02, 0xFF, 0x0100, 0xFFFF, 0x00010000, 0xFFFFFFFF,
        0x0000000100000000 })
    Name (BIGP, Package (0x0D) { 0x12345678, 0x12345678, 0x12345678, 0x12345678, 0x12345678, 0x12345678,
        0x12345678, 0x12345678, 0x12345678, 0x12345678, 0x12345678, 0x12345678, 0x12345678 })
    Name (R000, ResourceTemplate ()
    {
        IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, )
        IRQNoFlags () {4}
    })
    Name (R001, ResourceTemplate ()
    {
        FixedIO (0x03F8, 0x08, )
        IRQNoFlags () {1,12}
        IRQ (Level, ActiveLow, Shared, ) {5,10}
        IRQ (Edge, ActiveHigh, Exclusive, ) {3}
        Memory32Fixed (ReadWrite, 0xFEC00000, 0x00001000, )
        Memory32Fixed (ReadOnly, 0xFED00000, 0x00000400, )
    })
    Name (R002, ResourceTemplate ()
    {
        Interrupt (ResourceConsumer, Level, ActiveLow, Shared, , , ) {5}
        Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, , , ) {16, 17}
        WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
            0x0000, 0x0000, 0x00FF, 0x0000, 0x0100, , , )
        WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
            0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8, , , , TypeStatic, DenseTranslation)
        DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
            0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000, , , , AddressRangeMemory, TypeStatic)
        DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadOnly,
            0x00000000, 0x000A0000, 0x000BFFFF, 0x00000000, 0x00020000, , , , AddressRangeMemory, TypeStatic)
        QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
            0x0000000000000000, 0x0000000100000000, 0x0000000FFFFFFFFF, 0x0000000000000000,
            0x0000000F00000000, , , , AddressRangeMemory, TypeStatic)
    })
}
"""


def our_equivalent() -> bytes:
    """The same definitions as ASL_EQUIVALENT, through the encoder (EndTag checksums 0, as iasl)."""

    def rt(*descs: bytes) -> bytes:
        return aml.resource_template(*descs, checksum=False)

    return b"".join(
        [
            aml.scope(
                "\\_SB",
                aml.device(
                    "COM1",
                    aml.name("_HID", aml.eisaid("PNP0501")),
                    aml.name("_UID", 1),
                    aml.name("NAMS", "kvmpy"),
                    aml.method("_STA", 0, aml.return_(0x0F)),
                    aml.method("MTHD", 4, aml.return_(0), serialized=True, sync_level=3),
                ),
            ),
            aml.name("\\_S5", aml.package(0, 0, 0, 0)),
            aml.name("INTS", aml.package(0, 1, 2, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 1 << 32)),
            aml.name("BIGP", aml.package(*[0x12345678] * 13)),
            aml.name("R000", rt(aml.io(0x3F8, 0x3F8, 0, 8), aml.irq_no_flags(4))),
            aml.name(
                "R001",
                rt(
                    aml.fixed_io(0x3F8, 8),
                    aml.irq_no_flags(1, 12),
                    aml.irq([5, 10], edge=False, active_low=True, shared=True),
                    aml.irq([3]),
                    aml.memory32_fixed(0xFEC00000, 0x1000),
                    aml.memory32_fixed(0xFED00000, 0x400, read_write=False),
                ),
            ),
            aml.name(
                "R002",
                rt(
                    aml.interrupt([5]),
                    aml.interrupt([16, 17], edge=True, active_low=False, shared=False),
                    aml.word_bus_number(0, 0xFF),
                    aml.word_io(0, 0xCF7),
                    aml.dword_memory(0xC0000000, 0xFEBFFFFF),
                    aml.dword_memory(0xA0000, 0xBFFFF, cacheable=True, read_write=False),
                    aml.qword_memory(1 << 32, (1 << 36) - 1, cacheable=True),
                ),
            ),
        ]
    )


@needs_iasl
def test_encoder_matches_iasl_byte_for_byte(tmp_path: Path) -> None:
    (tmp_path / "eq.asl").write_text(ASL_EQUIVALENT)
    out = run(IASL, "-oa", "-p", "eq", "eq.asl", cwd=tmp_path)
    assert "0 Errors" in out, out
    theirs = (tmp_path / "eq.aml").read_bytes()[36:]
    ours = our_equivalent()
    assert ours == theirs


def big_asl_buffer(n: int) -> str:
    data = ", ".join(f"0x{i & 0xFF:02X}" for i in range(n))
    return f"Buffer (0x{n:04X}) {{ {data} }}"


@needs_iasl
@pytest.mark.parametrize("n", [55, 56, 60, 4085, 4086, 4090, 5000])
def test_large_package_lengths_match_iasl(tmp_path: Path, n: int) -> None:
    """Buffers and devices across the 63/64 and 4095/4096 PkgLength boundaries."""
    asl = (
        'DefinitionBlock ("", "DSDT", 2, "KVMPY ", "KVMPYDSD", 1)\n'
        "{ Device (BIG0) { Name (BUF0, " + big_asl_buffer(n) + ") } }\n"
    )
    (tmp_path / "big.asl").write_text(asl)
    run(IASL, "-oa", "-p", "big", "big.asl", cwd=tmp_path)
    theirs = (tmp_path / "big.aml").read_bytes()[36:]
    ours = aml.device("BIG0", aml.name("BUF0", aml.buffer(bytes(i & 0xFF for i in range(n)))))
    assert ours == theirs
    # and iasl reads ours back without complaint
    (tmp_path / "ours.dat").write_bytes(Dsdt(ours).to_bytes())
    out = run(IASL, "-d", "ours.dat", cwd=tmp_path)
    assert not BAD_OUTPUT.search(out), out


@needs_acpiexec
def test_acpiexec_loads_and_evaluates(tmp_path: Path) -> None:
    """ACPICA's interpreter loads FADT + DSDT and evaluates \\_S5 and the devices' _CRS."""
    tables = placed_tables(2)
    (tmp_path / "facp.dat").write_bytes(tables["FACP"])
    (tmp_path / "dsdt.dat").write_bytes(tables["DSDT"])
    cmds = "; ".join(
        [
            "evaluate \\_S5",
            "resources \\_SB.COM1",
            "resources \\_SB.RTC",
            "evaluate \\_SB.KBD._HID",
            "evaluate \\_SB.C001._UID",
        ]
    )
    out = run(ACPIEXEC, "-b", cmds, "facp.dat", "dsdt.dat", cwd=tmp_path)
    assert "1 ACPI AML tables successfully acquired and loaded" in out
    assert re.search(r"ACPI (Error|Exception|Warning)|Firmware Warning", out) is None, out
    s5 = out[out.index("Evaluating \\_S5") :]
    assert "[Package] Contains 4 Elements" in s5
    assert re.search(r"Address Minimum : 03F8", out) and re.search(r"Interrupt List : 4 ", out)
    assert re.search(r"Address Minimum : 0070", out) and re.search(r"Interrupt List : 8 ", out)
    assert "[Integer] = 000000000303D041" in out  # EisaId("PNP0303")
    assert re.search(r"C001._UID returned .*\n\s+\[Integer\] = 0000000000000001", out)
