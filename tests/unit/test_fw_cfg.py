"""fw_cfg driven through the PIO bus the way SeaBIOS and Linux's qemu_fw_cfg driver drive it."""

from __future__ import annotations

import struct

import pytest

from kvmpy import layout
from kvmpy.devices import fw_cfg as fc
from kvmpy.devices.fw_cfg import FwCfg, FwCfgState, bootorder, e820_table
from kvmpy.hw.bus import PioBus
from kvmpy.hw.dma import BytearrayDmaSpace

SEL = layout.FW_CFG_PORT
DATA = layout.FW_CFG_PORT + 1
DMA_HI = layout.FW_CFG_DMA_PORT
DMA_LO = layout.FW_CFG_DMA_PORT + 4

DESC = 0x1000  # where tests put the FWCfgDmaAccess
BUF = 0x2000  # where DMA reads land


class Machine:
    """fw_cfg wired on a PIO bus over a 64 KiB bytearray of guest memory."""

    def __init__(self, mem_size: int = 0x10000) -> None:
        self.mem = BytearrayDmaSpace(mem_size)
        self.fw = FwCfg(self.mem)
        self.bus = PioBus()
        self.bus.register(SEL, FwCfg.LENGTH, self.fw, "fw_cfg", sizes=FwCfg.SIZES)
        self.bus.register(layout.FW_CFG_DMA_PORT, 8, self.fw.dma_port, "fw_cfg_dma", sizes=(1, 2, 4))

    # -- the traditional interface ---------------------------------------------------------
    def select(self, key: int) -> None:
        self.bus.write(SEL, 2, key)

    def read_bytes(self, n: int) -> bytes:
        return bytes(self.bus.read(DATA, 1) for _ in range(n))

    def read_item(self, key: int, n: int) -> bytes:
        self.select(key)
        return self.read_bytes(n)

    # -- the DMA interface -------------------------------------------------------------------
    def kick(self, desc_addr: int) -> None:
        """What SeaBIOS/Linux do: outl(be32(addr >> 32), 0x514); outl(be32(addr), 0x518)."""
        hi = struct.unpack("<I", struct.pack(">I", desc_addr >> 32))[0]
        lo = struct.unpack("<I", struct.pack(">I", desc_addr & 0xFFFF_FFFF))[0]
        self.bus.write(DMA_HI, 4, hi)
        self.bus.write(DMA_LO, 4, lo)

    def dma(self, control: int, length: int, address: int, desc: int = DESC) -> int:
        self.mem.mem[desc : desc + 16] = struct.pack(">IIQ", control, length, address)
        self.kick(desc)
        return struct.unpack(">I", self.mem.mem[desc : desc + 4])[0]

    def directory(self) -> list[tuple[int, int, str]]:
        self.select(fc.FW_CFG_FILE_DIR)
        (count,) = struct.unpack(">I", self.read_bytes(4))
        out = []
        for _ in range(count):
            size, select, reserved, name = struct.unpack(">IHH56s", self.read_bytes(64))
            assert reserved == 0
            out.append((size, select, name.rstrip(b"\0").decode()))
        return out


@pytest.fixture
def m() -> Machine:
    return Machine()


# --- traditional interface ------------------------------------------------------------------
def test_signature_and_id(m: Machine) -> None:
    assert m.read_item(fc.FW_CFG_SIGNATURE, 4) == b"QEMU"
    (ident,) = struct.unpack("<I", m.read_item(fc.FW_CFG_ID, 4))
    assert ident == 0x3  # traditional + DMA


def test_id_without_dma() -> None:
    fw = FwCfg(BytearrayDmaSpace(16), dma_enabled=False)
    assert fw.item_bytes(fc.FW_CFG_ID) == struct.pack("<I", 1)


def test_reset_selects_signature(m: Machine) -> None:
    m.select(fc.FW_CFG_NB_CPUS)
    m.read_bytes(1)
    m.fw.reset()
    assert m.read_bytes(4) == b"QEMU"  # no select needed after reset


def test_reads_past_end_return_zero_and_reselect_rewinds(m: Machine) -> None:
    assert m.read_item(fc.FW_CFG_SIGNATURE, 8) == b"QEMU\0\0\0\0"
    m.select(fc.FW_CFG_SIGNATURE)
    assert m.read_bytes(2) == b"QE"
    m.select(fc.FW_CFG_SIGNATURE)
    assert m.read_bytes(4) == b"QEMU"


def test_data_read_at_selector_offset_also_reads_data(m: Machine) -> None:
    m.select(fc.FW_CFG_SIGNATURE)
    assert m.bus.read(SEL, 1) == ord("Q")  # QEMU's combined x86 port: 8-bit reads are data
    assert m.bus.read(DATA, 1) == ord("E")


