"""The VGA memory window at 0xA0000-0xBFFFF: four planes behind a programmable pipeline.

How VRAM is laid out (the QEMU std VGA convention, which SeaVGABIOS and every guest driver for
1234:1111 rely on, because VBE's linear framebuffer is the same memory): the four 64 KiB planes
are interleaved byte by byte at the start of the 16 MiB VRAM, plane ``p`` offset ``i`` at VRAM
byte ``4 * i + p``. So a 32-bit word ``i`` holds the four plane bytes a planar access latches,
and chain-4 (mode 13h, VBE banks), where host byte ``a`` goes to plane ``a & 3`` offset
``a >> 2``, is simply VRAM byte ``a``.

The CPU side, per access (FreeVGA, "Graphics Controller" and "Sequencer"):

* **Memory map select** (GR06 bits 3-2) picks the window: A0000 128K, A0000 64K (plus the VBE
  bank offset), B0000 32K, B8000 32K. Outside it reads float (0xFF) and writes vanish.
* **Chain-4** (SR04 bit 3): host byte ``a`` is VRAM byte ``a``, if SR02 enables plane ``a & 3``.
* **Odd/even** (text and CGA modes): SR04 bit 2 clear restricts a write to the even planes
  (0, 2) for even addresses and to the odd planes (1, 3) for odd ones; GR05 bit 4 halves the
  address, so text cell ``i`` is plane 0 (character) and plane 1 (attribute) offset ``i``.
  Reads pick plane ``(GR04 & 2) | (a & 1)``.
* **Planar** (everything else): a read loads all four plane bytes into the latches and returns
  plane GR04 (read mode 0) or the colour-compare result (read mode 1, GR02/GR07). A write goes
  through write mode 0 (rotate, set/reset, logical function with the latches, bit mask),
  1 (the latches), 2 (host bits 3-0 spread over the planes) or 3 (rotated host data ANDed
  into the bit mask, set/reset as colour), then SR02 decides which planes take it.

Odd/even accesses go through the same latched pipeline (as on hardware, and as QEMU does since
2024); with the pipeline at its defaults this is simply "store the byte", and that case has its
own short path because text consoles and BIOS scrolling are made of it.

Cost: the access path is chosen once per register change (``update``), not per byte. Chain-4
accesses with all planes enabled handle a whole 2/4/8-byte access with one slice copy, and a
plain odd/even word write (a text cell: character and attribute) is one latch-word update.
"""

from __future__ import annotations

from collections.abc import Callable

from .registers import (
    GR05_HOST_ODD_EVEN,
    GR05_READ_MODE1,
    GR_BIT_MASK,
    GR_COLOR_COMPARE,
    GR_COLOR_DONT_CARE,
    GR_DATA_ROTATE,
    GR_ENABLE_SET_RESET,
    GR_MISC,
    GR_MODE,
    GR_READ_MAP,
    GR_SET_RESET,
    SR04_CHAIN4,
    SR04_ODD_EVEN_DISABLE,
    SR_MEMORY_MODE,
    SR_PLANE_WRITE,
)
from .state import VgaState

#: The legacy window: 0xA0000-0xBFFFF, any access size a CPU can make to MMIO.
WINDOW_BASE = 0xA0000
WINDOW_LENGTH = 0x20000
WINDOW_SIZES = (1, 2, 4, 8)

#: Memory map select (GR06 bits 3-2) -> (first window offset, end, VRAM offset - window offset).
#: Map 1's VRAM offset also adds the VBE bank (see ``VgaMemory.update``).
MEMORY_MAPS = (
    (0x00000, 0x20000, 0),  # 0: A0000-BFFFF
    (0x00000, 0x10000, 0),  # 1: A0000-AFFFF
    (0x10000, 0x18000, -0x10000),  # 2: B0000-B7FFF
    (0x18000, 0x20000, -0x18000),  # 3: B8000-BFFFF
)

#: A 4-bit plane set -> the 32-bit mask of those plane bytes in a latch word (plane 0 = bits 0-7).
PLANE_MASK32 = tuple(
    sum(0xFF << (8 * p) for p in range(4) if n & (1 << p)) for n in range(16)
)

#: Odd/even write addressing: which planes an even / odd host address may reach.
_EVEN_PLANES = 0x05
_ODD_PLANES = 0x0A

#: What the direct (memslot-able) view of the window is: (window offset, length, VRAM offset).
DirectWindow = tuple[int, int, int]


