"""A 16550A UART, as Linux's 8250 driver and polling firmware (SeaBIOS, our guest runtime) drive it.

What matters to guests, and therefore what this model is careful about:

* **Autoconfiguration.** Linux identifies the chip by probing: IER keeps only its low four bits,
  the scratch register holds a value, the loopback test (MCR bit 4 with RTS|OUT2) must make MSR
  read ``0x90``, and after ``FCR = 0x01`` the two top bits of IIR must read ``11`` (a 16550A with
  working FIFOs). Reading offset 2 with DLAB set returns IIR (not an EFR), so the driver does not
  mistake us for a 16650/16750.
* **THRE interrupts.** Transmission is instantaneous: every byte written to THR is handed to
  ``output`` at once, so LSR always shows THRE|TEMT. The THRE interrupt is *pending* when THR
  became empty (after every THR write, after a transmit-FIFO reset) and when IER.ETBEI goes from
  0 to 1 while THR is empty; it is cleared by reading IIR while THRE is the reported source, or
  by writing THR. Linux's start-up test enables ETBEI twice around an IIR read and needs the
  interrupt to come back the second time, otherwise it falls back to a slow timer-driven mode.
* **Receive interrupts.** There is no timer in a plain device model, so the 16550's character
  timeout is taken to have elapsed at once: data below the FIFO trigger level is reported as a
  character-timeout interrupt (IIR ``0xC``), data at or above it as "received data available"
  (IIR ``0x4``). Either way the guest reads until LSR.DR clears, which is what every driver does.
* **The interrupt line.** The output is a level: it is high while IIR has something to report
  and MCR.OUT2 is set, exactly like the ISA serial port of a PC, where OUT2 enables the IRQ
  driver. In loopback mode the OUT2 pin is forced inactive (it is looped to DCD instead), so the
  line is low. ``irq.set_level`` is called after every access; a ``CallbackIrqLine`` filters
  repeats. The line falls whenever the guest reads IIR (THRE source) or drains RBR and rises
  again with new work, which is the edge an ISA (edge-triggered) PIC/IOAPIC input needs.

The host side: ``output`` receives each transmitted byte (the console backend buffers and writes
in batches); ``receive(data)`` is called by the I/O thread under the machine lock; ``rx_space()``
lets that backend hold input back instead of losing it. Bytes that arrive when the RX FIFO is
full are dropped and flagged as an overrun (LSR.OE), as on hardware.

Register it on 8 ports with 1-byte accesses: ``bus.register(layout.COM1_PORT, SERIAL_LEN, uart,
"com1", sizes=SERIAL_ACCESS_SIZES)``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from kvmpy.hw.irq import IrqLine

log = logging.getLogger("kvmpy.devices.serial")

#: Eight consecutive ports, byte accesses only (the 8250 family has 8-bit registers).
SERIAL_LEN = 8
SERIAL_ACCESS_SIZES = (1,)

#: 16550A FIFO depth (receive and transmit).
FIFO_SIZE = 16

# --- Register offsets (National PC16550D datasheet, table II) ------------------------------
REG_RBR_THR = 0  # DLAB=0: receive buffer (read) / transmit holding (write); DLAB=1: DLL
REG_IER = 1  # DLAB=0: interrupt enable; DLAB=1: DLM
REG_IIR_FCR = 2  # interrupt identification (read) / FIFO control (write)
REG_LCR = 3
REG_MCR = 4
REG_LSR = 5
REG_MSR = 6
REG_SCR = 7

# IER bits
IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04  # receiver line status
IER_EDSSI = 0x08  # modem status
IER_MASK = 0x0F  # a 16550A has nothing above bit 3 (Linux probes bit 6 to spot XScale UARTs)

# IIR values (bits 0-3) and the FIFO-enabled flag (bits 6-7)
IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_CTI = 0x0C
IIR_FIFOS_ENABLED = 0xC0

# FCR bits
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_CLEAR_TX = 0x04
FCR_DMA_MODE = 0x08
FCR_TRIGGER_SHIFT = 6
FCR_STORED = FCR_ENABLE | FCR_DMA_MODE | 0xC0
#: Receive trigger levels selected by FCR bits 6-7.
RX_TRIGGER_LEVELS = (1, 4, 8, 14)

# LCR bits
LCR_DLAB = 0x80

# MCR bits
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

# LSR bits
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_RXFIFO_ERR = 0x80

# MSR bits: deltas in the low nibble, line states in the high nibble
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
#: Modem inputs when not in loopback: a null-modem console is always "connected and ready".
MSR_LINES_CONNECTED = MSR_CTS | MSR_DSR | MSR_DCD


@dataclass
class SerialState:
    """Everything the guest can observe. Transmission is instant, so there is no TX FIFO."""

    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    fcr: int = 0  # the stored part of the last FCR write: enable, DMA mode, trigger level
    scr: int = 0
    dll: int = 0x0C  # 9600 baud from the 1.8432 MHz clock, what a BIOS leaves behind
    dlm: int = 0
    rbr: int = 0  # last byte read from the receive buffer (RBR re-reads it when empty)
    overrun: bool = False  # LSR.OE, cleared by reading LSR
    thr_ipending: bool = False  # THRE interrupt pending (see module docstring)
    msr_delta: int = 0  # DCTS/DDSR/TERI/DDCD, cleared by reading MSR
    rx_fifo: list[int] = field(default_factory=list)

    def reset(self) -> None:
        """Back to the power-on/master-reset values."""
        self.restore(SerialState())

    def snapshot(self) -> SerialState:
        return copy.deepcopy(self)

    def restore(self, snap: SerialState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


class Serial16550:
    """A 16550A UART at 8 consecutive ports; see the module docstring for what it promises."""

    LENGTH = SERIAL_LEN
    SIZES = SERIAL_ACCESS_SIZES

    def __init__(
        self,
        irq: IrqLine,
        output: Callable[[bytes], None],
        *,
        on_rx_space: Callable[[], None] | None = None,
    ) -> None:
        """``output`` gets every transmitted byte. ``on_rx_space``, if given, is called (under
        the machine lock, from the vCPU thread) when the guest empties the RX FIFO or leaves
        loopback, so a backend that held input back can push more; it may call ``receive``."""
        self.irq = irq
        self.output = output
        self.on_rx_space = on_rx_space
        self.state = SerialState()
        self._warned: set[str] = set()
        self._update_irq()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.state.reset()
        self._update_irq()

    def snapshot(self) -> SerialState:
        return self.state.snapshot()

    def restore(self, snap: SerialState) -> None:
        self.state.restore(snap)
        self._update_irq()

    # -- host side --------------------------------------------------------------------------
    def _rx_capacity(self) -> int:
        return FIFO_SIZE if self.state.fcr & FCR_ENABLE else 1

    def rx_space(self) -> int:
        """How many bytes ``receive`` can take now without an overrun (0 in loopback mode,
        where the serial input pin is disconnected)."""
        if self.state.mcr & MCR_LOOP:
            return 0
        return max(0, self._rx_capacity() - len(self.state.rx_fifo))

    def receive(self, data: bytes) -> None:
        """Bytes arriving on the serial input. In loopback mode the input pin is disconnected
        and they are discarded; when the FIFO is full the excess is dropped and LSR.OE set."""
        if not data:
            return
        if self.state.mcr & MCR_LOOP:
            self._log_once("rx-loop", "input while in loopback mode discarded")
            return
        for b in data:
            self._rx_push(b)
        self._update_irq()

    def _rx_push(self, byte: int) -> None:
        st = self.state
        if len(st.rx_fifo) >= self._rx_capacity():
            st.overrun = True
        else:
            st.rx_fifo.append(byte & 0xFF)

    # -- guest side -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        st = self.state
        notify = False
        if offset == REG_RBR_THR:
            if st.lcr & LCR_DLAB:
                value = st.dll
            else:
                if st.rx_fifo:
                    st.rbr = st.rx_fifo.pop(0)
                    notify = not st.rx_fifo
                value = st.rbr
        elif offset == REG_IER:
            value = st.dlm if st.lcr & LCR_DLAB else st.ier
        elif offset == REG_IIR_FCR:
            ident = self._pending_iir()
            if ident == IIR_THRI:
                st.thr_ipending = False  # reading IIR acknowledges a THRE interrupt
            value = ident | (IIR_FIFOS_ENABLED if st.fcr & FCR_ENABLE else 0)
        elif offset == REG_LCR:
            value = st.lcr
        elif offset == REG_MCR:
            value = st.mcr
        elif offset == REG_LSR:
            value = self._lsr()
            st.overrun = False
        elif offset == REG_MSR:
            value = self._msr_lines() | st.msr_delta
            st.msr_delta = 0
        elif offset == REG_SCR:
            value = st.scr
        else:
            self._log_once(f"r{offset}", "read of offset %d outside the UART", offset)
            return 0xFF
        self._update_irq()
        if notify and self.on_rx_space is not None:
            self.on_rx_space()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        st = self.state
        value &= 0xFF
        notify = False
        if offset == REG_RBR_THR:
            if st.lcr & LCR_DLAB:
                st.dll = value
            else:
                self._transmit(value)
        elif offset == REG_IER:
            if st.lcr & LCR_DLAB:
                st.dlm = value
            else:
                self._write_ier(value)
        elif offset == REG_IIR_FCR:
            notify = self._write_fcr(value)
        elif offset == REG_LCR:
            st.lcr = value
        elif offset == REG_MCR:
            notify = self._write_mcr(value)
        elif offset == REG_SCR:
            st.scr = value
        elif offset in (REG_LSR, REG_MSR):
            # Writable only in factory test modes; Linux never does it, a confused guest might.
            self._log_once(f"w{offset}", "write %#x to read-only register %d ignored", value, offset)
        else:
            self._log_once(f"w{offset}", "write %#x to offset %d outside the UART ignored", value, offset)
        self._update_irq()
        if notify and self.on_rx_space is not None:
            self.on_rx_space()

    # -- register behaviour -----------------------------------------------------------------
    def _transmit(self, byte: int) -> None:
        st = self.state
        if st.mcr & MCR_LOOP:
            self._rx_push(byte)  # loopback: the transmitter feeds the receiver
        else:
            self.output(bytes((byte,)))
        # The byte left THR at once: THR is empty again, which is a (new) THRE event.
        st.thr_ipending = True

    def _write_ier(self, value: int) -> None:
        st = self.state
        new = value & IER_MASK
        changed = st.ier ^ new
        st.ier = new
        if changed & IER_ETBEI:
            # Enabling ETBEI while THR is empty raises THRE at once; disabling drops it.
            st.thr_ipending = bool(new & IER_ETBEI)

    def _write_fcr(self, value: int) -> bool:
        st = self.state
        if (value ^ st.fcr) & FCR_ENABLE:
            value |= FCR_CLEAR_RX | FCR_CLEAR_TX  # toggling FIFO mode flushes both FIFOs
        had_data = bool(st.rx_fifo)
        if value & FCR_CLEAR_RX:
            st.rx_fifo.clear()
        if value & FCR_CLEAR_TX:
            st.thr_ipending = True  # an emptied transmit FIFO is a THRE event
        st.fcr = value & FCR_STORED if value & FCR_ENABLE else 0
        return had_data and not st.rx_fifo

    def _write_mcr(self, value: int) -> bool:
        st = self.state
        before = self._msr_lines()
        was_loop = bool(st.mcr & MCR_LOOP)
        st.mcr = value & MCR_MASK
        after = self._msr_lines()
        delta = 0
        if (before ^ after) & MSR_CTS:
            delta |= MSR_DCTS
        if (before ^ after) & MSR_DSR:
            delta |= MSR_DDSR
        if before & MSR_RI and not after & MSR_RI:
            delta |= MSR_TERI  # trailing edge of ring indicator
        if (before ^ after) & MSR_DCD:
            delta |= MSR_DDCD
        st.msr_delta |= delta
        return was_loop and not st.mcr & MCR_LOOP

    def _msr_lines(self) -> int:
        mcr = self.state.mcr
        if not mcr & MCR_LOOP:
            return MSR_LINES_CONNECTED
        # Loopback wiring: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        lines = 0
        if mcr & MCR_DTR:
            lines |= MSR_DSR
        if mcr & MCR_RTS:
            lines |= MSR_CTS
        if mcr & MCR_OUT1:
            lines |= MSR_RI
        if mcr & MCR_OUT2:
            lines |= MSR_DCD
        return lines

    def _lsr(self) -> int:
        st = self.state
        value = LSR_THRE | LSR_TEMT  # the transmitter is always idle
        if st.rx_fifo:
            value |= LSR_DR
        if st.overrun:
            value |= LSR_OE
        return value

    def _pending_iir(self) -> int:
        """The highest-priority pending interrupt, as IIR bits 0-3 (datasheet table IV)."""
        st = self.state
        if st.ier & IER_ELSI and st.overrun:
            return IIR_RLSI
        if st.ier & IER_ERBFI and st.rx_fifo:
            if st.fcr & FCR_ENABLE:
                trigger = RX_TRIGGER_LEVELS[(st.fcr >> FCR_TRIGGER_SHIFT) & 3]
                return IIR_RDI if len(st.rx_fifo) >= trigger else IIR_CTI
            return IIR_RDI
        if st.ier & IER_ETBEI and st.thr_ipending:
            return IIR_THRI
        if st.ier & IER_EDSSI and st.msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def irq_output(self) -> bool:
        """The level on the ISA IRQ pin: a pending interrupt, gated by OUT2 as on a PC."""
        mcr = self.state.mcr
        if not mcr & MCR_OUT2 or mcr & MCR_LOOP:
            return False
        return self._pending_iir() != IIR_NO_INT

    def _update_irq(self) -> None:
        self.irq.set_level(self.irq_output())

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.info("serial: " + msg, *args)
