"""A host PCI function passed through to the guest: ``VfioPciDevice``, and ``Passthrough`` which
opens, wires and closes one.

**What the guest sees.** The PCI bus places a ``VfioPciDevice`` like any ``PciFunction``. Its
configuration space is the physical device's, read and written through the VFIO config region,
except for the parts the VMM must own (QEMU's ``emulated_config_bits`` idea, hw/vfio/pci.c):

* the BARs and the ROM BAR live in a shadow ``PciConfig`` with the sizes VFIO reports, so sizing
  and the guest-programmed addresses are ours (vfio-pci virtualises them anyway: the device keeps
  the host's addresses); COMMAND is kept in the shadow for decoding *and* forwarded, since the
  device must decode its host BARs for the mmaps to reach it;
* the MSI and MSI-X capability bodies are emulated: the guest's address/data never reach the
  device (vfio-pci would not use them) but become KVM MSI routes; the enable bits become
  VFIO_DEVICE_SET_IRQS calls;
* INTERRUPT_LINE is shadowed, INTERRUPT_PIN is the device's (0 when VFIO offers no INTx).

Everything else (IDs, STATUS, other capabilities, device-specific registers) is the device's.
Extended configuration space (0x100+) reads zero: the guest's bus is conventional PCI.

**BARs.** A memory BAR VFIO lets us mmap, of at least a page, becomes KVM memslots at the address
the guest programs, moving when the guest moves it; the pages holding the MSI-X table and PBA
(and whatever the sparse-mmap capability leaves out) are trapped as MMIO instead — the table is
emulated, the PBA read from the device with the vectors we hold pending added, the rest
forwarded with pread/pwrite. BARs that cannot be mmapped and I/O BARs are forwarded whole.

**Interrupts.** INTx: VFIO signals an eventfd and masks the line (AUTOMASKED); KVM's irqfd with
a resample eventfd injects it and, on the guest's EOI, signals the resample fd, which VFIO takes
as its unmask — the whole level-triggered cycle without an exit. The GSI is where the board
routes this function's INTx pin (PIIX3 PIRQ routing): the machine tells us with
``set_intx_gsi``. MSI and MSI-X: one eventfd per vector given to VFIO, each bound with irqfd to
a GSI whose MSI route carries the guest's message. A masked vector has its irqfd removed; what
the device signals meanwhile stays counted in the eventfd, and re-binding on unmask delivers it
(KVM_IRQFD checks an already signalled eventfd), which is the pending-bit semantics.

**KVM is reached only through ``PassthroughHost``**, which the machine implements over kvm.py.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kvmpy.devices.pci import BarKind, PciConfig, PciFunction
from kvmpy.devices.pci.config import (
    BAR0,
    CAP_ID_MSI,
    CAP_ID_MSIX,
    CAPABILITY_LIST,
    CLASS_DEVICE,
    CLASS_PROG,
    CMD_IO,
    CMD_MEMORY,
    COMMAND,
    DEVICE_ID,
    HEADER_TYPE,
    HEADER_TYPE_NORMAL,
    INTERRUPT_LINE,
    INTERRUPT_PIN,
    PCI_CONFIG_SPACE_SIZE,
    REVISION_ID,
    ROM_ADDRESS,
    SUBSYSTEM_ID,
    SUBSYSTEM_VENDOR_ID,
    VENDOR_ID,
    MsiCapability,
)
from kvmpy.errors import KvmpyError

from .vfio import (
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_ROM_REGION_INDEX,
    MappedArea,
    RealVfioBackend,
    RegionInfo,
    VfioBackend,
    VfioContainer,
    VfioDevice,
    VfioError,
    VfioUnavailableError,
    host_support,
    iommu_group_of,
    parse_bdf,
)

log = logging.getLogger("kvmpy.vfio")

#: Memslots and VFIO mmaps work in host pages.
PAGE_SIZE = mmap.PAGESIZE
#: COMMAND bits 0-10 (PCI 3.0, 6.2.2): all of them are the guest's to set.
CMD_WMASK = 0x07FF
# MSI-X capability (PCI 3.0, 6.8.2): Message Control, Table Offset/BIR, PBA Offset/BIR
MSIX_CAP_LENGTH = 12
MSIX_CTRL_ENABLE = 0x8000
MSIX_CTRL_FUNCTION_MASK = 0x4000
MSIX_CTRL_TABLE_SIZE = 0x07FF
MSIX_BIR_MASK = 0x7
MSIX_ENTRY_SIZE = 16  # 6.8.2.6: address low, address high, data, vector control
MSIX_ENTRY_VECTOR_CTRL = 12
MSIX_VECTOR_MASKED = 0x1
# Shadow byte kinds: where a configuration byte lives
_DEVICE, _SHADOW, _BOTH = 0, 1, 2


class PassthroughHost(Protocol):
    """What a passed-through device needs from KVM; the machine implements it in kvm.py terms.

    Handles and GSIs are the host's to choose; every method may raise a ``KvmpyError``."""

    def add_memslot(self, gpa: int, size: int, host_addr: int) -> object:
        """KVM_SET_USER_MEMORY_REGION on a free slot mapping ``host_addr`` (a device mmap)."""

    def remove_memslot(self, handle: object) -> None:
        """The slot back to size 0, and free."""

    def irqfd(self, fd: int, gsi: int, resample_fd: int | None = None) -> None:
        """KVM_IRQFD; with ``resample_fd``, KVM_IRQFD_FLAG_RESAMPLE (level-triggered INTx)."""

    def remove_irqfd(self, fd: int, gsi: int) -> None:
        """KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN."""

    def add_msi_route(self, address: int, data: int) -> int:
        """A new GSI routed (KVM_SET_GSI_ROUTING, KVM_IRQ_ROUTING_MSI) to this message."""

    def update_msi_route(self, gsi: int, address: int, data: int) -> None:
        """Point an existing MSI route at a new message (the whole table is set again)."""

    def remove_route(self, gsi: int) -> None:
        """Drop a GSI added by ``add_msi_route``."""

    def attach_vfio_group(self, group_fd: int) -> None:
        """KVM_DEV_VFIO_GROUP_ADD on the VM's KVM_DEV_TYPE_VFIO device (created on first use)."""

    def detach_vfio_group(self, group_fd: int) -> None:
        """KVM_DEV_VFIO_GROUP_DEL."""