def test_unknown_key_reads_zero(m: Machine) -> None:
    assert m.read_item(0x0123, 4) == bytes(4)
    assert m.read_item(0x0020, 4) == bytes(4)  # no files yet
    assert m.read_item(fc.FW_CFG_FILE_DIR, 4) == bytes(4)


def test_data_writes_ignored_and_16bit_read_is_not_data(m: Machine) -> None:
    m.select(fc.FW_CFG_SIGNATURE)
    m.bus.write(DATA, 1, 0x55)
    assert m.bus.read(SEL, 2) == 0xFFFF
    assert m.read_bytes(4) == b"QEMU"


def test_write_channel_bit_ignored(m: Machine) -> None:
    assert m.read_item(fc.FW_CFG_SIGNATURE | 0x4000, 4) == b"QEMU"


def test_standard_items(m: Machine) -> None:
    m.fw.set_cpus(4)
    m.fw.set_ram_size(512 << 20)
    assert m.read_item(fc.FW_CFG_NB_CPUS, 2) == struct.pack("<H", 4)
    assert m.read_item(fc.FW_CFG_MAX_CPUS, 2) == struct.pack("<H", 4)
    assert m.read_item(fc.FW_CFG_RAM_SIZE, 8) == struct.pack("<Q", 512 << 20)
    assert m.read_item(fc.FW_CFG_NUMA, 8) == bytes(8)
    assert m.read_item(fc.FW_CFG_BOOT_MENU, 2) == bytes(2)
    assert m.read_item(fc.FW_CFG_NOGRAPHIC, 2) == bytes(2)
    assert m.read_item(fc.FW_CFG_UUID, 16) == bytes(16)
    m.fw.set_cpus(2, max_cpus=8)
    assert m.read_item(fc.FW_CFG_MAX_CPUS, 2) == struct.pack("<H", 8)
    m.fw.set_nographic(True)
    m.fw.set_boot_menu(True)
    assert m.read_item(fc.FW_CFG_NOGRAPHIC, 2) == struct.pack("<H", 1)
    assert m.read_item(fc.FW_CFG_BOOT_MENU, 2) == struct.pack("<H", 1)
    m.fw.set_uuid(bytes(range(16)))
    assert m.read_item(fc.FW_CFG_UUID, 16) == bytes(range(16))


def test_bad_configuration_refused(m: Machine) -> None:
    with pytest.raises(ValueError):
        m.fw.set_cpus(0)
    with pytest.raises(ValueError):
        m.fw.set_cpus(4, max_cpus=2)
    with pytest.raises(ValueError):
        m.fw.add_item(0x20, b"x")
    with pytest.raises(ValueError):
        m.fw.add_item(fc.FW_CFG_FILE_DIR, b"x")
    with pytest.raises(ValueError):
        m.fw.add_file("x" * 56, b"")
    with pytest.raises(ValueError):
        m.fw.add_file("", b"")
    with pytest.raises(ValueError):
        m.fw.set_uuid(b"short")
    m.fw.add_file("a", b"1")
    with pytest.raises(ValueError):
        m.fw.add_file("a", b"2")
    with pytest.raises(ValueError):
        m.fw.add_item(0x8000, b"12", size=3)


def test_arch_local_item(m: Machine) -> None:
    m.fw.add_item(0x8002, struct.pack("<I", 1))  # x86 IRQ0 override
    assert m.read_item(0x8002, 4) == struct.pack("<I", 1)


# --- file directory -----------------------------------------------------------------------------
def test_file_directory_layout_sorted_by_name(m: Machine) -> None:
    m.fw.add_file("etc/e820", bytes(40))
    m.fw.add_file("bootorder", b"/pci@i0cf8/*@2\0")
    m.fw.add_file("etc/acpi/tables", bytes(300))
    names = ["bootorder", "etc/acpi/tables", "etc/e820"]
    assert m.fw.file_names() == names
    assert m.directory() == [(15, 0x20, "bootorder"), (300, 0x21, "etc/acpi/tables"), (40, 0x22, "etc/e820")]
    # raw layout: be32 count, then 64-byte entries
    m.select(fc.FW_CFG_FILE_DIR)
    raw = m.read_bytes(4 + 3 * 64 + 4)
    assert raw[:4] == b"\0\0\0\x03"
    assert raw[4:8] == struct.pack(">I", 15) and raw[8:10] == b"\x00\x20" and raw[10:12] == b"\0\0"
    assert raw[12:21] == b"bootorder" and raw[21:68] == bytes(47)
    assert raw[4 + 3 * 64 :] == bytes(4)  # past the end
    for name in names:
        assert m.read_item(m.fw.file_key(name), 3) == m.fw.file_bytes(name)[:3]


