"""The 8259A pair driven through ports 0x20/0x21, 0xA0/0xA1 and 0x4D0/0x4D1 the way SeaBIOS,
Linux's i8259 driver and our guest programs (firmware/lib/pic.c) drive it."""

from __future__ import annotations

import random

import pytest

from kvmpy.devices.i8259 import PicPair, PicPairState
from kvmpy.hw.bus import PioBus

M_CMD, M_DATA, S_CMD, S_DATA = 0x20, 0x21, 0xA0, 0xA1
ELCR1, ELCR2 = 0x4D0, 0x4D1


class Cpu:
    """Records the master INT output as the LAPIC's LINT0 would see it."""

    def __init__(self) -> None:
        self.level = False
        self.changes: list[bool] = []

    def __call__(self, level: bool) -> None:
        assert level != self.level, "output() must only report changes"
        self.level = level
        self.changes.append(level)


def make() -> tuple[PicPair, PioBus, Cpu]:
    cpu = Cpu()
    pic = PicPair(cpu)
    bus = PioBus()
    pic.register(bus)
    return pic, bus, cpu


def outb(bus: PioBus, port: int, value: int) -> None:
    bus.write(port, 1, value)


def inb(bus: PioBus, port: int) -> int:
    return bus.read(port, 1)


def seabios_init(bus: PioBus, master_base: int = 0x08, slave_base: int = 0x70) -> None:
    """SeaBIOS pic_setup() (vectors 0x08 and 0x70; firmware/lib's pic_init does the same with
    its own bases): ICW1-ICW4 on both chips, everything masked but the cascade."""
    outb(bus, M_CMD, 0x11)
    outb(bus, S_CMD, 0x11)
    outb(bus, M_DATA, master_base)
    outb(bus, S_DATA, slave_base)
    outb(bus, M_DATA, 0x04)
    outb(bus, S_DATA, 0x02)
    outb(bus, M_DATA, 0x01)
    outb(bus, S_DATA, 0x01)
    outb(bus, M_DATA, 0xFB)
    outb(bus, S_DATA, 0xFF)


def linux_init(bus: PioBus, auto_eoi: bool = False) -> None:
    """arch/x86/kernel/i8259.c init_8259A(): vectors 0x30 and 0x38."""
    outb(bus, M_DATA, 0xFF)
    outb(bus, M_CMD, 0x11)
    outb(bus, M_DATA, 0x30)
    outb(bus, M_DATA, 1 << 2)
    outb(bus, M_DATA, 0x03 if auto_eoi else 0x01)
    outb(bus, S_CMD, 0x11)
    outb(bus, S_DATA, 0x38)
    outb(bus, S_DATA, 2)
    outb(bus, S_DATA, 0x01)
    outb(bus, M_DATA, 0xFB)  # cached masks: all masked but the cascade
    outb(bus, S_DATA, 0xFF)


def read_isr(bus: PioBus) -> int:
    """Linux's i8259A_irq_real / firmware pic_read_isr: OCW3 read ISR, then back to IRR."""
    outb(bus, M_CMD, 0x0B)
    outb(bus, S_CMD, 0x0B)
    isr = inb(bus, M_CMD) | inb(bus, S_CMD) << 8
    outb(bus, M_CMD, 0x0A)
    outb(bus, S_CMD, 0x0A)
    return isr


def read_irr(bus: PioBus) -> int:
    return inb(bus, M_CMD) | inb(bus, S_CMD) << 8


def unmask(bus: PioBus, irq: int) -> None:
    port = M_DATA if irq < 8 else S_DATA
    outb(bus, port, inb(bus, port) & ~(1 << (irq & 7)))


def test_linux_probe_reads_back_imr():
    pic, bus, _ = make()
    outb(bus, S_DATA, 0xFF)
    outb(bus, M_DATA, 0xFB)
    assert inb(bus, M_DATA) == 0xFB
    assert inb(bus, S_DATA) == 0xFF


