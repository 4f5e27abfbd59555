"""A PCI DMA test device register-compatible with QEMU's educational ``edu`` device.

Why this device: it is the smallest PCI function that does everything "safe device assignment"
is about — bus-master DMA to an address the guest chooses, INTx and MSI — and guest programs,
drivers and tools written for QEMU's edu (docs/specs/edu.rst, hw/misc/edu.c) run on it
unchanged. kvmpy uses it to show the VT-d IOMMU blocking DMA (``firmware/tests/vtd.c``).

Identity: 1234:11e8, revision 0x10, class 0x00ff (base class 0x00, sub-class 0xff: "other"),
subsystem 1af4:1100 as every QEMU PCI device has; INTA#; an MSI capability (one vector, 64-bit
address, no masking) at 0x40. BAR0: 1 MiB of 32-bit non-prefetchable MMIO.

Registers (offsets in BAR0; edu.rst). Offsets below 0x80 take 4-byte accesses only, 0x80 and
above 4 or 8 bytes; other sizes are refused by the bus (``SIZES``), and in-range offsets that
name no register read all-ones and ignore writes, as QEMU's ``edu_mmio_read`` does.

====== ==== ==============================================================================
0x00   RO   identification 0x010000ed (major 1, minor 0)
0x04   RW   liveness check: reads the bitwise inverse of the last value written
0x08   RW   factorial: write n, read n! (mod 2^32) once STATUS bit 0 is clear
0x20   RW   status: bit 0 computing (RO), bit 7 raise interrupt 0x001 after a factorial
0x24   RO   interrupt status: the OR of the values that raised interrupts
0x60   WO   interrupt raise: OR the value into interrupt status and interrupt
0x64   WO   interrupt acknowledge: clear these bits; INTx drops once status reads 0
0x80   RW   DMA source address (64-bit; a 4-byte write sets the whole register)
0x88   RW   DMA destination address
0x90   RW   DMA count in bytes
0x98   RW   DMA command: bit 0 start, bit 1 direction (0 RAM -> device, 1 device -> RAM),
            bit 2 raise interrupt 0x100 when done; a write without bit 0 is ignored
====== ==== ==============================================================================

The device's 4 KiB buffer sits at *device* address 0x40000 (``DMA_BUFFER_ADDR``): the source
of a device -> RAM transfer and the destination of a RAM -> device transfer must lie within
[0x40000, 0x41000). Bus addresses are clamped with ``dma_mask`` (QEMU's ``dma_mask`` property,
28 bits by default), as QEMU's edu does.

Timing. QEMU computes the factorial on a thread and runs a DMA 100 ms (virtual) after the
command. Here both complete synchronously inside the MMIO write that starts them, so STATUS
bit 0 and command bit 0 never read 1; a driver that polls them or waits for the interrupt
works the same on both. (A factorial of n >= 34 is 0 mod 2^32, so even a huge n is cheap.)

Interrupts follow QEMU: a raise with MSI enabled sends one message per raise (whether or not
status was already non-zero); otherwise INTx is asserted while interrupt status is non-zero.
The guest must acknowledge (0x64) in both cases.

**kvmpy extension: DMA errors.** QEMU's edu has no error indication: a DMA outside its buffer
is only logged (and older versions abort), a DMA an IOMMU blocks silently moves nothing. A
guest must be able to tell, so:

- DMA command bit 31 (``DMA_CMD_ERROR``, read-only, cleared by the next start): the last
  transfer was *not performed* — its range fell outside the 4 KiB buffer, or the DmaSpace
  refused it (``DmaFault``: blocked by the IOMMU, outside RAM, bus mastering disabled). Nothing
  was written: neither the device buffer nor guest memory. The completion interrupt (command
  bit 2) is still raised, so an interrupt-driven driver learns of the failure.
- 0xA0 (RO, ``REG_DMA_ERRORS``): the number of failed transfers since reset, saturating at
  0xfffffffe — QEMU reads all-ones there, which is how a driver detects the extension.
- 0xA8 (RO, ``REG_DMA_ERROR_ADDR``): the address of the last failure: the bus address the
  DmaSpace reported, or for a range error the device address refused.

A transfer is issued as one DmaSpace access; whether a transfer spanning a permitted and a
blocked page writes the permitted part first is the DmaSpace's (the IOMMU's) business.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from kvmpy.errors import DmaFault

from .pci.config import BarKind, PciConfig
from .pci.function import PciFunction, PciFunctionState

log = logging.getLogger("kvmpy.edu")

# --- identity (QEMU hw/misc/edu.c: edu_class_init; hw/pci/pci.c subsystem defaults) -----------
EDU_VENDOR_ID = 0x1234  # PCI_VENDOR_ID_QEMU
EDU_DEVICE_ID = 0x11E8
EDU_REVISION = 0x10
EDU_CLASS = 0x00FF  # PCI_CLASS_OTHERS
EDU_SUBSYSTEM_VENDOR_ID = 0x1AF4  # PCI_SUBVENDOR_ID_REDHAT_QUMRANET
EDU_SUBSYSTEM_ID = 0x1100  # PCI_SUBDEVICE_ID_QEMU
EDU_MMIO_SIZE = 1 << 20
EDU_ID_VALUE = 0x010000ED
#: Access sizes BAR0 accepts (edu.c's MemoryRegionOps.valid: 4..8 bytes).
SIZES = (4, 8)

# --- registers (docs/specs/edu.rst) ----------------------------------------------------------
REG_ID = 0x00
REG_LIVENESS = 0x04
REG_FACTORIAL = 0x08
REG_STATUS = 0x20
REG_IRQ_STATUS = 0x24
REG_IRQ_RAISE = 0x60
REG_IRQ_ACK = 0x64
REG_DMA_SRC = 0x80
REG_DMA_DST = 0x88
REG_DMA_COUNT = 0x90
REG_DMA_CMD = 0x98
# kvmpy extension (see the module docstring)
REG_DMA_ERRORS = 0xA0
REG_DMA_ERROR_ADDR = 0xA8
#: Below this offset only 4-byte accesses reach a register; from here on 4 or 8.
WIDE_REGS_START = 0x80

STATUS_COMPUTING = 0x01
STATUS_IRQ_FACT = 0x80
FACT_IRQ = 0x0000_0001
DMA_IRQ = 0x0000_0100

DMA_CMD_RUN = 0x1
DMA_CMD_TO_RAM = 0x2  # direction: 0 = RAM -> device, 1 = device -> RAM
DMA_CMD_IRQ = 0x4
DMA_CMD_ERROR = 1 << 31  # kvmpy extension: the last transfer was not performed

DMA_BUFFER_ADDR = 0x40000
DMA_BUFFER_SIZE = 4096
#: QEMU's default ``dma_mask`` property: DMA bus addresses are clamped to 28 bits.
DEFAULT_DMA_MASK = (1 << 28) - 1
DMA_ERRORS_MAX = 0xFFFF_FFFE

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
#: The factorial is kept mod 2^32 (edu.c's uint32_t); 34! and above are multiples of 2^32.
_FACT_ZERO_FROM = 34


def factorial32(n: int) -> int:
    """n! mod 2^32, as edu.c's ``ret *= val--`` loop on uint32_t computes it."""
    n &= _M32
    if n >= _FACT_ZERO_FROM:
        return 0
    r = 1
    for k in range(2, n + 1):
        r = r * k & _M32
    return r


