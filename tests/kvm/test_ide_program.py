"""The IDE controller driven like a driver (firmware/tests/ide.c): PCI discovery, IDENTIFY, PIO,
LBA48, bus-master DMA with PRD tables across pages, error status, FLUSH, ATAPI on the CD-ROM."""

import struct

MAGIC_DISK, MAGIC_CD = b"KVMPYSEC", b"KVMPYBLK"


def patterned(path, count: int, size: int, magic: bytes, mul: int) -> None:
    """Every sector carries a pattern the guest program recognises and checks."""
    with open(path, "wb") as f:
        for lba in range(count):
            body = bytes(((lba * mul + j) & 0xFF) for j in range(16, size))
            f.write(magic + struct.pack("<Q", lba) + body)


def test_ide_driver_program(kvmpy_boot, tmp_path):
    disk, cd = tmp_path / "disk.img", tmp_path / "cd.iso"
    patterned(disk, 8192, 512, MAGIC_DISK, 13)
    patterned(cd, 64, 2048, MAGIC_CD, 7)
    before = disk.read_bytes()
    r = kvmpy_boot("ide", "--drive", f"file={disk}", "--cdrom", str(cd), "--memory", "64M")
    assert r.status == 1, r.out + r.err
    for marker in ("PCI OK", "RESET OK", "IDENTIFY OK", "PIO OK", "LBA48 OK", "DMA OK",
                   "ERRORS OK", "FLUSH OK", "ATAPI OK", "IDE OK"):
        assert marker in r.out, marker
    after = disk.read_bytes()
    # the program's scratch writes reached the image file; everything else is untouched
    changed = {i // 512 for i in range(0, len(after), 512) if after[i:i + 512] != before[i:i + 512]}
    assert changed and changed <= set(range(1024, 1032)) | set(range(1100, 1232)) | {8192 - 3}


def test_ide_read_only_disk_refuses_writes(kvmpy_boot, tmp_path):
    disk = tmp_path / "disk.img"
    patterned(disk, 8192, 512, MAGIC_DISK, 13)
    before = disk.read_bytes()
    r = kvmpy_boot("ide", "--drive", f"file={disk},readonly=on", "--append", "nocd", "--memory", "64M")
    assert "IDENTIFY OK" in r.out
    assert r.status != 1  # the program's writes fail: it reports the error status
    assert disk.read_bytes() == before
