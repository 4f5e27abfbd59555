"""PCI configuration space as data: identity, masks, sub-dword accesses, BAR and ROM sizing the
way SeaBIOS's pci_bios_get_bar and Linux's __pci_read_base do it, capabilities, hooks, state."""

from __future__ import annotations

import random

import pytest

from kvmpy.devices.pci import config as c
from kvmpy.devices.pci.config import BarKind, PciConfig


def make(**kw: object) -> PciConfig:
    args: dict[str, object] = {
        "revision": 0x11,
        "prog_if": 0x8A,
        "subsystem_vendor_id": 0x1AF4,
        "subsystem_id": 0x1100,
        "interrupt_pin": 1,
    }
    args.update(kw)
    return PciConfig(0x8086, 0x7010, 0x0101, **args)  # type: ignore[arg-type]


def size_bar(cfg: PciConfig, reg: int) -> tuple[int, bool]:
    """SeaBIOS's pci_bios_get_bar: save, write all-ones, read, restore; (size, is64)."""
    old = cfg.read(reg, 4)
    if old & c.BAR_SPACE_IO:
        mask, is64 = 0xFFFF_FFFC, False
    else:
        mask, is64 = 0xFFFF_FFF0, (old & 0x6) == c.BAR_MEM_TYPE_64
    cfg.write(reg, 4, 0xFFFF_FFFF)
    val = cfg.read(reg, 4)
    cfg.write(reg, 4, old)
    if is64:
        hold = cfg.read(reg + 4, 4)
        cfg.write(reg + 4, 4, 0xFFFF_FFFF)
        val |= cfg.read(reg + 4, 4) << 32
        cfg.write(reg + 4, 4, hold)
        return (~(val & (mask | 0xFFFF_FFFF << 32)) + 1) & (1 << 64) - 1, True
    return (~(val & mask) + 1) & 0xFFFF_FFFF, False


def linux_size(base: int, maxbase: int, mask: int) -> int:
    """Linux's pci_size(): the lowest set bit of the writable address bits."""
    size = mask & maxbase
    if not size:
        return 0
    return size & ~(size - 1)


# --- identity and the header -----------------------------------------------------------------
def test_identity_reads_at_every_width() -> None:
    cfg = make()
    assert cfg.read(0x00, 4) == 0x7010_8086
    assert cfg.read(0x00, 2) == 0x8086 and cfg.read(0x02, 2) == 0x7010
    assert cfg.read(0x01, 1) == 0x80 and cfg.read(0x03, 1) == 0x70
    assert cfg.read(0x08, 4) == 0x0101_8A11  # class 01 sub 01 prog-if 8a rev 11
    assert cfg.read(0x0A, 2) == 0x0101 and cfg.read(0x09, 1) == 0x8A
    assert cfg.read(0x2C, 4) == 0x1100_1AF4
    assert cfg.read(0x0E, 1) == 0 and cfg.read(0x3D, 1) == 1
    # reads are consistent whatever the width or alignment
    for off in range(0, 0x40):
        assert cfg.read(off, 1) == (cfg.read(off & ~3, 4) >> (8 * (off & 3))) & 0xFF


def test_read_only_identity_and_header_type() -> None:
    cfg = make(multifunction=True)
    before = cfg.snapshot()
    for off in (0x00, 0x08, 0x0E, 0x2C, 0x3D):
        cfg.write(off, 4, 0xFFFF_FFFF) if off % 4 == 0 else cfg.write(off, 1, 0xFF)
    assert cfg.read(0x00, 4) == 0x7010_8086
    assert cfg.read(0x0E, 1) == 0x80
    assert cfg.read(0x3D, 1) == 1
    assert cfg.read(0x08, 4) == int.from_bytes(before[8:12], "little")


def test_command_writable_mask_and_byte_lanes() -> None:
    cfg = make()
    cfg.write(c.COMMAND, 2, 0xFFFF)
    assert cfg.command == c.CMD_DEFAULT_WMASK
    cfg.write(c.COMMAND, 2, 0)
    cfg.write(c.COMMAND + 1, 1, 0x04)  # high byte only: INTx disable
    assert cfg.command == c.CMD_INTX_DISABLE
    cfg.write(c.COMMAND, 1, 0x07)  # low byte only: the high byte stays
    assert cfg.command == c.CMD_INTX_DISABLE | 0x7
    cfg.write(c.COMMAND, 4, 0x0000_0002)  # dword through COMMAND+STATUS
    assert cfg.command == c.CMD_MEMORY


