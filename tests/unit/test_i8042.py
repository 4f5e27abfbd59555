"""The i8042 driven through the PIO bus the way Linux's i8042/atkbd/psmouse drivers and firmware do."""

from __future__ import annotations

import pytest

from kvmpy import layout
from kvmpy.devices import i8042 as k
from kvmpy.devices.i8042 import I8042, I8042State, translate_set2_byte
from kvmpy.events import RecordingStop, StopReason
from kvmpy.hw.bus import PioBus
from kvmpy.hw.irq import RecordingIrqLine

DATA = layout.I8042_DATA_PORT
CMD = layout.I8042_CMD_PORT


class Kbc:
    """The controller on a PIO bus, with IRQ1, IRQ12 and a stop recorder."""

    def __init__(self) -> None:
        self.irq1 = RecordingIrqLine()
        self.irq12 = RecordingIrqLine()
        self.stop = RecordingStop()
        self.dev = I8042(self.irq1, self.irq12, self.stop)
        self.bus = PioBus()
        port = self.dev.data_port
        self.bus.register(DATA, port.LENGTH, port, "i8042-data", sizes=port.SIZES)
        port = self.dev.command_port
        self.bus.register(CMD, port.LENGTH, port, "i8042-cmd", sizes=port.SIZES)

    def status(self) -> int:
        return self.bus.read(CMD, 1)

    def command(self, cmd: int, *params: int, reply: int = 0) -> list[int]:
        """Like Linux's __i8042_command: command, parameter bytes, then ``reply`` bytes."""
        assert not self.status() & k.STS_IBF
        self.bus.write(CMD, 1, cmd)
        for p in params:
            assert not self.status() & k.STS_IBF
            self.bus.write(DATA, 1, p)
        return [self.read() for _ in range(reply)]

    def send(self, byte: int) -> None:
        self.bus.write(DATA, 1, byte)

    def read(self) -> int:
        assert self.status() & k.STS_OBF, "no byte waiting"
        return self.bus.read(DATA, 1)

    def drain(self) -> list[int]:
        out = []
        while self.status() & k.STS_OBF:
            out.append(self.bus.read(DATA, 1))
        return out

    def aux(self, byte: int) -> None:
        self.command(k.CCMD_WRITE_AUX, byte)

    def ctr(self) -> int:
        return self.command(k.CCMD_READ_RAM, reply=1)[0]

    def set_ctr(self, value: int) -> None:
        self.command(k.CCMD_WRITE_RAM, value)


@pytest.fixture
def kbc() -> Kbc:
    return Kbc()


def test_power_on_status_and_command_byte(kbc: Kbc) -> None:
    assert kbc.status() == k.STS_SYS | k.STS_UNLOCKED
    assert kbc.ctr() == k.CTR_RESET == 0x47
    assert kbc.status() & k.STS_CMD  # the last write went to port 0x64
    assert not kbc.irq1.level and not kbc.irq12.level


def test_write_command_byte_and_cmd_data_bit(kbc: Kbc) -> None:
    kbc.set_ctr(0x65)
    assert not kbc.status() & k.STS_CMD  # the last write was data
    assert kbc.ctr() == 0x65
    kbc.set_ctr(0x61)  # SYS flag clear
    assert not kbc.status() & k.STS_SYS
    kbc.command(k.CCMD_SELF_TEST, reply=1)
    assert kbc.status() & k.STS_SYS


def test_controller_ram_bytes(kbc: Kbc) -> None:
    kbc.command(0x65, 0x12)  # write RAM byte 5
    assert kbc.command(0x25, reply=1) == [0x12]


@pytest.mark.parametrize(
    "cmd,expect",
    [
        (k.CCMD_SELF_TEST, 0x55),
        (k.CCMD_KBD_TEST, 0x00),
        (k.CCMD_AUX_TEST, 0x00),
        (k.CCMD_PASSWORD_TEST, 0xF1),
        (k.CCMD_READ_INPUT, 0x80),
        (k.CCMD_READ_TEST_INPUTS, 0x00),
    ],
)
def test_controller_tests(kbc: Kbc, cmd: int, expect: int) -> None:
    assert kbc.command(cmd, reply=1) == [expect]
    assert not kbc.status() & k.STS_OBF


