"""The whole ``pc`` PCI topology driven by a re-enactment of SeaBIOS 1.16's POST PCI code
(src/fw/shadow.c make_bios_writable, src/fw/pciinit.c pci_setup, the VGA ROM probe, then
make_bios_readonly), checking what a machine builder relies on: BARs land on the buses where
SeaBIOS put them, the INTERRUPT_LINE SeaBIOS writes is the IRQ the function really drives,
the PM timer answers where SeaBIOS looks for it, and the shadow RAM sequence reaches the
memory callbacks."""

from __future__ import annotations

from kvmpy.devices.acpi_pm import AcpiPm, ResetControl
from kvmpy.devices.pci import (
    ELCR_PORT,
    I440FX_DEVFN,
    PIIX3_ISA_DEVFN,
    PIIX4_PM_DEVFN,
    BarKind,
    Elcr,
    I440fx,
    PciBus,
    PciConfig,
    PciFunction,
    Piix3Isa,
    Piix4Pm,
)
from kvmpy.devices.pci import config as c
from kvmpy.events import RecordingStop
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.hw.irq import RecordingIrqLine

PCI_IRQS = (10, 10, 11, 11)  # SeaBIOS pci_irqs[]
VGA_ROM = b"\x55\xaa\x4e" + bytes(0x15) + b"\x1c\x00" + bytes(2) + b"PCIR\x34\x12\x11\x11" + bytes(39910)