def test_status_is_write_one_to_clear() -> None:
    cfg = make()
    errors = c.STS_REC_MASTER_ABORT | c.STS_SIG_TARGET_ABORT | c.STS_DETECTED_PARITY
    cfg.set_status_bits(errors | c.STS_INTERRUPT)
    cfg.write(c.STATUS, 2, 0)  # writing zeros clears nothing
    assert cfg.status & errors == errors
    cfg.write(c.STATUS, 2, c.STS_REC_MASTER_ABORT | c.STS_INTERRUPT)  # INTx status is read-only
    assert cfg.status == (errors & ~c.STS_REC_MASTER_ABORT) | c.STS_INTERRUPT
    cfg.write(c.STATUS + 1, 1, 0xFF)  # byte access clears the rest of the high byte
    assert cfg.status == c.STS_INTERRUPT
    cfg.write(c.COMMAND, 4, c.CMD_IO | 0xFFFF_0000)  # a dword writing command and clearing status
    assert cfg.command == c.CMD_IO and cfg.status == c.STS_INTERRUPT


def test_interrupt_line_latency_cache_line_are_storage() -> None:
    cfg = make()
    cfg.write(c.INTERRUPT_LINE, 1, 11)
    cfg.write(c.CACHE_LINE_SIZE, 2, 0x4010)
    assert cfg.read(c.INTERRUPT_LINE, 1) == 11
    assert cfg.read(c.CACHE_LINE_SIZE, 2) == 0x4010
    cfg.write(0x3C, 4, 0xFFFF_FF05)  # line, pin (RO), min_gnt, max_lat (RO)
    assert cfg.read(0x3C, 4) == 0x0000_0105


def test_device_area_read_only_unless_declared() -> None:
    cfg = make()
    cfg.write(0x40, 4, 0xFFFF_FFFF)
    assert cfg.read(0x40, 4) == 0
    cfg.declare(0x40, 2, 0x8000, wmask=0xF0FF)
    cfg.write(0x40, 2, 0xFFFF)
    assert cfg.read(0x40, 2) == 0xF0FF
    loose = make(device_area_writable=True)
    loose.write(0xF0, 4, 0x1234_5678)
    assert loose.read(0xF0, 4) == 0x1234_5678
    loose.write(0x3C, 1, 0x22)
    assert loose.read(0x00, 4) == 0x7010_8086  # the header keeps its masks


# --- BARs --------------------------------------------------------------------------------------
def bar_config() -> PciConfig:
    cfg = make()
    cfg.add_bar(0, BarKind.IO, 0x20)
    cfg.add_bar(1, BarKind.MEM32, 0x1000)
    cfg.add_bar(2, BarKind.MEM64, 0x10_0000, prefetchable=True)
    cfg.add_bar(4, BarKind.MEM64, 8 << 30)
    return cfg


def test_bar_flags_and_all_ones_readback() -> None:
    cfg = bar_config()
    assert cfg.read(0x10, 4) == 0x1
    assert cfg.read(0x14, 4) == 0x0
    assert cfg.read(0x18, 4) == 0xC and cfg.read(0x1C, 4) == 0
    assert cfg.read(0x20, 4) == 0x4
    for reg in range(0x10, 0x28, 4):
        cfg.write(reg, 4, 0xFFFF_FFFF)
    assert cfg.read(0x10, 4) == 0xFFFF_FFE1
    assert cfg.read(0x14, 4) == 0xFFFF_F000
    assert cfg.read(0x18, 4) == 0xFFF0_000C and cfg.read(0x1C, 4) == 0xFFFF_FFFF
    assert cfg.read(0x20, 4) == 0x0000_0004 and cfg.read(0x24, 4) == 0xFFFF_FFFE


