"""The PIIX3 IDE function (8086:7010 at 00:01.1) around the IDE controller core.

The PIIX3 runs its two channels in compatibility mode only: the command and control blocks sit at
the legacy ISA ports (0x1F0/0x3F6 on IRQ 14, 0x170/0x376 on IRQ 15) whatever BAR0-3 say, and only
BAR4, the 16-byte bus-master block, is relocatable. Programming interface 0x80 tells drivers
exactly that (bus-master capable, both channels fixed in legacy mode). The IDE timing registers
(0x40-0x48) are plain storage: SeaBIOS and Linux's ata_piix write them, nothing in an emulated
drive depends on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...hw.irq import IrqLine
from ..ide import BM_BLOCK_LEN, BM_BLOCK_SIZES, Drive, PiixIde
from .config import BarKind, PciConfig
from .function import PciFunction

PIIX3_IDE_DEVICE_ID = 0x7010
CLASS_IDE = 0x0101
PROG_IF_LEGACY_BUS_MASTER = 0x80


class Piix3Ide(PciFunction):
    """The function and its controller; the controller's DMA is this function's, so it is
    refused while the guest has not enabled bus mastering (as on real hardware)."""

    def __init__(self, irqs: Sequence[IrqLine], drives: dict[int, Drive]) -> None:
        cfg = PciConfig(0x8086, PIIX3_IDE_DEVICE_ID, CLASS_IDE, prog_if=PROG_IF_LEGACY_BUS_MASTER)
        cfg.declare(0x40, 4, 0, wmask=0xFFFF_FFFF)  # IDETIM primary/secondary
        cfg.declare(0x44, 1, 0, wmask=0xFF)  # SIDETIM
        super().__init__(cfg, "ide")
        self.ide = PiixIde.from_positions(self.dma, irqs, drives)
        cfg.add_bar(4, BarKind.IO, BM_BLOCK_LEN, self.ide.bus_master, name="bus-master",
                    sizes=BM_BLOCK_SIZES)