@dataclass
class EduState:
    """The device's guest-visible registers and its DMA buffer."""

    liveness: int = 0
    factorial: int = 0
    status: int = 0
    irq_status: int = 0
    dma_src: int = 0
    dma_dst: int = 0
    dma_count: int = 0
    dma_cmd: int = 0
    dma_buffer: bytearray = field(default_factory=lambda: bytearray(DMA_BUFFER_SIZE))
    dma_errors: int = 0
    dma_error_addr: int = 0

    def reset(self) -> None:
        self.restore(EduState())

    def snapshot(self) -> EduState:
        return copy.deepcopy(self)

    def restore(self, snap: EduState) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, copy.deepcopy(getattr(snap, name)))


@dataclass
class EduSnapshot(PciFunctionState):
    """Configuration bytes and INTx level (the function's) plus the edu registers."""

    edu: EduState = field(default_factory=EduState)


class Edu(PciFunction):
    """QEMU's edu device; see the module docstring for the registers and the error extension.

    The machine places it on a PciBus, which hands it its DmaSpace (guest RAM, or the IOMMU's
    view of its requester id) and routes INTx; MSI goes through ``msi_sender``."""

    SIZES = SIZES

    def __init__(self, *, dma_mask: int = DEFAULT_DMA_MASK, name: str = "edu") -> None:
        cfg = PciConfig(
            EDU_VENDOR_ID,
            EDU_DEVICE_ID,
            EDU_CLASS,
            revision=EDU_REVISION,
            subsystem_vendor_id=EDU_SUBSYSTEM_VENDOR_ID,
            subsystem_id=EDU_SUBSYSTEM_ID,
            interrupt_pin=1,
        )
        super().__init__(cfg, name)
        self.dma_mask = dma_mask & _M64
        self.state = EduState()
        cfg.add_bar(0, BarKind.MEM32, EDU_MMIO_SIZE, self, name="mmio", sizes=SIZES)
        self.add_msi(vectors=1, addr64=True)
        self._reads: dict[int, Callable[[], int]] = {
            REG_ID: lambda: EDU_ID_VALUE,
            REG_LIVENESS: lambda: self.state.liveness,
            REG_FACTORIAL: lambda: self.state.factorial,
            REG_STATUS: lambda: self.state.status,
            REG_IRQ_STATUS: lambda: self.state.irq_status,
            REG_DMA_SRC: lambda: self.state.dma_src,
            REG_DMA_DST: lambda: self.state.dma_dst,
            REG_DMA_COUNT: lambda: self.state.dma_count,
            REG_DMA_CMD: lambda: self.state.dma_cmd,
            REG_DMA_ERRORS: lambda: self.state.dma_errors,
            REG_DMA_ERROR_ADDR: lambda: self.state.dma_error_addr,
        }
        self._writes: dict[int, Callable[[int], None]] = {
            REG_LIVENESS: self._write_liveness,
            REG_FACTORIAL: self._write_factorial,
            REG_STATUS: self._write_status,
            REG_IRQ_RAISE: self._raise,
            REG_IRQ_ACK: self._lower,
            REG_DMA_SRC: self._write_src,
            REG_DMA_DST: self._write_dst,
            REG_DMA_COUNT: self._write_count,
            REG_DMA_CMD: self._write_cmd,
        }

    # -- BAR0 -----------------------------------------------------------------------------------
    @staticmethod
    def _size_ok(offset: int, size: int) -> bool:
        return size == 4 if offset < WIDE_REGS_START else size in (4, 8)

    def read(self, offset: int, size: int) -> int:
        """BAR0 read; unknown registers and refused widths read all-ones (edu.c's ``~0ULL``)."""
        ones = (1 << (8 * size)) - 1
        reg = self._reads.get(offset)
        if reg is None or not self._size_ok(offset, size):
            return ones
        return reg() & ones

    def write(self, offset: int, size: int, value: int) -> None:
        """BAR0 write; writes to unknown or read-only registers and refused widths are dropped."""
        reg = self._writes.get(offset)
        if reg is not None and self._size_ok(offset, size):
            reg(value & ((1 << (8 * size)) - 1))

    # -- registers ------------------------------------------------------------------------------
    def _write_liveness(self, value: int) -> None:
        self.state.liveness = ~value & _M32

    def _write_factorial(self, value: int) -> None:
        st = self.state
        if st.status & STATUS_COMPUTING:  # never true here (synchronous), kept for fidelity
            return
        st.factorial = factorial32(value)
        if st.status & STATUS_IRQ_FACT:
            self._raise(FACT_IRQ)

    def _write_status(self, value: int) -> None:
        st = self.state
        st.status = (st.status & ~STATUS_IRQ_FACT) | (value & STATUS_IRQ_FACT)

    def _write_src(self, value: int) -> None:
        self.state.dma_src = value

    def _write_dst(self, value: int) -> None:
        self.state.dma_dst = value

    def _write_count(self, value: int) -> None:
        self.state.dma_count = value

    def _write_cmd(self, value: int) -> None:
        if not value & DMA_CMD_RUN:
            return  # edu.c: a command write without the start bit changes nothing
        self.state.dma_cmd = value & ~DMA_CMD_ERROR
        self._run_dma()

    # -- interrupts (edu.c: edu_raise_irq / edu_lower_irq) --------------------------------------
    def _msi_on(self) -> bool:
        msi = self.config.msi
        return msi is not None and msi.enabled

    def _raise(self, value: int) -> None:
        st = self.state
        st.irq_status = (st.irq_status | value) & _M32
        if not st.irq_status:
            return
        if self._msi_on():
            self.msi_notify(0)
        else:
            self.set_irq(True)

    def _lower(self, value: int) -> None:
        st = self.state
        st.irq_status &= ~value & _M32
        if not st.irq_status and not self._msi_on():
            self.set_irq(False)

    # -- DMA ------------------------------------------------------------------------------------
    def _buffer_range(self, dev_addr: int, count: int) -> tuple[int, int] | None:
        """Offsets [start, end) in the buffer for a transfer at device address ``dev_addr``."""
        start = dev_addr - DMA_BUFFER_ADDR
        if start < 0 or count < 0 or start + count > DMA_BUFFER_SIZE:
            return None
        return start, start + count

    def _run_dma(self) -> None:
        st = self.state
        count = st.dma_count
        to_ram = bool(st.dma_cmd & DMA_CMD_TO_RAM)
        dev_addr = st.dma_src if to_ram else st.dma_dst
        bus_addr = (st.dma_dst if to_ram else st.dma_src) & self.dma_mask
        rng = self._buffer_range(dev_addr, count)
        if rng is None:
            self._dma_failed(dev_addr, f"device range {dev_addr:#x}+{count:#x} outside the buffer")
        else:
            lo, hi = rng
            try:
                if to_ram:
                    self.dma.write(bus_addr, bytes(st.dma_buffer[lo:hi]))
                else:
                    data = self.dma.read(bus_addr, count)
                    st.dma_buffer[lo:hi] = data
            except DmaFault as e:
                self._dma_failed(e.addr, str(e))
        st.dma_cmd &= ~DMA_CMD_RUN
        if st.dma_cmd & DMA_CMD_IRQ:
            self._raise(DMA_IRQ)

    def _dma_failed(self, addr: int, why: str) -> None:
        st = self.state
        st.dma_cmd |= DMA_CMD_ERROR
        st.dma_errors = min(st.dma_errors + 1, DMA_ERRORS_MAX)
        st.dma_error_addr = addr & _M64
        log.debug("%s %s: DMA not performed: %s", self.name, self.bdf, why)

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Registers, buffer and counters back to zero; configuration to its reset image."""
        self.state.reset()
        super().reset()

    def snapshot(self) -> EduSnapshot:
        return EduSnapshot(self.config.snapshot(), self.irq_level, self.state.snapshot())

    def restore(self, snap: PciFunctionState) -> None:
        if isinstance(snap, EduSnapshot):
            self.state.restore(snap.edu)
        super().restore(snap)