def test_seabios_and_linux_sizing_agree() -> None:
    cfg = bar_config()
    assert size_bar(cfg, 0x10) == (0x20, False)
    assert size_bar(cfg, 0x14) == (0x1000, False)
    assert size_bar(cfg, 0x18) == (0x10_0000, True)
    assert size_bar(cfg, 0x20) == (8 << 30, True)
    # the original (zero) values are back after sizing
    assert cfg.read(0x10, 4) == 0x1 and cfg.read(0x14, 4) == 0
    # Linux: l = read, write ~0, sz = read; size = lowest set bit of (sz & mask)
    cfg.write(0x10, 4, 0xFFFF_FFFF)
    assert linux_size(0, cfg.read(0x10, 4), 0xFFFF_FFFC) == 0x20
    # an undeclared BAR sizes to 0 (SeaBIOS skips it)
    empty = make()
    assert size_bar(empty, 0x14)[0] == 0


def test_bar_programming_and_addresses() -> None:
    cfg = bar_config()
    cfg.write(0x10, 4, 0xC041)  # low bits and misaligned address bits are dropped
    cfg.write(0x14, 4, 0xFEBF_1234)
    cfg.write(0x18, 4, 0x0)
    cfg.write(0x1C, 4, 0x8)
    assert cfg.bar_address(0) == 0xC040
    assert cfg.bar_address(1) == 0xFEBF_1000
    assert cfg.bar_address(2) == 0x8_0000_0000
    # byte and word writes to a BAR work lane by lane
    cfg.write(0x15, 1, 0x20)
    assert cfg.bar_address(1) == 0xFEBF_2000
    cfg.write(0x16, 2, 0xE000)
    assert cfg.bar_address(1) == 0xE000_2000


def test_mapped_address_rules() -> None:
    cfg = bar_config()
    cfg.write(0x10, 4, 0xC040)
    cfg.write(0x14, 4, 0xFEBF_0000)
    cfg.write(0x18, 4, 0xE000_0000)
    cfg.write(0x20, 4, 0)
    cfg.write(0x24, 4, 0x4)  # 16 GiB
    assert [cfg.mapped_address(i) for i in (0, 1, 2, 4)] == [None] * 4  # decoding off
    cfg.write(c.COMMAND, 2, c.CMD_IO)
    assert cfg.mapped_address(0) == 0xC040 and cfg.mapped_address(1) is None
    cfg.write(c.COMMAND, 2, c.CMD_IO | c.CMD_MEMORY)
    assert cfg.mapped_address(1) == 0xFEBF_0000
    assert cfg.mapped_address(2) == 0xE000_0000
    assert cfg.mapped_address(4) == 0x4_0000_0000
    assert cfg.mapped_address(3) is None  # the upper half of a 64-bit BAR is not a BAR
    # address 0 is "unassigned"
    cfg.write(0x14, 4, 0)
    assert cfg.mapped_address(1) is None
    # the sizing pattern (all-ones) is never decoded, for 32- and 64-bit BARs
    cfg.write(0x14, 4, 0xFFFF_FFFF)
    cfg.write(0x18, 4, 0xFFFF_FFFF)
    cfg.write(0x1C, 4, 0)
    assert cfg.mapped_address(1) is None and cfg.mapped_address(2) is None
    cfg.write(0x1C, 4, 0xFFFF_FFFF)
    assert cfg.mapped_address(2) is None  # beyond the MMIO bus
    # I/O beyond the 64 KiB port space
    cfg.write(0x10, 4, 0x1_0000)
    assert cfg.mapped_address(0) is None
    cfg.write(0x10, 4, 0xFFE0)
    assert cfg.mapped_address(0) == 0xFFE0


