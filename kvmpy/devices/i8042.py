"""The PC's PS/2 controller (an 8042) with a keyboard and a mouse behind it.

Why it matters even on a serial-console VM: Linux probes it at boot (``i8042`` and ``atkbd``,
``psmouse``), firmware uses it for the keyboard, and a direct-booted Linux without ACPI reboots
by pulsing the 8042's reset line (command 0xFE on port 0x64). So the model is careful about the
handshakes the Linux driver checks, and everything else answers like a plain AT controller.

**Placement.** The controller has two ports, 0x60 (data) and 0x64 (status/command), with the
system-control port 0x61 between them. The device therefore exposes two 1-byte port objects,
``data_port`` and ``command_port``; register each with length 1 and byte accesses::

    bus.register(layout.I8042_DATA_PORT, 1, kbc.data_port, "i8042-data", sizes=(1,))
    bus.register(layout.I8042_CMD_PORT, 1, kbc.command_port, "i8042-cmd", sizes=(1,))

**Host input.** ``key_event`` takes **scan code set 2** bytes (make codes, ``F0``-prefixed break
codes, ``E0``/``E1`` prefixes), which is what a PS/2 keyboard sends by default. As on a PC the
controller translates them to set 1 when the command byte's translate bit (0x40) is set; a guest
that switches the keyboard itself to set 1 (command ``F0 01``) gets set-1 bytes produced by the
keyboard, and set 3 is acknowledged but still fed set-2 codes. Command replies pass through the
same translation, so the keyboard ID reads ``AB 41`` in translated mode and ``AB 83`` otherwise.
``mouse_event(dx, dy, buttons)`` uses the PS/2 conventions: ``dx`` to the right, ``dy`` *up*,
``buttons`` bit 0 left, bit 1 right, bit 2 middle.

**Interrupts.** IRQ1 and IRQ12 are levels: high while the output buffer holds a byte from that
side and the command byte enables its interrupt, which is what the 8042's outputs do. ISA IRQs
are edge-triggered at the PIC and IOAPIC; the level falls every time the guest reads port 0x60
and rises again when the next byte moves into the buffer, so every byte produces a new rising
edge. A ``pulse`` per byte would do the same for bytes, but the level also gets right the case
where the guest enables the interrupt in the command byte while a byte is already waiting, and
it keeps the line low while nothing is pending. Replies of the controller itself (command byte,
self-test) raise IRQ1 like keyboard data; ``D3`` (write AUX output buffer) raises IRQ12, which
Linux uses to test that IRQ12 is wired.

**Reset.** ``FE`` (and any ``F0``-``FF`` pulse command with bit 0 clear) and writing the output
port (``D1``) with bit 0 clear ask the machine to reset through the ``StopRequester``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from kvmpy.events import GuestStop, StopReason, StopRequester
from kvmpy.hw.irq import IrqLine

log = logging.getLogger("kvmpy.devices.i8042")

#: Each port object is one byte wide, byte accesses only.
I8042_PORT_LEN = 1
I8042_ACCESS_SIZES = (1,)

# --- Status register (port 0x64 read) -------------------------------------------------------
STS_OBF = 0x01  # output buffer full
STS_IBF = 0x02  # input buffer full: never, writes are processed at once
STS_SYS = 0x04  # system flag: set by a successful self-test or the command byte
STS_CMD = 0x08  # last write was to port 0x64 (command) rather than 0x60 (data)
STS_UNLOCKED = 0x10  # keylock switch: 1 = not inhibited
STS_AUX_OBF = 0x20  # the byte in the output buffer came from the AUX (mouse) side

# --- Command byte (controller RAM byte 0) ---------------------------------------------------
CTR_KBD_INT = 0x01
CTR_AUX_INT = 0x02
CTR_SYS = 0x04
CTR_IGNORE_KEYLOCK = 0x08
CTR_KBD_DISABLE = 0x10
CTR_AUX_DISABLE = 0x20
CTR_XLATE = 0x40
#: As a BIOS leaves it: both interrupts on, system flag, translation to set 1 on.
CTR_RESET = CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | CTR_XLATE

# --- Output port (commands D0/D1) ------------------------------------------------------------
OUT_RESET = 0x01  # active low: writing 0 resets the CPU
OUT_A20 = 0x02
OUT_KBD_OBF = 0x10
OUT_AUX_OBF = 0x20
OUT_RESET_VALUE = OUT_RESET | OUT_A20 | 0xCC

# --- Controller commands (port 0x64 write) ----------------------------------------------------
CCMD_READ_RAM = 0x20  # 0x20-0x3F: read RAM byte (0x20 = command byte)
CCMD_WRITE_RAM = 0x60  # 0x60-0x7F: write RAM byte (0x60 = command byte)
CCMD_PASSWORD_TEST = 0xA4
CCMD_AUX_DISABLE = 0xA7
CCMD_AUX_ENABLE = 0xA8
CCMD_AUX_TEST = 0xA9
CCMD_SELF_TEST = 0xAA
CCMD_KBD_TEST = 0xAB
CCMD_KBD_DISABLE = 0xAD
CCMD_KBD_ENABLE = 0xAE
CCMD_READ_INPUT = 0xC0
CCMD_READ_OUTPUT = 0xD0
CCMD_WRITE_OUTPUT = 0xD1
CCMD_WRITE_KBD_OB = 0xD2
CCMD_WRITE_AUX_OB = 0xD3
CCMD_WRITE_AUX = 0xD4
CCMD_DISABLE_A20 = 0xDD
CCMD_ENABLE_A20 = 0xDF
CCMD_READ_TEST_INPUTS = 0xE0
CCMD_PULSE = 0xF0  # 0xF0-0xFF: pulse output port bits 0-3 that are 0 in the command
SELF_TEST_OK = 0x55
PORT_TEST_OK = 0x00
PASSWORD_NOT_INSTALLED = 0xF1
INPUT_PORT_VALUE = 0x80  # keyboard not inhibited

# --- Device replies ------------------------------------------------------------------------
ACK = 0xFA
RESEND = 0xFE
BAT_OK = 0xAA  # basic assurance test passed (after reset)
ECHO = 0xEE
KBD_ID = (0xAB, 0x83)  # MF2 keyboard
MOUSE_ID = 0x00  # standard PS/2 mouse

#: Bytes a device may hold for the guest; a host event that does not fit whole is dropped.
DEVICE_QUEUE_SIZE = 256

#: Scan code set 2 -> set 1, the 8042's translation table (and a set-1 keyboard's encoding).
#: Codes 0x80 and up pass through, except 0x83 (F7) and 0x84 (Alt+SysRq).
_SET2_TO_SET1 = (
    bytes.fromhex(
        "ff 43 41 3f 3d 3b 3c 58 64 44 42 40 3e 0f 29 59"  # 0x00
        "65 38 2a 70 1d 10 02 5a 66 71 2c 1f 1e 11 03 5b"  # 0x10
        "67 2e 2d 20 12 05 04 5c 68 39 2f 21 14 13 06 5d"  # 0x20
        "69 31 30 23 22 15 07 5e 6a 72 32 24 16 08 09 5f"  # 0x30
        "6b 33 25 17 18 0b 0a 60 6c 34 35 26 27 19 0c 61"  # 0x40
        "6d 73 28 74 1a 0d 62 6e 3a 36 1c 1b 75 2b 63 76"  # 0x50
        "55 56 77 78 79 7a 0e 7b 7c 4f 7d 4b 47 7e 7f 6f"  # 0x60
        "52 53 50 4c 4d 48 01 45 57 4e 51 4a 37 49 46 54"  # 0x70
    )
    + bytes((0x80, 0x81, 0x82, 0x41, 0x54))
    + bytes(range(0x85, 0x100))
)


def translate_set2_byte(code: int) -> int:
    """One set-2 code as the 8042 translates it to set 1 (without the F0 break handling)."""
    return _SET2_TO_SET1[code & 0xFF]


def _set2_to_set1(data: bytes) -> list[int]:
    """A whole set-2 sequence as a set-1 keyboard would send it (F0 xx -> xx' | 0x80)."""
    out: list[int] = []
    brk = False
    for b in data:
        if b == 0xF0:
            brk = True
            continue
        out.append(_SET2_TO_SET1[b] | (0x80 if brk else 0))
        brk = False
    return out


# --- State ------------------------------------------------------------------------------------
@dataclass
class KeyboardState:
    """The PS/2 keyboard behind the controller's first port."""

    scanning: bool = True
    scancode_set: int = 2
    leds: int = 0
    typematic: int = 0x2B  # 10.9 characters/s after 500 ms, the power-on default
    pending: int = 0  # command waiting for its argument byte (ED, F0, F3), or 0
    last_sent: int = 0  # for the resend command (FE)
    replies: list[int] = field(default_factory=list)  # command replies, sent before scan codes
    queue: list[int] = field(default_factory=list)  # scan codes from the host

    def defaults(self) -> None:
        """What F5/F6/FF restore: set 2, typematic default, LEDs off, buffer cleared."""
        self.scancode_set = 2
        self.typematic = 0x2B
        self.leds = 0
        self.pending = 0
        self.queue.clear()


@dataclass
class MouseState:
    """The PS/2 mouse behind the AUX port."""

    reporting: bool = False
    remote: bool = False
    wrap: bool = False
    scaling21: bool = False
    resolution: int = 2  # 4 counts/mm
    sample_rate: int = 100
    pending: int = 0  # command waiting for its argument byte (E8, F3), or 0
    last_sent: int = 0
    dx: int = 0  # movement not yet reported (remote mode, or reporting disabled)
    dy: int = 0
    buttons: int = 0  # bit 0 left, bit 1 right, bit 2 middle
    replies: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)

    def defaults(self) -> None:
        """What F6/F5/FF restore: stream mode, reporting off, 100 samples/s, 4 counts/mm, 1:1."""
        self.reporting = False
        self.remote = False
        self.wrap = False
        self.scaling21 = False
        self.resolution = 2
        self.sample_rate = 100
        self.pending = 0
        self.dx = self.dy = 0
        self.queue.clear()


