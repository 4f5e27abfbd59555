"""How devices raise interrupts without knowing KVM.

A device holds an ``IrqLine`` (an ISA/GSI wire) or an ``MsiSender``; the machine builder hands
it one bound to the in-kernel irqchip (or to an emulated one later). Unit tests hand it a
``RecordingIrqLine`` and read back what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class IrqLine(Protocol):
    """A level-sensitive interrupt wire. Edge-triggered ISA devices use ``pulse``."""

    def set_level(self, level: bool) -> None: ...

    def pulse(self) -> None: ...


class MsiSender(Protocol):
    """Delivers one message-signalled interrupt (address/data as the device was programmed)."""

    def send(self, address: int, data: int) -> None: ...


class CallbackIrqLine:
    """An IrqLine that forwards level changes to a function (e.g. ``Vm.irq_line`` for a GSI).

    It remembers the level so that repeated ``set_level`` calls with the same value do not cost
    an ioctl each: devices recompute their interrupt output after every register access.
    """

    __slots__ = ("_set", "level")

    def __init__(self, setter: Callable[[bool], None]) -> None:
        self._set = setter
        self.level = False

    def set_level(self, level: bool) -> None:
        level = bool(level)
        if level != self.level:
            self.level = level
            self._set(level)

    def pulse(self) -> None:
        self._set(True)
        self._set(False)
        self.level = False


class SharedIrq:
    """A wired-OR interrupt line: the output is high while any input is high.

    KVM_IRQ_LINE keeps one level per GSI; two devices on one GSI (PCI INTx shared with an ISA
    device, the SCI) would otherwise undo each other's level."""

    def __init__(self, setter: Callable[[bool], None]) -> None:
        self._set = setter
        self._high: set[int] = set()
        self._next = 0
        self.level = False

    def input(self) -> IrqLine:
        n = self._next
        self._next += 1
        return _SharedInput(self, n)

    def _drive(self, n: int, level: bool) -> None:
        if level:
            self._high.add(n)
        else:
            self._high.discard(n)
        out = bool(self._high)
        if out != self.level:
            self.level = out
            self._set(out)

    def _pulse(self, n: int) -> None:
        if self.level:
            return  # a level source holds the line high: an edge now would be lost anyway
        self._set(True)
        self._set(False)


class _SharedInput:
    __slots__ = ("_line", "_n")

    def __init__(self, line: SharedIrq, n: int) -> None:
        self._line = line
        self._n = n

    def set_level(self, level: bool) -> None:
        self._line._drive(self._n, bool(level))

    def pulse(self) -> None:
        self._line._pulse(self._n)


class RecordingIrqLine:
    """An IrqLine for unit tests: keeps the current level and a history of transitions."""

    def __init__(self) -> None:
        self.level = False
        self.history: list[bool] = []
        self.pulses = 0

    def set_level(self, level: bool) -> None:
        level = bool(level)
        if level != self.level:
            self.history.append(level)
        self.level = level

    def pulse(self) -> None:
        self.pulses += 1
        self.history.extend([True, False])
        self.level = False


class NullIrqLine:
    """A wire to nowhere, for devices whose interrupt is not connected."""

    def set_level(self, level: bool) -> None:
        pass

    def pulse(self) -> None:
        pass
