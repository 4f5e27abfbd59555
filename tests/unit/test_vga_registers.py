"""The legacy VGA register set driven through the PIO bus as SeaVGABIOS and Linux drive it."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from test_vga_support import (
    ATTR,
    ATTR_READ,
    CRTC,
    DAC_DATA,
    DAC_READ_INDEX,
    DAC_WRITE_INDEX,
    GC,
    MISC_READ,
    MISC_WRITE,
    PEL_MASK,
    SEQ,
    STATUS1,
    Machine,
    booted,
)

from kvmpy.devices.vga import StdVga, registers


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def test_registration_constants() -> None:
    assert (registers.PORT_BASE, registers.PORT_LENGTH) == (0x3B0, 0x30)
    assert registers.VgaPorts.LENGTH == 0x30 and registers.VgaPorts.SIZES == (1, 2)
    with pytest.raises(ValueError):
        StdVga(vram_size=3 << 20)


# --- miscellaneous output and colour/mono decoding ----------------------------------------
def test_power_on_is_monochrome_addressing() -> None:
    mach = Machine()
    try:
        assert mach.inb(MISC_READ) == 0
        mach.outb(0x0A, 0x3D4)  # colour CRTC does not decode yet
        mach.outb(0x55, 0x3D5)
        assert mach.inb(0x3D4) == 0xFF
        assert mach.vga.state.cr[0x0A] == 0
        mach.outb(0x0A, 0x3B4)  # the mono CRTC does
        mach.outb(0x0E, 0x3B5)
        assert mach.inb(0x3B5) == 0x0E
    finally:
        mach.close()


def test_io_address_select_switches_crtc_and_status(m: Machine) -> None:
    assert m.inb(MISC_READ) == 0xC3  # written by the BIOS init
    m.outb(0x0A, CRTC)
    m.outb(0x0D, CRTC + 1)
    assert m.inb(CRTC + 1) == 0x0D
    assert m.inb(0x3B4) == 0xFF and m.inb(0x3B5) == 0xFF and m.inb(0x3BA) == 0xFF
    m.outb(0x0B, 0x3B4)  # mono CRTC writes vanish in colour mode
    assert m.inb(CRTC) == 0x0A
    m.outb(0xC2, MISC_WRITE)  # back to mono
    assert m.inb(0x3B4) == 0x0A and m.inb(0x3D4) == 0xFF
    assert m.inb(MISC_READ) == 0xC2


def test_misc_output_reserved_bit_reads_zero(m: Machine) -> None:
    m.outb(0xFF, MISC_WRITE)
    assert m.inb(MISC_READ) == 0xEF


def test_feature_control_written_at_status_port_read_at_3ca(m: Machine) -> None:
    m.outb(0x08, STATUS1)
    assert m.inb(0x3CA) == 0x08


# --- sequencer and graphics controller -----------------------------------------------------
def test_sequencer_word_write_and_masks(m: Machine) -> None:
    m.outw(0xFF04, SEQ)  # SR04 keeps bits 1-3
    assert m.inb(SEQ) == 0x04
    assert m.inb(SEQ + 1) == 0x0E
    m.outw(0xFF02, SEQ)
    assert m.inw(SEQ) == 0x0F02  # a word read: index, then data
    m.outb(0x0B, SEQ)  # the index is three bits
    assert m.inb(SEQ) == 0x03


def test_graphics_controller_masks(m: Machine) -> None:
    expect = {0: 0x0F, 1: 0x0F, 2: 0x0F, 3: 0x1F, 4: 0x03, 5: 0x7B, 6: 0x0F, 7: 0x0F, 8: 0xFF, 9: 0x00}
    for index, mask in expect.items():
        m.grdc_write(index, 0xFF)
        m.outb(index, GC)
        assert m.inb(GC + 1) == mask, index
    m.outb(0x1F, GC)
    assert m.inb(GC) == 0x0F


# --- attribute controller ------------------------------------------------------------------
def test_attribute_flip_flop(m: Machine) -> None:
    m.inb(STATUS1)  # reset to "index"
    m.outb(0x05, ATTR)  # index 5, screen off (PAS clear)
    assert m.inb(ATTR) == 0x05
    m.outb(0x2A, ATTR)  # data
    assert m.inb(ATTR_READ) == 0x2A
    assert m.inb(ATTR_READ) == 0x2A  # reading data does not toggle
    m.outb(0x26, ATTR)  # the flip-flop is back at index: index 6 with PAS
    assert m.inb(ATTR) == 0x26
    m.outb(0x11, ATTR)  # data for index 6
    assert m.vga.state.ar[6] == 0x11
    m.outb(0x07, ATTR)  # index again
    m.inb(STATUS1)  # reset in the middle...
    m.outb(0x08, ATTR)  # ...so this is an index, not data for 7
    assert m.vga.state.ar[7] == 0 and m.inb(ATTR) == 0x08


def test_attribute_masks_and_bios_helpers(m: Machine) -> None:
    m.attr_write(0x03, 0xFF)
    assert m.attr_read(0x03) == 0x3F  # palette entries are 6 bits
    m.attr_write(0x10, 0xFF)
    assert m.attr_read(0x10) == 0xEF  # mode control bit 4 is reserved
    m.attr_write(0x12, 0xFF)
    assert m.attr_read(0x12) == 0x3F
    m.attr_write(0x13, 0xFF)
    assert m.attr_read(0x13) == 0x0F
    m.attr_write(0x1F, 0xFF)  # no register there
    assert m.attr_read(0x1F) == 0


def test_palette_address_source_blanks_the_screen(m: Machine) -> None:
    m.set_mode(0x03)
    assert not m.vga.display_mode().blank
    m.attrindex_write(0x00)
    assert m.vga.display_mode().blank
    w, h, rgb = m.vga.render()
    assert (w, h) == (720, 400) and rgb == bytes(len(rgb))
    m.attrindex_write(0x20)
    assert not m.vga.display_mode().blank


# --- CRT controller --------------------------------------------------------------------------
def test_crtc_protect_bit(m: Machine) -> None:
    m.crtc_write(0x11, 0x00)
    m.crtc_write(0x01, 0x4F)
    m.crtc_write(0x07, 0x00)
    m.crtc_write(0x11, 0x80)  # protect CR00-CR07
    m.crtc_write(0x01, 0x27)
    m.crtc_write(0x07, 0xFF)
    assert m.crtc_read(0x01) == 0x4F
    assert m.crtc_read(0x07) == 0x10  # only the line-compare bit 8 gets through
    m.crtc_write(0x0E, 0x12)  # registers above 7 are not protected
    assert m.crtc_read(0x0E) == 0x12
    m.crtc_write(0x11, 0x00)
    m.crtc_write(0x01, 0x27)
    assert m.crtc_read(0x01) == 0x27


def test_crtc_cursor_and_start_registers(m: Machine) -> None:
    for index, value in ((0x0A, 0x0D), (0x0B, 0x0E), (0x0C, 0x07), (0x0D, 0xD0), (0x0E, 0x01), (0x0F, 0x40)):
        m.crtc_write(index, value)
        assert m.crtc_read(index) == value
    m.outb(0x40, CRTC)  # nothing there: reads zero, writes vanish
    m.outb(0x99, CRTC + 1)
    assert m.inb(CRTC) == 0x40 and m.inb(CRTC + 1) == 0


# --- DAC ---------------------------------------------------------------------------------------
def test_dac_write_auto_increment_and_read_back(m: Machine) -> None:
    m.outb(0x10, DAC_WRITE_INDEX)
    for v in (1, 2, 3, 4, 5, 6):
        m.outb(v, DAC_DATA)
    assert m.inb(DAC_WRITE_INDEX) == 0x12
    assert m.inb(DAC_READ_INDEX) == 0  # DAC state: write mode
    pal = m.vga.state.palette
    assert pal[0x10 * 3 : 0x12 * 3] == bytes((1, 2, 3, 4, 5, 6))
    m.outb(0x10, DAC_READ_INDEX)
    assert m.inb(DAC_READ_INDEX) == 3  # DAC state: read mode
    assert [m.inb(DAC_DATA) for _ in range(6)] == [1, 2, 3, 4, 5, 6]


def test_dac_partial_triplet_is_not_committed_and_index_wraps(m: Machine) -> None:
    m.outb(0xFF, DAC_WRITE_INDEX)
    m.outb(7, DAC_DATA)
    m.outb(8, DAC_DATA)
    assert m.vga.state.palette[0xFF * 3 :] == bytes(3)
    m.outb(9, DAC_DATA)
    assert m.vga.state.palette[0xFF * 3 :] == bytes((7, 8, 9))
    assert m.inb(DAC_WRITE_INDEX) == 0x00
    m.outb(0x00, DAC_WRITE_INDEX)  # a new index restarts at red
    m.outb(1, DAC_DATA)
    m.outb(0x00, DAC_WRITE_INDEX)
    for v in (10, 11, 12):
        m.outb(v, DAC_DATA)
    assert m.vga.state.palette[0:3] == bytes((10, 11, 12))


def test_pel_mask(m: Machine) -> None:
    assert m.inb(PEL_MASK) == 0xFF
    m.outb(0x0F, PEL_MASK)
    assert m.inb(PEL_MASK) == 0x0F


# --- input status 1 --------------------------------------------------------------------------
def test_input_status_toggles_retrace_so_polling_terminates(m: Machine) -> None:
    seen = {m.inb(STATUS1) & 0x09 for _ in range(4)}
    assert seen == {0x00, 0x09}

    def wait(bit: int, want: bool) -> int:
        for i in range(10):
            if bool(m.inb(STATUS1) & bit) == want:
                return i
        raise AssertionError("polling loop did not terminate")

    # The classic "wait for the end of retrace, then for its start" loop.
    wait(0x08, False)
    wait(0x08, True)
    wait(0x01, False)


def test_mono_status_port_in_mono_mode(m: Machine) -> None:
    m.outb(0x66, MISC_WRITE)
    a, b = m.inb(0x3BA), m.inb(0x3BA)
    assert a ^ b == 0x09
    assert m.inb(STATUS1) == 0xFF


# --- robustness ------------------------------------------------------------------------------
def test_nonsense_never_raises() -> None:
    mach = Machine()
    rng = random.Random(1234)
    try:
        for _ in range(20000):
            port = rng.randrange(0x3B0, 0x3E0)
            size = rng.choice((1, 2))
            if rng.random() < 0.5:
                mach.pio.write(port, size, rng.randrange(1 << (8 * size)))
            else:
                mach.pio.read(port, size)
            if rng.random() < 0.2:
                mach.pio.write(0x1CE, 2, rng.randrange(0x10))
                mach.pio.write(0x1CF, rng.choice((1, 2)), rng.randrange(0x10000))
                mach.pio.read(rng.choice((0x1CE, 0x1CF, 0x1D0)), 1)
            if rng.random() < 0.3:
                addr = 0xA0000 + rng.randrange(0x20000)
                size = rng.choice((1, 2, 4, 8))
                if addr + size <= 0xC0000:
                    mach.mem.write(addr, size, rng.randrange(1 << (8 * size)))
                    mach.mem.read(addr, size)
            if rng.random() < 0.05:
                mach.vga.mmio.write(rng.randrange(0x1000 - 4), rng.choice((1, 2, 4)), rng.randrange(1 << 32))
                mach.vga.mmio.read(rng.randrange(0x1000 - 4), rng.choice((1, 2, 4)))
            if rng.random() < 0.002:
                w, h, rgb = mach.vga.render(cursor=True)
                assert len(rgb) == 3 * w * h
                mach.vga.text_screen()
        w, h, rgb = mach.vga.render(cursor=True)
        assert len(rgb) == 3 * w * h
    finally:
        mach.close()
