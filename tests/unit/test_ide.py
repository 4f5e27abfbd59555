"""The PIIX3 IDE controller driven through the PIO bus and a bytearray DMA space, the way
libata-sff / ata_piix, SeaBIOS and our guest program (firmware/tests/ide.c) drive it."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from kvmpy.devices import blockdev
from kvmpy.devices import ide as I
from kvmpy.devices.blockdev import open_cdrom, open_disk
from kvmpy.devices.ide import AtaDisk, AtapiCdrom, PiixIde
from kvmpy.hw.bus import PioBus
from kvmpy.hw.dma import BytearrayDmaSpace
from kvmpy.hw.irq import RecordingIrqLine

# Legacy wiring, as the machine builder places the controller
PRI, PRI_CTL, SEC, SEC_CTL, BM = 0x1F0, 0x3F6, 0x170, 0x376, 0xC000
MEM_SIZE = 4 << 20
DISK_SECTORS = 2048  # 1 MiB
CD_BLOCKS = 64


def disk_pattern(lba: int) -> bytes:
    return struct.pack("<Q", 0xD15C_0000_0000 | lba) * 64


def cd_pattern(lba: int) -> bytes:
    return struct.pack("<Q", 0xC0DE_0000_0000 | lba) * 256


def make_image(path: Path, sectors: int, pattern, sector: int, sparse: bool = False) -> Path:
    with open(path, "wb") as f:
        if sparse:
            f.truncate(sectors * sector)
        else:
            f.write(b"".join(pattern(i) for i in range(sectors)))
    return path


class Rig:
    """A controller on a PIO bus with a disk (primary master) and a CD-ROM (secondary master)."""

    def __init__(self, tmp: Path, *, disk_sectors: int = DISK_SECTORS, readonly: bool = False,
                 slave: bool = False, cd: bool = True, sparse: bool = False) -> None:
        self.disk_path = make_image(tmp / "disk.img", disk_sectors, disk_pattern, 512, sparse)
        self.cd_path = make_image(tmp / "cd.iso", CD_BLOCKS, cd_pattern, 2048)
        self.disk = AtaDisk(open_disk(self.disk_path, readonly=readonly))
        slave_drive = None
        if slave:
            slave_drive = AtaDisk(open_disk(make_image(tmp / "slave.img", 64, disk_pattern, 512)))
        self.cd = AtapiCdrom(open_cdrom(self.cd_path) if cd else None)
        self.mem = BytearrayDmaSpace(MEM_SIZE)
        self.irqs = (RecordingIrqLine(), RecordingIrqLine())
        self.ide = PiixIde(self.mem, self.irqs, drives=((self.disk, slave_drive), (self.cd, None)))
        self.bus = PioBus()
        for i, (cmd, ctl) in enumerate(((PRI, PRI_CTL), (SEC, SEC_CTL))):
            ch = self.ide.channels[i]
            self.bus.register(cmd, I.CMD_BLOCK_LEN, ch, f"ide{i}", sizes=I.CMD_BLOCK_SIZES)
            self.bus.register(ctl, I.CTL_BLOCK_LEN, ch.control, f"ide{i}-ctl", sizes=I.CTL_BLOCK_SIZES)
        self.bus.register(BM, I.BM_BLOCK_LEN, self.ide.bus_master, "ide-bm", sizes=I.BM_BLOCK_SIZES)

    # -- port I/O, one access at a time (as the vCPU loop delivers a rep ins/outs) -----------
    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def outb(self, port: int, v: int) -> None:
        self.bus.write(port, 1, v)

    def inl(self, port: int) -> int:
        return self.bus.read(port, 4)

    def outl(self, port: int, v: int) -> None:
        self.bus.write(port, 4, v)

    def insw(self, port: int, count: int) -> bytes:
        return b"".join(self.bus.read(port, 2).to_bytes(2, "little") for _ in range(count))

    def insl(self, port: int, count: int) -> bytes:
        return b"".join(self.bus.read(port, 4).to_bytes(4, "little") for _ in range(count))

    def outsw(self, port: int, data: bytes) -> None:
        for i in range(0, len(data), 2):
            self.bus.write(port, 2, int.from_bytes(data[i : i + 2], "little"))

    # -- a driver's view --------------------------------------------------------------------
    def irq(self, base: int) -> RecordingIrqLine:
        return self.irqs[0 if base == PRI else 1]

    def ctl(self, base: int) -> int:
        return PRI_CTL if base == PRI else SEC_CTL

    def select(self, base: int, dev: int = 0) -> None:
        self.outb(base + 6, 0xA0 | (dev << 4))

    def taskfile(self, base: int, lba: int, count: int, *, ext: bool = False, dev: int = 0,
                 feature: int = 0) -> None:
        if ext:
            self.outb(base + 6, 0xE0 | (dev << 4))
            self.outb(base + 1, 0)
            self.outb(base + 2, (count >> 8) & 0xFF)
            self.outb(base + 3, (lba >> 24) & 0xFF)
            self.outb(base + 4, (lba >> 32) & 0xFF)
            self.outb(base + 5, (lba >> 40) & 0xFF)
        else:
            self.outb(base + 6, 0xE0 | (dev << 4) | ((lba >> 24) & 0x0F))
        self.outb(base + 1, feature)
        self.outb(base + 2, count & 0xFF)
        self.outb(base + 3, lba & 0xFF)
        self.outb(base + 4, (lba >> 8) & 0xFF)
        self.outb(base + 5, (lba >> 16) & 0xFF)

    def status(self, base: int = PRI) -> int:
        return self.inb(base + 7)

    def altstatus(self, base: int = PRI) -> int:
        return self.inb(self.ctl(base))

    def error(self, base: int = PRI) -> int:
        return self.inb(base + 1)

    def nondata(self, opcode: int, base: int = PRI, **tf: int) -> int:
        if tf:
            self.taskfile(base, tf.pop("lba", 0), tf.pop("count", 0), **tf)
        self.outb(base + 7, opcode)
        return self.status(base)

    def identify(self, base: int = PRI, opcode: int = I.CMD_IDENTIFY) -> list[int]:
        self.outb(base + 7, opcode)
        st = self.status(base)
        assert st & I.ST_DRQ and not st & (I.ST_BSY | I.ST_ERR), hex(st)
        return list(struct.unpack("<256H", self.insw(base, 256)))

    def pio_read(self, lba: int, count: int, *, ext: bool = False, opcode: int | None = None,
                 block: int = 1) -> bytes:
        self.taskfile(PRI, lba, count, ext=ext)
        line = self.irq(PRI)
        before = len(line.history)
        if opcode is None:
            opcode = I.CMD_READ_SECTORS_EXT if ext else I.CMD_READ_SECTORS
        self.outb(PRI + 7, opcode)
        out = b""
        blocks = 0
        while len(out) < count * 512:
            assert line.level, "an interrupt announces every DRQ block of a PIO read"
            st = self.status()
            assert st & I.ST_DRQ and not st & I.ST_ERR, hex(st)
            assert not line.level
            n = min(block, count - len(out) // 512)
            out += self.insw(PRI, n * 256)
            blocks += 1
        assert not line.level, "no interrupt after the last block of a PIO read"
        assert line.history[before:].count(True) == blocks
        assert self.status() == I.ST_READY
        return out

    def pio_write(self, lba: int, data: bytes, *, ext: bool = False, opcode: int | None = None,
                  block: int = 1) -> None:
        count = len(data) // 512
        self.taskfile(PRI, lba, count, ext=ext)
        line = self.irq(PRI)
        if opcode is None:
            opcode = I.CMD_WRITE_SECTORS_EXT if ext else I.CMD_WRITE_SECTORS
        self.outb(PRI + 7, opcode)
        assert not line.level, "the first block of a PIO write is requested without an interrupt"
        off = 0
        while off < len(data):
            st = self.altstatus()
            assert st & I.ST_DRQ and not st & I.ST_ERR, hex(st)
            n = min(block, count - off // 512) * 512
            self.outsw(PRI, data[off : off + n])
            off += n
            assert line.level, "an interrupt after every block written"
            st = self.status()
            assert not line.level
        assert st == I.ST_READY

    def prd_table(self, table: int, entries: list[tuple[int, int]]) -> None:
        for i, (addr, length) in enumerate(entries):
            eot = I.PRD_EOT if i == len(entries) - 1 else 0
            self.mem.write(table + 8 * i, struct.pack("<II", addr, (length & 0xFFFF) | eot))

    def bm_setup(self, table: int, to_memory: bool, ch: int = 0) -> None:
        bm = BM + 8 * ch
        self.outl(bm + I.BM_PRD, table)
        cmd = self.inb(bm + I.BM_CMD) & ~(I.BM_CMD_START | I.BM_CMD_TO_MEMORY)
        self.outb(bm + I.BM_CMD, cmd | (I.BM_CMD_TO_MEMORY if to_memory else 0))
        self.outb(bm + I.BM_STATUS, I.BM_ST_ERROR | I.BM_ST_INTR)

    def bm_start(self, ch: int = 0) -> None:
        bm = BM + 8 * ch
        self.outb(bm + I.BM_CMD, self.inb(bm + I.BM_CMD) | I.BM_CMD_START)

    def bm_stop(self, ch: int = 0) -> int:
        """What libata's interrupt handler does: read the status, clear START, ack."""
        bm = BM + 8 * ch
        status = self.inb(bm + I.BM_STATUS)
        self.outb(bm + I.BM_CMD, self.inb(bm + I.BM_CMD) & ~I.BM_CMD_START)
        self.outb(bm + I.BM_STATUS, I.BM_ST_ERROR | I.BM_ST_INTR)
        return status

    def dma(self, lba: int, count: int, prd: list[tuple[int, int]], *, write: bool = False,
            ext: bool = True, table: int = 0x1000) -> tuple[int, int]:
        """libata order: PRD, direction, command, START; returns (bm status, ata status)."""
        self.prd_table(table, prd)
        self.bm_setup(table, to_memory=not write)
        self.taskfile(PRI, lba, count, ext=ext)
        if write:
            self.outb(PRI + 7, I.CMD_WRITE_DMA_EXT if ext else I.CMD_WRITE_DMA)
        else:
            self.outb(PRI + 7, I.CMD_READ_DMA_EXT if ext else I.CMD_READ_DMA)
        self.bm_start()
        return self.bm_stop(), self.status()

    # -- ATAPI ------------------------------------------------------------------------------
    def packet(self, cdb: bytes, *, limit: int = 0xFFFE, dma: bool = False) -> tuple[int, bytes]:
        """Send a PACKET command and read its data by PIO; returns (final status, data)."""
        base = SEC
        line = self.irq(base)
        self.select(base)
        self.outb(base + 1, I.PACKET_FEATURE_DMA if dma else 0)
        self.outb(base + 4, limit & 0xFF)
        self.outb(base + 5, limit >> 8)
        self.outb(base + 7, I.CMD_PACKET)
        assert not line.level, "accelerated DRQ: no interrupt before the packet"
        st = self.altstatus(base)
        assert st & I.ST_DRQ and self.inb(base + 2) & 7 == I.IREASON_COD, hex(st)
        self.outsw(base, cdb.ljust(12, b"\0"))
        data = b""
        if dma:
            return self.status(base), data
        while True:
            assert line.level, "every ATAPI data chunk and the completion interrupt"
            st = self.status(base)
            if not st & I.ST_DRQ:
                break
            assert self.inb(base + 2) & 7 == I.IREASON_IO
            n = self.inb(base + 4) | (self.inb(base + 5) << 8)
            assert n and n <= (limit or 0xFFFE)
            data += self.insw(base, (n + 1) // 2)[:n]
        assert self.inb(base + 2) & 7 == I.IREASON_IO | I.IREASON_COD
        return st, data

    def sense(self) -> tuple[int, int, int]:
        st, data = self.packet(bytes((I.SCSI_REQUEST_SENSE, 0, 0, 0, 18, 0)))
        assert st == I.ST_READY and data[0] == 0x70 and data[7] == 10
        return data[2] & 0x0F, data[12], data[13]

    def check_condition(self, cdb: bytes) -> tuple[int, int, int]:
        st, _ = self.packet(cdb)
        assert st & I.ST_ERR, hex(st)
        err = self.error(SEC)
        key, asc, ascq = self.sense()
        assert err >> 4 == key
        return key, asc, ascq


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def read10(lba: int, count: int) -> bytes:
    return struct.pack(">BBIBHB", I.SCSI_READ_10, 0, lba, 0, count, 0)


def read12(lba: int, count: int) -> bytes:
    return struct.pack(">BBIIBB", I.SCSI_READ_12, 0, lba, count, 0, 0)


def identify_string(words: list[int], first: int, n: int) -> str:
    return b"".join(struct.pack(">H", w) for w in words[first : first + n]).decode().strip()


# --- registers, reset, selection ---------------------------------------------------------------
def test_registration_constants() -> None:
    assert (I.CMD_BLOCK_LEN, I.CTL_BLOCK_LEN, I.BM_BLOCK_LEN) == (8, 1, 16)
    assert I.IdeChannel.SIZES == (1, 2, 4) and I.ControlBlock.SIZES == (1,)


def test_power_on_signatures(rig: Rig) -> None:
    assert rig.status(PRI) == I.ST_READY and rig.error(PRI) == I.DIAG_PASSED
    assert [rig.inb(PRI + r) for r in (2, 3, 4, 5)] == [1, 1, 0, 0]
    assert rig.status(SEC) == 0  # ATAPI: DRDY clear after reset
    assert [rig.inb(SEC + r) for r in (2, 3, 4, 5)] == [1, 1, 0x14, 0xEB]
    assert not rig.irqs[0].level and not rig.irqs[1].level


def test_absent_slave_reads_zero_like_devchk_expects(rig: Rig) -> None:
    for dev, present in ((0, True), (1, False)):
        rig.select(PRI, dev)
        rig.outb(PRI + 2, 0x55)
        rig.outb(PRI + 3, 0xAA)
        assert (rig.inb(PRI + 2), rig.inb(PRI + 3)) == ((0x55, 0xAA) if present else (0, 0))
        assert rig.inb(PRI + 6) == 0xA0 | (dev << 4)  # the device register still reads back
    assert rig.status() == 0 and rig.altstatus() == 0
    rig.outb(PRI + 7, I.CMD_IDENTIFY)  # nobody answers
    assert rig.status() == 0 and not rig.irqs[0].level


def test_srst_resets_both_drives_without_interrupt(rig: Rig) -> None:
    rig.taskfile(PRI, 0x123456, 7)
    rig.outb(PRI_CTL, I.DC_SRST)
    assert rig.altstatus() & I.ST_BSY
    rig.outb(PRI + 2, 0x99)  # ignored while busy
    rig.outb(PRI_CTL, 0)
    assert rig.status() == I.ST_READY and rig.error() == 1
    assert [rig.inb(PRI + r) for r in (2, 3, 4, 5, 6)] == [1, 1, 0, 0, 0]
    assert rig.irqs[0].history == []


def test_status_read_clears_interrupt_alt_status_does_not(rig: Rig) -> None:
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)
    line = rig.irqs[0]
    assert line.level
    assert rig.altstatus() == I.ST_READY and line.level
    assert rig.inb(BM + I.BM_STATUS) & I.BM_ST_INTR  # the bus-master block saw the interrupt
    assert rig.status() == I.ST_READY and not line.level


