"""DmaSpace: the only way a device touches guest memory.

One DmaSpace per PCI requester: without an IOMMU it is guest RAM itself; with VT-d it is the
IOMMU's translated view of that requester. Devices never learn which. A blocked or out-of-range
access raises ``DmaFault`` and the device ends the transfer with an error status.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import DmaFault

__all__ = ["DmaSpace", "BytearrayDmaSpace", "DmaFault"]


class DmaSpace(Protocol):
    def read(self, addr: int, length: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class BytearrayDmaSpace:
    """Guest memory as a plain bytearray starting at address 0: for unit tests and tables."""

    def __init__(self, size: int) -> None:
        self.mem = bytearray(size)

    def _check(self, addr: int, length: int, write: bool) -> None:
        if addr < 0 or length < 0 or addr + length > len(self.mem):
            raise DmaFault(addr, length, write)

    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length, False)
        return bytes(self.mem[addr : addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data), True)
        self.mem[addr : addr + len(data)] = data
