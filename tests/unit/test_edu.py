"""The edu DMA test device driven through a PciBus the way a driver drives it: configuration
through 0xCF8/0xCFC, registers through its BAR on the MMIO bus, DMA into a bytearray RAM, INTx
through the bus's router and MSI through a recording sender."""

from __future__ import annotations

import pytest

from kvmpy.devices import edu as e
from kvmpy.devices.edu import Edu
from kvmpy.devices.pci import PciBus
from kvmpy.devices.pci import config as c
from kvmpy.errors import DmaFault
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.hw.dma import BytearrayDmaSpace
from kvmpy.hw.irq import RecordingIrqLine

DEV = 4
BDF = DEV << 3
BAR = 0xE000_0000
RAM_SIZE = 1 << 20
SRC, DST = 0x10000, 0x20000


class Router:
    """An IntxRouter with one recording line per PIRQ."""

    def __init__(self) -> None:
        self.lines = [RecordingIrqLine() for _ in range(4)]

    def set_pirq_level(self, pirq: int, level: bool) -> None:
        self.lines[pirq].set_level(level)


class Msi:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def send(self, address: int, data: int) -> None:
        self.sent.append((address, data))


class BlockingDma:
    """RAM that refuses (like an IOMMU) every access overlapping [lo, hi)."""

    def __init__(self, ram: BytearrayDmaSpace, lo: int, hi: int) -> None:
        self.ram, self.lo, self.hi = ram, lo, hi
        self.faults = 0

    def _check(self, addr: int, length: int, write: bool) -> None:
        if addr < self.hi and self.lo < addr + length:
            self.faults += 1
            raise DmaFault(max(addr, self.lo), length, write, "blocked by the test IOMMU")

    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length, False)
        return self.ram.read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data), True)
        self.ram.write(addr, data)


class Board:
    def __init__(self, *, block: tuple[int, int] | None = None, **kw: int) -> None:
        self.pio, self.mmio = PioBus(), MmioBus()
        self.ram = BytearrayDmaSpace(RAM_SIZE)
        self.space = BlockingDma(self.ram, *block) if block else self.ram
        self.bus = PciBus(self.pio, self.mmio, dma_provider=lambda rid: self.space)
        self.bus.register_ports()
        self.router = Router()
        self.bus.set_intx_router(self.router)
        self.edu = Edu(**kw)
        self.msi = Msi()
        self.edu.msi_sender = self.msi
        self.bus.place(DEV, 0, self.edu)

    def cfg_read(self, reg: int, size: int) -> int:
        self.pio.write(0xCF8, 4, 0x8000_0000 | BDF << 8 | (reg & 0xFC))
        return self.pio.read(0xCFC + (reg & 3), size)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        self.pio.write(0xCF8, 4, 0x8000_0000 | BDF << 8 | (reg & 0xFC))
        self.pio.write(0xCFC + (reg & 3), size, value)

    def enable(self, command: int = c.CMD_MEMORY | c.CMD_MASTER) -> None:
        self.cfg_write(0x10, 4, BAR)
        self.cfg_write(0x04, 2, command)

    def r(self, reg: int, size: int = 4) -> int:
        return self.mmio.read(BAR + reg, size)

    def w(self, reg: int, value: int, size: int = 4) -> None:
        self.mmio.write(BAR + reg, size, value)

    @property
    def line(self) -> RecordingIrqLine:
        pirq = self.bus.pirq_of(self.edu)
        assert pirq is not None
        return self.router.lines[pirq]

    def enable_msi(self, address: int = 0xFEE0_0000, data: int = 0x4041) -> None:
        cap = self.edu.config.find_capability(c.CAP_ID_MSI)
        assert cap is not None
        self.cfg_write(cap + 4, 4, address)
        self.cfg_write(cap + 8, 4, 0)
        self.cfg_write(cap + 12, 2, data)
        self.cfg_write(cap + 2, 2, 1)

    def dma(self, src: int, dst: int, count: int, cmd: int) -> None:
        for reg, v in ((e.REG_DMA_SRC, src), (e.REG_DMA_DST, dst), (e.REG_DMA_COUNT, count)):
            self.w(reg, v, 8 if v >> 32 else 4)
        self.w(e.REG_DMA_CMD, cmd)


