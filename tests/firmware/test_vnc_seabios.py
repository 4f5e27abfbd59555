"""The VNC server on a real PC machine: SeaBIOS's screen reaches a VNC client, and a key typed
in the client reaches the guest through the PS/2 controller (SeaBIOS's keyboard interrupt
handler puts it into the BIOS keyboard buffer, which the test reads from guest memory).

Firmware tier: needs build/debian/bios-256k.bin and vgabios-stdvga.bin (``make test`` fetches
them) and /dev/kvm.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmpy.display import keymap
from kvmpy.display.vnc import VncServer
from kvmpy.events import GuestStop, StopReason
from kvmpy.machine import Machine
from kvmpy.options import parse_boot_args

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = (ROOT / "build/debian/bios-256k.bin", ROOT / "build/debian/vgabios-stdvga.bin")
#: The BIOS data area's keyboard ring buffer (0x41E-0x43D): words of (ASCII, set-1 scan code).
BDA_KBD_BUFFER = 0x41E
BDA_KBD_BUFFER_END = 0x43E


class RfbClient:
    """The few RFB 3.8 client messages this test needs (tests/unit/test_vnc.py has the full
    one; test modules here are not a package, so it is not imported from there)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return bytes(data)

    def handshake(self) -> tuple[int, int]:
        assert self.recv_exact(12) == b"RFB 003.008\n"
        self.sock.sendall(b"RFB 003.008\n")
        assert self.recv_exact(2) == b"\x01\x01"  # security types: None
        self.sock.sendall(b"\x01")
        assert self.recv_exact(4) == bytes(4)  # SecurityResult: OK
        self.sock.sendall(b"\x01")  # ClientInit, shared
        width, height, pf, name_len = struct.unpack(">HH16sI", self.recv_exact(24))
        assert pf[:4] == bytes((32, 24, 0, 1)) and self.recv_exact(name_len) == b"kvmpy"
        return width, height

    def request(self, incremental: bool, width: int, height: int) -> None:
        self.sock.sendall(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, width, height))

    def key(self, down: bool, keysym: int) -> None:
        self.sock.sendall(struct.pack(">BBxxI", 4, int(down), keysym))

    def read_update(self) -> list[tuple[int, int, int, int, int, bytes]]:
        kind, count = struct.unpack(">BxH", self.recv_exact(4))
        assert kind == 0
        rects = []
        for _ in range(count):
            x, y, w, h, enc = struct.unpack(">HHHHi", self.recv_exact(12))
            rects.append((x, y, w, h, enc, self.recv_exact(w * h * 4) if enc == 0 else b""))
        return rects

    def close(self) -> None:
        self.sock.close()


@dataclass
class Running:
    machine: Machine
    server: VncServer
    keys: list[bytes]  # what the server handed to the i8042

    def screen(self) -> str:
        with self.machine.lock:
            return "\n".join(self.machine.devices["vga"].text_screen())

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; the screen shows:\n{self.screen()}")
            time.sleep(0.1)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    for f in FIRMWARE:
        if not f.is_file():
            pytest.skip(f"needs {f.relative_to(ROOT)} (make {f.relative_to(ROOT)})")
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))  # no boot signature: SeaBIOS says so and waits
    machine = Machine(parse_boot_args(["--hvm", str(disk), "--memory", "64M", "--console", "none"]))
    i8042 = machine.devices["i8042"]
    keys: list[bytes] = []
    key_event = i8042.key_event

    def recording_key_event(scancodes: bytes) -> None:
        keys.append(bytes(scancodes))
        key_event(scancodes)

    i8042.key_event = recording_key_event
    server = VncServer(machine.lock, machine.devices["vga"], i8042, machine.io, "127.0.0.1:0")
    result: list[GuestStop] = []
    thread = threading.Thread(target=lambda: result.append(machine.run(timeout=300)), daemon=True)
    thread.start()
    try:
        yield Running(machine, server, keys)
    finally:
        machine.request_stop(GuestStop.of(StopReason.USER, "test finished"))
        thread.join(timeout=30)
        server.close()
        machine.close()
    assert not thread.is_alive()
    assert result and result[0].reason is StopReason.USER, result


def test_seabios_screen_and_keyboard_over_vnc(running):
    running.wait_for("SeaBIOS's banner", lambda: "SeaBIOS" in running.screen(), timeout=120)
    client = RfbClient(running.server.port)
    assert client.handshake() == (720, 400)  # text mode 3: 80x25 cells of 9x16
    client.request(False, 720, 400)
    [(x, y, w, h, enc, pixels)] = client.read_update()
    assert (x, y, w, h, enc) == (0, 0, 720, 400, 0)
    colours = {pixels[i : i + 3] for i in range(0, len(pixels), 4)}
    assert len(colours) > 1, "the screen is all one colour"

    # Past POST, SeaBIOS's keyboard handler is installed and the keyboard is scanning.
    running.wait_for("SeaBIOS to give up booting", lambda: "No bootable device" in running.screen(),
                     timeout=120)
    client.key(True, ord("a"))
    client.key(False, ord("a"))
    running.wait_for("the key at the i8042", lambda: len(running.keys) == 2, timeout=10)
    assert running.keys == [b"\x1c", b"\xf0\x1c"]

    def in_bios_buffer() -> bool:
        buf = running.machine.memory.read(BDA_KBD_BUFFER, BDA_KBD_BUFFER_END - BDA_KBD_BUFFER)
        return b"a\x1e" in [buf[i : i + 2] for i in range(0, len(buf), 2)]  # 'a', set-1 1E

    running.wait_for("'a' in the BIOS keyboard buffer", in_bios_buffer, timeout=20)

    # the connection keeps serving after input: a second full update, another key
    client.request(False, 720, 400)
    assert client.read_update()[0][:4] == (0, 0, 720, 400)
    client.key(True, keymap.XK_Return)
    running.wait_for("Enter at the i8042", lambda: running.keys[-1] == b"\x5a", timeout=10)
    client.close()


def test_vnc_port_in_use_is_one_sentence(tmp_path):
    """The CLI with --display on a busy port: a usage error before the guest starts."""
    import socket
    import subprocess
    import sys

    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "kvmpy", "boot", "--hvm", str(disk),
                            "--display", f"vnc=127.0.0.1:{port}"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 64
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0] and "Traceback" not in p.stderr
