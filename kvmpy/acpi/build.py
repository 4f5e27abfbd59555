"""Assemble kvmpy's ACPI tables and place them for a guest, by direct boot or through firmware.

``build_tables`` returns an ``AcpiTables``: the RSDP, RSDT, XSDT, FADT, FACS, MADT, DSDT and
any extra tables (MCFG, DMAR, ... from later work). It is open for extension in two places:
``extra_tables`` (listed in the RSDT/XSDT) and ``dsdt_extra`` (AML terms appended to the DSDT,
e.g. ``aml.scope("\\_SB", aml.device("PCI0", ...))``).

Two ways to hand them over:

* ``layout_tables(base_gpa)`` -- direct boot: one blob for a fixed guest-physical address,
  the RSDP first (16-byte aligned, so the 0xE0000-0xFFFFF scan finds it), then the FACS
  (64-byte aligned), then the tables, with absolute pointers and checksums filled in.
* ``loader_files()`` -- firmware: ``etc/acpi/tables``, ``etc/acpi/rsdp`` and
  ``etc/table-loader`` for fw_cfg, exactly as QEMU provides them, so SeaBIOS allocates the
  tables, patches the pointers and fixes the checksums itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .. import layout
from . import aml
from .loader import ZONE_FSEG, ZONE_HIGH, TableLoader
from .tables import AcpiBlob, Dsdt, Facs, Fadt, Madt, RawTable, Rsdp, Rsdt, Xsdt

__all__ = [
    "S5_SLP_TYP",
    "ACPI_TABLES_FILE",
    "ACPI_RSDP_FILE",
    "TABLE_LOADER_FILE",
    "AcpiTables",
    "build_tables",
    "build_dsdt",
    "default_dsdt_terms",
    "layout_tables",
    "loader_files",
]

#: SLP_TYP value for S5 (soft off) in PM1_CNT. The ACPI PM device reads it from here, so the
#: DSDT's \_S5 package and the device that acts on it never disagree. 0 is PIIX4's (and
#: QEMU's) value.
S5_SLP_TYP = 0

ACPI_TABLES_FILE = "etc/acpi/tables"
ACPI_RSDP_FILE = "etc/acpi/rsdp"
TABLE_LOADER_FILE = "etc/table-loader"

#: Every table starts on an 8-byte boundary (the FACS on 64).
TABLE_ALIGN = 8
#: Alignment of the etc/acpi/tables allocation: the FACS at offset 0 needs 64.
TABLES_FILE_ALIGN = 64


def _align(value: int, to: int) -> int:
    return (value + to - 1) & ~(to - 1)


def default_dsdt_terms(
    cpus: int,
    *,
    serial: bool = True,
    rtc: bool = True,
    i8042: bool = True,
    s5_slp_typ: int = S5_SLP_TYP,
) -> list[bytes]:
    r"""The DSDT's standard contents: \_SB devices for the legacy devices, CPUs and \_S5.

    COM1 (PNP0501) and the RTC (PNP0B00) as the brief requires; the i8042's keyboard (PNP0303)
    and mouse (PNP0F13) because SeaBIOS skips PS/2 set-up when a parsed DSDT lacks PNP0303 and
    Linux's i8042 driver looks for them; one ACPI0007 processor device per vCPU whose _UID
    matches the MADT's processor UID.
    """
    sb: list[bytes] = []
    for i in range(cpus):
        sb.append(aml.device(f"C{i:03X}", aml.name("_HID", "ACPI0007"), aml.name("_UID", i)))
    if serial:
        sb.append(
            aml.device(
                "COM1",
                aml.name("_HID", aml.eisaid("PNP0501")),
                aml.name("_UID", 1),
                aml.name(
                    "_CRS",
                    aml.resource_template(
                        aml.io(layout.COM1_PORT, layout.COM1_PORT, 0, 8),
                        aml.irq_no_flags(layout.IRQ_COM1),
                    ),
                ),
            )
        )
    if rtc:
        sb.append(
            aml.device(
                "RTC",
                aml.name("_HID", aml.eisaid("PNP0B00")),
                aml.name(
                    "_CRS",
                    aml.resource_template(
                        aml.io(layout.RTC_PORT, layout.RTC_PORT, 1, 8),
                        aml.irq_no_flags(layout.IRQ_RTC),
                    ),
                ),
            )
        )
    if i8042:
        sb.append(
            aml.device(
                "KBD",
                aml.name("_HID", aml.eisaid("PNP0303")),
                aml.name(
                    "_CRS",
                    aml.resource_template(
                        aml.io(layout.I8042_DATA_PORT, layout.I8042_DATA_PORT, 1, 1),
                        aml.io(layout.I8042_CMD_PORT, layout.I8042_CMD_PORT, 1, 1),
                        aml.irq_no_flags(layout.IRQ_KEYBOARD),
                    ),
                ),
            )
        )
        sb.append(
            aml.device(
                "MOU",
                aml.name("_HID", aml.eisaid("PNP0F13")),
                aml.name("_CRS", aml.resource_template(aml.irq_no_flags(layout.IRQ_MOUSE))),
            )
        )
    return [
        aml.scope("\\_SB", *sb),
        aml.name("\\_S5", aml.package(s5_slp_typ, s5_slp_typ, 0, 0)),
    ]


def build_dsdt(
    cpus: int,
    dsdt_extra: bytes | Iterable[bytes] = b"",
    *,
    serial: bool = True,
    rtc: bool = True,
    i8042: bool = True,
    s5_slp_typ: int = S5_SLP_TYP,
) -> Dsdt:
    """The DSDT: the default terms, then ``dsdt_extra`` (encoded AML terms) after them."""
    extra = dsdt_extra if isinstance(dsdt_extra, (bytes, bytearray)) else b"".join(dsdt_extra)
    terms = default_dsdt_terms(cpus, serial=serial, rtc=rtc, i8042=i8042, s5_slp_typ=s5_slp_typ)
    return Dsdt(b"".join(terms) + bytes(extra))


@dataclass(eq=False)
class AcpiTables:
    """One machine's ACPI tables, ready to be placed (see the module docstring)."""

    rsdp: Rsdp
    rsdt: Rsdt
    xsdt: Xsdt
    fadt: Fadt
    facs: Facs
    dsdt: Dsdt
    madt: Madt
    extra: list[AcpiBlob] = field(default_factory=list)

    def tables(self) -> list[AcpiBlob]:
        """Everything but the RSDP, in the order placed: FACS first (it needs 64-byte alignment)."""
        return [self.facs, self.dsdt, self.fadt, self.madt, *self.extra, self.rsdt, self.xsdt]

    def blobs(self) -> dict[str, bytes]:
        """Each table on its own (pointers 0), keyed by signature; repeats get "#2", "#3"."""
        out: dict[str, bytes] = {}
        for t in [self.rsdp, *self.tables()]:
            key = t.signature.decode("ascii").strip()
            n = 2
            while key in out:
                key = f"{t.signature.decode('ascii').strip()}#{n}"
                n += 1
            out[key] = t.to_bytes()
        return out

    # -- placement ----------------------------------------------------------------------------
    @staticmethod
    def _place(tables: Sequence[AcpiBlob], start: int, base: int) -> tuple[dict[AcpiBlob, int], int]:
        """Offsets of ``tables`` from ``start``, each aligned in *absolute* terms (base + off)."""
        offsets: dict[AcpiBlob, int] = {}
        off = start
        for t in tables:
            align = max(t.alignment, TABLE_ALIGN)
            off = _align(base + off, align) - base
            offsets[t] = off
            off += t.length
        return offsets, off

    def layout_tables(self, base_gpa: int = layout.ACPI_TABLES_ADDR) -> tuple[bytes, int]:
        """Direct boot: (blob to copy to ``base_gpa``, guest-physical address of the RSDP)."""
        rsdp_off = _align(base_gpa, Rsdp.alignment) - base_gpa
        offsets, end = self._place(self.tables(), rsdp_off + Rsdp.SIZE, base_gpa)
        if base_gpa + end > 1 << 32:
            raise ValueError(f"ACPI tables at {base_gpa:#x} would cross 4 GiB (the RSDT is 32-bit)")
        blob = bytearray(end)

        def addr_of(t: AcpiBlob) -> int:
            return base_gpa + offsets[t]

        blob[rsdp_off : rsdp_off + Rsdp.SIZE] = self.rsdp.encode(addr_of)
        for t, off in offsets.items():
            blob[off : off + t.length] = t.encode(addr_of)
        return bytes(blob), base_gpa + rsdp_off

    def loader_files(self) -> dict[str, bytes]:
        """Firmware: the fw_cfg files ``etc/acpi/tables``, ``etc/acpi/rsdp``, ``etc/table-loader``.

        Pointers in the files hold offsets within ``etc/acpi/tables``; the loader adds the
        file's address to each and then recomputes each checksum, as SeaBIOS and OVMF do it.
        """
        tables = self.tables()
        offsets, end = self._place(tables, 0, 0)
        blob = bytearray(end)

        def offset_of(t: AcpiBlob) -> int:
            return offsets[t]

        loader = TableLoader()
        loader.allocate(ACPI_TABLES_FILE, TABLES_FILE_ALIGN, ZONE_HIGH)
        loader.allocate(ACPI_RSDP_FILE, Rsdp.alignment, ZONE_FSEG)
        for t in tables:
            off = offsets[t]
            blob[off : off + t.length] = t.encode(offset_of)
            for p in t.pointers():
                loader.add_pointer(ACPI_TABLES_FILE, ACPI_TABLES_FILE, off + p.offset, p.size)
            for result, start, length in t.checksums():
                loader.add_checksum(ACPI_TABLES_FILE, off + result, off + start, length)
        for p in self.rsdp.pointers():
            loader.add_pointer(ACPI_RSDP_FILE, ACPI_TABLES_FILE, p.offset, p.size)
        for result, start, length in self.rsdp.checksums():
            loader.add_checksum(ACPI_RSDP_FILE, result, start, length)
        return {
            ACPI_TABLES_FILE: bytes(blob),
            ACPI_RSDP_FILE: self.rsdp.encode(offset_of),
            TABLE_LOADER_FILE: loader.to_bytes(),
        }


