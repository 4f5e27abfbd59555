"""The i440FX host bridge: identity, PAM transitions as SeaBIOS's shadow.c drives them (the
callbacks the machine turns into memslot switches), SMRAM, reset and snapshot/restore."""

from __future__ import annotations

import random

import pytest

from kvmpy.devices.pci import PAM_SEGMENTS, I440fx, PciBus
from kvmpy.devices.pci import i440fx as h
from kvmpy.hw.bus import MmioBus, PioBus

HOST = 0  # 00:00.0
ROM, RO_RAM, WO_RAM, RAM = (False, False), (True, False), (False, True), (True, True)


class Memory:
    """What the machine would keep: the state of each 0xC0000-0xFFFFF segment."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool, bool]] = []
        self.state: dict[int, tuple[bool, bool]] = {}
        self.smram: list[bool] = []

    def pam_changed(self, start: int, size: int, read_ram: bool, write_ram: bool) -> None:
        self.calls.append((start, size, read_ram, write_ram))
        self.state[start] = (read_ram, write_ram)


class Host:
    def __init__(self) -> None:
        self.pio = PioBus()
        self.bus = PciBus(self.pio, MmioBus())
        self.bus.register_ports()
        self.mem = Memory()
        self.host = I440fx(self.mem.pam_changed, smram_changed=self.mem.smram.append)
        self.bus.place(0, 0, self.host)

    def readl(self, reg: int) -> int:
        self.pio.write(0xCF8, 4, 0x8000_0000 | reg & 0xFC)
        return self.pio.read(0xCFC, 4)

    def writel(self, reg: int, v: int) -> None:
        self.pio.write(0xCF8, 4, 0x8000_0000 | reg & 0xFC)
        self.pio.write(0xCFC, 4, v)

    def readb(self, reg: int) -> int:
        self.pio.write(0xCF8, 4, 0x8000_0000 | reg & 0xFC)
        return self.pio.read(0xCFC + (reg & 3), 1)

    def writeb(self, reg: int, v: int) -> None:
        self.pio.write(0xCF8, 4, 0x8000_0000 | reg & 0xFC)
        self.pio.write(0xCFC + (reg & 3), 1, v)

    def seabios_pam(self, pam: list[int]) -> None:
        """shadow.c: read dwords at 0x58/0x5C, patch bytes PAM0..PAM6, write the dwords back."""
        data = bytearray(self.readl(0x58).to_bytes(4, "little") + self.readl(0x5C).to_bytes(4, "little"))
        for i, v in enumerate(pam):
            if v is not None:
                data[1 + i] = v
        self.writel(0x58, int.from_bytes(data[:4], "little"))
        self.writel(0x5C, int.from_bytes(data[4:], "little"))


@pytest.fixture
def hb() -> Host:
    return Host()


def test_identity(hb: Host) -> None:
    assert hb.readl(0x00) == 0x1237_8086
    assert hb.readl(0x08) == 0x0600_0002  # host bridge, rev 02
    assert hb.readb(0x0E) == 0x00
    assert hb.readl(0x04) == 0x0280_0006
    assert hb.readb(h.SMRAM) == 0x02
    assert hb.host.config.bars == {} and hb.host.config.rom is None


def test_segments_cover_c0000_to_fffff_once() -> None:
    assert len(PAM_SEGMENTS) == 13
    assert PAM_SEGMENTS[0].start == 0xF0000 and PAM_SEGMENTS[0].size == 0x10000
    assert PAM_SEGMENTS[0].offset == 0x59 and PAM_SEGMENTS[0].shift == 4
    expansion = sorted((s.start, s.offset, s.shift) for s in PAM_SEGMENTS[1:])
    assert expansion[0] == (0xC0000, 0x5A, 0) and expansion[1] == (0xC4000, 0x5A, 4)
    assert expansion[-1] == (0xEC000, 0x5F, 4)
    covered = sorted((s.start, s.start + s.size) for s in PAM_SEGMENTS)
    assert covered[0][0] == 0xC0000 and covered[-1][1] == 0x10_0000
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))


def test_reset_state_is_rom_everywhere(hb: Host) -> None:
    assert hb.mem.calls == []  # nothing announced before the machine asks
    hb.host.sync_memory()
    assert len(hb.mem.calls) == 13 and set(hb.mem.state.values()) == {ROM}
    assert hb.mem.smram == [False]
    assert hb.readl(0x58) & 0xFFFF_FF00 == 0 and hb.readl(0x5C) == 0


def test_seabios_make_bios_writable_then_readonly(hb: Host) -> None:
    hb.host.sync_memory()
    hb.host.config.set(0x58, 1, 0x5A)  # DRAMT: a neighbour the dword writes must preserve
    hb.mem.calls.clear()
    # make_bios_writable: PAM0 read-enable is clear, so SeaBIOS copies itself afterwards
    assert not hb.readb(0x59) & 0x10
    hb.seabios_pam([0x30] + [0x33] * 6)
    assert len(hb.mem.calls) == 13 and set(hb.mem.state.values()) == {RAM}
    assert hb.readl(0x58) == 0x3333_305A and hb.readl(0x5C) == 0x3333_3333
    hb.mem.calls.clear()
    # make_bios_readonly with ROMs up to 0xC8000: 0x11 for 0xC0000-0xC7FFF, F-segment 0x10
    hb.seabios_pam([0x10, 0x11, 0x11, None, None, None, None])
    assert hb.mem.state[0xF0000] == RO_RAM
    assert [hb.mem.state[a] for a in (0xC0000, 0xC4000, 0xC8000, 0xCC000)] == [RO_RAM] * 4
    assert hb.mem.state[0xD0000] == RAM
    # only the segments that changed were announced
    assert sorted(call[0] for call in hb.mem.calls) == [0xC0000, 0xC4000, 0xC8000, 0xCC000, 0xF0000]
    assert hb.host.pam_state(0xFFFF0) == RO_RAM and hb.host.pam_state(0xBFFFF) is None


def test_each_attribute_of_one_nibble(hb: Host) -> None:
    hb.host.sync_memory()
    hb.mem.calls.clear()
    for attr, want in ((1, RO_RAM), (2, WO_RAM), (3, RAM), (0, ROM)):
        hb.writeb(0x5D, attr << 4)  # PAM4 high nibble: 0xDC000
        assert hb.mem.calls[-1] == (0xDC000, 0x4000, *want)
    assert len(hb.mem.calls) == 4
    hb.writeb(0x5D, 0)  # no change: no callback
    assert len(hb.mem.calls) == 4


def test_reserved_pam_bits_read_zero(hb: Host) -> None:
    hb.writel(0x58, 0xFFFF_FFFF)
    hb.writel(0x5C, 0xFFFF_FFFF)
    assert hb.readb(0x59) == 0x30  # PAM0's low nibble is reserved
    assert hb.readl(0x5C) == 0x3333_3333
    assert hb.readb(0x58) == 0xFF  # DRAM timing: plain storage


def test_smram_open_close_and_lock(hb: Host) -> None:
    hb.writeb(h.SMRAM, 0x4A)  # SeaBIOS smm_device_setup: open SMRAM, G_SMRAME
    assert hb.readb(h.SMRAM) == 0x4A and hb.host.smram_open and hb.mem.smram == [True]
    hb.writeb(h.SMRAM, 0x0A)
    assert hb.readb(h.SMRAM) == 0x0A and hb.mem.smram == [True, False]
    hb.writeb(h.SMRAM, 0x07)  # C_BASE_SEG is fixed at 010
    assert hb.readb(h.SMRAM) == 0x02
    hb.writeb(h.SMRAM, 0x40 | 0x10 | 0x08)  # lock while asking to open: D_OPEN is cleared
    assert hb.readb(h.SMRAM) == 0x1A and not hb.host.smram_open
    hb.writeb(h.SMRAM, 0x42)  # locked: D_OPEN, D_LCK and G_SMRAME stay, D_CLS is free
    assert hb.readb(h.SMRAM) == 0x1A
    hb.writeb(h.SMRAM, 0x22)
    assert hb.readb(h.SMRAM) == 0x3A
    assert hb.mem.smram == [True, False]
    hb.host.reset()  # only reset unlocks
    assert hb.readb(h.SMRAM) == 0x02
    hb.writeb(h.SMRAM, 0x42)
    assert hb.host.smram_open


def test_reset_returns_every_segment_to_rom(hb: Host) -> None:
    hb.seabios_pam([0x30] + [0x33] * 6)
    hb.mem.calls.clear()
    hb.host.reset()
    assert len(hb.mem.calls) == 13 and set(hb.mem.state.values()) == {ROM}
    assert hb.readl(0x58) == 0


def test_snapshot_restore_replays_the_memory_map(hb: Host) -> None:
    hb.host.sync_memory()
    hb.seabios_pam([0x10, 0x11, 0x33, 0x00, 0x22, 0x30, 0x01])
    hb.writeb(h.SMRAM, 0x4A)
    snap = hb.host.snapshot()
    other = Host()
    other.host.restore(snap)
    assert other.host.snapshot() == snap
    assert other.mem.state == hb.mem.state
    assert other.mem.smram[-1] is True
    # PAM4 = 0x22 -> 0xD8000/0xDC000 write-only; PAM5 = 0x30; PAM6 = 0x01
    assert [other.mem.state[a] for a in (0xD8000, 0xDC000, 0xE0000, 0xE4000, 0xE8000, 0xEC000)] == [
        WO_RAM,
        WO_RAM,
        ROM,
        RAM,
        RO_RAM,
        ROM,
    ]


def test_random_config_writes_keep_callbacks_consistent(hb: Host) -> None:
    rng = random.Random(7)
    hb.host.sync_memory()
    for _ in range(5000):
        reg = rng.randrange(0x50, 0x80)
        size = rng.choice((1, 2, 4))
        reg &= ~(size - 1)
        hb.pio.write(0xCF8, 4, 0x8000_0000 | reg & 0xFC)
        hb.pio.write(0xCFC + (reg & 3), size, rng.getrandbits(8 * size))
        if rng.random() < 0.05:
            hb.pio.write(0xCFC + rng.randrange(4), 1, rng.getrandbits(8))
    # what the machine believes equals what the registers say
    for seg in PAM_SEGMENTS:
        assert hb.mem.state[seg.start] == hb.host.pam_state(seg.start)