def test_port_enable_disable_commands_change_the_command_byte(kbc: Kbc) -> None:
    kbc.command(k.CCMD_KBD_DISABLE)
    assert kbc.ctr() & k.CTR_KBD_DISABLE
    kbc.command(k.CCMD_KBD_ENABLE)
    assert not kbc.ctr() & k.CTR_KBD_DISABLE
    kbc.command(k.CCMD_AUX_DISABLE)
    assert kbc.ctr() & k.CTR_AUX_DISABLE
    kbc.command(k.CCMD_AUX_ENABLE)
    assert not kbc.ctr() & k.CTR_AUX_DISABLE


def test_linux_check_aux_loop_and_irq12(kbc: Kbc) -> None:
    """i8042_check_aux: AUX_LOOP must come back flagged as AUX data and raise IRQ12."""
    kbc.set_ctr(k.CTR_SYS | k.CTR_XLATE | k.CTR_KBD_DISABLE | k.CTR_AUX_DISABLE)  # ints off
    kbc.command(k.CCMD_WRITE_AUX_OB, 0x5A)
    st = kbc.status()
    assert st & k.STS_OBF and st & k.STS_AUX_OBF
    assert not kbc.irq12.level  # AUXINT is off
    assert kbc.read() == 0x5A
    kbc.set_ctr(k.CTR_SYS | k.CTR_XLATE | k.CTR_KBD_DISABLE | k.CTR_AUX_INT)
    kbc.command(k.CCMD_WRITE_AUX_OB, 0xA5)
    assert kbc.irq12.level and not kbc.irq1.level
    assert kbc.read() == 0xA5
    assert not kbc.irq12.level


def test_write_kbd_output_buffer_raises_irq1_untranslated(kbc: Kbc) -> None:
    kbc.command(k.CCMD_WRITE_KBD_OB, 0x1C)
    assert kbc.irq1.level and not kbc.irq12.level
    assert not kbc.status() & k.STS_AUX_OBF
    assert kbc.read() == 0x1C
    assert not kbc.irq1.level


def test_enabling_the_interrupt_with_a_byte_waiting_raises_it(kbc: Kbc) -> None:
    kbc.set_ctr(k.CTR_SYS)
    kbc.command(k.CCMD_WRITE_KBD_OB, 0x42)
    assert not kbc.irq1.level
    kbc.command(k.CCMD_WRITE_RAM)
    kbc.send(k.CTR_SYS | k.CTR_KBD_INT)  # the byte is still in the buffer
    assert kbc.irq1.level
    assert kbc.read() == 0x42


def test_every_byte_gives_a_new_rising_edge(kbc: Kbc) -> None:
    kbc.dev.key_event(b"\x1c")
    kbc.dev.key_event(b"\xf0\x1c")
    assert kbc.irq1.level
    assert kbc.drain() == [0x1E, 0x9E]
    assert kbc.irq1.history == [True, False, True, False]


def test_output_port_and_a20(kbc: Kbc) -> None:
    out = kbc.command(k.CCMD_READ_OUTPUT, reply=1)[0]
    assert out & k.OUT_RESET and out & k.OUT_A20
    kbc.command(k.CCMD_DISABLE_A20)
    assert not kbc.command(k.CCMD_READ_OUTPUT, reply=1)[0] & k.OUT_A20
    kbc.command(k.CCMD_ENABLE_A20)
    assert kbc.command(k.CCMD_READ_OUTPUT, reply=1)[0] & k.OUT_A20
    kbc.command(k.CCMD_WRITE_OUTPUT, 0xDD)  # A20 off, reset bit still 1: no reset
    assert kbc.stop.stops == []
    # bits 4 and 5 are the OBF outputs, not latched: the buffer is empty when D0 answers
    assert kbc.command(k.CCMD_READ_OUTPUT, reply=1)[0] == 0xDD & ~(k.OUT_KBD_OBF | k.OUT_AUX_OBF)


# --- Reset line ------------------------------------------------------------------------------
def test_fe_pulses_reset(kbc: Kbc) -> None:
    kbc.bus.write(CMD, 1, 0xFE)
    assert [st.reason for st in kbc.stop.stops] == [StopReason.RESET]


@pytest.mark.parametrize("cmd", [0xF0, 0xF2, 0xF4, 0xF6, 0xF8, 0xFA, 0xFC, 0xFE])
def test_any_pulse_with_bit0_clear_resets(kbc: Kbc, cmd: int) -> None:
    kbc.bus.write(CMD, 1, cmd)
    assert [st.reason for st in kbc.stop.stops] == [StopReason.RESET]


