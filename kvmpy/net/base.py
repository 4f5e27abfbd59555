"""What every network backend shares: the attach/send/close interface, held-back receive, a
bounded transmit queue, and the rule that nothing here ever blocks a vCPU.

Two directions, two threads:

* **Guest to host** (``send``): the NIC model calls ``send(frame)`` on a vCPU thread, under the
  machine's lock. The backend writes the frame to a non-blocking descriptor at once. When the
  host side cannot take it now (``EAGAIN``, or a stream socket that took part of it), the rest
  waits in a bounded queue that later ``send`` calls and the I/O thread's periodic callback
  flush in order. A full queue drops the newest frame and counts it, as a congested link does:
  a vCPU must never wait for a slow peer, and Ethernet makes no delivery promise.
* **Host to guest** (``deliver``): descriptors are read on the I/O thread (``IoThread``); each
  frame goes to ``deliver(frame)`` (the NIC's ``receive``) under the machine's lock. ``False``
  means the guest's receive ring has no room: the frame is *held*, reading stops (the
  descriptor is unregistered, so the selector does not spin on it) and the held frames are
  offered again from the periodic callback, or at once when the device calls ``rx_ready()``
  (the guest gave the ring new buffers). Nothing is dropped silently and nothing blocks.

Every callback that runs on the I/O thread catches what it raises: an exception there would
end the thread, and with it the console and every other backend.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmpy.console import IoThread

log = logging.getLogger("kvmpy.net")

#: Largest frame a backend carries either way: TAP MTUs and the stream framing allow 64 KiB.
MAX_FRAME = 65536

Deliver = Callable[[bytes], bool]


@dataclass
class NetStats:
    """Counters for ``kvmpy info``-style reports and for tests (read without a lock: ints)."""

    rx_frames: int = 0  # host -> guest, accepted by the device
    rx_bytes: int = 0
    rx_dropped: int = 0  # frames the backend refused to carry (oversized, foreign sender)
    rx_held: int = 0  # times the device had no room and a frame was held back
    tx_frames: int = 0  # guest -> host, written or queued
    tx_bytes: int = 0
    tx_dropped: int = 0  # queue full or link down: dropped like a congested link would
    tx_errors: int = 0  # the host refused a frame (e.g. too large for a datagram)


class Backend:
    """The host end of one NIC.

    Life cycle: construct (opens the host resource, so errors surface before the guest runs),
    ``attach(io, lock, deliver)`` once the machine's I/O thread exists, ``send`` for each frame
    the NIC transmits, ``close()`` at the end. Subclasses implement ``_attached`` (register
    their descriptors with ``_watch``), ``_write_some`` and ``_close_resources``; they hand
    every frame they read to ``_receive``.
    """

    #: What may wait for a host side that cannot take it now (frames, and bytes: a few
    #: milliseconds of gigabit traffic); beyond either, new frames are dropped and counted.
    TX_QUEUE_FRAMES = 4096
    TX_QUEUE_BYTES = 4 << 20
    #: Frames read per readable event before the I/O thread moves on to other descriptors.
    READ_BATCH = 64

    kind = "backend"

    def __init__(self, description: str) -> None:
        self.description = description
        self.stats = NetStats()
        self._io: IoThread | None = None
        self._lock: threading.Lock | None = None
        self._deliver: Deliver | None = None
        self._held: deque[bytes] = deque()
        self._readers: dict[int, Callable[[], None]] = {}
        self._paused = False
        self._txq: deque[bytes | memoryview] = deque()
        self._txq_bytes = 0
        self._tx_lock = threading.Lock()
        self._wake_r = self._wake_w = -1
        self._closed = False
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # -- the interface the machine and the NIC use ------------------------------------------
    def attach(self, io: IoThread, lock: threading.Lock, deliver: Deliver) -> None:
        """Start carrying frames: read on ``io``, hand them to ``deliver`` under ``lock``."""
        if self._io is not None:
            raise RuntimeError(f"{self!r} is already attached")
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        self._io, self._lock, self._deliver = io, lock, deliver
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        io.add_reader(self._wake_r, self._guard(self._on_wake))
        io.add_periodic(self._guard(self._on_tick))
        self._attached()

    def send(self, frame: bytes) -> bool:
        """The NIC transmits ``frame``. Never blocks; False when it was dropped (link down,
        queue full, refused by the host)."""
        if self._closed or not frame:
            return False
        with self._tx_lock:
            if not self._link_ready():
                self.stats.tx_dropped += 1
                return False
            data = self._encode(frame)
            if self._txq and not self._flush_locked():
                if (len(self._txq) >= self.TX_QUEUE_FRAMES
                        or self._txq_bytes + len(data) > self.TX_QUEUE_BYTES):
                    self.stats.tx_dropped += 1
                    self._warn_once("txq", "%s: the host side is not taking frames fast enough; "
                                    "dropping frames (transmit queue full)", self.description)
                    return False
                self._queue(data)
            else:
                try:
                    n = self._write_some(data)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    self.stats.tx_errors += 1
                    self._tx_failed(exc)
                    return False
                if n < len(data):
                    # a stream's partial write must finish before anything else goes out
                    self._queue(memoryview(data)[n:])
            self.stats.tx_frames += 1
            self.stats.tx_bytes += len(frame)
            return True

    def rx_ready(self) -> None:
        """The device has room again (the guest gave it receive buffers): retry held frames
        now instead of at the next periodic tick. Cheap when nothing is held; any thread."""
        if self._held and self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # a wake-up is already pending, or we are closing

    @property
    def link_up(self) -> bool:
        """Whether frames sent now can reach a peer (a socket with nobody connected: no)."""
        return not self._closed and self._link_ready()

    def close(self) -> None:
        """Release the host resources; frames still queued are dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for fd in list(self._readers):
            self._unwatch(fd)
        if self._io is not None and self._wake_r >= 0:
            self._io.remove_reader(self._wake_r)
        with self._tx_lock:
            self._clear_txq()
        self._close_resources()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------------
    def _attached(self) -> None:
        """Register descriptors with ``_watch``; called once from ``attach``."""

    def _link_ready(self) -> bool:
        """False while there is nobody to send to (frames are then dropped, not queued)."""
        return True

    def _encode(self, frame: bytes) -> bytes:
        """The bytes that carry one frame (a stream adds its length prefix)."""
        return frame

    def _write_some(self, data: bytes | memoryview) -> int:
        """Write without blocking; return the bytes taken, raise BlockingIOError for none."""
        raise NotImplementedError

    def _tx_failed(self, exc: OSError) -> None:
        """The host refused a write for a reason other than 'not now' (tx_lock held)."""
        self._warn_once(f"tx-{exc.errno}", "%s: dropping a frame the host refused: %s",
                        self.description, exc.strerror or exc)

    def _service(self) -> None:
        """Housekeeping on the I/O thread, after each wake-up and tick (e.g. a dead peer)."""

    def _close_resources(self) -> None:
        """Close the descriptors the subclass opened."""

    def _watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Have ``callback`` run on the I/O thread whenever ``fd`` is readable (while not paused)."""
        guarded = self._guard(callback)
        self._readers[fd] = guarded
        if self._io is not None and not self._paused:
            self._io.add_reader(fd, guarded)

    def _unwatch(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None and self._io is not None:
            self._io.remove_reader(fd)

    def _receive(self, frame: bytes) -> bool:
        """A frame arrived from the host side (I/O thread). False when it had to be held back:
        the caller stops reading until the device has room again."""
        if not frame or len(frame) > MAX_FRAME:
            self.stats.rx_dropped += 1
            return True
        if self._held:
            self._held.append(frame)
            return False
        if self._offer(frame):
            return True
        self._held.append(frame)
        self.stats.rx_held += 1
        self._pause()
        return False

    def _reading_allowed(self) -> bool:
        return not self._held and not self._closed

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # -- internals ---------------------------------------------------------------------------
    def _offer(self, frame: bytes) -> bool:
        assert self._lock is not None and self._deliver is not None
        with self._lock:
            ok = self._deliver(frame)
        if ok:
            self.stats.rx_frames += 1
            self.stats.rx_bytes += len(frame)
        return bool(ok)

    def _pause(self) -> None:
        if not self._paused and self._io is not None:
            self._paused = True
            for fd in self._readers:
                self._io.remove_reader(fd)

    def _resume(self) -> None:
        if self._paused and self._io is not None and not self._closed:
            self._paused = False
            for fd, cb in self._readers.items():
                self._io.add_reader(fd, cb)

    def _retry_held(self) -> None:
        while self._held and not self._closed:
            if not self._offer(self._held[0]):
                return
            self._held.popleft()
        self._resume()

    def _queue(self, data: bytes | memoryview) -> None:
        self._txq.append(data)
        self._txq_bytes += len(data)

    def _clear_txq(self) -> None:
        """Drop everything queued (tx_lock held): the link went down or we are closing."""
        self._txq.clear()
        self._txq_bytes = 0

    def _flush_locked(self) -> bool:
        """Write queued data in order; True when the queue is empty (tx_lock held)."""
        while self._txq:
            data = self._txq[0]
            try:
                n = self._write_some(data)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._txq.popleft()
                self._txq_bytes -= len(data)
                self.stats.tx_errors += 1
                self._tx_failed(exc)
                continue
            self._txq_bytes -= n
            if n < len(data):
                self._txq[0] = memoryview(data)[n:]
                return False
            self._txq.popleft()
        return True

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass
        self._housekeeping()

    def _on_tick(self) -> None:
        self._housekeeping()

    def _housekeeping(self) -> None:
        if self._closed:
            return
        if self._held:
            self._retry_held()
        if self._txq:
            with self._tx_lock:
                self._flush_locked()
        self._service()

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Wrap an I/O-thread callback so that a failure is logged, not fatal to the thread."""

        def guarded() -> None:
            if self._closed:
                return
            try:
                fn()
            except Exception:
                log.exception("%s: error on the I/O thread", self.description)

        return guarded
