"""The VNC server against a small RFB client written here (RFC 6143), without KVM.

The server runs on a real ``IoThread`` with a fake VGA (a frame the test sets) and a recording
stand-in for the i8042, so what is checked is what a VNC client sees on the wire and what the
PS/2 controller would be handed.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kvmpy.console import IoThread
from kvmpy.devices.i8042 import translate_set2_byte
from kvmpy.display import keymap, vnc
from kvmpy.display.vnc import PixelConverter, PixelFormat, VncServer, dirty_rects, parse_address
from kvmpy.errors import UsageError

ENC_DESKTOP_SIZE = -223


# --- fakes ---------------------------------------------------------------------------------------
@dataclass
class Mode:
    kind: str
    width: int
    height: int


class FakeVga:
    """A screen whose picture the test sets; counts renders."""

    def __init__(self, width: int, height: int) -> None:
        self.set(width, height, bytes(width * height * 3))
        self.renders = 0

    def set(self, width: int, height: int, rgb: bytes) -> None:
        assert len(rgb) == width * height * 3
        self.frame = (width, height, bytes(rgb))

    def poke(self, x: int, y: int, rgb: tuple[int, int, int]) -> None:
        width, height, data = self.frame
        buf = bytearray(data)
        i = (y * width + x) * 3
        buf[i : i + 3] = bytes(rgb)
        self.frame = (width, height, bytes(buf))

    def render(self, cursor: bool = False) -> tuple[int, int, bytes]:
        self.renders += 1
        return self.frame

    def display_mode(self) -> Mode:
        return Mode("vbe", self.frame[0], self.frame[1])


class RecordingI8042:
    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.mouse: list[tuple[int, int, int]] = []

    def key_event(self, scancodes: bytes) -> None:
        self.keys.append(bytes(scancodes))

    def mouse_event(self, dx: int, dy: int, buttons: int) -> None:
        self.mouse.append((dx, dy, buttons))


def pattern(width: int, height: int) -> bytes:
    """A frame where every pixel is different: R = x, G = y, B = x ^ y (mod 256)."""
    return b"".join(bytes((x & 0xFF, y & 0xFF, (x ^ y) & 0xFF)) for y in range(height) for x in range(width))


# --- a small RFB client ------------------------------------------------------------------------------
@dataclass
class ServerInit:
    width: int
    height: int
    pixel_format: bytes
    name: bytes


class RfbClient:
    """Just enough of an RFB client to drive the server: blocking socket, explicit messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.bpp = 4
        self.width = self.height = 0

    def close(self) -> None:
        self.sock.close()

    def recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"server closed after {len(data)} of {n} bytes")
            data += chunk
        return bytes(data)

    def nothing_pending(self, wait: float = 0.3) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)
        return False

    def handshake(self, version: bytes = b"RFB 003.008\n", shared: bool = True) -> ServerInit:
        assert self.recv_exact(12) == b"RFB 003.008\n"
        self.sock.sendall(version)
        if version == b"RFB 003.003\n":
            assert self.recv_exact(4) == struct.pack(">I", 1)
        else:
            assert self.recv_exact(2) == b"\x01\x01"  # one security type: None
            self.sock.sendall(b"\x01")
            if version == b"RFB 003.008\n":
                assert self.recv_exact(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
        self.sock.sendall(b"\x01" if shared else b"\x00")
        width, height, pf, name_len = struct.unpack(">HH16sI", self.recv_exact(24))
        name = self.recv_exact(name_len)
        self.width, self.height = width, height
        return ServerInit(width, height, pf, name)

    def set_pixel_format(self, pf: PixelFormat) -> None:
        self.sock.sendall(b"\x00\x00\x00\x00" + pf.pack())
        self.bpp = pf.bits_per_pixel // 8

    def set_encodings(self, encodings: list[int]) -> None:
        self.sock.sendall(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))

    def request(self, incremental: bool, x: int = 0, y: int = 0, w: int | None = None,
                h: int | None = None) -> None:
        w = self.width if w is None else w
        h = self.height if h is None else h
        self.sock.sendall(struct.pack(">BBHHHH", 3, int(incremental), x, y, w, h))

    def key(self, down: bool, keysym: int) -> None:
        self.sock.sendall(struct.pack(">BBxxI", 4, int(down), keysym))

    def pointer(self, mask: int, x: int, y: int) -> None:
        self.sock.sendall(struct.pack(">BBHH", 5, mask, x, y))

    def cut_text(self, text: bytes) -> None:
        self.sock.sendall(struct.pack(">BxxxI", 6, len(text)) + text)

    def read_update(self) -> list[tuple[int, int, int, int, int, bytes]]:
        """One FramebufferUpdate: (x, y, w, h, encoding, raw pixel bytes) per rectangle."""
        kind = self.recv_exact(1)[0]
        assert kind == 0, f"expected FramebufferUpdate, got message type {kind}"
        (count,) = struct.unpack(">xH", self.recv_exact(3))
        rects = []
        for _ in range(count):
            x, y, w, h, enc = struct.unpack(">HHHHi", self.recv_exact(12))
            data = b""
            if enc == 0:
                data = self.recv_exact(w * h * self.bpp)
            elif enc == ENC_DESKTOP_SIZE:
                self.width, self.height = w, h
            rects.append((x, y, w, h, enc, data))
        return rects