@pytest.mark.parametrize("cmd", [0xF1, 0xF3, 0xFD, 0xFF])
def test_pulse_with_bit0_set_does_not_reset(kbc: Kbc, cmd: int) -> None:
    kbc.bus.write(CMD, 1, cmd)
    assert kbc.stop.stops == []


def test_output_port_write_with_bit0_clear_resets(kbc: Kbc) -> None:
    kbc.command(k.CCMD_WRITE_OUTPUT, 0xFE)
    assert [st.reason for st in kbc.stop.stops] == [StopReason.RESET]


# --- Keyboard ----------------------------------------------------------------------------------
def test_keyboard_reset_and_identify_translated(kbc: Kbc) -> None:
    kbc.send(0xFF)
    assert kbc.drain() == [k.ACK, k.BAT_OK]
    kbc.send(0xF2)
    assert kbc.drain() == [k.ACK, 0xAB, 0x41]  # 0x83 translates to 0x41, as atkbd expects


def test_keyboard_identify_untranslated(kbc: Kbc) -> None:
    kbc.set_ctr(k.CTR_KBD_INT | k.CTR_SYS)
    kbc.send(0xF2)
    assert kbc.drain() == [k.ACK, 0xAB, 0x83]


def test_keyboard_leds_typematic_echo_unknown(kbc: Kbc) -> None:
    kbc.send(0xED)
    assert kbc.drain() == [k.ACK]
    kbc.send(0x07)
    assert kbc.drain() == [k.ACK]
    assert kbc.dev.state.kbd.leds == 7
    kbc.send(0xF3)
    kbc.send(0x20)
    assert kbc.drain() == [k.ACK, k.ACK]
    assert kbc.dev.state.kbd.typematic == 0x20
    kbc.send(0xEE)
    assert kbc.drain() == [k.ECHO]
    kbc.send(0x42)
    assert kbc.drain() == [k.RESEND]


def test_command_byte_where_an_argument_was_due_starts_a_new_command(kbc: Kbc) -> None:
    kbc.send(0xED)
    kbc.send(0xF2)
    assert kbc.drain() == [k.ACK, k.ACK, 0xAB, 0x41]
    assert kbc.dev.state.kbd.pending == 0


def test_scancode_set_query_and_select(kbc: Kbc) -> None:
    kbc.set_ctr(k.CTR_KBD_INT | k.CTR_SYS)  # untranslated, so the raw set number shows
    kbc.send(0xF0)
    kbc.send(0x00)
    assert kbc.drain() == [k.ACK, k.ACK, 2]
    kbc.send(0xF0)
    kbc.send(0x01)
    assert kbc.drain() == [k.ACK, k.ACK]
    kbc.send(0xF0)
    kbc.send(0x00)
    assert kbc.drain() == [k.ACK, k.ACK, 1]
    kbc.dev.key_event(b"\xf0\x1c")  # release A, set 2 in
    assert kbc.drain() == [0x9E]  # set 1 out, produced by the keyboard
    kbc.send(0xF0)
    kbc.send(0x05)
    assert kbc.drain() == [k.ACK, k.RESEND]


def test_scancode_set_query_translated(kbc: Kbc) -> None:
    kbc.send(0xF0)
    kbc.send(0x00)
    assert kbc.drain() == [k.ACK, k.ACK, translate_set2_byte(2)]


def test_scanning_enable_disable(kbc: Kbc) -> None:
    kbc.send(0xF5)
    assert kbc.drain() == [k.ACK]
    kbc.dev.key_event(b"\x1c")
    assert kbc.drain() == []
    kbc.send(0xF4)
    assert kbc.drain() == [k.ACK]
    kbc.dev.key_event(b"\x1c")
    assert kbc.drain() == [0x1E]


def test_set_default_keeps_scanning(kbc: Kbc) -> None:
    kbc.send(0xF6)
    assert kbc.drain() == [k.ACK]
    kbc.dev.key_event(b"\x1c")
    assert kbc.drain() == [0x1E]


def test_resend_repeats_the_last_byte(kbc: Kbc) -> None:
    kbc.send(0xEE)
    kbc.drain()
    kbc.send(0xFE)
    assert kbc.drain() == [k.ECHO]


def test_translation_of_keys(kbc: Kbc) -> None:
    kbc.dev.key_event(b"\x1c")  # A press
    kbc.dev.key_event(b"\xf0\x1c")  # A release
    kbc.dev.key_event(b"\xe0\x75")  # Up press
    kbc.dev.key_event(b"\xe0\xf0\x75")  # Up release
    kbc.dev.key_event(b"\x5a")  # Enter
    assert kbc.drain() == [0x1E, 0x9E, 0xE0, 0x48, 0xE0, 0xC8, 0x1C]