# --- expansion ROM -------------------------------------------------------------------------------
def test_rom_bar_sizing_and_enable() -> None:
    cfg = make()
    rom = cfg.set_rom(b"\x55\xaa" + bytes(39934))
    assert rom.size == 0x1_0000
    cfg.write(c.ROM_ADDRESS, 4, c.ROM_ADDRESS_MASK)  # SeaBIOS: PCI_ROM_ADDRESS_MASK
    assert cfg.read(c.ROM_ADDRESS, 4) == 0xFFFF_0000
    cfg.write(c.ROM_ADDRESS, 4, 0xFFFF_FFFF)
    assert cfg.read(c.ROM_ADDRESS, 4) == 0xFFFF_0001
    cfg.write(c.ROM_ADDRESS, 4, 0xFEB8_0000)
    cfg.write(c.COMMAND, 2, c.CMD_MEMORY)
    assert cfg.mapped_address(c.ROM_SLOT) is None  # enable bit clear
    cfg.write(c.ROM_ADDRESS, 1, 0x01)
    assert cfg.mapped_address(c.ROM_SLOT) == 0xFEB8_0000
    cfg.write(c.COMMAND, 2, 0)
    assert cfg.mapped_address(c.ROM_SLOT) is None
    small = make()
    assert small.set_rom(b"x").size == 0x800
    assert make().read(c.ROM_ADDRESS, 4) == 0  # no ROM: hardwired zero


# --- capabilities ---------------------------------------------------------------------------------
def walk_caps(cfg: PciConfig) -> list[tuple[int, int]]:
    assert cfg.read(c.STATUS, 2) & c.STS_CAP_LIST
    out, ptr = [], cfg.read(c.CAPABILITY_LIST, 1)
    while ptr:
        out.append((ptr, cfg.read(ptr, 1)))
        ptr = cfg.read(ptr + 1, 1)
    return out


def test_capability_list_is_linked_and_read_only() -> None:
    sent: list[tuple[int, int]] = []
    cfg = make()
    assert not cfg.read(c.STATUS, 2) & c.STS_CAP_LIST and cfg.read(c.CAPABILITY_LIST, 1) == 0
    pm = cfg.add_pm()
    msi = cfg.add_msi(lambda a, d: sent.append((a, d)))
    vendor = cfg.add_capability(c.CAP_ID_VENDOR, 8, offset=0xC0)
    assert walk_caps(cfg) == [(pm.offset, c.CAP_ID_PM), (msi.offset, c.CAP_ID_MSI), (vendor, c.CAP_ID_VENDOR)]
    assert pm.offset == 0x40 and msi.offset == 0x48
    assert cfg.find_capability(c.CAP_ID_MSI) == msi.offset
    cfg.write(pm.offset, 2, 0xFFFF)  # id and next pointer are read-only
    assert walk_caps(cfg)[0] == (0x40, c.CAP_ID_PM)
    with pytest.raises(ValueError):
        cfg.add_capability(c.CAP_ID_VENDOR, 8, offset=0xC4)  # overlaps
    with pytest.raises(ValueError):
        cfg.add_msi(lambda a, d: None)


def test_msi_64bit_with_per_vector_masking() -> None:
    sent: list[tuple[int, int]] = []
    cfg = make()
    msi = cfg.add_msi(lambda a, d: sent.append((a, d)), vectors=4, per_vector_mask=True)
    o = msi.offset
    ctrl = cfg.read(o + 2, 2)
    assert ctrl == (2 << 1) | msi.CTRL_64BIT | msi.CTRL_MASKBIT
    assert not msi.notify(0) and sent == []  # disabled
    cfg.write(o + 4, 4, 0xFEE0_100F)  # low two bits reserved
    cfg.write(o + 8, 4, 0x1)
    cfg.write(o + 0xC, 2, 0x4120)
    assert msi.address == 0x1_FEE0_100C and msi.data == 0x4120
    cfg.write(o + 2, 2, 0x0071)  # enable, ask for 128 vectors: clamped to the 4 offered
    assert msi.enabled and msi.enabled_vectors == 4
    assert msi.notify(2)
    assert sent == [(0x1_FEE0_100C, 0x4122)]
    cfg.write(o + 0x10, 4, 0xFFFF_FFFF)  # mask: only 4 bits exist
    assert cfg.read(o + 0x10, 4) == 0xF
    msi.notify(1)
    msi.notify(3)
    assert len(sent) == 1 and cfg.read(o + 0x14, 4) == 0b1010
    cfg.write(o + 0x14, 4, 0)  # pending bits are read-only
    assert msi.pending(1) and msi.pending(3)
    cfg.write(o + 0x10, 1, 0b0101)  # unmask 1 and 3: both delivered, pending cleared
    assert sent[1:] == [(0x1_FEE0_100C, 0x4121), (0x1_FEE0_100C, 0x4123)]
    assert cfg.read(o + 0x14, 4) == 0


