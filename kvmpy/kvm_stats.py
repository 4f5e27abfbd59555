"""KVM's binary statistics (``KVM_GET_STATS_FD``): what the kernel counted, exits it handled
itself included, so ``kvmpy trace --stats`` shows the whole picture and not just our exits.

The file is read as Documentation/virt/kvm/api.rst ("KVM_GET_STATS_FD") lays it out: a
``struct kvm_stats_header`` at offset 0 gives the id string (``name_size`` bytes at
``id_offset``), ``num_desc`` descriptors at ``desc_offset``, each a ``struct kvm_stats_desc``
followed by its ``name_size``-byte name, and the data block at ``data_offset``, where each
descriptor's ``size`` u64 values start ``offset`` bytes in. The header and descriptors never
change for an fd; only the data is re-read (``pread``), so a snapshot is one system call. Every
size and field offset comes from the cffi module compiled against <linux/kvm.h>.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass

from .kvm import ffi, lib

_HEADER_SIZE = ffi.sizeof("struct kvm_stats_header")
_DESC_SIZE = ffi.sizeof("struct kvm_stats_desc")

TYPES = {
    lib.KVM_STATS_TYPE_CUMULATIVE: "cumulative",
    lib.KVM_STATS_TYPE_INSTANT: "instant",
    lib.KVM_STATS_TYPE_PEAK: "peak",
    lib.KVM_STATS_TYPE_LINEAR_HIST: "linear_hist",
    lib.KVM_STATS_TYPE_LOG_HIST: "log_hist",
}
UNITS = {
    lib.KVM_STATS_UNIT_NONE: "",
    lib.KVM_STATS_UNIT_BYTES: "bytes",
    lib.KVM_STATS_UNIT_SECONDS: "seconds",
    lib.KVM_STATS_UNIT_CYCLES: "cycles",
}


class StatsFormatError(ValueError):
    """The stats file does not describe itself consistently (a truncated or foreign file)."""


@dataclass(frozen=True)
class StatDesc:
    """One statistic as its descriptor describes it."""

    name: str
    flags: int
    exponent: int
    size: int  # number of u64 values (1, or the buckets of a histogram)
    offset: int  # into the data block
    bucket_size: int

    @property
    def type(self) -> str:
        t = self.flags & lib.KVM_STATS_TYPE_MASK
        return TYPES.get(t, f"type{t}")

    @property
    def unit(self) -> str:
        u = self.flags & lib.KVM_STATS_UNIT_MASK
        return UNITS.get(u, f"unit{u >> 4}")

    @property
    def base(self) -> int:
        return 2 if (self.flags & lib.KVM_STATS_BASE_MASK) == lib.KVM_STATS_BASE_POW2 else 10

    @property
    def cumulative(self) -> bool:
        return (self.flags & lib.KVM_STATS_TYPE_MASK) == lib.KVM_STATS_TYPE_CUMULATIVE

    def scaled(self, value: int) -> float:
        """The value in the unit's base unit (e.g. seconds for a ``_ns`` statistic)."""
        return value * float(self.base) ** self.exponent


def _read(fd: int, length: int, offset: int, what: str) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StatsFormatError(f"the stats file ends inside its {what} ({len(data)} of {length} bytes "
                               f"at offset {offset})")
    return data


class StatsFile:
    """One KVM statistics file descriptor (a VM's or a vCPU's)."""

    def __init__(self, fd: int, owns: bool = True) -> None:
        self.fd = fd
        self._owns = owns
        hdr = ffi.new("struct kvm_stats_header *")
        ffi.memmove(hdr, _read(fd, _HEADER_SIZE, 0, "header"), _HEADER_SIZE)
        self.flags = hdr.flags
        name_size = hdr.name_size
        self.id = _read(fd, name_size, hdr.id_offset, "id").split(b"\0", 1)[0].decode(errors="replace")
        stride = _DESC_SIZE + name_size
        raw = _read(fd, stride * hdr.num_desc, hdr.desc_offset, "descriptors")
        buf = ffi.from_buffer(raw)
        descs: list[StatDesc] = []
        for i in range(hdr.num_desc):
            d = ffi.cast("struct kvm_stats_desc *", buf + i * stride)
            name = ffi.string(ffi.cast("char *", d.name), name_size).decode(errors="replace")
            descs.append(StatDesc(name, d.flags, d.exponent, d.size, d.offset, d.bucket_size))
        self.descriptors = descs
        self.data_offset = hdr.data_offset
        self._data_len = max((d.offset + 8 * d.size for d in descs), default=0)
        if self._data_len % 8 or any(d.offset % 8 for d in descs):
            raise StatsFormatError("a statistic's data is not aligned to 8 bytes")

    def read(self) -> dict[str, tuple[int, ...]]:
        """Every statistic's current values (one for a counter, the buckets of a histogram)."""
        data = array("Q")
        data.frombytes(_read(self.fd, self._data_len, self.data_offset, "data"))
        return {d.name: tuple(data[d.offset // 8 : d.offset // 8 + d.size]) for d in self.descriptors}

    def close(self) -> None:
        if self._owns and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> StatsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StatsDelta:
    """What changed between two snapshots of several files (a VM's and its vCPUs'), summed by
    name: the counters' increase, the other kinds' final value."""

    values: dict[str, float]
    descs: dict[str, StatDesc]

    def get(self, name: str, default: float = 0) -> float:
        return self.values.get(name, default)


class KernelStats:
    """Snapshots of a VM's and its vCPUs' statistics, taken at the start and end of a run."""

    def __init__(self, files: list[StatsFile]) -> None:
        self.files = files
        self._start: list[dict[str, tuple[int, ...]]] = []

    @classmethod
    def open(cls, vm, vcpus) -> KernelStats:  # vm: kvm.Vm, vcpus: list[kvm.VcpuFd]
        files = [StatsFile(vm.stats_fd())] + [StatsFile(v.stats_fd()) for v in vcpus]
        return cls(files)

    def start(self) -> None:
        self._start = [f.read() for f in self.files]

    def delta(self) -> StatsDelta:
        values: dict[str, float] = {}
        descs: dict[str, StatDesc] = {}
        for f, before in zip(self.files, self._start or [{}] * len(self.files), strict=True):
            now = f.read()
            for d in f.descriptors:
                if d.size != 1:
                    continue  # histograms: not summarised here
                v = now[d.name][0]
                if d.cumulative:
                    v -= before.get(d.name, (0,))[0]
                if d.type == "peak":
                    values[d.name] = max(values.get(d.name, 0), v)
                else:
                    values[d.name] = values.get(d.name, 0) + v
                descs[d.name] = d
        return StatsDelta(values, descs)

    def close(self) -> None:
        for f in self.files:
            f.close()