def test_untranslated_keys_pass_through(kbc: Kbc) -> None:
    kbc.set_ctr(k.CTR_KBD_INT | k.CTR_SYS)
    kbc.dev.key_event(b"\xe0\xf0\x75")
    assert kbc.drain() == [0xE0, 0xF0, 0x75]


def test_disabled_keyboard_port_holds_data(kbc: Kbc) -> None:
    kbc.command(k.CCMD_KBD_DISABLE)
    kbc.dev.key_event(b"\x1c")
    assert not kbc.status() & k.STS_OBF
    assert not kbc.irq1.level
    kbc.command(k.CCMD_KBD_ENABLE)
    assert kbc.irq1.level
    assert kbc.drain() == [0x1E]


def test_writing_to_the_keyboard_reenables_its_port(kbc: Kbc) -> None:
    kbc.command(k.CCMD_KBD_DISABLE)
    kbc.send(0xEE)
    assert kbc.drain() == [k.ECHO]
    assert not kbc.ctr() & k.CTR_KBD_DISABLE


def test_controller_and_command_replies_come_before_queued_keys(kbc: Kbc) -> None:
    kbc.command(k.CCMD_KBD_DISABLE)
    kbc.dev.key_event(b"\x1c")
    assert kbc.command(k.CCMD_READ_RAM, reply=1) == [k.CTR_RESET | k.CTR_KBD_DISABLE]
    kbc.send(0xF2)  # re-enables the port; the reply goes ahead of the pending key
    assert kbc.drain() == [k.ACK, 0xAB, 0x41, 0x1E]


