"""Loaders that turn a kernel file into memory contents and a CPU entry state.

``load_kernel(path, initrds, cmdline, memmap, rsdp_addr)`` recognises a bzImage, a PVH ELF or a
multiboot kernel and returns a ``BootPlan``: guest-physical writes, an ``EntryState`` and a
``BootSummary``. Pure Python: nothing here touches KVM.
"""

from kvmpy.boot.e820 import E820Entry, MemoryMap
from kvmpy.boot.elf import load_pvh
from kvmpy.boot.linux import load_bzimage
from kvmpy.boot.loader import detect_kind, load_kernel
from kvmpy.boot.multiboot import load_multiboot
from kvmpy.boot.plan import MODE_LONG64, MODE_PROT32, BootPlan, BootSummary, EntryState, LoadedFile, Span

__all__ = [
    "MODE_LONG64",
    "MODE_PROT32",
    "BootPlan",
    "BootSummary",
    "E820Entry",
    "EntryState",
    "LoadedFile",
    "MemoryMap",
    "Span",
    "detect_kind",
    "load_bzimage",
    "load_kernel",
    "load_multiboot",
    "load_pvh",
]
