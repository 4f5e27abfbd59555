"""BAR2 of the std VGA: QEMU's 4 KiB MMIO block, the legacy-free way to the same registers.

Linux's bochs-drm (and OVMF's QemuVideoDxe) prefer it to port I/O when BAR2 is at least 4 KiB:

* 0x000-0x3FF: EDID blob (read-only; this model offers none and reads zero),
* 0x400-0x41F: VGA ports 0x3C0-0x3DF, byte for byte (wider accesses in little-endian order,
  so a 16-bit write sets an index and then its data, like ``outw``),
* 0x500-0x515: the Bochs dispi registers, register ``i`` as a 16-bit value at 0x500 + 2*i,
* 0x600-0x607: QEMU extension registers: size of this region (8) at 0x600 and the framebuffer
  byte order at 0x604 (0x1E1E1E1E little-endian; big-endian framebuffers are not offered).
"""

from __future__ import annotations

import logging

from .registers import VgaPorts
from .vbe import BochsDispi

log = logging.getLogger("kvmpy.devices.vga")

MMIO_LENGTH = 0x1000
MMIO_SIZES = (1, 2, 4)

VGA_PORTS_OFFSET = 0x400
VGA_PORTS_LENGTH = 0x3E0 - 0x3C0
DISPI_OFFSET = 0x500
DISPI_LENGTH = 0x0B * 2
QEXT_OFFSET = 0x600
QEXT_SIZE = 2 * 4
QEXT_REG_SIZE = 0
QEXT_REG_BYTEORDER = 4
QEXT_LITTLE_ENDIAN = 0x1E1E1E1E
QEXT_BIG_ENDIAN = 0xBEBEBEBE


class StdVgaMmio:
    """The BAR2 block; register it as the PCI function's BAR2 (4 KiB, 32-bit, not prefetchable)."""

    LENGTH = MMIO_LENGTH
    SIZES = MMIO_SIZES

    def __init__(self, ports: VgaPorts, dispi: BochsDispi) -> None:
        self.ports = ports
        self.dispi = dispi
        self._warned: set[str] = set()

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= self._read_byte(offset + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if DISPI_OFFSET <= offset < DISPI_OFFSET + DISPI_LENGTH:
            self._write_dispi(offset - DISPI_OFFSET, size, value)
        elif VGA_PORTS_OFFSET <= offset < VGA_PORTS_OFFSET + VGA_PORTS_LENGTH:
            for i in range(size):
                if offset + i < VGA_PORTS_OFFSET + VGA_PORTS_LENGTH:
                    self.ports.write_port(0x3C0 + offset + i - VGA_PORTS_OFFSET, (value >> (8 * i)) & 0xFF)
        elif offset == QEXT_OFFSET + QEXT_REG_BYTEORDER and value == QEXT_BIG_ENDIAN:
            self._log_once("be", "guest asked for a big-endian framebuffer; staying little-endian")
        else:
            self._log_once(f"w{offset:x}", "write %#x at BAR2 offset %#x ignored", value, offset)

    def _read_byte(self, offset: int) -> int:
        if VGA_PORTS_OFFSET <= offset < VGA_PORTS_OFFSET + VGA_PORTS_LENGTH:
            return self.ports.read_port(0x3C0 + offset - VGA_PORTS_OFFSET)
        if DISPI_OFFSET <= offset < DISPI_OFFSET + DISPI_LENGTH:
            rel = offset - DISPI_OFFSET
            return (self.dispi.read_register(rel >> 1) >> (8 * (rel & 1))) & 0xFF
        if QEXT_OFFSET <= offset < QEXT_OFFSET + QEXT_SIZE:
            rel = offset - QEXT_OFFSET
            word = QEXT_SIZE if rel < QEXT_REG_BYTEORDER else QEXT_LITTLE_ENDIAN
            return (word >> (8 * (rel & 3))) & 0xFF
        return 0

    def _write_dispi(self, rel: int, size: int, value: int) -> None:
        """Dispi registers are 16 bits: a 4-byte write sets two, a 1-byte write merges into one."""
        if size == 1:
            index = rel >> 1
            shift = 8 * (rel & 1)
            old = self.dispi.state.vbe_regs[index] if index < len(self.dispi.state.vbe_regs) else 0
            value = (old & ~(0xFF << shift)) | ((value & 0xFF) << shift)
            self.dispi.write_register(index, value & 0xFFFF)
            return
        for i in range(0, size, 2):
            if rel + i < DISPI_LENGTH:
                self.dispi.write_register((rel + i) >> 1, (value >> (8 * i)) & 0xFFFF)

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.info("vga mmio: " + msg, *args)
