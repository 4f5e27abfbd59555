"""A PCI function's configuration space, declared as data.

Why a byte array with masks and not a class per register: everything the guest can do to a
configuration space is "store these bytes, through this writable mask, clearing these
write-1-to-clear bits", plus a handful of side effects (remap a BAR, re-evaluate INTx, switch a
memory segment). So a function is declared once — identity, BARs, capabilities, device
registers with their reset values and masks — and the generic rules then make every access
size at every offset behave the same way, which is where hand-written register code goes
wrong. This is QEMU's ``config``/``wmask``/``w1cmask`` model (hw/pci/pci.c), with the side
effects as explicit hooks.

Access rules (PCI Local Bus Specification 3.0, 6.1): accesses are 1, 2 or 4 bytes; each byte is
handled on its own (``new = old & ~wmask | value & wmask``, then ``new &= ~(value & w1cmask)``),
so a byte write into the middle of a dword register changes exactly that byte. Bytes outside
the space read as zero, which is what a conventional function shows in PCIe extended space.

BARs (6.2.5.1): the address bits below the BAR's size are read-only zero and the type bits are
read-only, so writing all-ones and reading back gives the size mask, which is exactly how
firmware and operating systems size them. I/O BARs keep all 32 bits writable (SeaBIOS computes
the size from all 32 bits; a BAR whose top half reads zero would look 4 GiB large). A 64-bit
BAR takes two slots; its upper dword is fully writable.

Whether a BAR is *decoded* is decided here too (``mapped_address``), with QEMU's rules
(``pci_bar_address``): the COMMAND I/O or memory bit must be set, address 0 means unmapped,
the range must not wrap, an I/O range must fit the 64 KiB port space, a 32-bit memory BAR must
end below 4 GiB, and no memory range may cover 0xFFFFFFFF — that is the BIOS reset vector and
also exactly where a BAR points while it is being sized with all-ones. A function that is not
in power state D0 decodes nothing (PCI PM 1.2, 5.4.1).

Side effects: ``decode_listeners`` are called after any write that touches a BAR, the ROM BAR,
the COMMAND register's low byte or the power state, so the bus can remap; ``on_write`` hooks
are called after a write overlapping their range and may consult ``previous()`` for what the
bytes held before the write; ``on_read`` hooks refresh computed registers before a read.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kvmpy.hw.bus import Device

log = logging.getLogger("kvmpy.pci")

#: Conventional and PCI Express configuration space sizes.
PCI_CONFIG_SPACE_SIZE = 0x100
PCIE_CONFIG_SPACE_SIZE = 0x1000

# --- The common header (PCI 3.0, figure 6-1 / 6-2) ------------------------------------------
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09
CLASS_DEVICE = 0x0A  # 16 bits: sub-class (0x0A) and base class (0x0B)
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BIST = 0x0F
BAR0 = 0x10
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
HEADER_SIZE = 0x40
# type 0
CARDBUS_CIS = 0x28
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30
MIN_GNT = 0x3E
MAX_LAT = 0x3F
# type 1 (PCI-to-PCI Bridge Architecture Specification 1.2, chapter 3)
PRIMARY_BUS = 0x18
SECONDARY_BUS = 0x19
SUBORDINATE_BUS = 0x1A
SEC_LATENCY_TIMER = 0x1B
IO_BASE = 0x1C
IO_LIMIT = 0x1D
SEC_STATUS = 0x1E
MEMORY_BASE = 0x20
MEMORY_LIMIT = 0x22
PREF_MEMORY_BASE = 0x24
PREF_MEMORY_LIMIT = 0x26
PREF_BASE_UPPER32 = 0x28
PREF_LIMIT_UPPER32 = 0x2C
IO_BASE_UPPER16 = 0x30
IO_LIMIT_UPPER16 = 0x32
ROM_ADDRESS1 = 0x38
BRIDGE_CONTROL = 0x3E

HEADER_TYPE_NORMAL = 0x00
HEADER_TYPE_BRIDGE = 0x01
HEADER_TYPE_MULTIFUNCTION = 0x80

# COMMAND bits (PCI 3.0, 6.2.2)
CMD_IO = 0x0001
CMD_MEMORY = 0x0002
CMD_MASTER = 0x0004
CMD_SPECIAL = 0x0008
CMD_INVALIDATE = 0x0010
CMD_VGA_PALETTE = 0x0020
CMD_PARITY = 0x0040
CMD_WAIT = 0x0080
CMD_SERR = 0x0100
CMD_FAST_BACK = 0x0200
CMD_INTX_DISABLE = 0x0400
#: What a typical bus-mastering function lets software change.
CMD_DEFAULT_WMASK = CMD_IO | CMD_MEMORY | CMD_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE

# STATUS bits (PCI 3.0, 6.2.3)
STS_INTERRUPT = 0x0008
STS_CAP_LIST = 0x0010
STS_66MHZ = 0x0020
STS_FAST_BACK = 0x0080
STS_PARITY = 0x0100
STS_DEVSEL_MEDIUM = 0x0200
STS_SIG_TARGET_ABORT = 0x0800
STS_REC_TARGET_ABORT = 0x1000
STS_REC_MASTER_ABORT = 0x2000
STS_SIG_SYSTEM_ERROR = 0x4000
STS_DETECTED_PARITY = 0x8000
#: The error bits software clears by writing 1 (the same set QEMU's pci_init_w1cmask uses).
STS_W1C = (
    STS_PARITY
    | STS_SIG_TARGET_ABORT
    | STS_REC_TARGET_ABORT
    | STS_REC_MASTER_ABORT
    | STS_SIG_SYSTEM_ERROR
    | STS_DETECTED_PARITY
)

# BAR encoding (PCI 3.0, 6.2.5.1)
BAR_SPACE_IO = 0x01
BAR_MEM_TYPE_64 = 0x04
BAR_MEM_PREFETCH = 0x08
BAR_IO_FLAGS = 0x03
BAR_MEM_FLAGS = 0x0F
ROM_ENABLE = 0x01
ROM_ADDRESS_MASK = 0xFFFF_F800
#: The slot number ``mapped_address`` and the bus use for the expansion ROM.
ROM_SLOT = 6

# Bridge control (PCI-PCI bridge 1.2, 3.2.5.18) and the masks QEMU's pci_init_mask_bridge uses
BRIDGE_CTL_PARITY = 0x0001
BRIDGE_CTL_SERR = 0x0002
BRIDGE_CTL_ISA = 0x0004
BRIDGE_CTL_VGA = 0x0008
BRIDGE_CTL_VGA_16BIT = 0x0010
BRIDGE_CTL_MASTER_ABORT = 0x0020
BRIDGE_CTL_BUS_RESET = 0x0040
BRIDGE_CTL_FAST_BACK = 0x0080
BRIDGE_CTL_DISCARD = 0x0100
BRIDGE_CTL_SEC_DISCARD = 0x0200
BRIDGE_CTL_DISCARD_STATUS = 0x0400
BRIDGE_CTL_DISCARD_SERR = 0x0800
BRIDGE_CTL_WMASK = 0x0BFF & ~BRIDGE_CTL_DISCARD_STATUS
PREF_RANGE_TYPE_64 = 0x1

# Capability IDs (PCI 3.0, appendix H)
CAP_ID_PM = 0x01
CAP_ID_MSI = 0x05
CAP_ID_VENDOR = 0x09
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11

#: Highest guest-physical address + 1 a memory BAR may decode (kvmpy.hw.bus.MmioBus's limit).
MEM_ADDRESS_LIMIT = 1 << 52
#: The x86 I/O port space.
IO_ADDRESS_LIMIT = 0x1_0000
_TOP_OF_4G = 0xFFFF_FFFF

WriteHook = Callable[[int, int, int], None]
ReadHook = Callable[[int, int], None]
MapCallback = Callable[[int | None], None]


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class BarKind(enum.Enum):
    """The three kinds of base address register."""

    IO = "io"
    MEM32 = "mem32"
    MEM64 = "mem64"


@dataclass(eq=False)
class Bar:
    """One declared BAR: what the bus maps at the address the guest programs.

    ``handler`` gets ``read(offset, size)``/``write(offset, size, value)`` with offsets relative
    to the BAR's base, for the access sizes in ``sizes``. ``on_map(base | None)`` is called
    after the decoded address changes; a BAR backed by a KVM memslot (a linear framebuffer)
    gives no handler and does its mapping there."""

    index: int
    kind: BarKind
    size: int
    handler: Device | None = None
    prefetchable: bool = False
    name: str = ""
    sizes: tuple[int, ...] = (1, 2, 4)
    on_map: MapCallback | None = None

    @property
    def is_io(self) -> bool:
        return self.kind is BarKind.IO

    @property
    def flags(self) -> int:
        """The read-only low bits of the BAR register."""
        if self.kind is BarKind.IO:
            return BAR_SPACE_IO
        f = BAR_MEM_TYPE_64 if self.kind is BarKind.MEM64 else 0
        return f | (BAR_MEM_PREFETCH if self.prefetchable else 0)


@dataclass(eq=False)
class RomBar:
    """The expansion ROM: ``content`` padded to ``size`` (a power of two, at least 2 KiB)."""

    content: bytes
    size: int
    name: str = ""
    on_map: MapCallback | None = None


class PciConfig:
    """A function's configuration space: bytes, writable and write-1-to-clear masks, the reset
    image, BAR and capability declarations, and hooks.

    ``class_code`` is the 16-bit base class and sub-class (0x0600 host bridge, 0x0101 IDE),
    ``prog_if`` the programming interface byte. ``device_area_writable`` makes 0x40 and above
    writable unless a declaration says otherwise — QEMU's default, used by chipset functions
    whose many scratch-like registers firmware writes and reads back."""

    def __init__(
        self,
        vendor_id: int,
        device_id: int,
        class_code: int,
        *,
        prog_if: int = 0,
        revision: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        header_type: int = HEADER_TYPE_NORMAL,
        multifunction: bool = False,
        interrupt_pin: int = 0,
        command: int = 0,
        status: int = 0,
        command_wmask: int = CMD_DEFAULT_WMASK,
        size: int = PCI_CONFIG_SPACE_SIZE,
        device_area_writable: bool = False,
    ) -> None:
        if size not in (PCI_CONFIG_SPACE_SIZE, PCIE_CONFIG_SPACE_SIZE):
            raise ValueError("a configuration space is 256 or 4096 bytes")
        if not 0 < vendor_id < 0xFFFF:
            raise ValueError(f"vendor id {vendor_id:#x} is not valid (0 and 0xffff mean 'absent')")
        if header_type not in (HEADER_TYPE_NORMAL, HEADER_TYPE_BRIDGE):
            raise ValueError("only header types 0 (device) and 1 (PCI-to-PCI bridge) exist here")
        if not 0 <= interrupt_pin <= 4:
            raise ValueError("interrupt pin is 0 (none) or 1..4 (INTA#..INTD#)")
        self.size = size
        self.header_type = header_type
        self.data = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)
        self._reset = bytearray(size)
        self.bars: dict[int, Bar] = {}
        self.rom: RomBar | None = None
        self.capabilities: dict[int, tuple[int, int]] = {}  # offset -> (cap id, length)
        self.msi: MsiCapability | None = None
        self.pm: PmCapability | None = None
        self.decode_listeners: list[Callable[[], None]] = []
        self._write_hooks: list[tuple[int, int, WriteHook]] = []
        self._read_hooks: list[tuple[int, int, ReadHook]] = []
        self._old: tuple[int, bytes] = (0, b"")
        self._cap_free = HEADER_SIZE

        if device_area_writable:
            self.wmask[HEADER_SIZE:] = b"\xff" * (size - HEADER_SIZE)
        self.declare(VENDOR_ID, 2, vendor_id)
        self.declare(DEVICE_ID, 2, device_id)
        self.declare(COMMAND, 2, command, wmask=command_wmask)
        self.declare(STATUS, 2, status, w1cmask=STS_W1C)
        self.declare(REVISION_ID, 1, revision)
        self.declare(CLASS_PROG, 1, prog_if)
        self.declare(CLASS_DEVICE, 2, class_code)
        self.declare(CACHE_LINE_SIZE, 1, 0, wmask=0xFF)
        self.declare(LATENCY_TIMER, 1, 0, wmask=0xFF)
        self.declare(HEADER_TYPE, 1, header_type | (HEADER_TYPE_MULTIFUNCTION if multifunction else 0))
        self.declare(INTERRUPT_LINE, 1, 0, wmask=0xFF)
        self.declare(INTERRUPT_PIN, 1, interrupt_pin)
        if header_type == HEADER_TYPE_NORMAL:
            self.declare(SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
            self.declare(SUBSYSTEM_ID, 2, subsystem_id)
        else:
            self._declare_bridge()

    def _declare_bridge(self) -> None:
        """Type 1 basics: bus numbers, 16-bit I/O and 64-bit prefetchable windows (QEMU's masks)."""
        for off in (PRIMARY_BUS, SECONDARY_BUS, SUBORDINATE_BUS, SEC_LATENCY_TIMER):
            self.declare(off, 1, 0, wmask=0xFF)
        self.declare(IO_BASE, 1, 0, wmask=0xF0)
        self.declare(IO_LIMIT, 1, 0, wmask=0xF0)
        self.declare(SEC_STATUS, 2, 0, w1cmask=STS_W1C)
        self.declare(MEMORY_BASE, 2, 0, wmask=0xFFF0)
        self.declare(MEMORY_LIMIT, 2, 0, wmask=0xFFF0)
        self.declare(PREF_MEMORY_BASE, 2, PREF_RANGE_TYPE_64, wmask=0xFFF0)
        self.declare(PREF_MEMORY_LIMIT, 2, PREF_RANGE_TYPE_64, wmask=0xFFF0)
        self.declare(PREF_BASE_UPPER32, 4, 0, wmask=0xFFFF_FFFF)
        self.declare(PREF_LIMIT_UPPER32, 4, 0, wmask=0xFFFF_FFFF)
        self.declare(BRIDGE_CONTROL, 2, 0, wmask=BRIDGE_CTL_WMASK, w1cmask=BRIDGE_CTL_DISCARD_STATUS)

    # -- declarations (the function's fixed description) ---------------------------------------
    def declare(self, offset: int, width: int, value: int = 0, *, wmask: int = 0, w1cmask: int = 0) -> None:
        """Declare a register: its reset value, writable bits and write-1-to-clear bits."""
        if offset < 0 or width <= 0 or offset + width > self.size:
            raise ValueError(f"register {offset:#x}+{width} is outside the configuration space")
        if wmask & w1cmask:
            raise ValueError(f"register {offset:#x}: a bit cannot be both writable and write-1-to-clear")
        end = offset + width
        self.data[offset:end] = self._reset[offset:end] = value.to_bytes(width, "little")
        self.wmask[offset:end] = wmask.to_bytes(width, "little")
        self.w1cmask[offset:end] = w1cmask.to_bytes(width, "little")

    def set_multifunction(self, on: bool) -> None:
        """Header type bit 7: a fact of the slot's wiring, so it is part of the reset image too."""
        for buf in (self.data, self._reset):
            buf[HEADER_TYPE] = (buf[HEADER_TYPE] & 0x7F) | (HEADER_TYPE_MULTIFUNCTION if on else 0)

    @property
    def bar_count(self) -> int:
        return 6 if self.header_type == HEADER_TYPE_NORMAL else 2

    @property
    def rom_offset(self) -> int:
        return ROM_ADDRESS if self.header_type == HEADER_TYPE_NORMAL else ROM_ADDRESS1

    def add_bar(
        self,
        index: int,
        kind: BarKind,
        size: int,
        handler: Device | None = None,
        *,
        prefetchable: bool = False,
        name: str = "",
        sizes: tuple[int, ...] | None = None,
        on_map: MapCallback | None = None,
    ) -> Bar:
        """Declare BAR ``index``. ``sizes`` defaults to the handler's ``SIZES`` or (1, 2, 4)."""
        if not 0 <= index < self.bar_count:
            raise ValueError(f"BAR index {index} does not exist in this header type")
        slots = (index, index + 1) if kind is BarKind.MEM64 else (index,)
        if slots[-1] >= self.bar_count:
            raise ValueError(f"a 64-bit BAR at index {index} would need slot {index + 1}")
        if any(s in self._bar_slots() for s in slots):
            raise ValueError(f"BAR slot {index} is already declared")
        if not _pow2(size):
            raise ValueError(f"BAR size {size:#x} is not a power of two")
        if kind is BarKind.IO:
            if not 4 <= size <= IO_ADDRESS_LIMIT:
                raise ValueError("an I/O BAR is 4 bytes to 64 KiB")
            if prefetchable:
                raise ValueError("I/O BARs are never prefetchable")
        elif size < 16 or (kind is BarKind.MEM32 and size > 1 << 31):
            raise ValueError("a memory BAR is at least 16 bytes; a 32-bit one at most 2 GiB")
        if sizes is None:
            sizes = tuple(getattr(handler, "SIZES", (1, 2, 4)))
        bar = Bar(index, kind, size, handler, prefetchable, name or f"bar{index}", sizes, on_map)
        off = BAR0 + 4 * index
        if kind is BarKind.MEM64:
            mask = ~(size - 1) & 0xFFFF_FFFF_FFFF_FFFF & ~BAR_MEM_FLAGS
            self.declare(off, 4, bar.flags, wmask=mask & 0xFFFF_FFFF)
            self.declare(off + 4, 4, 0, wmask=mask >> 32)
        else:
            low = BAR_IO_FLAGS if kind is BarKind.IO else BAR_MEM_FLAGS
            self.declare(off, 4, bar.flags, wmask=~(size - 1) & 0xFFFF_FFFF & ~low)
        self.bars[index] = bar
        return bar

    def _bar_slots(self) -> set[int]:
        used: set[int] = set()
        for b in self.bars.values():
            used.add(b.index)
            if b.kind is BarKind.MEM64:
                used.add(b.index + 1)
        return used

    def set_rom(
        self, content: bytes, *, size: int | None = None, name: str = "rom", on_map: MapCallback | None = None
    ) -> RomBar:
        """Declare the expansion ROM BAR holding ``content`` (e.g. a VGA BIOS image)."""
        need = max(len(content), 2048)
        if size is None:
            size = 1 << (need - 1).bit_length()
        if not _pow2(size) or size < need:
            raise ValueError(f"ROM BAR size {size:#x} must be a power of two >= {need:#x}")
        if size > 1 << 24:
            raise ValueError("ROM BARs are at most 16 MiB")
        self.rom = RomBar(bytes(content), size, name, on_map)
        self.declare(self.rom_offset, 4, 0, wmask=(~(size - 1) & ROM_ADDRESS_MASK) | ROM_ENABLE)
        return self.rom

    # -- capabilities ----------------------------------------------------------------------------
    def add_capability(self, cap_id: int, length: int, *, offset: int | None = None) -> int:
        """Reserve ``length`` bytes for a capability and link it at the end of the list.

        The bytes are read-only until declared otherwise; returns the capability's offset."""
        if offset is None:
            offset = (self._cap_free + 3) & ~3
        if offset < HEADER_SIZE or offset & 3 or length < 2 or offset + length > PCI_CONFIG_SPACE_SIZE:
            raise ValueError(f"capability at {offset:#x}+{length} does not fit in 0x40..0xff")
        for other, (_, olen) in self.capabilities.items():
            if offset < other + olen and other < offset + length:
                raise ValueError(f"capability at {offset:#x} overlaps the one at {other:#x}")
        self.declare(offset, length, cap_id)  # id, next = 0, body zero; all read-only
        last = CAPABILITY_LIST
        while self._reset[last] and self._reset[last] in self.capabilities:
            last = self._reset[last] + 1
        for buf in (self.data, self._reset):
            buf[last] = offset
            buf[STATUS] |= STS_CAP_LIST
        self.capabilities[offset] = (cap_id, length)
        self._cap_free = max(self._cap_free, offset + length)
        return offset

    def find_capability(self, cap_id: int) -> int | None:
        """Walk the list the way a guest does; the offset of the first ``cap_id`` or None."""
        seen: set[int] = set()
        ptr = self.data[CAPABILITY_LIST] & ~3
        while ptr >= HEADER_SIZE and ptr not in seen:
            seen.add(ptr)
            if self.data[ptr] == cap_id:
                return ptr
            ptr = self.data[ptr + 1] & ~3
        return None

    def add_msi(
        self,
        send: Callable[[int, int], None],
        *,
        vectors: int = 1,
        addr64: bool = True,
        per_vector_mask: bool = False,
        offset: int | None = None,
    ) -> MsiCapability:
        """An MSI capability; ``send(address, data)`` delivers a message. Device models call
        ``PciFunction.add_msi``, which also keeps INTx quiet while MSI is enabled."""
        if self.msi is not None:
            raise ValueError("a function has one MSI capability")
        self.msi = MsiCapability(self, send, vectors, addr64, per_vector_mask, offset)
        return self.msi

    def add_pm(
        self, *, d1: bool = False, d2: bool = False, pme_support: int = 0, offset: int | None = None
    ) -> PmCapability:
        """A power-management capability (PCI PM 1.2)."""
        if self.pm is not None:
            raise ValueError("a function has one PM capability")
        self.pm = PmCapability(self, d1, d2, pme_support, offset)
        return self.pm

    # -- hooks -----------------------------------------------------------------------------------
    def on_write(self, offset: int, width: int, hook: WriteHook) -> None:
        """Call ``hook(offset, size, value)`` after every guest write overlapping the range."""
        self._write_hooks.append((offset, offset + width, hook))

    def on_read(self, offset: int, width: int, hook: ReadHook) -> None:
        """Call ``hook(offset, size)`` before every guest read overlapping the range, so a computed
        register can refresh its bytes."""
        self._read_hooks.append((offset, offset + width, hook))

    def previous(self, offset: int, width: int) -> int:
        """Inside a write hook: the register's value before this write (bytes the write did not
        touch are their current value)."""
        base, old = self._old
        raw = bytearray(self.data[offset : offset + width])
        for i in range(width):
            j = offset + i - base
            if 0 <= j < len(old):
                raw[i] = old[j]
        return int.from_bytes(raw, "little")

    # -- guest accesses --------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A guest read; an access no configuration cycle can make reads all-ones."""
        if size not in (1, 2, 4) or offset < 0:
            return (1 << (8 * size)) - 1 if size in (1, 2, 4, 8) else 0
        end = offset + size
        for lo, hi, hook in self._read_hooks:
            if offset < hi and lo < end:
                hook(offset, size)
        return int.from_bytes(self.data[offset:end].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest write: bytes through the masks, then hooks, then the decode listeners."""
        if size not in (1, 2, 4) or offset < 0 or offset >= self.size:
            return
        end = min(offset + size, self.size)
        data, wm, w1c = self.data, self.wmask, self.w1cmask
        self._old = (offset, bytes(data[offset:end]))
        for i in range(offset, end):
            v = (value >> (8 * (i - offset))) & 0xFF
            data[i] = ((data[i] & ~wm[i]) | (v & wm[i])) & ~(v & w1c[i]) & 0xFF
        for lo, hi, hook in self._write_hooks:
            if offset < hi and lo < end:
                hook(offset, size, value)
        if self._touches_decode(offset, end):
            self.notify_decode()
        self._old = (0, b"")

    def _touches_decode(self, offset: int, end: int) -> bool:
        if offset <= COMMAND < end:
            return True
        if offset < BAR0 + 4 * self.bar_count and BAR0 < end:
            return True
        rom = self.rom_offset
        return offset < rom + 4 and rom < end

    def notify_decode(self) -> None:
        """Tell the listeners (the bus) that what this function decodes may have changed."""
        for listener in self.decode_listeners:
            listener()

    # -- device-side helpers (no masks: the device's own view of its registers) ---------------
    def get(self, offset: int, width: int) -> int:
        return int.from_bytes(self.data[offset : offset + width], "little")

    def set(self, offset: int, width: int, value: int) -> None:
        self.data[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

    @property
    def command(self) -> int:
        return self.get(COMMAND, 2)

    @property
    def status(self) -> int:
        return self.get(STATUS, 2)

    def set_status_bits(self, bits: int, on: bool = True) -> None:
        """Set or clear STATUS bits from the device side (interrupt status, error bits)."""
        st = self.status
        self.set(STATUS, 2, st | bits if on else st & ~bits)

    @property
    def interrupt_pin(self) -> int:
        return self.data[INTERRUPT_PIN]

    @property
    def powered(self) -> bool:
        """In D0 (or without a PM capability): only then are BARs decoded."""
        return self.pm is None or self.pm.power_state == 0

    def bar_address(self, index: int) -> int:
        """The address programmed into BAR ``index`` (flag bits removed), decoded or not."""
        if index == ROM_SLOT:
            return self.get(self.rom_offset, 4) & ROM_ADDRESS_MASK
        bar = self.bars[index]
        off = BAR0 + 4 * index
        if bar.kind is BarKind.MEM64:
            return self.get(off, 8) & ~BAR_MEM_FLAGS
        return self.get(off, 4) & ~(BAR_IO_FLAGS if bar.is_io else BAR_MEM_FLAGS)

    def mapped_address(self, index: int) -> int | None:
        """Where BAR ``index`` (or ``ROM_SLOT``) is decoded now, or None (see the module doc)."""
        cmd = self.command
        if not self.powered:
            return None
        if index == ROM_SLOT:
            if self.rom is None or not cmd & CMD_MEMORY or not self.get(self.rom_offset, 4) & ROM_ENABLE:
                return None
            return self._valid_mem(self.bar_address(ROM_SLOT), self.rom.size, wide=False)
        bar = self.bars.get(index)
        if bar is None:
            return None
        addr = self.bar_address(index) & ~(bar.size - 1)
        if bar.is_io:
            if not cmd & CMD_IO or addr == 0 or addr + bar.size > IO_ADDRESS_LIMIT:
                return None
            return addr
        if not cmd & CMD_MEMORY:
            return None
        return self._valid_mem(addr, bar.size, wide=bar.kind is BarKind.MEM64)

    @staticmethod
    def _valid_mem(addr: int, size: int, *, wide: bool) -> int | None:
        end = addr + size
        if addr == 0 or end > MEM_ADDRESS_LIMIT or (not wide and end > _TOP_OF_4G):
            return None
        if addr <= _TOP_OF_4G < end:
            return None
        return addr

    # -- state -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the declared reset image (listeners are not called: the owner does that)."""
        self.data[:] = self._reset

    def snapshot(self) -> bytes:
        return bytes(self.data)

    def restore(self, snap: bytes) -> None:
        if len(snap) != self.size:
            raise ValueError("configuration space snapshot has the wrong size")
        self.data[:] = snap


class MsiCapability:
    """Message Signalled Interrupts (PCI 3.0, 6.8.1): 32- or 64-bit address, 1-32 vectors,
    optional per-vector masking with pending bits.

    All its state lives in configuration space, so snapshots need nothing extra."""

    CTRL_ENABLE = 0x0001
    CTRL_MMC_SHIFT = 1
    CTRL_MME_SHIFT = 4
    CTRL_MME_MASK = 0x0070
    CTRL_64BIT = 0x0080
    CTRL_MASKBIT = 0x0100

    def __init__(
        self,
        config: PciConfig,
        send: Callable[[int, int], None],
        vectors: int,
        addr64: bool,
        per_vector_mask: bool,
        offset: int | None,
    ) -> None:
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError("MSI vector counts are powers of two up to 32")
        self.config = config
        self.send = send
        self.vectors = vectors
        self.addr64 = addr64
        self.per_vector_mask = per_vector_mask
        if addr64:
            length = 0x18 if per_vector_mask else 0x0E
        else:
            length = 0x14 if per_vector_mask else 0x0A
        off = config.add_capability(CAP_ID_MSI, length, offset=offset)
        self.offset = off
        self.ctrl_off = off + 2
        self.addr_off = off + 4
        self.data_off = off + (0x0C if addr64 else 0x08)
        self.mask_off = self.data_off + 4
        self.pending_off = self.data_off + 8
        ctrl = (vectors.bit_length() - 1) << self.CTRL_MMC_SHIFT
        ctrl |= (self.CTRL_64BIT if addr64 else 0) | (self.CTRL_MASKBIT if per_vector_mask else 0)
        config.declare(self.ctrl_off, 2, ctrl, wmask=self.CTRL_ENABLE | self.CTRL_MME_MASK)
        config.declare(self.addr_off, 4, 0, wmask=0xFFFF_FFFC)
        if addr64:
            config.declare(off + 8, 4, 0, wmask=0xFFFF_FFFF)
        config.declare(self.data_off, 2, 0, wmask=0xFFFF)
        if per_vector_mask:
            config.declare(self.mask_off, 4, 0, wmask=(1 << vectors) - 1)
            config.declare(self.pending_off, 4, 0)
        config.on_write(off, length, self._written)

    @property
    def control(self) -> int:
        return self.config.get(self.ctrl_off, 2)

    @property
    def enabled(self) -> bool:
        return bool(self.control & self.CTRL_ENABLE)

    @property
    def enabled_vectors(self) -> int:
        """How many vectors software allocated (Multiple Message Enable)."""
        return 1 << ((self.control & self.CTRL_MME_MASK) >> self.CTRL_MME_SHIFT)

    @property
    def address(self) -> int:
        lo = self.config.get(self.addr_off, 4)
        return lo | (self.config.get(self.addr_off + 4, 4) << 32 if self.addr64 else 0)

    @property
    def data(self) -> int:
        return self.config.get(self.data_off, 2)

    def masked(self, vector: int) -> bool:
        return self.per_vector_mask and bool(self.config.get(self.mask_off, 4) >> vector & 1)

    def pending(self, vector: int) -> bool:
        return self.per_vector_mask and bool(self.config.get(self.pending_off, 4) >> vector & 1)

    def message(self, vector: int) -> tuple[int, int]:
        """(address, data) for ``vector``: the low bits of data carry the vector number."""
        n = self.enabled_vectors
        return self.address, (self.data & ~(n - 1)) | (vector & (n - 1))

    def notify(self, vector: int = 0) -> bool:
        """Signal ``vector``: sent now, or held pending while masked. False when MSI is off."""
        if not self.enabled:
            return False
        vector &= self.enabled_vectors - 1
        if self.masked(vector):
            self.config.set(self.pending_off, 4, self.config.get(self.pending_off, 4) | 1 << vector)
            return True
        self.send(*self.message(vector))
        return True

    def _written(self, offset: int, size: int, value: int) -> None:
        cfg = self.config
        ctrl = self.control
        mme = (ctrl & self.CTRL_MME_MASK) >> self.CTRL_MME_SHIFT
        mmc = (ctrl >> self.CTRL_MMC_SHIFT) & 7
        if mme > mmc:  # software may not enable more than the function asked for
            cfg.set(self.ctrl_off, 2, (ctrl & ~self.CTRL_MME_MASK) | mmc << self.CTRL_MME_SHIFT)
        if not self.per_vector_mask or not self.enabled:
            return
        pend = cfg.get(self.pending_off, 4)
        for v in range(self.vectors):
            if pend >> v & 1 and not self.masked(v):
                pend &= ~(1 << v)
                cfg.set(self.pending_off, 4, pend)
                self.send(*self.message(v))


class PmCapability:
    """PCI Power Management 1.2: PMC (read-only) and PMCSR with the power state.

    A write of an unsupported state (D1/D2 when not declared) is completed but discarded (PM 1.2,
    3.2.4). No_Soft_Reset is set: going D3hot -> D0 keeps the configuration, so nothing needs
    re-initialising. Leaving or entering D0 switches BAR decoding, so the bus is told."""

    PMC_VERSION_1_2 = 0x0003
    PMC_D1 = 0x0200
    PMC_D2 = 0x0400
    PMC_PME_SHIFT = 11
    PMCSR_STATE_MASK = 0x0003
    PMCSR_NO_SOFT_RESET = 0x0008
    PMCSR_PME_EN = 0x0100
    PMCSR_PME_STATUS = 0x8000

    def __init__(self, config: PciConfig, d1: bool, d2: bool, pme_support: int, offset: int | None) -> None:
        self.config = config
        self.d1 = d1
        self.d2 = d2
        off = config.add_capability(CAP_ID_PM, 8, offset=offset)
        self.offset = off
        self.pmcsr_off = off + 4
        pmc = self.PMC_VERSION_1_2 | (self.PMC_D1 if d1 else 0) | (self.PMC_D2 if d2 else 0)
        pmc |= (pme_support & 0x1F) << self.PMC_PME_SHIFT
        config.declare(off + 2, 2, pmc)
        pme = bool(pme_support)
        config.declare(
            self.pmcsr_off,
            2,
            self.PMCSR_NO_SOFT_RESET,
            wmask=self.PMCSR_STATE_MASK | (self.PMCSR_PME_EN if pme else 0),
            w1cmask=self.PMCSR_PME_STATUS if pme else 0,
        )
        config.on_write(self.pmcsr_off, 2, self._written)

    @property
    def power_state(self) -> int:
        """0 = D0 ... 3 = D3hot."""
        return self.config.get(self.pmcsr_off, 2) & self.PMCSR_STATE_MASK

    def _written(self, offset: int, size: int, value: int) -> None:
        cfg = self.config
        old = cfg.previous(self.pmcsr_off, 2) & self.PMCSR_STATE_MASK
        new = self.power_state
        if (new == 1 and not self.d1) or (new == 2 and not self.d2):
            cfg.set(self.pmcsr_off, 2, (cfg.get(self.pmcsr_off, 2) & ~self.PMCSR_STATE_MASK) | old)
            new = old
        if new != old:
            cfg.notify_decode()
