"""Bochs VBE "dispi": the extension SeaVGABIOS (bochsvga.c), Linux's bochs-drm and OVMF's
QemuVideoDxe use to set high-resolution linear framebuffer modes on the std VGA.

The interface is two 16-bit ports: write a register number to 0x1CE, then read or write its
value at 0x1CF (``outw`` at 0x1CF spans 0x1CF-0x1D0, hence three ports). Facts, checked
against QEMU's ``hw/display/vga.c`` and ``bochs-vbe.h`` and SeaVGABIOS's ``bochsvga.c``:

* **Detection.** The BIOS writes ID0 (0xB0C0) to ID and must read it back, then writes ID5.
  Writes of anything but 0xB0C0-0xB0C5 to ID are ignored.
* **Mode set.** ENABLE = 0, then BPP, XRES, YRES, BANK = 0, then ENABLE = ENABLED (| LFB |
  NOCLEARMEM). Enabling clears the visible part of VRAM unless NOCLEARMEM is given and programs
  the legacy registers for a chain-4 graphics mode (memory map 1, 256-colour shift) so that
  the banked window at 0xA0000 and the VGA state agree with the VBE mode.
* **Always consistent.** As the interface cannot report errors, every write to a geometry
  register is followed by a fix-up to the nearest valid setting (QEMU's ``vbe_fixup_regs``):
  XRES and VIRT_WIDTH multiples of 8, YRES within VRAM, offsets that keep the frame inside
  VRAM, VIRT_HEIGHT = what fits. Nothing the guest writes can make the renderer read outside
  VRAM.
* **GETCAPS.** While ENABLE has GETCAPS (0x02) set, XRES/YRES/BPP read the maxima.
* **VIDEO_MEMORY_64K** (index 0x0A) reads the VRAM size in 64 KiB units (256 for 16 MiB);
  SeaVGABIOS drops modes that do not fit.
* **8-bit DAC.** ENABLE bit 5 makes the DAC take 8-bit components instead of 6-bit ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .registers import (
    CR_H_DISP_END,
    CR_LINE_COMPARE,
    CR_MAX_SCAN,
    CR_MODE,
    CR_OFFSET,
    CR_OVERFLOW,
    CR_V_DISP_END,
    GR06_GRAPHICS,
    GR_MISC,
    GR_MODE,
    SR01_DOT_CLOCK_DIV2,
    SR02_ALL_PLANES,
    SR04_CHAIN4,
    SR_CLOCK_MODE,
    SR_MEMORY_MODE,
    SR_PLANE_WRITE,
)
from .state import VBE_REG_COUNT, VgaState

log = logging.getLogger("kvmpy.devices.vga")

#: Index port 0x1CE, data port 0x1CF; a 16-bit access to the data port reaches 0x1D0.
DISPI_PORT_BASE = 0x1CE
DISPI_PORT_LENGTH = 3
DISPI_PORT_SIZES = (1, 2)

# Register indices
INDEX_ID = 0x0
INDEX_XRES = 0x1
INDEX_YRES = 0x2
INDEX_BPP = 0x3
INDEX_ENABLE = 0x4
INDEX_BANK = 0x5
INDEX_VIRT_WIDTH = 0x6
INDEX_VIRT_HEIGHT = 0x7
INDEX_X_OFFSET = 0x8
INDEX_Y_OFFSET = 0x9
INDEX_VIDEO_MEMORY_64K = 0xA

# Interface versions the ID register accepts
ID0 = 0xB0C0
ID5 = 0xB0C5
VALID_IDS = frozenset(range(ID0, ID5 + 1))

# ENABLE bits
DISABLED = 0x00
ENABLED = 0x01
GETCAPS = 0x02
DAC_8BIT = 0x20
LFB_ENABLED = 0x40
NOCLEARMEM = 0x80

# Limits (QEMU's)
MAX_XRES = 16000
MAX_YRES = 12000
MAX_BPP = 32
#: Depths the hardware scans out; anything else is fixed up to 8. 15 bpp takes 16 bits.
STORAGE_BITS = {4: 4, 8: 8, 15: 16, 16: 16, 24: 24, 32: 32}

#: Where the linear framebuffer is when there is no PCI BAR to say otherwise (ISA VGA).
LFB_PHYSICAL_ADDRESS_DEFAULT = 0xE0000000

#: Registers whose writes change the geometry and therefore go through the fix-up.
_GEOMETRY = frozenset((INDEX_XRES, INDEX_YRES, INDEX_BPP, INDEX_VIRT_WIDTH, INDEX_X_OFFSET, INDEX_Y_OFFSET))


def vbe_enabled(state: VgaState) -> bool:
    return bool(state.vbe_regs[INDEX_ENABLE] & ENABLED)


def dac_8bit(state: VgaState) -> bool:
    return bool(state.vbe_regs[INDEX_ENABLE] & DAC_8BIT)


class BochsDispi:
    """The dispi index/data ports. ``vram`` is cleared on enable; ``on_memory_config`` is the
    memory window's ``update`` (the bank and chain-4 setup move the window)."""

    LENGTH = DISPI_PORT_LENGTH
    SIZES = DISPI_PORT_SIZES

    def __init__(self, state: VgaState, vram: memoryview, on_memory_config: Callable[[], None]) -> None:
        self.state = state
        self.vram = vram
        self.vram_size = len(vram)
        self._memory_config = on_memory_config
        self._bank_mask = (self.vram_size >> 16) - 1
        self._warned: set[str] = set()

    # -- bus interface ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.state.vbe_index
        if offset == 1:
            return self.read_register(self.state.vbe_index)
        return 0xFF  # the upper half of the data port, reached only as part of offset 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.state.vbe_index = value & 0xFFFF
        elif offset == 1:
            self.write_register(self.state.vbe_index, value & 0xFFFF)
        else:
            self._log_once("1d0", "byte write %#x to port 0x1d0 ignored", value)

    # -- registers (also the MMIO BAR's view: register i at 0x500 + 2 * i) -----------------
    def read_register(self, index: int) -> int:
        regs = self.state.vbe_regs
        if index < VBE_REG_COUNT:
            if regs[INDEX_ENABLE] & GETCAPS:
                if index == INDEX_XRES:
                    return MAX_XRES
                if index == INDEX_YRES:
                    return MAX_YRES
                if index == INDEX_BPP:
                    return MAX_BPP
            return regs[index]
        if index == INDEX_VIDEO_MEMORY_64K:
            return self.vram_size >> 16
        return 0

    def write_register(self, index: int, value: int) -> None:
        st = self.state
        regs = st.vbe_regs
        if index == INDEX_ID:
            if value in VALID_IDS:
                regs[INDEX_ID] = value
        elif index in _GEOMETRY:
            regs[index] = value
            self._fixup()
        elif index == INDEX_BANK:
            mask = self._bank_mask >> 2 if regs[INDEX_BPP] == 4 else self._bank_mask
            regs[INDEX_BANK] = value & mask
            st.bank_offset = (value & mask) << 16
            self._memory_config()
        elif index == INDEX_ENABLE:
            self._write_enable(value)
        else:
            self._log_once(f"i{index}", "write %#x to dispi register %#x ignored", value, index)

    # -- behaviour --------------------------------------------------------------------------
    def _write_enable(self, value: int) -> None:
        st = self.state
        regs = st.vbe_regs
        if value & ENABLED and not regs[INDEX_ENABLE] & ENABLED:
            regs[INDEX_VIRT_WIDTH] = 0
            regs[INDEX_X_OFFSET] = 0
            regs[INDEX_Y_OFFSET] = 0
            regs[INDEX_ENABLE] |= ENABLED
            self._fixup()
            if not value & NOCLEARMEM:
                end = min(self.vram_size, regs[INDEX_YRES] * st.vbe_line_offset)
                self.vram[0:end] = bytes(end)
            self._program_vga()
        elif not value & ENABLED:
            # Disabled: the window is the plain VGA one again. (QEMU also drops the bank when
            # an enabled mode is merely re-written, e.g. to switch the DAC width; keeping it
            # matches the BANK register the guest can read back.)
            st.bank_offset = 0
        regs[INDEX_ENABLE] = value
        self._memory_config()

    def _program_vga(self) -> None:
        """Put the legacy registers into the graphics mode the VBE mode implies (as QEMU does),
        so that the 0xA0000 window is the VBE bank window and the VGA state is coherent."""
        st = self.state
        regs = st.vbe_regs
        gr, cr, sr = st.gr, st.cr, st.sr
        gr[GR_MISC] = (gr[GR_MISC] & ~0x0C) | 0x04 | GR06_GRAPHICS  # memory map 1: A0000 64K
        cr[CR_MODE] |= 0x03  # no CGA/Hercules address substitution
        cr[CR_OFFSET] = (st.vbe_line_offset >> 3) & 0xFF
        cr[CR_H_DISP_END] = ((regs[INDEX_XRES] >> 3) - 1) & 0xFF
        h = regs[INDEX_YRES] - 1
        cr[CR_V_DISP_END] = h & 0xFF
        cr[CR_OVERFLOW] = (cr[CR_OVERFLOW] & ~0x42) | ((h >> 7) & 0x02) | ((h >> 3) & 0x40)
        cr[CR_LINE_COMPARE] = 0xFF  # line compare at 1023: no split screen
        cr[CR_OVERFLOW] |= 0x10
        cr[CR_MAX_SCAN] |= 0x40
        if regs[INDEX_BPP] == 4:
            shift_control = 0
            sr[SR_CLOCK_MODE] &= ~SR01_DOT_CLOCK_DIV2
        else:
            shift_control = 2
            sr[SR_MEMORY_MODE] |= SR04_CHAIN4
            sr[SR_PLANE_WRITE] |= SR02_ALL_PLANES
        gr[GR_MODE] = (gr[GR_MODE] & ~0x60) | (shift_control << 5)
        cr[CR_MAX_SCAN] &= ~0x9F  # no double scan, one scanline per row

    def _fixup(self) -> None:
        """Clamp the geometry registers to something VRAM can hold (QEMU's vbe_fixup_regs)."""
        st = self.state
        r = st.vbe_regs
        if not r[INDEX_ENABLE] & ENABLED:
            return
        bits = STORAGE_BITS.get(r[INDEX_BPP])
        if bits is None:
            r[INDEX_BPP] = 8
            bits = 8
        r[INDEX_XRES] = min(r[INDEX_XRES] & ~7, MAX_XRES) or 8
        r[INDEX_VIRT_WIDTH] = max(min(r[INDEX_VIRT_WIDTH] & ~7, MAX_XRES), r[INDEX_XRES])
        line = r[INDEX_VIRT_WIDTH] * bits // 8
        max_y = self.vram_size // line
        r[INDEX_YRES] = min(r[INDEX_YRES] or 1, MAX_YRES, max_y)
        r[INDEX_X_OFFSET] = min(r[INDEX_X_OFFSET], MAX_XRES)
        r[INDEX_Y_OFFSET] = min(r[INDEX_Y_OFFSET], MAX_YRES)
        offset = r[INDEX_X_OFFSET] * bits // 8 + r[INDEX_Y_OFFSET] * line
        if offset + r[INDEX_YRES] * line > self.vram_size:
            r[INDEX_Y_OFFSET] = 0
            offset = r[INDEX_X_OFFSET] * bits // 8
            if offset + r[INDEX_YRES] * line > self.vram_size:
                r[INDEX_X_OFFSET] = 0
                offset = 0
        r[INDEX_VIRT_HEIGHT] = min(max_y, 0xFFFF)
        st.vbe_line_offset = line
        st.vbe_start = offset

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.info("vga dispi: " + msg, *args)
