"""ACPI table builders shared by every machine profile.

``aml`` encodes AML; ``tables`` holds the table objects (RSDP, RSDT, XSDT, FADT, FACS, MADT,
DSDT, and ``Table`` for anything else); ``loader`` writes QEMU's fw_cfg table-loader script;
``build`` assembles a machine's set (``build_tables``) and places it for direct boot
(``AcpiTables.layout_tables``) or for firmware (``AcpiTables.loader_files``).

This package sits below ``devices`` in kvmpy's layers, so values that tables and devices share
live here: the ACPI PM device takes ``S5_SLP_TYP`` from ``kvmpy.acpi``.
"""

from __future__ import annotations

from . import aml
from .build import (
    ACPI_RSDP_FILE,
    ACPI_TABLES_FILE,
    S5_SLP_TYP,
    TABLE_LOADER_FILE,
    AcpiTables,
    build_dsdt,
    build_tables,
    default_dsdt_terms,
    layout_tables,
    loader_files,
)
from .loader import TableLoader
from .tables import Dsdt, Facs, Fadt, Madt, RawTable, Rsdp, Rsdt, Sdt, Table, Xsdt

__all__ = [
    "aml",
    "ACPI_RSDP_FILE",
    "ACPI_TABLES_FILE",
    "S5_SLP_TYP",
    "TABLE_LOADER_FILE",
    "AcpiTables",
    "build_dsdt",
    "build_tables",
    "default_dsdt_terms",
    "layout_tables",
    "loader_files",
    "TableLoader",
    "Dsdt",
    "Facs",
    "Fadt",
    "Madt",
    "RawTable",
    "Rsdp",
    "Rsdt",
    "Sdt",
    "Table",
    "Xsdt",
]
