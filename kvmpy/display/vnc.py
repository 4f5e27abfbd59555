"""An RFB 3.8 server (RFC 6143) for the guest's screen, keyboard and mouse.

``VncServer(machine_lock, vga, i8042, io_thread, "127.0.0.1:5900")`` listens on a TCP address
and serves every client that connects: the picture ``vga.render()`` gives, keys (X11 keysyms
turned into PS/2 scan codes by ``keymap``) to ``i8042.key_event`` and the pointer, as relative
PS/2 mouse motion, to ``i8042.mouse_event``.

**Threads.** Everything runs on the machine's I/O thread (``IoThread``): the listening socket
and each client are readers there, and a periodic callback renders, sends and flushes. Sockets
are non-blocking and output is buffered per client: a slow or stalled client never blocks the
I/O thread, whose other work (console, device ticks) would otherwise stall with it. Device
calls (``render``, ``key_event``, ``mouse_event``) are made under the machine's device lock, as
the vCPU loop's are; diffing and encoding are done outside it so the guest is held only for
the render itself.

**Updates.** A frame is rendered only while some client has an update request outstanding and
at most ``max_fps`` times a second (``IDLE_FPS`` while nothing changes, and never more than a
quarter of the time), because a render holds the device lock and costs milliseconds (about 6 ms
for the 720x400 text screen). Each client keeps the last frame it was sent; an incremental request is answered
with the 16x16 tiles that differ from it (runs of dirty tiles merged into rectangles), and held
until something changes, as RFC 6143 7.5.3 allows. Only the Raw encoding is sent. A client that
advertised the DesktopSize pseudo-encoding gets a resize when the guest changes mode; any other
keeps the size it was told at ServerInit and sees the picture cropped or padded with black.

**Protocol versions.** 3.8 is offered; a client answering 3.7 or 3.3 gets that version's
handshake (RFC 6143 7.1.1 says anything else is to be treated as 3.3). The only security type
is None.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import UsageError
from . import keymap

log = logging.getLogger("kvmpy.display.vnc")

#: QEMU's display-number convention: display N listens on port 5900 + N.
DISPLAY_BASE_PORT = 5900
DEFAULT_HOST = "127.0.0.1"
DESKTOP_NAME = "kvmpy"

# --- RFC 6143 constants ------------------------------------------------------------------------
PROTOCOL_VERSION = b"RFB 003.008\n"  # 7.1.1
_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
SECURITY_INVALID = 0  # 7.1.2
SECURITY_NONE = 1
SECURITY_RESULT_OK = 0  # 7.1.3
SECURITY_RESULT_FAILED = 1
# client-to-server message types (7.5)
MSG_SET_PIXEL_FORMAT = 0
MSG_SET_ENCODINGS = 2
MSG_FRAMEBUFFER_UPDATE_REQUEST = 3
MSG_KEY_EVENT = 4
MSG_POINTER_EVENT = 5
MSG_CLIENT_CUT_TEXT = 6
# server-to-client message types (7.6)
MSG_FRAMEBUFFER_UPDATE = 0
MSG_SET_COLOUR_MAP_ENTRIES = 1
# encodings (7.7, 7.8)
ENCODING_RAW = 0
ENCODING_DESKTOP_SIZE = -223

_PIXEL_FORMAT = struct.Struct(">BBBBHHHBBB3x")  # 7.4
_SERVER_INIT = struct.Struct(">HH16sI")  # 7.3.2, the name follows
_RECT = struct.Struct(">HHHHi")  # 7.6.1, per rectangle
_UPDATE_HEADER = struct.Struct(">BxH")
_UPDATE_REQUEST = struct.Struct(">BHHHH")  # after the type byte
_KEY_EVENT = struct.Struct(">Bxxi")
_POINTER_EVENT = struct.Struct(">BHH")
#: Fixed lengths of the client messages whose length does not depend on their contents.
_FIXED_LENGTH = {
    MSG_SET_PIXEL_FORMAT: 20,
    MSG_FRAMEBUFFER_UPDATE_REQUEST: 10,
    MSG_KEY_EVENT: 8,
    MSG_POINTER_EVENT: 6,
}

#: Side of the square tiles compared to find what changed.
TILE = 16
#: At most this many renders a second (all clients together) ...
MAX_FPS = 30.0
#: ... and this many once the picture has not changed for IDLE_AFTER seconds (no client input
#: either): an idle screen watched by a client then costs the guest little lock time.
IDLE_FPS = 10.0
IDLE_AFTER = 1.0
#: A render holds the device lock: the gap between renders is at least this many times the
#: last render's duration, so a large graphics mode cannot hold the guest more than ~1/4 of
#: the time.
RENDER_DUTY = 4.0
#: A client whose unsent output exceeds this is not given a new update until it drains.
MAX_PENDING_OUTPUT = 256 << 10
RECV_SIZE = 64 << 10
#: PS/2 packets carry 9-bit signed movement; larger jumps are split into several packets.
MAX_MOUSE_STEP = 255
#: RFB button mask bits (left, middle, right; 3 and 4 are the wheel) -> PS/2 (left, right,
#: middle). A standard PS/2 mouse has no wheel, so wheel bits are dropped.
_RFB_TO_PS2_BUTTONS = ((0x01, 0x01), (0x02, 0x04), (0x04, 0x02))
_NONZERO = re.compile(rb"[^\x00]")


class Display(Protocol):
    """What the server needs of the VGA (``StdVga`` is one)."""

    def render(self, cursor: bool = False) -> tuple[int, int, bytes]: ...


class Ps2Input(Protocol):
    """What the server needs of the PS/2 controller (``I8042`` is one)."""

    def key_event(self, scancodes: bytes) -> None: ...

    def mouse_event(self, dx: int, dy: int, buttons: int) -> None: ...


class IoLoop(Protocol):
    """What the server needs of the I/O thread (``kvmpy.console.IoThread`` is one)."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...

    def remove_reader(self, fd: int) -> None: ...

    def add_periodic(self, callback: Callable[[], None]) -> None: ...


