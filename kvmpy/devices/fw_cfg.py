"""QEMU's firmware configuration device (fw_cfg), as SeaBIOS and Linux's qemu_fw_cfg use it.

Why emulate QEMU's interface rather than invent one: SeaBIOS, iPXE and Linux already speak it,
and it is how the VMM hands firmware everything that is not a device register: the e820 map,
the CPU count, the boot order and the ACPI tables (through the table-loader files).

Two small devices share one item store:

``FwCfg`` (I/O ports ``layout.FW_CFG_PORT`` .. +1)
    a 16-bit write at offset 0 selects an item and rewinds it; each 8-bit read (at offset 0 or
    1, as in QEMU's combined x86 port) returns the next byte of the selected item, and 0 once
    past its end or for an unknown item. 8-bit writes are ignored (QEMU removed data writes in
    2.4; writes go through DMA).

``FwCfgDma`` (I/O ports ``layout.FW_CFG_DMA_PORT`` .. +7, ``FwCfg.dma_port``)
    the guest writes the guest-physical address of a ``FWCfgDmaAccess`` descriptor
    ``{be32 control, be32 length, be64 address}`` as a big-endian 64-bit register: the high
    half at +0, then the low half at +4, which starts the transfer (an 8-byte write at +0, as
    an MMIO guest may do, starts it too). The register is big-endian, so a 32-bit port write
    carries the bytes of the big-endian address in port order; SeaBIOS writes only the low
    half, relying on the register being cleared after every transfer, as QEMU does. Reading
    the ports returns the bytes of "QEMU CFG". The device reads the descriptor, performs
    select / read / skip / write, and writes the control word back: 0 on success, the error
    bit on failure. Every guest-memory access goes through the ``DmaSpace``; a ``DmaFault``
    only ever sets the error bit.

Facts from QEMU's hw/nvram/fw_cfg.c and docs/specs/fw_cfg.rst: selecting a key rewinds it to
offset 0; bit 14 of a key (the old "write channel") is ignored; a DMA read past the end of an
item (or of an unknown item) fills the guest buffer with zeros; a skip only moves the offset;
a DMA write is allowed only to writable items and only when it fits entirely inside the item;
without read, write or skip the length is treated as 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import DmaFault
from ..hw.dma import DmaSpace

__all__ = [
    "FwCfg",
    "FwCfgDma",
    "FwCfgState",
    "ItemData",
    "e820_table",
    "bootorder",
    "FW_CFG_SIGNATURE",
    "FW_CFG_ID",
    "FW_CFG_UUID",
    "FW_CFG_RAM_SIZE",
    "FW_CFG_NOGRAPHIC",
    "FW_CFG_NB_CPUS",
    "FW_CFG_NUMA",
    "FW_CFG_BOOT_MENU",
    "FW_CFG_MAX_CPUS",
    "FW_CFG_FILE_DIR",
    "FW_CFG_FILE_FIRST",
    "E820_RAM",
    "E820_RESERVED",
    "E820_ACPI",
    "E820_NVS",
    "E820_UNUSABLE",
]

# --- Well-known selector keys (QEMU include/standard-headers/linux/qemu_fw_cfg.h) -------------
FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_UUID = 0x0002
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NOGRAPHIC = 0x0004
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MACHINE_ID = 0x0006
FW_CFG_KERNEL_ADDR = 0x0007
FW_CFG_KERNEL_SIZE = 0x0008
FW_CFG_KERNEL_CMDLINE = 0x0009
FW_CFG_INITRD_ADDR = 0x000A
FW_CFG_INITRD_SIZE = 0x000B
FW_CFG_BOOT_DEVICE = 0x000C
FW_CFG_NUMA = 0x000D
FW_CFG_BOOT_MENU = 0x000E
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020
#: Bit 14 once meant "write channel"; QEMU masks it off when selecting, and so do we.
FW_CFG_WRITE_CHANNEL = 0x4000
#: Keys with bit 15 set are architecture-local (x86: 0x8000 ACPI tables, 0x8002 IRQ0 override).
FW_CFG_ARCH_LOCAL = 0x8000

#: FW_CFG_ID feature bits.
FW_CFG_VERSION_TRADITIONAL = 0x01
FW_CFG_VERSION_DMA = 0x02

#: FWCfgDmaAccess.control bits.
DMA_CTL_ERROR = 0x01
DMA_CTL_READ = 0x02
DMA_CTL_SKIP = 0x04
DMA_CTL_SELECT = 0x08
DMA_CTL_WRITE = 0x10

#: What reads of the DMA address register return: "QEMU CFG", most significant byte first.
DMA_SIGNATURE = b"QEMU CFG"

#: Size of one file-directory entry: be32 size, be16 select, be16 reserved, char name[56].
FILE_NAME_MAX = 56
_DIR_ENTRY = struct.Struct(">IHH56s")
_DMA_ACCESS = struct.Struct(">IIQ")  # control, length, address
_ZERO_CHUNK = 64 * 1024

# --- e820 entry types (what etc/e820 carries) -------------------------------------------
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5
_E820_ENTRY = struct.Struct("<QQI")

#: Item contents: bytes, or a callable producing them on first use (large or late-built items).
ItemData = bytes | bytearray | memoryview | Callable[[], bytes]


class _Item:
    """One fw_cfg item. Lazy data is materialised once, on the first access that needs it."""

    __slots__ = ("_data", "_producer", "_size", "writable", "on_write")

    def __init__(
        self,
        data: ItemData,
        writable: bool = False,
        size: int | None = None,
        on_write: Callable[[int, int], None] | None = None,
    ) -> None:
        self.writable = writable
        self.on_write = on_write
        self._size = size
        if callable(data):
            self._data: bytearray | None = None
            self._producer: Callable[[], bytes] | None = data
        else:
            self._data = bytearray(data)
            self._producer = None
            if size is not None and size != len(self._data):
                raise ValueError(f"fw_cfg item: size {size} given for {len(self._data)} bytes of data")
        known = len(self._data) if self._data is not None else size
        if known is not None and known > 0xFFFF_FFFF:
            raise ValueError("fw_cfg item larger than 4 GiB")  # the directory's size is be32

    @property
    def size(self) -> int:
        """The item's length; known without producing lazy data when a size was declared."""
        if self._data is not None:
            return len(self._data)
        if self._size is not None:
            return self._size
        return len(self.data)

    @property
    def data(self) -> bytearray:
        if self._data is None:
            assert self._producer is not None
            produced = bytearray(self._producer())
            if self._size is not None and len(produced) != self._size:
                raise ValueError(
                    f"fw_cfg lazy item produced {len(produced)} bytes, {self._size} were declared"
                )
            if len(produced) > 0xFFFF_FFFF:
                raise ValueError("fw_cfg lazy item larger than 4 GiB")
            self._data = produced
            self._producer = None
        return self._data


