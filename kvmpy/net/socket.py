"""Socket backends: NICs of two guests linked without privileges.

* ``--net socket,listen=PATH`` / ``--net socket,connect=PATH``: a Unix ``SOCK_STREAM`` socket
  carrying each frame as a 4-byte big-endian length followed by the frame. That is the framing
  of QEMU's ``-netdev stream`` (and of the older ``-netdev socket``), so a kvmpy guest can also
  talk to a QEMU guest: ``-netdev stream,id=n,server=off,addr.type=unix,addr.path=PATH``. A
  stream rather than ``SOCK_SEQPACKET`` for that reason alone; frames keep their boundaries
  through the length prefix.

  The listening side accepts one peer at a time; until one connects (and after it leaves) the
  link is down and frames the guest sends are dropped, as on an unplugged cable. When a peer
  leaves, the listener waits for the next one. The connecting side connects once, when kvmpy
  starts (so "nothing is listening" is an error before the guest runs); if the peer goes away
  its link stays down. The listening side creates the socket file and removes it at exit; it
  refuses a path that already exists rather than delete a file it did not make.

* ``--net socket,udp=LOCAL:REMOTE``: one UDP datagram per frame between 127.0.0.1:LOCAL (ours)
  and 127.0.0.1:REMOTE (the peer's), as QEMU's ``-netdev dgram`` or
  ``-netdev socket,udp=127.0.0.1:REMOTE,localaddr=127.0.0.1:LOCAL``. Loopback only: these
  frames never leave the machine. Datagrams from any other source are dropped (and counted).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from .base import MAX_FRAME, Backend
from .errors import NetworkError, NetworkPermissionError

log = logging.getLogger("kvmpy.net.socket")

LOOPBACK = "127.0.0.1"
_LEN = 4  # the stream framing's length prefix: 32 bits, big-endian (network order)
#: Unix socket paths hold 108 bytes with the terminating NUL (sizeof sun_path on Linux).
UNIX_PATH_MAX = 107
_CONNECT_TIMEOUT = 5.0


def unix_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a Unix socket, or None."""
    if not path:
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        return f"Unix socket paths hold at most {UNIX_PATH_MAX} bytes"
    return None


