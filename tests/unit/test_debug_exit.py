"""QEMU's isa-debug-exit on port 0xf4, driven the way our guest programs and kvm-unit-tests use it."""

from __future__ import annotations

import pytest

from kvmpy import layout
from kvmpy.devices.debug_exit import DebugExit
from kvmpy.events import RecordingStop, StopReason
from kvmpy.hw.bus import PioBus

PORT = layout.DEBUG_EXIT_PORT


@pytest.fixture
def rig() -> tuple[PioBus, RecordingStop, DebugExit]:
    stop = RecordingStop()
    dev = DebugExit(stop)
    bus = PioBus()
    bus.register(PORT, DebugExit.LENGTH, dev, "debug-exit", sizes=DebugExit.SIZES)
    return bus, stop, dev


@pytest.mark.parametrize("size,value,status", [(1, 0, 1), (1, 0x10, 0x21), (2, 0x7F, 0xFF), (4, 1, 3)])
def test_write_requests_debug_exit(rig, size: int, value: int, status: int) -> None:
    bus, stop, _ = rig
    bus.write(PORT, size, value)
    assert len(stop.stops) == 1
    got = stop.stops[0]
    assert got.reason is StopReason.DEBUG_EXIT
    assert got.status == status == ((value << 1) | 1) & 0xFF
    assert f"{value:#x}" in got.message


def test_write_inside_the_window(rig) -> None:
    bus, stop, _ = rig
    bus.write(PORT + 3, 1, 2)
    assert stop.stops[0].status == 5


@pytest.mark.parametrize("size,expect", [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF)])
def test_reads_are_all_ones(rig, size: int, expect: int) -> None:
    bus, stop, _ = rig
    assert bus.read(PORT, size) == expect
    assert stop.stops == []


def test_state_is_trivial(rig) -> None:
    _, stop, dev = rig
    dev.reset()
    dev.restore(dev.snapshot())
    assert stop.stops == []
