"""A memory-mapped register block described as data.

Why bytes and masks: VT-d software reads and writes its 64-bit registers either whole (``readq``/
``writeq``, one 8-byte MMIO exit) or as two dwords (a 32-bit guest, or Linux's ``readl`` of a
fault record's top half), and both must mean the same thing. Keeping the register values in one
bytearray with per-byte masks (which bits software may write, which clear when written with 1,
which always read back 0) makes any aligned access of any width work without a case per register
and width, the way QEMU's ``vtd_define_quad``/``vtd_set_long`` tables do. Reserved bits are simply
bits outside every mask: writes to them vanish and they read as their reset value.

A register may name an action (``on_write``) and the bytes whose write starts it (``trigger``,
relative to the register): CCMD and IOTLB act when their *high* dword is written, so a split
``writel(lo); writel(hi)`` acts once, after both halves are in, exactly like one ``writeq``.

The values live in the owner's state (a plain ``bytearray``, so snapshots are copies); this object
holds only the layout, which never changes after construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Reg", "RegisterFile"]


@dataclass(frozen=True)
class Reg:
    """One register: ``size`` bytes at ``offset``.

    ``writable``: bits a write stores. ``w1c``: bits a write of 1 clears (status bits).
    ``write_only``: bits that read as 0 whatever they hold (command fields).
    ``on_write``: name of the owner's method to call after a write touching ``trigger``
    (a (start, end) byte range inside the register; None means the whole register).
    """

    name: str
    offset: int
    size: int
    reset: int = 0
    writable: int = 0
    w1c: int = 0
    write_only: int = 0
    on_write: str | None = None
    trigger: tuple[int, int] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size


class RegisterFile:
    """The layout of a register block: masks per byte and which writes start which action."""

    def __init__(self, size: int, regs: Iterable[Reg]) -> None:
        self.size = size
        self.regs: dict[str, Reg] = {}
        self._reset = bytearray(size)
        self._writable = bytearray(size)
        self._w1c = bytearray(size)
        self._wo = bytearray(size)
        self._owner: list[Reg | None] = [None] * size
        self._trigger: list[Reg | None] = [None] * size
        for r in regs:
            if r.offset < 0 or r.end > size or r.size not in (4, 8):
                raise ValueError(f"register {r.name} at {r.offset:#x}+{r.size} does not fit")
            for b in range(r.offset, r.end):
                if self._owner[b] is not None:
                    raise ValueError(f"register {r.name} overlaps {self._owner[b].name}")  # type: ignore[union-attr]
                self._owner[b] = r
            if r.name in self.regs:
                raise ValueError(f"register {r.name} defined twice")
            self.regs[r.name] = r
            self._put(self._reset, r.offset, r.size, r.reset)
            self._put(self._writable, r.offset, r.size, r.writable)
            self._put(self._w1c, r.offset, r.size, r.w1c)
            self._put(self._wo, r.offset, r.size, r.write_only)
            if r.on_write is not None:
                lo, hi = r.trigger or (0, r.size)
                for b in range(r.offset + lo, r.offset + hi):
                    self._trigger[b] = r

    @staticmethod
    def _put(buf: bytearray, off: int, size: int, value: int) -> None:
        buf[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    @staticmethod
    def _get(buf: bytearray, off: int, size: int) -> int:
        return int.from_bytes(buf[off : off + size], "little")

    def power_on(self) -> bytearray:
        """Fresh register values: every register at its reset value, the rest 0."""
        return bytearray(self._reset)

    def in_range(self, off: int, size: int) -> bool:
        return 0 <= off and size > 0 and off + size <= self.size

    # -- guest accesses -----------------------------------------------------------------------
    def read(self, csr: bytearray, off: int, size: int) -> int:
        """What a guest read returns: the bytes there, write-only bits as 0, unknown offsets 0."""
        if not self.in_range(off, size):
            return 0
        return self._get(csr, off, size) & ~self._get(self._wo, off, size)

    def write(self, csr: bytearray, off: int, size: int, value: int) -> list[Reg]:
        """Apply a guest write through the masks; return the registers whose action it starts."""
        if not self.in_range(off, size):
            return []
        value &= (1 << (8 * size)) - 1
        old = self._get(csr, off, size)
        wm = self._get(self._writable, off, size)
        clr = self._get(self._w1c, off, size) & value
        self._put(csr, off, size, ((old & ~wm) | (value & wm)) & ~clr)
        out: list[Reg] = []
        for b in range(off, off + size):
            r = self._trigger[b]
            if r is not None and r not in out:
                out.append(r)
        return out

    # -- the model's own accesses (no masks) --------------------------------------------------
    def get(self, csr: bytearray, name: str) -> int:
        r = self.regs[name]
        return self._get(csr, r.offset, r.size)

    def set(self, csr: bytearray, name: str, value: int) -> None:
        r = self.regs[name]
        self._put(csr, r.offset, r.size, value)

    def get_at(self, csr: bytearray, off: int, size: int) -> int:
        return self._get(csr, off, size)

    def set_at(self, csr: bytearray, off: int, size: int, value: int) -> None:
        self._put(csr, off, size, value)
