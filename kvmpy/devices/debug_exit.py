"""QEMU's ``isa-debug-exit``: a port a test guest writes to end the run with a status.

Why: our guest programs (``tests/kvm``) and kvm-unit-tests-style tests report their verdict by
writing a value here; the process then exits with ``(value << 1) | 1``, an odd status that never
collides with the even statuses of ordinary stops (see ``kvmpy.events``). The port behaves like
QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x4``: any write of 1, 2 or 4 bytes anywhere
in the 4-byte window ends the run with the written value; reads return all-ones.

Register it as ``bus.register(layout.DEBUG_EXIT_PORT, DEBUG_EXIT_LEN, dev, "debug-exit",
sizes=DEBUG_EXIT_ACCESS_SIZES)``.
"""

from __future__ import annotations

from kvmpy.events import GuestStop, StopRequester

#: Four ports wide so that a 4-byte ``outl`` at the base fits the window.
DEBUG_EXIT_LEN = 4
DEBUG_EXIT_ACCESS_SIZES = (1, 2, 4)


class DebugExit:
    """Ends the run on any write; stateless, so reset/snapshot/restore have nothing to keep."""

    LENGTH = DEBUG_EXIT_LEN
    SIZES = DEBUG_EXIT_ACCESS_SIZES

    def __init__(self, stop: StopRequester) -> None:
        self.stop = stop

    def reset(self) -> None:
        pass

    def snapshot(self) -> None:
        return None

    def restore(self, snap: None) -> None:
        pass

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self.stop.request_stop(GuestStop.debug_exit(value))