@dataclass
class FwCfgState:
    """Guest-visible state of the fw_cfg pair: what ``snapshot``/``restore`` carry.

    The item contents themselves are configuration set up by the machine builder (and rebuilt
    the same way on restore), except for writable items, whose contents the guest may change
    through DMA: those travel in ``writable`` (by key).
    """

    selector: int = FW_CFG_SIGNATURE
    offset: int = 0
    dma_addr: int = 0
    writable: dict[int, bytes] = field(default_factory=dict)


class FwCfg:
    """The fw_cfg item store and its selector/data port pair (see the module docstring).

    Construct it with the DmaSpace of its requester (guest RAM without an IOMMU); register
    ``fw_cfg`` at ``layout.FW_CFG_PORT`` (length 2, sizes ``FwCfg.SIZES``) and ``fw_cfg.dma_port``
    at ``layout.FW_CFG_DMA_PORT`` (length 8, sizes ``FwCfgDma.SIZES``).
    """

    #: Access sizes the port pair accepts: 16-bit selector writes and 8-bit data reads.
    SIZES = (1, 2)
    LENGTH = 2

    def __init__(self, dma: DmaSpace, *, dma_enabled: bool = True) -> None:
        self.dma = dma
        self.dma_enabled = dma_enabled
        self._items: dict[int, _Item] = {}
        self._files: dict[str, _Item] = {}
        self._file_keys: dict[str, int] = {}
        self._file_order: list[str] = []
        self._dir_item: _Item | None = None
        self.state = FwCfgState()
        self.dma_port = FwCfgDma(self)

        features = FW_CFG_VERSION_TRADITIONAL | (FW_CFG_VERSION_DMA if dma_enabled else 0)
        self.add_item(FW_CFG_SIGNATURE, b"QEMU")
        self.add_item(FW_CFG_ID, struct.pack("<I", features))
        self.add_item(FW_CFG_UUID, bytes(16))
        self.add_item(FW_CFG_NUMA, struct.pack("<Q", 0))
        self.set_ram_size(0)
        self.set_cpus(1)
        self.set_nographic(False)
        self.set_boot_menu(False)

    # -- configuration (machine builder) ---------------------------------------------------
    def add_item(self, key: int, data: ItemData, *, size: int | None = None) -> None:
        """Set a numbered item (replacing any earlier one). Files use ``add_file`` instead."""
        key = self._canonical(key)
        if key == FW_CFG_FILE_DIR or FW_CFG_FILE_FIRST <= key < FW_CFG_ARCH_LOCAL:
            raise ValueError(f"fw_cfg key {key:#x} belongs to the file directory; use add_file")
        self._items[key] = _Item(data, size=size)

    def add_file(
        self,
        name: str,
        data: ItemData,
        writable: bool = False,
        *,
        size: int | None = None,
        on_write: Callable[[int, int], None] | None = None,
    ) -> None:
        """Add a named file; keys from 0x20 are assigned in name order (as QEMU does).

        ``data`` may be a callable producing the bytes on first use; give ``size`` as well and
        even listing the directory will not produce it. ``on_write(offset, length)`` is called
        after the guest wrote into a writable file (e.g. a WRITE_POINTER target).
        """
        encoded = name.encode("ascii")
        if not encoded or len(encoded) >= FILE_NAME_MAX or b"\0" in encoded:
            raise ValueError(f"fw_cfg file name {name!r} must be 1..{FILE_NAME_MAX - 1} ASCII characters")
        if name in self._files:
            raise ValueError(f"duplicate fw_cfg file {name!r}")
        if FW_CFG_FILE_FIRST + len(self._files) >= FW_CFG_WRITE_CHANNEL:
            raise ValueError("fw_cfg file directory is full")
        self._files[name] = _Item(data, writable=writable, size=size, on_write=on_write)
        self._files_changed()

    def replace_file(self, name: str, data: ItemData, *, size: int | None = None) -> None:
        """Replace a file's contents (e.g. tables rebuilt at reset), keeping its key."""
        old = self._files[name]
        self._files[name] = _Item(data, writable=old.writable, size=size, on_write=old.on_write)
        self._dir_item = None

    def set_cpus(self, n: int, max_cpus: int | None = None) -> None:
        """NB_CPUS and MAX_CPUS (le16). SeaBIOS waits until exactly this many CPUs answered."""
        if not 1 <= n <= 0xFFFF:
            raise ValueError(f"cpu count {n} out of range")
        max_cpus = n if max_cpus is None else max_cpus
        if not n <= max_cpus <= 0xFFFF:
            raise ValueError(f"max_cpus {max_cpus} must be >= cpus {n}")
        self.add_item(FW_CFG_NB_CPUS, struct.pack("<H", n))
        self.add_item(FW_CFG_MAX_CPUS, struct.pack("<H", max_cpus))

    def set_ram_size(self, size: int) -> None:
        """RAM_SIZE (le64). SeaBIOS ignores it (it reads etc/e820); Linux's driver shows it."""
        self.add_item(FW_CFG_RAM_SIZE, struct.pack("<Q", size))

    def set_nographic(self, on: bool) -> None:
        """NOGRAPHIC (le16): non-zero makes SeaBIOS put its console on COM1 (sercon)."""
        self.add_item(FW_CFG_NOGRAPHIC, struct.pack("<H", int(on)))

    def set_boot_menu(self, on: bool) -> None:
        """BOOT_MENU (le16): 0 stops SeaBIOS's 2.5 s "Press ESC for boot menu" wait."""
        self.add_item(FW_CFG_BOOT_MENU, struct.pack("<H", int(on)))

    def set_uuid(self, uuid: bytes) -> None:
        if len(uuid) != 16:
            raise ValueError("UUID must be 16 bytes")
        self.add_item(FW_CFG_UUID, uuid)

    # -- lookup ----------------------------------------------------------------------------
    def file_key(self, name: str) -> int:
        """The selector key of a named file (what the directory tells the guest)."""
        return self._file_keys[name]

    def file_names(self) -> list[str]:
        """File names in directory (key) order."""
        return list(self._file_order)

    def item_bytes(self, key: int) -> bytes | None:
        """The current contents of an item (for tests and tracing); None if it does not exist."""
        item = self._lookup(self._canonical(key))
        return None if item is None else bytes(item.data)

    def file_bytes(self, name: str) -> bytes:
        return bytes(self._files[name].data)

    @staticmethod
    def _canonical(key: int) -> int:
        return key & 0xFFFF & ~FW_CFG_WRITE_CHANNEL

    def _files_changed(self) -> None:
        self._file_order = sorted(self._files)
        self._file_keys = {n: FW_CFG_FILE_FIRST + i for i, n in enumerate(self._file_order)}
        self._dir_item = None

    def _directory(self) -> _Item:
        if self._dir_item is None:
            out = bytearray(struct.pack(">I", len(self._file_order)))
            for name in self._file_order:
                out += _DIR_ENTRY.pack(self._files[name].size, self._file_keys[name], 0, name.encode("ascii"))
            self._dir_item = _Item(bytes(out))
        return self._dir_item

    def _lookup(self, key: int) -> _Item | None:
        if key == FW_CFG_FILE_DIR:
            return self._directory() if self._files else None
        if FW_CFG_FILE_FIRST <= key < FW_CFG_ARCH_LOCAL:
            index = key - FW_CFG_FILE_FIRST
            return self._files[self._file_order[index]] if index < len(self._file_order) else None
        return self._items.get(key)

    # -- the selector / data ports ----------------------------------------------------------
    def select(self, key: int) -> None:
        """Select an item and rewind it (what a 16-bit selector write does)."""
        self.state.selector = self._canonical(key)
        self.state.offset = 0

    def read(self, offset: int, size: int) -> int:
        """An 8-bit read returns the next byte of the selected item, 0 past its end."""
        if size != 1:
            return (1 << (8 * size)) - 1  # not an access this register decodes
        item = self._lookup(self.state.selector)
        if item is None or self.state.offset >= item.size:
            return 0
        value = item.data[self.state.offset]
        self.state.offset += 1
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """A 16-bit write selects; 8-bit data writes are ignored as in QEMU >= 2.4."""
        if size == 2 and offset == 0:
            self.select(value)

    # -- DMA --------------------------------------------------------------------------------
    def dma_transfer(self, desc_addr: int) -> None:
        """Run one FWCfgDmaAccess at ``desc_addr`` and write its control word back."""
        try:
            control, length, address = _DMA_ACCESS.unpack(self.dma.read(desc_addr, _DMA_ACCESS.size))
        except DmaFault:
            self._dma_status(desc_addr, DMA_CTL_ERROR)
            return

        if control & DMA_CTL_SELECT:
            self.select(control >> 16)
        if control & DMA_CTL_READ:
            op = DMA_CTL_READ
        elif control & DMA_CTL_WRITE:
            op = DMA_CTL_WRITE
        elif control & DMA_CTL_SKIP:
            op = DMA_CTL_SKIP
        else:
            op, length = 0, 0

        self._dma_status(desc_addr, self._dma_op(op, length, address))

    def _dma_op(self, op: int, length: int, address: int) -> int:
        """Move ``length`` bytes; returns the control word to write back (0 or the error bit).

        Mirrors QEMU's loop: the part inside the item first (the offset advances over it even
        if the guest memory access fails), then, for a read, zeros for the part past the end.
        """
        if length == 0:
            return 0
        st = self.state
        item = self._lookup(st.selector)
        avail = 0 if item is None else max(0, item.size - st.offset)
        n = min(length, avail)
        status = 0
        if n:
            assert item is not None
            start = st.offset
            try:
                if op == DMA_CTL_READ:
                    self.dma.write(address, bytes(item.data[start : start + n]))
                elif op == DMA_CTL_WRITE:
                    # Only writable items, and only when the whole write fits inside the item.
                    if not item.writable or n != length:
                        status = DMA_CTL_ERROR
                    else:
                        item.data[start : start + n] = self.dma.read(address, n)
                        if item.on_write is not None:
                            item.on_write(start, n)
            except DmaFault:
                status = DMA_CTL_ERROR
            st.offset += n
        if status or n == length:
            return status
        # Past the end of the item, or no item: reads fill zeros, writes fail, skips do nothing.
        if op == DMA_CTL_WRITE:
            return DMA_CTL_ERROR
        if op == DMA_CTL_READ:
            # In bounded chunks: the guest picks the length (up to 4 GiB).
            pos, end = address + n, address + length
            try:
                while pos < end:
                    chunk = min(end - pos, _ZERO_CHUNK)
                    self.dma.write(pos, bytes(chunk))
                    pos += chunk
            except DmaFault:
                return DMA_CTL_ERROR
        return 0

    def _dma_status(self, desc_addr: int, control: int) -> None:
        try:
            self.dma.write(desc_addr, struct.pack(">I", control))
        except DmaFault:
            pass  # nowhere to report it: the guest pointed us at memory we cannot touch

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on state: the signature selected (QEMU's reset), no DMA address latched."""
        self.state.selector = FW_CFG_SIGNATURE
        self.state.offset = 0
        self.state.dma_addr = 0

    def snapshot(self) -> FwCfgState:
        """The guest-visible state, including what the guest wrote into writable files."""
        writable = {
            key: bytes(self._files[name].data)
            for name, key in self._file_keys.items()
            if self._files[name].writable
        }
        return FwCfgState(self.state.selector, self.state.offset, self.state.dma_addr, writable)

    def restore(self, state: FwCfgState) -> None:
        for name, key in self._file_keys.items():
            if key in state.writable:
                item = self._files[name]
                if len(state.writable[key]) != item.size:
                    raise ValueError(f"fw_cfg restore: size of {name!r} differs from the snapshot")
                item.data[:] = state.writable[key]
        self.state = FwCfgState(state.selector, state.offset, state.dma_addr)


class FwCfgDma:
    """The fw_cfg DMA address register: 8 big-endian bytes at ``layout.FW_CFG_DMA_PORT``.

    Register it only when the ``FwCfg`` was built with ``dma_enabled`` (the default): FW_CFG_ID
    tells the guest whether it exists.
    """

    #: 32-bit port writes from x86 guests; 8 bytes when mapped as MMIO on other buses.
    SIZES = (1, 2, 4, 8)
    LENGTH = 8

    def __init__(self, fw_cfg: FwCfg) -> None:
        self.fw_cfg = fw_cfg

    def read(self, offset: int, size: int) -> int:
        """The bytes of "QEMU CFG" at these port offsets, in port order (little-endian value)."""
        return int.from_bytes(DMA_SIGNATURE[offset : offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """High half at +0 latches; low half at +4 (or all 8 bytes at +0) starts the transfer."""
        fw = self.fw_cfg
        st = fw.state
        # The register is big-endian: the guest's first port byte is the most significant.
        be = int.from_bytes(value.to_bytes(size, "little"), "big")
        if size == 4 and offset == 0:
            st.dma_addr = be << 32
        elif size == 4 and offset == 4:
            addr = st.dma_addr | be
            st.dma_addr = 0  # cleared before every transfer: SeaBIOS writes only the low half
            fw.dma_transfer(addr)
        elif size == 8 and offset == 0:
            st.dma_addr = 0
            fw.dma_transfer(be)


# --- Helpers for the files firmware reads -------------------------------------------------
def e820_table(entries: Iterable[tuple[int, int, int]]) -> bytes:
    """``etc/e820``: packed ``{le64 addr, le64 len, le32 type}`` entries, 20 bytes each."""
    out = bytearray()
    for addr, length, kind in entries:
        out += _E820_ENTRY.pack(addr, length, kind)
    return bytes(out)


def bootorder(paths: Sequence[str], halt: bool = False) -> bytes:
    """``bootorder``: OpenFirmware-style device paths, one per line, NUL-terminated.

    ``halt`` appends ``HALT``, which makes SeaBIOS try only the listed devices.
    """
    lines = list(paths) + (["HALT"] if halt else [])
    for p in lines:
        if "\n" in p or "\0" in p:
            raise ValueError(f"boot path {p!r} contains a newline or NUL")
    return ("\n".join(lines) + "\0").encode("ascii")