class VgaMemory:
    """The 0xA0000 window device. Register it at ``WINDOW_BASE`` with ``WINDOW_LENGTH`` and
    ``WINDOW_SIZES``. ``update()`` must run after any change to SR02/SR04, GR00-GR08 or the VBE
    bank; the register and VBE models call it."""

    LENGTH = WINDOW_LENGTH
    SIZES = WINDOW_SIZES

    def __init__(self, state: VgaState, vram: memoryview) -> None:
        self.state = state
        self.vram = vram
        self.vram32 = vram.cast("I")  # x86 hosts are little-endian: plane 0 is the low byte
        self.vram_size = len(vram)
        self._words = len(self.vram32)
        #: Called with the new ``direct_window()`` whenever it changes, so a machine that maps
        #: the chain-4 window straight onto VRAM (a memslot alias, as QEMU does) can follow.
        self.on_direct_window: Callable[[DirectWindow | None], None] | None = None
        self._direct: DirectWindow | None = None
        self._lo = 0
        self._hi = 0
        self._add = 0
        self._odd_even_write = False
        self._halve = False
        self._wide = False
        self._cells = False
        self._write_byte: Callable[[int, int], None] = self._write_planar
        self._read_byte: Callable[[int], int] = self._read_planar
        self.update()

    # -- configuration ----------------------------------------------------------------------
    def update(self) -> None:
        """Re-derive the access path from the registers (cheap; called on every SR/GR write)."""
        st = self.state
        sr, gr = st.sr, st.gr
        lo, hi, add = MEMORY_MAPS[(gr[GR_MISC] >> 2) & 3]
        if lo == 0 and hi == 0x10000:
            add = st.bank_offset
        self._lo, self._hi, self._add = lo, hi, add
        all_planes = sr[SR_PLANE_WRITE] & 0x0F == 0x0F
        self._cells = False
        if sr[SR_MEMORY_MODE] & SR04_CHAIN4:
            self._wide = all_planes
            self._write_byte = self._write_chain4_all if all_planes else self._write_chain4
            self._read_byte = self._read_chain4
        else:
            self._wide = False
            self._odd_even_write = not sr[SR_MEMORY_MODE] & SR04_ODD_EVEN_DISABLE
            self._halve = bool(gr[GR_MODE] & GR05_HOST_ODD_EVEN)
            simple = (
                gr[GR_MODE] & 3 == 0
                and gr[GR_DATA_ROTATE] == 0
                and gr[GR_ENABLE_SET_RESET] == 0
                and gr[GR_BIT_MASK] == 0xFF
            )
            self._write_byte = self._write_plain if simple else self._write_planar
            self._read_byte = self._read_planar
            # Plain odd/even writes with halved addresses: a 16-bit write is one text cell.
            self._cells = simple and self._odd_even_write and self._halve
        direct = self.direct_window()
        if direct != self._direct:
            self._direct = direct
            if self.on_direct_window is not None:
                self.on_direct_window(direct)

    def direct_window(self) -> DirectWindow | None:
        """In chain-4 mode with all planes enabled the window is a plain view of VRAM: return
        (window offset, length, VRAM offset) so the machine may map it as memory instead of
        taking an exit per access; ``None`` when accesses need the pipeline."""
        if not self._wide:
            return None
        length = self._hi - self._lo
        start = self._lo + self._add
        if start < 0 or start + length > self.vram_size:
            return None
        return (self._lo, length, start)

    # -- bus interface ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size == 1:
            return self._read_byte(offset)
        if self._wide and self._lo <= offset and offset + size <= self._hi:
            a = offset + self._add
            if a + size <= self.vram_size:
                return int.from_bytes(self.vram[a : a + size], "little")
        rb = self._read_byte
        value = 0
        for i in range(size):
            value |= rb(offset + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 1:
            self._write_byte(offset, value & 0xFF)
            return
        if self._wide and self._lo <= offset and offset + size <= self._hi:
            a = offset + self._add
            if a + size <= self.vram_size:
                self.vram[a : a + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
                return
        if self._cells and self._write_cells(offset, size, value):
            return
        wb = self._write_byte
        for i in range(size):
            wb(offset + i, (value >> (8 * i)) & 0xFF)

    # -- chain-4 ----------------------------------------------------------------------------
    def _read_chain4(self, offset: int) -> int:
        if self._lo <= offset < self._hi:
            a = offset + self._add
            if a < self.vram_size:
                return self.vram[a]
        return 0xFF

    def _write_chain4_all(self, offset: int, value: int) -> None:
        if self._lo <= offset < self._hi:
            a = offset + self._add
            if a < self.vram_size:
                self.vram[a] = value

    def _write_chain4(self, offset: int, value: int) -> None:
        if self._lo <= offset < self._hi:
            a = offset + self._add
            if a < self.vram_size and self.state.sr[SR_PLANE_WRITE] & (1 << (a & 3)):
                self.vram[a] = value

    # -- planar and odd/even ----------------------------------------------------------------
    def _plane_address(self, offset: int) -> tuple[int, int]:
        """(latch word index, planes SR02 lets this write reach) or (-1, 0) outside."""
        if not self._lo <= offset < self._hi:
            return -1, 0
        a = offset + self._add
        planes = self.state.sr[SR_PLANE_WRITE] & 0x0F
        if self._odd_even_write:
            planes &= _ODD_PLANES if a & 1 else _EVEN_PLANES
        if self._halve:
            a >>= 1
        if a >= self._words:
            return -1, 0
        return a, planes

    def _write_plain(self, offset: int, value: int) -> None:
        """Write mode 0 with no rotation, set/reset, logical function or bit mask: the byte
        lands unchanged in every enabled plane (text output, font loading, most BIOS work).
        ``_plane_address`` is inlined: this is the hottest path of a text console."""
        if self._lo <= offset < self._hi:
            a = offset + self._add
            planes = self.state.sr[SR_PLANE_WRITE] & 0x0F
            if self._odd_even_write:
                planes &= _ODD_PLANES if a & 1 else _EVEN_PLANES
            if self._halve:
                a >>= 1
            if planes and a < self._words:
                mask = PLANE_MASK32[planes]
                v32 = self.vram32
                v32[a] = (v32[a] & ~mask) | (value * 0x01010101 & mask)

    def _write_cells(self, offset: int, size: int, value: int) -> bool:
        """Text mode's natural access, character and attribute in one aligned word (or two or
        four of them): each word is one cell, i.e. one latch word with the character in the
        even planes and the attribute in the odd ones. False if the access does not fit."""
        if offset & 1 or not (self._lo <= offset and offset + size <= self._hi):
            return False
        a = (offset + self._add) >> 1
        if a + (size >> 1) > self._words:
            return False
        mask = PLANE_MASK32[self.state.sr[SR_PLANE_WRITE] & 0x0F]
        keep = ~mask
        v32 = self.vram32
        for i in range(size >> 1):
            word = value >> (16 * i)
            data = (word & 0xFF) * 0x00010001 | ((word >> 8) & 0xFF) * 0x01000100
            v32[a + i] = (v32[a + i] & keep) | (data & mask)
        return True

    def _write_planar(self, offset: int, value: int) -> None:
        a, planes = self._plane_address(offset)
        if not planes:
            return
        gr = self.state.gr
        latch = self.state.latch
        write_mode = gr[GR_MODE] & 3
        if write_mode == 1:
            result = latch
        else:
            rotate = gr[GR_DATA_ROTATE] & 7
            if write_mode == 0:
                value = ((value >> rotate) | (value << (8 - rotate))) & 0xFF
                enable = PLANE_MASK32[gr[GR_ENABLE_SET_RESET] & 0x0F]
                data = (value * 0x01010101 & ~enable) | (PLANE_MASK32[gr[GR_SET_RESET] & 0x0F] & enable)
                bit_mask = gr[GR_BIT_MASK]
            elif write_mode == 2:
                data = PLANE_MASK32[value & 0x0F]
                bit_mask = gr[GR_BIT_MASK]
            else:
                value = ((value >> rotate) | (value << (8 - rotate))) & 0xFF
                bit_mask = gr[GR_BIT_MASK] & value
                data = PLANE_MASK32[gr[GR_SET_RESET] & 0x0F]
            function = (gr[GR_DATA_ROTATE] >> 3) & 3
            if function == 1:
                data &= latch
            elif function == 2:
                data |= latch
            elif function == 3:
                data ^= latch
            bits = bit_mask * 0x01010101
            result = (data & bits) | (latch & ~bits & 0xFFFFFFFF)
        mask = PLANE_MASK32[planes]
        v32 = self.vram32
        v32[a] = (v32[a] & ~mask) | (result & mask)

    def _read_planar(self, offset: int) -> int:
        if not self._lo <= offset < self._hi:
            return 0xFF
        a = offset + self._add
        gr = self.state.gr
        if self._halve:
            plane = (gr[GR_READ_MAP] & 2) | (a & 1)
            a >>= 1
        else:
            plane = gr[GR_READ_MAP] & 3
        if a >= self._words:
            return 0xFF
        latch = self.state.latch = self.vram32[a]
        if not gr[GR_MODE] & GR05_READ_MODE1:
            return (latch >> (8 * plane)) & 0xFF
        # Read mode 1: a bit is 1 where every "care" plane matches the colour compare value.
        care = PLANE_MASK32[gr[GR_COLOR_DONT_CARE] & 0x0F]
        diff = (latch ^ PLANE_MASK32[gr[GR_COLOR_COMPARE] & 0x0F]) & care
        diff |= diff >> 16
        diff |= diff >> 8
        return ~diff & 0xFF
