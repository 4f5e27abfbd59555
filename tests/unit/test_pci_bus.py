"""The PCI bus driven through ports 0xCF8/0xCFC the way SeaBIOS's pciinit and Linux's probing
drive it: detection, enumeration, BAR sizing and mapping onto the PIO/MMIO buses, ROM BARs,
0xCF9 inside the address register, DMA spaces per requester, INTx, state, and nonsense."""

from __future__ import annotations

import logging
import random

import pytest

from kvmpy import layout
from kvmpy.devices.acpi_pm import ResetControl
from kvmpy.devices.pci import BarKind, PciBus, PciConfig, PciFunction, requester_id
from kvmpy.devices.pci import config as c
from kvmpy.errors import DmaFault
from kvmpy.events import RecordingStop, StopReason
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.hw.dma import BytearrayDmaSpace

ALL_ONES = 0xFFFF_FFFF


class Regs:
    """A BAR handler that remembers what reached it."""

    SIZES = (1, 2, 4)

    def __init__(self) -> None:
        self.mem = bytearray(0x100)
        self.log: list[tuple[str, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return int.from_bytes(self.mem[offset : offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size))
        self.mem[offset : offset + size] = value.to_bytes(size, "little")[: len(self.mem) - offset]


class NicLike(PciFunction):
    """A function with one BAR of each kind, optionally a ROM, INTA#."""

    def __init__(self, name: str = "nic", rom: bytes | None = None, pin: int = 1) -> None:
        cfg = PciConfig(0x8086, 0x100E, 0x0200, interrupt_pin=pin)
        super().__init__(cfg, name)
        self.io, self.regs, self.wide = Regs(), Regs(), Regs()
        cfg.add_bar(0, BarKind.MEM32, 0x2_0000, self.regs)
        cfg.add_bar(1, BarKind.IO, 0x40, self.io)
        cfg.add_bar(2, BarKind.MEM64, 0x10_0000, self.wide, prefetchable=True)
        if rom is not None:
            cfg.set_rom(rom)


class Router:
    def __init__(self) -> None:
        self.levels = [False] * 4
        self.calls: list[tuple[int, bool]] = []

    def set_pirq_level(self, pirq: int, level: bool) -> None:
        self.calls.append((pirq, level))
        self.levels[pirq] = level


class Guest:
    """Port I/O like a guest does it, plus SeaBIOS's pci_config_* helpers."""

    def __init__(self, pio: PioBus) -> None:
        self.pio = pio

    def outl(self, port: int, v: int) -> None:
        self.pio.write(port, 4, v)

    def outw(self, port: int, v: int) -> None:
        self.pio.write(port, 2, v)

    def outb(self, port: int, v: int) -> None:
        self.pio.write(port, 1, v)

    def inl(self, port: int) -> int:
        return self.pio.read(port, 4)

    def inw(self, port: int) -> int:
        return self.pio.read(port, 2)

    def inb(self, port: int) -> int:
        return self.pio.read(port, 1)

    @staticmethod
    def cmd(bdf: int, reg: int) -> int:
        return 0x8000_0000 | bdf << 8 | (reg & 0xFC)

    def readl(self, bdf: int, reg: int) -> int:
        self.outl(0xCF8, self.cmd(bdf, reg))
        return self.inl(0xCFC)

    def readw(self, bdf: int, reg: int) -> int:
        self.outl(0xCF8, self.cmd(bdf, reg))
        return self.inw(0xCFC + (reg & 2))

    def readb(self, bdf: int, reg: int) -> int:
        self.outl(0xCF8, self.cmd(bdf, reg))
        return self.inb(0xCFC + (reg & 3))

    def writel(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0xCF8, self.cmd(bdf, reg))
        self.outl(0xCFC, v)

    def writew(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0xCF8, self.cmd(bdf, reg))
        self.outw(0xCFC + (reg & 2), v)

    def writeb(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0xCF8, self.cmd(bdf, reg))
        self.outb(0xCFC + (reg & 3), v)


class Pc:
    def __init__(self) -> None:
        self.pio, self.mmio = PioBus(), MmioBus()
        self.stop = RecordingStop()
        self.rcr = ResetControl(self.stop)
        self.ram = BytearrayDmaSpace(0x10000)
        self.rids: list[int] = []
        self.bus = PciBus(self.pio, self.mmio, reset_control=self.rcr, dma_provider=self._dma)
        self.bus.register_ports()
        self.router = Router()
        self.bus.set_intx_router(self.router)
        self.guest = Guest(self.pio)

    def _dma(self, rid: int) -> BytearrayDmaSpace:
        self.rids.append(rid)
        return self.ram


@pytest.fixture
def pc() -> Pc:
    return Pc()


def bdf(dev: int, fn: int = 0) -> int:
    return dev << 3 | fn


# --- configuration mechanism #1 ------------------------------------------------------------------
def test_seabios_and_linux_detect_mechanism_1(pc: Pc) -> None:
    g = pc.guest
    # SeaBIOS pci_probe_host: write 0x80000000, must read it back
    g.outl(0xCF8, 0x8000_0000)
    assert g.inl(0xCF8) == 0x8000_0000
    # Linux pci_check_type1: outb(0x01, 0xCFB) goes nowhere; the dword test then passes
    g.outb(0xCFB, 0x01)
    tmp = g.inl(0xCF8)
    g.outl(0xCF8, 0x8000_0000)
    assert g.inl(0xCF8) == 0x8000_0000
    g.outl(0xCF8, tmp)
    # reserved bits (30:24, 1:0) read zero
    g.outl(0xCF8, ALL_ONES)
    assert g.inl(0xCF8) == 0x80FF_FFFC
    # non-dword accesses to 0xCF8 reach nothing
    assert g.inw(0xCF8) == 0xFFFF and g.inb(0xCFA) == 0xFF
    g.outw(0xCF8, 0)
    assert g.inl(0xCF8) == 0x80FF_FFFC


def test_enumeration_finds_exactly_what_was_placed(pc: Pc) -> None:
    nic = NicLike()
    f0, f1, f5 = NicLike("mf0"), NicLike("mf1"), NicLike("mf5")
    pc.bus.place(3, 0, nic)
    pc.bus.place(5, 0, f0)
    pc.bus.place(5, 1, f1)
    pc.bus.place(5, 5, f5)
    g = pc.guest
    found = []
    # Linux/SeaBIOS scan: function 0 of each slot; other functions only if multifunction
    for dev in range(32):
        if g.readl(bdf(dev), 0) == ALL_ONES:
            continue
        nfn = 8 if g.readb(bdf(dev), c.HEADER_TYPE) & 0x80 else 1
        for fn in range(nfn):
            vd = g.readl(bdf(dev, fn), 0)
            if vd != ALL_ONES:
                found.append((dev, fn, vd, g.readl(bdf(dev, fn), 8) >> 16))
    assert found == [
        (3, 0, 0x100E_8086, 0x0200),
        (5, 0, 0x100E_8086, 0x0200),
        (5, 1, 0x100E_8086, 0x0200),
        (5, 5, 0x100E_8086, 0x0200),
    ]
    assert g.readb(bdf(3), c.HEADER_TYPE) == 0  # single-function slot keeps bit 7 clear
    assert [f"{d}.{f}" for d, f, _ in pc.bus.functions()] == ["3.0", "5.0", "5.1", "5.5"]


def test_absent_functions_and_disabled_cycles_read_all_ones(pc: Pc) -> None:
    pc.bus.place(3, 0, NicLike())
    g = pc.guest
    assert g.readl(bdf(4), 0) == ALL_ONES
    assert g.readw(bdf(4), 2) == 0xFFFF and g.readb(bdf(4), 0x0E) == 0xFF
    g.writel(bdf(4), 0x04, 0x7)  # dropped, no exception
    # enable bit clear: all-ones even for a present function
    g.outl(0xCF8, bdf(3) << 8)
    assert g.inl(0xCFC) == ALL_ONES
    g.outl(0xCFC, 0x7)
    assert pc.bus.function(3, 0).config.command == 0  # type: ignore[union-attr]
    # another bus number: nothing behind it (no bridges)
    g.outl(0xCF8, 0x8001_0000 | bdf(3) << 8)
    assert g.inl(0xCFC) == ALL_ONES


def test_data_port_byte_lanes(pc: Pc) -> None:
    pc.bus.place(3, 0, NicLike())
    g = pc.guest
    g.outl(0xCF8, g.cmd(bdf(3), 0x08))
    dword = g.inl(0xCFC)
    assert [g.inb(0xCFC + i) for i in range(4)] == list(dword.to_bytes(4, "little"))
    assert g.inw(0xCFE) == dword >> 16 and g.inw(0xCFD) == (dword >> 8) & 0xFFFF
    # the register offset in CONFIG_ADDRESS is dword-aligned; the port offset picks the byte
    g.outl(0xCF8, g.cmd(bdf(3), 0x3D) | 0x1)
    assert g.inl(0xCF8) & 3 == 0
    g.writeb(bdf(3), 0x3C, 11)
    assert g.readb(bdf(3), 0x3C) == 11 and g.readb(bdf(3), 0x3D) == 1
    g.writew(bdf(3), 0x06, 0xFFFF)  # status W1C through the word lane at 0xCFE
    assert g.readw(bdf(3), 0x04) == 0


def test_0xcf9_bytes_reach_the_reset_control(pc: Pc) -> None:
    g = pc.guest
    g.outl(0xCF8, 0x8000_1234 & ~3)
    g.outb(0xCF9, 0x02)
    assert pc.rcr.state.rcr == 0x02 and g.inb(0xCF9) == 0x02
    assert g.inl(0xCF8) == 0x8000_1234 & ~3  # the address register is untouched
    assert pc.stop.stops == []
    g.outb(0xCF9, 0x06)  # Linux's reboot through 0xCF9
    assert [s.reason for s in pc.stop.stops] == [StopReason.RESET]
    # a 32-bit write at 0xCF8 does not count as a reset, whatever its byte 1 holds
    pc.stop.stops.clear()
    g.outl(0xCF8, 0x8000_0600)
    assert pc.stop.stops == []


def test_without_reset_control_0xcf9_is_nothing() -> None:
    pio = PioBus()
    bus = PciBus(pio, MmioBus())
    bus.register_ports()
    assert pio.read(0xCF9, 1) == 0xFF
    pio.write(0xCF9, 1, 0x06)


# --- BARs ----------------------------------------------------------------------------------------------
def program_nic(g: Guest, b: int, *, io: int, mem: int, wide: int) -> None:
    g.writel(b, 0x10, mem)
    g.writel(b, 0x14, io)
    g.writel(b, 0x18, wide & ALL_ONES)
    g.writel(b, 0x1C, wide >> 32)


def test_bars_appear_when_decoding_is_enabled_and_vanish_when_disabled(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    program_nic(g, b, io=0xC000, mem=0xFEBC_0000, wide=0x8_0000_0000)
    assert pc.pio.find(0xC000) is None and pc.mmio.find(0xFEBC_0000) is None
    g.writew(b, 0x04, c.CMD_IO)
    assert pc.pio.find(0xC000).device is nic.io  # type: ignore[union-attr]
    assert pc.mmio.find(0xFEBC_0000) is None
    g.writew(b, 0x04, c.CMD_IO | c.CMD_MEMORY)
    assert pc.mmio.find(0xFEBC_0000).device is nic.regs  # type: ignore[union-attr]
    assert pc.mmio.find(0x8_0000_0000).device is nic.wide  # type: ignore[union-attr]
    # accesses arrive at BAR-relative offsets
    pc.pio.write(0xC004, 4, 0x1234_5678)
    assert nic.io.log[-1] == ("w", 4, 4) and pc.pio.read(0xC006, 2) == 0x1234
    pc.mmio.write(0xFEBC_0010, 4, 0xCAFE)
    assert nic.regs.log[-1] == ("w", 0x10, 4)
    assert pc.mmio.read(0x8_0000_0010, 4) == 0
    assert pc.pio.find(0xC040) is None  # exactly the BAR's length
    g.writew(b, 0x04, 0)
    assert pc.pio.find(0xC000) is None and pc.mmio.find(0xFEBC_0000) is None
    assert pc.mmio.find(0x8_0000_0000) is None
    assert pc.pio.read(0xC004, 4) == ALL_ONES


def test_moving_an_enabled_bar_moves_the_mapping(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    program_nic(g, b, io=0xC000, mem=0xFEBC_0000, wide=0xE000_0000)
    g.writew(b, 0x04, c.CMD_IO | c.CMD_MEMORY)
    g.writel(b, 0x14, 0xD001)
    assert pc.pio.find(0xC000) is None and pc.pio.find(0xD000).device is nic.io  # type: ignore[union-attr]
    # a byte write moves only the lane it writes
    g.writeb(b, 0x12, 0xBE)
    assert pc.mmio.find(0xFEBE_0000).device is nic.regs  # type: ignore[union-attr]
    assert pc.mmio.find(0xFEBC_0000) is None


def test_sizing_an_enabled_bar_never_maps_the_sizing_pattern(pc: Pc) -> None:
    """Firmware usually disables decoding before sizing; when it does not, the all-ones address
    (0xFFFxxxxx, the BIOS flash) must not get a mapping."""
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    program_nic(g, b, io=0xC000, mem=0xFEBC_0000, wide=0xE000_0000)
    g.writew(b, 0x04, c.CMD_IO | c.CMD_MEMORY)
    for reg in (0x10, 0x14, 0x18, 0x1C):
        old = g.readl(b, reg)
        g.writel(b, reg, ALL_ONES)
        assert {m.base for m in pc.mmio.mappings()} <= {0xFEBC_0000, 0xE000_0000}
        g.writel(b, reg, old)
    assert pc.mmio.find(0xFEBC_0000).device is nic.regs  # type: ignore[union-attr]
    assert pc.mmio.find(0xE000_0000).device is nic.wide  # type: ignore[union-attr]
    assert pc.pio.find(0xC000).device is nic.io  # type: ignore[union-attr]


def test_overlapping_bars_are_refused_and_mapped_once_resolved(
    pc: Pc, caplog: pytest.LogCaptureFixture
) -> None:
    a, b_ = NicLike("a"), NicLike("b")
    pc.bus.place(3, 0, a)
    pc.bus.place(4, 0, b_)
    g = pc.guest
    program_nic(g, bdf(3), io=0xC000, mem=0xFEBC_0000, wide=0xE000_0000)
    program_nic(g, bdf(4), io=0xC020, mem=0xFEBE_0000, wide=0xE000_0000)  # I/O overlaps a's
    with caplog.at_level(logging.WARNING, logger="kvmpy.pci"):
        g.writew(bdf(3), 0x04, 3)
        g.writew(bdf(4), 0x04, 3)
    assert pc.pio.find(0xC020).device is a.io  # type: ignore[union-attr]
    assert pc.mmio.find(0xE000_0000).device is a.wide  # type: ignore[union-attr]
    assert pc.mmio.find(0xFEBE_0000).device is b_.regs  # type: ignore[union-attr]
    assert sorted(w.name for w in pc.bus.windows() if w.pending) == ["b.bar1", "b.bar2"]
    assert "left unmapped" in caplog.text
    # the guest resolves the conflict by moving a: b's pending ranges get mapped
    g.writel(bdf(3), 0x14, 0xD000)
    assert pc.pio.find(0xC020).device is b_.io  # type: ignore[union-attr]
    assert pc.mmio.find(0xE000_0000).device is a.wide  # type: ignore[union-attr]
    g.writew(bdf(3), 0x04, 0)  # or by switching a off
    assert pc.mmio.find(0xE000_0000).device is b_.wide  # type: ignore[union-attr]
    assert not any(w.pending for w in pc.bus.windows())


def test_bars_over_fixed_devices_at_zero_and_out_of_range_do_not_crash(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    pc.pio.register(0x3F8, 8, Regs(), "com1")
    g, b = pc.guest, bdf(3)
    g.writew(b, 0x04, 3)
    for io in (0x3E0, 0xCC0, 0xCF8 & ~0x3F, 0, 0xFFC0, 0x1_0000, ALL_ONES):
        g.writel(b, 0x14, io)
    assert pc.pio.find(0xCF8).name == "pci-config-address"  # type: ignore[union-attr]
    assert pc.pio.find(0x3F8).name == "com1"  # type: ignore[union-attr]
    g.writel(b, 0x14, 0x3E0)  # covers com1: refused, stays pending
    assert pc.pio.find(0x3E0) is None and pc.pio.find(0x3F8).name == "com1"  # type: ignore[union-attr]
    g.writel(b, 0x10, 0)  # memory BAR at 0: not decoded
    assert pc.mmio.find(0) is None
    g.writel(b, 0x18, 0xFFFF_FFFC)
    g.writel(b, 0x1C, 0xFFFF_FFFF)  # 64-bit BAR beyond the MMIO bus
    assert all(m.base < 1 << 52 for m in pc.mmio.mappings())
    g.writel(b, 0x14, 0xC000)
    assert pc.pio.find(0xC000).device is nic.io  # type: ignore[union-attr]


def test_memslot_backed_bar_follows_on_map(pc: Pc) -> None:
    moves: list[int | None] = []
    fb = PciFunction(PciConfig(0x1234, 0x1111, 0x0300), "vga")
    fb.config.add_bar(0, BarKind.MEM32, 16 << 20, prefetchable=True, on_map=moves.append)
    pc.bus.place(2, 0, fb)
    g, b = pc.guest, bdf(2)
    g.writel(b, 0x10, 0xFD00_0000)
    g.writew(b, 0x04, c.CMD_MEMORY)
    g.writel(b, 0x10, 0xFC00_0000)
    g.writew(b, 0x04, 0)
    assert moves == [0xFD00_0000, 0xFC00_0000, None]  # moved in one step while enabled
    assert pc.mmio.mappings() == []  # nothing on the MMIO bus: the owner maps a memslot


# --- expansion ROM ----------------------------------------------------------------------------------
def test_rom_bar_maps_read_only_content(pc: Pc) -> None:
    image = b"\x55\xaa\x4c" + bytes(range(256)) * 156  # 39939 bytes, like vgabios-stdvga
    nic = NicLike(rom=image)
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    g.writel(b, 0x30, 0xFFFF_F800)  # SeaBIOS sizes with PCI_ROM_ADDRESS_MASK
    size = (~(g.readl(b, 0x30) & 0xFFFF_F800) + 1) & ALL_ONES
    assert size == 0x1_0000
    g.writel(b, 0x30, 0xFEB0_0000 | c.ROM_ENABLE)
    assert pc.mmio.find(0xFEB0_0000) is None  # memory decoding still off
    g.writew(b, 0x04, c.CMD_MEMORY)
    assert pc.mmio.read(0xFEB0_0000, 2) == 0xAA55
    assert pc.mmio.read(0xFEB0_0003, 4) == 0x0302_0100
    assert pc.mmio.read(0xFEB0_0000 + len(image), 1) == 0xFF  # past the image
    pc.mmio.write(0xFEB0_0000, 4, 0)  # read-only
    data = bytes(pc.mmio.read(0xFEB0_0000 + i, 1) for i in range(len(image)))
    assert data == image
    assert pc.mmio.read(0xFEB0_0000, 8) == int.from_bytes(image[:8], "little")
    g.writel(b, 0x30, 0xFEB0_0000)  # enable bit off
    assert pc.mmio.find(0xFEB0_0000) is None


# --- DMA ----------------------------------------------------------------------------------------------
def test_each_function_gets_its_requesters_dma_space(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 1, nic)
    assert pc.rids == [requester_id(0, 3, 1)] == [0x19]
    assert nic.requester_id == 0x19 and nic.bdf == "00:03.1"
    with pytest.raises(DmaFault, match="bus mastering"):
        nic.dma.write(0x100, b"abc")
    pc.guest.writew(bdf(3, 1), 0x04, c.CMD_MASTER)
    nic.dma.write(0x100, b"abc")
    assert pc.ram.mem[0x100:0x103] == b"abc" and nic.dma.read(0x100, 3) == b"abc"
    with pytest.raises(DmaFault):
        nic.dma.read(0xFFFF, 4)  # outside the space: the space's own fault
    # an IOMMU arrives later: every function gets a new space
    spaces: dict[int, BytearrayDmaSpace] = {}
    pc.bus.set_dma_provider(lambda rid: spaces.setdefault(rid, BytearrayDmaSpace(0x1000)))
    nic.dma.write(0x10, b"x")
    assert spaces[0x19].mem[0x10:0x11] == b"x"
    pc.bus.set_dma_provider(None)
    with pytest.raises(DmaFault, match="no DMA space"):
        nic.dma.read(0, 1)


# --- INTx ----------------------------------------------------------------------------------------------
def test_intx_reaches_the_slot_rotated_pirq(pc: Pc) -> None:
    nics = {dev: NicLike(f"n{dev}") for dev in (1, 2, 3, 4, 5)}
    for dev, n in nics.items():
        pc.bus.place(dev, 0, n)
    assert [pc.bus.pirq_of(n) for n in nics.values()] == [0, 1, 2, 3, 0]
    intd = NicLike("intd", pin=4)
    pc.bus.place(6, 0, intd)
    assert pc.bus.pirq_of(intd) == (3 + 5) & 3
    nics[3].set_irq(True)
    assert pc.router.levels == [False, False, True, False]
    # wired-OR: slots 1 and 5 share PIRQA
    nics[1].set_irq(True)
    nics[5].set_irq(True)
    nics[1].set_irq(False)
    assert pc.router.levels[0] is True
    nics[5].set_irq(False)
    assert pc.router.levels == [False, False, True, False]
    nics[3].set_irq(False)
    assert pc.router.levels == [False] * 4
    assert PciFunction(PciConfig(1, 1, 0), "nopin").intx_asserted() is False


def test_intx_disable_and_interrupt_status(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    nic.set_irq(True)
    assert pc.router.levels[2] and g.readw(b, 0x06) & c.STS_INTERRUPT
    g.writew(b, 0x04, c.CMD_INTX_DISABLE)
    assert not pc.router.levels[2]
    assert g.readw(b, 0x06) & c.STS_INTERRUPT  # status still shows the device's level
    g.writew(b, 0x04, 0)
    assert pc.router.levels[2]
    nic.set_irq(False)
    assert not pc.router.levels[2] and not g.readw(b, 0x06) & c.STS_INTERRUPT


def test_msi_takes_the_function_off_intx(pc: Pc) -> None:
    sent: list[tuple[int, int]] = []

    class Sender:
        def send(self, address: int, data: int) -> None:
            sent.append((address, data))

    nic = NicLike()
    msi = nic.add_msi()
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    nic.set_irq(True)
    assert pc.router.levels[2]
    g.writel(b, msi.offset + 4, 0xFEE0_0000)
    g.writew(b, msi.offset + 0xC, 0x0041)
    g.writew(b, msi.offset + 2, 1)  # MSI on: INTx drops
    assert not pc.router.levels[2]
    nic.set_irq(False)
    nic.set_irq(True)  # rising edge with no sender wired: logged, dropped
    nic.msi_sender = Sender()
    nic.set_irq(False)
    nic.set_irq(True)
    nic.set_irq(True)  # level, not edge: one message
    assert sent == [(0xFEE0_0000, 0x41)] and not pc.router.levels[2]
    g.writew(b, msi.offset + 2, 0)
    assert pc.router.levels[2]


# --- placement ----------------------------------------------------------------------------------------
def test_placement_rules(pc: Pc) -> None:
    nic = NicLike()
    pc.bus.place(3, 0, nic)
    with pytest.raises(ValueError, match="taken"):
        pc.bus.place(3, 0, NicLike())
    with pytest.raises(ValueError, match="already placed"):
        pc.bus.place(4, 0, nic)
    with pytest.raises(ValueError):
        pc.bus.place(32, 0, NicLike())
    with pytest.raises(ValueError):
        pc.bus.place(1, 8, NicLike())
    # function 1 placed before function 0: the bit is set once function 0 arrives
    f1 = NicLike("f1")
    pc.bus.place(7, 1, f1)
    f0 = NicLike("f0")
    pc.bus.place(7, 0, f0)
    assert pc.guest.readb(bdf(7), c.HEADER_TYPE) == 0x80
    f0.reset()
    assert pc.guest.readb(bdf(7), c.HEADER_TYPE) == 0x80  # wiring survives reset
    assert pc.bus.describe()[0] == "00:03.0 0200: 8086:100e nic"
    assert pc.bus.config_read(9, 0, 0, 4) == ALL_ONES
    pc.bus.config_write(3, 0, 0x3C, 1, 5)
    assert pc.bus.config_read(3, 0, 0x3C, 1) == 5


def test_placing_an_already_programmed_function_maps_it(pc: Pc) -> None:
    nic = NicLike()
    nic.config.write(0x14, 4, 0xC100)
    nic.config.write(0x04, 2, c.CMD_IO)
    nic.set_irq(True)  # before placement: no bus to tell
    pc.bus.place(3, 0, nic)
    assert pc.pio.find(0xC100).device is nic.io  # type: ignore[union-attr]
    assert pc.router.levels[2]


# --- state ----------------------------------------------------------------------------------------------
def test_snapshot_restore_recreates_mappings_and_levels(pc: Pc) -> None:
    nic = NicLike(rom=b"\x55\xaa" * 100)
    pc.bus.place(3, 0, nic)
    g, b = pc.guest, bdf(3)
    program_nic(g, b, io=0xC000, mem=0xFEBC_0000, wide=0xE000_0000)
    g.writel(b, 0x30, 0xFEB0_0001)
    g.writew(b, 0x04, 7)
    g.writeb(b, 0x3C, 10)
    nic.set_irq(True)
    g.outl(0xCF8, g.cmd(b, 0x10))
    bus_snap, fn_snap = pc.bus.snapshot(), nic.snapshot()

    other = Pc()
    twin = NicLike(rom=b"\x55\xaa" * 100)
    other.bus.place(3, 0, twin)
    twin.restore(fn_snap)
    other.bus.restore(bus_snap)
    assert twin.snapshot() == fn_snap and other.bus.snapshot() == bus_snap
    assert other.pio.find(0xC000).device is twin.io  # type: ignore[union-attr]
    assert other.mmio.find(0xFEBC_0000).device is twin.regs  # type: ignore[union-attr]
    assert other.mmio.read(0xFEB0_0000, 2) == 0xAA55
    assert other.router.levels[2]
    assert other.guest.inl(0xCFC) == 0xFEBC_0000  # the address register came along

    nic.reset()
    pc.bus.reset()
    assert pc.mmio.mappings() == [] and pc.pio.find(0xC000) is None
    assert not pc.router.levels[2] and pc.guest.inl(0xCF8) == 0
    nic.restore(fn_snap)
    assert pc.pio.find(0xC000).device is nic.io  # type: ignore[union-attr]
    assert pc.router.levels[2]


def test_guest_nonsense_never_raises(pc: Pc) -> None:
    rng = random.Random(4)
    nics = [NicLike(f"n{i}", rom=bytes(3000)) for i in range(3)]
    for i, n in enumerate(nics):
        pc.bus.place(2 + i, 0, n)
        n.add_msi(vectors=2, per_vector_mask=True) if i == 0 else n.config.add_pm(d1=True)
    pc.pio.register(layout.COM1_PORT, 8, Regs(), "com1")
    interesting = [0x0, 0x4, 0x6, 0x10, 0x14, 0x18, 0x1C, 0x30, 0x3C, 0x40, 0x44, 0x48, 0x4C]
    for _ in range(30000):
        r = rng.random()
        if r < 0.45:
            reg = rng.choice(interesting) if rng.random() < 0.8 else rng.randrange(256)
            dev = rng.choice((2, 3, 4, 9))
            pc.pio.write(0xCF8, 4, 0x8000_0000 | dev << 11 | reg)
        port = 0xCF8 + rng.randrange(8)
        size = rng.choice((1, 2, 4))
        value = rng.choice((0, ALL_ONES, rng.getrandbits(32), 0x3, 0x7, 0xC001, 0xFEBC_0000, 0x3F8))
        if rng.random() < 0.6:
            pc.pio.write(port, size, value & ((1 << (8 * size)) - 1))
        else:
            pc.pio.read(port, size)
        if rng.random() < 0.05:
            rng.choice(nics).set_irq(rng.random() < 0.5)
    # whatever happened, the bus is consistent: every window is mapped where its BAR says
    for w in pc.bus.windows():
        if w.mapping is not None:
            assert w.active == w.want == w.mapping.base
    assert pc.pio.find(layout.COM1_PORT).name == "com1"  # type: ignore[union-attr]