def test_directory_updates_after_adding_and_replacing(m: Machine) -> None:
    m.fw.add_file("zz", b"1")
    assert m.directory() == [(1, 0x20, "zz")]
    m.fw.add_file("aa", b"22")
    assert m.directory() == [(2, 0x20, "aa"), (1, 0x21, "zz")]
    m.fw.replace_file("zz", b"333")
    assert m.directory() == [(2, 0x20, "aa"), (3, 0x21, "zz")]
    assert m.read_item(0x21, 3) == b"333"


def test_lazy_item_produced_once_and_size_known_without_producing(m: Machine) -> None:
    calls: list[int] = []

    def big() -> bytes:
        calls.append(1)
        return bytes(range(256)) * 16

    m.fw.add_file("kernel", big, size=4096)
    assert m.directory() == [(4096, 0x20, "kernel")]
    assert calls == []  # listing the directory did not build it
    assert m.read_item(0x20, 4) == bytes([0, 1, 2, 3])
    assert m.read_item(0x20, 4) == bytes([0, 1, 2, 3])
    assert calls == [1]

    late: list[int] = []

    def produce_late() -> bytes:
        late.append(1)
        return b"late"

    m.fw.add_item(0x8000, produce_late)  # no size: produced when first needed, not when added
    assert late == []
    assert m.read_item(0x8000, 5) == b"late\0"
    assert late == [1]


def test_lazy_item_size_mismatch_is_reported(m: Machine) -> None:
    m.fw.add_file("bad", lambda: b"123", size=4)
    m.select(0x20)
    with pytest.raises(ValueError):
        m.read_bytes(1)


# --- DMA interface ------------------------------------------------------------------------------
def test_dma_signature_read(m: Machine) -> None:
    # 8 byte-wide reads give "QEMU CFG" in port order; wider reads are little-endian values.
    assert bytes(m.bus.read(DMA_HI + i, 1) for i in range(8)) == b"QEMU CFG"
    hi = m.bus.read(DMA_HI, 4).to_bytes(4, "little")
    lo = m.bus.read(DMA_LO, 4).to_bytes(4, "little")
    assert int.from_bytes(hi + lo, "big") == 0x51454D5520434647
    assert m.bus.read(DMA_HI + 2, 2) == int.from_bytes(b"MU", "little")


def test_dma_select_and_read(m: Machine) -> None:
    m.fw.add_file("etc/e820", e820_table([(0, 0x9FC00, 1), (0x100000, 0x7F00000, 1)]))
    key = m.fw.file_key("etc/e820")
    ctl = m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ | (key << 16), 40, BUF)
    assert ctl == 0
    assert bytes(m.mem.mem[BUF : BUF + 40]) == m.fw.file_bytes("etc/e820")
    # the offset advanced: the next read continues (and past the end fills zeros)
    m.mem.mem[BUF : BUF + 8] = b"\xff" * 8
    assert m.dma(fc.DMA_CTL_READ, 8, BUF) == 0
    assert bytes(m.mem.mem[BUF : BUF + 8]) == bytes(8)


def test_dma_read_spanning_end_zero_fills(m: Machine) -> None:
    m.mem.mem[BUF : BUF + 8] = b"\xff" * 8
    ctl = m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ | (fc.FW_CFG_SIGNATURE << 16), 8, BUF)
    assert ctl == 0
    assert bytes(m.mem.mem[BUF : BUF + 8]) == b"QEMU\0\0\0\0"


def test_dma_read_unknown_item_zero_fills(m: Machine) -> None:
    m.mem.mem[BUF : BUF + 4] = b"\xff" * 4
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ | (0x1234 << 16), 4, BUF) == 0
    assert bytes(m.mem.mem[BUF : BUF + 4]) == bytes(4)


def test_dma_select_only(m: Machine) -> None:
    assert m.dma(fc.DMA_CTL_SELECT | (fc.FW_CFG_ID << 16), 100, BUF) == 0
    assert m.read_bytes(4) == struct.pack("<I", 3)  # selection visible to the data port


def test_dma_skip(m: Machine) -> None:
    m.fw.add_file("f", bytes(range(32)))
    key = m.fw.file_key("f")
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_SKIP | (key << 16), 10, BUF) == 0
    assert m.mem.mem[BUF] == 0  # a skip writes nothing
    assert m.dma(fc.DMA_CTL_READ, 4, BUF) == 0
    assert bytes(m.mem.mem[BUF : BUF + 4]) == bytes([10, 11, 12, 13])
    assert m.read_bytes(2) == bytes([14, 15])  # PIO continues at the same offset
    # skipping past the end clamps the offset at the end
    assert m.dma(fc.DMA_CTL_SKIP, 100, BUF) == 0
    assert m.fw.state.offset == 32


