"""PIIX3 ISA bridge (PIRQ routing to ISA IrqLines), the ELCR, and the PIIX4 PM function moving
the ACPI PM block, driven through 0xCF8/0xCFC the way SeaBIOS's pciinit and an ACPI guest do."""

from __future__ import annotations

import pytest

from kvmpy import layout
from kvmpy.devices import acpi_pm
from kvmpy.devices.acpi_pm import AcpiPm, ResetControl
from kvmpy.devices.pci import (
    ELCR_PORT,
    PIIX3_ISA_DEVFN,
    PIIX4_PM_DEVFN,
    Elcr,
    PciBus,
    PciConfig,
    PciFunction,
    Piix3Isa,
    Piix4Pm,
    piix,
)
from kvmpy.devices.pci import config as c
from kvmpy.events import RecordingStop
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.hw.irq import RecordingIrqLine

ISA = PIIX3_ISA_DEVFN[0] << 3 | PIIX3_ISA_DEVFN[1]
PMF = PIIX4_PM_DEVFN[0] << 3 | PIIX4_PM_DEVFN[1]
SEC = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 5 * SEC

    def __call__(self) -> int:
        return self.ns


class Card(PciFunction):
    def __init__(self, name: str, pin: int = 1) -> None:
        super().__init__(PciConfig(0x10EC, 0x8139, 0x0200, interrupt_pin=pin), name)


class Board:
    def __init__(self, *, pm_reset_base: int | None = None) -> None:
        self.pio, self.mmio = PioBus(), MmioBus()
        self.stop = RecordingStop()
        self.bus = PciBus(self.pio, self.mmio, reset_control=ResetControl(self.stop))
        self.bus.register_ports()
        self.lines = {irq: RecordingIrqLine() for irq in range(16)}
        self.isa = Piix3Isa(self.lines)
        self.clock = Clock()
        self.acpi = AcpiPm(self.lines[9], self.stop, clock_ns=self.clock)
        self.pm = Piix4Pm(self.acpi, reset_base=pm_reset_base)
        self.bus.place(*PIIX3_ISA_DEVFN, self.isa)
        self.bus.place(*PIIX4_PM_DEVFN, self.pm)
        self.bus.set_intx_router(self.isa)
        self.elcr = Elcr()
        self.pio.register(ELCR_PORT, Elcr.LENGTH, self.elcr, "elcr", sizes=Elcr.SIZES)

    def cfg_read(self, bdf: int, reg: int, size: int) -> int:
        self.pio.write(0xCF8, 4, 0x8000_0000 | bdf << 8 | (reg & 0xFC))
        return self.pio.read(0xCFC + (reg & 3), size)

    def cfg_write(self, bdf: int, reg: int, size: int, value: int) -> None:
        self.pio.write(0xCF8, 4, 0x8000_0000 | bdf << 8 | (reg & 0xFC))
        self.pio.write(0xCFC + (reg & 3), size, value)

    def seabios_isa_bridge_setup(self) -> None:
        """SeaBIOS piix_isa_bridge_setup: PIRQA-D = 10, 10, 11, 11; ELCR level for 10 and 11."""
        elcr = [0, 0]
        for i, irq in enumerate((10, 10, 11, 11)):
            elcr[irq >> 3] |= 1 << (irq & 7)
            self.cfg_write(ISA, 0x60 + i, 1, irq)
        self.pio.write(0x4D0, 1, elcr[0])
        self.pio.write(0x4D1, 1, elcr[1])

    def seabios_pm_setup(self, base: int = 0x600) -> None:
        """SeaBIOS piix4_pm_config_setup."""
        self.cfg_write(PMF, c.INTERRUPT_LINE, 1, 9)
        self.cfg_write(PMF, 0x40, 4, base | 1)
        self.cfg_write(PMF, 0x80, 1, 0x01)
        self.cfg_write(PMF, 0x90, 4, (base + 0x100) | 1)
        self.cfg_write(PMF, 0xD2, 1, 0x09)


@pytest.fixture
def board() -> Board:
    return Board()


def high(lines: dict[int, RecordingIrqLine]) -> list[int]:
    return [irq for irq, line in lines.items() if line.level]


# --- PIIX3 ISA bridge ---------------------------------------------------------------------------------
def test_isa_bridge_identity(board: Board) -> None:
    assert board.cfg_read(ISA, 0x00, 4) == 0x7000_8086
    assert board.cfg_read(ISA, 0x0A, 2) == 0x0601
    assert board.cfg_read(ISA, c.HEADER_TYPE, 1) == 0x80  # multifunction: look at 01.1-01.7
    assert board.cfg_read(ISA, 0x04, 2) == 0x0007 and board.cfg_read(ISA, 0x06, 2) == 0x0200
    assert board.cfg_read(ISA, 0x60, 4) == 0x8080_8080  # no PIRQ routed at reset
    assert board.cfg_read(ISA, 0x4C, 1) == 0x4D and board.cfg_read(ISA, 0x69, 1) == 0x02
    assert board.cfg_read(ISA, 0x3D, 1) == 0  # the bridge itself has no INTx