def test_nien_masks_the_line(rig: Rig) -> None:
    line = rig.irqs[0]
    rig.outb(PRI_CTL, I.DC_NIEN)
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)
    assert not line.level
    rig.outb(PRI_CTL, 0)  # the pending interrupt appears when unmasked
    assert line.level
    rig.status()
    assert not line.level


def test_a_second_interrupt_while_high_is_a_new_edge(rig: Rig) -> None:
    line = rig.irqs[0]
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)  # status never read in between
    assert line.history == [True, False, True]


def test_hob_reads_back_the_previous_bytes(rig: Rig) -> None:
    rig.taskfile(PRI, 0x0102_0304_0506, 0x0708, ext=True)
    rig.outb(PRI_CTL, I.DC_HOB)
    assert [rig.inb(PRI + r) for r in (2, 3, 4, 5)] == [0x07, 0x03, 0x02, 0x01]
    rig.outb(PRI_CTL, 0)
    assert [rig.inb(PRI + r) for r in (2, 3, 4, 5)] == [0x08, 0x06, 0x05, 0x04]
    rig.outb(PRI_CTL, I.DC_HOB)
    rig.outb(PRI + 2, 0x42)  # a command-block write clears HOB
    assert rig.inb(PRI + 2) == 0x42


# --- IDENTIFY ----------------------------------------------------------------------------------
def test_identify_device(rig: Rig) -> None:
    line = rig.irqs[0]
    w = rig.identify()
    assert line.history == [True, False]  # one interrupt for the block, none at the end
    assert rig.status() == I.ST_READY
    assert identify_string(w, 27, 20) == "KVMPY HARDDISK"
    assert identify_string(w, 10, 10) == "KVMPY00001"
    assert identify_string(w, 23, 4) == "0.1.0"
    assert w[0] & 0x8000 == 0 and w[49] & 0x0300 == 0x0300  # ATA; LBA and DMA
    assert w[60] | (w[61] << 16) == DISK_SECTORS
    assert sum(w[100 + i] << (16 * i) for i in range(4)) == DISK_SECTORS
    assert w[83] & 0x7400 == 0x7400 and w[86] & 0x3400 == 0x3400  # LBA48, FLUSH (EXT)
    assert w[63] & 0x07 == 0x07 and w[88] & 0x3F == 0x3F  # MWDMA 0-2, UDMA 0-5 supported
    assert w[63] & 0x0400  # MWDMA2 selected at power-on
    assert w[47] & 0xFF == I.MAX_MULT_SECTORS and w[59] == 0x100 | I.MAX_MULT_SECTORS
    assert w[80] & 0x00F0 and w[93] & 0x6000 == 0x6000 and w[93] & 0x0001
    raw = struct.pack("<256H", *w)
    assert raw[510] == 0xA5 and sum(raw) % 256 == 0


