"""Guest RAM: one memfd, mapped once, registered with KVM as memslots on the PC memory map.

Why memfd: the same pages can later be shared with another process (a vhost backend, a
migration helper) or DMA-mapped through VFIO, and they are never swapped into a file. RAM below
``layout.LOWMEM_LIMIT`` sits at 0; the rest continues above 4 GiB, leaving the 32-bit hole for
PCI, the IOAPIC, the LAPIC and the BIOS, exactly as every PC profile needs.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from . import layout
from .errors import DmaFault, ResourceError
from .kvm import Vm, ffi


@dataclass(frozen=True)
class RamRegion:
    """A contiguous range of guest-physical RAM backed by ``offset`` in the memfd."""

    gpa: int
    size: int
    offset: int
    slot: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


def split_ram(size: int) -> list[tuple[int, int]]:
    """(gpa, size) of the RAM ranges for ``size`` bytes on the PC map."""
    low = min(size, layout.LOWMEM_LIMIT)
    ranges = [(0, low)]
    if size > low:
        ranges.append((layout.HIGHMEM_START, size - low))
    return ranges


class GuestMemory:
    """All guest RAM. Also a DmaSpace for devices when no IOMMU sits in between."""

    def __init__(self, size: int) -> None:
        if size < layout.MIN_MEMORY:
            raise ResourceError(f"{size >> 20} MiB of memory is too little: kvmpy needs at least "
                                f"{layout.MIN_MEMORY >> 20} MiB")
        self.size = size
        self.fd = os.memfd_create("kvmpy-ram", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            # MAP_NORESERVE: the host commits pages only as the guest touches them
            self.mmap = mmap.mmap(self.fd, size, mmap.MAP_SHARED | getattr(mmap, "MAP_NORESERVE", 0),
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            os.close(self.fd)
            raise ResourceError(f"cannot allocate {size >> 20} MiB of guest memory: {e.strerror}") from None
        self.view = memoryview(self.mmap)
        self._cbuf = ffi.from_buffer(self.mmap)
        self.host_base = int(ffi.cast("uintptr_t", self._cbuf))
        self.regions: list[RamRegion] = []
        offset = 0
        for slot, (gpa, rsize) in enumerate(split_ram(size)):
            self.regions.append(RamRegion(gpa, rsize, offset, slot))
            offset += rsize

    @property
    def lowmem_size(self) -> int:
        return self.regions[0].size

    @property
    def highmem_size(self) -> int:
        return self.regions[1].size if len(self.regions) > 1 else 0

    def register(self, vm: Vm, flags: int = 0, holes: tuple[tuple[int, int], ...] = ()) -> None:
        """Register the RAM with KVM as memslots, leaving out ``holes`` ((start, end) pairs):
        the PC profile keeps 0xA0000-0xFFFFF out, where the VGA window and the PAM-controlled
        shadow segments are mapped separately. The RAM behind a hole still exists (devices and
        the shadow segments reach it)."""
        self._slots = 0
        for r in self.regions:
            pieces = [(r.gpa, r.end)]
            for hs, he in holes:
                pieces = [p for a, b in pieces for p in ((a, min(b, hs)), (max(a, he), b)) if p[0] < p[1]]
            for a, b in pieces:
                vm.set_memory_region(self._slots, a, b - a, self.host_base + r.offset + a - r.gpa, flags)
                self._slots += 1

    @property
    def next_free_slot(self) -> int:
        return getattr(self, "_slots", len(self.regions))

    def host_address(self, gpa: int, length: int = 1) -> int:
        """The host virtual address of guest RAM at ``gpa`` (for memslots that alias RAM)."""
        return self.host_base + self._offset(gpa, length, False)

    # -- access --------------------------------------------------------------------------
    def _offset(self, gpa: int, length: int, write: bool) -> int:
        for r in self.regions:
            if r.gpa <= gpa and gpa + length <= r.end:
                return r.offset + gpa - r.gpa
        raise DmaFault(gpa, length, write)

    def contains(self, gpa: int, length: int = 1) -> bool:
        return any(r.gpa <= gpa and gpa + length <= r.end for r in self.regions)

    def read(self, gpa: int, length: int) -> bytes:
        off = self._offset(gpa, length, False)
        return self.mmap[off : off + length]

    def write(self, gpa: int, data: bytes) -> None:
        off = self._offset(gpa, len(data), True)
        self.view[off : off + len(data)] = data

    def slice(self, gpa: int, length: int) -> memoryview:
        """A writable view straight into guest RAM (no copy), for bulk device transfers."""
        off = self._offset(gpa, length, False)
        return self.view[off : off + length]

    def read_u32(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 8), "little")

    def close(self) -> None:
        self._cbuf = None
        self.view.release()
        try:
            self.mmap.close()
        except BufferError:
            pass
        os.close(self.fd)