def test_full_keyboard_buffer_drops_whole_events(kbc: Kbc) -> None:
    kbc.command(k.CCMD_KBD_DISABLE)
    for _ in range(k.DEVICE_QUEUE_SIZE // 2):
        kbc.dev.key_event(b"\xf0\x1c")
    kbc.dev.key_event(b"\xe0\x75")  # does not fit: dropped whole
    assert len(kbc.dev.state.kbd.queue) == k.DEVICE_QUEUE_SIZE
    kbc.dev.key_event(b"")


# --- Mouse --------------------------------------------------------------------------------------
def test_mouse_reset_and_id(kbc: Kbc) -> None:
    kbc.aux(0xFF)
    got = []
    while kbc.status() & k.STS_OBF:
        assert kbc.status() & k.STS_AUX_OBF
        assert kbc.irq12.level
        got.append(kbc.read())
    assert got == [k.ACK, k.BAT_OK, 0x00]
    kbc.aux(0xF2)
    assert kbc.drain() == [k.ACK, 0x00]
    assert not kbc.irq1.level


def test_mouse_settings_and_status(kbc: Kbc) -> None:
    kbc.aux(0xF3)
    kbc.aux(40)
    kbc.aux(0xE8)
    kbc.aux(3)
    kbc.aux(0xE7)
    assert kbc.drain() == [k.ACK] * 5
    kbc.aux(0xE9)
    assert kbc.drain() == [k.ACK, 0x10, 3, 40]
    kbc.aux(0xE6)
    kbc.aux(0xF4)
    kbc.dev.mouse_event(0, 0, 0b101)  # left + middle
    kbc.drain()
    kbc.aux(0xE9)
    assert kbc.drain() == [k.ACK, 0x20 | 0x04 | 0x02, 3, 40]


def test_mouse_stream_packets(kbc: Kbc) -> None:
    kbc.dev.mouse_event(5, 5, 0)  # reporting is off after reset: nothing sent
    assert kbc.drain() == []
    kbc.aux(0xF4)
    assert kbc.drain() == [k.ACK]
    kbc.dev.mouse_event(-5, 3, 0b001)
    assert kbc.irq12.level
    assert kbc.drain() == [0x08 | 0x01 | 0x10, 0xFB, 0x03]
    kbc.dev.mouse_event(300, -300, 0b010)
    assert kbc.drain() == [0x08 | 0x02 | 0x40 | 0x80 | 0x20, 0xFF, 0x00]


def test_mouse_remote_mode_and_read_data(kbc: Kbc) -> None:
    kbc.aux(0xF0)
    kbc.aux(0xF4)
    assert kbc.drain() == [k.ACK, k.ACK]
    kbc.dev.mouse_event(2, 0, 0)
    kbc.dev.mouse_event(2, -1, 0b100)
    assert kbc.drain() == []  # remote mode: only on request
    kbc.aux(0xEB)
    assert kbc.drain() == [k.ACK, 0x08 | 0x04 | 0x20, 4, 0xFF]
    kbc.aux(0xEB)
    assert kbc.drain() == [k.ACK, 0x08 | 0x04, 0, 0]
    kbc.aux(0xE9)
    assert kbc.drain()[1] & 0x40


def test_mouse_wrap_mode_echoes(kbc: Kbc) -> None:
    kbc.aux(0xEE)
    kbc.aux(0x12)
    kbc.aux(0xF4)
    kbc.aux(0xEC)
    kbc.aux(0x12)
    assert kbc.drain() == [k.ACK, 0x12, 0xF4, k.ACK, k.RESEND]


def test_mouse_unknown_command_and_resend(kbc: Kbc) -> None:
    kbc.aux(0x01)
    assert kbc.drain() == [k.RESEND]
    kbc.aux(0xF2)
    kbc.drain()
    kbc.aux(0xFE)
    assert kbc.drain() == [0x00]


def test_disabled_aux_port_holds_mouse_data(kbc: Kbc) -> None:
    kbc.aux(0xF4)
    kbc.drain()
    kbc.command(k.CCMD_AUX_DISABLE)
    kbc.dev.mouse_event(1, 1, 0)
    assert kbc.drain() == []
    kbc.command(k.CCMD_AUX_ENABLE)
    assert kbc.drain() == [0x08, 1, 1]


def test_keyboard_data_has_priority_over_mouse_data(kbc: Kbc) -> None:
    kbc.aux(0xF4)
    kbc.drain()
    kbc.dev.mouse_event(1, 0, 0)
    kbc.dev.key_event(b"\x1c")
    first = kbc.read()  # the mouse packet's first byte was already in the buffer
    assert first == 0x08
    assert kbc.read() == 0x1E
    assert kbc.drain() == [1, 0]


# --- Robustness and state ------------------------------------------------------------------------
def test_nonsense_never_raises(kbc: Kbc) -> None:
    assert kbc.bus.read(DATA, 1) == 0  # nothing ever sent: the empty buffer reads its last value
    kbc.bus.write(CMD, 1, 0x01)  # unknown command
    kbc.bus.write(CMD, 1, 0xC1)
    kbc.bus.write(CMD, 1, 0xD4)
    kbc.bus.write(CMD, 1, 0x20)  # abandons D4
    assert kbc.read() == k.CTR_RESET
    assert kbc.bus.read(DATA, 2) == 0xFFFF  # wrong size: the bus answers
    assert kbc.bus.read(DATA + 1, 1) == 0xFF  # port 0x61 is not ours
    for v in range(256):
        kbc.bus.write(DATA, 1, v)
        kbc.drain()
    for v in range(0x00, 0xF0):
        kbc.bus.write(CMD, 1, v)
        kbc.bus.write(DATA, 1, 0xFF)  # data for commands that take one
        kbc.drain()
    assert kbc.stop.stops == []


def test_last_byte_rereads_when_empty(kbc: Kbc) -> None:
    kbc.command(k.CCMD_SELF_TEST, reply=1)
    assert kbc.bus.read(DATA, 1) == 0x55


def test_snapshot_restore_equality(kbc: Kbc) -> None:
    kbc.set_ctr(0x67)
    kbc.aux(0xF4)
    kbc.send(0xED)  # leaves the keyboard waiting for its argument
    kbc.dev.key_event(b"\x1c")
    kbc.dev.mouse_event(3, 4, 1)
    snap = kbc.dev.snapshot()
    assert isinstance(snap, I8042State)
    other = Kbc()
    other.dev.restore(snap)
    assert other.dev.state == kbc.dev.state
    assert other.irq1.level == kbc.irq1.level
    assert other.irq12.level == kbc.irq12.level
    assert other.drain() == kbc.drain()
    other.send(0x02)
    kbc.send(0x02)
    assert other.drain() == kbc.drain() == [k.ACK]
    assert snap != kbc.dev.state  # the snapshot is a copy


def test_reset(kbc: Kbc) -> None:
    kbc.set_ctr(0x00)
    kbc.dev.key_event(b"\x1c")
    kbc.dev.reset()
    assert kbc.dev.state == I8042State()
    assert kbc.status() == k.STS_SYS | k.STS_UNLOCKED