def test_msi_32bit_layout() -> None:
    sent: list[tuple[int, int]] = []
    cfg = make()
    msi = cfg.add_msi(lambda a, d: sent.append((a, d)), addr64=False)
    o = msi.offset
    assert cfg.read(o + 2, 2) == 0  # 1 vector, 32-bit, no masking
    cfg.write(o + 4, 4, 0xFEE0_0000)
    cfg.write(o + 8, 2, 0x0031)
    cfg.write(o + 2, 2, 0x0071)
    assert msi.enabled_vectors == 1
    msi.notify(0)
    assert sent == [(0xFEE0_0000, 0x0031)]
    assert cfg.capabilities[o] == (c.CAP_ID_MSI, 0x0A)


def test_pm_power_state_gates_decoding() -> None:
    cfg = make()
    pm = cfg.add_pm(d2=True)
    cfg.add_bar(1, BarKind.MEM32, 0x1000)
    calls: list[int] = []
    cfg.decode_listeners.append(lambda: calls.append(pm.power_state))
    cfg.write(0x14, 4, 0xFEB0_0000)
    cfg.write(c.COMMAND, 2, c.CMD_MEMORY)
    calls.clear()
    assert cfg.read(pm.offset + 2, 2) == 0x0403  # version 1.2, D2 support
    assert cfg.read(pm.offset + 4, 2) == 0x0008  # D0, No_Soft_Reset
    cfg.write(pm.offset + 4, 2, 0x0003)
    assert pm.power_state == 3 and cfg.mapped_address(1) is None and calls == [3]
    cfg.write(pm.offset + 4, 2, 0x0001)  # D1 not supported: discarded
    assert pm.power_state == 3 and calls == [3]
    cfg.write(pm.offset + 4, 2, 0x0002)
    assert pm.power_state == 2
    cfg.write(pm.offset + 4, 1, 0x00)
    assert pm.power_state == 0 and cfg.mapped_address(1) == 0xFEB0_0000
    assert cfg.read(c.BAR0 + 4, 4) == 0xFEB0_0000  # configuration survives D3hot -> D0


# --- hooks -------------------------------------------------------------------------------------------
def test_write_hooks_see_the_access_and_the_old_value() -> None:
    cfg = make(device_area_writable=True)
    seen: list[tuple[int, int, int, int]] = []
    cfg.declare(0x44, 4, 0x1111_1111, wmask=0xFFFF_FFFF)
    cfg.on_write(0x44, 4, lambda o, s, v: seen.append((o, s, v, cfg.previous(0x44, 4))))
    cfg.write(0x40, 4, 0xAA)  # no overlap
    cfg.write(0x46, 1, 0x22)
    cfg.write(0x42, 4, 0x3333_4444)  # overlaps 0x44-0x45
    assert seen == [(0x46, 1, 0x22, 0x1111_1111), (0x42, 4, 0x3333_4444, 0x1122_1111)]
    assert cfg.read(0x44, 4) == 0x1122_3333


def test_read_hooks_refresh_before_the_read() -> None:
    cfg = make()
    ticks = iter(range(100, 200))
    cfg.on_read(0x50, 4, lambda o, s: cfg.set(0x50, 4, next(ticks)))
    assert cfg.read(0x50, 4) == 100
    assert cfg.read(0x52, 1) == 0  # the hook ran, the byte is part of the fresh value
    assert cfg.read(0x50, 1) == 102
    assert cfg.read(0x40, 4) == 0  # outside: no hook


def test_decode_listeners_fire_for_bars_rom_and_command() -> None:
    cfg = bar_config()
    cfg.set_rom(b"\x55\xaa")
    hits: list[int] = []
    cfg.decode_listeners.append(lambda: hits.append(1))
    for off, size in ((0x04, 2), (0x05, 1), (0x14, 4), (0x27, 1), (0x30, 4), (0x0C, 4)):
        cfg.write(off, size, 0)
    assert len(hits) == 4  # not COMMAND's high byte (INTx disable) nor the cache-line size