# --- addresses ---------------------------------------------------------------------------------
def parse_address(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or QEMU's ``:N`` (display N: port 5900 + N on
    127.0.0.1), optionally prefixed ``vnc=`` as ``--display`` spells it; port 0 picks a free
    port. Raises ``UsageError`` for anything else."""
    text = spec.strip()
    if text.startswith("vnc="):
        text = text[4:]

    def bad(why: str) -> UsageError:
        return UsageError(f"bad VNC address {spec!r}: {why} (use HOST:PORT, e.g. 127.0.0.1:5900, "
                          "or :N for display N on port 5900+N)")

    if "," in text:
        raise bad("options after the address are not supported")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise bad("expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise bad("no port")
    if not port_text.isdigit():
        raise bad(f"{port_text!r} is not a port number")
    number = int(port_text)
    if host:
        port = number
    else:
        host, port = DEFAULT_HOST, DISPLAY_BASE_PORT + number
    if port > 0xFFFF:
        raise bad(f"port {port} is out of range")
    return host, port


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    where = _format_address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {where}: unknown host ({e.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # a server restarted at once must not wait out the old connections' TIME_WAIT; a
        # socket still listening on the port makes bind fail all the same
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(8)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            reason = "address already in use"
        elif e.errno == errno.EADDRNOTAVAIL:
            reason = "no such address on this host"
        else:
            reason = (e.strerror or str(e)).lower()
        raise UsageError(f"cannot listen on {where}: {reason}") from None
    return sock


# --- pixel formats -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelFormat:
    """RFC 6143 7.4's PIXEL_FORMAT, and the conversion of RGB bytes into it."""

    bits_per_pixel: int = 32
    depth: int = 24
    big_endian: bool = False
    true_colour: bool = True
    red_max: int = 255
    green_max: int = 255
    blue_max: int = 255
    red_shift: int = 16
    green_shift: int = 8
    blue_shift: int = 0

    def pack(self) -> bytes:
        return _PIXEL_FORMAT.pack(self.bits_per_pixel, self.depth, int(self.big_endian),
                                  int(self.true_colour), self.red_max, self.green_max,
                                  self.blue_max, self.red_shift, self.green_shift, self.blue_shift)

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, be, tc, rmax, gmax, bmax, rsh, gsh, bsh = _PIXEL_FORMAT.unpack(data)
        return cls(bpp, depth, bool(be), bool(tc), rmax, gmax, bmax, rsh, gsh, bsh)

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8