@pytest.fixture
def board() -> Board:
    b = Board()
    b.enable()
    return b


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7 + (i >> 8)) & 0xFF for i in range(n))


# --- identity and configuration ---------------------------------------------------------------
def test_config_identity_bar_and_msi_capability():
    b = Board()
    assert b.cfg_read(0x00, 4) == 0x11E8_1234
    assert b.cfg_read(0x08, 4) == 0x00FF_0000 | 0x10  # class 0x00ff, prog-if 0, revision 0x10
    assert b.cfg_read(0x2C, 4) == 0x1100_1AF4
    assert b.cfg_read(0x3D, 1) == 1  # INTA#
    b.cfg_write(0x10, 4, 0xFFFF_FFFF)
    assert b.cfg_read(0x10, 4) == 0xFFF0_0000  # 1 MiB, 32-bit, not prefetchable
    assert b.cfg_read(0x06, 2) & c.STS_CAP_LIST
    cap = b.cfg_read(0x34, 1)
    assert cap == 0x40 and b.cfg_read(cap, 1) == c.CAP_ID_MSI
    assert b.cfg_read(cap + 2, 2) & 0x80  # 64-bit address, one vector


def test_bar_not_decoded_until_memory_enabled():
    b = Board()
    b.cfg_write(0x10, 4, BAR)
    assert b.r(e.REG_ID) == 0  # nobody owns the address yet
    b.cfg_write(0x04, 2, c.CMD_MEMORY)
    assert b.r(e.REG_ID) == e.EDU_ID_VALUE


# --- registers --------------------------------------------------------------------------------
def test_identification_and_liveness(board):
    assert board.r(e.REG_ID) == 0x010000ED
    for v in (0, 0x12345678, 0xFFFF_FFFF):
        board.w(e.REG_LIVENESS, v)
        assert board.r(e.REG_LIVENESS) == ~v & 0xFFFF_FFFF


def test_access_widths(board):
    # below 0x80 only 4 bytes; 8-byte accesses there read all-ones and are ignored
    assert board.r(e.REG_ID, 8) == 0xFFFF_FFFF_FFFF_FFFF
    board.w(e.REG_LIVENESS, 0x1111, size=8)
    assert board.r(e.REG_LIVENESS) == 0
    # 1- and 2-byte accesses never reach the device (the bus refuses them)
    board.w(e.REG_LIVENESS, 0x22, size=1)
    assert board.r(e.REG_LIVENESS) == 0
    assert board.mmio.unowned.writes == 1
    # 0x80 and above: 4 or 8 bytes; a 4-byte write sets the whole 64-bit register
    board.w(e.REG_DMA_SRC, 0x1234_5678_9ABC_DEF0, size=8)
    assert board.r(e.REG_DMA_SRC, 8) == 0x1234_5678_9ABC_DEF0
    assert board.r(e.REG_DMA_SRC) == 0x9ABC_DEF0
    board.w(e.REG_DMA_SRC, 0x1000)
    assert board.r(e.REG_DMA_SRC, 8) == 0x1000
    # offsets that name no register read all-ones, as in QEMU
    assert board.r(0x84) == 0xFFFF_FFFF
    assert board.r(0x10) == 0xFFFF_FFFF
    assert board.r(0xFFFFC) == 0xFFFF_FFFF


@pytest.mark.parametrize(
    ("n", "want"),
    [
        (0, 1),
        (1, 1),
        (5, 120),
        (12, 479001600),
        (13, 6227020800 & 0xFFFF_FFFF),
        (33, 2147483648),
        (34, 0),
        (0xFFFF_FFFF, 0),
    ],
)
def test_factorial(board, n, want):
    board.w(e.REG_FACTORIAL, n)
    assert board.r(e.REG_STATUS) & e.STATUS_COMPUTING == 0  # computed synchronously
    assert board.r(e.REG_FACTORIAL) == want


def test_factorial32_matches_a_uint32_loop():
    for n in range(40):
        r = 1
        for k in range(n, 0, -1):
            r = r * k & 0xFFFF_FFFF
        assert e.factorial32(n) == r


