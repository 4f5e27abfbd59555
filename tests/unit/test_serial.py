"""The 16550A driven through the PIO bus the way Linux's 8250 driver and polling firmware do."""

from __future__ import annotations

import pytest

from kvmpy import layout
from kvmpy.devices import serial as s
from kvmpy.devices.serial import Serial16550, SerialState
from kvmpy.hw.bus import PioBus
from kvmpy.hw.irq import RecordingIrqLine

BASE = layout.COM1_PORT
RBR = THR = DLL = BASE + 0
IER = DLM = BASE + 1
IIR = FCR = BASE + 2
LCR = BASE + 3
MCR = BASE + 4
LSR = BASE + 5
MSR = BASE + 6
SCR = BASE + 7


class Uart:
    """A UART on a PIO bus, with its interrupt line and what it transmitted."""

    def __init__(self) -> None:
        self.irq = RecordingIrqLine()
        self.out = bytearray()
        self.space_calls = 0
        self.dev = Serial16550(self.irq, self.out.extend, on_rx_space=self._space)
        self.bus = PioBus()
        self.bus.register(BASE, Serial16550.LENGTH, self.dev, "com1", sizes=Serial16550.SIZES)

    def _space(self) -> None:
        self.space_calls += 1

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)


@pytest.fixture
def u() -> Uart:
    return Uart()


def test_registration_constants_match_the_module() -> None:
    assert Serial16550.LENGTH == s.SERIAL_LEN == 8
    assert Serial16550.SIZES == (1,)


def test_power_on_state(u: Uart) -> None:
    assert u.inb(LSR) == s.LSR_THRE | s.LSR_TEMT
    assert u.inb(IIR) == s.IIR_NO_INT
    assert u.inb(MSR) == s.MSR_CTS | s.MSR_DSR | s.MSR_DCD
    assert u.inb(IER) == 0
    assert u.irq.level is False


# --- Linux's autoconfig (drivers/tty/serial/8250/8250_port.c) ------------------------------
def test_linux_autoconfig_identifies_a_16550a(u: Uart) -> None:
    # IER probe: low nibble is read/write, nothing else sticks.
    u.outb(IER, 0)
    assert u.inb(IER) & 0x0F == 0
    u.outb(IER, 0x0F)
    assert u.inb(IER) & 0x0F == 0x0F
    u.outb(IER, 0)
    # Loopback test: MCR = LOOP | RTS | OUT2 must read CTS | DCD in MSR.
    save_mcr = u.inb(MCR)
    u.outb(MCR, s.MCR_LOOP | 0x0A)
    assert u.inb(MSR) & 0xF0 == 0x90
    u.outb(MCR, save_mcr)
    # EFR probing with LCR = 0xBF, then the FIFO test.
    u.outb(LCR, 0xBF)
    u.outb(FCR, 0)  # "EFR" write on a 16650; a plain FCR write here
    u.outb(LCR, 0)
    u.outb(FCR, s.FCR_ENABLE)
    assert u.inb(IIR) >> 6 == 3  # 16550A with working FIFOs
    # autoconfig_16550a: with DLAB set, offset 2 must not read 0 (that would be an EFR).
    u.outb(LCR, 0x80)
    assert u.inb(IIR) != 0
    u.outb(LCR, 0xBF)
    assert u.inb(IIR) != 0
    u.outb(LCR, 0)
    # XScale probe: IER bit 6 (UUE) must not stick.
    u.outb(IER, 0x40)
    assert u.inb(IER) & 0x40 == 0


def test_scratch_register(u: Uart) -> None:
    for v in (0xA5, 0x5A, 0x00, 0xFF):
        u.outb(SCR, v)
        assert u.inb(SCR) == v


def test_dlab_latches_divisor_and_hides_rbr_ier(u: Uart) -> None:
    u.outb(LCR, 0x83)  # DLAB, 8N1
    u.outb(DLL, 0x01)
    u.outb(DLM, 0x00)
    assert u.inb(LCR) == 0x83
    assert (u.inb(DLL), u.inb(DLM)) == (0x01, 0x00)
    assert u.out == b""  # a DLL write is not a transmission
    u.outb(LCR, 0x03)
    assert u.inb(IER) == 0  # IER untouched by the DLM write
    u.outb(IER, 0x05)
    u.outb(LCR, 0x83)
    assert (u.inb(DLL), u.inb(DLM)) == (0x01, 0x00)
    u.outb(LCR, 0x03)
    assert u.inb(IER) == 0x05


