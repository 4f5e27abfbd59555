"""The PC's legacy BIOS window (0xC0000-0xFFFFF) and the BIOS ROM, as KVM memslots.

On an i440FX the 13 shadow segments below 1 MiB (twelve of 16 KiB from 0xC0000, one of 64 KiB at
0xF0000) are steered by the host bridge's PAM registers. SeaBIOS depends on it: it runs from the
ROM, makes the segments RAM, copies itself there, and at the end of POST makes them read-only.
Each PAM state becomes one memslot (the faithful option of the platform notes):

    PAM 0 (neither)   -> the ROM alias for 0xE0000-0xFFFFF (read-only slot over the BIOS image),
                         nothing below 0xE0000 (the access reaches the MMIO bus: option ROM space)
    PAM 1 (read RAM)  -> the segment's RAM as a read-only slot: writes exit to us and are dropped
    PAM 2/3 (write)   -> the segment's RAM, read-write (2, write-only, is approximated as 3, as
                         QEMU under KVM does: a memslot cannot read one thing and write another)

The whole BIOS image is also mapped read-only so that it ends at 4 GiB, where the reset vector is.
"""

from __future__ import annotations

import mmap
import os

from .kvm import Vm, ffi, lib
from .memory import GuestMemory

LEGACY_START = 0xC_0000
LEGACY_END = 0x10_0000
ISA_BIOS_START = 0xE_0000
ISA_BIOS_SIZE = 0x2_0000
#: (start, size) of the 13 PAM segments, in PAM register order (PAM0 high nibble is 0xF0000)
SEGMENTS = [(0xF_0000, 0x1_0000)] + [(0xC_0000 + i * 0x4000, 0x4000) for i in range(12)]


class LegacyWindow:
    """Owns the BIOS ROM slot and one slot per shadow segment, and re-maps them on PAM writes."""

    def __init__(self, vm: Vm, memory: GuestMemory, bios: bytes, first_slot: int) -> None:
        if len(bios) % 0x1_0000 or not 0x1_0000 <= len(bios) <= 0x100_0000:
            raise ValueError("a BIOS image must be a multiple of 64 KiB, at most 16 MiB")
        self.vm = vm
        self.memory = memory
        self.bios = bios
        self._fd = os.memfd_create("kvmpy-bios", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, len(bios))
        self._rom = mmap.mmap(self._fd, len(bios), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._rom[:] = bios
        self._rom_base = int(ffi.cast("uintptr_t", ffi.from_buffer(self._rom)))
        self.rom_slot = first_slot
        vm.set_memory_region(self.rom_slot, (1 << 32) - len(bios), len(bios), self._rom_base,
                             lib.KVM_MEM_READONLY)
        self._slots = {start: first_slot + 1 + i for i, (start, _) in enumerate(SEGMENTS)}
        self.state: dict[int, int] = {}
        self._mapped: set[int] = set()
        self.next_free_slot = first_slot + 1 + len(SEGMENTS)
        for start, size in SEGMENTS:
            self.set_segment(start, size, read_ram=False, write_ram=False)

    def _rom_alias(self, start: int) -> int | None:
        """Host address of the ROM bytes that appear at ``start`` when the segment is ROM."""
        if start < ISA_BIOS_START:
            return None
        alias_size = min(len(self.bios), ISA_BIOS_SIZE)
        offset_in_alias = start - (LEGACY_END - alias_size)
        if offset_in_alias < 0:
            return None
        return self._rom_base + len(self.bios) - alias_size + offset_in_alias

    def set_segment(self, start: int, size: int, read_ram: bool, write_ram: bool) -> None:
        """Apply one segment's PAM setting (the i440FX's ``pam_changed`` callback)."""
        state = (2 if write_ram else 0) | (1 if read_ram else 0)
        if self.state.get(start) == state:
            return
        slot = self._slots[start]
        if start in self._mapped:  # delete the old mapping first (KVM refuses to delete nothing)
            self.vm.set_memory_region(slot, start, 0, 0)
            self._mapped.discard(start)
        if state == 0:
            rom = self._rom_alias(start)
            if rom is not None:
                self.vm.set_memory_region(slot, start, size, rom, lib.KVM_MEM_READONLY)
                self._mapped.add(start)
        else:
            flags = 0 if write_ram else lib.KVM_MEM_READONLY
            self.vm.set_memory_region(slot, start, size, self.memory.host_address(start, size), flags)
            self._mapped.add(start)
        self.state[start] = state

    def reset(self) -> None:
        """Back to power-on: every segment ROM, and a pristine BIOS image (SeaBIOS's own state
        lives in its F-segment; a stale copy would take the resume path at the reset vector)."""
        self._rom[:] = self.bios
        for start, size in SEGMENTS:
            self.set_segment(start, size, False, False)

    def close(self) -> None:
        self._rom.close()
        os.close(self._fd)