class Regs:
    SIZES = (1, 2, 4)

    def __init__(self) -> None:
        self.mem = bytearray(0x100)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.mem[offset : offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.mem[offset : offset + size] = value.to_bytes(size, "little")[: max(0, len(self.mem) - offset)]


class StdVga(PciFunction):
    def __init__(self) -> None:
        super().__init__(PciConfig(0x1234, 0x1111, 0x0300, revision=2), "vga")
        self.fb_at: list[int | None] = []
        self.mmio = Regs()
        self.config.add_bar(0, BarKind.MEM32, 16 << 20, prefetchable=True, on_map=self.fb_at.append)
        self.config.add_bar(2, BarKind.MEM32, 0x1000, self.mmio)
        self.config.set_rom(VGA_ROM)


class E1000(PciFunction):
    def __init__(self) -> None:
        super().__init__(PciConfig(0x8086, 0x100E, 0x0200, revision=3, interrupt_pin=1), "e1000")
        self.regs, self.io = Regs(), Regs()
        self.config.add_bar(0, BarKind.MEM32, 0x2_0000, self.regs)
        self.config.add_bar(1, BarKind.IO, 0x40, self.io)
        self.config.set_rom(b"\x55\xaa" + bytes(0x3FFFE))


class Machine:
    def __init__(self) -> None:
        self.pio, self.mmio = PioBus(), MmioBus()
        self.stop = RecordingStop()
        self.pam: dict[int, tuple[bool, bool]] = {}
        self.lines = {irq: RecordingIrqLine() for irq in range(16)}
        self.now = 0
        self.acpi = AcpiPm(self.lines[9], self.stop, clock_ns=lambda: self.now)
        self.pci = PciBus(self.pio, self.mmio, reset_control=ResetControl(self.stop))
        self.pci.register_ports()
        self.host = I440fx(lambda s, n, r, w: self.pam.__setitem__(s, (r, w)))
        self.isa = Piix3Isa(self.lines)
        self.pm = Piix4Pm(self.acpi)
        self.vga = StdVga()
        self.nic = E1000()
        self.pci.place(*I440FX_DEVFN, self.host)
        self.pci.place(*PIIX3_ISA_DEVFN, self.isa)
        self.pci.place(*PIIX4_PM_DEVFN, self.pm)
        self.pci.place(2, 0, self.vga)
        self.pci.place(3, 0, self.nic)
        self.pci.set_intx_router(self.isa)
        self.elcr = Elcr()
        self.pio.register(ELCR_PORT, Elcr.LENGTH, self.elcr, "elcr", sizes=Elcr.SIZES)
        self.host.sync_memory()


class SeaBios:
    """Just enough of SeaBIOS's PCI code, with its own config accessors (hw/pci.c)."""

    def __init__(self, m: Machine, ram_size: int = 1 << 30) -> None:
        self.m = m
        self.ram_size = ram_size
        self.devices: list[dict[str, int]] = []
        self.assigned: dict[tuple[int, int], int] = {}

    # hw/pci.c
    def outl(self, v: int, port: int) -> None:
        self.m.pio.write(port, 4, v)

    def readl(self, bdf: int, reg: int) -> int:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        return self.m.pio.read(0xCFC, 4)

    def readw(self, bdf: int, reg: int) -> int:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        return self.m.pio.read(0xCFC + (reg & 2), 2)

    def readb(self, bdf: int, reg: int) -> int:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        return self.m.pio.read(0xCFC + (reg & 3), 1)

    def writel(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        self.m.pio.write(0xCFC, 4, v & 0xFFFF_FFFF)

    def writew(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        self.m.pio.write(0xCFC + (reg & 2), 2, v)

    def writeb(self, bdf: int, reg: int, v: int) -> None:
        self.outl(0x8000_0000 | bdf << 8 | (reg & 0xFC), 0xCF8)
        self.m.pio.write(0xCFC + (reg & 3), 1, v)

    # shadow.c
    def pam(self, values: list[int | None]) -> None:
        data = bytearray(
            self.readl(0, 0x58).to_bytes(4, "little") + self.readl(0, 0x5C).to_bytes(4, "little")
        )
        for i, v in enumerate(values):
            if v is not None:
                data[1 + i] = v
        self.writel(0, 0x58, int.from_bytes(data[:4], "little"))
        self.writel(0, 0x5C, int.from_bytes(data[4:], "little"))

    def make_bios_writable(self) -> bool:
        for bdf in range(256):
            if self.readl(bdf, 0) == 0x1237_8086:
                ram_present = bool(self.readb(bdf, 0x59) & 0x10)
                self.pam([0x30] + [0x33] * 6)
                return ram_present
        raise AssertionError("no i440FX")

    def make_bios_readonly(self) -> None:
        self.pam([0x10, 0x11, 0x11, None, None, None, None])

    # pciinit.c
    def probe(self) -> None:
        self.outl(0x8000_0000, 0xCF8)
        assert self.m.pio.read(0xCF8, 4) == 0x8000_0000, "Detected non-PCI system"
        for dev in range(32):
            nfn = 1
            for fn in range(8):
                if fn >= nfn:
                    break
                bdf = dev << 3 | fn
                vd = self.readl(bdf, 0)
                if vd in (0xFFFF_FFFF, 0, 0xFFFF, 0xFFFF_0000):
                    continue
                header = self.readb(bdf, c.HEADER_TYPE)
                if fn == 0 and header & 0x80:
                    nfn = 8
                self.devices.append(
                    {
                        "bdf": bdf,
                        "vendor": vd & 0xFFFF,
                        "device": vd >> 16,
                        "class": self.readw(bdf, 0x0A),
                        "header": header,
                    }
                )

    def get_bar(self, bdf: int, bar: int) -> tuple[str, int, bool]:
        ofs = 0x30 if bar == 6 else 0x10 + 4 * bar
        old = self.readl(bdf, ofs)
        is64, kind = False, "mem"
        if bar == 6:
            mask = 0xFFFF_F800
            self.writel(bdf, ofs, mask)
        else:
            if old & 1:
                mask, kind = 0xFFFF_FFFC, "io"
            else:
                mask = 0xFFFF_FFF0
                kind = "prefmem" if old & 8 else "mem"
                is64 = (old & 6) == 4
            self.writel(bdf, ofs, 0xFFFF_FFFF)
        val = self.readl(bdf, ofs)
        self.writel(bdf, ofs, old)
        if is64:
            hold = self.readl(bdf, ofs + 4)
            self.writel(bdf, ofs + 4, 0xFFFF_FFFF)
            val |= self.readl(bdf, ofs + 4) << 32
            self.writel(bdf, ofs + 4, hold)
            return kind, (~(val & (mask | 0xFFFF_FFFF << 32)) + 1) & (1 << 64) - 1, True
        return kind, (~(val & mask) + 1) & 0xFFFF_FFFF, False

    def setup(self) -> None:
        self.probe()
        pcimem_start = 0x8000_0000 if self.ram_size <= 0x8000_0000 else 0xC000_0000
        pcimem_end = 0xFEC0_0000
        regions: dict[str, list[tuple[int, int, int, int, bool]]] = {"io": [], "mem": [], "prefmem": []}
        for d in self.devices:
            bar = 0
            while bar < 7:
                kind, size, is64 = self.get_bar(d["bdf"], bar)
                if size:
                    if kind != "io" and size < 0x1000:
                        size = 0x1000
                    regions[kind].append((size, size, d["bdf"], bar, is64))
                bar += 2 if is64 else 1
        for r in regions.values():
            r.sort(key=lambda e: (-e[1], -e[0]))
        io_base = 0xC000
        for size, _, b, bar, _ in regions["io"]:
            self.writel(b, 0x10 + 4 * bar, io_base)
            self.assigned[b, bar] = io_base
            io_base += size
        # root memory regions, the one with the larger alignment at the top
        mem, pref = regions["mem"], regions["prefmem"]
        r_start, r_end = (
            (pref, mem) if (mem[0][1] if mem else 1) < (pref[0][1] if pref else 1) else (mem, pref)
        )
        end_sum = sum(e[0] for e in r_end)
        end_base = (pcimem_end - end_sum) & ~((r_end[0][1] if r_end else 1) - 1)
        start_base = (end_base - sum(e[0] for e in r_start)) & ~((r_start[0][1] if r_start else 1) - 1)
        assert start_base >= pcimem_start
        for base, entries in ((start_base, r_start), (end_base, r_end)):
            for size, _, b, bar, is64 in entries:
                ofs = 0x30 if bar == 6 else 0x10 + 4 * bar
                self.writel(b, ofs, base)
                if is64:
                    self.writel(b, ofs + 4, base >> 32)
                self.assigned[b, bar] = base
                base += size
        # pci_bios_init_devices
        for d in self.devices:
            b = d["bdf"]
            pin = self.readb(b, c.INTERRUPT_PIN)
            if pin:
                self.writeb(b, c.INTERRUPT_LINE, PCI_IRQS[(pin - 1 + (b >> 3) - 1) & 3])
            if (d["vendor"], d["device"]) == (0x8086, 0x7000):
                elcr = [0, 0]
                for i, irq in enumerate(PCI_IRQS):
                    elcr[irq >> 3] |= 1 << (irq & 7)
                    self.writeb(b, 0x60 + i, irq)
                self.m.pio.write(0x4D0, 1, elcr[0])
                self.m.pio.write(0x4D1, 1, elcr[1])
            if (d["vendor"], d["device"]) == (0x8086, 0x7113):
                self.writeb(b, c.INTERRUPT_LINE, 9)
                self.writel(b, 0x40, 0x600 | 1)
                self.writeb(b, 0x80, 0x01)
                self.writel(b, 0x90, 0x700 | 1)
                self.writeb(b, 0xD2, 0x09)
            cmd = self.readw(b, c.COMMAND)
            self.writew(b, c.COMMAND, cmd | c.CMD_IO | c.CMD_MEMORY | c.CMD_SERR)

    def read_vga_rom(self, bdf: int) -> bytes:
        """optionroms.c map_pcirom: enable the ROM BAR, read the image, disable it again."""
        orig = self.readl(bdf, 0x30)
        self.writel(bdf, 0x30, orig | 1)
        base = orig & 0xFFFF_F800
        assert self.m.mmio.read(base, 2) == 0xAA55
        pcir = self.m.mmio.read(base + 0x18, 2)
        assert self.m.mmio.read(base + pcir, 4) == int.from_bytes(b"PCIR", "little")
        assert self.m.mmio.read(base + pcir + 4, 4) == 0x1111_1234
        image = b"".join(self.m.mmio.read(base + i, 4).to_bytes(4, "little") for i in range(0, 512 * 78, 4))
        self.writel(bdf, 0x30, orig)
        return image


def test_seabios_post_over_the_pc_pci_topology() -> None:
    m = Machine()
    bios = SeaBios(m)
    assert set(m.pam.values()) == {(False, False)}

    # make_bios_writable: RAM was not present, so it would copy itself from the 4 GiB alias
    assert bios.make_bios_writable() is False
    assert set(m.pam.values()) == {(True, True)}

    bios.setup()
    found = [(d["bdf"], d["vendor"], d["device"], d["class"]) for d in bios.devices]
    assert found == [
        (0x00, 0x8086, 0x1237, 0x0600),
        (0x08, 0x8086, 0x7000, 0x0601),
        (0x0B, 0x8086, 0x7113, 0x0680),
        (0x10, 0x1234, 0x1111, 0x0300),
        (0x18, 0x8086, 0x100E, 0x0200),
    ]

    # every BAR is where SeaBIOS put it, and enabled
    vga_fb = bios.assigned[0x10, 0]
    assert m.vga.fb_at == [vga_fb] and vga_fb % (16 << 20) == 0 and 0x8000_0000 <= vga_fb < 0xFEC0_0000
    assert m.mmio.find(bios.assigned[0x10, 2]).device is m.vga.mmio  # type: ignore[union-attr]
    assert m.mmio.find(bios.assigned[0x18, 0]).device is m.nic.regs  # type: ignore[union-attr]
    assert bios.assigned[0x18, 1] == 0xC000
    assert m.pio.find(0xC000).device is m.nic.io  # type: ignore[union-attr]
    assert not any(w.pending for w in m.pci.windows())
    # ROM BARs are assigned but stay disabled until a ROM is read
    assert m.mmio.find(bios.assigned[0x10, 6]) is None
    assert bios.read_vga_rom(0x10) == VGA_ROM[: 512 * 78]
    assert m.mmio.find(bios.assigned[0x10, 6]) is None

    # the INTERRUPT_LINE SeaBIOS wrote is the IRQ the e1000's INTA# really raises
    line = bios.readb(0x18, c.INTERRUPT_LINE)
    assert line == 11
    m.nic.set_irq(True)
    assert [irq for irq, ln in m.lines.items() if ln.level] == [line]
    m.nic.set_irq(False)
    assert m.elcr.level_triggered(10) and m.elcr.level_triggered(11)

    # the PM timer is where SeaBIOS's pmtimer_setup will read it
    assert m.pm.pm_base == 0x600
    t0 = m.pio.read(0x608, 4)
    m.now += 10_000_000
    assert m.pio.read(0x608, 4) != t0

    bios.make_bios_readonly()
    assert m.pam[0xF0000] == (True, False) and m.pam[0xC0000] == (True, False)
    assert m.pam[0xD0000] == (True, True)

    # a reboot through 0xCF9 (qemu_reboot), then a VMM-level reset of every function
    m.pio.write(0xCF9, 1, 0x02)
    m.pio.write(0xCF9, 1, 0x06)
    assert m.stop.stops
    for _, _, f in m.pci.functions():
        f.reset()
    m.pci.reset()
    assert set(m.pam.values()) == {(False, False)}
    assert m.mmio.mappings() == [] and m.vga.fb_at[-1] is None
    assert m.pm.pm_base is None and m.pio.find(0xC000) is None
