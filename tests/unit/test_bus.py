import logging

import pytest

from kvmpy.hw.bus import MmioBus, OverlapError, PioBus


class Recorder:
    def __init__(self):
        self.writes = []
        self.reads = []

    def read(self, offset, size):
        self.reads.append((offset, size))
        return int.from_bytes(bytes((offset + i + 0x40) & 0xFF for i in range(size)), "little")

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))


def test_pio_dispatch_with_offsets_and_sizes():
    bus = PioBus()
    dev = Recorder()
    bus.register(0x700, 16, dev, "probe")
    bus.write(0x703, 2, 0xBEEF)
    assert dev.writes == [(3, 2, 0xBEEF)]
    assert bus.read(0x704, 4) == 0x47464544
    assert dev.reads == [(4, 4)]


def test_unowned_pio_reads_all_ones_and_is_counted(caplog):
    bus = PioBus()
    with caplog.at_level(logging.INFO, logger="kvmpy.bus"):
        assert bus.read(0x7F0, 1) == 0xFF
        assert bus.read(0x7F0, 2) == 0xFFFF
        assert bus.read(0x7F0, 4) == 0xFFFF_FFFF
        bus.write(0x7F0, 1, 0x12)
    assert bus.unowned.reads == 3 and bus.unowned.writes == 1
    assert bus.unowned.by_addr[0x7F0] == 4
    # logged once per address, not once per access
    assert sum("0x7f0" in r.getMessage() for r in caplog.records) == 1


def test_unowned_mmio_reads_zero():
    bus = MmioBus()
    assert bus.read(0xD000_0000, 4) == 0
    bus.write(0xD000_0000, 8, 1)
    assert bus.unowned.writes == 1


def test_overlap_refused_at_registration():
    bus = PioBus()
    bus.register(0x3F8, 8, Recorder(), "com1")
    with pytest.raises(OverlapError):
        bus.register(0x3FF, 1, Recorder(), "other")
    with pytest.raises(OverlapError):
        bus.register(0x3F0, 9, Recorder(), "other")
    bus.register(0x3F0, 8, Recorder(), "adjacent")  # touching is fine


def test_size_not_accepted_is_unowned():
    bus = PioBus()
    dev = Recorder()
    bus.register(0x60, 1, dev, "kbd", sizes=(1,))
    assert bus.read(0x60, 2) == 0xFFFF
    assert dev.reads == []
    # an access that runs past the end of the range is not the device's either
    bus.register(0x70, 2, Recorder(), "rtc", sizes=(1, 2, 4))
    assert bus.read(0x71, 4) == 0xFFFF_FFFF


def test_unregister_and_cache_invalidation():
    bus = PioBus()
    dev = Recorder()
    m = bus.register(0x80, 1, dev, "post")
    assert bus.find(0x80) is m
    bus.unregister(m)
    assert bus.find(0x80) is None
    assert bus.read(0x80, 1) == 0xFF


def test_values_are_masked_to_the_access_size():
    bus = PioBus()
    dev = Recorder()
    bus.register(0x10, 4, dev)
    bus.write(0x10, 1, 0x1FF)
    assert dev.writes[-1] == (0, 1, 0xFF)