def bgrx(rgb: bytes) -> bytes:
    """RGB bytes as the server's default pixel format puts them on the wire."""
    out = bytearray()
    for i in range(0, len(rgb), 3):
        out += bytes((rgb[i + 2], rgb[i + 1], rgb[i], 0))
    return bytes(out)


def crop(frame: tuple[int, int, bytes], x: int, y: int, w: int, h: int) -> bytes:
    width, _, rgb = frame
    return b"".join(rgb[(r * width + x) * 3 : (r * width + x + w) * 3] for r in range(y, y + h))


# --- fixtures ------------------------------------------------------------------------------------
@dataclass
class Rig:
    server: VncServer
    vga: FakeVga
    kbc: RecordingI8042
    lock: threading.Lock

    def client(self) -> RfbClient:
        return RfbClient(self.server.port)

    def wait_for(self, predicate, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)


@pytest.fixture
def rig() -> Iterator[Rig]:
    io = IoThread()
    vga = FakeVga(64, 32)
    vga.set(64, 32, pattern(64, 32))
    kbc = RecordingI8042()
    lock = threading.Lock()
    server = VncServer(lock, vga, kbc, io, "127.0.0.1:0", max_fps=200)
    io.start()
    try:
        yield Rig(server, vga, kbc, lock)
    finally:
        server.close()
        io.stop()


# --- addresses -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("127.0.0.1:5900", ("127.0.0.1", 5900)),
    ("vnc=127.0.0.1:5905", ("127.0.0.1", 5905)),
    (":0", ("127.0.0.1", 5900)),
    ("vnc=:3", ("127.0.0.1", 5903)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:5901", ("::1", 5901)),
])  # fmt: skip
def test_parse_address(spec, expected):
    assert parse_address(spec) == expected


@pytest.mark.parametrize("spec", ["", "127.0.0.1", "vnc=", "host:port", ":x", "1.2.3.4:70000",
                                  ":60000", "[::1]5900", ":1,password", "127.0.0.1:-1"])
def test_malformed_address_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="bad VNC address"):
        parse_address(spec)


