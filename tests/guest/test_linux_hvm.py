"""Debian's kernel booted the way an unmodified PC boots it: SeaBIOS -> syslinux (disk) or
isolinux (CD) -> Linux, on kvmpy's HVM platform (`kvmpy boot --hvm` / `--cdrom --boot d`).

Every assertion is on what the guest itself reported (the KVMPY-* markers of
tests/guest/initramfs/init on its serial console), on kvmpy's exit status, or on the bytes the
guest left in the data disk's image file:
- its CPU count and memory, the ACPI tables it found;
- its IDE disk through ata_piix (8086:7010) with a DMA transfer mode configured by libata;
- its block devices, with the sizes of our images;
- a pattern written to a second (data) disk, synced, found in the image file on the host, and
  read back with the same SHA-256 after the guest powered off and the machine booted again.

The images come from firmware/images.mk through make (build/images/disk.img, boot.iso; their
initrd carries the ata/sd/sr modules, which Debian builds as modules). The boot loader's labels
(firmware/images/boot.cfg.in) are chosen by typing the label at its `boot:` prompt on the serial
line (the configuration has SERIAL), which tests/firmware/test_bootloaders.py proves works here.

These need hardware-assisted KVM; on a PVM-backed host they are skipped (see conftest.py), since
Linux does not boot there in useful time. KVMPY_GUEST_APPEND words are typed after the label.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.hwvirt

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "build" / "images"
DISK = IMAGES / "disk.img"
ISO = IMAGES / "boot.iso"

EXIT_POWEROFF = 0
MIB = 1 << 20
MIB_KB = 1024
KERNEL_RESERVE_MIB = 96  # as in test_linux_direct.py: what the kernel keeps of the RAM we give
SECTOR = 512
DATA_DISK_MIB = 8
PIIX3_IDE = ("0000:00:01.1", "8086:7010")
#: libata's sysfs names for transfer modes (libata-transport.c, ata_xfer_names): a DMA mode means
#: the device's reads and writes go through the controller's bus-master DMA
DMA_MODE = re.compile(r"^XFER_(UDMA|MW_DMA|SW_DMA)_\d$")
ACPI_REQUIRED = {"FACP", "APIC", "DSDT"}


if str(ROOT / "tests" / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "firmware"))

from guestlib import EXTRA_APPEND, GUEST_TIMEOUT, VMM_COMMAND, GuestProcess  # noqa: E402
from hvmtools import make_images  # noqa: E402


class HvmGuest(GuestProcess):
    """`python -m kvmpy boot ARGS` for a firmware boot: console on stdout, stdin to the serial port."""

    def __init__(self, args: list[str], timeout: float = GUEST_TIMEOUT):
        self.append = ""
        self._start([*VMM_COMMAND, "boot", *args], timeout, interactive=True)

    def choose(self, label: str) -> None:
        """Type a boot label (and KVMPY_GUEST_APPEND's words) at the loader's prompt."""
        self.wait_for(r"boot:")
        self.send(" ".join([label, *EXTRA_APPEND]))

    def markers(self, name: str) -> list[str]:
        """The text after every `KVMPY-<name> `, in order."""
        return [m.strip() for m in re.findall(rf"KVMPY-{re.escape(name)} ([^\n]*)", self.output)]


@pytest.fixture(scope="session")
def hvm_images(guest_images):
    """Both images and SeaBIOS; `guest_images` (conftest) skips first where Linux cannot run and
    gives the SHA-256 of /data/sample.bin, the pattern /init writes to the data disk."""
    make_images("build/images/disk.img", "build/images/boot.iso",
                "build/debian/bios-256k.bin", "build/debian/vgabios-stdvga.bin")
    return guest_images


@pytest.fixture
def hvm_guest():
    """Factory: hvm_guest(*kvmpy boot args) -> HvmGuest; every process is killed at teardown."""
    started: list[HvmGuest] = []

    def boot(*args: str) -> HvmGuest:
        g = HvmGuest([str(a) for a in args])
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()


@dataclass(frozen=True)
class Medium:
    """How one image boots, and what the guest then sees."""

    name: str
    args: tuple[str, ...]  # kvmpy boot options, data disk excluded
    data_dev: str  # the data disk as Linux names it (the labels of that image's loader use it)
    ata_disks: int
    atapi: int
    cpus: int
    memory_mib: int


DISK_BOOT = Medium("disk", ("--hvm", "{disk}"), "/dev/sdb", ata_disks=2, atapi=0, cpus=2, memory_mib=512)
CD_BOOT = Medium("cdrom", ("--cdrom", str(ISO), "--boot", "d"), "/dev/sda", ata_disks=1, atapi=1,
                 cpus=1, memory_mib=256)


def sparse_copy(src: Path, dst: Path) -> Path:
    """Boot a copy: kvmpy opens disks read-write (and locks them); the build stays as made."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def boot_args(medium: Medium, disk: Path, data: Path) -> list[str]:
    args = [a.format(disk=disk) for a in medium.args]
    return [*args, "--drive", f"file={data}", "--memory", f"{medium.memory_mib}M", "--cpus", str(medium.cpus)]


def sha256_of_sample_region(image: Path, size: int = MIB) -> str:
    with open(image, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


def assert_reports_platform(g: HvmGuest, medium: Medium) -> None:
    """CPUs, memory, ACPI tables, the IDE controller's driver and DMA, the block devices."""
    out = g.describe()
    assert "Kernel panic" not in g.output, out
    assert int(g.marker("CPUS")) == medium.cpus, out
    mem_kb = int(g.marker("MEM"))
    assert (medium.memory_mib - KERNEL_RESERVE_MIB) * MIB_KB <= mem_kb <= medium.memory_mib * MIB_KB, out

    tables = set(g.marker("ACPI").split())
    assert ACPI_REQUIRED <= tables, f"ACPI tables {sorted(tables)} lack {ACPI_REQUIRED - tables}\n{out}"

    assert not g.markers("MODULE-FAILED"), out
    ctrls = [tuple(line.split()) for line in g.markers("ATA-CTRL")]
    assert (*PIIX3_IDE, "ata_piix") in ctrls, f"PIIX3 IDE not driven by ata_piix: {ctrls}\n{out}"

    devices = {}
    for line in g.markers("ATA"):
        name, *fields = line.split()
        devices[name] = dict(f.split("=", 1) for f in fields)
    disks = {n: d for n, d in devices.items() if d.get("class") == "ata"}
    cds = {n: d for n, d in devices.items() if d.get("class") == "atapi"}
    assert len(disks) == medium.ata_disks and len(cds) == medium.atapi, f"ATA devices {devices}\n{out}"
    for name, d in disks.items():
        assert DMA_MODE.match(d["xfer"]), f"{name} runs in {d['xfer']}, not DMA\n{out}"
    configured = g.markers("ATA-LOG")
    assert len(configured) >= medium.ata_disks + medium.atapi, out
    # in the kernel's own words too, e.g. "ata1.00: configured for MWDMA2"
    assert sum("DMA" in line for line in configured) >= medium.ata_disks, out

    blocks = dict(b.split(":") for b in g.marker("BLOCK").split())
    sectors = {k: int(v) for k, v in blocks.items()}
    data_name = medium.data_dev.removeprefix("/dev/")
    assert sectors.get(data_name) == DATA_DISK_MIB * MIB // SECTOR, f"block devices {sectors}\n{out}"
    if medium.name == "disk":
        assert sectors.get("sda") == DISK.stat().st_size // SECTOR, f"block devices {sectors}\n{out}"
    else:
        assert sectors.get("sr0") == ISO.stat().st_size // SECTOR, f"block devices {sectors}\n{out}"


@pytest.mark.parametrize("medium", [DISK_BOOT, CD_BOOT], ids=lambda m: m.name)
def test_guest_reports_platform_and_data_survives_power_off(hvm_images, hvm_guest, tmp_path, medium):
    disk = sparse_copy(DISK, tmp_path / "disk.img")
    data = tmp_path / "data.img"
    with open(data, "wb") as f:
        f.truncate(DATA_DISK_MIB * MIB)
    args = boot_args(medium, disk, data)

    # first boot: report, write the pattern to the data disk, power off
    g = hvm_guest(*args)
    g.choose("write")
    g.wait_for(r"KVMPY-BOOT-OK")
    rc = g.wait()
    assert f"kvmpy.write={medium.data_dev}" in g.marker("CMDLINE").split(), g.describe()
    assert_reports_platform(g, medium)
    assert g.marker("DATA-WRITE") == f"{medium.data_dev} {hvm_images.sample_sha256}", g.describe()
    assert g.marker("ACTION") == "poweroff"
    assert rc == EXIT_POWEROFF, g.describe()

    # on the host: the image file holds the pattern, and nothing past it was touched
    assert sha256_of_sample_region(data) == hvm_images.sample_sha256
    with open(data, "rb") as f:
        f.seek(MIB)
        assert f.read() == bytes(DATA_DISK_MIB * MIB - MIB)

    # second boot of the same images: the guest reads the pattern back from the disk
    g = hvm_guest(*args)
    g.choose("read")
    g.wait_for(r"KVMPY-BOOT-OK")
    rc = g.wait()
    assert_reports_platform(g, medium)
    assert g.marker("DATA-READ") == f"{medium.data_dev} {hvm_images.sample_sha256}", g.describe()
    assert not g.markers("DATA-WRITE"), g.describe()
    assert rc == EXIT_POWEROFF, g.describe()


def test_default_label_boots_unattended(hvm_images, hvm_guest, tmp_path):
    """Nobody types: after the prompt's 5 s the loader boots its default label by itself."""
    g = hvm_guest("--hvm", sparse_copy(DISK, tmp_path / "disk.img"), "--memory", "256M", "--cpus", "1")
    g.wait_for(r"boot:")
    g.wait_for(r"KVMPY-BOOT-OK")
    rc = g.wait()
    assert "Kernel panic" not in g.output, g.describe()
    assert int(g.marker("CPUS")) == 1, g.describe()
    assert "kvmpy.action=poweroff" in g.marker("CMDLINE").split(), g.describe()
    assert not g.markers("DATA-WRITE") and not g.markers("DATA-READ"), g.describe()
    assert g.marker("ACTION") == "poweroff"
    assert rc == EXIT_POWEROFF, g.describe()