def test_identify_word93_reports_device1(tmp_path: Path) -> None:
    r = Rig(tmp_path, slave=True)
    assert r.identify()[93] & 0xDF61 != 0x4041  # SeaBIOS's "no device 1" test must fail
    r.select(PRI, 1)
    w = r.identify()
    assert w[93] & 0x0100 and identify_string(w, 10, 10) == "KVMPY00002"


def test_identify_packet_and_cross_aborts(rig: Rig) -> None:
    rig.outb(PRI + 7, I.CMD_IDENTIFY_PACKET)  # to an ATA disk
    assert rig.status() == I.ST_DRDY | I.ST_ERR and rig.error() == I.ER_ABRT
    rig.select(SEC)
    rig.outb(SEC + 7, I.CMD_IDENTIFY)  # to a packet device: abort with the signature
    assert rig.status(SEC) & I.ST_ERR and rig.error(SEC) == I.ER_ABRT
    assert (rig.inb(SEC + 4), rig.inb(SEC + 5)) == (0x14, 0xEB)
    w = rig.identify(SEC, I.CMD_IDENTIFY_PACKET)
    assert w[0] == 0x85C0 and identify_string(w, 27, 20) == "KVMPY DVD-ROM"
    assert w[49] & 0x0100 and w[82] & 0x0010


def test_unknown_command_aborts(rig: Rig) -> None:
    assert rig.nondata(0xFF) == I.ST_DRDY | I.ST_ERR and rig.error() == I.ER_ABRT
    assert rig.nondata(I.CMD_NOP) & I.ST_ERR


# --- PIO -----------------------------------------------------------------------------------------
def test_pio_read_sectors(rig: Rig) -> None:
    assert rig.pio_read(5, 3) == b"".join(disk_pattern(i) for i in (5, 6, 7))


