"""The host side of the serial console: the terminal (or pipes) on one side, the UART on the other.

Output is buffered and written in batches (DESIGN.md: a console that writes per byte makes a
guest's boot log crawl). Input runs on the I/O thread: it reads stdin, recognises QEMU's escape
(``Ctrl-A x`` quits, ``Ctrl-A Ctrl-A`` sends one Ctrl-A), and feeds the UART under the machine's
device lock, holding back when the UART's receive FIFO is full instead of dropping bytes.
"""

from __future__ import annotations

import os
import selectors
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import BinaryIO

CTRL_A = 0x01


class ConsoleOutput:
    """Collects UART output and writes it to a file descriptor in batches."""

    def __init__(self, fd: int | None = None, sink: Callable[[bytes], None] | None = None,
                 batch: int = 4096) -> None:
        self.fd = fd
        self.sink = sink
        self.batch = batch
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.captured = bytearray() if sink is None and fd is None else None

    def write(self, data: bytes) -> None:
        with self._lock:
            self._buf += data
            if len(self._buf) >= self.batch or b"\n" in data:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        if self.sink is not None:
            self.sink(data)
        if self.fd is not None:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
            except OSError:
                self.fd = None  # the reader went away (closed pipe): keep running quietly
        if self.captured is not None:
            self.captured += data


class ConsoleInput:
    """Reads a host file descriptor on the I/O thread and feeds the guest's UART."""

    def __init__(self, stream: BinaryIO | int, deliver: Callable[[bytes], int],
                 on_quit: Callable[[], None], escape: bool = True) -> None:
        self.fd = stream if isinstance(stream, int) else stream.fileno()
        self.deliver = deliver  # returns how many bytes the UART took
        self.on_quit = on_quit
        self.escape = escape
        self.pending = bytearray()
        self._escaped = False
        self.eof = False

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        for b in data:
            if self.escape and self._escaped:
                self._escaped = False
                if b in (ord("x"), ord("X")):
                    self.on_quit()
                    return
                if b == CTRL_A:
                    self.pending.append(CTRL_A)
                continue
            if self.escape and b == CTRL_A:
                self._escaped = True
                continue
            self.pending.append(b)
        self.push()

    def push(self) -> None:
        if self.pending:
            n = self.deliver(bytes(self.pending))
            del self.pending[:n]


class IoThread:
    """A selectors loop for backends: console input now, TAP and disk completions later."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.sel.register(self._r, selectors.EVENT_READ, None)
        self._stop = False
        self._periodic: list[Callable[[], None]] = []
        self.thread = threading.Thread(target=self._run, name="kvmpy-io", daemon=True)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.sel.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def add_periodic(self, callback: Callable[[], None]) -> None:
        """Called every few milliseconds: flushing console output, retrying held-back input."""
        self._periodic.append(callback)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        try:
            os.write(self._w, b"x")
        except OSError:
            pass
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=2)
        self.sel.close()
        os.close(self._r)
        os.close(self._w)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(timeout=0.02):
                if key.data is None:
                    try:
                        os.read(self._r, 64)
                    except OSError:
                        pass
                    continue
                key.data()
            for cb in self._periodic:
                cb()


class RawTerminal:
    """Puts a terminal in raw mode for the run and restores it afterwards, whatever happens."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list | None = None

    def __enter__(self) -> RawTerminal:
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            # fully raw, output included: guests send CR LF themselves, as a serial line does
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (ValueError, OSError):
        return False
