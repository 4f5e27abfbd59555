"""The legacy VGA register set at ports 0x3B0-0x3DF, as SeaVGABIOS and Linux program it.

Facts this model is built on (IBM VGA reference, FreeVGA, checked against QEMU's
``hw/display/vga.c``):

* **Colour or monochrome addressing.** Miscellaneous output bit 0 selects where the CRTC and
  input status 1 live: 0x3D4/0x3D5/0x3DA (colour) or 0x3B4/0x3B5/0x3BA (mono). The other block
  does not decode: reads float (0xFF), writes vanish. At power-on the bit is clear, which is why
  the VGA BIOS's first act is writing 0xC3 to 0x3C2.
* **Indexed files with writable masks.** The sequencer, graphics controller and attribute
  controller keep only their defined bits (``SR_WRITABLE``, ``GR_WRITABLE``, ``AR_WRITABLE``
  below); a guest reading back a register sees what the hardware would keep.
* **16-bit port writes.** ``outw(value << 8 | index, 0x3C4)`` is how SeaVGABIOS writes the
  sequencer, graphics controller and CRTC: the low byte goes to the index port first, then the
  high byte to the data port. Every access wider than a byte is split that way.
* **The attribute flip-flop.** 0x3C0 alternates between index and data on every write; reading
  input status 1 resets it to "index". Reading 0x3C0 returns the index (with the palette
  address source bit 0x20, which must be set for the screen to show anything); data is read at
  0x3C1 without touching the flip-flop.
* **CRTC protection.** With CR11 bit 7 set, CR00-CR07 ignore writes except CR07 bit 4.
* **The DAC.** 0x3C8 sets the write index, 0x3C7 the read index; 0x3C9 moves red, green, blue
  and then advances the index, so a guest streams a palette with one index write. 0x3C7 reads
  back which index was set last (DAC state: 0 write, 3 read).
* **Input status 1** toggles its vertical-retrace and display-enable bits on every read. There
  is no beam to follow, and any BIOS loop that waits for retrace to start or to end needs only
  to see the bit change.

Register it on ``PORT_LENGTH`` ports at ``PORT_BASE`` with ``PORT_SIZES``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .state import AR_COUNT, CR_COUNT, GR_COUNT, SR_COUNT, VgaState

log = logging.getLogger("kvmpy.devices.vga")

#: The legacy VGA decodes 0x3B0-0x3DF (mono block, shared block, colour block).
PORT_BASE = 0x3B0
PORT_LENGTH = 0x30
PORT_SIZES = (1, 2)

# --- Ports (IBM VGA technical reference; names as in Linux's <video/vga.h>) -----------------
CRT_IM = 0x3B4  # CRTC index, mono
CRT_DM = 0x3B5  # CRTC data, mono
IS1_RM = 0x3BA  # input status 1 (read) / feature control (write), mono
ATT_W = 0x3C0  # attribute index and data write
ATT_R = 0x3C1  # attribute data read
MIS_W = 0x3C2  # miscellaneous output write / input status 0 read
PEL_MSK = 0x3C6  # DAC pixel mask
PEL_IR = 0x3C7  # DAC read index (write) / DAC state (read)
PEL_IW = 0x3C8  # DAC write index
PEL_D = 0x3C9  # DAC data
FTC_R = 0x3CA  # feature control read
MIS_R = 0x3CC  # miscellaneous output read
SEQ_I = 0x3C4
SEQ_D = 0x3C5
GFX_I = 0x3CE
GFX_D = 0x3CF
CRT_IC = 0x3D4  # CRTC index, colour
CRT_DC = 0x3D5  # CRTC data, colour
IS1_RC = 0x3DA  # input status 1 (read) / feature control (write), colour

# Miscellaneous output bits
MIS_COLOR = 0x01  # I/O address select: CRTC at 0x3Dx

# Sequencer registers and bits
SR_RESET = 0x00
SR_CLOCK_MODE = 0x01
SR_PLANE_WRITE = 0x02
SR_CHARACTER_MAP = 0x03
SR_MEMORY_MODE = 0x04
SR01_CHAR_CLK_8DOTS = 0x01
SR01_DOT_CLOCK_DIV2 = 0x08
SR01_SCREEN_OFF = 0x20
SR02_ALL_PLANES = 0x0F
SR04_EXT_MEM = 0x02
SR04_ODD_EVEN_DISABLE = 0x04  # "sequential" addressing; clear = host odd/even write addressing
SR04_CHAIN4 = 0x08

# Graphics controller registers and bits
GR_SET_RESET = 0x00
GR_ENABLE_SET_RESET = 0x01
GR_COLOR_COMPARE = 0x02
GR_DATA_ROTATE = 0x03  # bits 2-0 rotate count, bits 4-3 logical function
GR_READ_MAP = 0x04
GR_MODE = 0x05  # bits 1-0 write mode, bit 3 read mode, bit 4 host odd/even, bits 6-5 shift control
GR_MISC = 0x06  # bit 0 graphics, bit 1 chain odd/even, bits 3-2 memory map select
GR_COLOR_DONT_CARE = 0x07
GR_BIT_MASK = 0x08
GR05_READ_MODE1 = 0x08
GR05_HOST_ODD_EVEN = 0x10
GR06_GRAPHICS = 0x01

# Attribute controller registers and bits
AR_MODE = 0x10  # bit 0 graphics, 2 line graphics (9th dot), 3 blink, 6 8-bit colour, 7 P5/P4 select
AR_OVERSCAN = 0x11
AR_PLANE_ENABLE = 0x12
AR_PEL_PANNING = 0x13
AR_COLOR_SELECT = 0x14
AR_INDEX_PAS = 0x20  # palette address source: set = display the palette, i.e. screen on
AR10_LINE_GRAPHICS = 0x04
AR10_BLINK = 0x08
AR10_P54_SELECT = 0x80

# CRTC registers and bits
CR_H_DISP_END = 0x01
CR_OVERFLOW = 0x07
CR_MAX_SCAN = 0x09
CR_CURSOR_START = 0x0A
CR_CURSOR_END = 0x0B
CR_START_HI = 0x0C
CR_START_LO = 0x0D
CR_CURSOR_HI = 0x0E
CR_CURSOR_LO = 0x0F
CR_V_SYNC_END = 0x11
CR_V_DISP_END = 0x12
CR_OFFSET = 0x13
CR_MODE = 0x17
CR_LINE_COMPARE = 0x18
CR11_PROTECT = 0x80  # CR00-CR07 read-only (except CR07 bit 4)
CR07_LINE_COMPARE_8 = 0x10
CR0A_CURSOR_OFF = 0x20

# Input status 1 bits
ST01_DISP_ENABLE = 0x01  # set: display inactive (in horizontal or vertical blanking)
ST01_V_RETRACE = 0x08

#: Writable bits per sequencer register (undefined bits read back as zero).
SR_WRITABLE = bytes((0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0x00))
#: Writable bits per graphics controller register; 0x09-0x0F do not exist.
GR_WRITABLE = bytes((0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF) + (0x00,) * 7)
#: Writable bits per attribute register: 6-bit palette entries, mode control without the
#: reserved bit 4, overscan, plane enable (with video status mux), panning and colour select.
AR_WRITABLE = bytes((0x3F,) * 16 + (0xEF, 0xFF, 0x3F, 0x0F, 0x0F))

assert len(SR_WRITABLE) == SR_COUNT and len(GR_WRITABLE) == GR_COUNT and len(AR_WRITABLE) == AR_COUNT


class VgaPorts:
    """The legacy VGA register file at 0x3B0-0x3DF; see the module docstring.

    ``on_memory_config`` is called after every sequencer or graphics controller data write:
    those registers decide how the 0xA0000 window reaches the planes, and the memory model
    caches that decision (it is on the hot path of every framebuffer access).
    """

    LENGTH = PORT_LENGTH
    SIZES = PORT_SIZES

    def __init__(self, state: VgaState, on_memory_config: Callable[[], None]) -> None:
        self.state = state
        self._memory_config = on_memory_config
        self._warned: set[str] = set()
        # Port -> handler tables: what each port does is data, not a chain of ifs.
        self._readers: dict[int, Callable[[], int]] = {
            ATT_W: self._read_ar_index,
            ATT_R: self._read_ar_data,
            MIS_W: self._read_st00,
            SEQ_I: lambda: self.state.sr_index,
            SEQ_D: lambda: self.state.sr[self.state.sr_index],
            PEL_MSK: lambda: self.state.pel_mask,
            PEL_IR: lambda: self.state.dac_state,
            PEL_IW: lambda: self.state.dac_write_index,
            PEL_D: self._read_dac_data,
            FTC_R: lambda: self.state.feature,
            MIS_R: lambda: self.state.misc,
            GFX_I: lambda: self.state.gr_index,
            GFX_D: lambda: self.state.gr[self.state.gr_index],
            CRT_IM: lambda: self.state.cr_index,
            CRT_IC: lambda: self.state.cr_index,
            CRT_DM: self._read_cr_data,
            CRT_DC: self._read_cr_data,
            IS1_RM: self._read_st01,
            IS1_RC: self._read_st01,
        }
        self._writers: dict[int, Callable[[int], None]] = {
            ATT_W: self._write_ar,
            MIS_W: self._write_misc,
            SEQ_I: self._write_sr_index,
            SEQ_D: self._write_sr_data,
            PEL_MSK: self._write_pel_mask,
            PEL_IR: self._write_dac_read_index,
            PEL_IW: self._write_dac_write_index,
            PEL_D: self._write_dac_data,
            GFX_I: self._write_gr_index,
            GFX_D: self._write_gr_data,
            CRT_IM: self._write_cr_index,
            CRT_IC: self._write_cr_index,
            CRT_DM: self._write_cr_data,
            CRT_DC: self._write_cr_data,
            IS1_RM: self._write_feature,
            IS1_RC: self._write_feature,
        }

    # -- bus interface ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        port = PORT_BASE + offset
        if size == 1:
            return self.read_port(port)
        value = 0
        for i in range(size):  # little-endian: the index port first, as the ISA bus does it
            value |= self.read_port(port + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        port = PORT_BASE + offset
        if size == 1:
            self.write_port(port, value & 0xFF)
            return
        for i in range(size):
            self.write_port(port + i, (value >> (8 * i)) & 0xFF)

    # -- single ports (also used by the MMIO BAR's copy of 0x3C0-0x3DF) ---------------------
    def read_port(self, port: int) -> int:
        if self._other_block(port):
            return 0xFF
        handler = self._readers.get(port)
        if handler is None:
            return 0xFF  # a hole in the VGA's decode (0x3B0-0x3B3, 0x3C3, 0x3CD, ...)
        return handler()

    def write_port(self, port: int, value: int) -> None:
        if self._other_block(port):
            return
        handler = self._writers.get(port)
        if handler is None:
            self._log_once(f"w{port:x}", "write %#x to port %#x ignored", value, port)
            return
        handler(value & 0xFF)

    def _other_block(self, port: int) -> bool:
        """True for the mono block in colour mode and for the colour block in mono mode."""
        if self.state.misc & MIS_COLOR:
            return 0x3B0 <= port <= 0x3BF
        return 0x3D0 <= port <= 0x3DF

    # -- general registers ------------------------------------------------------------------
    def _read_st00(self) -> int:
        return 0  # input status 0: no switch sense, no CRT interrupt

    def _read_st01(self) -> int:
        st = self.state
        st.st01 ^= ST01_V_RETRACE | ST01_DISP_ENABLE
        st.ar_flip_flop = False
        return st.st01

    def _write_misc(self, value: int) -> None:
        self.state.misc = value & ~0x10 & 0xFF  # bit 4 is reserved

    def _write_feature(self, value: int) -> None:
        self.state.feature = value

    # -- sequencer and graphics controller --------------------------------------------------
    def _write_sr_index(self, value: int) -> None:
        self.state.sr_index = value & (SR_COUNT - 1)

    def _write_sr_data(self, value: int) -> None:
        st = self.state
        st.sr[st.sr_index] = value & SR_WRITABLE[st.sr_index]
        self._memory_config()

    def _write_gr_index(self, value: int) -> None:
        self.state.gr_index = value & (GR_COUNT - 1)

    def _write_gr_data(self, value: int) -> None:
        st = self.state
        st.gr[st.gr_index] = value & GR_WRITABLE[st.gr_index]
        self._memory_config()

    # -- attribute controller ---------------------------------------------------------------
    def _read_ar_index(self) -> int:
        return self.state.ar_index

    def _read_ar_data(self) -> int:
        st = self.state
        index = st.ar_index & 0x1F
        return st.ar[index] if index < AR_COUNT else 0

    def _write_ar(self, value: int) -> None:
        st = self.state
        if not st.ar_flip_flop:
            st.ar_index = value & 0x3F
        else:
            index = st.ar_index & 0x1F
            if index < AR_COUNT:
                st.ar[index] = value & AR_WRITABLE[index]
        st.ar_flip_flop = not st.ar_flip_flop

    # -- CRT controller ---------------------------------------------------------------------
    def _write_cr_index(self, value: int) -> None:
        self.state.cr_index = value

    def _read_cr_data(self) -> int:
        st = self.state
        return st.cr[st.cr_index] if st.cr_index < CR_COUNT else 0

    def _write_cr_data(self, value: int) -> None:
        st = self.state
        index = st.cr_index
        if index >= CR_COUNT:
            self._log_once(f"cr{index:x}", "write %#x to CRTC register %#x ignored", value, index)
            return
        if st.cr[CR_V_SYNC_END] & CR11_PROTECT and index <= CR_OVERFLOW:
            if index == CR_OVERFLOW:  # the line compare bit 8 stays writable
                st.cr[index] = (st.cr[index] & ~CR07_LINE_COMPARE_8) | (value & CR07_LINE_COMPARE_8)
            return
        st.cr[index] = value

    # -- DAC --------------------------------------------------------------------------------
    def _write_pel_mask(self, value: int) -> None:
        self.state.pel_mask = value

    def _write_dac_read_index(self, value: int) -> None:
        st = self.state
        st.dac_read_index = value
        st.dac_sub_index = 0
        st.dac_state = 3

    def _write_dac_write_index(self, value: int) -> None:
        st = self.state
        st.dac_write_index = value
        st.dac_sub_index = 0
        st.dac_state = 0

    def _write_dac_data(self, value: int) -> None:
        st = self.state
        st.dac_cache[st.dac_sub_index] = value
        st.dac_sub_index += 1
        if st.dac_sub_index == 3:
            base = st.dac_write_index * 3
            st.palette[base : base + 3] = st.dac_cache
            st.dac_sub_index = 0
            st.dac_write_index = (st.dac_write_index + 1) & 0xFF

    def _read_dac_data(self) -> int:
        st = self.state
        value = st.palette[st.dac_read_index * 3 + st.dac_sub_index]
        st.dac_sub_index += 1
        if st.dac_sub_index == 3:
            st.dac_sub_index = 0
            st.dac_read_index = (st.dac_read_index + 1) & 0xFF
        return value

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.info("vga: " + msg, *args)