def test_pio_read_256_sectors_when_count_is_zero(rig: Rig) -> None:
    rig.taskfile(PRI, 100, 0)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    got = b""
    while rig.status() & I.ST_DRQ:
        got += rig.insw(PRI, 256)
    assert got == b"".join(disk_pattern(i) for i in range(100, 356))


def test_pio_write_sectors_round_trip(rig: Rig) -> None:
    data = bytes((i * 7) & 0xFF for i in range(3 * 512))
    rig.pio_write(10, data)
    assert rig.pio_read(10, 3) == data
    assert rig.disk_path.read_bytes()[10 * 512 : 13 * 512] == data
    assert rig.pio_read(13, 1) == disk_pattern(13)


def test_pio_with_32bit_accesses(rig: Rig) -> None:
    rig.taskfile(PRI, 2, 1)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    rig.status()
    assert rig.insl(PRI, 128) == disk_pattern(2)
    assert rig.status() == I.ST_READY


def test_read_write_multiple(rig: Rig) -> None:
    assert rig.nondata(I.CMD_SET_MULTIPLE, count=3) & I.ST_ERR  # not a power of two
    assert rig.nondata(I.CMD_SET_MULTIPLE, count=4) == I.ST_READY
    assert rig.identify()[59] == 0x104
    rig.status()
    data = bytes(range(256)) * 2 * 10
    rig.pio_write(20, data, opcode=I.CMD_WRITE_MULTIPLE, block=4)
    assert rig.pio_read(20, 10, opcode=I.CMD_READ_MULTIPLE, block=4) == data
    assert rig.pio_read(20, 10, ext=True, opcode=I.CMD_READ_MULTIPLE_EXT, block=4) == data
    assert rig.nondata(I.CMD_SET_MULTIPLE, count=0) == I.ST_READY  # disables multiple mode
    rig.taskfile(PRI, 0, 1)
    assert rig.nondata(I.CMD_READ_MULTIPLE) & I.ST_ERR and rig.error() == I.ER_ABRT


def test_lba_beyond_the_disk_is_idnf(rig: Rig) -> None:
    line = rig.irqs[0]
    rig.taskfile(PRI, DISK_SECTORS - 1, 2)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    assert line.level
    assert rig.status() == I.ST_DRDY | I.ST_ERR and rig.error() == I.ER_IDNF
    assert rig.pio_read(DISK_SECTORS - 1, 1) == disk_pattern(DISK_SECTORS - 1)  # the last one is fine
    rig.taskfile(PRI, DISK_SECTORS, 1, ext=True)
    assert rig.nondata(I.CMD_WRITE_SECTORS_EXT) & I.ST_ERR and rig.error() == I.ER_IDNF


def test_lba48_beyond_2_to_the_28(tmp_path: Path) -> None:
    sectors = (1 << 28) + 64  # 128 GiB + 32 KiB, sparse
    r = Rig(tmp_path, disk_sectors=sectors, sparse=True)
    w = r.identify()
    assert w[60] | (w[61] << 16) == 0x0FFF_FFFF
    assert sum(w[100 + i] << (16 * i) for i in range(4)) == sectors
    r.status()
    high = (1 << 28) + 10
    data = bytes(range(256)) * 4
    r.pio_write(high, data, ext=True)
    assert r.pio_read(high, 2, ext=True) == data
    with open(r.disk_path, "rb") as f:
        f.seek(high * 512)
        assert f.read(1024) == data
    r.taskfile(PRI, sectors - 1, 2, ext=True)
    assert r.nondata(I.CMD_READ_SECTORS_EXT) & I.ST_ERR and r.error() == I.ER_IDNF


def test_chs_addressing_after_initialize_device_parameters(rig: Rig) -> None:
    rig.outb(PRI + 6, 0xA0 | 3)  # heads = 4
    rig.outb(PRI + 2, 17)  # 17 sectors per track
    assert rig.nondata(I.CMD_INITIALIZE_PARAMS) == I.ST_READY
    w = rig.identify()
    assert (w[55], w[56]) == (4, 17)
    rig.status()
    # cylinder 2, head 1, sector 5 -> (2*4 + 1)*17 + 4 = 157
    rig.outb(PRI + 6, 0xA0 | 1)
    for reg, v in ((2, 1), (3, 5), (4, 2), (5, 0)):
        rig.outb(PRI + reg, v)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    rig.status()
    assert rig.insw(PRI, 256) == disk_pattern(157)


def test_read_verify_seek_recalibrate(rig: Rig) -> None:
    assert rig.nondata(I.CMD_READ_VERIFY, lba=10, count=5) == I.ST_READY
    assert rig.nondata(I.CMD_READ_VERIFY_EXT, lba=DISK_SECTORS, count=1, ext=True) & I.ST_ERR
    assert rig.error() == I.ER_IDNF
    assert rig.nondata(I.CMD_SEEK, lba=3, count=0) == I.ST_READY
    assert rig.nondata(I.CMD_RECALIBRATE) == I.ST_READY


def test_power_commands(rig: Rig) -> None:
    rig.nondata(I.CMD_STANDBY_IMMEDIATE)
    rig.nondata(I.CMD_CHECK_POWER_MODE)
    assert rig.inb(PRI + 2) == I.POWER_STANDBY
    rig.nondata(I.CMD_IDLE_IMMEDIATE)
    rig.nondata(I.CMD_CHECK_POWER_MODE)
    assert rig.inb(PRI + 2) == I.POWER_ACTIVE


def test_execute_device_diagnostic(rig: Rig) -> None:
    rig.taskfile(PRI, 0x55, 0x66)
    line = rig.irqs[0]
    rig.outb(PRI + 7, I.CMD_EXECUTE_DIAGNOSTIC)
    assert line.level
    assert rig.status() == I.ST_READY and rig.error() == 0x01  # error register: "passed"
    assert [rig.inb(PRI + r) for r in (2, 3, 4, 5)] == [1, 1, 0, 0]


def test_set_features(rig: Rig) -> None:
    assert rig.nondata(I.CMD_SET_FEATURES, feature=I.SF_SET_XFER_MODE, count=I.XFER_UDMA | 5) == I.ST_READY
    w = rig.identify()
    assert w[88] & 0xFF00 == 0x2000 and w[63] & 0xFF00 == 0
    rig.status()
    assert rig.nondata(I.CMD_SET_FEATURES, feature=3, count=I.XFER_PIO_FLOW | 4) == I.ST_READY
    assert rig.nondata(I.CMD_SET_FEATURES, feature=3, count=I.XFER_UDMA | 6) & I.ST_ERR
    assert rig.nondata(I.CMD_SET_FEATURES, feature=I.SF_DISABLE_WCACHE) == I.ST_READY
    assert not rig.identify()[85] & 0x20
    rig.status()
    assert rig.nondata(I.CMD_SET_FEATURES, feature=0x99) & I.ST_ERR


