"""Bochs VBE dispi: detection as SeaVGABIOS does it, mode sets, fix-ups, banks, the 8-bit DAC
and the PCI BAR2 MMIO mirror."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_vga_support import DISPI_DATA, DISPI_INDEX, Machine, booted

from kvmpy.devices.vga import vbe


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def test_detection_as_seavgabios_does(m: Machine) -> None:
    assert m.dispi_read(vbe.INDEX_ID) == vbe.ID5  # reset value
    m.dispi_write(vbe.INDEX_ID, vbe.ID0)
    assert m.dispi_read(vbe.INDEX_ID) == 0xB0C0
    m.dispi_write(vbe.INDEX_ID, 0x1234)  # not an interface version: ignored
    assert m.dispi_read(vbe.INDEX_ID) == 0xB0C0
    m.dispi_write(vbe.INDEX_ID, vbe.ID5)
    assert m.dispi_read(vbe.INDEX_ID) == 0xB0C5
    assert m.dispi_read(vbe.INDEX_VIDEO_MEMORY_64K) == 256  # 16 MiB
    assert m.inw(DISPI_INDEX) == vbe.INDEX_VIDEO_MEMORY_64K
    assert m.dispi_read(0x0B) == 0


def test_getcaps_reports_maxima(m: Machine) -> None:
    en = m.dispi_read(vbe.INDEX_ENABLE)
    m.dispi_write(vbe.INDEX_ENABLE, en | vbe.GETCAPS)
    assert m.dispi_read(vbe.INDEX_XRES) == vbe.MAX_XRES
    assert m.dispi_read(vbe.INDEX_YRES) == vbe.MAX_YRES
    assert m.dispi_read(vbe.INDEX_BPP) == 32
    m.dispi_write(vbe.INDEX_ENABLE, en)
    assert m.dispi_read(vbe.INDEX_XRES) == 0


def test_lfb_mode_1024x768x32(m: Machine) -> None:
    m.vga.vram[0:16] = b"\xaa" * 16
    m.bochs_set_mode(1024, 768, 32)
    assert m.dispi_read(vbe.INDEX_ENABLE) == vbe.ENABLED | vbe.LFB_ENABLED
    assert m.dispi_read(vbe.INDEX_VIRT_WIDTH) == 1024
    assert m.dispi_read(vbe.INDEX_VIRT_HEIGHT) == (16 << 20) // 4096
    assert m.vga.state.vbe_line_offset == 4096
    assert bytes(m.vga.vram[0:16]) == bytes(16)  # enabling cleared the screen
    mode = m.vga.display_mode()
    assert (mode.kind, mode.width, mode.height, mode.bpp, mode.blank) == ("vbe", 1024, 768, 32, False)
    # The legacy registers now describe a chain-4 graphics mode at A0000 (64 KiB).
    st = m.vga.state
    assert st.gr[6] & 0x0D == 0x05 and st.sr[4] & 0x08 and st.gr[5] & 0x60 == 0x40


def test_noclearmem(m: Machine) -> None:
    m.vga.vram[0:4] = b"\x01\x02\x03\x04"
    m.bochs_set_mode(640, 480, 32, noclear=True)
    assert bytes(m.vga.vram[0:4]) == b"\x01\x02\x03\x04"


def test_fixups_keep_geometry_inside_vram(m: Machine) -> None:
    m.bochs_set_mode(1024, 768, 32)
    m.dispi_write(vbe.INDEX_XRES, 1001)  # not a multiple of 8
    assert m.dispi_read(vbe.INDEX_XRES) == 1000
    m.dispi_write(vbe.INDEX_BPP, 7)  # no such depth
    assert m.dispi_read(vbe.INDEX_BPP) == 8
    m.dispi_write(vbe.INDEX_BPP, 32)
    m.dispi_write(vbe.INDEX_YRES, 60000)
    assert m.dispi_read(vbe.INDEX_YRES) == (16 << 20) // (1024 * 4)  # what fits at this width
    m.dispi_write(vbe.INDEX_YRES, 768)
    m.dispi_write(vbe.INDEX_Y_OFFSET, 4000)  # would run past the end of VRAM
    assert m.dispi_read(vbe.INDEX_Y_OFFSET) == 0
    m.dispi_write(vbe.INDEX_VIRT_WIDTH, 100)  # narrower than XRES
    assert m.dispi_read(vbe.INDEX_VIRT_WIDTH) == 1000


def test_virtual_width_and_display_start(m: Machine) -> None:
    m.bochs_set_mode(800, 600, 16)
    m.dispi_write(vbe.INDEX_VIRT_WIDTH, 1600)
    assert m.vga.state.vbe_line_offset == 3200
    assert m.dispi_read(vbe.INDEX_VIRT_HEIGHT) == (16 << 20) // 3200
    m.dispi_write(vbe.INDEX_X_OFFSET, 8)
    m.dispi_write(vbe.INDEX_Y_OFFSET, 10)
    assert m.vga.state.vbe_start == 10 * 3200 + 8 * 2


def test_banked_window(m: Machine) -> None:
    m.bochs_set_mode(640, 480, 8, lfb=False)
    m.dispi_write(vbe.INDEX_BANK, 3)
    assert m.dispi_read(vbe.INDEX_BANK) == 3
    m.writeb(0xA0010, 0x42)
    assert m.vga.vram[3 * 0x10000 + 0x10] == 0x42
    assert m.readb(0xA0010) == 0x42
    m.dispi_write(vbe.INDEX_BANK, 0x1FF)  # beyond VRAM: masked to the 256 banks there are
    assert m.dispi_read(vbe.INDEX_BANK) == 0xFF
    assert m.vga.memory.direct_window() == (0, 0x10000, 0xFF0000)
    m.dispi_write(vbe.INDEX_ENABLE, 0)  # disabling drops the bank
    assert m.vga.state.bank_offset == 0


def test_eight_bit_dac(m: Machine) -> None:
    m.bochs_set_mode(640, 480, 8)
    m.dac_write(1, [(0xFF, 0x80, 0x01)])
    m.dispi_write(vbe.INDEX_ENABLE, m.dispi_read(vbe.INDEX_ENABLE) | vbe.DAC_8BIT)
    m.vga.vram[0] = 1
    _, _, rgb = m.vga.render()
    assert rgb[0:3] == bytes((0xFF, 0x80, 0x01))


def test_byte_accesses_to_the_data_port(m: Machine) -> None:
    m.outb(vbe.INDEX_XRES, DISPI_INDEX)
    m.outb(0x40, DISPI_DATA)
    assert m.inb(DISPI_DATA) == 0x40
    assert m.inb(0x1D0) == 0xFF


def test_mmio_bar_mirrors_ports_and_dispi(m: Machine) -> None:
    mmio = m.vga.mmio
    assert mmio.LENGTH == 0x1000
    assert mmio.read(0x500, 2) == vbe.ID5  # dispi register 0
    assert mmio.read(0x500 + 2 * vbe.INDEX_VIDEO_MEMORY_64K, 2) == 256
    mmio.write(0x500 + 2 * vbe.INDEX_XRES, 2, 800)
    assert m.dispi_read(vbe.INDEX_XRES) == 800
    mmio.write(0x500 + 2 * vbe.INDEX_BPP, 4, (vbe.DISABLED << 16) | 32)  # BPP and ENABLE at once
    assert m.dispi_read(vbe.INDEX_BPP) == 32 and m.dispi_read(vbe.INDEX_ENABLE) == 0
    mmio.write(0x500 + 2 * vbe.INDEX_YRES + 1, 1, 0x02)  # a byte write merges into the register
    assert m.dispi_read(vbe.INDEX_YRES) == 0x200
    assert mmio.read(0x600, 4) == 8 and mmio.read(0x604, 4) == 0x1E1E1E1E
    # VGA ports 0x3C0-0x3DF at 0x400: a word write sets index then data, like outw.
    mmio.write(0x404, 2, 0x0F02)  # SR02 = 0x0F
    assert m.vga.state.sr[2] == 0x0F
    mmio.write(0x408, 1, 0x05)  # DAC write index
    for v in (1, 2, 3):
        mmio.write(0x409, 1, v)
    assert m.vga.state.palette[15:18] == bytes((1, 2, 3))
    assert mmio.read(0x40C, 1) == m.inb(0x3CC)
    # Linux's bochs-drm unblanks through the mirror: read status 1, write 0x20 to 0x3C0.
    mmio.read(0x41A, 1)
    mmio.write(0x400, 1, 0x20)
    assert m.vga.state.ar_index == 0x20
    assert mmio.read(0x100, 4) == 0  # no EDID
