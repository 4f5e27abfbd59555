"""Port-I/O and MMIO buses: range maps that police every access the guest makes.

Why a bus and not a dict of handlers in the loop: overlapping devices are refused when they are
placed (not discovered when a guest misbehaves), each device states which access sizes it
accepts, and accesses nobody owns are answered like hardware (PIO reads all-ones, MMIO reads
zero, writes dropped), counted, and logged once per address, so a guest poking nonsense can
never crash the VMM.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("kvmpy.bus")


class Device(Protocol):
    """What a bus needs from a device: reads and writes at offsets inside its range."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(eq=False)
class Mapping:
    """One device range on a bus."""

    base: int
    length: int
    device: Device
    name: str
    sizes: frozenset[int]

    @property
    def end(self) -> int:
        return self.base + self.length


class OverlapError(ValueError):
    """Two devices were placed on the same addresses: a wiring bug, reported at start-up."""


@dataclass
class UnownedStats:
    """Accesses that reached no device, by address, so tracing and tests can see them."""

    reads: int = 0
    writes: int = 0
    by_addr: dict[int, int] = field(default_factory=dict)


_MISS = object()
_MAX_TRACKED = 65536  # distinct unowned addresses counted one by one
_MAX_WARNED = 4096  # distinct unowned addresses logged (once each)
_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}


class Bus:
    """A sorted, non-overlapping map from address ranges to devices."""

    kind = "bus"

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._starts: list[int] = []
        self._maps: list[Mapping] = []
        self.unowned = UnownedStats()

    # -- placement -----------------------------------------------------------------------
    def register(
        self,
        base: int,
        length: int,
        device: Device,
        name: str | None = None,
        sizes: tuple[int, ...] = (1, 2, 4),
    ) -> Mapping:
        if length <= 0 or base < 0 or base + length > self.limit:
            raise ValueError(f"{self.name}: range {base:#x}+{length:#x} is outside the bus")
        i = bisect.bisect_right(self._starts, base)
        if i > 0 and self._maps[i - 1].end > base:
            other = self._maps[i - 1]
            raise OverlapError(f"{self.name}: {name} at {base:#x} overlaps {other.name} at {other.base:#x}")
        if i < len(self._maps) and self._maps[i].base < base + length:
            other = self._maps[i]
            raise OverlapError(f"{self.name}: {name} at {base:#x} overlaps {other.name} at {other.base:#x}")
        m = Mapping(base, length, device, name or type(device).__name__, frozenset(sizes))
        self._starts.insert(i, base)
        self._maps.insert(i, m)
        self._changed()
        return m

    def unregister(self, mapping: Mapping) -> None:
        i = self._maps.index(mapping)
        del self._maps[i]
        del self._starts[i]
        self._changed()

    def _changed(self) -> None:
        pass

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.end:
                return m
        return None

    def mappings(self) -> list[Mapping]:
        return list(self._maps)

    # -- accesses ------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        m = self.find(addr)
        if m is None or size not in m.sizes or addr + size > m.end:
            return self._unowned(addr, size, None, m)
        return m.device.read(addr - m.base, size) & _MASKS[size]

    def write(self, addr: int, size: int, value: int) -> None:
        m = self.find(addr)
        if m is None or size not in m.sizes or addr + size > m.end:
            self._unowned(addr, size, value, m)
            return
        m.device.write(addr - m.base, size, value & _MASKS[size])

    def unowned_value(self, size: int) -> int:
        return 0

    def _unowned(self, addr: int, size: int, value: int | None, m: Mapping | None) -> int:
        st = self.unowned
        if value is None:
            st.reads += 1
        else:
            st.writes += 1
        by_addr = st.by_addr
        if addr in by_addr:
            by_addr[addr] += 1
            return self.unowned_value(size) if value is None else 0
        if len(by_addr) < _MAX_TRACKED:  # a guest sweeping MMIO must not grow this forever
            by_addr[addr] = 1
        if len(by_addr) <= _MAX_WARNED:
            what = "read" if value is None else f"write {value:#x}"
            why = "no device" if m is None else f"size {size} not accepted by {m.name}"
            log.info("%s: unowned %s of size %d at %#x (%s)", self.name, what, size, addr, why)
        return self.unowned_value(size) if value is None else 0


class PioBus(Bus):
    """The 64 KiB x86 I/O port space. Reads nobody answers return all-ones, as on a PC."""

    kind = "pio"

    def __init__(self) -> None:
        super().__init__("pio", 0x10000)
        self._cache: dict[int, Mapping | None] = {}

    def _changed(self) -> None:
        self._cache.clear()

    def find(self, addr: int) -> Mapping | None:
        try:
            return self._cache[addr]
        except KeyError:
            m = super().find(addr)
            self._cache[addr] = m
            return m

    def unowned_value(self, size: int) -> int:
        return _MASKS[size]

    # The port bus is the hottest path in the VMM: the lookup is inlined (one dict probe, no
    # extra call) and an unowned access is answered without leaving this method.
    def read(self, addr: int, size: int) -> int:
        m = self._cache.get(addr, _MISS)
        if m is _MISS:
            m = self.find(addr)
        if m is None or size not in m.sizes or addr + size > m.base + m.length:
            return self._unowned(addr, size, None, m)
        return m.device.read(addr - m.base, size) & _MASKS[size]

    def write(self, addr: int, size: int, value: int) -> None:
        m = self._cache.get(addr, _MISS)
        if m is _MISS:
            m = self.find(addr)
        if m is None or size not in m.sizes or addr + size > m.base + m.length:
            self._unowned(addr, size, value, m)
            return
        m.device.write(addr - m.base, size, value & _MASKS[size])


class MmioBus(Bus):
    """Guest-physical MMIO space (everything that is not a RAM or ROM memslot)."""

    kind = "mmio"

    def __init__(self) -> None:
        super().__init__("mmio", 1 << 52)
