"""The guest's memory map as the loaders report it: RAM size, the PCI hole, and the e820 table.

``MemoryMap`` is the one description every loader takes. It follows the QEMU PC convention in
``kvmpy.layout``: RAM runs from 0 up to ``lowmem_end = min(ram, LOWMEM_LIMIT)``, and whatever is
left continues at ``HIGHMEM_START`` (4 GiB). The e820 table it implies:

    [0, EBDA_START)               RAM
    [EBDA_START, 0xA0000)         reserved (EBDA)
    [BIOS_AREA_START, 1 MiB)      reserved (ACPI tables live here for direct boot)
    [1 MiB, lowmem_end)           RAM
    [4 GiB, 4 GiB + highmem)      RAM, when there is any
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmpy import layout
from kvmpy.boot.structs import Layout
from kvmpy.errors import ResourceError

# Address range types (ACPI "System Address Map Interfaces"; the same numbers in Linux's e820,
# multiboot's mmap and Xen's hvm_memmap_table_entry).
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5

#: struct boot_e820_entry (arch/x86/include/uapi/asm/setup_data.h): packed, 20 bytes.
E820_ENTRY = Layout("boot_e820_entry", [("addr", 0, "Q"), ("size", 8, "Q"), ("type", 16, "I")])

#: The smallest guest the loaders accept: low RAM plus at least one MiB above 1 MiB.
MIN_RAM_SIZE = 2 * layout.MiB


@dataclass(frozen=True)
class E820Entry:
    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        return self.addr + self.size

    def pack(self) -> bytes:
        return E820_ENTRY.pack(addr=self.addr, size=self.size, type=self.type)


class MemoryMap:
    """The guest-physical RAM layout for ``ram_size`` bytes of RAM."""

    def __init__(self, ram_size: int) -> None:
        if ram_size < MIN_RAM_SIZE:
            raise ResourceError(
                f"guest memory of {ram_size} bytes is too small: at least {MIN_RAM_SIZE >> 20} MiB is needed"
            )
        self.ram_size = ram_size
        self.lowmem_end = min(ram_size, layout.LOWMEM_LIMIT)
        self.highmem_size = ram_size - self.lowmem_end

    def __repr__(self) -> str:
        return f"MemoryMap(ram_size={self.ram_size:#x})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemoryMap) and other.ram_size == self.ram_size

    def __hash__(self) -> int:
        return hash(self.ram_size)

    @property
    def highmem_end(self) -> int:
        return layout.HIGHMEM_START + self.highmem_size

    def e820(self) -> list[E820Entry]:
        entries = [
            E820Entry(0, layout.EBDA_START, E820_RAM),
            E820Entry(layout.EBDA_START, layout.LEGACY_HOLE_START - layout.EBDA_START, E820_RESERVED),
            E820Entry(layout.BIOS_AREA_START, layout.HIGH_RAM_START - layout.BIOS_AREA_START, E820_RESERVED),
            E820Entry(layout.HIGH_RAM_START, self.lowmem_end - layout.HIGH_RAM_START, E820_RAM),
        ]
        if self.highmem_size:
            entries.append(E820Entry(layout.HIGHMEM_START, self.highmem_size, E820_RAM))
        return entries

    def pack_e820(self) -> bytes:
        """The table as consecutive ``boot_e820_entry`` structures."""
        return b"".join(e.pack() for e in self.e820())

    def ram_ranges(self) -> list[tuple[int, int]]:
        """The usable RAM as (start, end) pairs, end exclusive: what a loader may fill."""
        return [(e.addr, e.end) for e in self.e820() if e.type == E820_RAM]

    def is_ram(self, start: int, end: int) -> bool:
        """True when [start, end) lies wholly inside one usable RAM range."""
        return any(lo <= start and end <= hi for lo, hi in self.ram_ranges())

    def describe_ram(self) -> str:
        return ", ".join(f"{lo:#x}-{hi:#x}" for lo, hi in self.ram_ranges())