@dataclass
class I8042State:
    ram: list[int] = field(default_factory=lambda: [CTR_RESET] + [0] * 31)  # ram[0] = command byte
    sys_flag: bool = True  # the firmware's POST (or our direct boot) already passed the self-test
    last_was_cmd: bool = False
    outport: int = OUT_RESET_VALUE
    pending_cmd: int = 0  # controller command waiting for its data byte on port 0x60, or 0
    ob: int = 0  # output buffer (what port 0x60 reads)
    ob_full: bool = False
    ob_aux: bool = False
    xlate_break: bool = False  # translator saw F0: the next byte gets bit 7
    ctrl_queue: list[tuple[int, bool]] = field(default_factory=list)  # (byte, from AUX) replies
    kbd: KeyboardState = field(default_factory=KeyboardState)
    mouse: MouseState = field(default_factory=MouseState)

    @property
    def ctr(self) -> int:
        return self.ram[0]

    def reset(self) -> None:
        self.restore(I8042State())

    def snapshot(self) -> I8042State:
        return copy.deepcopy(self)

    def restore(self, snap: I8042State) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


# --- The device -----------------------------------------------------------------------------
class _Port:
    """One of the controller's two ports as a bus device (offset is always 0)."""

    LENGTH = I8042_PORT_LEN
    SIZES = I8042_ACCESS_SIZES

    def __init__(self, read: Callable[[], int], write: Callable[[int], None]) -> None:
        self._read = read
        self._write = write

    def read(self, offset: int, size: int) -> int:
        return self._read()

    def write(self, offset: int, size: int, value: int) -> None:
        self._write(value & 0xFF)