def test_seabios_init_edge_irq_ack_and_eoi():
    pic, bus, cpu = make()
    seabios_init(bus)
    assert not pic.has_interrupt()
    pic.irq_line(0).pulse()  # masked: latched in IRR but not presented
    assert read_irr(bus) == 0x0001 and not pic.has_interrupt()
    unmask(bus, 0)
    assert pic.has_interrupt() and cpu.level
    assert pic.acknowledge() == 0x08
    assert not pic.has_interrupt() and not cpu.level
    assert read_isr(bus) == 0x0001 and read_irr(bus) == 0
    outb(bus, M_CMD, 0x20)  # non-specific EOI
    assert read_isr(bus) == 0
    assert cpu.changes == [True, False]


def test_slave_irq_through_the_cascade_with_linux_specific_eoi():
    pic, bus, cpu = make()
    linux_init(bus)
    unmask(bus, 12)
    line = pic.irq_line(12)
    line.set_level(True)
    assert pic.has_interrupt()
    assert pic.pending_irq() == 12
    assert pic.acknowledge() == 0x38 + 4
    assert read_isr(bus) == (1 << 12) | (1 << 2)
    line.set_level(False)
    # mask_and_ack_8259A: dummy IMR read, mask, specific EOI to the slave, then to master IR2.
    inb(bus, S_DATA)
    outb(bus, S_DATA, 0xFF)
    outb(bus, S_CMD, 0x60 + 4)
    outb(bus, M_CMD, 0x60 + 2)
    assert read_isr(bus) == 0
    unmask(bus, 12)
    assert not pic.has_interrupt()


def test_firmware_lib_pic_flow():
    """firmware/lib: pic_init(0x20, 0x28), pit_start unmasks IRQ0, the handler calls pic_eoi."""
    pic, bus, cpu = make()
    seabios_init(bus, 0x20, 0x28)
    unmask(bus, 0)
    for _ in range(3):
        pic.irq_line(0).pulse()
        assert pic.acknowledge() == 0x20
        assert read_isr(bus) == 1
        outb(bus, M_CMD, 0x20)
    # A slave IRQ (RTC, 8) unmasks the slave and the cascade; pic_eoi(8) EOIs both chips.
    unmask(bus, 8)
    pic.irq_line(8).pulse()
    assert pic.acknowledge() == 0x28
    outb(bus, S_CMD, 0x20)
    outb(bus, M_CMD, 0x20)
    assert read_isr(bus) == 0 and not pic.has_interrupt()


def test_fixed_priority_and_nesting():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    for irq in (5, 3):
        pic.irq_line(irq).pulse()
    assert pic.acknowledge() == 0x08 + 3
    assert pic.has_interrupt() is False  # 5 is lower than the in-service 3
    pic.irq_line(1).pulse()
    assert pic.acknowledge() == 0x08 + 1  # 1 nests above 3
    assert read_isr(bus) == 0b1010
    outb(bus, M_CMD, 0x20)  # non-specific EOI clears the highest: 1
    assert read_isr(bus) == 0b1000
    assert not pic.has_interrupt()
    outb(bus, M_CMD, 0x20)
    assert pic.acknowledge() == 0x08 + 5


def test_specific_eoi_only_clears_its_level():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    pic.irq_line(4).pulse()
    pic.acknowledge()
    outb(bus, M_CMD, 0x60 + 6)
    assert read_isr(bus) == 1 << 4
    outb(bus, M_CMD, 0x40)  # OCW2 010: no operation
    assert read_isr(bus) == 1 << 4
    outb(bus, M_CMD, 0x60 + 4)
    assert read_isr(bus) == 0


def test_rotate_on_nonspecific_eoi_and_set_priority():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    pic.irq_line(1).pulse()
    assert pic.acknowledge() == 0x09
    outb(bus, M_CMD, 0xA0)  # rotate on non-specific EOI: 1 becomes the lowest, 2 the highest
    pic.irq_line(1).pulse()
    pic.irq_line(6).pulse()
    assert pic.acknowledge() == 0x08 + 6
    outb(bus, M_CMD, 0xE0 + 6)  # rotate on specific EOI 6: 7 highest
    pic.irq_line(7).pulse()
    assert pic.acknowledge() == 0x08 + 7
    outb(bus, M_CMD, 0x67)
    outb(bus, M_CMD, 0xC0 + 0)  # set priority: 0 lowest, 1 highest
    pic.irq_line(0).pulse()
    assert pic.acknowledge() == 0x08 + 1
    outb(bus, M_CMD, 0x20)
    assert pic.acknowledge() == 0x08 + 0


