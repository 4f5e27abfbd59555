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
