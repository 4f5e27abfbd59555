"""Trace writers: JSON lines (``--events``), Chrome trace-event JSON (``--timeline``), and the
plain text lines ``kvmpy trace`` prints when no other output is asked for.

Each writer is a listener, ``fn(event, handling_time)``. Times in the files are relative to an
``origin`` (``time.perf_counter()`` when tracing started), so they read as "seconds into the
run". Port and MMIO exits, which are nearly all of a trace, are formatted by hand with
f-strings: ``json.dumps`` of a dict per exit would cost more than the exit itself; the rare
exits go through ``json.dumps``. The unit tests parse every line back with ``json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from .errors import KvmpyError, MissingFileError
from .events import ExitEvent, IoExit, MmioExit

BUFFER = 1 << 16


class TraceOutputError(KvmpyError):
    """A trace file could not be written (no space, a closed pipe)."""


def _open(path: str | Path, what: str) -> IO[str]:
    try:
        return open(path, "w", buffering=BUFFER, encoding="utf-8")
    except OSError as e:
        raise MissingFileError(f"cannot write the {what} to {path}: {e.strerror}") from None


def event_fields(ev: ExitEvent, handling: float, origin: float) -> dict[str, Any]:
    """The fields of one exit as a ``--events`` line holds them (the reference the fast
    formatter below must agree with)."""
    d: dict[str, Any] = {"time": round(ev.time - origin, 6), "vcpu": ev.vcpu, "reason": ev.reason}
    if isinstance(ev, IoExit):
        d.update(port=ev.port, size=ev.size, direction=ev.direction, value=ev.value, count=ev.count)
        if ev.count != 1:
            d["data"] = ev.data.hex() if ev.data is not None else None
        d["device"] = ev.device or None
    elif isinstance(ev, MmioExit):
        d.update(addr=ev.addr, size=ev.size, direction=ev.direction, value=ev.value, device=ev.device or None)
    else:
        for name in getattr(ev, "__dataclass_fields__", {}):
            if name not in ("vcpu", "time", "reason"):
                v = getattr(ev, name)
                d[name] = v.hex() if isinstance(v, bytes) else v
    d["handling_us"] = round(handling * 1e6, 3)
    if isinstance(ev, IoExit | MmioExit) and ev.insn:
        d["insn"] = ev.insn
    return d


class _Names:
    """JSON strings for device names, escaped once each (there are a handful)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {"": "null"}

    def __getitem__(self, name: str) -> str:
        s = self._cache.get(name)
        if s is None:
            s = self._cache[name] = json.dumps(name)
        return s


class JsonLinesWriter:
    """``--events``: one JSON object per exit, one per line."""

    def __init__(self, path: str | Path, origin: float) -> None:
        self.path = str(path)
        self.origin = origin
        self.f = _open(path, "events")
        self._names = _Names()
        self.count = 0

    def __call__(self, ev: ExitEvent, handling: float) -> None:
        t = ev.time - self.origin
        h = handling * 1e6
        if type(ev) is IoExit and ev.count == 1 and not ev.insn:
            v = ev.value
            line = (f'{{"time":{t:.6f},"vcpu":{ev.vcpu},"reason":"io","port":{ev.port},"size":{ev.size},'
                    f'"direction":"{"out" if ev.is_write else "in"}","value":{"null" if v is None else v},'
                    f'"count":1,"device":{self._names[ev.device]},"handling_us":{h:.3f}}}\n')
        elif type(ev) is MmioExit and not ev.insn:
            v = ev.value
            d = "write" if ev.is_write else "read"
            line = (f'{{"time":{t:.6f},"vcpu":{ev.vcpu},"reason":"mmio","addr":{ev.addr},"size":{ev.size},'
                    f'"direction":"{d}","value":{"null" if v is None else v},'
                    f'"device":{self._names[ev.device]},"handling_us":{h:.3f}}}\n')
        else:
            line = json.dumps(event_fields(ev, handling, self.origin), separators=(",", ":")) + "\n"
        try:
            self.f.write(line)
        except OSError as e:
            raise TraceOutputError(f"cannot write trace events to {self.path}: {e.strerror}") from None
        self.count += 1

    def close(self) -> None:
        try:
            self.f.close()
        except OSError as e:
            raise TraceOutputError(f"cannot write trace events to {self.path}: {e.strerror}") from None