def test_auto_eoi_and_rotate_in_auto_eoi():
    pic, bus, _ = make()
    linux_init(bus, auto_eoi=True)
    outb(bus, M_DATA, 0x00)
    pic.irq_line(3).pulse()
    pic.irq_line(4).pulse()
    assert pic.acknowledge() == 0x33
    assert read_isr(bus) == 0  # AEOI: nothing goes into service
    assert pic.acknowledge() == 0x34
    outb(bus, M_CMD, 0x80)  # rotate in AEOI mode: set
    pic.irq_line(0).pulse()
    assert pic.acknowledge() == 0x30  # 0 now lowest
    pic.irq_line(0).pulse()
    pic.irq_line(7).pulse()
    assert pic.acknowledge() == 0x37
    outb(bus, M_CMD, 0x00)  # rotate in AEOI mode: clear
    pic.irq_line(7).pulse()
    assert pic.acknowledge() == 0x30  # 0 is the highest after 7 was acknowledged
    assert pic.acknowledge() == 0x37


def test_slave_with_auto_eoi_does_not_strand_a_second_request():
    pic, bus, _ = make()
    linux_init(bus, auto_eoi=True)
    outb(bus, S_CMD, 0x11)
    outb(bus, S_DATA, 0x38)
    outb(bus, S_DATA, 2)
    outb(bus, S_DATA, 0x03)
    outb(bus, S_DATA, 0x00)
    pic.irq_line(9).pulse()
    pic.irq_line(10).pulse()
    assert pic.acknowledge() == 0x39
    assert pic.has_interrupt()  # the slave still requests: IR2 is followed as a level
    assert pic.acknowledge() == 0x3A
    assert not pic.has_interrupt()


def test_spurious_irq7_when_the_request_went_away():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, ELCR1, 0x08)  # IRQ 3 level-triggered
    unmask(bus, 3)
    pic.set_irq(3, True)
    assert pic.has_interrupt()
    pic.set_irq(3, False)  # deasserted before the CPU took it
    assert not pic.has_interrupt()
    assert pic.acknowledge() == 0x08 + 7
    assert read_isr(bus) == 0  # a spurious interrupt is never in service
    assert pic.pending_irq() is None


def test_spurious_on_an_idle_controller():
    pic, bus, _ = make()
    linux_init(bus)
    assert pic.acknowledge() == 0x37
    assert read_isr(bus) == 0


def test_edge_needs_a_new_rising_edge():
    pic, bus, _ = make()
    seabios_init(bus)
    unmask(bus, 1)
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x09
    outb(bus, M_CMD, 0x20)
    pic.set_irq(1, True)  # still high: no new edge
    assert not pic.has_interrupt()
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x09


def test_level_triggered_requests_follow_the_input():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, ELCR2, 0x0C)  # IRQ 10 and 11 level (SeaBIOS's PCI IRQs)
    assert inb(bus, ELCR2) == 0x0C and pic.elcr == 0x0C00
    unmask(bus, 11)
    pic.set_irq(11, True)
    assert pic.acknowledge() == 0x70 + 3
    assert read_irr(bus) & (1 << 11)  # INTA does not clear a level request
    outb(bus, S_CMD, 0x20)
    outb(bus, M_CMD, 0x20)
    assert pic.has_interrupt()  # still asserted: it comes back after EOI
    assert pic.acknowledge() == 0x73
    pic.set_irq(11, False)
    outb(bus, S_CMD, 0x20)
    outb(bus, M_CMD, 0x20)
    assert not pic.has_interrupt()
    assert read_irr(bus) == 0


def test_elcr_masks_and_word_access():
    pic, bus, _ = make()
    outb(bus, ELCR1, 0xFF)
    outb(bus, ELCR2, 0xFF)
    assert inb(bus, ELCR1) == 0xF8 and inb(bus, ELCR2) == 0xDE
    bus.write(ELCR1, 2, 0x0E20)
    assert bus.read(ELCR1, 2) == 0x0E20 & 0xDEF8
    pic.set_elcr(0xFFFF)
    assert pic.elcr == 0xDEF8