def test_port_in_use_is_a_clear_usage_error():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    io = IoThread()
    try:
        with pytest.raises(UsageError) as e:
            VncServer(threading.Lock(), FakeVga(8, 8), RecordingI8042(), io, f"127.0.0.1:{port}")
        assert str(e.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
    finally:
        busy.close()
        io.stop()


# --- handshake -------------------------------------------------------------------------------------
def test_handshake_and_server_init(rig):
    c = rig.client()
    init = c.handshake()
    assert (init.width, init.height) == (64, 32)
    # 32 bpp, depth 24, little-endian, true colour, maxima 255, shifts 16/8/0
    assert init.pixel_format == struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    assert init.name == b"kvmpy"
    c.close()


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.889\n"])
def test_older_protocol_versions(rig, version):
    c = rig.client()
    if version == b"RFB 003.889\n":  # Apple's: treated as 3.3 (RFC 6143 7.1.1)
        assert c.recv_exact(12) == b"RFB 003.008\n"
        c.sock.sendall(version)
        assert c.recv_exact(4) == struct.pack(">I", 1)
        c.sock.sendall(b"\x01")
        assert struct.unpack(">HH", c.recv_exact(4)) == (64, 32)
    else:
        assert c.handshake(version).width == 64
    c.close()


def test_garbage_instead_of_a_version_closes_the_connection(rig):
    c = rig.client()
    c.recv_exact(12)
    c.sock.sendall(b"GET / HTTP/1.0\r\n")
    assert c.sock.recv(16) == b""
    rig.wait_for(lambda: not rig.server.clients)


def test_refused_security_type_gets_a_reason(rig):
    c = rig.client()
    c.recv_exact(12)
    c.sock.sendall(b"RFB 003.008\n")
    c.recv_exact(2)
    c.sock.sendall(b"\x02")  # VNC authentication: not offered
    status, length = struct.unpack(">II", c.recv_exact(8))
    assert status == 1 and b"None" in c.recv_exact(length)
    assert c.sock.recv(16) == b""


# --- framebuffer updates ------------------------------------------------------------------------------
def test_full_update_has_the_frames_pixels(rig):
    c = rig.client()
    c.handshake()
    c.request(incremental=False)
    [(x, y, w, h, enc, data)] = c.read_update()
    assert (x, y, w, h, enc) == (0, 0, 64, 32, 0)
    assert data == bgrx(pattern(64, 32))
    c.close()


def test_incremental_update_sends_only_the_changed_tile(rig):
    c = rig.client()
    c.handshake()
    c.request(incremental=False)
    c.read_update()
    c.request(incremental=True)
    assert c.nothing_pending(), "an unchanged screen must hold the incremental request"
    rig.vga.poke(20, 5, (1, 2, 3))  # in the tile at (16, 0)
    [(x, y, w, h, enc, data)] = c.read_update()
    assert (x, y, w, h, enc) == (16, 0, 16, 16, 0)
    assert data == bgrx(crop(rig.vga.frame, 16, 0, 16, 16))
    c.close()


def test_changed_tiles_merge_into_rectangles(rig):
    c = rig.client()
    c.handshake()
    c.request(incremental=False)
    c.read_update()
    for x, y in ((0, 0), (17, 3), (40, 20), (63, 31)):  # tiles (0,0) (1,0) (2,1) (3,1)
        rig.vga.poke(x, y, (9, 9, 9))
    c.request(incremental=True)
    rects = c.read_update()
    assert [(x, y, w, h) for x, y, w, h, _, _ in rects] == [(0, 0, 32, 16), (32, 16, 32, 16)]
    for x, y, w, h, _, data in rects:
        assert data == bgrx(crop(rig.vga.frame, x, y, w, h))


def test_non_incremental_sub_rectangle(rig):
    c = rig.client()
    c.handshake()
    c.request(incremental=False)
    c.read_update()
    c.request(incremental=False, x=8, y=4, w=10, h=6)
    [(x, y, w, h, _, data)] = c.read_update()
    assert (x, y, w, h) == (8, 4, 10, 6)
    assert data == bgrx(crop(rig.vga.frame, 8, 4, 10, 6))


def test_dirty_rects_of_identical_and_edge_frames():
    a = pattern(40, 20)  # sizes that are not multiples of the tile
    assert dirty_rects(a, a, 40, 20) == []
    b = bytearray(a)
    b[-3:] = b"\xff\xff\xff"  # the last pixel, in a partial tile at (32, 16) of 8 x 4
    assert dirty_rects(a, bytes(b), 40, 20) == [(32, 16, 8, 4)]
    c = bytes(len(a))
    assert dirty_rects(a, c, 40, 20) == [(0, 0, 40, 20)]


def test_renders_are_capped_and_only_while_a_request_waits():
    io = IoThread()
    vga = FakeVga(16, 16)
    server = VncServer(threading.Lock(), vga, RecordingI8042(), io, "127.0.0.1:0", max_fps=10)
    io.start()
    try:
        time.sleep(0.3)
        assert vga.renders == 0, "nobody asked: nothing rendered"
        c = RfbClient(server.port)
        c.handshake()
        c.request(incremental=False)
        c.read_update()
        c.request(incremental=True)  # held: the screen does not change
        before = vga.renders
        time.sleep(1.0)
        assert 3 <= vga.renders - before <= 12
        c.close()
    finally:
        server.close()
        io.stop()


def test_an_unchanging_screen_is_rendered_less_often():
    io = IoThread()
    vga = FakeVga(16, 16)
    server = VncServer(threading.Lock(), vga, RecordingI8042(), io, "127.0.0.1:0", max_fps=100)
    io.start()
    try:
        c = RfbClient(server.port)
        c.handshake()
        c.request(incremental=False)
        c.read_update()
        c.request(incremental=True)
        time.sleep(vnc.IDLE_AFTER + 0.2)
        before = vga.renders
        time.sleep(1.0)
        assert vga.renders - before <= vnc.IDLE_FPS + 2
        vga.poke(3, 3, (1, 1, 1))  # a change is still seen, within an idle frame interval
        start = time.monotonic()
        assert c.read_update()[0][:4] == (0, 0, 16, 16)
        assert time.monotonic() - start < 0.5
        c.close()
    finally:
        server.close()
        io.stop()


# --- pixel formats ------------------------------------------------------------------------------------
RGB565 = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)