def test_status_keeps_only_the_irq_bit(board):
    board.w(e.REG_STATUS, 0xFFFF_FFFF)
    assert board.r(e.REG_STATUS) == e.STATUS_IRQ_FACT
    board.w(e.REG_STATUS, 0)
    assert board.r(e.REG_STATUS) == 0


# --- interrupts -------------------------------------------------------------------------------
def test_intx_raise_and_acknowledge(board):
    line = board.line
    board.w(e.REG_IRQ_RAISE, 0x30)
    assert board.r(e.REG_IRQ_STATUS) == 0x30
    assert line.level and board.cfg_read(0x06, 2) & c.STS_INTERRUPT
    board.w(e.REG_IRQ_ACK, 0x10)
    assert board.r(e.REG_IRQ_STATUS) == 0x20 and line.level  # still pending
    board.w(e.REG_IRQ_ACK, 0x20)
    assert board.r(e.REG_IRQ_STATUS) == 0 and not line.level
    assert line.history == [True, False]
    board.w(e.REG_IRQ_RAISE, 0)  # raising nothing interrupts nobody
    assert not line.level
    assert board.msi.sent == []


def test_intx_disable_keeps_the_line_quiet(board):
    board.cfg_write(0x04, 2, c.CMD_MEMORY | c.CMD_INTX_DISABLE)
    board.w(e.REG_IRQ_RAISE, 1)
    assert not board.line.level
    assert board.cfg_read(0x06, 2) & c.STS_INTERRUPT  # the status bit shows the device's level


def test_factorial_interrupt(board):
    board.w(e.REG_FACTORIAL, 4)
    assert not board.line.level  # STATUS bit 7 clear: no interrupt
    board.w(e.REG_STATUS, e.STATUS_IRQ_FACT)
    board.w(e.REG_FACTORIAL, 4)
    assert board.r(e.REG_FACTORIAL) == 24
    assert board.r(e.REG_IRQ_STATUS) == e.FACT_IRQ and board.line.level
    board.w(e.REG_IRQ_ACK, e.FACT_IRQ)
    assert not board.line.level


def test_msi_every_raise_sends_a_message(board):
    board.enable_msi(0xFEE0_1000, 0x4051)
    board.w(e.REG_IRQ_RAISE, 1)
    board.w(e.REG_IRQ_RAISE, 2)  # QEMU sends one message per raise
    assert board.msi.sent == [(0xFEE0_1000, 0x4051)] * 2
    assert not board.line.level  # MSI enabled: INTx stays quiet
    assert board.r(e.REG_IRQ_STATUS) == 3
    board.w(e.REG_IRQ_ACK, 3)
    assert board.r(e.REG_IRQ_STATUS) == 0
    board.w(e.REG_STATUS, e.STATUS_IRQ_FACT)
    board.w(e.REG_FACTORIAL, 3)
    assert len(board.msi.sent) == 3


# --- DMA --------------------------------------------------------------------------------------
def test_dma_both_directions(board):
    data = pattern(4096, 3)
    board.ram.mem[SRC : SRC + 4096] = data
    board.dma(SRC, e.DMA_BUFFER_ADDR, 4096, e.DMA_CMD_RUN)
    assert board.r(e.REG_DMA_CMD) == 0  # done: start bit clear, no error
    assert bytes(board.edu.state.dma_buffer) == data
    # device -> RAM, a slice of the buffer
    board.dma(e.DMA_BUFFER_ADDR + 100, DST, 200, e.DMA_CMD_RUN | e.DMA_CMD_TO_RAM)
    assert board.r(e.REG_DMA_CMD) == e.DMA_CMD_TO_RAM
    assert board.ram.mem[DST : DST + 200] == data[100:300]
    assert board.ram.mem[DST + 200 : DST + 201] == b"\0"
    assert board.r(e.REG_DMA_ERRORS) == 0


def test_dma_command_without_start_is_ignored(board):
    board.ram.mem[SRC : SRC + 16] = b"x" * 16
    board.dma(SRC, e.DMA_BUFFER_ADDR, 16, e.DMA_CMD_TO_RAM | e.DMA_CMD_IRQ)
    assert board.r(e.REG_DMA_CMD) == 0
    assert bytes(board.edu.state.dma_buffer[:16]) == b"\0" * 16