def test_elcr_switch_to_level_picks_up_a_high_input():
    pic, bus, _ = make()
    seabios_init(bus)
    unmask(bus, 5)
    pic.set_irq(5, True)
    pic.acknowledge()
    outb(bus, M_CMD, 0x20)
    assert not pic.has_interrupt()
    outb(bus, ELCR1, 1 << 5)
    assert pic.has_interrupt()


def test_poll_mode():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    outb(bus, M_CMD, 0x0C)  # OCW3 poll
    assert inb(bus, M_CMD) == 0  # nothing pending
    pic.irq_line(6).pulse()
    outb(bus, M_CMD, 0x0C)
    assert inb(bus, M_DATA) == 0x80 | 6  # either port answers a poll
    assert read_isr(bus) == 1 << 6
    assert inb(bus, M_DATA) == 0x00  # poll is one-shot: back to IMR
    outb(bus, M_CMD, 0x20)
    # Polling the cascade: the master reports 2, then the slave its level.
    outb(bus, S_DATA, 0x00)
    pic.irq_line(13).pulse()
    outb(bus, M_CMD, 0x0C)
    assert inb(bus, M_CMD) == 0x82
    outb(bus, S_CMD, 0x0C)
    assert inb(bus, S_CMD) == 0x85
    assert read_isr(bus) == (1 << 13) | (1 << 2)


def test_special_mask_mode_lets_lower_levels_in():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    pic.irq_line(3).pulse()
    assert pic.acknowledge() == 0x0B
    pic.irq_line(5).pulse()
    assert not pic.has_interrupt()
    outb(bus, M_DATA, 1 << 3)  # mask the level in service
    outb(bus, M_CMD, 0x68)  # OCW3: set special mask mode
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0x0D
    outb(bus, M_CMD, 0x65)  # specific EOI 5
    outb(bus, M_CMD, 0x48)  # clear special mask mode
    pic.irq_line(6).pulse()
    assert not pic.has_interrupt()  # 3 is still in service and blocks again


def test_special_fully_nested_mode_on_the_master():
    for sfnm, nested in ((False, False), (True, True)):
        pic, bus, _ = make()
        seabios_init(bus)
        outb(bus, M_CMD, 0x11)
        outb(bus, M_DATA, 0x08)
        outb(bus, M_DATA, 0x04)
        outb(bus, M_DATA, 0x11 if sfnm else 0x01)
        outb(bus, M_DATA, 0x00)
        outb(bus, S_DATA, 0x00)
        pic.irq_line(9).pulse()
        assert pic.acknowledge() == 0x71
        pic.irq_line(8).pulse()  # higher priority on the same slave
        assert pic.has_interrupt() is nested
        if nested:
            assert pic.acknowledge() == 0x70
        pic.irq_line(3).pulse()  # lower than IR2 on the master: blocked either way
        assert pic.pending_irq() is None


def test_icw1_resets_the_chip():
    pic, bus, _ = make()
    seabios_init(bus)
    outb(bus, M_DATA, 0x00)
    pic.set_irq(4, True)
    pic.irq_line(1).pulse()
    pic.acknowledge()
    outb(bus, M_CMD, 0x0B)  # select ISR, to see ICW1 put IRR back
    outb(bus, M_CMD, 0x11)
    assert inb(bus, M_DATA) == 0  # IMR cleared
    assert inb(bus, M_CMD) == 0  # IRR (selected again) without the edge latch for 4
    outb(bus, M_DATA, 0x08)
    outb(bus, M_DATA, 0x04)
    outb(bus, M_DATA, 0x01)
    assert read_isr(bus) == 0
    assert not pic.has_interrupt()  # 4 is still high but needs a new edge
    pic.set_irq(4, False)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x0C


def test_ltim_makes_every_input_level_triggered():
    pic, bus, _ = make()
    outb(bus, M_CMD, 0x19)  # ICW1 with LTIM
    outb(bus, M_DATA, 0x40)
    outb(bus, M_DATA, 0x04)
    outb(bus, M_DATA, 0x01)
    pic.set_irq(0, True)
    assert pic.acknowledge() == 0x40
    outb(bus, M_CMD, 0x20)
    assert pic.acknowledge() == 0x40
    pic.set_irq(0, False)
    outb(bus, M_CMD, 0x20)
    assert not pic.has_interrupt()


