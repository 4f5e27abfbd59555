"""The QEMU standard VGA (PCI 1234:1111): legacy VGA registers and memory, Bochs VBE, and
what the screen shows (text, pixels, PNG screenshots).

``StdVga`` owns the 16 MiB of video memory and hands out the device objects a machine places:

============================  ==========================  =========================  ========
object                        where                       length                     sizes
============================  ==========================  =========================  ========
``vga.ports``                 PIO ``PORT_BASE`` 0x3B0     ``PORT_LENGTH`` 0x30       1, 2
``vga.dispi``                 PIO ``DISPI_PORT_BASE``     ``DISPI_PORT_LENGTH`` 3    1, 2
                              0x1CE
``vga.memory``                MMIO ``WINDOW_BASE``        ``WINDOW_LENGTH`` 0x20000  1-8
                              0xA0000
``vga.mmio`` (PCI BAR2)       wherever BAR2 is assigned   ``MMIO_LENGTH`` 0x1000     1, 2, 4
``vga.framebuffer`` (BAR0)    wherever BAR0 is assigned   ``vga.vram_size`` 16 MiB   memslot
============================  ==========================  =========================  ========

The linear framebuffer is VRAM itself: ``framebuffer`` is a writable shared ``mmap`` of a memfd
(``framebuffer_fd``), registered with KVM as a memslot at BAR0 (``ffi.from_buffer`` gives its
host address, as for guest RAM). The guest's LFB writes then never exit, and ``render`` reads
the same pages through ``vram``. The VGA planes are the first 256 KiB of the same memory
(see ``memory.py``), exactly as on QEMU, so the BIOS's banked and planar accesses and the LFB
agree. The expansion ROM is Debian's ``vgabios-stdvga.bin`` (``ROM_FILE``), run by SeaBIOS.

Writes to the 0xA0000 window may be batched (coalesced MMIO) by the machine; the batch must be
replayed through ``memory.write`` before any other VGA access and before rendering, so that
register changes and planar latches see them in order.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from .memory import WINDOW_BASE, WINDOW_LENGTH, WINDOW_SIZES, VgaMemory
from .mmio import MMIO_LENGTH, MMIO_SIZES, StdVgaMmio
from .registers import PORT_BASE, PORT_LENGTH, PORT_SIZES, VgaPorts
from .render import DisplayMode, cursor_position, display_mode, render, text_attributes, text_screen
from .screenshot import encode_png, save_png
from .state import VgaState
from .vbe import DISPI_PORT_BASE, DISPI_PORT_LENGTH, DISPI_PORT_SIZES, BochsDispi

__all__ = [
    "DISPI_PORT_BASE",
    "DISPI_PORT_LENGTH",
    "DISPI_PORT_SIZES",
    "MMIO_LENGTH",
    "MMIO_SIZES",
    "PORT_BASE",
    "PORT_LENGTH",
    "PORT_SIZES",
    "WINDOW_BASE",
    "WINDOW_LENGTH",
    "WINDOW_SIZES",
    "DisplayMode",
    "StdVga",
    "VgaSnapshot",
    "VgaState",
    "encode_png",
    "save_png",
]

#: PCI identity of QEMU's std VGA (what SeaBIOS and vgabios-stdvga.bin look for).
PCI_VENDOR_ID = 0x1234
PCI_DEVICE_ID = 0x1111
PCI_CLASS_VGA = 0x030000  # display controller, VGA-compatible
#: Debian's SeaVGABIOS build for this device (package seabios, /usr/share/seabios/).
ROM_FILE = "vgabios-stdvga.bin"
#: 16 MiB of VRAM, as QEMU's default: BAR0 is a 16 MiB prefetchable memory BAR.
VRAM_SIZE = 16 << 20


@dataclass
class VgaSnapshot:
    """Registers and video memory. Trailing zero bytes of VRAM are not stored (a text-mode
    guest uses a few hundred KiB of the 16 MiB)."""

    state: VgaState
    vram: bytes


class StdVga:
    """The std VGA adapter: device objects for the buses plus text, pixels and screenshots."""

    def __init__(self, vram_size: int = VRAM_SIZE) -> None:
        if vram_size < 0x40000 or vram_size & (vram_size - 1):
            raise ValueError(f"VRAM must be a power of two of at least 256 KiB, not {vram_size:#x}")
        self.vram_size = vram_size
        self.framebuffer_fd = os.memfd_create("kvmpy-vram", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.framebuffer_fd, vram_size)
            self.framebuffer = mmap.mmap(
                self.framebuffer_fd, vram_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError:
            os.close(self.framebuffer_fd)
            raise
        self.vram = memoryview(self.framebuffer)
        self.state = VgaState()
        self.memory = VgaMemory(self.state, self.vram)
        self.ports = VgaPorts(self.state, self.memory.update)
        self.dispi = BochsDispi(self.state, self.vram, self.memory.update)
        self.mmio = StdVgaMmio(self.ports, self.dispi)

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Registers to power-on values; VRAM keeps its contents (as on hardware and QEMU)."""
        self.state.reset()
        self.memory.update()

    def snapshot(self) -> VgaSnapshot:
        return VgaSnapshot(self.state.snapshot(), bytes(self.vram).rstrip(b"\0"))

    def restore(self, snap: VgaSnapshot) -> None:
        self.state.restore(snap.state)
        n = len(snap.vram)
        if n > self.vram_size:
            raise ValueError(f"snapshot holds {n} bytes of VRAM, this adapter has {self.vram_size}")
        self.vram[:n] = snap.vram
        self.vram[n:] = bytes(self.vram_size - n)
        self.memory.update()

    # -- what the screen shows ---------------------------------------------------------------
    def display_mode(self) -> DisplayMode:
        return display_mode(self.state)

    def text_screen(self) -> list[str]:
        """Rows of the text screen (CP437 decoded to Unicode); [] in graphics modes."""
        return text_screen(self.state, self.vram)

    def text_attributes(self) -> list[bytes]:
        return text_attributes(self.state, self.vram)

    def cursor_position(self) -> tuple[int, int] | None:
        return cursor_position(self.state)

    def render(self, cursor: bool = False) -> tuple[int, int, bytes]:
        """(width, height, RGB bytes) of the current picture."""
        return render(self.state, self.vram, cursor)

    def screenshot(self, path: str | os.PathLike[str], cursor: bool = False) -> tuple[int, int]:
        """Write the current picture as a PNG; returns its size."""
        width, height, rgb = self.render(cursor)
        save_png(path, width, height, rgb)
        return width, height

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap VRAM (after the machine removed its memslot) and close the memfd."""
        for view in (self.memory.vram32, self.vram):
            view.release()
        try:
            self.framebuffer.close()
        except BufferError:
            pass  # someone still holds a view (e.g. a cffi buffer); the mapping dies with them
        os.close(self.framebuffer_fd)