def test_dma_completion_interrupt_intx_and_msi(board):
    board.dma(SRC, e.DMA_BUFFER_ADDR, 64, e.DMA_CMD_RUN | e.DMA_CMD_IRQ)
    assert board.r(e.REG_IRQ_STATUS) == e.DMA_IRQ and board.line.level
    board.w(e.REG_IRQ_ACK, e.DMA_IRQ)
    assert not board.line.level
    board.enable_msi()
    board.dma(e.DMA_BUFFER_ADDR, DST, 64, e.DMA_CMD_RUN | e.DMA_CMD_TO_RAM | e.DMA_CMD_IRQ)
    assert board.msi.sent == [(0xFEE0_0000, 0x4041)]


def test_dma_address_clamped_to_dma_mask(board):
    board.ram.mem[SRC : SRC + 8] = b"clamped!"
    board.dma((1 << 28) | SRC, e.DMA_BUFFER_ADDR, 8, e.DMA_CMD_RUN)
    assert bytes(board.edu.state.dma_buffer[:8]) == b"clamped!"
    wide = Board(dma_mask=(1 << 64) - 1)
    wide.enable()
    wide.dma((1 << 28) | SRC, e.DMA_BUFFER_ADDR, 8, e.DMA_CMD_RUN)  # beyond our 1 MiB RAM
    assert wide.r(e.REG_DMA_CMD) & e.DMA_CMD_ERROR


@pytest.mark.parametrize(
    ("dev_addr", "count"),
    [
        (e.DMA_BUFFER_ADDR, 4097),
        (e.DMA_BUFFER_ADDR + 1, 4096),
        (e.DMA_BUFFER_ADDR + 4096, 1),
        (e.DMA_BUFFER_ADDR - 1, 2),
        (0, 16),
        (e.DMA_BUFFER_ADDR, 0xFFFF_FFFF),
        (e.DMA_BUFFER_ADDR, 1 << 40),
        ((1 << 64) - 1, 2),
    ],
)
@pytest.mark.parametrize("to_ram", [False, True])
def test_dma_beyond_the_buffer_refused(board, dev_addr, count, to_ram):
    buf_before = bytes(board.edu.state.dma_buffer)
    board.ram.mem[SRC : SRC + 8] = b"ramdata!"
    ram_before = bytes(board.ram.mem)
    cmd = e.DMA_CMD_RUN | e.DMA_CMD_IRQ | (e.DMA_CMD_TO_RAM if to_ram else 0)
    if to_ram:
        board.dma(dev_addr, DST, count, cmd)
    else:
        board.dma(SRC, dev_addr, count, cmd)
    got = board.r(e.REG_DMA_CMD)
    assert got & e.DMA_CMD_ERROR and not got & e.DMA_CMD_RUN
    assert board.r(e.REG_DMA_ERRORS) == 1
    assert board.r(e.REG_DMA_ERROR_ADDR, 8) == dev_addr
    assert bytes(board.ram.mem) == ram_before
    assert bytes(board.edu.state.dma_buffer) == buf_before
    assert board.r(e.REG_IRQ_STATUS) == e.DMA_IRQ  # the completion interrupt still comes


def test_zero_count_is_a_transfer_of_nothing(board):
    board.dma(SRC, e.DMA_BUFFER_ADDR, 0, e.DMA_CMD_RUN | e.DMA_CMD_IRQ)
    assert board.r(e.REG_DMA_CMD) == e.DMA_CMD_IRQ
    assert board.r(e.REG_IRQ_STATUS) == e.DMA_IRQ


def test_dma_without_bus_master_fails(board):
    board.cfg_write(0x04, 2, c.CMD_MEMORY)
    board.edu.state.dma_buffer[:4] = b"abcd"
    board.dma(e.DMA_BUFFER_ADDR, DST, 4, e.DMA_CMD_RUN | e.DMA_CMD_TO_RAM)
    assert board.r(e.REG_DMA_CMD) & e.DMA_CMD_ERROR
    assert board.ram.mem[DST : DST + 4] == b"\0" * 4