def _new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def _eventfd_take(fd: int) -> bool:
    """Whether the eventfd was signalled, clearing it (non-blocking)."""
    try:
        return os.eventfd_read(fd) > 0
    except BlockingIOError:
        return False


def _subtract(spans: Iterable[tuple[int, int]], holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open (start, end) spans minus holes."""
    out = sorted(spans)
    for hs, he in holes:
        out = [p for a, b in out for p in ((a, min(b, hs)), (max(a, he), b)) if p[0] < p[1]]
    return out


def _page_span(start: int, end: int) -> tuple[int, int]:
    return start & ~(PAGE_SIZE - 1), (end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass
class BarPiece:
    """A part of a memory BAR: mmapped (a memslot when mapped) or trapped (MMIO, forwarded)."""

    offset: int
    size: int
    mmap: bool
    area: MappedArea | None = None
    slot: object | None = None


@dataclass
class _Vector:
    """One MSI/MSI-X vector: the eventfd VFIO signals, its KVM route and binding."""

    fd: int
    gsi: int | None = None
    bound: bool = False
    pending: bool = False
    message: tuple[int, int] = (0, 0)


@dataclass
class MsixLayout:
    """Where the MSI-X capability says the table and PBA are."""

    cap: int
    size: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int

    @property
    def table_end(self) -> int:
        return self.table_offset + self.size * MSIX_ENTRY_SIZE

    @property
    def pba_end(self) -> int:
        return self.pba_offset + ((self.size + 63) // 64) * 8


class _Forward:
    """A BAR range the bus maps as MMIO or PIO; accesses go back to the function."""

    SIZES = (1, 2, 4, 8)

    def __init__(self, fn: VfioPciDevice, index: int, base: int) -> None:
        self.fn, self.index, self.base = fn, index, base

    def read(self, offset: int, size: int) -> int:
        return self.fn.bar_read(self.index, self.base + offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.fn.bar_write(self.index, self.base + offset, size, value)


class VfioPciDevice(PciFunction):
    """See the module docstring. Built from an open ``VfioDevice`` (reset already, if it can be)."""

    def __init__(self, device: VfioDevice, host: PassthroughHost, name: str | None = None) -> None:
        self.device = device
        self.host = host
        cfg_region = device.region(VFIO_PCI_CONFIG_REGION_INDEX)
        if cfg_region is None:
            raise VfioUnavailableError(f"{device.bdf} has no configuration region")
        raw = device.read(VFIO_PCI_CONFIG_REGION_INDEX, 0, PCI_CONFIG_SPACE_SIZE)
        self._raw = raw

        def g(off: int, width: int) -> int:
            return int.from_bytes(raw[off : off + width], "little")

        if raw[HEADER_TYPE] & 0x7F != HEADER_TYPE_NORMAL:
            raise VfioUnavailableError(f"{device.bdf} is a bridge (header type {raw[HEADER_TYPE] & 0x7F}); "
                                       "only endpoint functions can be passed through")
        pin = raw[INTERRUPT_PIN] if device.irq_count(VFIO_PCI_INTX_IRQ_INDEX) else 0
        shadow = PciConfig(
            g(VENDOR_ID, 2), g(DEVICE_ID, 2), g(CLASS_DEVICE, 2), prog_if=raw[CLASS_PROG],
            revision=raw[REVISION_ID], subsystem_vendor_id=g(SUBSYSTEM_VENDOR_ID, 2),
            subsystem_id=g(SUBSYSTEM_ID, 2), interrupt_pin=pin if pin <= 4 else 0, command_wmask=CMD_WMASK,
        )
        super().__init__(shadow, name or f"vfio-{device.bdf}")
        self._where = bytearray(PCI_CONFIG_SPACE_SIZE)  # _DEVICE everywhere to start with
        self._mark(COMMAND, 2, _BOTH)
        self._mark(INTERRUPT_LINE, 2, _SHADOW)
        self._mark(BAR0, 24, _SHADOW)
        self._mark(ROM_ADDRESS, 4, _SHADOW)
        self._pieces: dict[int, list[BarPiece]] = {}
        self._traps: dict[int, list[str]] = {}
        self._warned_io: set[str] = set()
        self.msix: MsixLayout | None = None
        self._find_capabilities(raw)
        self._declare_bars(raw)
        self._declare_rom()
        # interrupts
        self._msi_vectors: list[_Vector] = []
        self._msix_vectors: list[_Vector] = []
        self._msix_table = bytearray()
        self._reset_msix_table()
        self._intx_fds: tuple[int, int] | None = None  # (trigger, resample)
        self._intx_gsi: int | None = None
        self._intx_bound = False
        self._intx_enabled = False
        self._closed = False
        self._intx_setup()

    # -- construction --------------------------------------------------------------------------
    def _mark(self, offset: int, width: int, kind: int) -> None:
        self._where[offset : offset + width] = bytes([kind]) * width

    def _find_capabilities(self, raw: bytes) -> None:
        seen: set[int] = set()
        ptr = raw[CAPABILITY_LIST] & ~3
        while 0x40 <= ptr < PCI_CONFIG_SPACE_SIZE and ptr not in seen:
            seen.add(ptr)
            cap_id, count = raw[ptr], self.device.irq_count
            if cap_id == CAP_ID_MSI and self.config.msi is None and count(VFIO_PCI_MSI_IRQ_INDEX):
                self._declare_msi(ptr, int.from_bytes(raw[ptr + 2 : ptr + 4], "little"))
            elif cap_id == CAP_ID_MSIX and self.msix is None and count(VFIO_PCI_MSIX_IRQ_INDEX):
                self._declare_msix(ptr, raw)
            ptr = raw[ptr + 1] & ~3

    def _declare_msi(self, ptr: int, ctrl: int) -> None:
        vectors = 1 << min((ctrl >> MsiCapability.CTRL_MMC_SHIFT) & 7, 5)
        vectors = min(vectors, 1 << (self.device.irq_count(VFIO_PCI_MSI_IRQ_INDEX).bit_length() - 1))
        msi = self.config.add_msi(
            self._msi_message_dropped, vectors=vectors, addr64=bool(ctrl & MsiCapability.CTRL_64BIT),
            per_vector_mask=bool(ctrl & MsiCapability.CTRL_MASKBIT), offset=ptr,
        )
        length = self.config.capabilities[ptr][1]
        self._mark(ptr + 2, length - 2, _SHADOW)
        self.config.on_write(ptr, length, self._msi_written)
        if msi.per_vector_mask:
            self.config.on_read(msi.pending_off, 4, self._msi_pending_read)

    def _declare_msix(self, ptr: int, raw: bytes) -> None:
        ctrl = int.from_bytes(raw[ptr + 2 : ptr + 4], "little")
        table = int.from_bytes(raw[ptr + 4 : ptr + 8], "little")
        pba = int.from_bytes(raw[ptr + 8 : ptr + 12], "little")
        size = min((ctrl & MSIX_CTRL_TABLE_SIZE) + 1, self.device.irq_count(VFIO_PCI_MSIX_IRQ_INDEX))
        self.msix = MsixLayout(ptr, size, table & MSIX_BIR_MASK, table & ~MSIX_BIR_MASK,
                               pba & MSIX_BIR_MASK, pba & ~MSIX_BIR_MASK)
        cfg = self.config
        cfg.add_capability(CAP_ID_MSIX, MSIX_CAP_LENGTH, offset=ptr)
        cfg.declare(ptr + 2, 2, ctrl & MSIX_CTRL_TABLE_SIZE, wmask=MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK)
        cfg.declare(ptr + 4, 4, table)
        cfg.declare(ptr + 8, 4, pba)
        self._mark(ptr + 2, MSIX_CAP_LENGTH - 2, _SHADOW)
        cfg.on_write(ptr + 2, 2, self._msix_ctrl_written)

    def _declare_bars(self, raw: bytes) -> None:
        skip = False
        for i in range(6):
            if skip:
                skip = False
                continue
            region = self.device.region(i)
            if region is None:
                continue
            reg = int.from_bytes(raw[BAR0 + 4 * i : BAR0 + 4 * i + 4], "little")
            size = 1 << (region.size - 1).bit_length()  # BAR sizes are powers of two already
            if reg & 1:
                self.config.add_bar(i, BarKind.IO, max(size, 4), _Forward(self, i, 0), name=f"bar{i}",
                                    sizes=(1, 2, 4))
                continue
            kind = BarKind.MEM64 if (reg >> 1) & 3 == 2 and i < 5 else BarKind.MEM32
            skip = kind is BarKind.MEM64
            size = max(size, 16)
            pieces = self._bar_pieces(i, region, size)
            if any(p.mmap for p in pieces):
                self._pieces[i] = pieces
                self.config.add_bar(i, kind, size, None, prefetchable=bool(reg & 8), name=f"bar{i}",
                                    on_map=lambda base, i=i: self._bar_mapped(i, base))
            else:
                self.config.add_bar(i, kind, size, _Forward(self, i, 0), prefetchable=bool(reg & 8),
                                    name=f"bar{i}", sizes=_Forward.SIZES)

    def _bar_pieces(self, index: int, region: RegionInfo, size: int) -> list[BarPiece]:
        """Split a memory BAR into mmapped pages and trapped ranges."""
        if region.size < PAGE_SIZE or not region.mappable:
            return [BarPiece(0, size, False)]
        mapped = []
        for off, length in region.mmap_areas():
            a, b = (off + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), (off + length) & ~(PAGE_SIZE - 1)
            if a < b:
                mapped.append((a, min(b, region.size)))
        holes = []
        m = self.msix
        if m is not None:  # the table must be seen to be emulated, mappable or not; PBA too
            if m.table_bar == index:
                holes.append(_page_span(m.table_offset, m.table_end))
            if m.pba_bar == index:
                holes.append(_page_span(m.pba_offset, m.pba_end))
        mapped = _subtract(mapped, holes)
        trapped = _subtract([(0, size)], mapped)
        pieces = [BarPiece(a, b - a, True) for a, b in mapped]
        pieces += [BarPiece(a, b - a, False) for a, b in trapped]
        return sorted(pieces, key=lambda p: p.offset)

    def _declare_rom(self) -> None:
        """The expansion ROM as the device has it, read once; hidden when it has none that reads
        back as a ROM image (0x55 0xAA), as many devices do."""
        region = self.device.region(VFIO_PCI_ROM_REGION_INDEX)
        if region is None or not region.readable:
            return
        try:
            content = self.device.read(VFIO_PCI_ROM_REGION_INDEX, 0, region.size)
        except VfioError as e:
            log.info("%s: expansion ROM hidden: %s", self.device.bdf, e)
            return
        if content[:2] != b"\x55\xaa":
            log.info("%s: expansion ROM hidden: no ROM signature", self.device.bdf)
            return
        size = max(1 << (region.size - 1).bit_length(), 2048)
        if size > 1 << 24:
            log.info("%s: expansion ROM of %d bytes hidden: too large", self.device.bdf, size)
            return
        self.config.set_rom(content, size=size, name="rom")

    # -- configuration space ---------------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        if size not in (1, 2, 4) or offset < 0 or offset + size > PCI_CONFIG_SPACE_SIZE:
            return self.config.read(offset, size)
        where = self._where[offset : offset + size]
        if all(where):
            return self.config.read(offset, size)
        try:
            dev = self.device.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size)
        except VfioError as e:
            self._io_failed("config read", e)
            return (1 << (8 * size)) - 1
        if not any(where):
            return int.from_bytes(dev, "little")
        shadow = self.config.read(offset, size).to_bytes(size, "little")
        merged = bytes(s if w else d for s, d, w in zip(shadow, dev, where, strict=True))
        return int.from_bytes(merged, "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or offset < 0 or offset + size > PCI_CONFIG_SPACE_SIZE:
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        where = self._where[offset : offset + size]
        shadowed = any(where)
        if shadowed and self._stops_decoding(offset, data):
            # memslots go before the device stops decoding: vfio-pci revokes its mmaps then
            self.config.write(offset, size, value)
            shadowed = False
        i = 0
        while i < size:  # forward the device's bytes in runs
            if where[i] == _SHADOW:
                i += 1
                continue
            j = i
            while j < size and where[j] != _SHADOW:
                j += 1
            try:
                self.device.write(VFIO_PCI_CONFIG_REGION_INDEX, offset + i, data[i:j])
            except VfioError as e:
                self._io_failed("config write", e)
            i = j
        if shadowed:
            self.config.write(offset, size, value)

    def _stops_decoding(self, offset: int, data: bytes) -> bool:
        if not offset <= COMMAND < offset + len(data):
            return False
        new = data[COMMAND - offset]
        return bool(self.config.command & ~new & (CMD_MEMORY | CMD_IO))

    # -- BARs ---------------------------------------------------------------------------------------
    def _bar_mapped(self, index: int, base: int | None) -> None:
        """The bus moved (or unmapped) a memslot-backed BAR: memslots and trap windows follow."""
        bus = self.bus
        for p in self._pieces[index]:
            if p.slot is not None:
                try:
                    self.host.remove_memslot(p.slot)
                except KvmpyError as e:
                    log.warning("%s: removing BAR%d memslot: %s", self.name, index, e)
                p.slot = None
        if bus is not None:
            for key in self._traps.pop(index, []):
                bus.map_window(self, key, "mem", None, 0, None, name=key)
        if base is None:
            return
        keys = []
        for p in self._pieces[index]:
            if p.mmap:
                try:
                    if p.area is None:
                        p.area = self.device.mmap(index, p.offset, p.size)
                    p.slot = self.host.add_memslot(base + p.offset, p.size, p.area.addr)
                except KvmpyError as e:
                    log.warning("%s: BAR%d at %#x not mapped: %s", self.name, index, base + p.offset, e)
            elif bus is not None:
                key = f"bar{index}+{p.offset:#x}"
                bus.map_window(self, key, "mem", base + p.offset, p.size, _Forward(self, index, p.offset),
                               name=f"{self.name}.{key}", sizes=_Forward.SIZES)
                keys.append(key)
        self._traps[index] = keys

    def bar_read(self, index: int, offset: int, size: int) -> int:
        """A trapped access: MSI-X table and PBA emulated, everything else from the device."""
        m = self.msix
        if m is not None:
            if m.table_bar == index and m.table_offset <= offset < m.table_end:
                return self._msix_table_read(offset - m.table_offset, size)
            if m.pba_bar == index and m.pba_offset <= offset < m.pba_end:
                return self._msix_pba_read(offset - m.pba_offset, size)
        try:
            return int.from_bytes(self.device.read(index, offset, size), "little")
        except VfioError as e:
            self._io_failed(f"BAR{index} read", e)
            return (1 << (8 * size)) - 1

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        m = self.msix
        if m is not None:
            if m.table_bar == index and m.table_offset <= offset < m.table_end:
                self._msix_table_write(offset - m.table_offset, size, value)
                return
            if m.pba_bar == index and m.pba_offset <= offset < m.pba_end:
                return  # the PBA is read-only (PCI 3.0, 6.8.2.10)
        try:
            self.device.write(index, offset, value.to_bytes(size, "little"))
        except VfioError as e:
            self._io_failed(f"BAR{index} write", e)

    def _io_failed(self, what: str, e: VfioError) -> None:
        if what not in self._warned_io:
            self._warned_io.add(what)
            log.warning("%s: %s failed (further failures not logged): %s", self.name, what, e)

    # -- INTx -----------------------------------------------------------------------------------------
    def _intx_setup(self) -> None:
        if not self.config.interrupt_pin:
            return
        self._intx_fds = (_new_eventfd(), _new_eventfd())
        self._intx_enable()

    def _intx_enable(self) -> None:
        if self._intx_fds is None or self._intx_enabled:
            return
        self.device.irq_trigger(VFIO_PCI_INTX_IRQ_INDEX, [self._intx_fds[0]])
        self._intx_enabled = True
        self._intx_bind()

    def _intx_disable(self) -> None:
        if not self._intx_enabled:
            return
        self._intx_unbind()
        self.device.irq_disable(VFIO_PCI_INTX_IRQ_INDEX)
        self._intx_enabled = False

    def _intx_bind(self) -> None:
        """QEMU's order (vfio_intx_enable_kvm): mask, irqfd with resample, unmask eventfd, unmask."""
        if self._intx_fds is None or not self._intx_enabled or self._intx_gsi is None or self._intx_bound:
            return
        trigger, resample = self._intx_fds
        dev = self.device
        dev.irq_mask(VFIO_PCI_INTX_IRQ_INDEX)
        self.host.irqfd(trigger, self._intx_gsi, resample_fd=resample)
        self._intx_bound = True
        dev.irq_unmask_fd(VFIO_PCI_INTX_IRQ_INDEX, resample)
        dev.irq_unmask(VFIO_PCI_INTX_IRQ_INDEX)

    def _intx_unbind(self) -> None:
        if not self._intx_bound or self._intx_fds is None or self._intx_gsi is None:
            return
        dev = self.device
        dev.irq_mask(VFIO_PCI_INTX_IRQ_INDEX)
        self.host.remove_irqfd(self._intx_fds[0], self._intx_gsi)
        self._intx_bound = False
        dev.irq_unmask(VFIO_PCI_INTX_IRQ_INDEX)

    def set_intx_gsi(self, gsi: int | None) -> None:
        """Where the board routes this function's INTx pin now (None: nowhere). The machine
        calls it at start and whenever the guest reprograms the PIRQ router."""
        if gsi == self._intx_gsi:
            return
        self._intx_unbind()
        self._intx_gsi = gsi
        self._intx_bind()

    @property
    def intx_gsi(self) -> int | None:
        return self._intx_gsi

    @property
    def intx_eventfds(self) -> tuple[int, int] | None:
        """(trigger, resample) eventfds of INTx, None without a pin."""
        return self._intx_fds

    # -- MSI ------------------------------------------------------------------------------------------
    def _msi_message_dropped(self, address: int, data: int) -> None:
        """MsiCapability's sender: never used, the device signals through VFIO eventfds."""

    def _msi_written(self, offset: int, size: int, value: int) -> None:
        msi = self.config.msi
        assert msi is not None
        if msi.enabled and not self._msi_vectors:
            self._msi_enable()
        elif not msi.enabled and self._msi_vectors:
            self._msi_disable()
        elif self._msi_vectors:
            if len(self._msi_vectors) != msi.enabled_vectors:
                self._msi_disable()
                self._msi_enable()
            else:
                for v in range(len(self._msi_vectors)):
                    self._msi_sync(v)

    def _msi_enable(self) -> None:
        msi = self.config.msi
        assert msi is not None
        self._intx_disable()  # PCI 3.0, 6.8: a function with MSI enabled does not use INTx
        self._msi_vectors = [_Vector(_new_eventfd()) for _ in range(msi.enabled_vectors)]
        for v in range(len(self._msi_vectors)):
            self._msi_sync(v)
        try:
            self.device.irq_trigger(VFIO_PCI_MSI_IRQ_INDEX, [v.fd for v in self._msi_vectors])
        except VfioError as e:
            log.warning("%s: enabling MSI failed: %s", self.name, e)

    def _msi_sync(self, v: int) -> None:
        msi = self.config.msi
        assert msi is not None
        self._vector_sync(self._msi_vectors[v], msi.message(v), not msi.masked(v))

    def _msi_disable(self) -> None:
        try:
            self.device.irq_disable(VFIO_PCI_MSI_IRQ_INDEX)
        except VfioError as e:
            log.warning("%s: disabling MSI failed: %s", self.name, e)
        self._release(self._msi_vectors)
        self._msi_vectors = []
        self._intx_enable()

    def _msi_pending_read(self, offset: int, size: int) -> None:
        msi = self.config.msi
        assert msi is not None
        pend = 0
        for n, vec in enumerate(self._msi_vectors):
            if not vec.bound and (vec.pending or _eventfd_take(vec.fd)):
                vec.pending = True
                pend |= 1 << n
        self.config.set(msi.pending_off, 4, pend)

    # -- MSI-X ----------------------------------------------------------------------------------------
    def _reset_msix_table(self) -> None:
        m = self.msix
        self._msix_table = bytearray((m.size if m else 0) * MSIX_ENTRY_SIZE)
        for v in range(m.size if m else 0):  # every vector masked at reset (6.8.2.9)
            self._msix_table[v * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CTRL] = MSIX_VECTOR_MASKED

    @property
    def _msix_ctrl(self) -> int:
        assert self.msix is not None
        return self.config.get(self.msix.cap + 2, 2)

    def _msix_entry(self, v: int) -> tuple[tuple[int, int], bool]:
        """(address, data) and whether the vector is masked (itself or by the function mask)."""
        t, o = self._msix_table, v * MSIX_ENTRY_SIZE
        addr = int.from_bytes(t[o : o + 8], "little")
        data = int.from_bytes(t[o + 8 : o + 12], "little")
        masked = bool(t[o + MSIX_ENTRY_VECTOR_CTRL] & MSIX_VECTOR_MASKED) or bool(
            self._msix_ctrl & MSIX_CTRL_FUNCTION_MASK
        )
        return (addr, data), masked

    def _msix_ctrl_written(self, offset: int, size: int, value: int) -> None:
        enabled = bool(self._msix_ctrl & MSIX_CTRL_ENABLE)
        if enabled and not self._msix_vectors:
            self._msix_enable()
        elif not enabled and self._msix_vectors:
            self._msix_disable()
        else:
            self._msix_sync_all()

    def _msix_enable(self) -> None:
        """Every vector gets its eventfd at once: that works whether or not VFIO lets an enabled
        index grow (NORESIZE), and the guest's masks decide what reaches it."""
        assert self.msix is not None
        self._intx_disable()
        self._msix_vectors = [_Vector(_new_eventfd()) for _ in range(self.msix.size)]
        try:
            self.device.irq_trigger(VFIO_PCI_MSIX_IRQ_INDEX, [v.fd for v in self._msix_vectors])
        except VfioError as e:
            log.warning("%s: enabling MSI-X failed: %s", self.name, e)
        self._msix_sync_all()

    def _msix_sync_all(self) -> None:
        for v in range(len(self._msix_vectors)):
            message, masked = self._msix_entry(v)
            self._vector_sync(self._msix_vectors[v], message, not masked)

    def _msix_disable(self) -> None:
        try:
            self.device.irq_disable(VFIO_PCI_MSIX_IRQ_INDEX)
        except VfioError as e:
            log.warning("%s: disabling MSI-X failed: %s", self.name, e)
        self._release(self._msix_vectors)
        self._msix_vectors = []
        self._intx_enable()

    def _msix_table_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self._msix_table[offset : offset + size].ljust(size, b"\0"), "little")

    def _msix_table_write(self, offset: int, size: int, value: int) -> None:
        t = self._msix_table
        data = value.to_bytes(size, "little")
        for i, b in enumerate(data):
            o = offset + i
            if o >= len(t):
                break
            if o % MSIX_ENTRY_SIZE >= MSIX_ENTRY_VECTOR_CTRL:  # only the mask bit is writable
                if o % MSIX_ENTRY_SIZE == MSIX_ENTRY_VECTOR_CTRL:
                    t[o] = (t[o] & ~MSIX_VECTOR_MASKED) | (b & MSIX_VECTOR_MASKED)
                continue
            t[o] = b
        if self._msix_vectors:
            first, last = offset // MSIX_ENTRY_SIZE, (offset + size - 1) // MSIX_ENTRY_SIZE
            for v in range(first, min(last + 1, len(self._msix_vectors))):
                message, masked = self._msix_entry(v)
                self._vector_sync(self._msix_vectors[v], message, not masked)

    def _msix_pba_read(self, offset: int, size: int) -> int:
        m = self.msix
        assert m is not None
        try:
            phys = int.from_bytes(self.device.read(m.pba_bar, m.pba_offset + offset, size), "little")
        except VfioError as e:
            self._io_failed("MSI-X PBA read", e)
            phys = 0
        soft = 0
        for bit in range(8 * size):
            v = offset * 8 + bit
            if v >= len(self._msix_vectors):
                break
            vec = self._msix_vectors[v]
            if not vec.bound and (vec.pending or _eventfd_take(vec.fd)):
                vec.pending = True
                soft |= 1 << bit
        return phys | soft

    # -- vectors (shared by MSI and MSI-X) ----------------------------------------------------------
    def _vector_sync(self, vec: _Vector, message: tuple[int, int], deliver: bool) -> None:
        """Bring one vector's KVM route and irqfd in line with the guest's message and mask."""
        try:
            if deliver:
                if vec.gsi is None:
                    vec.gsi = self.host.add_msi_route(*message)
                elif message != vec.message:
                    self.host.update_msi_route(vec.gsi, *message)
                vec.message = message
                if not vec.bound:
                    if vec.pending:  # re-signal: binding an already signalled eventfd injects it
                        os.eventfd_write(vec.fd, 1)
                        vec.pending = False
                    self.host.irqfd(vec.fd, vec.gsi)
                    vec.bound = True
            elif vec.bound:
                assert vec.gsi is not None
                self.host.remove_irqfd(vec.fd, vec.gsi)
                vec.bound = False
        except KvmpyError as e:
            log.warning("%s: interrupt vector not routed: %s", self.name, e)

    def _release(self, vectors: Sequence[_Vector]) -> None:
        for vec in vectors:
            try:
                if vec.bound and vec.gsi is not None:
                    self.host.remove_irqfd(vec.fd, vec.gsi)
                if vec.gsi is not None:
                    self.host.remove_route(vec.gsi)
            except KvmpyError as e:
                log.warning("%s: releasing vector: %s", self.name, e)
            os.close(vec.fd)

    # -- state ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A machine reset: interrupts off, the physical function reset, configuration back to
        its reset image (BARs unmapped), INTx on again."""
        if self._msix_vectors:
            self._msix_disable()
        if self._msi_vectors:
            self._msi_disable()
        self._intx_disable()  # QEMU's vfio_pci_pre_reset: no interrupt set-up across the reset
        try:
            self.device.reset()
        except VfioError as e:
            log.warning("%s: device reset failed: %s", self.name, e)
        self._reset_msix_table()
        super().reset()
        self._intx_enable()

    def snapshot(self) -> object:
        raise VfioUnavailableError(f"{self.name} cannot be snapshotted: a passed-through device's state "
                                   "lives in the physical device")

    def restore(self, snap: object) -> None:
        raise VfioUnavailableError(f"{self.name} cannot be restored: a passed-through device's state "
                                   "lives in the physical device")

    def close(self) -> None:
        """Interrupts off, memslots and mmaps gone, device fd closed; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for vectors, index in ((self._msix_vectors, VFIO_PCI_MSIX_IRQ_INDEX),
                               (self._msi_vectors, VFIO_PCI_MSI_IRQ_INDEX)):
            if vectors:
                try:
                    self.device.irq_disable(index)
                except VfioError as e:
                    log.warning("%s: %s", self.name, e)
                self._release(vectors)
        self._msix_vectors, self._msi_vectors = [], []
        try:
            self._intx_disable()
        except KvmpyError as e:
            log.warning("%s: %s", self.name, e)
        if self._intx_fds is not None:
            for fd in self._intx_fds:
                os.close(fd)
            self._intx_fds = None
        for index, pieces in self._pieces.items():
            bus = self.bus
            if bus is not None:
                for key in self._traps.pop(index, []):
                    bus.map_window(self, key, "mem", None, 0, None, name=key)
            for p in pieces:
                try:
                    if p.slot is not None:
                        self.host.remove_memslot(p.slot)
                    if p.area is not None:
                        self.device.backend.munmap(p.area)
                except KvmpyError as e:
                    log.warning("%s: %s", self.name, e)
                p.slot = p.area = None
        self.device.close()


