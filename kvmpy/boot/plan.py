"""What a kernel loader produces: bytes to place in guest RAM and the CPU state to start from.

A ``BootPlan`` is a plain value with no KVM in it. The machine copies ``writes`` into guest RAM,
and the vCPU code turns ``entry`` into real CPU state: ``mode`` says which descriptor tables,
page tables and control registers to build, ``rip`` and ``regs`` are set as given. ``summary``
says what was loaded where, for ``kvmpy info`` and for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

#: 64-bit long mode, identity-mapped page tables covering the first 4 GiB, flat 64-bit code and
#: data segments (EFER.LME|LMA, CR0.PE|PG, CR4.PAE): the Linux 64-bit boot protocol.
MODE_LONG64 = "long64"
#: 32-bit flat protected mode, paging off (CR0.PE only, 4 GiB code and data segments at base 0):
#: multiboot v1 and Xen PVH.
MODE_PROT32 = "prot32"
MODES = (MODE_LONG64, MODE_PROT32)

#: Register names ``EntryState.regs`` may use: the general registers of ``struct kvm_regs``.
#: A 32-bit protocol's "eax" is the low half of "rax"; the value must then fit in 32 bits.
GENERAL_REGISTERS = frozenset(
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"] + [f"r{i}" for i in range(8, 16)]
)


class Span(NamedTuple):
    """A guest-physical range [start, end)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start:#x}-{self.end:#x}"


@dataclass(frozen=True)
class EntryState:
    """How the boot CPU starts: the mode to build, the first instruction and register values."""

    mode: str
    rip: int
    regs: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown entry mode {self.mode!r}; expected one of {MODES}")
        limit = 1 << (64 if self.mode == MODE_LONG64 else 32)
        unknown = set(self.regs) - GENERAL_REGISTERS
        if unknown:
            raise ValueError(f"unknown register(s) {sorted(unknown)}")
        for name, value in {"rip": self.rip, **self.regs}.items():
            if not 0 <= value < limit:
                raise ValueError(f"{name}={value:#x} does not fit the {self.mode} entry mode")
        object.__setattr__(self, "regs", MappingProxyType(dict(self.regs)))


@dataclass(frozen=True)
class LoadedFile:
    """A file placed in guest memory as given on the command line (an initrd or module)."""

    path: str
    span: Span


@dataclass(frozen=True)
class BootSummary:
    """What a loader used, for reports and tests.

    ``kernel`` is the memory the kernel occupies once started (its image plus bss, or for a
    bzImage the decompression area ``init_size`` asks for); ``initrds`` are the files given, in
    order, where they landed (for a bzImage they are one concatenated ramdisk); ``cmdline`` is
    the string handed to the kernel (for multiboot it starts with the kernel's file name).
    """

    kind: str  # "bzimage" | "pvh" | "multiboot"
    kernel_path: str
    protocol: str  # e.g. "Linux boot protocol 2.15", "PVH (hvm_start_info v1)", "multiboot v1 (ELF)"
    kernel: Span
    initrds: tuple[LoadedFile, ...]
    cmdline: str
    cmdline_addr: int
    boot_info_addr: int  # the zero page, hvm_start_info or multiboot information
    version: str = ""  # the kernel's own version string, when it carries one
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """Human-readable lines for ``kvmpy info``."""
        lines = [f"kernel: {self.kernel_path} ({self.kind}, {self.protocol})"]
        if self.version:
            lines.append(f"version: {self.version}")
        lines.append(f"kernel memory: {self.kernel}")
        for f in self.initrds:
            lines.append(f"initrd: {f.path} at {f.span} ({f.span.size} bytes)")
        lines.append(f"cmdline at {self.cmdline_addr:#x}: {self.cmdline!r}")
        lines.append(f"boot information at {self.boot_info_addr:#x}")
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


@dataclass
class BootPlan:
    """Guest-physical writes, the entry state and a summary; see the module docstring."""

    writes: list[tuple[int, bytes]]
    entry: EntryState
    summary: BootSummary

    @property
    def kind(self) -> str:
        return self.summary.kind

    def apply(self, write: Callable[[int, bytes], None]) -> None:
        """Hand every write to ``write(gpa, data)`` (e.g. ``GuestMemory.write``), in order."""
        for gpa, data in self.writes:
            write(gpa, data)

    def spans(self) -> list[Span]:
        return [Span(gpa, gpa + len(data)) for gpa, data in self.writes]

    def read(self, gpa: int, size: int) -> bytes:
        """The bytes the plan puts at [gpa, gpa+size); unwritten bytes read as zero (for tests)."""
        out = bytearray(size)
        for start, data in self.writes:
            lo, hi = max(start, gpa), min(start + len(data), gpa + size)
            if lo < hi:
                out[lo - gpa : hi - gpa] = data[lo - start : hi - start]
        return bytes(out)
