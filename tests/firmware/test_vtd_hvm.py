"""VT-d on the HVM path: our VT-d guest program (firmware/tests/vtd.c) behind SeaBIOS.

On the direct path kvmpy itself writes the ACPI tables and the program assigns the edu device's
BAR. Here the PC's firmware does both, as for any OS: SeaBIOS builds the tables (the DMAR among
them) from kvmpy's fw_cfg table loader, enumerates PCI and assigns the BARs; syslinux's
mboot.c32 then loads the program from a FAT disk (build/images/vtd-hvm.img, made by
firmware/images.mk). The program finds the DMAR through SeaBIOS's RSDP and runs every check it
runs on the direct path: DMA remapping, blocked DMA with its fault records, both invalidation
paths, the fault event and interrupt remapping on kvmpy's split irqchip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hvmtools import ROOT, make_images

pytestmark = pytest.mark.firmware

IMAGE = ROOT / "build" / "images" / "vtd-hvm.img"
MARKERS = ("VTD FOUND", "MAP OK", "DMA OK", "BLOCK RO OK", "BLOCK UNMAPPED OK", "INVAL REG OK",
           "INVAL QI OK", "FAULT IRQ OK", "IR MSI OK", "IR BLOCK OK", "IR IEC OK", "IR IOAPIC OK",
           "INTREMAP OK", "VTD OK")
#: SeaBIOS and syslinux take about 15 s on a PVM host (guest code through KVM's emulator)
TIMEOUT = float(os.environ.get("KVMPY_FIRMWARE_TIMEOUT", "120")) + 60


@pytest.fixture(scope="module")
def vtd_image(seabios: Path) -> Path:
    make_images(str(IMAGE.relative_to(ROOT)))  # (re)builds build/firmware/vtd.elf first
    return IMAGE


def test_vtd_program_behind_seabios(vtd_image: Path, tmp_path: Path) -> None:
    disk = tmp_path / "vtd-hvm.img"  # kvmpy opens (and locks) a disk read-write: boot a copy
    subprocess.run(["cp", "--sparse=always", str(vtd_image), str(disk)], check=True)
    p = subprocess.run([sys.executable, "-m", "kvmpy", "boot", "--hvm", str(disk), "--iommu", "vtd",
                        "--device", "edu", "--memory", "64M"],
                       input=b"", capture_output=True, timeout=TIMEOUT, cwd=ROOT)
    out = p.stdout.decode(errors="replace").replace("\r", "")
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out[-4000:] + err  # debug-exit 0: every check passed
    assert "vtd: cmdline '/vtd.elf strict'" in out, out[:2000]  # loaded by mboot.c32
    for marker in MARKERS:
        assert marker in out, marker + "\n" + out[-4000:]
    # the firmware, not the program, gave edu its BAR (the program says when it must assign one)
    assert "BAR0 unassigned" not in out, out[:2000]
    bar = re.search(r"edu: 00:04\.0 BAR0 (0x[0-9a-f]+)", out)
    assert bar and int(bar.group(1), 16) >= 0xE000_0000, out[:2000]
    # SeaBIOS's copy of the DMAR (high in RAM, where it puts its tables) with kvmpy's unit in it
    dmar = re.search(r"vtd: DMAR table at (0x[0-9a-f]+): host address width 39", out)
    assert dmar and int(dmar.group(1), 16) >= 0x10_0000, out[:2000]
    assert "vtd: DRHD flags 0x1 base 0xfed90000" in out
    # a blocked write to a read-only page, recorded with edu's source-id
    assert re.search(r"reason 0x05 sid 00:04\.0", out)