def build_tables(
    cpus: int,
    extra_tables: Iterable[AcpiBlob | bytes] = (),
    dsdt_extra: bytes | Iterable[bytes] = b"",
    *,
    serial: bool = True,
    rtc: bool = True,
    i8042: bool = True,
    s5_slp_typ: int = S5_SLP_TYP,
    fadt_options: dict[str, int] | None = None,
) -> AcpiTables:
    """Build the tables for a PC-like machine with ``cpus`` vCPUs.

    ``extra_tables`` are table objects (``tables.Table(b"MCFG", payload)``) or complete table
    bytes; they are listed in the RSDT and XSDT after the MADT. ``dsdt_extra`` is encoded AML
    appended to the DSDT. ``fadt_options`` passes keyword arguments to ``Fadt`` (e.g.
    ``iapc_boot_arch``). ``serial``/``rtc``/``i8042`` say which legacy devices the DSDT names.
    """
    facs = Facs()
    dsdt = build_dsdt(cpus, dsdt_extra, serial=serial, rtc=rtc, i8042=i8042, s5_slp_typ=s5_slp_typ)
    fadt = Fadt(facs, dsdt, cpus=cpus, **(fadt_options or {}))
    madt = Madt(cpus)
    extra: list[AcpiBlob] = [t if isinstance(t, AcpiBlob) else RawTable(t) for t in extra_tables]
    listed: list[AcpiBlob] = [fadt, madt, *extra]
    rsdt = Rsdt(listed)
    xsdt = Xsdt(listed)
    rsdp = Rsdp(rsdt, xsdt)
    return AcpiTables(
        rsdp=rsdp, rsdt=rsdt, xsdt=xsdt, fadt=fadt, facs=facs, dsdt=dsdt, madt=madt, extra=extra
    )


def layout_tables(tables: AcpiTables, base_gpa: int = layout.ACPI_TABLES_ADDR) -> tuple[bytes, int]:
    """``tables.layout_tables(base_gpa)`` as a function: (blob, RSDP guest-physical address)."""
    return tables.layout_tables(base_gpa)


def loader_files(tables: AcpiTables) -> dict[str, bytes]:
    """``tables.loader_files()`` as a function: the three fw_cfg files for firmware."""
    return tables.loader_files()