def test_polled_transmit_like_firmware(u: Uart) -> None:
    for ch in b"Hi!\n":
        while not u.inb(LSR) & s.LSR_THRE:
            pass
        u.outb(THR, ch)
    assert bytes(u.out) == b"Hi!\n"
    assert u.inb(LSR) & (s.LSR_THRE | s.LSR_TEMT) == s.LSR_THRE | s.LSR_TEMT


# --- THRE interrupts ---------------------------------------------------------------------------
def test_enabling_etbei_with_empty_thr_raises_thre(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(IER, s.IER_ETBEI)
    assert u.irq.level is True
    assert u.inb(IIR) == s.IIR_THRI
    # Reading IIR with THRE as the source acknowledges it.
    assert u.inb(IIR) == s.IIR_NO_INT
    assert u.irq.level is False


def test_linux_thre_retest_sees_the_interrupt_again(u: Uart) -> None:
    """serial8250_do_startup: IER=THRI, read IIR, IER=0, IER=THRI, read IIR again."""
    u.outb(IER, s.IER_ETBEI)
    iir1 = u.inb(IIR)
    u.outb(IER, 0)
    u.outb(IER, s.IER_ETBEI)
    iir2 = u.inb(IIR)
    u.outb(IER, 0)
    assert not iir1 & s.IIR_NO_INT
    assert not iir2 & s.IIR_NO_INT  # otherwise Linux sets UART_BUG_THRE and polls by timer


def test_linux_txen_test_sees_thre(u: Uart) -> None:
    """serial8250_do_startup's UART_BUG_TXEN check: IER=THRI, LSR, IIR must not be NO_INT."""
    u.outb(IER, s.IER_ETBEI)
    lsr = u.inb(LSR)
    iir = u.inb(IIR)
    u.outb(IER, 0)
    assert lsr & s.LSR_TEMT
    assert not iir & s.IIR_NO_INT


def test_thr_write_rearms_thre_and_gives_a_new_edge(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(FCR, s.FCR_ENABLE)
    u.outb(IER, s.IER_ETBEI)
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_THRI
    assert u.irq.level is False
    rises = u.irq.history.count(True)
    for ch in b"0123456789abcdef":  # one FIFO load, as tx_chars writes it
        u.outb(THR, ch)
    assert bytes(u.out) == b"0123456789abcdef"
    assert u.irq.level is True
    assert u.irq.history.count(True) == rises + 1
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_THRI
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_NO_INT


def test_disabling_etbei_drops_thre(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(IER, s.IER_ETBEI)
    u.outb(IER, 0)
    assert u.inb(IIR) == s.IIR_NO_INT
    assert u.irq.level is False


def test_out2_gates_the_irq_line_but_not_iir(u: Uart) -> None:
    u.outb(IER, s.IER_ETBEI)
    assert u.irq.level is False  # OUT2 clear: the PC's IRQ driver is off
    u.outb(MCR, s.MCR_OUT2)
    assert u.irq.level is True
    u.outb(MCR, 0)
    assert u.irq.level is False
    assert u.inb(IIR) == s.IIR_THRI


# --- Receive ---------------------------------------------------------------------------------
def test_rx_interrupt_and_clearing_without_fifo(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2 | s.MCR_DTR | s.MCR_RTS)
    u.outb(IER, s.IER_ERBFI)
    assert u.dev.rx_space() == 1
    u.dev.receive(b"a")
    assert u.irq.level is True
    assert u.inb(IIR) == s.IIR_RDI
    assert u.inb(LSR) & s.LSR_DR
    assert u.inb(RBR) == ord("a")
    assert u.irq.level is False
    assert u.inb(IIR) == s.IIR_NO_INT
    assert not u.inb(LSR) & s.LSR_DR
    assert u.space_calls == 1


def test_rx_disabled_interrupt_still_shows_data(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.dev.receive(b"x")
    assert u.irq.level is False
    assert u.inb(LSR) & s.LSR_DR
    assert u.inb(RBR) == ord("x")
    u.outb(IER, s.IER_ERBFI)  # enabling with nothing pending does nothing
    assert u.irq.level is False


def test_fifo_trigger_level_and_character_timeout(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(FCR, s.FCR_ENABLE | s.FCR_CLEAR_RX | s.FCR_CLEAR_TX | (2 << 6))  # trigger 8
    u.outb(IER, s.IER_ERBFI)
    u.dev.receive(b"abc")
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_CTI  # below trigger: timeout at once
    assert u.irq.level is True
    u.dev.receive(b"defgh")
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_RDI  # 8 bytes: trigger reached
    got = bytearray()
    while u.inb(LSR) & s.LSR_DR:  # serial8250_rx_chars reads until DR clears
        got.append(u.inb(RBR))
    assert bytes(got) == b"abcdefgh"
    assert u.irq.level is False
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_NO_INT


@pytest.mark.parametrize("bits,level", [(0, 1), (1, 4), (2, 8), (3, 14)])
def test_each_trigger_level(u: Uart, bits: int, level: int) -> None:
    u.outb(FCR, s.FCR_ENABLE | (bits << 6))
    u.outb(IER, s.IER_ERBFI)
    u.dev.receive(bytes(level - 1))
    if level > 1:
        assert u.inb(IIR) & 0x0F == s.IIR_CTI
    u.dev.receive(b"\x00")
    assert u.inb(IIR) & 0x0F == s.IIR_RDI


def test_fifo_overrun_drops_and_flags(u: Uart) -> None:
    u.outb(FCR, s.FCR_ENABLE)
    assert u.dev.rx_space() == s.FIFO_SIZE
    u.dev.receive(bytes(range(17)))
    assert u.dev.rx_space() == 0
    lsr = u.inb(LSR)
    assert lsr & s.LSR_OE and lsr & s.LSR_DR
    assert not u.inb(LSR) & s.LSR_OE  # reading LSR clears OE
    assert [u.inb(RBR) for _ in range(16)] == list(range(16))  # the 17th byte was lost
    assert not u.inb(LSR) & s.LSR_DR


def test_overrun_without_fifo_keeps_the_first_byte(u: Uart) -> None:
    u.dev.receive(b"ab")
    assert u.inb(LSR) & s.LSR_OE
    assert u.inb(RBR) == ord("a")


def test_rbr_rereads_last_byte_when_empty(u: Uart) -> None:
    u.dev.receive(b"z")
    assert u.inb(RBR) == ord("z")
    assert u.inb(RBR) == ord("z")


def test_fifo_reset_bits(u: Uart) -> None:
    u.outb(FCR, s.FCR_ENABLE)
    u.dev.receive(b"hello")
    u.outb(FCR, s.FCR_ENABLE | s.FCR_CLEAR_RX)
    assert not u.inb(LSR) & s.LSR_DR
    assert u.dev.rx_space() == s.FIFO_SIZE
    assert u.space_calls == 1
    u.dev.receive(b"x")
    u.outb(FCR, 0)  # turning FIFOs off flushes them as well
    assert not u.inb(LSR) & s.LSR_DR
    assert u.inb(IIR) & s.IIR_FIFOS_ENABLED == 0
    assert u.dev.rx_space() == 1


def test_tx_fifo_reset_is_a_thre_event(u: Uart) -> None:
    u.outb(IER, s.IER_ETBEI)
    assert u.inb(IIR) == s.IIR_THRI
    u.outb(FCR, s.FCR_ENABLE | s.FCR_CLEAR_TX)
    assert u.inb(IIR) == s.IIR_FIFOS_ENABLED | s.IIR_THRI


def test_receive_empty_is_a_no_op(u: Uart) -> None:
    u.dev.receive(b"")
    assert not u.inb(LSR) & s.LSR_DR


# --- Priorities ------------------------------------------------------------------------------
def test_interrupt_priorities(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(IER, s.IER_MASK)  # everything enabled; THRE pending from the ETBEI edge
    u.outb(MCR, s.MCR_OUT2 | s.MCR_LOOP)  # modem lines change: MSR deltas pending
    u.outb(MCR, s.MCR_OUT2)
    u.dev.receive(b"ab")  # capacity 1 without FIFO: data + overrun
    assert u.inb(IIR) == s.IIR_RLSI
    u.inb(LSR)  # clears OE
    assert u.inb(IIR) == s.IIR_RDI
    u.inb(RBR)
    assert u.inb(IIR) == s.IIR_THRI  # reading it acknowledges THRE
    assert u.inb(IIR) == s.IIR_MSI
    assert u.inb(MSR) & 0x0F  # deltas were there; reading MSR clears them
    assert u.inb(IIR) == s.IIR_NO_INT
    assert u.irq.level is False


# --- Loopback and modem status ---------------------------------------------------------------
@pytest.mark.parametrize(
    "mcr,msr",
    [
        (s.MCR_DTR, s.MSR_DSR),
        (s.MCR_RTS, s.MSR_CTS),
        (s.MCR_OUT1, s.MSR_RI),
        (s.MCR_OUT2, s.MSR_DCD),
        (0x0F, 0xF0),
        (0, 0),
    ],
)
def test_loopback_msr_reflects_mcr(u: Uart, mcr: int, msr: int) -> None:
    u.outb(MCR, s.MCR_LOOP | mcr)
    assert u.inb(MSR) & 0xF0 == msr


def test_loopback_sends_tx_to_rx_not_output(u: Uart) -> None:
    u.outb(MCR, s.MCR_LOOP | s.MCR_OUT2)
    u.outb(IER, s.IER_ERBFI)
    u.outb(THR, 0x55)
    assert u.out == b""
    assert u.inb(LSR) & s.LSR_DR
    assert u.inb(IIR) == s.IIR_RDI
    assert u.irq.level is False  # OUT2 is looped to DCD: the IRQ pin is inactive
    assert u.inb(RBR) == 0x55


def test_loopback_disconnects_input(u: Uart) -> None:
    u.outb(MCR, s.MCR_LOOP)
    assert u.dev.rx_space() == 0
    u.dev.receive(b"lost")
    assert not u.inb(LSR) & s.LSR_DR
    calls = u.space_calls
    u.outb(MCR, 0)
    assert u.space_calls == calls + 1  # the backend hears it may send again
    assert u.dev.rx_space() == 1


def test_msr_deltas_and_interrupt(u: Uart) -> None:
    u.outb(MCR, s.MCR_OUT2)
    u.outb(IER, s.IER_EDSSI)
    assert u.irq.level is False
    u.outb(MCR, s.MCR_LOOP | s.MCR_RTS | s.MCR_OUT1)  # CTS stays, DSR and DCD drop, RI rises
    msr = u.inb(MSR)
    assert msr & 0xF0 == s.MSR_CTS | s.MSR_RI
    assert msr & 0x0F == s.MSR_DDSR | s.MSR_DDCD
    assert u.inb(MSR) & 0x0F == 0
    u.outb(MCR, s.MCR_LOOP | s.MCR_RTS)  # RI falls: trailing edge
    assert u.inb(MSR) & 0x0F == s.MSR_TERI
    u.outb(MCR, s.MCR_OUT2)  # back to the connected lines
    assert u.inb(IIR) == s.IIR_MSI
    assert u.irq.level is True
    u.inb(MSR)
    assert u.irq.level is False


# --- Robustness ---------------------------------------------------------------------------------
def test_nonsense_never_raises(u: Uart) -> None:
    u.outb(LSR, 0xFF)
    u.outb(MSR, 0xFF)
    assert u.inb(LSR) == s.LSR_THRE | s.LSR_TEMT
    assert u.bus.read(BASE, 2) == 0xFFFF  # wrong size: answered by the bus, not the UART
    u.bus.write(BASE, 4, 0x41424344)
    assert u.out == b""
    assert u.dev.read(9, 1) == 0xFF  # direct out-of-range access
    u.dev.write(9, 1, 1)
    for port in range(BASE, BASE + 8):
        for v in (0x00, 0xFF, 0x80, 0x7F):
            u.outb(port, v)
            u.inb(port)


# --- State ---------------------------------------------------------------------------------------
def _busy(u: Uart) -> None:
    u.outb(LCR, 0x83)
    u.outb(DLL, 3)
    u.outb(LCR, 0x1B)
    u.outb(FCR, s.FCR_ENABLE | (1 << 6))
    u.outb(MCR, s.MCR_OUT2 | s.MCR_DTR)
    u.outb(IER, s.IER_ERBFI | s.IER_ETBEI)
    u.outb(SCR, 0x99)
    u.dev.receive(b"pending")


def test_snapshot_restore_equality(u: Uart) -> None:
    _busy(u)
    snap = u.dev.snapshot()
    assert isinstance(snap, SerialState)
    other = Uart()
    other.dev.restore(snap)
    assert other.dev.state == u.dev.state
    assert other.irq.level == u.irq.level is True
    for port in (IER, LCR, MCR, LSR, SCR):
        assert other.inb(port) == u.inb(port)
    assert bytes(other.inb(RBR) for _ in range(7)) == b"pending"
    # The snapshot is a copy: later guest activity does not change it.
    assert snap.rx_fifo == list(b"pending")
    assert snap == u.dev.snapshot()


def test_reset(u: Uart) -> None:
    _busy(u)
    u.dev.reset()
    assert u.dev.state == SerialState()
    assert u.irq.level is False
    assert u.inb(LSR) == s.LSR_THRE | s.LSR_TEMT