def test_pirq_route_registers_hold_irq_and_disable_bit(board: Board) -> None:
    board.cfg_write(ISA, 0x60, 1, 0xFF)
    assert board.cfg_read(ISA, 0x60, 1) == 0x8F  # bits 6:4 reserved
    board.cfg_write(ISA, 0x60, 4, 0x0B0A_050B)
    assert [board.isa.route(p) for p in range(4)] == [11, 5, 10, 11]
    board.cfg_write(ISA, 0x61, 1, 0x85)
    assert board.isa.route(1) is None
    for reserved in (0, 1, 2, 8, 13):
        board.cfg_write(ISA, 0x62, 1, reserved)
        assert board.isa.route(2) is None


def test_pirq_routing_decides_which_line_a_function_drives(board: Board) -> None:
    card = Card("card")  # slot 3 INTA# -> PIRQC
    board.bus.place(3, 0, card)
    card.set_irq(True)
    assert high(board.lines) == []  # nothing routed yet: the interrupt goes nowhere
    board.seabios_isa_bridge_setup()
    assert high(board.lines) == [11]  # PIRQC -> 11
    # an ACPI guest moves LNKC to IRQ 5 (the DSDT writes PRQ2)
    board.cfg_write(ISA, 0x62, 1, 5)
    assert high(board.lines) == [5]
    assert board.lines[11].history == [True, False]
    card.set_irq(False)
    assert high(board.lines) == []
    card.set_irq(True)
    board.cfg_write(ISA, 0x62, 1, 0x80)  # disabled
    assert high(board.lines) == []


def test_shared_irq_is_the_or_of_its_pirqs(board: Board) -> None:
    board.seabios_isa_bridge_setup()
    a, b, c2 = Card("a"), Card("b"), Card("c2")
    board.bus.place(2, 0, a)  # slot 2 INTA# -> PIRQB -> 10
    board.bus.place(3, 0, b)  # slot 3 INTA# -> PIRQC -> 11
    board.bus.place(6, 0, c2)  # slot 6 INTA# -> PIRQB -> 10 as well
    a.set_irq(True)
    c2.set_irq(True)
    assert high(board.lines) == [10]
    a.set_irq(False)
    assert high(board.lines) == [10]
    c2.set_irq(False)
    assert high(board.lines) == []
    assert board.lines[10].history == [True, False]  # no glitches in between


def test_router_never_lowers_a_line_it_did_not_raise(board: Board) -> None:
    board.lines[9].set_level(True)  # the SCI holds IRQ 9 high
    board.cfg_write(ISA, 0x60, 1, 9)  # route PIRQA to 9 with nothing asserted
    board.cfg_write(ISA, 0x60, 1, 0x80)
    assert board.lines[9].level


def test_isa_bridge_snapshot_restore(board: Board) -> None:
    card = Card("card")
    board.bus.place(3, 0, card)
    board.seabios_isa_bridge_setup()
    card.set_irq(True)
    snap = board.isa.snapshot()
    assert snap.pirq_levels == (False, False, True, False)
    other = Board()
    twin = Card("card")
    other.bus.place(3, 0, twin)
    twin.restore(card.snapshot())
    other.isa.restore(snap)
    assert other.isa.snapshot() == snap
    assert high(other.lines) == [11]
    board.isa.reset()
    assert board.cfg_read(ISA, 0x60, 4) == 0x8080_8080 and high(board.lines) == []


# --- ELCR -------------------------------------------------------------------------------------------------
def test_elcr_as_seabios_programs_it(board: Board) -> None:
    seen: list[int] = []
    board.elcr.on_change = seen.append
    board.seabios_isa_bridge_setup()
    assert board.pio.read(0x4D0, 1) == 0x00 and board.pio.read(0x4D1, 1) == 0x0C
    assert board.elcr.level_triggered(10) and board.elcr.level_triggered(11)
    assert not board.elcr.level_triggered(9)
    assert seen == [0x0C00]
    board.pio.write(0x4D0, 2, 0xFFFF)  # IRQ 0-2, 8 and 13 are always edge
    assert board.pio.read(0x4D0, 2) == 0xDEF8
    assert board.elcr.snapshot().elcr == 0xDEF8
    board.elcr.reset()
    assert board.pio.read(0x4D0, 2) == 0


# --- PIIX4 PM -----------------------------------------------------------------------------------------------
def test_pm_function_identity_and_reset_state(board: Board) -> None:
    assert board.cfg_read(PMF, 0x00, 4) == 0x7113_8086
    assert board.cfg_read(PMF, 0x08, 4) == 0x0680_0003
    assert board.cfg_read(PMF, 0x06, 2) == 0x0280 and board.cfg_read(PMF, 0x3D, 1) == 1
    assert board.cfg_read(PMF, 0x40, 4) == 0x0000_0001  # I/O space indicator only
    assert board.cfg_read(PMF, 0x80, 1) == 0
    assert board.cfg_read(PMF, 0x58, 4) & piix.DEVACTB_APMC_EN  # SeaBIOS skips SMM set-up
    assert board.cfg_read(PMF, 0x67, 1) == 0x08  # COM1 present
    assert board.pm.pm_base is None
    assert board.pio.read(0x608, 4) == 0xFFFF_FFFF


