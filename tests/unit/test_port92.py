from kvmpy.devices.port92 import Port92
from kvmpy.events import RecordingStop, StopReason
from kvmpy.hw.bus import PioBus


def test_a20_bit_reads_back_and_reset_edge():
    stop = RecordingStop()
    bus = PioBus()
    dev = Port92(stop)
    bus.register(0x92, 1, dev, "port92", sizes=(1,))
    assert bus.read(0x92, 1) & 2  # A20 open after reset
    bus.write(0x92, 1, 0)
    assert bus.read(0x92, 1) == 0
    bus.write(0x92, 1, 2)
    assert bus.read(0x92, 1) == 2 and not stop.stops
    bus.write(0x92, 1, 3)
    assert [s.reason for s in stop.stops] == [StopReason.RESET]
    snap = dev.snapshot()
    dev.reset()
    dev.restore(snap)
    assert dev.state == snap
