"""The ACPI DMAR table: layout pinned byte by byte, placement through build_tables, and ACPICA's
own disassembler reading it without complaint."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.acpi import build_tables
from kvmpy.iommu import Dmar

IASL = shutil.which("iasl")


def test_layout_matches_qemu_q35() -> None:
    t = Dmar(39, ioapic_id=0).to_bytes()
    assert t[:4] == b"DMAR" and struct.unpack_from("<I", t, 4)[0] == len(t) == 36 + 12 + 16 + 8
    assert t[8] == 1  # revision
    assert sum(t) & 0xFF == 0
    assert t[36] == 38 and t[37] == 0 and t[38:48] == bytes(10)
    # DRHD
    typ, length, flags, size, seg, base = struct.unpack_from("<HHBBHQ", t, 48)
    assert (typ, length, flags, size, seg, base) == (0, 24, 1, 0, 0, layout.VTD_BASE)
    # IOAPIC scope: type 3, length 8, enumeration id, bus 0xFF, path 00.0
    assert t[64:72] == bytes([3, 8, 0, 0, 0, 0xFF, 0, 0])


def test_options() -> None:
    t = Dmar(
        48, ioapic_id=4, hpet_id=0, intr_remap=True, x2apic_opt_out=True, register_base=0xFED91000
    ).to_bytes()
    assert t[36] == 47 and t[37] == 0b11
    typ, length, flags, size, seg, base = struct.unpack_from("<HHBBHQ", t, 48)
    assert length == 32 and base == 0xFED91000
    assert t[64:72] == bytes([3, 8, 0, 0, 4, 0xFF, 0, 0])
    assert t[72:80] == bytes([4, 8, 0, 0, 0, 0xFF, 0x1F, 0])


def test_listed_by_build_tables() -> None:
    dmar = Dmar(39, ioapic_id=1)
    tables = build_tables(1, extra_tables=[dmar])
    blob, rsdp = tables.layout_tables()
    base = layout.ACPI_TABLES_ADDR
    xsdt_addr = struct.unpack_from("<Q", blob, rsdp - base + 24)[0]
    (xlen,) = struct.unpack_from("<I", blob, xsdt_addr - base + 4)
    entries = struct.unpack_from(f"<{(xlen - 36) // 8}Q", blob, xsdt_addr - base + 36)
    sigs = {blob[a - base : a - base + 4]: a for a in entries}
    assert b"DMAR" in sigs
    a = sigs[b"DMAR"] - base
    assert blob[a : a + dmar.length] == dmar.to_bytes()
    assert "DMAR" in tables.loader_files()["etc/acpi/tables"].decode("latin-1")


@pytest.mark.skipif(IASL is None, reason="iasl not installed: apt-get install acpica-tools")
@pytest.mark.parametrize("hpet", [None, 0])
def test_iasl_disassembles_it_cleanly(tmp_path: Path, hpet: int | None) -> None:
    assert IASL is not None
    (tmp_path / "dmar.dat").write_bytes(Dmar(39, ioapic_id=1, hpet_id=hpet).to_bytes())
    proc = subprocess.run([IASL, "-d", "dmar.dat"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not re.search(r"warning|error|invalid|unknown", out, re.I), out
    dsl = (tmp_path / "dmar.dsl").read_text()
    assert not re.search(r"\*\*\*\*|unknown|invalid", dsl, re.I), dsl
    assert re.search(r"Host Address Width : 26", dsl)
    assert re.search(r"Subtable Type : 0000 \[Hardware Unit Definition\]", dsl)
    assert re.search(r"Register Base Address : 00000000FED90000", dsl)
    assert re.search(r"Device Scope Type : 03 \[IOAPIC Device\]", dsl)
    assert re.search(r"Enumeration ID : 01", dsl)
    assert re.search(r"PCI Bus Number : FF", dsl)
    assert ("HPET Device" in dsl) == (hpet is not None)