def test_set_pixel_format_16bpp(rig):
    c = rig.client()
    c.handshake()
    c.set_pixel_format(RGB565)
    rig.vga.poke(0, 0, (255, 0, 0))
    rig.vga.poke(1, 0, (0x80, 0x40, 0xFF))
    c.request(incremental=False, w=2, h=1)
    rects = c.read_update()
    assert rects[0][5] == struct.pack("<HH", 0xF800, (16 << 11) | (16 << 5) | 31)


def test_pixel_converter_formats():
    rgb = bytes((0x12, 0x34, 0x56, 0xFF, 0x80, 0x00))
    # 32 bpp big-endian, 0x00RRGGBB
    be = PixelFormat(32, 24, True, True, 255, 255, 255, 16, 8, 0)
    assert PixelConverter(be).convert(rgb) == bytes.fromhex("00123456 00ff8000")
    # 32 bpp little-endian with unusual shifts: R at bit 0, G at 8, B at 24
    odd = PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 24)
    assert PixelConverter(odd).convert(rgb) == bytes.fromhex("12340056 ff800000")
    # 30-bit colour (10 bits a channel) in 32 bpp little-endian, shifts 20/10/0
    deep = PixelFormat(32, 30, False, True, 1023, 1023, 1023, 20, 10, 0)

    def scale(v: int) -> int:
        return (v * 1023 + 127) // 255

    expect = b"".join(struct.pack("<I", (scale(r) << 20) | (scale(g) << 10) | scale(b))
                      for r, g, b in ((0x12, 0x34, 0x56), (0xFF, 0x80, 0)))
    assert PixelConverter(deep).convert(rgb) == expect
    # 16 bpp big-endian 5-6-5
    be565 = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
    r, g, b = (0x12 * 31 + 127) // 255, (0x34 * 63 + 127) // 255, (0x56 * 31 + 127) // 255
    assert PixelConverter(be565).convert(rgb[:3]) == struct.pack(">H", (r << 11) | (g << 5) | b)


def test_colour_map_client_gets_a_palette(rig):
    c = rig.client()
    c.handshake()
    c.sock.sendall(b"\x00\x00\x00\x00" + PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0).pack())
    kind, first, count = struct.unpack(">BxHH", c.recv_exact(6))
    assert (kind, first, count) == (1, 0, 256)
    palette = c.recv_exact(6 * 256)
    assert palette[6 * 0xFF : 6 * 0x100] == b"\xff\xff" * 3  # index 0xFF is white
    c.bpp = 1
    rig.vga.poke(0, 0, (255, 255, 255))
    rig.vga.poke(1, 0, (255, 0, 0))
    c.request(incremental=False, w=2, h=1)
    assert c.read_update()[0][5] == bytes((0xFF, 0xE0))