def test_dma_blocked_by_the_dma_space_reports_the_error():
    blocked = (0x30000, 0x31000)
    b = Board(block=blocked)
    b.enable()
    b.ram.mem[0x30000:0x31000] = pattern(4096, 9)
    b.ram.mem[SRC : SRC + 4096] = pattern(4096, 1)
    before = bytes(b.ram.mem)
    # RAM -> device through a permitted page: fine
    b.dma(SRC, e.DMA_BUFFER_ADDR, 4096, e.DMA_CMD_RUN)
    assert b.r(e.REG_DMA_CMD) == 0
    # device -> RAM into the blocked page: nothing written, error bit, counter, address
    b.dma(e.DMA_BUFFER_ADDR, 0x30000, 4096, e.DMA_CMD_RUN | e.DMA_CMD_TO_RAM | e.DMA_CMD_IRQ)
    cmd = b.r(e.REG_DMA_CMD)
    assert cmd & e.DMA_CMD_ERROR and not cmd & e.DMA_CMD_RUN
    assert bytes(b.ram.mem) == before
    assert b.r(e.REG_DMA_ERRORS) == 1
    assert b.r(e.REG_DMA_ERROR_ADDR, 8) == 0x30000
    assert b.r(e.REG_IRQ_STATUS) == e.DMA_IRQ and b.line.level
    # RAM -> device from a range overlapping the blocked page: the buffer keeps its contents
    buf = bytes(b.edu.state.dma_buffer)
    b.dma(0x2F800, e.DMA_BUFFER_ADDR, 4096, e.DMA_CMD_RUN)
    assert b.r(e.REG_DMA_CMD) & e.DMA_CMD_ERROR
    assert bytes(b.edu.state.dma_buffer) == buf
    assert b.r(e.REG_DMA_ERRORS) == 2 and b.space.faults == 2
    # the next good transfer clears the error bit (the counter stays)
    b.dma(e.DMA_BUFFER_ADDR, DST, 16, e.DMA_CMD_RUN | e.DMA_CMD_TO_RAM)
    assert b.r(e.REG_DMA_CMD) == e.DMA_CMD_TO_RAM
    assert b.ram.mem[DST : DST + 16] == buf[:16]
    assert b.r(e.REG_DMA_ERRORS) == 2


def test_error_bit_cannot_be_written(board):
    board.dma(SRC, e.DMA_BUFFER_ADDR, 4, e.DMA_CMD_RUN | e.DMA_CMD_ERROR)
    assert board.r(e.REG_DMA_CMD) == 0
    board.w(e.REG_DMA_ERRORS, 5)
    assert board.r(e.REG_DMA_ERRORS) == 0


# --- state ------------------------------------------------------------------------------------
def test_snapshot_restore_and_reset(board):
    board.ram.mem[SRC : SRC + 32] = pattern(32, 5)
    board.w(e.REG_LIVENESS, 0x55)
    board.w(e.REG_STATUS, e.STATUS_IRQ_FACT)
    board.w(e.REG_FACTORIAL, 6)
    board.dma(SRC, e.DMA_BUFFER_ADDR, 32, e.DMA_CMD_RUN)
    board.dma(SRC, 0, 32, e.DMA_CMD_RUN)  # one error
    snap = board.edu.snapshot()
    regs = [e.REG_LIVENESS, e.REG_FACTORIAL, e.REG_STATUS, e.REG_IRQ_STATUS, e.REG_DMA_CMD, e.REG_DMA_ERRORS]
    before = [board.r(r) for r in regs]
    assert board.line.level

    board.edu.reset()
    assert [board.r(r) for r in regs] == [0] * len(regs)  # BAR unmapped: reads nothing
    assert not board.line.level
    assert board.edu.state == e.EduState()

    board.edu.restore(snap)
    assert board.cfg_read(0x10, 4) == BAR
    assert [board.r(r) for r in regs] == before
    assert board.edu.state == snap.edu and board.edu.state.dma_buffer is not snap.edu.dma_buffer
    assert bytes(board.edu.state.dma_buffer[:32]) == pattern(32, 5)
    assert board.line.level  # INTx re-derived from the restored level
    # the snapshot is a value: later changes do not leak into it
    board.w(e.REG_LIVENESS, 0)
    board.edu.state.dma_buffer[0] ^= 0xFF
    assert snap.edu.liveness == ~0x55 & 0xFFFF_FFFF
    assert snap.edu.dma_buffer[:32] == pattern(32, 5)
