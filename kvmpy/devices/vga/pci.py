"""The std VGA as the PCI function 1234:1111 that SeaBIOS, vgabios-stdvga and Linux's bochs
driver look for: BAR0 the linear framebuffer (prefetchable, mapped by the machine as a memslot),
BAR2 QEMU's 4 KiB MMIO block with the VGA ports and the Bochs dispi registers, and the VGA BIOS
as its expansion ROM. The legacy ports and the 0xA0000 window are ISA-style fixed resources the
machine places itself."""

from __future__ import annotations

from collections.abc import Callable

from ..pci import BarKind, PciConfig, PciFunction
from . import PCI_CLASS_VGA, PCI_DEVICE_ID, PCI_VENDOR_ID, StdVga


class StdVgaPci(PciFunction):
    def __init__(self, vga: StdVga, rom: bytes, map_framebuffer: Callable[[int | None], None]) -> None:
        cfg = PciConfig(PCI_VENDOR_ID, PCI_DEVICE_ID, PCI_CLASS_VGA >> 8, revision=2,
                        subsystem_vendor_id=0x1AF4, subsystem_id=0x1100)
        cfg.add_bar(0, BarKind.MEM32, len(vga.framebuffer), None, prefetchable=True,
                    name="framebuffer", on_map=map_framebuffer)
        cfg.add_bar(2, BarKind.MEM32, 0x1000, vga.mmio, name="vga-mmio")
        if rom:
            cfg.set_rom(rom, name="vgabios")
        super().__init__(cfg, "vga")
        self.vga = vga