# --- resize ---------------------------------------------------------------------------------------------
def test_resize_with_desktop_size(rig):
    c = rig.client()
    c.handshake()
    c.set_encodings([0, ENC_DESKTOP_SIZE])
    c.request(incremental=False)
    c.read_update()
    rig.vga.set(80, 48, pattern(80, 48))
    c.request(incremental=True)
    [(_, _, w, h, enc, _)] = c.read_update()
    assert (w, h, enc) == (80, 48, ENC_DESKTOP_SIZE)
    c.request(incremental=False)
    [(x, y, w, h, enc, data)] = c.read_update()
    assert (x, y, w, h, enc) == (0, 0, 80, 48, 0)
    assert data == bgrx(pattern(80, 48))


def test_client_without_desktop_size_keeps_its_size(rig):
    c = rig.client()
    c.handshake()
    c.set_encodings([0])
    c.request(incremental=False)
    c.read_update()
    big = bytes(255 - v for v in pattern(80, 48))
    rig.vga.set(80, 48, big)  # larger: cropped to 64 x 32
    c.request(incremental=True)
    rects = c.read_update()
    assert all(x + w <= 64 and y + h <= 32 and enc == 0 for x, y, w, h, enc, _ in rects)
    c.request(incremental=False)
    [(_, _, w, h, _, data)] = c.read_update()
    assert (w, h) == (64, 32)
    assert data == bgrx(crop((80, 48, big), 0, 0, 64, 32))
    rig.vga.set(8, 4, b"\xff" * 8 * 4 * 3)  # smaller: padded with black
    c.request(incremental=False)
    [(_, _, w, h, _, data)] = c.read_update()
    assert (w, h) == (64, 32)
    assert data[: 8 * 4] == b"\xff\xff\xff\x00" * 8 and data[8 * 4 : 64 * 4] == bytes(56 * 4)
    assert data[4 * 64 * 4 :] == bytes(28 * 64 * 4)


# --- keyboard ---------------------------------------------------------------------------------------
def test_keys_become_set2_make_and_break_codes(rig):
    c = rig.client()
    c.handshake()
    for keysym in (ord("a"), keymap.XK_Left, ord("A"), keymap.XK_Return):
        c.key(True, keysym)
        c.key(False, keysym)
    c.key(True, 0x20AC)  # EuroSign: no key on a US keyboard, ignored
    c.key(True, keymap.XK_F12)
    rig.wait_for(lambda: len(rig.kbc.keys) == 9)
    assert rig.kbc.keys == [
        b"\x1c", b"\xf0\x1c",  # a
        b"\xe0\x6b", b"\xe0\xf0\x6b",  # Left: E0 prefix, F0 after it
        b"\x1c", b"\xf0\x1c",  # A is the same key (the client sends Shift itself)
        b"\x5a", b"\xf0\x5a",  # Enter
        b"\x07",  # F12
    ]  # fmt: skip


def test_held_keys_are_released_when_the_client_goes(rig):
    c = rig.client()
    c.handshake()
    c.key(True, keymap.XK_Shift_L)
    c.key(True, keymap.XK_Control_R)
    rig.wait_for(lambda: len(rig.kbc.keys) == 2)
    c.close()
    rig.wait_for(lambda: len(rig.kbc.keys) == 4)
    assert sorted(rig.kbc.keys[2:]) == sorted([b"\xf0\x12", b"\xe0\xf0\x14"])


def test_cut_text_is_ignored_and_the_stream_stays_in_step(rig):
    c = rig.client()
    c.handshake()
    c.cut_text(b"x" * 100_000)
    c.key(True, ord("z"))
    rig.wait_for(lambda: rig.kbc.keys == [b"\x1a"])