class StreamBackend(Backend):
    """A Unix stream socket with 4-byte big-endian length framing (QEMU's ``-netdev stream``).

    Use ``StreamBackend.listen(path)`` or ``StreamBackend.connect(path)``."""

    kind = "socket"

    def __init__(self, path: str, *, listening: bool, sock: socket.socket) -> None:
        super().__init__(f"socket {'listen' if listening else 'connect'}={path}")
        self.path = path
        self.listening = listening
        self._listener: socket.socket | None = sock if listening else None
        self._conn: socket.socket | None = None if listening else sock
        self._listen_ino: int | None = None
        self._rxbuf = bytearray()
        self._broken = False
        self.peers = 0  # connections accepted (listening side) or made (connecting side)
        if listening:
            self._listen_ino = os.stat(path).st_ino
        else:
            self.peers = 1

    @classmethod
    def listen(cls, path: str) -> StreamBackend:
        """Create the socket file at ``path`` and wait (on the I/O thread) for a peer."""
        problem = unix_path_problem(path)
        if problem:
            raise NetworkError(f"cannot listen on {path!r}: {problem}")
        if os.path.lexists(path):
            raise NetworkError(f"cannot listen on {path}: it already exists; remove it or choose "
                               "another path (kvmpy does not replace files it did not create)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(path)
            sock.listen(1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise _path_error("listen on", path, exc) from None
        return cls(path, listening=True, sock=sock)

    @classmethod
    def connect(cls, path: str) -> StreamBackend:
        """Connect to a peer already listening on ``path`` (kvmpy ``listen=`` or QEMU)."""
        problem = unix_path_problem(path)
        if problem:
            raise NetworkError(f"cannot connect to {path!r}: {problem}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(_CONNECT_TIMEOUT)
            sock.connect(path)
            sock.setblocking(False)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise NetworkError(f"nothing is listening on {path}: start the other side with "
                               f"socket,listen={path} first") from None
        except OSError as exc:
            sock.close()
            raise _path_error("connect to", path, exc) from None
        return cls(path, listening=False, sock=sock)

    # -- Backend ------------------------------------------------------------------------------
    def _attached(self) -> None:
        # the connection first: once the listener is registered, the I/O thread may accept a
        # peer and watch that connection itself
        if self._conn is not None:
            self._watch(self._conn.fileno(), self._on_readable)
        if self._listener is not None:
            self._watch_listener()

    def _watch_listener(self) -> None:
        # the listening socket is not paused with the data descriptors: register it directly
        assert self._io is not None and self._listener is not None
        self._io.add_reader(self._listener.fileno(), self._guard(self._on_accept))

    def _link_ready(self) -> bool:
        return self._conn is not None and not self._broken

    def _encode(self, frame: bytes) -> bytes:
        return len(frame).to_bytes(_LEN, "big") + frame

    def _write_some(self, data: bytes | memoryview) -> int:
        assert self._conn is not None
        return self._conn.send(data, socket.MSG_NOSIGNAL)

    def _tx_failed(self, exc: OSError) -> None:
        # EPIPE/ECONNRESET: the peer is gone; the I/O thread tears the connection down
        self._broken = True
        self._clear_txq()
        self._warn_once(f"tx-{exc.errno}", "%s: the peer went away (%s); the link is down",
                        self.description, exc.strerror or exc)
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass

    def _service(self) -> None:
        if self._broken and self._conn is not None:
            self._drop_connection("the connection failed")

    def _on_accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if self._conn is not None:
            conn.close()  # one peer at a time: a second NIC on one link is not Ethernet
            log.warning("%s: refused a second peer while one is connected", self.description)
            return
        conn.setblocking(False)
        with self._tx_lock:
            self._conn = conn
            self._broken = False
        self._rxbuf.clear()
        self.peers += 1
        log.info("%s: peer connected", self.description)
        self._watch(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            data = conn.recv(MAX_FRAME + _LEN)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop_connection(exc.strerror or str(exc))
            return
        if not data:
            self._drop_connection("the peer closed the connection")
            return
        self._rxbuf += data
        self._parse()

    def _parse(self) -> None:
        buf = self._rxbuf
        pos = 0
        while len(buf) - pos >= _LEN:
            n = int.from_bytes(buf[pos:pos + _LEN], "big")
            if n > MAX_FRAME:
                del buf[:pos]
                self._drop_connection(f"the peer sent a frame of {n} bytes (framing lost?)")
                return
            if len(buf) - pos - _LEN < n:
                break
            frame = bytes(buf[pos + _LEN:pos + _LEN + n])
            pos += _LEN + n
            if n == 0:
                continue  # an empty frame carries nothing; QEMU never sends one
            self._receive(frame)  # held frames queue up in order; reading pauses after this batch
        del buf[:pos]

    def _drop_connection(self, why: str) -> None:
        conn = self._conn
        if conn is None:
            return
        self._unwatch(conn.fileno())
        with self._tx_lock:
            self._conn = None
            self._broken = False
            self._clear_txq()
        conn.close()
        self._rxbuf.clear()
        if self.listening:
            log.info("%s: %s; waiting for the next peer", self.description, why)
        else:
            log.warning("%s: %s; the link is down", self.description, why)

    def _close_resources(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._listener is not None:
            if self._io is not None:
                self._io.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            # remove the socket file, but only if it is still the one we created
            try:
                st = os.lstat(self.path)
                if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._listen_ino:
                    os.unlink(self.path)
            except OSError:
                pass


class UdpBackend(Backend):
    """One UDP datagram per frame between 127.0.0.1:``local_port`` and 127.0.0.1:``remote_port``."""

    kind = "socket"

    def __init__(self, local_port: int, remote_port: int) -> None:
        super().__init__(f"socket udp={local_port}:{remote_port}")
        for port in (local_port, remote_port):
            if not 1 <= port <= 65535:
                raise NetworkError(f"UDP port {port} is not in 1-65535")
        if local_port == remote_port:
            raise NetworkError(f"udp={local_port}:{remote_port}: the local and remote ports must "
                               "differ (the guest would receive its own frames)")
        self.local = (LOOPBACK, local_port)
        self.remote = (LOOPBACK, remote_port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.local)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise NetworkError(f"UDP port {local_port} on {LOOPBACK} is already in use: "
                                   "choose another local port") from None
            if exc.errno == errno.EACCES:
                raise NetworkPermissionError(
                    f"no permission to bind UDP port {local_port} on {LOOPBACK} (ports below "
                    "1024 need CAP_NET_BIND_SERVICE): choose a port of 1024 or above") from None
            raise NetworkError(f"cannot bind UDP port {local_port} on {LOOPBACK}: "
                               f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        self.sock = sock

    def _attached(self) -> None:
        self._watch(self.sock.fileno(), self._on_readable)

    def _write_some(self, data: bytes | memoryview) -> int:
        return self.sock.sendto(data, self.remote)

    def _on_readable(self) -> None:
        for _ in range(self.READ_BATCH):
            if not self._reading_allowed():
                return
            try:
                data, addr = self.sock.recvfrom(MAX_FRAME + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # e.g. ECONNREFUSED reported for an earlier datagram: not fatal for UDP
                self._warn_once(f"rx-{exc.errno}", "%s: %s", self.description, exc.strerror)
                continue
            if addr != self.remote:
                self.stats.rx_dropped += 1
                self._warn_once("foreign", "%s: dropping datagrams from %s:%d (not the peer)",
                                self.description, addr[0], addr[1])
                continue
            if not self._receive(data):
                return

    def _close_resources(self) -> None:
        self.sock.close()


def _path_error(verb: str, path: str, exc: OSError) -> NetworkError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return NetworkPermissionError(f"cannot {verb} {path}: permission denied")
    if exc.errno == errno.ENOENT:
        return NetworkError(f"cannot {verb} {path}: its directory does not exist")
    if exc.errno == errno.ENOTDIR:
        return NetworkError(f"cannot {verb} {path}: a component of the path is not a directory")
    if exc.errno == errno.EADDRINUSE:
        return NetworkError(f"cannot {verb} {path}: the address is in use")
    if isinstance(exc, TimeoutError) or exc.errno == errno.EAGAIN:
        return NetworkError(f"cannot {verb} {path}: the peer does not accept connections")
    return NetworkError(f"cannot {verb} {path}: {exc.strerror or exc}")
