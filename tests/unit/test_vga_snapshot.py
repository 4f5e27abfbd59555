"""Snapshot, restore and reset: a restored adapter equals the original, registers and VRAM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_vga_support import Machine, booted, put_text, text_mode

from kvmpy.devices.vga import StdVga, VgaState


@pytest.fixture
def m() -> Iterator[Machine]:
    yield from booted()


def test_state_snapshot_is_a_deep_copy() -> None:
    st = VgaState()
    snap = st.snapshot()
    st.sr[2] = 0x0F
    st.vbe_regs[1] = 640
    assert snap.sr[2] == 0 and snap.vbe_regs[1] == 0
    st.restore(snap)
    assert st == VgaState()


def test_restore_brings_back_registers_and_vram(m: Machine) -> None:
    text_mode(m)
    put_text(m, 3, 4, "before the snapshot")
    m.crtc_write(0x0E, 0x01)
    m.inb(0x3DA)
    m.outb(0x10, 0x3C0)  # leave the attribute flip-flop in the "data" state
    m.grdc_write(0x05, 0x00)
    m.readb(0xB8000)  # latches loaded
    snap = m.vga.snapshot()
    screen, frame = m.vga.text_screen(), m.vga.render()
    state = m.vga.state.snapshot()

    m.bochs_set_mode(1024, 768, 32)  # clears VRAM and rewrites the VGA registers
    m.vga.vram[0x800000] = 0x77
    assert m.vga.text_screen() == []

    m.vga.restore(snap)
    assert m.vga.state == state
    assert m.vga.text_screen() == screen and m.vga.render() == frame
    assert m.vga.vram[0x800000] == 0
    # The restored adapter behaves like the original: the flip-flop expects data for index 0x10...
    m.outb(0x0C, 0x3C0)
    assert m.vga.state.ar[0x10] == 0x0C
    # ...and the memory window is back to odd/even text access.
    m.grdc_write(0x05, 0x10)
    put_text(m, 0, 0, "after")
    assert m.vga.text_screen()[0].startswith("after")


def test_snapshot_into_another_adapter(m: Machine) -> None:
    m.set_mode(0x13)
    m.writeb(0xA0000 + 5, 0x09)
    other = StdVga()
    try:
        other.restore(m.vga.snapshot())
        assert other.render() == m.vga.render()
        assert other.state == m.vga.state
    finally:
        other.close()


def test_snapshot_does_not_store_unused_vram(m: Machine) -> None:
    text_mode(m)
    assert len(m.vga.snapshot().vram) < 0x40000


def test_reset_keeps_vram(m: Machine) -> None:
    text_mode(m)
    put_text(m, 0, 0, "kept")
    m.vga.reset()
    assert m.vga.state == VgaState()
    assert m.vga.vram[0] == ord("k")
    assert m.vga.text_screen() != []  # power-on geometry is degenerate but decodes
    text_mode(m)
    assert m.vga.text_screen()[0].startswith(" ")  # the BIOS's mode set clears the screen