def test_keymap_covers_a_us_keyboard():
    letters = [ord(ch) for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    printable = [ord(ch) for ch in "0123456789`~-_=+[{]}\\|;:'\",<.>/?!@#$%^&*() "]
    named = [keymap.XK_Return, keymap.XK_Escape, keymap.XK_BackSpace, keymap.XK_Tab,
             keymap.XK_Left, keymap.XK_Right, keymap.XK_Up, keymap.XK_Down,
             keymap.XK_Shift_L, keymap.XK_Shift_R, keymap.XK_Control_L, keymap.XK_Control_R,
             keymap.XK_Alt_L, keymap.XK_Alt_R, keymap.XK_Home, keymap.XK_End, keymap.XK_Page_Up,
             keymap.XK_Page_Down, keymap.XK_Insert, keymap.XK_Delete]
    named += [keymap.XK_F1 + i for i in range(12)]
    for keysym in letters + printable + named:
        assert keymap.lookup(keysym) is not None, hex(keysym)
    # the scan codes mean what a PC sees: through the 8042's set-2 -> set-1 translation,
    # a is 1E, Esc 01, Enter 1C, F1 3B, F12 58, Left E0 4B, Delete E0 53
    def set1(keysym: int) -> list[int]:
        return [translate_set2_byte(b) if b != 0xE0 else b for b in keymap.scancodes(keysym, True)]

    assert set1(ord("a")) == [0x1E]
    assert set1(keymap.XK_Escape) == [0x01]
    assert set1(keymap.XK_Return) == [0x1C]
    assert set1(keymap.XK_F1) == [0x3B]
    assert set1(keymap.XK_F12) == [0x58]
    assert set1(keymap.XK_Left) == [0xE0, 0x4B]
    assert set1(keymap.XK_Delete) == [0xE0, 0x53]
    assert keymap.scancodes(keymap.XK_Pause, False) == b""
    assert keymap.scancodes(0x0100_0061, True) == b"\x1c"  # Unicode keysym for 'a'


# --- pointer -----------------------------------------------------------------------------------------
def test_pointer_moves_become_relative_ps2_motion(rig):
    c = rig.client()
    c.handshake()
    c.pointer(0, 100, 100)  # the first position only sets the origin
    c.pointer(0, 110, 95)  # right 10, up 5
    c.pointer(1, 110, 95)  # left button down
    c.pointer(4, 110, 95)  # right button instead
    c.pointer(2, 110, 95)  # middle
    c.pointer(0, 110, 95)
    c.pointer(0, 110, 95)  # nothing changed: nothing sent
    c.pointer(0, 710, 95)  # 600 to the right: split into steps of at most 255
    rig.wait_for(lambda: sum(dx for dx, _, _ in rig.kbc.mouse) == 610)
    assert rig.kbc.mouse[:5] == [(10, 5, 0), (0, 0, 1), (0, 0, 2), (0, 0, 4), (0, 0, 0)]
    steps = rig.kbc.mouse[5:]
    assert steps == [(255, 0, 0), (255, 0, 0), (90, 0, 0)]


# --- lifecycle --------------------------------------------------------------------------------------
def test_two_clients_and_close(rig):
    a, b = rig.client(), rig.client()
    a.handshake()
    b.handshake()
    for c in (a, b):
        c.request(incremental=False)
        assert c.read_update()[0][5] == bgrx(pattern(64, 32))
    rig.server.close()
    assert a.sock.recv(1) == b"" and b.sock.recv(1) == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rig.server.port), timeout=1)


def test_exclusive_client_disconnects_the_others(rig):
    a = rig.client()
    a.handshake()
    b = rig.client()
    b.handshake(shared=False)
    assert a.sock.recv(1) == b""
    b.request(incremental=False)
    assert b.read_update()[0][2:4] == (64, 32)


def test_a_stalled_client_does_not_block_the_others(rig):
    rig.vga.set(512, 512, pattern(512, 512))
    stalled = rig.client()
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.handshake()
    for _ in range(20):
        stalled.request(incremental=False)  # never read: its output backs up in the server
    time.sleep(0.3)
    c = rig.client()
    c.handshake()
    c.request(incremental=False)
    assert c.read_update()[0][2:4] == (512, 512)
    c.key(True, ord("q"))
    rig.wait_for(lambda: rig.kbc.keys == [b"\x15"])


def test_unknown_message_drops_only_that_client(rig):
    a, b = rig.client(), rig.client()
    a.handshake()
    b.handshake()
    a.sock.sendall(b"\x99")
    assert a.sock.recv(1) == b""
    b.request(incremental=False)
    assert b.read_update()[0][2:4] == (64, 32)


def test_module_constants_match_the_rfc():
    assert vnc.PROTOCOL_VERSION == b"RFB 003.008\n"
    assert vnc.ENCODING_DESKTOP_SIZE == -223
    assert len(vnc.SERVER_PIXEL_FORMAT.pack()) == 16