#: What the server announces: 32-bit little-endian true colour, 0x00RRGGBB.
SERVER_PIXEL_FORMAT = PixelFormat()
#: What a client asking for a colour map gets: the map is filled with an RGB 3-3-2 palette, so
#: an index is computed like a true-colour pixel with these maxima and shifts.
_COLOUR_MAP_AS_TRUE_COLOUR = dict(true_colour=True, red_max=7, green_max=7, blue_max=3,
                                  red_shift=5, green_shift=2, blue_shift=0)
_IDENTITY = bytes(range(256))


class PixelConverter:
    """RGB bytes (3 per pixel) -> pixels in a client's format, without a per-pixel Python loop.

    Each output byte of a pixel is an OR over the three channels of a function of that channel
    alone, ``((scale(v) << shift) >> 8k) & 0xFF``: so the converter keeps one 256-entry
    translate table per (output byte, channel) that contributes anything, extracts each channel
    with a stride-3 slice, translates it, ORs the contributions (as big integers) and interleaves
    the output bytes with strided slice assignment. For the common 32-bit formats with
    byte-aligned shifts every output byte is one untranslated channel: three slices."""

    def __init__(self, pf: PixelFormat) -> None:
        self.bpp = pf.bytes_per_pixel
        mask = (1 << pf.bits_per_pixel) - 1
        channels = ((pf.red_max, pf.red_shift), (pf.green_max, pf.green_shift),
                    (pf.blue_max, pf.blue_shift))
        self.parts: list[list[tuple[int, bytes | None]]] = [[] for _ in range(self.bpp)]
        for c, (cmax, shift) in enumerate(channels):
            values = [(((v * cmax + 127) // 255) << shift) & mask for v in range(256)]
            for k in range(self.bpp):
                table = bytes((value >> (8 * k)) & 0xFF for value in values)
                if not any(table):
                    continue
                pos = self.bpp - 1 - k if pf.big_endian else k
                self.parts[pos].append((c, None if table == _IDENTITY else table))

    def convert(self, rgb: bytes) -> bytes:
        n = len(rgb) // 3
        channels = [rgb[0::3], rgb[1::3], rgb[2::3]]
        out = bytearray(n * self.bpp)
        for pos, parts in enumerate(self.parts):
            if not parts:
                continue
            planes = [channels[c] if table is None else channels[c].translate(table) for c, table in parts]
            if len(planes) == 1:
                plane = planes[0]
            else:
                acc = 0
                for p in planes:
                    acc |= int.from_bytes(p, "little")
                plane = acc.to_bytes(n, "little")
            out[pos :: self.bpp] = plane
        return bytes(out)


def _colour_map_entries() -> bytes:
    """SetColourMapEntries (7.6.2) for the 3-3-2 palette, 16-bit components."""
    entries = []
    for i in range(256):
        r, g, b = (i >> 5) & 7, (i >> 2) & 7, i & 3
        entries.append(struct.pack(">HHH", r * 0xFFFF // 7, g * 0xFFFF // 7, b * 0xFFFF // 3))
    return struct.pack(">BxHH", MSG_SET_COLOUR_MAP_ENTRIES, 0, 256) + b"".join(entries)


# --- frames ------------------------------------------------------------------------------------
Frame = tuple[int, int, bytes]
Rect = tuple[int, int, int, int]


def fit_frame(frame: Frame, width: int, height: int) -> Frame:
    """The frame cropped to, or padded with black to, ``width`` x ``height``: what a client that
    cannot follow a resize is shown."""
    w, h, rgb = frame
    if (w, h) == (width, height):
        return frame
    stride, keep = w * 3, min(w, width) * 3
    pad = bytes(width * 3 - keep)
    rows = [rgb[y * stride : y * stride + keep] + pad for y in range(min(h, height))]
    rows.append(bytes(width * 3 * max(0, height - h)))
    return width, height, b"".join(rows)


def dirty_rects(old: bytes, new: bytes, width: int, height: int, tile: int = TILE) -> list[Rect]:
    """Rectangles covering every ``tile``-square tile where ``new`` differs from ``old`` (both
    RGB frames of the same size). Dirty tiles next to each other in a band of tiles become one
    run, and a run repeated in the bands below grows into one taller rectangle.

    Why it is cheap: an unchanged band is skipped with one ``memcmp``; in a changed band the
    rows are XORed as big integers and ORed together, so one row of bytes says which columns
    changed anywhere in the band, and a regex search for a non-zero byte jumps from one dirty
    tile to the next."""
    if old == new:
        return []
    stride = width * 3
    tile_bytes = tile * 3
    rects: list[list[int]] = []
    open_runs: dict[tuple[int, int], list[int]] = {}
    for y0 in range(0, height, tile):
        bh = min(tile, height - y0)
        start, end = y0 * stride, (y0 + bh) * stride
        if old[start:end] == new[start:end]:
            open_runs = {}
            continue
        changed = 0
        for row in range(start, end, stride):
            a, b = old[row : row + stride], new[row : row + stride]
            if a != b:
                changed |= int.from_bytes(a, "little") ^ int.from_bytes(b, "little")
        columns = changed.to_bytes(stride, "little")
        runs: list[tuple[int, int]] = []
        pos = 0
        while (m := _NONZERO.search(columns, pos)) is not None:
            t = m.start() // tile_bytes
            x0, x1 = t * tile, min(width, (t + 1) * tile)
            if runs and runs[-1][1] == x0:
                runs[-1] = (runs[-1][0], x1)
            else:
                runs.append((x0, x1))
            pos = (t + 1) * tile_bytes
        next_open: dict[tuple[int, int], list[int]] = {}
        for run in runs:
            rect = open_runs.get(run)
            if rect is not None:
                rect[3] += bh
            else:
                rect = [run[0], y0, run[1] - run[0], bh]
                rects.append(rect)
            next_open[run] = rect
        open_runs = next_open
    return [(x, y, w, h) for x, y, w, h in rects]


def crop_rgb(frame: Frame, rect: Rect) -> bytes:
    """The RGB bytes of one rectangle of a frame, rows top to bottom."""
    width, _, rgb = frame
    x, y, w, h = rect
    stride = width * 3
    if x == 0 and w == width:
        return rgb[y * stride : (y + h) * stride]
    return b"".join(rgb[r + x * 3 : r + (x + w) * 3] for r in range(y * stride, (y + h) * stride, stride))


# --- one connection ----------------------------------------------------------------------------
class _ProtocolError(Exception):
    """The client sent something that cannot be parsed; the connection is closed."""


@dataclass
class _Request:
    incremental: bool
    rect: Rect


class VncClient:
    """One RFB connection: input parsing by state, buffered output, the frame it was last sent.

    Only the server calls it, always on the I/O thread under the server's lock."""

    def __init__(self, server: VncServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.closing = False  # close once the output (a failure reason) is flushed
        self.minor = 8  # protocol 3.minor agreed
        self.ready = False  # past ServerInit: updates and input events may flow
        self.shared = True
        self.pixel_format = SERVER_PIXEL_FORMAT
        self.converter = PixelConverter(SERVER_PIXEL_FORMAT)
        self.encodings: set[int] = set()
        self.width = 0
        self.height = 0
        self.sent: bytes | None = None  # RGB of what the client shows; None: unknown
        self.request: _Request | None = None
        self.skip = 0  # bytes of a ClientCutText still to discard
        self.pointer: tuple[int, int] | None = None
        self.buttons = 0
        self.keys_down: dict[int, bytes] = {}  # keysym -> break code, for release at disconnect
        self._state: Callable[[], bool] = self._read_version
        self.send(PROTOCOL_VERSION)

    # -- output -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.outbuf += data

    def flush(self) -> None:
        """Hand as much buffered output to the kernel as it takes now, never waiting."""
        while self.outbuf and not self.closed:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.server._drop(self, f"send failed: {e.strerror or e}")
                return
            del self.outbuf[:n]
        if self.closing and not self.outbuf:
            self.server._drop(self, "closed after a failed handshake")

    # -- input --------------------------------------------------------------------------------
    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.server._drop(self, f"receive failed: {e.strerror or e}")
            return
        if not data:
            self.server._drop(self, "closed by the client")
            return
        if self.closing:
            return
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        self.inbuf += data
        try:
            while not self.closed and not self.closing and self._state():
                pass
        except _ProtocolError as e:
            self.server._drop(self, str(e))
            return
        self.flush()

    def _take(self, n: int) -> bytes | None:
        if len(self.inbuf) < n:
            return None
        data = bytes(self.inbuf[:n])
        del self.inbuf[:n]
        return data

    # -- handshake (7.1, 7.3) -----------------------------------------------------------------
    def _read_version(self) -> bool:
        data = self._take(12)
        if data is None:
            return False
        m = _VERSION_RE.fullmatch(data)
        if m is None:
            raise _ProtocolError(f"not an RFB client (it sent {data!r})")
        major, minor = int(m.group(1)), int(m.group(2))
        # RFC 6143 7.1.1: versions other than 3.7 and 3.8 are to be treated as 3.3
        self.minor = {(3, 8): 8, (3, 7): 7}.get((major, minor), 3)
        if self.minor == 3:
            # 3.3: the server decides the security type; with None, ClientInit follows at once
            self.send(struct.pack(">I", SECURITY_NONE))
            self._state = self._read_client_init
        else:
            self.send(bytes((1, SECURITY_NONE)))
            self._state = self._read_security
        return True

    def _read_security(self) -> bool:
        data = self._take(1)
        if data is None:
            return False
        if data[0] != SECURITY_NONE:
            if self.minor >= 8:
                reason = b"kvmpy offers only security type None"
                self.send(struct.pack(">II", SECURITY_RESULT_FAILED, len(reason)) + reason)
            self.closing = True
            return False
        if self.minor >= 8:  # 3.7 sends no SecurityResult for None
            self.send(struct.pack(">I", SECURITY_RESULT_OK))
        self._state = self._read_client_init
        return True

    def _read_client_init(self) -> bool:
        data = self._take(1)
        if data is None:
            return False
        self.shared = bool(data[0])
        width, height, _ = self.server._client_joined(self)
        self.width, self.height = width, height
        name = DESKTOP_NAME.encode()
        self.send(_SERVER_INIT.pack(width, height, self.pixel_format.pack(), len(name)) + name)
        self.ready = True
        self._state = self._read_message
        return True

    # -- normal messages (7.5) ----------------------------------------------------------------
    def _read_message(self) -> bool:
        if not self.inbuf:
            return False
        kind = self.inbuf[0]
        length = _FIXED_LENGTH.get(kind)
        if length is not None:
            data = self._take(length)
            if data is None:
                return False
            if kind == MSG_SET_PIXEL_FORMAT:
                self._set_pixel_format(PixelFormat.unpack(data[4:20]))
            elif kind == MSG_FRAMEBUFFER_UPDATE_REQUEST:
                incremental, x, y, w, h = _UPDATE_REQUEST.unpack(data[1:])
                self._update_request(bool(incremental), (x, y, w, h))
            elif kind == MSG_KEY_EVENT:
                down, keysym = _KEY_EVENT.unpack(data[1:])
                self._key_event(bool(down), keysym & 0xFFFFFFFF)
            else:
                mask, x, y = _POINTER_EVENT.unpack(data[1:])
                self._pointer_event(mask, x, y)
            return True
        if kind == MSG_SET_ENCODINGS:
            if len(self.inbuf) < 4:
                return False
            count = int.from_bytes(self.inbuf[2:4], "big")
            data = self._take(4 + 4 * count)
            if data is None:
                return False
            self.encodings = set(struct.unpack(f">{count}i", data[4:]))
            return True
        if kind == MSG_CLIENT_CUT_TEXT:
            data = self._take(8)
            if data is None:
                return False
            length = int.from_bytes(data[4:8], "big")
            n = min(length, len(self.inbuf))  # the clipboard is not shared: discard the text
            del self.inbuf[:n]
            self.skip = length - n
            return True
        raise _ProtocolError(f"unknown message type {kind}")

    def _set_pixel_format(self, pf: PixelFormat) -> None:
        if pf.bits_per_pixel not in (8, 16, 32):
            raise _ProtocolError(f"unsupported pixel format: {pf.bits_per_pixel} bits per pixel")
        if not pf.true_colour:
            # a colour map: fill it with a 3-3-2 palette and compute indices like pixels
            self.send(_colour_map_entries())
            pf = PixelFormat(pf.bits_per_pixel, pf.depth, pf.big_endian, **_COLOUR_MAP_AS_TRUE_COLOUR)
        self.pixel_format = pf
        self.converter = PixelConverter(pf)

    def _update_request(self, incremental: bool, rect: Rect) -> None:
        if self.request is not None and not self.request.incremental:
            return  # a full update is already owed; it covers this one
        self.request = _Request(incremental, rect)

    def _key_event(self, down: bool, keysym: int) -> None:
        codes = keymap.scancodes(keysym, down)
        if codes is None:
            log.debug("vnc %s: no key for keysym %#x", self.peer, keysym)
            return
        key = keymap.lookup(keysym)
        assert key is not None
        if down:
            self.keys_down[keysym] = key.brk
        else:
            self.keys_down.pop(keysym, None)
        if codes:
            self.server._key(codes)

    def _pointer_event(self, mask: int, x: int, y: int) -> None:
        buttons = 0
        for rfb_bit, ps2_bit in _RFB_TO_PS2_BUTTONS:
            if mask & rfb_bit:
                buttons |= ps2_bit
        last = self.pointer
        self.pointer = (x, y)
        dx, dy = (0, 0) if last is None else (x - last[0], last[1] - y)  # PS/2's y grows upwards
        if dx == 0 and dy == 0 and buttons == self.buttons:
            return
        self.buttons = buttons
        self.server._mouse(dx, dy, buttons)

    # -- updates (7.6.1) ----------------------------------------------------------------------
    def wants_update(self) -> bool:
        return self.ready and self.request is not None and len(self.outbuf) < MAX_PENDING_OUTPUT

    def update(self, frame: Frame, fitted: Callable[[int, int], Frame]) -> None:
        """Answer the outstanding request from ``frame``, or keep holding it if nothing the
        client asked for has changed."""
        request = self.request
        assert request is not None
        width, height, _ = frame
        if (width, height) != (self.width, self.height):
            if ENCODING_DESKTOP_SIZE in self.encodings:
                # the resize is the update's last rectangle (7.8.2); the picture at the new size
                # follows on the client's next request
                self.width, self.height, self.sent = width, height, None
                self.send(_UPDATE_HEADER.pack(MSG_FRAMEBUFFER_UPDATE, 1)
                          + _RECT.pack(0, 0, width, height, ENCODING_DESKTOP_SIZE))
                self.request = None
                return
            frame = fitted(self.width, self.height)
            width, height, _ = frame
        rgb = frame[2]
        whole = (0, 0, width, height)
        asked = whole
        if not request.incremental:
            x, y, w, h = request.rect
            x, y = min(x, width), min(y, height)
            asked = (x, y, min(w, width - x), min(h, height - y))
        if self.sent is None:
            # the client holds nothing we know of: all of it, or just what it asked for
            rects = [asked] if asked[2] and asked[3] else []
        else:
            rects = dirty_rects(self.sent, rgb, width, height)
            if asked == whole and not request.incremental:
                rects = [whole]
            elif asked != whole and asked[2] and asked[3]:
                rects.append(asked)
        if not rects and request.incremental:
            return  # hold the incremental request until something changes
        parts = [_UPDATE_HEADER.pack(MSG_FRAMEBUFFER_UPDATE, len(rects))]
        for rect in rects:
            parts.append(_RECT.pack(*rect, ENCODING_RAW))
            parts.append(self.converter.convert(crop_rgb(frame, rect)))
        self.send(b"".join(parts))
        if self.sent is not None or asked == whole:
            # every changed tile was sent, so the client now shows exactly this frame
            self.sent = rgb
        self.request = None


# --- the server --------------------------------------------------------------------------------
class VncServer:
    """Serves one machine's screen and input to VNC clients; see the module docstring.

    ``machine_lock`` is the machine's device lock (``Machine.lock``), ``vga`` what ``render()``s
    the screen (``machine.devices["vga"]``), ``i8042`` what takes key and mouse events
    (``machine.devices["i8042"]``), ``io`` the machine's ``IoThread``. ``address`` is a
    ``parse_address`` string or a ``(host, port)`` pair. Raises ``UsageError`` if the address is
    malformed or cannot be listened on. The server runs as soon as the I/O thread does."""

    def __init__(self, machine_lock: Any, vga: Display, i8042: Ps2Input, io: IoLoop,
                 address: str | tuple[str, int], *, max_fps: float = MAX_FPS,
                 cursor: bool = True) -> None:
        host, port = parse_address(address) if isinstance(address, str) else address
        self.machine_lock = machine_lock
        self.vga = vga
        self.i8042 = i8042
        self.io = io
        self.cursor = cursor
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.idle_interval = max(self.min_interval, 1.0 / IDLE_FPS)
        self.renders = 0  # frames rendered so far (for tests and statistics)
        self.clients: list[VncClient] = []
        self._lock = threading.Lock()  # our own state: the I/O thread against close()
        self._closed = False
        self._last_render = float("-inf")
        self._render_cost = 0.0  # seconds the last render took
        self._changed_at = float("-inf")  # when the picture last changed or a client sent input
        self._frame: Frame | None = None
        self._fitted: dict[tuple[int, int], Frame] = {}
        self.sock = _listen(host, port)
        bound = self.sock.getsockname()
        self.address: tuple[str, int] = (bound[0], bound[1])
        io.add_reader(self.sock.fileno(), self._on_accept)
        io.add_periodic(self._on_tick)
        log.info("VNC server listening on %s", _format_address(*self.address))

    @property
    def port(self) -> int:
        return self.address[1]

    # -- I/O thread callbacks -----------------------------------------------------------------
    # Each catches everything: an exception escaping a callback would end the I/O thread, and
    # with it the console and device ticks. A failing client is dropped instead.
    def _on_accept(self) -> None:
        with self._lock:
            if self._closed:
                return
            while True:
                try:
                    conn, addr = self.sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    log.warning("VNC: accept failed: %s", e)
                    return
                try:
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    client = VncClient(self, conn, _format_address(addr[0], addr[1]))
                    self.io.add_reader(client.fd, lambda c=client: self._on_client(c))
                except (OSError, ValueError) as e:
                    log.warning("VNC: cannot take a connection from %s: %s", addr, e)
                    conn.close()
                    continue
                self.clients.append(client)
                log.info("VNC client %s connected", client.peer)
                client.flush()

    def _on_client(self, client: VncClient) -> None:
        with self._lock:
            if self._closed or client.closed:
                return
            try:
                client.on_readable()
            except Exception:
                log.exception("VNC client %s: internal error", client.peer)
                self._drop(client, "internal error")

    def _on_tick(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._service()
            except Exception:
                log.exception("VNC: internal error while updating clients")
                for client in list(self.clients):
                    self._drop(client, "internal error")

    def _service(self) -> None:
        for client in list(self.clients):
            client.flush()
        waiting = [c for c in self.clients if c.wants_update()]
        if not waiting:
            return
        now = time.monotonic()
        interval = self.min_interval if now - self._changed_at < IDLE_AFTER else self.idle_interval
        if now - self._last_render < max(interval, RENDER_DUTY * self._render_cost):
            return
        self._last_render = now
        frame = self._render()
        for client in waiting:
            client.update(frame, self._fit)
            client.flush()

    def _render(self) -> Frame:
        start = time.monotonic()
        with self.machine_lock:
            frame = self.vga.render(cursor=self.cursor)
        end = time.monotonic()
        self._render_cost = end - start
        self.renders += 1
        if self._frame is None or frame[:2] != self._frame[:2] or frame[2] != self._frame[2]:
            self._changed_at = end
        self._frame = frame
        self._fitted = {}
        return frame

    def _fit(self, width: int, height: int) -> Frame:
        """The current frame cropped or padded for clients that cannot be resized (shared)."""
        assert self._frame is not None
        fitted = self._fitted.get((width, height))
        if fitted is None:
            fitted = self._fitted[(width, height)] = fit_frame(self._frame, width, height)
        return fitted

    # -- called by clients ----------------------------------------------------------------------
    def _client_joined(self, client: VncClient) -> Frame:
        """ClientInit: honour a non-shared request and return the frame size to announce."""
        if not client.shared:
            # RFC 6143 7.3.1: exclusive access is given by disconnecting the other clients
            for other in list(self.clients):
                if other is not client:
                    self._drop(other, "another client asked for exclusive access")
        if self._frame is None:
            return self._render()
        return self._frame

    def _key(self, codes: bytes) -> None:
        self._changed_at = time.monotonic()  # the guest will likely answer on the screen
        with self.machine_lock:
            self.i8042.key_event(codes)

    def _mouse(self, dx: int, dy: int, buttons: int) -> None:
        """One or more PS/2 packets: each carries at most +-255 per axis, so a jump of the
        absolute pointer is split into steps that add up to it."""
        self._changed_at = time.monotonic()
        with self.machine_lock:
            while True:
                sx = max(-MAX_MOUSE_STEP, min(MAX_MOUSE_STEP, dx))
                sy = max(-MAX_MOUSE_STEP, min(MAX_MOUSE_STEP, dy))
                self.i8042.mouse_event(sx, sy, buttons)
                dx, dy = dx - sx, dy - sy
                if not dx and not dy:
                    return

    def _drop(self, client: VncClient, why: str) -> None:
        if client.closed:
            return
        client.closed = True
        log.info("VNC client %s disconnected: %s", client.peer, why)
        if client in self.clients:
            self.clients.remove(client)
        self.io.remove_reader(client.fd)
        released = [codes for codes in client.keys_down.values() if codes]
        client.keys_down.clear()
        if released and not self._closed:
            # keys held when the client went away would otherwise repeat forever in the guest
            for codes in released:
                self._key(codes)
        try:
            client.sock.close()
        except OSError:
            pass

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop listening and disconnect every client. Safe from any thread (not holding the
        machine lock), more than once, and after the I/O thread stopped."""
        with self._lock:
            if self._closed:
                return
            # closed first: no key releases into a machine that may be stopping (and whose
            # lock the caller might hold)
            self._closed = True
            for client in list(self.clients):
                self._drop(client, "server closing")
            self.io.remove_reader(self.sock.fileno())
            self.sock.close()
        log.info("VNC server on %s closed", _format_address(*self.address))

    def __enter__(self) -> VncServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