def test_dma_read_through_traditional_offset(m: Machine) -> None:
    m.select(fc.FW_CFG_SIGNATURE)
    assert m.read_bytes(1) == b"Q"
    assert m.dma(fc.DMA_CTL_READ, 3, BUF) == 0
    assert bytes(m.mem.mem[BUF : BUF + 3]) == b"EMU"


def test_dma_error_on_fault_of_destination(m: Machine) -> None:
    ctl = m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 4, 0xFFFF_0000)
    assert ctl == fc.DMA_CTL_ERROR


def test_dma_error_on_fault_of_descriptor_is_contained(m: Machine) -> None:
    m.kick(0x1_0000_0000)  # outside guest memory: nothing to read, nowhere to report
    m.kick(0xFFF8)  # descriptor straddles the end: the control word is written back as error
    assert struct.unpack(">I", m.mem.mem[0xFFF8:0xFFFC])[0] == fc.DMA_CTL_ERROR


class SparseDma:
    """A DmaSpace with pages anywhere in 64-bit space, to test descriptors above 4 GiB."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def _page(self, addr: int) -> bytearray:
        return self.pages.setdefault(addr >> 12, bytearray(4096))

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self._page(a)[a & 0xFFF] for a in range(addr, addr + length))

    def write(self, addr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self._page(addr + i)[(addr + i) & 0xFFF] = b


def test_dma_address_high_half() -> None:
    mem = SparseDma()
    fw = FwCfg(mem)
    bus = PioBus()
    bus.register(layout.FW_CFG_DMA_PORT, 8, fw.dma_port, sizes=(1, 2, 4))

    def be32(v: int) -> int:
        return struct.unpack("<I", struct.pack(">I", v))[0]

    desc = 0x1_2345_6000
    mem.write(desc, struct.pack(">IIQ", fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 4, 0x1_0000_1000))
    bus.write(DMA_HI, 4, be32(1))
    assert fw.state.dma_addr == 1 << 32
    bus.write(DMA_LO, 4, be32(0x2345_6000))
    assert mem.read(0x1_0000_1000, 4) == b"QEMU"
    assert mem.read(desc, 4) == bytes(4)  # control written back: success
    # the register is cleared by each transfer: a low-half-only kick stays below 4 GiB
    assert fw.state.dma_addr == 0
    mem.write(0x3000, struct.pack(">IIQ", fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 4, 0x3100))
    bus.write(DMA_LO, 4, be32(0x3000))
    assert mem.read(0x3100, 4) == b"QEMU"


def test_dma_8_byte_register_write() -> None:
    mem = BytearrayDmaSpace(0x10000)
    fw = FwCfg(mem)
    mem.mem[DESC : DESC + 16] = struct.pack(">IIQ", fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 4, BUF)
    fw.dma_port.write(0, 8, int.from_bytes(DESC.to_bytes(8, "big"), "little"))
    assert bytes(mem.mem[BUF : BUF + 4]) == b"QEMU"
    assert mem.mem[DESC : DESC + 4] == bytes(4)


def test_dma_other_writes_ignored(m: Machine) -> None:
    m.bus.write(DMA_HI + 1, 1, 0x12)
    m.bus.write(DMA_HI + 2, 2, 0x1234)
    assert m.fw.state.dma_addr == 0


def test_dma_no_operation_bits_is_success(m: Machine) -> None:
    assert m.dma(0, 16, BUF) == 0


def test_dma_write_to_read_only_item_errors(m: Machine) -> None:
    m.fw.add_file("ro", bytes(8))
    key = m.fw.file_key("ro")
    m.mem.mem[BUF : BUF + 4] = b"abcd"
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_WRITE | (key << 16), 4, BUF) == fc.DMA_CTL_ERROR
    assert m.fw.file_bytes("ro") == bytes(8)
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_WRITE | (0x1234 << 16), 4, BUF) == fc.DMA_CTL_ERROR


def test_dma_write_to_writable_item(m: Machine) -> None:
    seen: list[tuple[int, int]] = []
    m.fw.add_file("etc/vmgenid_addr", bytes(8), writable=True, on_write=lambda o, n: seen.append((o, n)))
    key = m.fw.file_key("etc/vmgenid_addr")
    m.mem.mem[BUF : BUF + 8] = b"12345678"
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_SKIP | (key << 16), 2, 0) == 0
    assert m.dma(fc.DMA_CTL_WRITE, 4, BUF) == 0
    assert m.fw.file_bytes("etc/vmgenid_addr") == b"\0\x001234\0\0"
    assert seen == [(2, 4)]
    # a write running past the end of the item fails and changes nothing
    assert m.dma(fc.DMA_CTL_WRITE, 4, BUF) == fc.DMA_CTL_ERROR
    assert m.fw.file_bytes("etc/vmgenid_addr") == b"\0\x001234\0\0"
    # a write whose source faults fails too
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_WRITE | (key << 16), 4, 0xFFFF_0000) == fc.DMA_CTL_ERROR


# --- snapshot / restore -----------------------------------------------------------------------------
def test_snapshot_restore(m: Machine) -> None:
    m.fw.add_file("w", bytes(4), writable=True)
    m.fw.add_file("r", b"read")
    key = m.fw.file_key("w")
    m.mem.mem[BUF : BUF + 4] = b"WXYZ"
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_WRITE | (key << 16), 4, BUF) == 0
    m.select(m.fw.file_key("r"))
    m.read_bytes(2)
    m.bus.write(DMA_HI, 4, 0x01000000)  # latched high half
    snap = m.fw.snapshot()
    assert snap == FwCfgState(selector=0x20, offset=2, dma_addr=1 << 32, writable={0x21: b"WXYZ"})

    other = Machine()
    other.fw.add_file("w", bytes(4), writable=True)
    other.fw.add_file("r", b"read")
    other.fw.restore(snap)
    assert other.fw.snapshot() == snap
    assert other.read_bytes(2) == b"ad"
    assert other.fw.file_bytes("w") == b"WXYZ"
    # the snapshot is a copy, not a view
    m.read_bytes(1)
    assert snap.offset == 2


def test_restore_size_mismatch_refused(m: Machine) -> None:
    m.fw.add_file("w", bytes(4), writable=True)
    with pytest.raises(ValueError):
        m.fw.restore(FwCfgState(writable={0x20: b"12"}))


# --- helpers ------------------------------------------------------------------------------------------
def test_e820_table_layout() -> None:
    blob = e820_table([(0, 0x9FC00, fc.E820_RAM), (0x9FC00, 0x400, fc.E820_RESERVED)])
    assert len(blob) == 40
    assert blob[:20] == struct.pack("<QQI", 0, 0x9FC00, 1)
    assert blob[20:] == struct.pack("<QQI", 0x9FC00, 0x400, 2)
    assert e820_table([]) == b""


def test_bootorder() -> None:
    assert bootorder(["/pci@i0cf8/*@2", "/pci@i0cf8/ide@1,1/drive@0/disk@0"]) == (
        b"/pci@i0cf8/*@2\n/pci@i0cf8/ide@1,1/drive@0/disk@0\0"
    )
    assert bootorder(["/pci@i0cf8/*@2"], halt=True) == b"/pci@i0cf8/*@2\nHALT\0"
    with pytest.raises(ValueError):
        bootorder(["a\nb"])


def test_dma_huge_read_past_end_faults_without_huge_allocation(m: Machine) -> None:
    # 4 GiB of zeros requested into 64 KiB of guest memory: error at the end of RAM, no MemoryError
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 0xFFFF_FFFF, BUF) == fc.DMA_CTL_ERROR
    assert bytes(m.mem.mem[BUF : BUF + 4]) == b"QEMU"


def test_dma_zero_fill_spanning_chunks() -> None:
    mem = BytearrayDmaSpace(0x40000)
    fw = FwCfg(mem)
    mem.mem[0x2000:0x31000] = b"\xff" * 0x2F000
    mem.mem[DESC : DESC + 16] = struct.pack(">IIQ", fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 0x2F000, 0x2000)
    fw.dma_port.write(4, 4, int.from_bytes(DESC.to_bytes(4, "big"), "little"))
    assert mem.mem[DESC : DESC + 4] == bytes(4)
    assert bytes(mem.mem[0x2000:0x2004]) == b"QEMU"
    assert bytes(mem.mem[0x2004:0x31000]) == bytes(0x2EFFC)
    assert mem.mem[0x31000] == 0


def test_dma_offset_advances_over_faulting_read_like_qemu(m: Machine) -> None:
    assert m.dma(fc.DMA_CTL_SELECT | fc.DMA_CTL_READ, 2, 0xFFFF_0000) == fc.DMA_CTL_ERROR
    assert m.fw.state.offset == 2
    assert m.read_bytes(2) == b"MU"