def test_single_mode_without_icw3_or_icw4():
    pic, bus, _ = make()
    outb(bus, M_CMD, 0x12)  # SNGL, no IC4: the next data byte is OCW1 already
    outb(bus, M_DATA, 0x50)
    outb(bus, M_DATA, 0xF0)
    assert inb(bus, M_DATA) == 0xF0
    pic.irq_line(2).pulse()  # in single mode IR2 is an ordinary input
    assert pic.acknowledge() == 0x52
    outb(bus, M_CMD, 0x20)
    pic.irq_line(9).pulse()  # the slave is not cascaded
    assert not pic.has_interrupt()


def test_isa_irq2_is_ignored_while_cascaded():
    pic, bus, _ = make()
    seabios_init(bus)
    pic.irq_line(2).pulse()
    pic.set_irq(2, True)
    assert not pic.has_interrupt()


def test_vector_base_low_bits_are_ignored():
    pic, bus, _ = make()
    outb(bus, M_CMD, 0x11)
    outb(bus, M_DATA, 0x0F)
    outb(bus, M_DATA, 0x04)
    outb(bus, M_DATA, 0x01)
    pic.irq_line(3).pulse()
    assert pic.acknowledge() == 0x0B


def test_output_reports_changes_only():
    pic, bus, cpu = make()
    seabios_init(bus)
    unmask(bus, 0)
    unmask(bus, 1)
    pic.irq_line(0).pulse()
    pic.irq_line(1).pulse()
    assert cpu.changes == [True]
    assert pic.acknowledge() == 0x08
    assert cpu.changes == [True, False]  # 1 waits below the in-service 0
    outb(bus, M_DATA, 0xF8)  # rewriting the same unmasked bits changes nothing
    assert cpu.changes == [True, False]
    outb(bus, M_CMD, 0x20)
    assert cpu.changes == [True, False, True]
    assert pic.acknowledge() == 0x09


def test_output_follows_masking():
    pic, bus, cpu = make()
    seabios_init(bus)
    pic.irq_line(8).pulse()
    unmask(bus, 8)
    assert cpu.level
    outb(bus, M_DATA, 0xFF)  # masking the cascade on the master drops INT
    assert not cpu.level
    outb(bus, M_DATA, 0xFB)
    assert cpu.level and pic.acknowledge() == 0x70


def test_irq_range_is_checked():
    pic, _, _ = make()
    with pytest.raises(ValueError):
        pic.set_irq(16, True)
    with pytest.raises(ValueError):
        pic.irq_line(-1)


def test_snapshot_restore_and_reset():
    pic, bus, cpu = make()
    linux_init(bus)
    outb(bus, ELCR2, 0x08)
    unmask(bus, 12)
    pic.set_irq(11, True)
    pic.irq_line(12).pulse()
    snap = pic.snapshot()
    assert isinstance(snap, PicPairState)
    vector = pic.acknowledge()
    other, _, cpu2 = make()
    other.restore(snap)
    assert other.snapshot() == snap
    assert cpu2.level and other.acknowledge() == vector
    pic.restore(snap)
    assert pic.snapshot() == snap
    pic.reset()
    assert pic.elcr == 0 and not cpu.level
    assert inb(bus, M_DATA) == 0 and read_irr(bus) == 0


def test_nothing_a_guest_writes_raises():
    pic, bus, _ = make()
    rng = random.Random(8259)
    ports = (M_CMD, M_DATA, S_CMD, S_DATA, ELCR1, ELCR2)
    for _ in range(20000):
        port = rng.choice(ports)
        if rng.random() < 0.6:
            outb(bus, port, rng.randrange(256))
        else:
            assert 0 <= inb(bus, port) <= 0xFF
        if rng.random() < 0.2:
            pic.set_irq(rng.randrange(16), rng.random() < 0.5)
        if rng.random() < 0.1:
            vector = pic.acknowledge()
            assert 0 <= vector <= 0xFF
    assert bus.unowned.reads == 0 and bus.unowned.writes == 0
