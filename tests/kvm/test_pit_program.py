"""The 8254 PIT and port 0x61 driven by a guest program (firmware/tests/pit.c) the way Linux and
SeaBIOS drive them: periodic IRQ0 through the IOAPIC (pin 2, the MADT's override) and through
the 8259, latch and read-back commands, channel 2 gated by port 0x61 as Linux's PIT calibration
uses it, the refresh toggle — on KVM's in-kernel PIT and on kvmpy's own (the split irqchip)."""

import pytest

MARKERS = ("IOAPIC TICKS OK", "LATCH OK", "CHANNEL2 OK", "REFRESH OK", "PIC TICKS OK", "PIT OK")


@pytest.mark.parametrize("irqchip", ["kernel", "split"])
def test_pit_as_drivers_use_it(kvmpy_boot, irqchip):
    r = kvmpy_boot("pit", "--irqchip", irqchip, "--memory", "64M")
    assert r.status == 1, r.out + r.err
    for marker in MARKERS:
        assert marker in r.out, marker
    assert "IRQ0 via IOAPIC pin 2" in r.out
