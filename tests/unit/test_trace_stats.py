"""Exit statistics (the --stats tables) and KVM's binary statistics file, parsed from a file laid
out exactly as the kernel lays it out, with the structs from <linux/kvm.h>."""

from __future__ import annotations

import os

import pytest

from kvmpy.events import HltExit, IoExit, MmioExit
from kvmpy.kvm import ffi, lib
from kvmpy.kvm_stats import KernelStats, StatsFile, StatsFormatError
from kvmpy.tracestats import ExitStats, render


def feed(stats):
    for _ in range(3):
        stats(IoExit(0, 0.0, 0x3F8, 1, True, 1, b"a", "serial"), 2e-6)
    stats(IoExit(0, 0.0, 0x3FD, 1, False, 1, b"`", "serial"), 4e-6)
    stats(IoExit(1, 0.0, 0x7F0, 1, True, 1, b"\0", ""), 1e-6)
    stats(MmioExit(0, 0.0, 0xD0000010, 4, False, 7, "probe"), 10e-6)
    stats(MmioExit(1, 0.0, 0xD0000FFC, 4, True, 7, "probe"), 20e-6)
    stats(MmioExit(0, 0.0, 0xFED00000, 4, False, 0, ""), 1e-6)
    stats(HltExit(0, 0.0), 0.0)


def test_counts_and_times_by_reason_device_port_page_and_vcpu():
    s = ExitStats()
    feed(s)
    assert s.total == 9
    assert s.counts_by_reason() == {"io": 5, "mmio": 3, "hlt": 1}
    io = s.by_reason()[0]
    assert io.label == "io" and io.total == pytest.approx(11e-6) and io.mean == pytest.approx(2.2e-6)
    dev = {r.label: (r.count, r.reads, r.writes) for r in s.by_device()}
    assert dev == {"serial": (4, 1, 3), "probe": (2, 1, 1), "(unowned)": (2, 1, 1)}
    ports = s.by_port()
    assert [(r.label, r.count, r.device) for r in ports] == [
        ("0x03f8", 3, "serial"), ("0x03fd", 1, "serial"), ("0x07f0", 1, "(unowned)")]
    pages = {r.label: (r.count, r.device) for r in s.by_mmio_page()}
    assert pages == {"0xd0000000": (2, "probe"), "0xfed00000": (1, "(unowned)")}
    assert {r.label: r.count for r in s.by_vcpu()} == {"vcpu0": 7, "vcpu1": 2}


def test_the_report_has_every_table():
    s = ExitStats()
    feed(s)
    text = render(s, wall=0.5, top=2)
    assert text.startswith("kvmpy trace: 9 exits to kvmpy in 0.500 s (18/s), 2 vCPU(s)")
    for title in ("exit reason", "device", "busiest ports", "busiest MMIO pages", "vCPU"):
        assert f"  {title}" in text
    assert "... and 1 more (1 exits)" in text  # --top 2 of three ports
    row = next(line for line in text.splitlines() if line.strip().startswith("serial"))
    assert row.split()[:6] == ["serial", "4", "44.4", "0.010", "2.50", "1"]


# --- KVM's binary statistics ---------------------------------------------------------------------
NAME_SIZE = 48  # as the kernel uses (KVM_STATS_NAME_SIZE)


def stats_blob(values: dict[str, tuple[int, int]], ident: str = "kvm-1/vcpu-0") -> bytes:
    """A stats file as the kernel lays it out: header, id, descriptors, data (api.rst)."""
    hdr_size = ffi.sizeof("struct kvm_stats_header")
    desc_size = ffi.sizeof("struct kvm_stats_desc") + NAME_SIZE
    id_off = hdr_size
    desc_off = id_off + NAME_SIZE
    data_off = desc_off + desc_size * len(values)
    hdr = ffi.new("struct kvm_stats_header *", {"name_size": NAME_SIZE, "num_desc": len(values),
                                               "id_offset": id_off, "desc_offset": desc_off,
                                               "data_offset": data_off})
    out = bytearray(ffi.buffer(hdr)) + ident.encode().ljust(NAME_SIZE, b"\0")
    data = bytearray()
    for name, (flags, value) in values.items():
        d = ffi.new("struct kvm_stats_desc *", {"flags": flags, "exponent": -9 if flags & 0x20 else 0,
                                              "size": 1, "offset": len(data)})
        out += bytes(ffi.buffer(d)) + name.encode().ljust(NAME_SIZE, b"\0")
        data += value.to_bytes(8, "little")
    return bytes(out + data)


def write_file(path, values) -> int:
    path.write_bytes(stats_blob(values))
    return os.open(path, os.O_RDONLY)


CUM = lib.KVM_STATS_TYPE_CUMULATIVE
PEAK = lib.KVM_STATS_TYPE_PEAK
SECONDS = lib.KVM_STATS_UNIT_SECONDS


def test_a_stats_file_is_parsed_from_its_own_header(tmp_path):
    fd = write_file(tmp_path / "s", {"exits": (CUM, 10), "halt_wait_ns": (CUM | SECONDS, 5000),
                                     "max_mmu_rmap_size": (PEAK, 7)})
    with StatsFile(fd) as f:
        assert f.id == "kvm-1/vcpu-0"
        assert [d.name for d in f.descriptors] == ["exits", "halt_wait_ns", "max_mmu_rmap_size"]
        assert f.read() == {"exits": (10,), "halt_wait_ns": (5000,), "max_mmu_rmap_size": (7,)}
        d = f.descriptors[1]
        assert d.unit == "seconds" and d.cumulative and d.scaled(5000) == pytest.approx(5e-6)
        assert f.descriptors[2].type == "peak"


def test_deltas_over_a_run_sum_files_and_keep_peaks(tmp_path):
    a, b = tmp_path / "vm", tmp_path / "vcpu"
    fa = write_file(a, {"exits": (CUM, 100), "max_mmu_rmap_size": (PEAK, 3)})
    fb = write_file(b, {"exits": (CUM, 50), "max_mmu_rmap_size": (PEAK, 5)})
    ks = KernelStats([StatsFile(fa), StatsFile(fb)])
    ks.start()
    a.write_bytes(stats_blob({"exits": (CUM, 130), "max_mmu_rmap_size": (PEAK, 4)}))
    b.write_bytes(stats_blob({"exits": (CUM, 60), "max_mmu_rmap_size": (PEAK, 9)}))
    d = ks.delta()
    ks.close()
    assert d.get("exits") == 40  # (130 - 100) + (60 - 50)
    assert d.get("max_mmu_rmap_size") == 9


def test_a_truncated_stats_file_is_refused(tmp_path):
    blob = stats_blob({"exits": (CUM, 1)})
    p = tmp_path / "s"
    p.write_bytes(blob[:-4])
    fd = os.open(p, os.O_RDONLY)
    with StatsFile(fd) as f, pytest.raises(StatsFormatError):
        f.read()
    p.write_bytes(blob[:10])
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(StatsFormatError):
            StatsFile(fd, owns=False)
    finally:
        os.close(fd)