def test_seabios_pm_setup_places_the_pm_block(board: Board) -> None:
    board.seabios_pm_setup(0x600)
    assert board.pm.pm_base == 0x600
    assert board.cfg_read(PMF, 0x40, 4) == 0x601
    assert board.cfg_read(PMF, 0x90, 4) == 0  # no SMBus controller
    assert board.cfg_read(PMF, 0xD2, 1) == 0
    assert board.cfg_read(PMF, c.INTERRUPT_LINE, 1) == 9
    t0 = board.pio.read(0x608, 4)
    board.clock.ns += SEC // 1000
    assert (board.pio.read(0x608, 4) - t0) & 0xFFFFFF == acpi_pm.PM_TIMER_HZ // 1000
    assert board.pio.read(0x604, 2) & acpi_pm.CNT_SCI_EN
    # power off through the moved block
    board.pio.write(0x604, 2, acpi_pm.CNT_SLP_EN | acpi_pm.S5_SLP_TYP << acpi_pm.CNT_SLP_TYP_SHIFT)
    assert board.stop.stops


def test_pmba_moves_and_pmiose_switches_the_block(board: Board) -> None:
    board.seabios_pm_setup(0xB000)
    assert board.pio.find(0xB008).device is board.acpi  # type: ignore[union-attr]
    board.cfg_write(PMF, 0x40, 4, 0x643)  # low bits: bit 0 reads 1, 5:1 reserved
    assert board.cfg_read(PMF, 0x40, 4) == 0x641
    assert board.pm.pm_base == 0x640
    assert board.pio.find(0xB008) is None and board.pio.find(0x648).device is board.acpi  # type: ignore[union-attr]
    board.cfg_write(PMF, 0x41, 1, 0x07)  # a byte write into PMBA
    assert board.pm.pm_base == 0x740
    board.cfg_write(PMF, 0x42, 2, 0xFFFF)  # only a 16-bit I/O base exists
    assert board.cfg_read(PMF, 0x40, 4) == 0x741
    board.cfg_write(PMF, 0x80, 1, 0)
    assert board.pm.pm_base is None and board.pio.find(0x748) is None
    board.cfg_write(PMF, 0x80, 1, 0xFF)
    assert board.cfg_read(PMF, 0x80, 1) == 1 and board.pm.pm_base == 0x740
    board.cfg_write(PMF, 0x40, 4, 0)  # base 0: not mapped over the DMA controller
    assert board.pm.pm_base is None


class Uart:
    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        pass


def test_pm_block_over_another_device_waits(board: Board) -> None:
    board.pio.register(layout.COM1_PORT, 8, Uart(), "com1", sizes=(1,))
    board.seabios_pm_setup(0x3C0)  # 0x3C0-0x3FF covers COM1: refused, no crash
    assert board.pm.pm_base is None
    assert board.pio.find(layout.COM1_PORT).name == "com1"  # type: ignore[union-attr]
    board.cfg_write(PMF, 0x40, 4, 0x601)
    assert board.pm.pm_base == 0x600


def test_pm_reset_base_for_firmware_less_boots() -> None:
    b = Board(pm_reset_base=layout.ACPI_PM_BASE)
    assert b.pm.pm_base == layout.ACPI_PM_BASE
    assert b.cfg_read(PMF, 0x40, 4) == layout.ACPI_PM_BASE | 1 and b.cfg_read(PMF, 0x80, 1) == 1
    b.cfg_write(PMF, 0x80, 1, 0)
    b.pm.reset()
    assert b.pm.pm_base == layout.ACPI_PM_BASE
    with pytest.raises(ValueError):
        Piix4Pm(b.acpi, reset_base=0x610)


def test_pm_function_snapshot_restore_and_reset(board: Board) -> None:
    board.seabios_pm_setup(0xB000)
    snap = board.pm.snapshot()
    other = Board()
    other.pm.restore(snap)
    assert other.pm.snapshot() == snap and other.pm.pm_base == 0xB000
    board.pm.reset()
    assert board.pm.pm_base is None and board.pio.find(0xB000) is None
    board.pm.restore(snap)
    assert board.pio.find(0xB004).device is board.acpi  # type: ignore[union-attr]


def test_pm_function_has_no_bars(board: Board) -> None:
    """The PM block is a fixed-function window the PMBA register places, not a BAR: BIOS
    and OS BAR allocators must not see it."""
    assert board.pm.config.bars == {} and board.isa.config.bars == {}
    for reg in range(0x10, 0x28, 4):
        board.cfg_write(PMF, reg, 4, 0xFFFF_FFFF)
        assert board.cfg_read(PMF, reg, 4) == 0