# --- opening and closing a passthrough -------------------------------------------------------------
class _Memory(Protocol):
    host_base: int

    @property
    def regions(self) -> Sequence[object]: ...


@dataclass
class Passthrough:
    """Host devices handed to a guest: one container per IOMMU group, one function per device.

    ``open`` does the whole sequence and undoes what it did if a step fails; the machine then
    places ``functions`` on its PCI bus, calls ``set_intx_gsi`` on each, and ``close`` at exit."""

    host: PassthroughHost
    backend: VfioBackend
    containers: dict[int, VfioContainer] = field(default_factory=dict)
    functions: list[VfioPciDevice] = field(default_factory=list)
    _attached: list[int] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        bdfs: Sequence[str],
        host: PassthroughHost,
        memory: _Memory,
        *,
        backend: VfioBackend | None = None,
        sys_root: str | Path = "/sys",
        dev_root: str | Path = "/dev",
    ) -> Passthrough:
        names = [parse_bdf(b) for b in bdfs]
        for bdf in names:
            ok, why = host_support(bdf, sys_root=sys_root, dev_root=dev_root)
            if not ok:
                raise VfioUnavailableError(f"cannot pass {bdf} through: {why}")
        pt = cls(host, backend if backend is not None else RealVfioBackend(dev_root))
        try:
            for bdf in names:
                pt._add(bdf, memory, sys_root)
        except BaseException:
            pt.close()
            raise
        return pt

    def _add(self, bdf: str, memory: _Memory, sys_root: str | Path) -> None:
        group = iommu_group_of(bdf, sys_root)
        assert group is not None  # host_support checked it
        c = self.containers.get(group)
        if c is None:
            c = self.containers[group] = VfioContainer.open(self.backend, group)
            c.map_guest_ram(memory)
            self.host.attach_vfio_group(c.group_fd)
            self._attached.append(c.group_fd)
        dev = c.device(bdf)
        try:
            if not dev.reset():
                log.info("%s: no VFIO_DEVICE_RESET offered; the device starts as the host left it", bdf)
            self.functions.append(VfioPciDevice(dev, self.host))
        except BaseException:
            dev.close()
            raise

    def close(self) -> None:
        """Functions closed, then KVM told, then DMA unmapped and groups detached."""
        errors: list[BaseException] = []
        for fn in reversed(self.functions):
            try:
                fn.close()
            except (KvmpyError, OSError) as e:
                errors.append(e)
        self.functions.clear()
        for gfd in self._attached:
            try:
                self.host.detach_vfio_group(gfd)
            except KvmpyError as e:
                errors.append(e)
        self._attached.clear()
        for c in self.containers.values():
            try:
                c.close()
            except (KvmpyError, OSError) as e:
                errors.append(e)
        self.containers.clear()
        for e in errors:
            log.warning("passthrough teardown: %s", e)


__all__ = [
    "PassthroughHost",
    "Passthrough",
    "VfioPciDevice",
    "BarPiece",
    "MsixLayout",
    "PAGE_SIZE",
]