class I8042:
    """The PS/2 controller; register ``data_port`` at 0x60 and ``command_port`` at 0x64, each
    ``I8042_PORT_LEN`` (1) long with ``I8042_ACCESS_SIZES`` (byte accesses)."""

    def __init__(self, kbd_irq: IrqLine, aux_irq: IrqLine, stop: StopRequester) -> None:
        self.kbd_irq = kbd_irq
        self.aux_irq = aux_irq
        self.stop = stop
        self.state = I8042State()
        self._warned: set[str] = set()
        self.data_port = _Port(self.read_data, self.write_data)
        self.command_port = _Port(self.read_status, self.write_command)
        self._ccmds: dict[int, Callable[[], None]] = {
            CCMD_PASSWORD_TEST: lambda: self._reply(PASSWORD_NOT_INSTALLED),
            CCMD_AUX_DISABLE: lambda: self._set_ctr_bits(CTR_AUX_DISABLE, True),
            CCMD_AUX_ENABLE: lambda: self._set_ctr_bits(CTR_AUX_DISABLE, False),
            CCMD_AUX_TEST: lambda: self._reply(PORT_TEST_OK),
            CCMD_SELF_TEST: self._self_test,
            CCMD_KBD_TEST: lambda: self._reply(PORT_TEST_OK),
            CCMD_KBD_DISABLE: lambda: self._set_ctr_bits(CTR_KBD_DISABLE, True),
            CCMD_KBD_ENABLE: lambda: self._set_ctr_bits(CTR_KBD_DISABLE, False),
            CCMD_READ_INPUT: lambda: self._reply(INPUT_PORT_VALUE),
            CCMD_READ_OUTPUT: lambda: self._reply(self._outport_value()),
            CCMD_DISABLE_A20: lambda: self._set_outport(self.state.outport & ~OUT_A20),
            CCMD_ENABLE_A20: lambda: self._set_outport(self.state.outport | OUT_A20),
            CCMD_READ_TEST_INPUTS: lambda: self._reply(0x00),
        }
        self._data_ccmds: dict[int, Callable[[int], None]] = {
            CCMD_WRITE_OUTPUT: self._set_outport,
            CCMD_WRITE_KBD_OB: lambda v: self.state.ctrl_queue.append((v, False)),
            CCMD_WRITE_AUX_OB: lambda v: self.state.ctrl_queue.append((v, True)),
            CCMD_WRITE_AUX: self._mouse_command,
        }
        self._kbd_cmds: dict[int, Callable[[], list[int]]] = {
            0xED: lambda: self._kbd_await(0xED),
            0xEE: lambda: [ECHO],
            0xF0: lambda: self._kbd_await(0xF0),
            0xF2: lambda: [ACK, *KBD_ID],
            0xF3: lambda: self._kbd_await(0xF3),
            0xF4: self._kbd_enable,
            0xF5: self._kbd_disable,
            0xF6: self._kbd_set_default,
            0xFE: lambda: [self.state.kbd.last_sent],
            0xFF: self._kbd_reset,
        }
        # Set-3-only key-type commands: acknowledged and otherwise ignored.
        for op in range(0xF7, 0xFE):
            self._kbd_cmds[op] = lambda: [ACK]
        self._mouse_cmds: dict[int, Callable[[], list[int]]] = {
            0xE6: lambda: self._mouse_set(scaling21=False),
            0xE7: lambda: self._mouse_set(scaling21=True),
            0xE8: lambda: self._mouse_await(0xE8),
            0xE9: self._mouse_status,
            0xEA: lambda: self._mouse_set(remote=False),
            0xEB: self._mouse_read_data,
            0xEC: lambda: self._mouse_set(wrap=False),
            0xEE: lambda: self._mouse_set(wrap=True),
            0xF0: lambda: self._mouse_set(remote=True),
            0xF2: lambda: [ACK, MOUSE_ID],
            0xF3: lambda: self._mouse_await(0xF3),
            0xF4: lambda: self._mouse_set(reporting=True),
            0xF5: lambda: self._mouse_set(reporting=False),
            0xF6: self._mouse_set_default,
            0xFE: lambda: [self.state.mouse.last_sent],
            0xFF: self._mouse_reset,
        }
        self._update()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.state.reset()
        self._update()

    def snapshot(self) -> I8042State:
        return self.state.snapshot()

    def restore(self, snap: I8042State) -> None:
        self.state.restore(snap)
        self._update()

    # -- host input -------------------------------------------------------------------------
    def key_event(self, scancodes: bytes) -> None:
        """Queue one key's set-2 bytes (e.g. ``b"\\x1c"`` press A, ``b"\\xf0\\x1c"`` release).

        Dropped whole while the keyboard is not scanning or its buffer is full, so the guest
        never sees half a sequence."""
        kbd = self.state.kbd
        if not scancodes or not kbd.scanning:
            return
        data = _set2_to_set1(scancodes) if kbd.scancode_set == 1 else list(scancodes)
        if len(kbd.queue) + len(data) > DEVICE_QUEUE_SIZE:
            self._log_once("kbd-full", "keyboard buffer full; key event dropped")
            return
        kbd.queue.extend(data)
        self._update()

    def mouse_event(self, dx: int, dy: int, buttons: int) -> None:
        """Relative motion (``dy`` positive = up) and the button state after it."""
        m = self.state.mouse
        m.dx = max(-1024, min(1024, m.dx + dx))
        m.dy = max(-1024, min(1024, m.dy + dy))
        m.buttons = buttons & 7
        if m.reporting and not m.remote and not m.wrap:
            if len(m.queue) + 3 > DEVICE_QUEUE_SIZE:
                self._log_once("aux-full", "mouse buffer full; movement kept for the next packet")
                return
            m.queue.extend(self._mouse_packet())
            self._update()

    # -- guest side -------------------------------------------------------------------------
    def read_status(self) -> int:
        st = self.state
        value = STS_UNLOCKED
        if st.ob_full:
            value |= STS_OBF
            if st.ob_aux:
                value |= STS_AUX_OBF
        if st.sys_flag:
            value |= STS_SYS
        if st.last_was_cmd:
            value |= STS_CMD
        return value

    def read_data(self) -> int:
        st = self.state
        value = st.ob
        if st.ob_full:
            st.ob_full = False
            self._set_irqs()  # the line falls: the guest took the byte ...
            self._update()  # ... and the next byte, if any, is a new rising edge
        return value

    def write_command(self, value: int) -> None:
        st = self.state
        st.last_was_cmd = True
        st.pending_cmd = 0  # a new command abandons one still waiting for its data byte
        if CCMD_READ_RAM <= value < CCMD_READ_RAM + 0x20:
            self._reply(st.ram[value & 0x1F])
        elif CCMD_WRITE_RAM <= value < CCMD_WRITE_RAM + 0x20 or value in self._data_ccmds:
            st.pending_cmd = value
        elif value >= CCMD_PULSE:
            if not value & OUT_RESET:
                self._request_reset(f"i8042 command {value:#04x}")
        elif value in self._ccmds:
            self._ccmds[value]()
        else:
            self._log_once(f"ccmd{value:02x}", "unknown controller command %#04x ignored", value)
        self._update()

    def write_data(self, value: int) -> None:
        st = self.state
        st.last_was_cmd = False
        cmd, st.pending_cmd = st.pending_cmd, 0
        if cmd == 0:
            # Sending to the keyboard re-enables its interface, as on an AT controller.
            st.ram[0] &= ~CTR_KBD_DISABLE
            self._keyboard_command(value)
        elif CCMD_WRITE_RAM <= cmd < CCMD_WRITE_RAM + 0x20:
            st.ram[cmd & 0x1F] = value
            if cmd == CCMD_WRITE_RAM:
                st.sys_flag = bool(value & CTR_SYS)
        else:
            self._data_ccmds[cmd](value)
        self._update()

    # -- controller commands ----------------------------------------------------------------
    def _reply(self, value: int) -> None:
        self.state.ctrl_queue.append((value & 0xFF, False))

    def _set_ctr_bits(self, bits: int, on: bool) -> None:
        if on:
            self.state.ram[0] |= bits
        else:
            self.state.ram[0] &= ~bits

    def _self_test(self) -> None:
        self.state.sys_flag = True
        self._reply(SELF_TEST_OK)

    def _outport_value(self) -> int:
        st = self.state
        value = st.outport & ~(OUT_KBD_OBF | OUT_AUX_OBF)
        if st.ob_full:
            value |= OUT_AUX_OBF if st.ob_aux else OUT_KBD_OBF
        return value

    def _set_outport(self, value: int) -> None:
        self.state.outport = value & 0xFF
        if not value & OUT_RESET:
            self._request_reset("i8042 output port reset bit cleared")

    def _request_reset(self, why: str) -> None:
        self.stop.request_stop(GuestStop.of(StopReason.RESET, why))

    # -- keyboard ---------------------------------------------------------------------------
    def _keyboard_command(self, value: int) -> None:
        kbd = self.state.kbd
        if kbd.pending and value < 0x80:
            cmd, kbd.pending = kbd.pending, 0
            replies = self._kbd_argument(cmd, value)
        else:
            kbd.pending = 0  # a command byte where an argument was due starts a new command
            handler = self._kbd_cmds.get(value)
            replies = handler() if handler else [RESEND]
        kbd.replies.extend(replies)

    def _kbd_argument(self, cmd: int, arg: int) -> list[int]:
        kbd = self.state.kbd
        if cmd == 0xED:
            kbd.leds = arg & 7
        elif cmd == 0xF3:
            kbd.typematic = arg & 0x7F
        elif cmd == 0xF0:
            if arg == 0:
                return [ACK, kbd.scancode_set]
            if arg > 3:
                return [RESEND]
            kbd.scancode_set = arg
        return [ACK]

    def _kbd_await(self, cmd: int) -> list[int]:
        self.state.kbd.pending = cmd
        return [ACK]

    def _kbd_enable(self) -> list[int]:
        self.state.kbd.scanning = True
        return [ACK]

    def _kbd_disable(self) -> list[int]:
        kbd = self.state.kbd
        kbd.defaults()
        kbd.scanning = False
        return [ACK]

    def _kbd_set_default(self) -> list[int]:
        kbd = self.state.kbd
        kbd.defaults()
        kbd.scanning = True
        return [ACK]

    def _kbd_reset(self) -> list[int]:
        kbd = self.state.kbd
        kbd.defaults()
        kbd.scanning = True
        return [ACK, BAT_OK]

    # -- mouse ------------------------------------------------------------------------------
    def _mouse_command(self, value: int) -> None:
        m = self.state.mouse
        if m.wrap and value not in (0xEC, 0xFF):
            m.replies.append(value)  # wrap (echo) mode
            return
        if m.pending:
            cmd, m.pending = m.pending, 0
            if cmd == 0xE8:
                m.resolution = value & 3
            else:
                m.sample_rate = value
            m.replies.append(ACK)
            return
        handler = self._mouse_cmds.get(value)
        m.replies.extend(handler() if handler else [RESEND])

    def _mouse_await(self, cmd: int) -> list[int]:
        self.state.mouse.pending = cmd
        return [ACK]

    def _mouse_set(self, **attrs: bool) -> list[int]:
        m = self.state.mouse
        for name, value in attrs.items():
            setattr(m, name, value)
        if "reporting" in attrs or "remote" in attrs:  # these clear the motion counters
            m.dx = m.dy = 0
            m.queue.clear()
        return [ACK]

    def _mouse_status(self) -> list[int]:
        m = self.state.mouse
        status = (
            (0x40 if m.remote else 0)
            | (0x20 if m.reporting else 0)
            | (0x10 if m.scaling21 else 0)
            | (0x04 if m.buttons & 1 else 0)  # left
            | (0x02 if m.buttons & 4 else 0)  # middle
            | (0x01 if m.buttons & 2 else 0)  # right
        )
        return [ACK, status, m.resolution, m.sample_rate]

    def _mouse_read_data(self) -> list[int]:
        return [ACK, *self._mouse_packet()]

    def _mouse_set_default(self) -> list[int]:
        self.state.mouse.defaults()
        return [ACK]

    def _mouse_reset(self) -> list[int]:
        m = self.state.mouse
        m.defaults()
        m.buttons = 0
        return [ACK, BAT_OK, MOUSE_ID]

    def _mouse_packet(self) -> list[int]:
        """A standard 3-byte packet from the accumulated motion, which it then clears."""
        m = self.state.mouse
        dx, dy = m.dx, m.dy
        m.dx = m.dy = 0
        b0 = 0x08 | (m.buttons & 7)
        if dx < -256 or dx > 255:
            b0 |= 0x40
            dx = max(-256, min(255, dx))
        if dy < -256 or dy > 255:
            b0 |= 0x80
            dy = max(-256, min(255, dy))
        if dx < 0:
            b0 |= 0x10
        if dy < 0:
            b0 |= 0x20
        return [b0, dx & 0xFF, dy & 0xFF]

    # -- output buffer and interrupts -------------------------------------------------------
    def _refill(self) -> None:
        """Move the next byte into the empty output buffer: controller replies first, then the
        keyboard (replies before scan codes), then the mouse; a disabled port holds its data."""
        st = self.state
        while not st.ob_full:
            if st.ctrl_queue:
                st.ob, st.ob_aux = st.ctrl_queue.pop(0)
                st.ob_full = True
            elif not st.ctr & CTR_KBD_DISABLE and (st.kbd.replies or st.kbd.queue):
                src = st.kbd.replies if st.kbd.replies else st.kbd.queue
                byte = src.pop(0)
                st.kbd.last_sent = byte
                if st.ctr & CTR_XLATE:
                    if byte == 0xF0:
                        st.xlate_break = True
                        continue
                    byte = _SET2_TO_SET1[byte] | (0x80 if st.xlate_break else 0)
                    st.xlate_break = False
                st.ob, st.ob_aux, st.ob_full = byte, False, True
            elif not st.ctr & CTR_AUX_DISABLE and (st.mouse.replies or st.mouse.queue):
                src = st.mouse.replies if st.mouse.replies else st.mouse.queue
                byte = src.pop(0)
                st.mouse.last_sent = byte
                st.ob, st.ob_aux, st.ob_full = byte, True, True
            else:
                return

    def _update(self) -> None:
        self._refill()
        self._set_irqs()

    def _set_irqs(self) -> None:
        st = self.state
        self.kbd_irq.set_level(st.ob_full and not st.ob_aux and bool(st.ctr & CTR_KBD_INT))
        self.aux_irq.set_level(st.ob_full and st.ob_aux and bool(st.ctr & CTR_AUX_INT))

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.info("i8042: " + msg, *args)
