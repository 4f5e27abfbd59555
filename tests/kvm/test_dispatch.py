"""PIO and MMIO accesses reach the right device with the right size and value, string I/O
included: a probe device placed through the Python API, driven by the pio_mmio guest program."""

from pathlib import Path

from kvmpy.machine import Machine
from kvmpy.options import MachineConfig

PIO_BASE, MMIO_BASE = 0x700, 0xD000_0000


class Probe:
    """Records every write; answers every read with a value that encodes offset and size."""

    def __init__(self):
        self.writes = []
        self.reads = []

    def read(self, offset, size):
        self.reads.append((offset, size))
        return int.from_bytes(bytes((offset + i + 0x40) & 0xFF for i in range(size)), "little")

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))


def test_pio_mmio_and_string_io(guest_program):
    cfg = MachineConfig(kernel=Path(guest_program("pio_mmio")), memory=64 << 20, console="none")
    with Machine(cfg) as m:
        pio, mmio = Probe(), Probe()
        m.pio.register(PIO_BASE, 16, pio, "probe", sizes=(1, 2, 4))
        m.mmio.register(MMIO_BASE, 0x1000, mmio, "probe", sizes=(1, 2, 4))
        stop = m.run(timeout=120)
        out = m.output.decode()
        unowned = dict(m.pio.unowned.by_addr)
    assert stop.status == 1, out + stop.message
    for marker in ("PIO OK", "MMIO OK", "STRING OK", "UNOWNED OK", "PIO_MMIO OK"):
        assert marker in out
    # the writes, in the order the guest made them, with their sizes and values
    assert pio.writes[:6] == [(0x0, 1, 0x11), (0x2, 2, 0x2233), (0x4, 4, 0x44556677),
                              (0xF, 1, 0x88), (0xA, 2, 0x99AA), (0xC, 4, 0xBBCCDDEE)]
    assert mmio.writes == [(0x000, 1, 0x12), (0x002, 2, 0x3456), (0x004, 4, 0x789ABCDE),
                           (0xFFF, 1, 0xF1), (0x800, 2, 0xF2F3), (0xFFC, 4, 0xF4F5F6F7)]
    assert (0x5, 1) in pio.reads and (0xE, 2) in pio.reads and (0x100, 4) in mmio.reads
    # string I/O: rep outsb of 0..63 to offset 0, rep outsw of 0x1000.. to offset 2
    string_writes = pio.writes[6:]
    assert string_writes[:64] == [(0, 1, i) for i in range(64)]
    assert string_writes[64:80] == [(2, 2, 0x1000 + i) for i in range(16)]
    assert pio.reads.count((4, 1)) >= 32 and pio.reads.count((2, 2)) >= 32
    # the unowned port reached the VMM (and was answered with all-ones)
    assert unowned.get(0x7F0, 0) >= 3