def test_flush_cache_completes_after_fsync(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(rig.irqs[0].level)  # the completion interrupt must not be up yet
        real(fd)

    monkeypatch.setattr(blockdev.os, "fsync", spy)
    for opcode in (I.CMD_FLUSH_CACHE, I.CMD_FLUSH_CACHE_EXT):
        rig.outb(PRI + 7, opcode)
        assert rig.irqs[0].level and rig.status() == I.ST_READY
    assert seen == [False, False]


def test_flush_failure_aborts(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blockdev.os, "fsync", broken)
    assert rig.nondata(I.CMD_FLUSH_CACHE) & I.ST_ERR and rig.error() == I.ER_ABRT


def test_readonly_disk_rejects_writes(tmp_path: Path) -> None:
    r = Rig(tmp_path, readonly=True)
    before = r.disk_path.read_bytes()
    r.taskfile(PRI, 0, 1)
    assert r.nondata(I.CMD_WRITE_SECTORS) == I.ST_DRDY | I.ST_ERR and r.error() == I.ER_ABRT
    assert r.insw(PRI, 4) == bytes(8)  # no DRQ: the data port takes nothing
    r.mem.write(0x8000, b"\xff" * 512)
    bm, st = r.dma(0, 1, [(0x8000, 512)], write=True)
    assert st & I.ST_ERR and r.error() == I.ER_ABRT
    assert r.disk_path.read_bytes() == before
    assert r.pio_read(0, 1) == disk_pattern(0)


# --- bus-master DMA -------------------------------------------------------------------------------
SPANNING_PRD = [(0x10E00, 0x400), (0x20000, 0x10000), (0x3FE00, 0x400)]  # page-crossing + 64 KiB


def test_dma_read_scatter_across_pages_and_64k_entry(rig: Rig) -> None:
    count = sum(n for _, n in SPANNING_PRD) // 512  # 132 sectors
    line = rig.irqs[0]
    bm, st = rig.dma(40, count, SPANNING_PRD)
    assert bm & (I.BM_ST_INTR | I.BM_ST_ACTIVE | I.BM_ST_ERROR) == I.BM_ST_INTR
    assert st == I.ST_READY and line.history == [True, False]
    want = b"".join(disk_pattern(i) for i in range(40, 40 + count))
    got = b"".join(rig.mem.read(a, n) for a, n in SPANNING_PRD)
    assert got == want
    assert rig.mem.read(0x10E00 - 16, 16) == bytes(16) and rig.mem.read(0x10E00 + 0x400, 16) == bytes(16)
    assert rig.inb(BM + I.BM_STATUS) & I.BM_ST_INTR == 0  # acknowledged


def test_dma_write_gather(rig: Rig) -> None:
    count = sum(n for _, n in SPANNING_PRD) // 512
    payload = bytes((i * 13 + 5) & 0xFF for i in range(count * 512))
    off = 0
    for addr, n in SPANNING_PRD:
        rig.mem.write(addr, payload[off : off + n])
        off += n
    bm, st = rig.dma(300, count, SPANNING_PRD, write=True)
    assert bm & (I.BM_ST_INTR | I.BM_ST_ERROR | I.BM_ST_ACTIVE) == I.BM_ST_INTR and st == I.ST_READY
    assert rig.disk_path.read_bytes()[300 * 512 : (300 + count) * 512] == payload
    assert rig.pio_read(300, 2) == payload[:1024]


def test_dma_28bit_commands_and_start_before_command(rig: Rig) -> None:
    rig.prd_table(0x1000, [(0x9000, 1024)])
    rig.bm_setup(0x1000, to_memory=True)
    rig.bm_start()  # the engine first, then the command (it waits for the drive)
    assert rig.inb(BM + I.BM_STATUS) & I.BM_ST_ACTIVE
    rig.taskfile(PRI, 7, 2)
    rig.outb(PRI + 7, I.CMD_READ_DMA)
    assert rig.bm_stop() & (I.BM_ST_INTR | I.BM_ST_ACTIVE) == I.BM_ST_INTR
    assert rig.status() == I.ST_READY
    assert rig.mem.read(0x9000, 1024) == disk_pattern(7) + disk_pattern(8)


def test_dma_waits_for_start_with_drq(rig: Rig) -> None:
    rig.prd_table(0x1000, [(0x9000, 512)])
    rig.bm_setup(0x1000, to_memory=True)
    rig.taskfile(PRI, 1, 1)
    rig.outb(PRI + 7, I.CMD_READ_DMA)
    assert rig.altstatus() == I.ST_READY | I.ST_DRQ and not rig.irqs[0].level
    rig.bm_start()
    assert rig.irqs[0].level and rig.mem.read(0x9000, 512) == disk_pattern(1)


def test_dma_waits_for_bus_mastering(rig: Rig) -> None:
    rig.ide.bus_master_enabled = False
    rig.prd_table(0x1000, [(0x9000, 512)])
    rig.bm_setup(0x1000, to_memory=True)
    rig.taskfile(PRI, 3, 1)
    rig.outb(PRI + 7, I.CMD_READ_DMA)
    rig.bm_start()
    assert not rig.irqs[0].level and rig.mem.read(0x9000, 8) == bytes(8)
    rig.ide.bus_master_enabled = True  # the PCI command register's bus-master bit
    assert rig.irqs[0].level and rig.mem.read(0x9000, 512) == disk_pattern(3)


def test_prd_larger_than_transfer_leaves_active(rig: Rig) -> None:
    bm, st = rig.dma(0, 1, [(0x9000, 512), (0xA000, 4096)])
    assert bm & (I.BM_ST_INTR | I.BM_ST_ACTIVE) == I.BM_ST_INTR | I.BM_ST_ACTIVE and st == I.ST_READY
    assert rig.inb(BM + I.BM_STATUS) & I.BM_ST_ACTIVE == 0  # clearing START ends it


def test_prd_shorter_than_transfer_clears_active_without_interrupt(rig: Rig) -> None:
    rig.prd_table(0x1000, [(0x9000, 512)])
    rig.bm_setup(0x1000, to_memory=True)
    rig.taskfile(PRI, 0, 4, ext=True)
    rig.outb(PRI + 7, I.CMD_READ_DMA_EXT)
    rig.bm_start()
    assert rig.inb(BM + I.BM_STATUS) & (I.BM_ST_INTR | I.BM_ST_ACTIVE) == 0
    assert not rig.irqs[0].level
    assert rig.mem.read(0x9000, 512) == disk_pattern(0)


@pytest.mark.parametrize("where", ["buffer", "table"])
def test_dma_fault_sets_bus_master_error(rig: Rig, where: str) -> None:
    table = 0x1000 if where == "table" else 0x1000
    prd = [(0x9000, 512), (MEM_SIZE - 256, 1024)] if where == "buffer" else [(0x9000, 512)]
    if where == "table":
        table = MEM_SIZE + 0x1000  # the table itself is outside memory
        rig.outl(BM + I.BM_PRD, table)
        rig.outb(BM + I.BM_CMD, I.BM_CMD_TO_MEMORY)
        rig.taskfile(PRI, 0, 1, ext=True)
        rig.outb(PRI + 7, I.CMD_READ_DMA_EXT)
        rig.bm_start()
        bm, st = rig.bm_stop(), rig.status()
    else:
        bm, st = rig.dma(0, 3, prd)
    assert bm & (I.BM_ST_ERROR | I.BM_ST_INTR | I.BM_ST_ACTIVE) == I.BM_ST_ERROR | I.BM_ST_INTR
    assert st == I.ST_DRDY | I.ST_ERR and rig.error() == I.ER_ABRT
    assert rig.pio_read(0, 1) == disk_pattern(0)  # the channel still works


def test_dma_write_fault_writes_nothing_past_the_fault(rig: Rig) -> None:
    before = rig.disk_path.read_bytes()
    bm, st = rig.dma(0, 2, [(MEM_SIZE - 512, 1024)], write=True)
    assert bm & I.BM_ST_ERROR and st & I.ST_ERR
    assert rig.disk_path.read_bytes() == before


def test_dma_error_status_for_idnf_sets_interrupt_bit(rig: Rig) -> None:
    bm, st = rig.dma(DISK_SECTORS, 1, [(0x9000, 512)])
    assert bm & I.BM_ST_INTR and st & I.ST_ERR and rig.error() == I.ER_IDNF


def test_bus_master_registers(rig: Rig) -> None:
    rig.outl(BM + I.BM_PRD, 0x1234_5677)
    assert rig.inl(BM + I.BM_PRD) == 0x1234_5674  # dword aligned
    rig.outb(BM + I.BM_CMD, 0xFF & ~I.BM_CMD_START)
    assert rig.inb(BM + I.BM_CMD) == I.BM_CMD_TO_MEMORY
    rig.outb(BM + I.BM_STATUS, I.BM_ST_DRV0_DMA | I.BM_ST_DRV1_DMA | 0x80)
    assert rig.inb(BM + I.BM_STATUS) == I.BM_ST_DRV0_DMA | I.BM_ST_DRV1_DMA  # simplex is read-only 0
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)  # sets INTERRUPT
    assert rig.inb(BM + I.BM_STATUS) & I.BM_ST_INTR
    rig.outb(BM + I.BM_STATUS, I.BM_ST_DRV0_DMA)  # writing 0 leaves INTERRUPT, RW bits follow
    assert rig.inb(BM + I.BM_STATUS) == I.BM_ST_DRV0_DMA | I.BM_ST_INTR
    rig.outb(BM + I.BM_STATUS, I.BM_ST_INTR)
    assert rig.inb(BM + I.BM_STATUS) == 0
    assert rig.inb(BM + 1) == 0 and rig.inb(BM + 3) == 0
    rig.outl(BM + 8 + I.BM_PRD, 0xABCD_EF00)  # channel 1 is separate
    assert rig.inl(BM + 8 + I.BM_PRD) == 0xABCD_EF00 and rig.inl(BM + I.BM_PRD) == 0x1234_5674