# --- bridge header -----------------------------------------------------------------------------------
def test_type1_bridge_basics() -> None:
    cfg = PciConfig(0x8086, 0x244E, 0x0604, header_type=c.HEADER_TYPE_BRIDGE)
    assert cfg.read(c.HEADER_TYPE, 1) == 1 and cfg.bar_count == 2 and cfg.rom_offset == 0x38
    cfg.write(c.PRIMARY_BUS, 4, 0x40_05_01_00)
    assert cfg.read(c.PRIMARY_BUS, 4) == 0x40_05_01_00
    cfg.write(c.IO_BASE, 2, 0xFFFF)
    assert cfg.read(c.IO_BASE, 2) == 0xF0F0  # 16-bit I/O decode
    cfg.write(c.PREF_MEMORY_BASE, 4, 0xFFFF_FFFF)
    assert cfg.read(c.PREF_MEMORY_BASE, 4) == 0xFFF1_FFF1  # 64-bit prefetchable window
    cfg.write(c.BRIDGE_CONTROL, 2, 0xFFFF)
    assert cfg.read(c.BRIDGE_CONTROL, 2) == c.BRIDGE_CTL_WMASK
    cfg.add_bar(1, BarKind.MEM32, 0x1000)
    with pytest.raises(ValueError):
        cfg.add_bar(2, BarKind.IO, 4)
    cfg.set_rom(b"\x55\xaa")
    cfg.write(0x38, 4, 0xFFFF_FFFF)
    assert cfg.read(0x38, 4) == 0xFFFF_F801


def test_declaration_errors() -> None:
    with pytest.raises(ValueError):
        PciConfig(0xFFFF, 0, 0)
    with pytest.raises(ValueError):
        PciConfig(0x8086, 0, 0, size=512)
    cfg = make()
    with pytest.raises(ValueError):
        cfg.add_bar(0, BarKind.MEM32, 0x1800)  # not a power of two
    with pytest.raises(ValueError):
        cfg.add_bar(5, BarKind.MEM64, 0x1000)  # needs slot 6
    with pytest.raises(ValueError):
        cfg.add_bar(0, BarKind.IO, 2)
    cfg.add_bar(2, BarKind.MEM64, 0x1000)
    with pytest.raises(ValueError):
        cfg.add_bar(3, BarKind.MEM32, 0x1000)  # upper half of BAR 2
    with pytest.raises(ValueError):
        cfg.declare(0x40, 1, wmask=1, w1cmask=1)


def test_4k_config_space() -> None:
    cfg = make(size=c.PCIE_CONFIG_SPACE_SIZE, device_area_writable=True)
    cfg.write(0xFFC, 4, 0xDEAD_BEEF)
    assert cfg.read(0xFFC, 4) == 0xDEAD_BEEF
    assert make().read(0x100, 4) == 0  # beyond a conventional space


# --- state ---------------------------------------------------------------------------------------------
def test_reset_snapshot_restore() -> None:
    cfg = bar_config()
    reset_image = cfg.snapshot()
    cfg.write(0x14, 4, 0xFEB0_0000)
    cfg.write(c.COMMAND, 2, 7)
    cfg.write(c.INTERRUPT_LINE, 1, 10)
    snap = cfg.snapshot()
    other = bar_config()
    other.restore(snap)
    assert other.snapshot() == snap and other.mapped_address(1) == 0xFEB0_0000
    cfg.reset()
    assert cfg.snapshot() == reset_image
    with pytest.raises(ValueError):
        cfg.restore(b"short")


def test_nonsense_never_raises() -> None:
    rng = random.Random(1)
    cfg = bar_config()
    cfg.add_msi(lambda a, d: None, vectors=8, per_vector_mask=True)
    cfg.add_pm(d1=True, d2=True, pme_support=0x1F)
    cfg.set_rom(bytes(5000))
    for _ in range(20000):
        off = rng.randrange(-4, 0x110)
        size = rng.choice((0, 1, 2, 3, 4, 8))
        if rng.random() < 0.5:
            cfg.write(off, size, rng.getrandbits(64))
        else:
            cfg.read(off, size)
        for i in (0, 1, 2, 4, c.ROM_SLOT):
            cfg.mapped_address(i)
    assert cfg.read(0, 4) == 0x7010_8086
