"""A PCI machine around one e1000, and the driver-side helpers the e1000 tests share: register
access through BAR0 (and BAR1), EEPROM reads the two ways Linux and iPXE do them, PHY access
through MDIC, TX/RX rings in a bytearray RAM, and independent packet builders and checksums
(written here, not taken from the device, so the tests check the device against something)."""

from __future__ import annotations

import struct

from kvmpy.devices.e1000 import E1000
from kvmpy.devices.e1000 import regs as R
from kvmpy.devices.pci import CMD_IO, CMD_MASTER, CMD_MEMORY, PciBus
from kvmpy.devices.pci import config as c
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.hw.dma import BytearrayDmaSpace

MAC = bytes.fromhex("525400123456")
PEER = bytes.fromhex("02aabbccddee")
BCAST = b"\xff" * 6
MMIO_BASE = 0xFEB0_0000
IO_BASE = 0xC000
DEV = 3
RAM_SIZE = 4 << 20
TX_RING = 0x1_0000
RX_RING = 0x2_0000
TX_BUFS = 0x10_0000
RX_BUFS = 0x20_0000
PIRQ = (1 - 1 + DEV - 1) & 3  # INTA# of slot 3 on the PC wiring


class FakeClock:
    """Monotonic nanoseconds the test moves by hand."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_us(self, us: float) -> None:
        self.ns += int(us * 1000)


class Router:
    def __init__(self) -> None:
        self.levels = [False] * 4

    def set_pirq_level(self, pirq: int, level: bool) -> None:
        self.levels[pirq] = level


class MsiRecorder:
    def __init__(self) -> None:
        self.messages: list[tuple[int, int]] = []

    def send(self, address: int, data: int) -> None:
        self.messages.append((address, data))


class Rig:
    """The NIC placed at 00:03.0 with BAR0/BAR1 programmed and memory, I/O and bus mastering
    on, as firmware leaves it for the driver."""

    def __init__(self, **kw) -> None:
        self.pio = PioBus()
        self.mmio = MmioBus()
        self.ram = BytearrayDmaSpace(RAM_SIZE)
        self.pci = PciBus(self.pio, self.mmio, dma_provider=lambda rid: self.ram)
        self.router = Router()
        self.pci.set_intx_router(self.router)
        self.sent: list[bytes] = []
        self.clock = FakeClock()
        self.rx_space_calls = 0
        self.timer_calls = 0
        kw.setdefault("clock", self.clock)
        kw.setdefault("on_rx_space", self._rx_space)
        kw.setdefault("on_timer", self._timer)
        self.nic = E1000(MAC, self.sent.append, **kw)
        self.msi = MsiRecorder()
        self.nic.msi_sender = self.msi
        self.pci.place(DEV, 0, self.nic)
        self.cfg_write(c.BAR0, 4, MMIO_BASE)
        self.cfg_write(c.BAR0 + 4, 4, IO_BASE)
        self.cfg_write(c.COMMAND, 2, CMD_IO | CMD_MEMORY | CMD_MASTER)
        self.tx_count = 0
        self.rx_count = 0
        self.tx_tail = 0

    def _rx_space(self) -> None:
        self.rx_space_calls += 1

    def _timer(self) -> None:
        self.timer_calls += 1

    # -- configuration space and registers ----------------------------------------------------
    def cfg_read(self, off: int, size: int) -> int:
        return self.pci.config_read(DEV, 0, off, size)

    def cfg_write(self, off: int, size: int, value: int) -> None:
        self.pci.config_write(DEV, 0, off, size, value)

    def rd(self, off: int, size: int = 4) -> int:
        return self.mmio.read(MMIO_BASE + off, size)

    def wr(self, off: int, value: int, size: int = 4) -> None:
        self.mmio.write(MMIO_BASE + off, size, value)

    def setbits(self, off: int, bits: int) -> None:
        self.wr(off, self.rd(off) | bits)

    @property
    def intx(self) -> bool:
        return self.router.levels[PIRQ]

    # -- EEPROM and PHY, the way drivers do it ---------------------------------------------------
    def eerd(self, word: int) -> int:
        """iPXE/e1000e style: EERD with START, poll DONE (small 82540 format)."""
        self.wr(R.EERD, R.EERD_START | word << R.EERD_ADDR_SHIFT)
        for _ in range(10):
            v = self.rd(R.EERD)
            if v & R.EERD_DONE:
                return v >> R.EERD_DATA_SHIFT
        raise AssertionError("EERD never completed")

    def eecd_read_words(self, first: int, count: int) -> list[int]:
        """Linux's e1000_read_eeprom for a Microwire part, step by step."""
        eecd = self.rd(R.EECD)
        assert eecd & R.EECD_PRES
        assert not eecd & R.EECD_SIZE  # 64 words, 6 address bits
        self.wr(R.EECD, eecd | R.EECD_REQ)  # e1000_acquire_eeprom
        eecd = self.rd(R.EECD)
        assert eecd & R.EECD_GNT
        eecd &= ~(R.EECD_DI | R.EECD_SK)
        self.wr(R.EECD, eecd)
        eecd |= R.EECD_CS
        self.wr(R.EECD, eecd)
        words = []
        for i in range(count):
            self._shift_out(0b110, 3)
            self._shift_out(first + i, 6)
            words.append(self._shift_in(16))
            self._standby()
        eecd = self.rd(R.EECD) & ~(R.EECD_CS | R.EECD_DI | R.EECD_SK)  # e1000_release_eeprom
        self.wr(R.EECD, eecd)
        self.wr(R.EECD, eecd & ~R.EECD_REQ)
        assert not self.rd(R.EECD) & R.EECD_GNT
        return words

    def _clock(self, eecd: int) -> int:
        self.wr(R.EECD, eecd | R.EECD_SK)
        self.wr(R.EECD, eecd & ~R.EECD_SK)
        return eecd & ~R.EECD_SK

    def _shift_out(self, data: int, count: int) -> None:
        eecd = self.rd(R.EECD) & ~R.EECD_DO
        mask = 1 << (count - 1)
        while mask:
            eecd &= ~R.EECD_DI
            if data & mask:
                eecd |= R.EECD_DI
            self.wr(R.EECD, eecd)
            eecd = self._clock(eecd)
            mask >>= 1
        self.wr(R.EECD, eecd & ~R.EECD_DI)

    def _shift_in(self, count: int) -> int:
        eecd = self.rd(R.EECD) & ~(R.EECD_DO | R.EECD_DI)
        data = 0
        for _ in range(count):
            data <<= 1
            self.wr(R.EECD, eecd | R.EECD_SK)
            if self.rd(R.EECD) & R.EECD_DO:
                data |= 1
            self.wr(R.EECD, eecd & ~R.EECD_SK)
        return data

    def _standby(self) -> None:
        eecd = self.rd(R.EECD) & ~(R.EECD_CS | R.EECD_SK)
        self.wr(R.EECD, eecd)
        eecd |= R.EECD_SK
        self.wr(R.EECD, eecd)
        eecd |= R.EECD_CS
        self.wr(R.EECD, eecd)
        eecd &= ~R.EECD_SK
        self.wr(R.EECD, eecd)

    def mdic(self, op: int, reg: int, data: int = 0, phy: int = 1) -> int:
        self.wr(R.MDIC, op | phy << R.MDIC_PHY_SHIFT | reg << R.MDIC_REG_SHIFT | data)
        for _ in range(10):
            v = self.rd(R.MDIC)
            if v & R.MDIC_READY:
                return v
        raise AssertionError("MDIC never ready")

    def phy_read(self, reg: int) -> int:
        v = self.mdic(R.MDIC_OP_READ, reg)
        assert not v & R.MDIC_ERROR, f"PHY register {reg:#x} read failed"
        return v & 0xFFFF

    # -- rings ---------------------------------------------------------------------------------------
    def setup_tx(self, count: int = 8, tctl: int = R.TCTL_EN | R.TCTL_PSP) -> None:
        self.tx_count = count
        self.wr(R.TDBAL, TX_RING)
        self.wr(R.TDBAH, 0)
        self.wr(R.TDLEN, count * 16)
        self.wr(R.TDH, 0)
        self.wr(R.TDT, 0)
        self.tx_tail = 0
        self.wr(R.TCTL, tctl)

    def tx_desc_addr(self, i: int) -> int:
        return TX_RING + 16 * i

    def put_tx(self, buf: int, lower: int, upper: int) -> int:
        """Write a descriptor at the software tail; returns its index (TDT not written)."""
        i = self.tx_tail
        self.ram.write(self.tx_desc_addr(i), struct.pack("<QII", buf, lower, upper))
        self.tx_tail = (i + 1) % self.tx_count
        return i

    def tx_legacy(self, frame: bytes, slot_buf: int | None = None, cmd: int | None = None) -> int:
        if cmd is None:
            cmd = R.TXD_CMD_EOP | R.TXD_CMD_IFCS | R.TXD_CMD_RS
        buf = TX_BUFS + 0x4000 * self.tx_tail if slot_buf is None else slot_buf
        self.ram.write(buf, frame)
        return self.put_tx(buf, len(frame) | cmd << 24, 0)

    def tx_kick(self) -> None:
        self.wr(R.TDT, self.tx_tail)

    def tx_status(self, i: int) -> int:
        return self.ram.mem[self.tx_desc_addr(i) + 12]

    def setup_rx(self, count: int = 8, rctl: int = R.RCTL_EN | R.RCTL_BAM | R.RCTL_SECRC,
                 bufsize: int = 2048, fill: int | None = None) -> None:
        self.rx_count = count
        self.rx_bufsize = bufsize
        for i in range(count):
            self.ram.write(RX_RING + 16 * i, struct.pack("<QQ", RX_BUFS + 0x4000 * i, 0))
        self.wr(R.RDBAL, RX_RING)
        self.wr(R.RDBAH, 0)
        self.wr(R.RDLEN, count * 16)
        self.wr(R.RDH, 0)
        self.wr(R.RDT, count - 1 if fill is None else fill)
        self.wr(R.RCTL, rctl)

    def rx_desc(self, i: int) -> tuple[int, int, int, int, int, int]:
        """(buffer, length, checksum, status, errors, special) of descriptor ``i``."""
        return struct.unpack_from("<QHHBBH", self.ram.mem, RX_RING + 16 * i)

    def rx_data(self, i: int) -> bytes:
        buf, length, *_ = self.rx_desc(i)
        return bytes(self.ram.mem[buf : buf + length])

    def rx_recycle(self, i: int) -> None:
        """The driver hands descriptor ``i`` back: status cleared, tail moved past it."""
        self.ram.write(RX_RING + 16 * i + 8, bytes(8))
        self.wr(R.RDT, i)


