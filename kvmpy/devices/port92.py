"""System control port A (port 0x92): the "fast A20" gate and the fast reset line.

Firmware and boot loaders poll and set bit 1 to open the A20 gate without the slow i8042 path;
a rising edge on bit 0 resets the machine. A20 itself cannot be closed under KVM (the address
line is always on, as on every CPU since long mode), so the bit is remembered and read back, which
is all that A20 checks look at on a machine whose memory does not wrap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..events import GuestStop, StopReason, StopRequester

PORT92_A20 = 1 << 1
PORT92_RESET = 1 << 0


@dataclass
class Port92State:
    value: int = PORT92_A20  # A20 enabled after reset, as SeaBIOS and QEMU leave it


class Port92:
    LENGTH = 1
    SIZES = (1,)

    def __init__(self, stop: StopRequester) -> None:
        self.stop = stop
        self.state = Port92State()

    def read(self, offset: int, size: int) -> int:
        return self.state.value

    def write(self, offset: int, size: int, value: int) -> None:
        old = self.state.value
        self.state.value = value & PORT92_A20
        if value & PORT92_RESET and not old & PORT92_RESET:
            self.stop.request_stop(GuestStop.of(StopReason.RESET, "the guest reset through port 0x92"))

    def reset(self) -> None:
        self.state = Port92State()

    def snapshot(self) -> Port92State:
        return replace(self.state)

    def restore(self, snap: Port92State) -> None:
        self.state = replace(snap)