# --- ATAPI ----------------------------------------------------------------------------------------
def test_atapi_packet_protocol_and_inquiry(rig: Rig) -> None:
    st, data = rig.packet(bytes((I.SCSI_INQUIRY, 0, 0, 0, 36, 0)))
    assert st == I.ST_READY and len(data) == 36
    assert data[0] == 0x05 and data[1] & 0x80
    assert data[8:16] == b"KVMPY   " and data[16:32] == b"KVMPY DVD-ROM   "
    assert rig.check_condition(bytes((I.SCSI_INQUIRY, 1, 0x80, 0, 36, 0)))[:2] == (5, 0x24)


def test_atapi_test_unit_ready_and_capacity(rig: Rig) -> None:
    assert rig.packet(bytes(12)) == (I.ST_READY, b"")
    st, data = rig.packet(bytes((I.SCSI_READ_CAPACITY,)))
    assert struct.unpack(">II", data) == (CD_BLOCKS - 1, 2048)


@pytest.mark.parametrize("limit,chunk", [(0xFFFE, 3 * 2048), (2048, 2048), (0x801, 0x800), (0, 3 * 2048),
                                         (1000, 1000)])
def test_atapi_read10_pio_honours_byte_count_limit(rig: Rig, limit: int, chunk: int) -> None:
    chunks: list[int] = []
    real = rig.ide.channels[1]._start_pio

    def spy(data, length, xfer):  # type: ignore[no-untyped-def]
        if xfer == I.XFER_ATAPI_DATA:
            chunks.append(length)
        real(data, length, xfer)

    rig.ide.channels[1]._start_pio = spy  # type: ignore[method-assign]
    st, data = rig.packet(read10(5, 3), limit=limit)
    assert st == I.ST_READY and data == cd_pattern(5) + cd_pattern(6) + cd_pattern(7)
    assert chunks[0] == chunk and all(c <= chunk for c in chunks) and sum(chunks) == 3 * 2048


def test_atapi_read12(rig: Rig) -> None:
    assert rig.packet(read12(CD_BLOCKS - 2, 2))[1] == cd_pattern(CD_BLOCKS - 2) + cd_pattern(CD_BLOCKS - 1)
    assert rig.packet(read10(3, 0)) == (I.ST_READY, b"")


def test_atapi_out_of_range_and_request_sense(rig: Rig) -> None:
    st, _ = rig.packet(read10(CD_BLOCKS - 1, 2))
    assert st == I.ST_DRDY | I.ST_ERR and rig.error(SEC) >> 4 == I.SENSE_ILLEGAL_REQUEST
    assert rig.sense() == (I.SENSE_ILLEGAL_REQUEST, I.ASC_LBA_OUT_OF_RANGE, 0)
    assert rig.sense() == (0, 0, 0)  # REQUEST SENSE consumed it
    assert rig.check_condition(bytes((0xEE,)))[:2] == (I.SENSE_ILLEGAL_REQUEST, I.ASC_INVALID_OPCODE)


