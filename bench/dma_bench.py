#!/usr/bin/env python3
"""The cost of DMA translation: our DMA program with and without a VT-d IOMMU, kvmpy and QEMU.

Run through make (`make bench-dma`, part of `make bench`), which builds the program first.

The guest is firmware/tests/dma_bench.c (build/firmware/dma_bench.elf), in two modes:
- edu: `count` copies RAM -> edu buffer -> RAM of `size` bytes (two DMAs each) with QEMU's edu
  device, every copy's stamp checked in its destination page, every page compared at the end;
- ide: `count` READ DMA commands of 64 KiB from the PIIX3 IDE primary master (a PRD entry per
  4 KiB page), every sector's magic and LBA checked after its command, the last buffer in full.
With `vtd=on` the program identity-maps its buffers with 4 KiB pages in VT-d second-level tables
for the device's requester-id and turns translation on, so every transfer is translated; with
`flush` it also invalidates the domain's IOTLB after every copy or command (what Linux's strict
mode does on unmap), so every transfer walks the tables again.

VMMs and machines:
- kvmpy: its direct-boot machine (`python3 -m kvmpy boot --kernel`), `--device edu` or
  `--drive file=IMG`, with and without `--iommu vtd`;
- QEMU (Debian's qemu-system-x86_64, `-accel kvm`): `-M q35` with and without
  `-device intel-iommu` (intel-iommu needs q35). q35's own disk controller is AHCI, so the IDE
  runs use `-device piix3-ide` on q35 (the same PIIX3 function as `-M pc`'s), and once more on
  `-M pc`'s built-in PIIX3 IDE without an IOMMU as a cross-check.

Every variant runs `count=N` and `count=2` (start-up, set-up and two transfers), --runs times,
alternating, after one unrecorded warm-up run of each VMM; every run is a fresh process whose
whole wall time is measured from outside. The marginal rate (N - 2) / (t_N - t_2) takes start-up
out (QEMU's SeaBIOS takes seconds on a PVM host). The time between the guest's `DMA_BENCH START`
and `DMA_BENCH END` lines (the loop as seen on the serial console) is a cross-check.
QEMU's edu runs each DMA 100 ms (virtual time) after its command (hw/misc/edu.c's dma_timer), so
its edu count is small and its edu rate is that timer's.

Then one traced kvmpy run per kvmpy variant and count (`kvmpy trace --stats --events`): exits to
kvmpy per transfer by device and register, and KVM's own counters per transfer.

Its Linux half, disk and network throughput under intel_iommu strict, lazy and passthrough, is
bench/linux_dma_bench.py (`make bench-dma-linux`, which `make bench-dma` runs first): it needs a
hardware-assisted host and writes the <!-- bench:dma-linux --> section, skipped there on a PVM one.

Writes the section between <!-- bench:dma:begin/end --> in docs/performance.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import struct
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from run_bench import (
    display,
    host_line,
    kvm_backend,
    qemu_version,
    read_trace,
    run_windowed,
    update_doc,
    utc_now,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
ELF = "build/firmware/dma_bench.elf"
BASELINE = 2  # transfers in the start-up run
OK_RC = 1  # debug-exit: the guest's 0 becomes (0 << 1) | 1 under kvmpy and QEMU alike
EDU_SIZE = 2048  # bytes per edu DMA (two per copy)
IDE_SIZE = 65536  # bytes per READ DMA
DISK_SECTORS = 32768  # 16 MiB: the reads cycle through it
DOC_DISK = "disk.img"  # the image's name in the report's commands
MEMORY = "64M"
# KVM_GET_STATS_FD counters `kvmpy trace --stats` prints, reported per transfer
KERNEL_COUNTERS = ("exits", "handled in the kernel", "mmio_exits", "insn_emulation")
# edu registers (QEMU docs/specs/edu.rst) and IDE ports, for the per-transfer breakdown
EDU_REGS = {0x80: "DMA_SRC", 0x88: "DMA_DST", 0x90: "DMA_COUNT", 0x98: "DMA_CMD", 0xA0: "DMA_ERRORS"}
IDE_PORTS = {0x1F2: "sector count", 0x1F3: "LBA low", 0x1F4: "LBA mid", 0x1F5: "LBA high",
             0x1F6: "device", 0x1F7: "command/status", 0x3F6: "alt status"}
BM_PORTS = {0: "command", 2: "status", 4: "PRD address"}


def write_disk(path: Path, sectors: int = DISK_SECTORS) -> None:
    """The pattern firmware/tests/dma_bench.c checks (tests/kvm/test_ide_program.py's): sector n =
    "KVMPYSEC", n as u64 little-endian, then bytes (n * 13 + j) & 0xff for j = 16..511."""
    bodies = [bytes((b + j) & 0xFF for j in range(16, 512)) for b in range(256)]
    with path.open("wb") as f:
        for lba in range(sectors):
            f.write(b"KVMPYSEC" + struct.pack("<Q", lba) + bodies[(lba * 13) & 0xFF])


# ---------------------------------------------------------------------------------------------
# variants


@dataclass
class Variant:
    """One (device, VMM, machine, translation) combination and how to run it."""
    device: str  # edu | ide
    vmm: str  # kvmpy | QEMU
    machine: str  # for the report
    translation: str  # none | vtd | vtd+flush | vtd+ir (kvmpy: interrupt remapping, split irqchip)
    count: int  # N for this variant (the baseline is BASELINE)
    base_argv: list[str]
    walls: dict[int, list[float]] = field(default_factory=dict)
    windows: dict[int, list[float]] = field(default_factory=dict)
    polls: dict[int, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.device} {self.vmm} {self.machine} {self.translation}"

    @property
    def size(self) -> int:
        return EDU_SIZE if self.device == "edu" else IDE_SIZE

    @property
    def bytes_per_transfer(self) -> int:
        """Bytes moved by DMA per transfer: an edu copy is two DMAs."""
        return 2 * self.size if self.device == "edu" else self.size

    def append(self, count: int) -> str:
        words = [f"mode={self.device}", f"count={count}", f"size={self.size}"]
        if self.translation != "none":
            words.append("vtd=on")
        if self.translation == "vtd+flush":
            words.append("flush")
        return " ".join(words)

    def argv(self, count: int) -> list[str]:
        return [*self.base_argv, "--append" if self.vmm == "kvmpy" else "-append", self.append(count)]

    @property
    def failed(self) -> bool:
        return len(self.failures) >= 2  # one failure is noted; a second stops this variant


def kvmpy_iommu(translation: str) -> list[str]:
    """The translation rows keep KVM's in-kernel irqchip (intremap=off), as QEMU's intel-iommu
    without interrupt remapping does, so they differ from "none" by DMA translation alone;
    vtd+ir is --iommu vtd as a user gets it (interrupt remapping on kvmpy's split irqchip)."""
    if translation == "none":
        return []
    return ["--iommu", "vtd" if translation == "vtd+ir" else "vtd,intremap=off"]


def kvmpy_base(python: str, elf: str, device: str, translation: str, disk: str,
               cmd: list[str] | None = None) -> list[str]:
    dev = ["--device", "edu"] if device == "edu" else ["--drive", f"file={disk}"]
    return [python, "-m", "kvmpy", *(cmd or ["boot"]), "--kernel", elf, "--memory", MEMORY, *dev,
            *kvmpy_iommu(translation)]


def qemu_base(qemu: str, elf: str, device: str, machine: str, iommu: bool, disk: str) -> list[str]:
    argv = [qemu, "-accel", "kvm", "-M", machine, "-m", MEMORY, "-display", "none", "-nodefaults",
            "-no-user-config", "-no-reboot", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", elf]
    if iommu:  # before the devices it translates for
        argv += ["-device", "intel-iommu"]
    if device == "edu":
        argv += ["-device", "edu"]
    elif machine == "q35":
        argv += ["-device", "piix3-ide,id=pide", "-drive", f"if=none,id=d0,file={disk},format=raw",
                 "-device", "ide-hd,drive=d0,bus=pide.0"]
    else:
        argv += ["-drive", f"file={disk},format=raw,if=ide,index=0"]
    return argv


def variants(args: argparse.Namespace, disk: str) -> list[Variant]:
    py, q, elf = args.python, args.qemu, args.elf
    out: list[Variant] = []
    for device, n_kvmpy, n_qemu in (("edu", args.edu_count, args.qemu_edu_count),
                                    ("ide", args.ide_count, args.ide_count)):
        if device not in args.devices:
            continue
        for tr in ("none", "vtd", "vtd+flush", "vtd+ir"):
            out.append(Variant(device, "kvmpy", "direct", tr, n_kvmpy,
                               kvmpy_base(py, elf, device, tr, disk)))
        # QEMU's edu waits 100 ms per DMA whatever the IOMMU does: no flush variant for it
        for tr in ("none", "vtd") if device == "edu" else ("none", "vtd", "vtd+flush"):
            out.append(Variant(device, "QEMU", "q35", tr, n_qemu,
                               qemu_base(q, elf, device, "q35", tr != "none", disk)))
        if device == "ide" and not args.no_qemu_pc:
            out.append(Variant(device, "QEMU", "pc", "none", n_qemu,
                               qemu_base(q, elf, device, "pc", False, disk)))
    return out


# ---------------------------------------------------------------------------------------------
# one run


@dataclass
class Outcome:
    wall: float | None = None
    window: float | None = None  # DMA_BENCH START line to DMA_BENCH END line
    output: str = ""
    rc: int | None = None
    timed_out: bool = False

    def failure(self, v: Variant, count: int) -> str | None:
        ok = re.search(r"DMA_BENCH OK mode=(\w+) count=(\d+) size=(\d+) bytes=\d+ vtd=(\w+) flush=(\d) "
                       r"polls=(\d+)", self.output)
        vtd = "off" if v.translation == "none" else "on"
        flush = "1" if v.translation == "vtd+flush" else "0"
        if self.timed_out:
            why = f"no exit within {self.wall:.0f} s" if self.wall else "timed out"
        elif self.rc is None:
            why = self.output.strip() or "could not start"
        elif self.rc != OK_RC or not ok:
            why = f"exit status {self.rc}, no DMA_BENCH OK"
        elif ok.groups()[:5] != (v.device, str(count), str(v.size), vtd, flush):
            why = (f"the program ran {ok.group(0)!r}, not mode={v.device} count={count} vtd={vtd} "
                   f"flush={flush}")
        else:
            return None
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        fails = [ln for ln in lines if ln.startswith("FAIL")]
        return f"{why}; last line: {(fails or lines or ['(no output)'])[-1][:200]}"

    def polls(self) -> int | None:
        m = re.search(r"DMA_BENCH OK .* polls=(\d+)", self.output)
        return int(m.group(1)) if m else None


def run_guest(argv: list[str], timeout: float) -> Outcome:
    """Run argv from the repository root, timestamping its START and END lines as they come."""
    r = run_windowed(argv, timeout, b"DMA_BENCH START", b"DMA_BENCH END")
    return Outcome(wall=r.wall, window=r.window, output=r.output, rc=r.rc, timed_out=r.timed_out)


# ---------------------------------------------------------------------------------------------
# measuring


def measure(vs: list[Variant], runs: int, timeout: float) -> None:
    jobs = [(v, n) for v in vs for n in (BASELINE, v.count)]
    for v in vs:
        v.walls = {BASELINE: [], v.count: []}
        v.windows = {BASELINE: [], v.count: []}
        v.polls = {BASELINE: [], v.count: []}
    print("warm-up (one run of each VMM, not recorded)", flush=True)
    for vmm in ("kvmpy", "QEMU"):
        v = next((x for x in vs if x.vmm == vmm), None)
        if v is not None:
            why = run_guest(v.argv(BASELINE), timeout).failure(v, BASELINE)
            if why:
                print(f"  {v.name}: {why}", flush=True)
    for i in range(runs):
        k = (i * len(jobs)) // max(runs, 1)  # rotate the order from round to round
        for v, n in jobs[k:] + jobs[:k]:
            if v.failed:
                continue
            out = run_guest(v.argv(n), timeout)
            why = out.failure(v, n)
            if why:
                v.failures.append(f"run {i + 1}, count={n}: {why}")
                print(f"  run {i + 1}: {v.name} count={n} FAILED: {why}", flush=True)
                continue
            assert out.wall is not None
            v.walls[n].append(out.wall)
            if out.window is not None:
                v.windows[n].append(out.window)
            p = out.polls()
            if p is not None:
                v.polls[n].append(p)
            win = f"{out.window:6.3f} s" if out.window is not None else "   —"
            print(f"  run {i + 1}: {v.name:26s} count={n:<5d} {out.wall:7.3f} s (loop {win})", flush=True)


@dataclass
class Rates:
    t_n: float
    t_0: float
    lo: float
    hi: float
    runs: int
    rate: float  # marginal transfers per second
    window: float | None  # median START->END at count N
    window_rate: float | None  # transfers per second in that window


def rates(v: Variant) -> Rates | None:
    s, b = v.walls.get(v.count, []), v.walls.get(BASELINE, [])
    if not s or not b:
        return None
    t_n, t_0 = statistics.median(s), statistics.median(b)
    dt = t_n - t_0
    win = statistics.median(v.windows[v.count]) if v.windows.get(v.count) else None
    return Rates(t_n, t_0, min(s), max(s), len(s), (v.count - BASELINE) / dt if dt > 0 else float("nan"),
                 win, v.count / win if win else None)


# ---------------------------------------------------------------------------------------------
# exits per transfer (kvmpy's tracer)


@dataclass
class TraceCounts:
    count: Counter[str]
    handler_us: Counter[str]
    kernel: dict[str, int]

    def exits(self) -> int:
        return sum(n for k, n in self.count.items() if not k.startswith("IOMMU"))


def exit_key(ev: dict) -> str:
    if ev.get("reason") == "iommu":
        return f"IOMMU event {ev.get('event', '?')}"
    dev = ev.get("device") or f"({ev.get('reason', '?')})"
    rw = {"in": "read", "read": "read", "out": "write", "write": "write"}.get(ev.get("direction", ""), "")
    if dev == "edu.mmio" and "addr" in ev:
        off = ev["addr"] & 0xFFFFF  # BAR0 is 1 MiB, naturally aligned
        return f"edu {EDU_REGS.get(off, f'0x{off:02x}')} {rw}"
    if dev == "vt-d" and "addr" in ev:
        return f"vt-d 0x{ev['addr'] & 0xFFF:03x} {rw}"
    if dev.startswith("ide") and "port" in ev:
        port = ev["port"]
        name = IDE_PORTS.get(port) or BM_PORTS.get(port & 7, f"0x{port:x}")
        return f"{'bus master' if dev == 'ide.bus-master' else 'ATA'} {name} {rw}"
    return f"{dev} {rw}".strip()


def parse_trace(events: Path, stats: str) -> TraceCounts:
    return TraceCounts(*read_trace(events, stats, exit_key, KERNEL_COUNTERS))


def trace_argv(v: Variant, count: int, events: Path, disk: str, python: str, elf: str) -> list[str]:
    base = kvmpy_base(python, elf, v.device, v.translation, disk,
                      cmd=["trace", "--stats", "--events", str(events)])
    return [*base, "--append", v.append(count)]


def trace_table(vs: list[Variant], disk: str, args: argparse.Namespace
                ) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Per-transfer exits table for the kvmpy variants; also {variant name: (exits, handler µs) per
    transfer}."""
    kv = [v for v in vs if v.vmm == "kvmpy" and not v.failed]
    print("[trace] kvmpy trace --stats --events", flush=True)
    per: dict[str, tuple[TraceCounts, TraceCounts]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kvmpy-dmabench-") as tmp:
        for v in kv:
            got = []
            for n in (BASELINE, v.count):
                events = Path(tmp) / f"{v.device}-{v.translation}-{n}.jsonl"
                out = run_guest(trace_argv(v, n, events, disk, args.python, args.elf), args.timeout)
                why = out.failure(v, n)
                if why or not events.exists():
                    notes.append(f"traced run {v.name} count={n} failed: {why}")
                    break
                got.append(parse_trace(events, out.output))
            if len(got) == 2:
                per[v.name] = (got[0], got[1])
    if not per:
        return [f"No traced run succeeded. {' '.join(notes)}"], {}
    cols = [v for v in kv if v.name in per]

    def delta(v: Variant, get) -> float:
        b, t = per[v.name]
        return (get(t) - get(b)) / (v.count - BASELINE)

    keys: list[str] = []
    for v in cols:
        b, t = per[v.name]
        for k, _ in t.count.most_common():
            if k not in keys and abs((t.count[k] - b.count[k]) / (v.count - BASELINE)) >= 0.05:
                keys.append(k)
    head = [f"{v.device} {v.translation}" for v in cols]
    lines = ["| per transfer (edu: one copy, two DMAs; ide: one 64 KiB READ DMA) | " + " | ".join(head)
             + " |", "|---|" + "---|" * len(cols)]

    def row(label: str, cells: list[float], fmt: str = "{:,.2f}") -> str:
        return f"| {label} | " + " | ".join(fmt.format(c) for c in cells) + " |"

    lines.append(row("**exits to kvmpy**", [delta(v, TraceCounts.exits) for v in cols]))
    lines += [row(f"  {k}", [delta(v, lambda t, k=k: t.count[k]) for v in cols])
              for k in keys if not k.startswith("IOMMU")]

    def handler(v: Variant, k: str) -> float:
        t = per[v.name][1]
        return delta(v, lambda x, k=k: x.count[k]) * (t.handler_us[k] / t.count[k] if t.count[k] else 0.0)

    handler_us = {v.name: sum(handler(v, k) for k in keys if not k.startswith("IOMMU")) for v in cols}
    lines.append(row("**µs in kvmpy's exit handlers**", [handler_us[v.name] for v in cols]))
    lines += [row(k, [delta(v, lambda t, k=k: t.count[k]) for v in cols])
              for k in keys if k.startswith("IOMMU")]
    names = {"exits": "KVM: every VM exit", "handled in the kernel": "KVM: exits handled in the kernel",
             "insn_emulation": "KVM: instructions its emulator ran"}
    for k in KERNEL_COUNTERS:
        if all(k in per[v.name][0].kernel and k in per[v.name][1].kernel for v in cols):
            lines.append(row(names.get(k, f"KVM: {k}"),
                             [delta(v, lambda t, k=k: t.kernel.get(k, 0)) for v in cols]))
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines, {v.name: (delta(v, TraceCounts.exits), handler_us[v.name]) for v in cols}


# ---------------------------------------------------------------------------------------------
# the report


def fmt_mb(bps: float | None) -> str:
    if bps is None or bps != bps:
        return "—"
    return f"{bps / 1e6:,.2f} MB/s" if bps >= 1e5 else f"{bps / 1e3:,.1f} kB/s"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "—"
    return f"{a / b:.2f}×"


def report(args: argparse.Namespace, host: str, vs: list[Variant], trace: list[str],
           traced: dict[str, tuple[float, float]]) -> str:
    res = {v.name: rates(v) for v in vs}

    def find(device: str, vmm: str, machine: str, tr: str) -> Variant | None:
        want = (device, vmm, machine, tr)
        return next((v for v in vs if (v.device, v.vmm, v.machine, v.translation) == want), None)

    def rate_of(v: Variant | None, window: bool = False) -> float | None:
        r = res.get(v.name) if v else None
        if r is None:
            return None
        return r.window_rate if window else r.rate

    lines = [
        "## DMA translation: edu and IDE with and without VT-d",
        "",
        f"Written by `make bench-dma` (bench/dma_bench.py) on {utc_now()}. Host: {host}. "
        f"QEMU: {qemu_version(args.qemu)}.",
        "",
        f"Our DMA program (`{args.elf}`, firmware/tests/dma_bench.c) under kvmpy and QEMU, each with "
        "and without an Intel VT-d IOMMU. **edu**: one transfer = one copy RAM → edu buffer → RAM, "
        f"two DMAs of {EDU_SIZE} bytes through a ring of 64 source and 64 destination pages, every copy's "
        "stamp checked in its destination page and every page compared at the end. **ide**: one transfer "
        f"= one READ DMA of {IDE_SIZE // 1024} KiB from the PIIX3 IDE primary master (a PRD entry per 4 KiB "
        f"page; sequential LBAs over a {DISK_SECTORS * 512 >> 20} MiB patterned image), every sector's "
        "magic and LBA checked after its command and the last buffer in full. **vtd**: the program "
        "builds root, context and second-level tables identity-mapping its buffers with 4 KiB pages "
        "for the device and enables translation, so every transfer is translated (the IOTLB stays warm); "
        "**vtd+flush**: also a register-based domain-selective IOTLB invalidation after every transfer "
        "(as Linux's strict mode invalidates on unmap), so every transfer walks the tables again. "
        "kvmpy's vtd and vtd+flush rows run `--iommu vtd,intremap=off`: KVM's in-kernel irqchip, as in "
        "the none row and as QEMU's intel-iommu without interrupt remapping, so they differ from none by "
        "DMA translation alone; **vtd+ir** is plain `--iommu vtd` (interrupt remapping on, so kvmpy's "
        "split irqchip: its own PICs, IOAPIC and PIT) with translation as in vtd. Every "
        "run must end in `DMA_BENCH OK` with the translation it was asked for.",
        "",
        "Machines: kvmpy's direct-boot machine (no firmware; with a PCI device asked for it has the "
        "i440FX host bridge, PIIX3 IDE and the device; `--iommu vtd` adds its VT-d unit and ACPI DMAR); QEMU "
        "`-M q35` with and without `-device intel-iommu` (QEMU 7.2's defaults: 39-bit, caching-mode off, "
        "no interrupt remapping with the in-kernel irqchip). QEMU's q35 disk controller is AHCI, so its "
        "IDE runs add `-device piix3-ide` (the PIIX3 IDE function of `-M pc`) to q35; the `pc` row is "
        "QEMU's own `-M pc` IDE without an IOMMU (intel-iommu needs q35), a cross-check of that "
        "arrangement.",
        "",
        f"Each variant runs count=N and count={BASELINE} (start-up, set-up, two transfers), {args.runs} runs "
        "each, alternating, after a warm-up run of each VMM; walls are whole-process times measured from "
        f"outside, medians. Marginal rates are (N − {BASELINE}) / (t<sub>N</sub> − t<sub>{BASELINE}</sub>); "
        "`loop` is the time between the guest's `DMA_BENCH START` and `DMA_BENCH END` lines on its console "
        "(the loop alone, seen from outside: far less noisy than the difference of two start-ups). "
        "Ratios: vs none compares a VMM's translated rate with its own untranslated one (same device and "
        "machine); kvmpy/QEMU compares kvmpy with QEMU's q35 at the same translation; each in the loop "
        "(bold) and, in brackets, from the marginal rates.",
        "",
        "| device | VMM | machine | translation | N | wall at N, median (min–max) | wall at 2 | runs "
        "| transfers/s, marginal | DMA bytes/s, marginal | µs per transfer | loop at N, median (min–max) "
        "| transfers/s in loop "
        "| vs none | kvmpy/QEMU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for v in vs:
        r = res[v.name]
        head = f"| {v.device} | {v.vmm} | {v.machine} | {v.translation} | {v.count} |"
        if r is None:
            lines.append(f"{head} — | — | 0 | — | — | — | — | — | — | — |")
            continue
        ok = r.rate == r.rate and r.rate > 0
        base = find(v.device, v.vmm, v.machine, "none")
        vs_none = "—" if v.translation == "none" or base is None else (
            f"**{ratio(rate_of(v, True), rate_of(base, True))}** ({ratio(rate_of(v), rate_of(base))})")
        q = find(v.device, "QEMU", "q35", v.translation)
        kq = "—"
        if v.vmm == "kvmpy" and q is not None:
            kq = f"**{ratio(rate_of(v, True), rate_of(q, True))}** ({ratio(rate_of(v), rate_of(q))})"
            if v.device == "edu":
                kq += ", QEMU's timer"
        elif v.vmm == "QEMU" and v.machine == "q35":
            kq = "reference"
        wins = v.windows.get(v.count) or []
        win = (f"{r.window:.3f} s ({min(wins):.3f}–{max(wins):.3f}) | {r.window_rate:,.1f}"
               if r.window and r.window_rate else "— | —")
        lines.append(
            f"{head} {r.t_n:.3f} s ({r.lo:.3f}–{r.hi:.3f}) | {r.t_0:.3f} s | {r.runs} | "
            f"{f'{r.rate:,.1f}' if ok else '—'} | {fmt_mb(r.rate * v.bytes_per_transfer) if ok else '—'} | "
            f"{f'{1e6 / r.rate:,.0f}' if ok else '—'} | {win} | {vs_none} | {kq} |")
        notes += [f"{v.name}: {f}" for f in v.failures[:2]]
    lines.append("")
    if kvm_backend().startswith("PVM"):
        notes.append("On this PVM-backed host KVM runs the guest's code through its instruction emulator "
                     "under both VMMs (see the KVM rows of the exits table) and every exit costs several "
                     "µs: all figures include that, so compare within one run, not with figures from a "
                     "VT-x/AMD-V host.")
    notes.append("QEMU's edu starts each DMA 100 ms of virtual time after its command (hw/misc/edu.c: "
                 "a QEMU_CLOCK_VIRTUAL timer, to make drivers wait), so QEMU's edu does at most 5 copies "
                 "per second whatever the IOMMU costs: its edu rows measure that timer, its vs-none ratio "
                 "is 1 by construction, and kvmpy/QEMU for edu says only that kvmpy's edu completes a "
                 "DMA inside the write that starts it. The program waits for QEMU's edu in hlt on "
                 "1 ms LAPIC-timer ticks. The IDE rows are the comparison of translation costs.")
    ide_polls = [(v, statistics.median(v.polls[v.count])) for v in vs
                 if v.device == "ide" and v.vmm == "QEMU" and v.polls.get(v.count)]
    if ide_polls:
        txt = ", ".join(f"{v.machine} {v.translation} {p / v.count:.1f}" for v, p in ide_polls)
        notes.append("QEMU runs a READ DMA in its block layer's thread while the vCPU polls the bus-master "
                     f"status; status reads per command (median): {txt}. Under kvmpy the transfer is done "
                     "inside the write that starts the bus master: one read.")
    kv_traced = [(v, traced[v.name]) for v in vs if v.name in traced]
    if kv_traced:
        txt = "; ".join(f"{v.device} {v.translation}: {e:.1f}" for v, (e, _) in kv_traced)
        notes.append(f"kvmpy's exits per transfer (traced runs, table below): {txt}.")
        costs = []
        for v, (_, us) in kv_traced:
            base = find(v.device, "kvmpy", v.machine, "none")
            if v.translation != "none" and base is not None and base.name in traced:
                costs.append(f"{v.device} {v.translation} {us - traced[base.name][1]:+.0f} µs")
        if costs:
            notes.append("kvmpy's own cost of translation, the direct measure: µs per transfer in its exit "
                         f"handlers against the same device untranslated (traced runs): {', '.join(costs)}. "
                         "vtd hits kvmpy's IOTLB on every page; vtd+flush walks the tables for every page "
                         "after each flush (1 page per edu DMA, 16 per 64 KiB READ DMA) and adds the "
                         "invalidation's 3 exits. Each figure comes from one traced run: tens of µs either "
                         "way are within their spread.")
    notes.append("This host has 2 CPUs and other work runs beside the benchmark: the loop medians move "
                 "by up to about ±10% from one `make bench-dma` to the next, so read a vs-none ratio "
                 "within 0.9–1.1× with the min–max columns and the handler times above; the marginal "
                 "rates add the spread of two start-ups (seconds of SeaBIOS for QEMU) and are "
                 "noisier still.")
    lines += [f"- {n}" for n in notes] + [""]
    lines += ["### Exits per transfer (kvmpy's tracer)", "",
              f"One traced run per kvmpy variant at count=N and count={BASELINE} (`kvmpy trace --stats "
              f"--events`); each column is (count at N − count at {BASELINE}) / (N − {BASELINE}): what one "
              "more transfer costs. Exits are split by device and register (edu MMIO, IDE ports); handler "
              "time is the extra exits times their mean handler time in that run (the events' "
              "`handling_us`). IOMMU rows count the VT-d unit's trace events (invalidations). KVM rows are "
              "KVM's own counters (KVM_GET_STATS_FD) from `--stats`.", ""]
    lines += trace + [""]
    lines += ["Commands (from the repository root; the benchmark writes its own patterned image, shown "
              f"here as {DOC_DISK}; N as above, `vtd=on` and `flush` as in the translation column):", "",
              "```",
              f"make bench-dma    # or: python3 bench/dma_bench.py --runs {args.runs} --edu-count "
              f"{args.edu_count} --qemu-edu-count {args.qemu_edu_count} --ide-count {args.ide_count}"]
    shown = set()
    for v in vs:
        key = (v.device, v.vmm, v.machine, v.translation == "none", v.translation == "vtd+ir")
        if key in shown:
            continue
        shown.add(key)
        argv = [a.replace(args.disk_path, DOC_DISK) for a in v.argv(v.count)]
        lines.append(display(argv))
    kvt = next((v for v in vs if v.vmm == "kvmpy" and v.translation == "vtd+flush"), None)
    if kvt is not None:
        lines.append(display([a.replace(args.disk_path, DOC_DISK) for a in
                              trace_argv(kvt, kvt.count, Path("events.jsonl"), args.disk_path, args.python,
                                         args.elf)]))
    lines += ["```"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="recorded runs of each (variant, count)")
    ap.add_argument("--edu-count", type=int, default=2000, help="edu copies in kvmpy's N runs")
    ap.add_argument("--qemu-edu-count", type=int, default=10,
                    help="edu copies in QEMU's N runs (each takes QEMU's edu 200 ms)")
    ap.add_argument("--ide-count", type=int, default=1000, help="64 KiB READ DMAs in the N runs (both VMMs)")
    ap.add_argument("--devices", default="edu,ide", help="edu, ide or both")
    ap.add_argument("--no-qemu-pc", action="store_true", help="leave out the QEMU -M pc IDE cross-check")
    ap.add_argument("--elf", default=ELF, help="the DMA program")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs kvmpy")
    ap.add_argument("--timeout", type=float, default=120, help="seconds one run may take")
    ap.add_argument("--no-trace", action="store_true", help="skip the traced runs")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    args.devices = {d.strip() for d in args.devices.split(",") if d.strip()}
    if not args.devices or args.devices - {"edu", "ide"}:
        ap.error("--devices: edu, ide or edu,ide")
    for name in ("edu_count", "qemu_edu_count", "ide_count"):
        if getattr(args, name) <= BASELINE:
            ap.error(f"--{name.replace('_', '-')} must be above {BASELINE}")

    if not (ROOT / args.elf).exists():
        print(f"dma_bench: {args.elf} is missing (make -C firmware dma_bench)", file=sys.stderr)
        return 2
    if not Path("/dev/kvm").exists():
        print("dma_bench: /dev/kvm is absent", file=sys.stderr)
        return 2
    if shutil.which(args.qemu) is None:
        print(f"dma_bench: {args.qemu} not found (make bench-deps)", file=sys.stderr)
        return 2

    host = host_line()
    with tempfile.TemporaryDirectory(prefix="kvmpy-dmabench-") as tmp:
        disk = Path(tmp) / DOC_DISK
        write_disk(disk)
        args.disk_path = str(disk)
        vs = variants(args, str(disk))
        print(f"DMA translation: {len(vs)} variants, {args.runs} runs each, alternating; {host}", flush=True)
        measure(vs, args.runs, args.timeout)
        trace, traced = (["Not run (--no-trace)."], {}) if args.no_trace else trace_table(vs, str(disk), args)
        body = report(args, host, vs, trace, traced)
    print("\n" + body + "\n")
    if not args.no_write:
        update_doc(args.doc, "dma", body)  # the dma-linux section is bench/linux_dma_bench.py's
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
