"""The direct-boot machine's ACPI tables: a PCI root in the DSDT exactly when the machine has PCI.

With ACPI, Linux on x86 finds PCI only through PNP0A03 root bridges in the namespace
(arch/x86/pci/acpi.c: pci_acpi_init makes pci_subsys_init skip the legacy bus scan), so a
direct-boot machine with a disk, a NIC, edu or the IOMMU must describe its host bridge there,
or a Linux guest sees none of them. Seen first on a Linux direct boot with ``--iommu vtd``:
intel-iommu initialised and put no device in a group.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.acpi.pc import pc_dsdt_terms
from kvmpy.options import parse_boot_args
from kvmpy.profiles import microvm

try:
    from test_boot_support import make_bzimage
except ImportError:  # importlib import mode
    from .test_boot_support import make_bzimage


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "bzImage"
    path.write_bytes(make_bzimage())
    return path


def prepared(kernel: Path, *args: str) -> microvm.Prepared:
    return microvm.prepare(parse_boot_args(["--kernel", str(kernel), "--memory", "512M", *args]))


@pytest.mark.parametrize("args", [
    ["--device", "edu"],
    ["--iommu", "vtd"],
    ["--drive", "file=/dev/null"],
])
def test_pci_machine_describes_its_root_bridge(kernel: Path, args: list[str]) -> None:
    blob = prepared(kernel, *args).acpi_blob
    # the pc machine's PCI0, with the BAR window from the end of RAM below 4 GiB
    assert pc_dsdt_terms(pci_hole=(512 << 20, layout.PCI_MMIO_END)) in blob
    assert b"PCI0" in blob


def test_machine_without_pci_has_no_root_bridge(kernel: Path) -> None:
    assert b"PCI0" not in prepared(kernel).acpi_blob


def test_window_starts_where_low_ram_ends(kernel: Path) -> None:
    blob = prepared(kernel, "--device", "edu", "--memory", "4G").acpi_blob
    assert pc_dsdt_terms(pci_hole=(layout.LOWMEM_LIMIT, layout.PCI_MMIO_END)) in blob
