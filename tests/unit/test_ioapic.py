"""The split irqchip's IOAPIC, driven through IOREGSEL/IOWIN the way Linux's io_apic.c does."""

import pytest

from kvmpy.devices.ioapic import (
    IOEOI,
    IOREGSEL,
    IOWIN,
    RTE_MASKED,
    RTE_REMOTE_IRR,
    RTE_TRIGGER_LEVEL,
    Ioapic,
    rte_message,
)


class Sink:
    def __init__(self):
        self.sent = []
        self.route_changes = 0

    def deliver(self, address, data):
        self.sent.append((address, data))

    def changed(self):
        self.route_changes += 1


@pytest.fixture
def chip():
    sink = Sink()
    return Ioapic(3, sink.deliver, sink.changed), sink


def wreg(io, index, value):
    io.write(IOREGSEL, 4, index)
    io.write(IOWIN, 4, value)


def rreg(io, index):
    io.write(IOREGSEL, 4, index)
    return io.read(IOWIN, 4)


def program(io, pin, lo, hi=0):
    wreg(io, 0x10 + 2 * pin + 1, hi)
    wreg(io, 0x10 + 2 * pin, lo)


def test_identification_registers(chip):
    io, _ = chip
    assert rreg(io, 0) == 3 << 24
    assert rreg(io, 1) == 0x20 | (23 << 16)  # version 0x20, 24 entries
    wreg(io, 0, 5 << 24)
    assert rreg(io, 0) == 5 << 24
    wreg(io, 1, 0)  # read-only
    assert rreg(io, 1) == 0x170020
    assert rreg(io, 0x10) == RTE_MASKED  # entries come up masked
    assert rreg(io, 0x99) == 0xFFFF_FFFF


def test_edge_pin_sends_one_message_per_rising_edge(chip):
    io, sink = chip
    program(io, 4, 0x31, 1 << 24)  # vector 0x31, fixed, physical, edge, dest APIC 1
    io.set_irq(4, True)
    io.set_irq(4, True)  # no new edge
    io.set_irq(4, False)
    io.set_irq(4, True)
    assert sink.sent == [(0xFEE0_1000, 0x31), (0xFEE0_1000, 0x31)]


def test_masked_edge_is_latched_until_unmasked(chip):
    io, sink = chip
    program(io, 1, 0x41 | RTE_MASKED)
    io.set_irq(1, True)
    assert sink.sent == []
    program(io, 1, 0x41)
    assert sink.sent == [(0xFEE0_0000, 0x41)]


def test_level_pin_waits_for_eoi_and_redelivers_while_asserted(chip):
    io, sink = chip
    program(io, 9, 0x59 | RTE_TRIGGER_LEVEL)
    io.set_irq(9, True)
    assert sink.sent == [(0xFEE0_0000, 0x59 | 1 << 15)]
    assert rreg(io, 0x10 + 18) & RTE_REMOTE_IRR
    io.set_irq(9, True)
    assert len(sink.sent) == 1  # Remote IRR holds it back
    io.eoi(0x59)  # still asserted: delivered again
    assert len(sink.sent) == 2
    io.set_irq(9, False)
    io.write(IOEOI, 4, 0x59)  # the version-0x20 EOI register
    assert not rreg(io, 0x10 + 18) & RTE_REMOTE_IRR
    assert len(sink.sent) == 2
    io.eoi(0x60)  # another vector: nothing


def test_remote_irr_and_delivery_status_are_read_only(chip):
    io, _ = chip
    program(io, 2, 0x30 | RTE_TRIGGER_LEVEL | RTE_REMOTE_IRR | (1 << 12))
    assert rreg(io, 0x14) == 0x30 | RTE_TRIGGER_LEVEL


def test_remappable_entry_becomes_a_remappable_msi():
    # VT-d 5.1.5.1: index[14:0] in RTE bits 63:49, format bit 48, index[15] in bit 11
    index = 0x8123
    rte = (0x41 | (1 << 15)) | ((index >> 15) << 11) | (1 << 48) | ((index & 0x7FFF) << 49)
    address, data = rte_message(rte)
    assert address & 0xFFF0_0000 == 0xFEE0_0000
    assert address & (1 << 4)  # interrupt format: remappable
    assert ((address >> 5) & 0x7FFF) | (((address >> 2) & 1) << 15) == index
    assert data == 0x41 | 1 << 15


def test_messages_and_route_changes(chip):
    io, sink = chip
    before = sink.route_changes
    program(io, 2, 0x30, 0)
    program(io, 5, 0x35 | RTE_MASKED)
    assert sink.route_changes > before
    assert io.messages() == {2: (0xFEE0_0000, 0x30)}


def test_nonsense_accesses_do_not_raise(chip):
    io, _ = chip
    io.write(0x20, 4, 0xFFFF_FFFF)
    io.write(IOWIN, 1, 0xFF)
    io.write(3, 4, 1)
    assert io.read(0x80, 4) == 0
    io.set_irq(99, True)
    io.write(IOREGSEL, 4, 0x10 + 2 * 24)
    io.write(IOWIN, 4, 0x12)


def test_snapshot_restore_round_trip(chip):
    io, sink = chip
    program(io, 7, 0x47 | RTE_TRIGGER_LEVEL, 2 << 24)
    io.set_irq(7, True)
    snap = io.snapshot()
    io.reset()
    assert rreg(io, 0x10 + 14) == RTE_MASKED
    io.restore(snap)
    assert io.state == snap
    assert rreg(io, 0x10 + 14) & RTE_REMOTE_IRR