class ChromeTraceWriter:
    """``--timeline``: the Chrome trace-event format ("JSON object format"), which Perfetto
    (ui.perfetto.dev) and chrome://tracing open. Each exit is a complete event ("ph": "X") as
    long as the VMM took to handle it, on one track per vCPU (pid 1, tid = vCPU index); exits
    with nothing to handle (shutdown, hlt) are instant events."""

    PID = 1

    def __init__(self, path: str | Path, origin: float, process_name: str = "kvmpy guest") -> None:
        self.path = str(path)
        self.origin = origin
        self.process_name = process_name
        self.f = _open(path, "timeline")
        self._names = _Names()
        self._vcpus: set[int] = set()
        self._sep = ""
        self._write('{"displayTimeUnit":"ns","traceEvents":[\n')

    def _write(self, text: str) -> None:
        try:
            self.f.write(text)
        except OSError as e:
            raise TraceOutputError(f"cannot write the timeline to {self.path}: {e.strerror}") from None

    def __call__(self, ev: ExitEvent, handling: float) -> None:
        if ev.vcpu not in self._vcpus:
            self._vcpus.add(ev.vcpu)
        ts = (ev.time - self.origin) * 1e6
        if isinstance(ev, IoExit):
            name = f"{ev.direction} {ev.port:#x}"
            args = (f'"port":"{ev.port:#x}","size":{ev.size},"count":{ev.count},'
                    f'"value":{"null" if ev.value is None else ev.value}')
        elif isinstance(ev, MmioExit):
            name = f"mmio {ev.direction} {ev.addr:#x}"
            args = (f'"addr":"{ev.addr:#x}","size":{ev.size},'
                    f'"value":{"null" if ev.value is None else ev.value}')
        else:
            fields = event_fields(ev, handling, self.origin)
            args = json.dumps({k: v for k, v in fields.items() if k not in ("time", "vcpu")})[1:-1]
            self._write(f'{self._sep}{{"name":"{ev.reason}","cat":"{ev.reason}","ph":"i","s":"t",'
                        f'"ts":{ts:.3f},"pid":{self.PID},"tid":{ev.vcpu},"args":{{{args}}}}}')
            self._sep = ",\n"
            return
        dev = self._names[ev.device]
        if ev.insn:
            args += f',"insn":{json.dumps(ev.insn)}'
        self._write(f'{self._sep}{{"name":"{name}","cat":"{ev.reason}","ph":"X","ts":{ts:.3f},'
                    f'"dur":{handling * 1e6:.3f},"pid":{self.PID},"tid":{ev.vcpu},'
                    f'"args":{{"device":{dev},{args}}}}}')
        self._sep = ",\n"

    def close(self) -> None:
        meta = [{"name": "process_name", "ph": "M", "pid": self.PID, "args": {"name": self.process_name}}]
        for v in sorted(self._vcpus):
            meta.append({"name": "thread_name", "ph": "M", "pid": self.PID, "tid": v,
                         "args": {"name": f"vCPU {v}"}})
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": self.PID, "tid": v,
                         "args": {"sort_index": v}})
        for m in meta:
            self._write(self._sep + json.dumps(m))
            self._sep = ",\n"
        self._write("\n]}\n")
        try:
            self.f.close()
        except OSError as e:
            raise TraceOutputError(f"cannot write the timeline to {self.path}: {e.strerror}") from None


def format_text(ev: ExitEvent, handling: float, origin: float) -> str:
    """One human-readable line per exit (``kvmpy trace`` with no other output asked for)."""
    t = ev.time - origin
    if isinstance(ev, IoExit):
        if ev.count == 1:
            what = f"{ev.direction:<3} port {ev.port:#06x} size {ev.size} value {ev.value:#x}" \
                if ev.value is not None else f"{ev.direction:<3} port {ev.port:#06x} size {ev.size}"
        else:
            what = f"{ev.direction:<3} port {ev.port:#06x} size {ev.size} x{ev.count}"
        dev = ev.device or "(unowned)"
    elif isinstance(ev, MmioExit):
        what = f"{ev.direction:<5} {ev.addr:#010x} size {ev.size}"
        if ev.value is not None:
            what += f" value {ev.value:#x}"
        dev = ev.device or "(unowned)"
    else:
        fields = event_fields(ev, handling, origin)
        what = " ".join(f"{k}={v}" for k, v in fields.items()
                        if k not in ("time", "vcpu", "reason", "handling_us"))
        dev = ""
    line = f"{t:12.6f} vcpu{ev.vcpu} {ev.reason:<6} {what:<44} {dev:<12} {handling * 1e6:8.2f} µs"
    if isinstance(ev, IoExit | MmioExit) and ev.insn:
        line += f"  {ev.insn}"
    return line.rstrip()


class TextWriter:
    """Writes ``format_text`` lines to a stream (stderr: stdout carries the guest's console)."""

    def __init__(self, stream: IO[str], origin: float) -> None:
        self.stream = stream
        self.origin = origin

    def __call__(self, ev: ExitEvent, handling: float) -> None:
        self.stream.write(format_text(ev, handling, self.origin) + "\n")

    def close(self) -> None:
        self.stream.flush()