def test_atapi_read_toc(rig: Rig) -> None:
    toc = bytes((I.SCSI_READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100, 0))
    _, data = rig.packet(toc)
    length, first, last = struct.unpack(">HBB", data[:4])
    assert (length, first, last) == (18, 1, 1)
    assert data[4:8] == bytes((0, 0x14, 1, 0)) and struct.unpack(">I", data[8:12])[0] == 0
    assert data[14] == 0xAA and struct.unpack(">I", data[16:20])[0] == CD_BLOCKS
    _, msf = rig.packet(bytes((I.SCSI_READ_TOC, 2, 0, 0, 0, 0, 0, 0, 100, 0)))
    assert msf[8:12] == bytes((0, 0, 2, 0))  # track 1 at 00:02:00
    frames = CD_BLOCKS + 150
    assert msf[16:20] == bytes((0, frames // 4500, frames // 75 % 60, frames % 75))
    _, sess = rig.packet(bytes((I.SCSI_READ_TOC, 0, 1, 0, 0, 0, 0, 0, 12, 0)))
    assert sess[:4] == bytes((0, 10, 1, 1)) and len(sess) == 12
    assert rig.packet(bytes((I.SCSI_READ_TOC, 0, 0, 0, 0, 0, 0, 0, 4, 0)))[1] == data[:4]  # alloc
    assert rig.check_condition(bytes((I.SCSI_READ_TOC, 0, 0, 0, 0, 0, 5, 0, 100, 0)))[1] == 0x24


def test_atapi_mode_sense(rig: Rig) -> None:
    _, caps = rig.packet(bytes((I.SCSI_MODE_SENSE_10, 0, 0x2A, 0, 0, 0, 0, 0, 128, 0)))
    assert struct.unpack(">H", caps[:2])[0] == len(caps) - 2 and caps[8] == 0x2A
    assert caps[8 + 6] & 0x09 == 0x09  # lock and eject supported
    _, err = rig.packet(bytes((I.SCSI_MODE_SENSE_10, 0, 0x01, 0, 0, 0, 0, 0, 128, 0)))
    assert err[8:10] == bytes((0x01, 6))
    _, both = rig.packet(bytes((I.SCSI_MODE_SENSE_10, 0, 0x3F, 0, 0, 0, 0, 0, 128, 0)))
    assert both[8] == 0x01 and both[16] == 0x2A
    assert rig.check_condition(bytes((I.SCSI_MODE_SENSE_10, 0, 0xEA, 0, 0, 0, 0, 0, 128, 0)))[1] == 0x39
    assert rig.check_condition(bytes((I.SCSI_MODE_SENSE_10, 0, 0x05, 0, 0, 0, 0, 0, 128, 0)))[1] == 0x24


def test_atapi_get_configuration(rig: Rig) -> None:
    _, data = rig.packet(bytes((I.SCSI_GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 1, 0, 0)))
    length, profile = struct.unpack(">I2xH", data[:8])
    assert length == len(data) - 4 and profile == I.PROFILE_CD_ROM
    assert data[8:10] == b"\0\0"  # the profile list first
    _, one = rig.packet(bytes((I.SCSI_GET_CONFIGURATION, 2, 0, 1, 0, 0, 0, 1, 0, 0)))
    assert one[8:10] == b"\0\x01" and len(one) == 8 + 4 + 8  # only the core feature


def test_atapi_prevent_eject_load(rig: Rig) -> None:
    rig.packet(bytes((I.SCSI_PREVENT_ALLOW, 0, 0, 0, 1, 0)))
    assert rig.check_condition(bytes((I.SCSI_START_STOP_UNIT, 0, 0, 0, 2, 0)))[1:] == (0x53, 0x02)
    rig.packet(bytes((I.SCSI_PREVENT_ALLOW, 0, 0, 0, 0, 0)))
    assert rig.packet(bytes((I.SCSI_START_STOP_UNIT, 0, 0, 0, 2, 0)))[0] == I.ST_READY  # eject
    assert rig.check_condition(bytes(12)) == (I.SENSE_NOT_READY, I.ASC_MEDIUM_NOT_PRESENT, 0x02)
    rig.packet(bytes((I.SCSI_START_STOP_UNIT, 0, 0, 0, 3, 0)))  # load
    assert rig.packet(bytes(12))[0] == I.ST_READY


def gesn(rig: Rig) -> tuple[int, int]:
    _, data = rig.packet(bytes((I.SCSI_GET_EVENT_STATUS, 1, 0, 0, 0x10, 0, 0, 0, 8, 0)))
    assert data[2] == I.GESN_MEDIA_CLASS and data[3] == 0x10
    return data[4], data[5]


def test_media_change_events_and_sense(rig: Rig, tmp_path: Path) -> None:
    assert gesn(rig) == (I.MEC_NO_CHANGE, 0x02)
    medium = rig.cd.backend
    assert rig.ide.eject(1, 0) is medium and rig.cd.backend is None
    assert gesn(rig) == (I.MEC_MEDIA_REMOVAL, 0x00)
    assert rig.check_condition(bytes(12))[:2] == (I.SENSE_NOT_READY, I.ASC_MEDIUM_NOT_PRESENT)
    new = make_image(tmp_path / "cd2.iso", 8, lambda i: bytes((0x77,)) * 2048, 2048)
    assert rig.ide.insert_media(1, 0, open_cdrom(new)) is None
    assert gesn(rig) == (I.MEC_NEW_MEDIA, 0x02)
    assert gesn(rig) == (I.MEC_NO_CHANGE, 0x02)
    # the swap looks like "no medium", then "medium may have changed" until REQUEST SENSE
    st, _ = rig.packet(bytes(12))
    assert st & I.ST_ERR and rig.error(SEC) >> 4 == I.SENSE_NOT_READY
    st, _ = rig.packet(bytes(12))
    assert st & I.ST_ERR and rig.error(SEC) >> 4 == I.SENSE_UNIT_ATTENTION
    st, _ = rig.packet(bytes((I.SCSI_READ_CAPACITY,)))
    assert st & I.ST_ERR and rig.error(SEC) >> 4 == I.SENSE_UNIT_ATTENTION  # sticky
    assert rig.packet(bytes((I.SCSI_INQUIRY, 0, 0, 0, 36, 0)))[0] == I.ST_READY  # allowed
    assert rig.sense() == (I.SENSE_UNIT_ATTENTION, I.ASC_MEDIUM_MAY_HAVE_CHANGED, 0)
    assert rig.packet(bytes((I.SCSI_READ_CAPACITY,)))[1] == struct.pack(">II", 7, 2048)
    assert rig.packet(read10(0, 1))[1] == bytes((0x77,)) * 2048


def test_locked_drive_refuses_host_eject(rig: Rig) -> None:
    rig.packet(bytes((I.SCSI_PREVENT_ALLOW, 0, 0, 0, 1, 0)))
    assert rig.ide.eject(1, 0) is None and rig.cd.backend is not None
    assert gesn(rig)[0] == I.MEC_EJECT_REQUEST
    assert rig.ide.eject(1, 0, force=True) is not None and rig.cd.backend is None


def test_empty_drive(tmp_path: Path) -> None:
    r = Rig(tmp_path, cd=False)
    assert r.check_condition(bytes(12)) == (I.SENSE_NOT_READY, I.ASC_MEDIUM_NOT_PRESENT, 1)
    assert r.packet(bytes((I.SCSI_INQUIRY, 0, 0, 0, 36, 0)))[0] == I.ST_READY
    _, data = r.packet(bytes((I.SCSI_GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 1, 0, 0)))
    assert struct.unpack(">H", data[6:8])[0] == 0
    with pytest.raises(ValueError):
        r.ide.insert_media(0, 0, open_disk(r.disk_path, readonly=True, lock=False))


def test_atapi_dma_read(rig: Rig) -> None:
    prd = [(0x10800, 0x1000), (0x30000, 0x800)]  # crosses 0x11000; 3 blocks in all
    rig.prd_table(0x1000, prd)
    rig.bm_setup(0x1000, to_memory=True, ch=1)
    line = rig.irqs[1]
    st, _ = rig.packet(read10(10, 3), dma=True)
    assert st == I.ST_READY | I.ST_DRQ and not line.level  # waiting for the engine
    rig.bm_start(ch=1)
    assert line.level
    bm = rig.bm_stop(ch=1)
    assert bm & (I.BM_ST_INTR | I.BM_ST_ACTIVE | I.BM_ST_ERROR) == I.BM_ST_INTR
    assert rig.status(SEC) == I.ST_READY and rig.inb(SEC + 2) & 7 == I.IREASON_IO | I.IREASON_COD
    got = rig.mem.read(0x10800, 0x1000) + rig.mem.read(0x30000, 0x800)
    assert got == b"".join(cd_pattern(i) for i in (10, 11, 12))


def test_atapi_dma_fault(rig: Rig) -> None:
    rig.prd_table(0x1000, [(MEM_SIZE - 1024, 2048)])
    rig.bm_setup(0x1000, to_memory=True, ch=1)
    rig.packet(read10(0, 1), dma=True)
    rig.bm_start(ch=1)
    assert rig.bm_stop(ch=1) & I.BM_ST_ERROR
    assert rig.status(SEC) & I.ST_ERR
    assert rig.sense()[0] == I.SENSE_ABORTED_COMMAND


def test_atapi_device_reset_while_drq(rig: Rig) -> None:
    rig.select(SEC)
    rig.outb(SEC + 7, I.CMD_PACKET)
    assert rig.altstatus(SEC) & I.ST_DRQ
    rig.outb(SEC + 7, I.CMD_IDENTIFY_PACKET)  # ignored while DRQ
    assert rig.inb(SEC + 2) & 7 == I.IREASON_COD
    rig.outb(SEC + 7, I.CMD_DEVICE_RESET)
    assert rig.status(SEC) == 0 and (rig.inb(SEC + 4), rig.inb(SEC + 5)) == (0x14, 0xEB)
    assert rig.packet(bytes(12))[0] == I.ST_READY


# --- state ----------------------------------------------------------------------------------------
def test_snapshot_restore_mid_transfer(rig: Rig) -> None:
    rig.taskfile(PRI, 20, 4)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    rig.status()
    first = rig.insw(PRI, 256 + 100)
    snap = rig.ide.snapshot()
    rest = rig.insw(PRI, 156)
    for _ in range(2):
        rig.status()
        rest += rig.insw(PRI, 256)
    after = rig.ide.snapshot()
    rig.ide.restore(snap)
    assert rig.ide.state == snap and rig.ide.state != after
    again = rig.insw(PRI, 156)
    for _ in range(2):
        rig.status()
        again += rig.insw(PRI, 256)
    assert again == rest and first + rest == b"".join(disk_pattern(i) for i in range(20, 24))
    assert rig.ide.state == after


def test_restore_redrives_the_interrupt_line(rig: Rig) -> None:
    rig.outb(PRI + 7, I.CMD_FLUSH_CACHE)
    snap = rig.ide.snapshot()
    rig.status()
    assert not rig.irqs[0].level
    rig.ide.restore(snap)
    assert rig.irqs[0].level


def test_reset_returns_to_power_on(rig: Rig) -> None:
    fresh = rig.ide.snapshot()
    rig.nondata(I.CMD_SET_MULTIPLE, count=2)
    rig.outb(PRI_CTL, I.DC_NIEN)
    rig.outl(BM + I.BM_PRD, 0x4000)
    rig.taskfile(PRI, 1, 1)
    rig.outb(PRI + 7, I.CMD_READ_SECTORS)
    rig.ide.reset()
    assert rig.ide.state == fresh


def test_string_io_matches_single_accesses(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Rig(tmp_path / "a"), Rig(tmp_path / "b")
    for r in (a, b):
        r.taskfile(PRI, 0, 3)
        r.outb(PRI + 7, I.CMD_READ_SECTORS)
    ch = b.ide.channels[0]
    singles = a.insw(PRI, 3 * 256)
    bulk = ch.read_string(0, 2, 3 * 256)
    assert bulk == singles == b"".join(disk_pattern(i) for i in range(3))
    assert a.ide.state == b.ide.state
    data = bytes(range(256)) * 4
    for r in (a, b):
        r.taskfile(PRI, 50, 2)
        r.outb(PRI + 7, I.CMD_WRITE_SECTORS)
    a.outsw(PRI, data)
    ch.write_string(0, 2, data)
    assert a.ide.state == b.ide.state
    assert a.pio_read(50, 2) == b.pio_read(50, 2) == data


def test_secondary_interrupt_is_its_own_line(rig: Rig) -> None:
    rig.packet(bytes(12))
    assert rig.irqs[0].history == [] and rig.irqs[1].history


def test_from_positions_uses_qemu_index_numbering(tmp_path: Path) -> None:
    disk = AtaDisk(open_disk(make_image(tmp_path / "d.img", 64, disk_pattern, 512)))
    cd = AtapiCdrom()
    ide = PiixIde.from_positions(BytearrayDmaSpace(4096), (RecordingIrqLine(), RecordingIrqLine()),
                                 {1: disk, 2: cd})
    assert ide.drive(0, 0) is None and ide.drive(0, 1) is disk and ide.drive(1, 0) is cd
    with pytest.raises(ValueError):
        PiixIde.from_positions(BytearrayDmaSpace(4096), (RecordingIrqLine(), RecordingIrqLine()), {4: cd})