# -- packets (independent of the device's own helpers) ----------------------------------------------
def inet_sum(data: bytes) -> int:
    """The RFC 1071 checksum, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, l4: bytes, *, src: bytes = bytes([10, 0, 0, 1]), dst: bytes = bytes([10, 0, 0, 2]),
         ident: int = 0x1234, total: int | None = None, csum: bool = True) -> bytes:
    tot = 20 + len(l4) if total is None else total
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, ident, 0x4000, 64, proto, 0, src, dst))
    if csum:
        hdr[10:12] = struct.pack("!H", inet_sum(bytes(hdr)))
    return bytes(hdr) + l4


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def tcp(payload: bytes, *, seq: int = 1000, ack: int = 1, flags: int = 0x18, options: bytes = b"",
        src: bytes = bytes([10, 0, 0, 1]), dst: bytes = bytes([10, 0, 0, 2]), csum: bool = True) -> bytes:
    off = (20 + len(options)) // 4
    seg = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, seq, ack, off << 4, flags, 65535, 0, 0) + options)
    seg += payload
    if csum:
        seg[16:18] = struct.pack("!H", inet_sum(pseudo(src, dst, 6, len(seg)) + bytes(seg)))
    return bytes(seg)


def udp(payload: bytes, *, src: bytes = bytes([10, 0, 0, 1]), dst: bytes = bytes([10, 0, 0, 2]),
        csum: bool = True) -> bytes:
    seg = bytearray(struct.pack("!HHHH", 5000, 53, 8 + len(payload), 0) + payload)
    if csum:
        seg[6:8] = struct.pack("!H", inet_sum(pseudo(src, dst, 17, len(seg)) + bytes(seg)) or 0xFFFF)
    return bytes(seg)


def tcp_frame(payload: bytes, dst: bytes = MAC, **kw) -> bytes:
    return eth(dst, PEER, 0x0800, ipv4(6, tcp(payload, **kw)))


def mta_hash(mc: bytes) -> tuple[int, int]:
    """Linux's e1000_hash_mc_addr for filter type 0: (MTA register index, bit)."""
    h = ((mc[4] >> 4) | (mc[5] << 4)) & 0xFFF
    return (h >> 5) & 0x7F, h & 0x1F
