"""Everything the guest can observe of the standard VGA, except the video memory itself.

One dataclass for the whole adapter (legacy registers, DAC, latches, Bochs VBE), because the
parts are not independent: enabling VBE rewrites VGA registers, the VBE bank moves the legacy
window, and the renderer reads all of it. VRAM is a separate 16 MiB shared mapping (the linear
framebuffer memslot), so it is snapshotted by ``StdVga`` next to this state, not inside it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

#: Register counts of the VGA's indexed register files (IBM VGA / FreeVGA).
SR_COUNT = 8  # sequencer: 0-4 defined, 5-7 kept (masked to zero) so the index can be 3 bits
GR_COUNT = 16  # graphics controller: 0-8 defined; the index is 4 bits
AR_COUNT = 0x15  # attribute controller: palette 0-15, mode, overscan, plane enable, panning, colour select
CR_COUNT = 0x19  # CRT controller: 0x00-0x18

#: 256 DAC entries of three colour components.
DAC_ENTRIES = 256

#: Bochs VBE "dispi" register file: ID .. Y_OFFSET (index 0-9).
VBE_REG_COUNT = 10
#: What the ID register reads after reset: the newest dispi interface version.
VBE_ID_RESET = 0xB0C5


def _vbe_regs_reset() -> list[int]:
    regs = [0] * VBE_REG_COUNT
    regs[0] = VBE_ID_RESET
    return regs


@dataclass
class VgaState:
    """Guest-visible registers of a std VGA (QEMU 1234:1111), plus the VGA read latches."""

    # General registers
    misc: int = 0  # miscellaneous output (0x3C2 write, 0x3CC read)
    feature: int = 0  # feature control (0x3BA/0x3DA write, 0x3CA read)
    st01: int = 0  # input status 1: the retrace bits toggled on every read
    # Sequencer (0x3C4/0x3C5)
    sr_index: int = 0
    sr: bytearray = field(default_factory=lambda: bytearray(SR_COUNT))
    # Graphics controller (0x3CE/0x3CF)
    gr_index: int = 0
    gr: bytearray = field(default_factory=lambda: bytearray(GR_COUNT))
    # Attribute controller (0x3C0/0x3C1): one port for index and data, chosen by a flip-flop
    ar_index: int = 0  # includes the palette address source bit (0x20): display enabled
    ar_flip_flop: bool = False  # False: the next 0x3C0 write is an index, True: data
    ar: bytearray = field(default_factory=lambda: bytearray(AR_COUNT))
    # CRT controller (0x3B4/0x3B5 or 0x3D4/0x3D5)
    cr_index: int = 0
    cr: bytearray = field(default_factory=lambda: bytearray(CR_COUNT))
    # DAC (0x3C6-0x3C9)
    pel_mask: int = 0xFF
    dac_state: int = 0  # 0: last index written was the write index, 3: the read index
    dac_read_index: int = 0
    dac_write_index: int = 0
    dac_sub_index: int = 0  # which of red/green/blue the next data access touches
    dac_cache: bytearray = field(default_factory=lambda: bytearray(3))
    palette: bytearray = field(default_factory=lambda: bytearray(3 * DAC_ENTRIES))
    # Memory pipeline: the four plane bytes loaded by the last planar read (plane 0 in bits 0-7)
    latch: int = 0
    # Bochs VBE (0x1CE/0x1CF)
    vbe_index: int = 0
    vbe_regs: list[int] = field(default_factory=_vbe_regs_reset)
    vbe_start: int = 0  # byte offset in VRAM of the top-left visible VBE pixel
    vbe_line_offset: int = 0  # bytes per VBE scanline (virtual width * bytes per pixel)
    bank_offset: int = 0  # byte offset in VRAM of the banked 64 KiB window at 0xA0000

    def reset(self) -> None:
        """Back to the power-on values (all zero, as QEMU; the VGA BIOS programs a mode)."""
        self.restore(VgaState())

    def snapshot(self) -> VgaState:
        return copy.deepcopy(self)

    def restore(self, snap: VgaState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))
