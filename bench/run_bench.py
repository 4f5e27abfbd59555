#!/usr/bin/env python3
"""kvmpy against a C loop and QEMU on the same guests, runs alternating; medians and ratios.

Run through make (`make bench`), which builds the baselines first and passes their paths.

1. Exit round trip. The same loop of `out dx, al` to an unowned port (0x7f0) driven by
   - the C loop (build/bench/exitloop N: a minimal VMM, one vCPU, counts KVM_EXIT_IO until HLT),
   - QEMU (`qemu-system-x86_64 -accel kvm -M microvm`, multiboot ELF, isa-debug-exit to stop),
   - kvmpy (`python3 -m kvmpy boot --kernel` the same multiboot ELF).
   Each runs with N exits and with 1 exit (start-up alone): whole-process wall times are
   measured from outside, and the marginal rate (N - 1) / (t_N - t_1) is the exit round trip
   without start-up. Ratios compare marginal rates.
2. Boot to init (hardware-assisted hosts only): Debian's kernel and the test initramfs
   (firmware/debian.mk) under kvmpy, QEMU -M pc and QEMU -M microvm, quiet and verbose console:
   time from process start to the guest's KVMPY-BOOT-OK, and to the process's exit after the
   guest's `poweroff -f`. On a PVM-backed host it is skipped and the report says why.

Both write their section of docs/performance.md (between <!-- bench:NAME:begin/end --> lines;
the rest of the file is kept) unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
PVM_REASON = ("this host's KVM is PVM-backed (kvm_pvm loaded): Linux's ring-0 code runs through KVM's "
              "instruction emulator there and does not reach init in useful time (see the README's "
              "section on PVM hosts), so a boot time would measure that emulator, not the VMM")
BOOT_MARKER = b"KVMPY-BOOT-OK"
GUEST_DONE = "EXITLOOP-DONE"  # bench/exitloop_guest.S prints it on COM1 after its last exit


# ---------------------------------------------------------------------------------------------
# running things


@dataclass
class Run:
    argv: list[str]
    rc: int | None
    wall: float
    stdout: str
    stderr: str
    timed_out: bool = False


@dataclass
class WindowedRun:
    """A guest run whose console output is timestamped as it comes: ``window`` is the time from
    the first line holding ``start`` to the first holding ``end`` (None if either is missing)."""
    wall: float | None = None
    window: float | None = None
    output: str = ""
    rc: int | None = None
    timed_out: bool = False


def run_windowed(argv: list[str], timeout: float, start: bytes, end: bytes) -> WindowedRun:
    """Run argv from the repository root (stdout and stderr together), killing it after
    ``timeout`` seconds."""
    out = WindowedRun()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    except OSError as e:
        out.output = str(e)
        return out
    buf = bytearray()
    marks: dict[bytes, float] = {}

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            now = time.perf_counter() - t0
            buf.extend(line)
            for marker in (start, end):
                if marker in line:
                    marks.setdefault(marker, now)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        out.rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out.timed_out = True
    out.wall = time.perf_counter() - t0
    reader.join(timeout=5)
    out.output = bytes(buf).decode(errors="replace")
    if start in marks and end in marks:
        out.window = marks[end] - marks[start]
    return out


def run_timed(argv: list[str], timeout: float) -> Run:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        wall = time.perf_counter() - t0
        return Run(argv, p.returncode, wall, p.stdout.decode(errors="replace"),
                   p.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired as e:
        wall = time.perf_counter() - t0
        return Run(argv, None, wall, (e.stdout or b"").decode(errors="replace"),
                   (e.stderr or b"").decode(errors="replace"), timed_out=True)
    except OSError as e:
        return Run(argv, None, 0.0, "", str(e))


def failure_note(name: str, r: Run, expect: str) -> str:
    if r.timed_out:
        why = f"no exit within {r.wall:.0f} s"
    elif r.rc is None:
        why = r.stderr.strip() or "could not start"
    elif expect not in r.stdout + r.stderr:
        why = f"exit status {r.rc}, no {expect!r} in its output"
    else:
        why = f"exit status {r.rc}"
    tail = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    last = f": {tail[-1].strip()[:200]}" if tail and r.rc is not None else ""
    return f"{name} run failed ({why}){last}"


@dataclass
class Contender:
    """One VMM in the exit benchmark: argv for N exits and for 1 exit, accepted exit statuses,
    and what the run must print (the guest's EXITLOOP-DONE on its serial port; the C loop's count)."""
    name: str
    argv_n: list[str]
    argv_1: list[str]
    ok_rc: tuple[int, ...]
    expect: str
    walls_n: list[float] = field(default_factory=list)
    walls_1: list[float] = field(default_factory=list)
    loop_s: list[float] = field(default_factory=list)  # the C loop's own in-loop time
    failed: str | None = None

    def run_once(self, exits: int, timeout: float, record: bool = True) -> None:
        for argv, walls in ((self.argv_n, self.walls_n), (self.argv_1, self.walls_1)):
            if self.failed:
                return
            r = run_timed(argv, timeout)
            if r.timed_out or r.rc not in self.ok_rc or self.expect not in r.stdout + r.stderr:
                self.failed = failure_note(self.name, r, self.expect)
                return
            if not record:
                continue
            walls.append(r.wall)
            m = re.search(r"exits=(\d+) total_s=\S+ loop_s=(\S+)", r.stdout)
            if m and int(m.group(1)) == exits and argv is self.argv_n:
                self.loop_s.append(float(m.group(2)))

    def medians(self, exits: int) -> dict | None:
        if self.failed or not self.walls_n:
            return None
        t_n, t_1 = statistics.median(self.walls_n), statistics.median(self.walls_1)
        marginal = (exits - 1) / (t_n - t_1) if t_n > t_1 else float("nan")
        return {"t_n": t_n, "t_1": t_1, "min_n": min(self.walls_n), "max_n": max(self.walls_n),
                "whole": exits / t_n, "marginal": marginal,
                "in_loop": exits / statistics.median(self.loop_s) if self.loop_s else None}


# ---------------------------------------------------------------------------------------------
# host facts


def kvm_backend() -> str:
    if Path("/sys/module/kvm_pvm").exists():
        return "PVM (kvm_pvm)"
    if Path("/sys/module/kvm_intel").exists():
        return "VT-x (kvm_intel)"
    if Path("/sys/module/kvm_amd").exists():
        return "AMD-V (kvm_amd)"
    return "unknown" if Path("/dev/kvm").exists() else "none (/dev/kvm absent)"


def host_line() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, KVM backend {kvm_backend()}, "
            f"load average {load:.2f} at start")


def utc_now() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"


def display(argv: list[str]) -> str:
    """argv as a shell line for the report: `python3`, paths relative to the repository root."""
    root = str(ROOT) + os.sep
    return shlex.join(["python3" if a == sys.executable else a.replace(root, "") for a in argv])


def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return f"{qemu}: not found"


# ---------------------------------------------------------------------------------------------
# 1. exit round trip


def qemu_exit_argv(qemu: str, elf: str) -> list[str]:
    return [qemu, "-accel", "kvm", "-M", "microvm", "-m", "64M", "-display", "none", "-nodefaults",
            "-no-user-config", "-no-reboot", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", elf]


def kvmpy_exit_argv(elf: str) -> list[str]:
    return [sys.executable, "-m", "kvmpy", "boot", "--kernel", elf]


def exit_benchmark(args) -> str:
    exits = args.exits
    contenders = [
        Contender("C loop", [args.exitloop, str(exits)], [args.exitloop, "1"], (0,), "exits="),
        # isa-debug-exit turns the guest's 0 into exit status (0 << 1) | 1
        Contender("QEMU", qemu_exit_argv(args.qemu, args.guest),
                  qemu_exit_argv(args.qemu, args.guest_startup), (1,), GUEST_DONE),
        # kvmpy's debug-exit follows QEMU's convention (README: exit statuses)
        Contender("kvmpy", kvmpy_exit_argv(args.guest), kvmpy_exit_argv(args.guest_startup), (1,),
                  GUEST_DONE),
    ]
    host = host_line()
    print(f"exit round trip: {exits} exits, {args.runs} runs each, alternating; {host}", flush=True)
    for c in contenders:  # warm-up (page cache, lazy binding), not recorded
        c.run_once(exits, args.timeout, record=False)
        if c.failed:
            print(f"  {c.failed}", flush=True)
    for i in range(args.runs):
        order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
        for c in order:
            if not c.failed:
                c.run_once(exits, args.timeout)
                if c.failed:
                    print(f"  {c.failed}", flush=True)
                else:
                    print(f"  run {i + 1}: {c.name:7s} {c.walls_n[-1]:7.3f} s for {exits}, "
                          f"{c.walls_1[-1]:6.3f} s for 1", flush=True)

    res = {c.name: c.medians(exits) for c in contenders}
    c_rate = (res["C loop"] or {}).get("marginal")
    q_rate = (res["QEMU"] or {}).get("marginal")

    def ratio(rate, base):
        return f"{rate / base:.2f}" if rate and base and base == base and rate == rate else "—"

    lines = [
        "## Exit round trip",
        "",
        f"Written by `make bench` (bench/run_bench.py) on {utc_now()}. Host: {host}. "
        f"QEMU: {qemu_version(args.qemu)}.",
        "",
        f"The guest loops on `out dx, al` to port 0x7f0, which no device owns, {exits} times: one exit to "
        f"userspace each. Every VMM runs the same loop with {exits} exits and with 1 exit (start-up alone), "
        f"{args.runs} runs each, alternating; times are the medians of whole-process wall times measured "
        "from outside. The marginal rate is (N − 1) / (t<sub>N</sub> − t<sub>1</sub>): the exit round trip "
        "without start-up; the ratios compare marginal rates.",
        "",
        f"| VMM | wall, {exits} exits (min–max) | wall, 1 exit | exits/s, whole process | "
        "exits/s, marginal | µs per exit | vs C loop | vs QEMU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for c in contenders:
        m = res[c.name]
        if m is None:
            lines.append(f"| {c.name} | — | — | — | — | — | — | — |")
            notes.append(c.failed or f"{c.name}: no runs")
            continue
        us = 1e6 / m["marginal"] if m["marginal"] == m["marginal"] else float("nan")
        lines.append(
            f"| {c.name} | {m['t_n']:.3f} s ({m['min_n']:.3f}–{m['max_n']:.3f}) | {m['t_1']:.3f} s | "
            f"{m['whole']:,.0f} | {m['marginal']:,.0f} | {us:.1f} | {ratio(m['marginal'], c_rate)} | "
            f"{ratio(m['marginal'], q_rate)} |")
    cm = res["C loop"]
    if cm and cm["in_loop"]:
        notes.append(f"The C loop's own timer, KVM_RUN loop only: {cm['in_loop']:,.0f} exits/s.")
    if kvm_backend().startswith("PVM"):
        notes.append("On this PVM-backed host every rate includes KVM's emulation of the guest's "
                     "instructions: compare the VMMs within one run, not with figures from VT-x/AMD-V "
                     "hosts.")
    notes.append("QEMU runs `-M microvm`: it starts in about 0.05 s, where `-M pc` spends seconds in "
                 "SeaBIOS on a PVM host; the 1-exit run takes start-up out either way.")
    lines += [""] + [f"- {n}" for n in notes] + [
        "",
        "Commands (from the repository root):",
        "",
        "```",
        "make bench",
        *(display(c.argv_n) for c in contenders),
        "```",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# 2. boot to init


def boot_once(argv: list[str], timeout: float) -> tuple[float | None, float | None, str]:
    """(seconds to KVMPY-BOOT-OK, seconds to process exit, note)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen: dict[str, float] = {}
    buf = bytearray()
    err = bytearray()

    def pump_out():
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            buf.extend(chunk)
            if "ok" not in seen and BOOT_MARKER in buf:
                seen["ok"] = time.perf_counter() - t0

    def pump_err():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err.extend(chunk)

    threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
        t_exit = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        t_exit = None
    for t in threads:
        t.join(timeout=5)
    note = ""
    if "ok" not in seen:
        why = "killed after the time limit" if t_exit is None else f"exit status {proc.returncode}"
        lines = [ln.strip() for ln in bytes(err or buf).decode(errors="replace").splitlines() if ln.strip()]
        note = f"no KVMPY-BOOT-OK ({why}); last line: {lines[-1][:200] if lines else '(none)'}"
    return seen.get("ok"), t_exit, note


def boot_benchmark(args) -> str:
    reason = None
    if not Path("/dev/kvm").exists():
        reason = "/dev/kvm is absent"
    elif Path("/sys/module/kvm_pvm").exists() and not args.force_boot:
        reason = PVM_REASON
    header = ["## Boot to init", ""]
    if reason:
        print(f"boot to init: skipped: {reason}", flush=True)
        return "\n".join(header + [
            f"Skipped on the last `make bench` ({utc_now()}, "
            f"host: {host_line()}): {reason}.",
            "", "It runs unchanged on a host with VT-x/AMD-V."])

    targets = ["build/debian/vmlinuz", "build/initramfs.cpio.gz"]
    top = ROOT / "Makefile"
    mk = [] if top.exists() and "firmware/debian.mk" in top.read_text() else ["-f", "firmware/debian.mk"]
    subprocess.run(["make", "-C", str(ROOT), *mk, *targets], check=True)
    kernel, initrd = (str(ROOT / t) for t in targets)
    accel = args.boot_qemu_accel
    cpu = "host" if accel == "kvm" else "max"
    consoles = {"quiet": "console=ttyS0 panic=-1 quiet kvmpy.action=poweroff",
                "verbose": "console=ttyS0 panic=-1 kvmpy.action=poweroff"}

    def qemu(machine, append):
        return [args.qemu, "-accel", accel, "-M", machine, "-cpu", cpu, "-m", "512M", "-smp", "2",
                "-display", "none", "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "stdio",
                "-kernel", kernel, "-initrd", initrd, "-append", append]

    variants = []
    for console, append in consoles.items():
        variants.append(("kvmpy", console, [sys.executable, "-m", "kvmpy", "boot", "--kernel", kernel,
                                            "--initrd", initrd, "--append", append, "--memory", "512M",
                                            "--cpus", "2"]))
        variants.append(("QEMU -M pc", console, qemu("pc", append)))
        variants.append(("QEMU -M microvm", console, qemu("microvm", append)))
    results = {(n, c): {"ok": [], "exit": [], "notes": []} for n, c, _ in variants}
    host = host_line()
    print(f"boot to init: {args.boot_runs} runs each, alternating; {host}", flush=True)
    for i in range(args.boot_runs):
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        for name, console, argv in order:
            r = results[(name, console)]
            if len(r["notes"]) >= 2:  # failed twice: stop spending time on it
                continue
            t_ok, t_exit, note = boot_once(argv, args.boot_timeout)
            if t_ok is None:
                r["notes"].append(note)
                print(f"  run {i + 1}: {name} {console}: {note}", flush=True)
                continue
            r["ok"].append(t_ok)
            if t_exit is not None:
                r["exit"].append(t_exit)
            print(f"  run {i + 1}: {name:16s} {console:7s} BOOT-OK {t_ok:6.2f} s, exit "
                  f"{t_exit if t_exit is not None else float('nan'):6.2f} s", flush=True)

    def med(xs):
        return f"{statistics.median(xs):.2f} s" if xs else "—"

    qemu_ref = {c: statistics.median(results[("QEMU -M microvm", c)]["ok"])
                for c in consoles if results[("QEMU -M microvm", c)]["ok"]}
    lines = header + [
        f"Written by `make bench` on {utc_now()}. Host: {host}. "
        f"QEMU: {qemu_version(args.qemu)} (`-accel {accel}`).",
        "",
        "Debian's kernel (build/debian/vmlinuz) with the test initramfs, 2 vCPUs, 512 MiB; time from "
        "process start to the guest's `KVMPY-BOOT-OK` on the serial console, and to the process's exit "
        f"after the guest's `poweroff -f`. Runs: {args.boot_runs} of each, alternating; medians. quiet: "
        f"`{consoles['quiet']}`; verbose: the same without `quiet`.",
        "",
        "| VMM | console | to KVMPY-BOOT-OK | to exit | runs | vs QEMU -M microvm |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for name, console, _ in variants:
        r = results[(name, console)]
        rel = (f"{statistics.median(r['ok']) / qemu_ref[console]:.2f}×" if r["ok"] and console in qemu_ref
               else "—")
        lines.append(f"| {name} | {console} | {med(r['ok'])} | {med(r['exit'])} | {len(r['ok'])} | {rel} |")
        notes += [f"{name} ({console}): {n}" for n in r["notes"][:1]]
    lines += [""] + [f"- {n}" for n in notes] + ["", "Commands:", "", "```", "make bench",
                                                 *(display(a) for n, c, a in variants if c == "quiet"),
                                                 "```"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# docs/performance.md


def read_trace(events: Path, stats: str, key: Callable[[dict], str],
               kernel_counters: tuple[str, ...]) -> tuple[Counter[str], Counter[str], dict[str, int]]:
    """One ``kvmpy trace --stats --events`` run: exits and their handler microseconds by
    ``key(event)``, and the named counters from the stats report's "in the kernel" part."""
    count: Counter[str] = Counter()
    us: Counter[str] = Counter()
    with events.open() as f:
        for line in f:
            ev = json.loads(line)
            k = key(ev)
            count[k] += 1
            us[k] += ev.get("handling_us") or 0.0
    kernel: dict[str, int] = {}
    seen = False
    for line in stats.splitlines():
        if line.strip().startswith("in the kernel"):
            seen = True
            continue
        m = re.match(r"\s+(.+?)\s{2,}([\d,]+)\s", line + " ") if seen else None
        if m and m.group(1) in kernel_counters:
            kernel[m.group(1)] = int(m.group(2).replace(",", ""))
    return count, us, kernel


def update_doc(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else (
        "# Performance\n\nSections between `bench:` comments are rewritten by `make bench` "
        "(bench/run_bench.py); text outside them is kept.\n")
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each VMM in the exit benchmark")
    ap.add_argument("--exits", type=int, default=100000)
    ap.add_argument("--exitloop", default="build/bench/exitloop")
    ap.add_argument("--guest", default="build/bench/exitloop-100000.elf", help="multiboot ELF, --exits exits")
    ap.add_argument("--guest-startup", default="build/bench/exitloop-1.elf", help="multiboot ELF, 1 exit")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=float, default=60, help="seconds one exit-benchmark run may take")
    ap.add_argument("--boot-runs", type=int, default=3)
    ap.add_argument("--boot-timeout", type=float, default=180)
    ap.add_argument("--force-boot", action="store_true", help="run the boot benchmark even on a PVM host")
    ap.add_argument("--boot-qemu-accel", default="kvm", help="QEMU accelerator in the boot benchmark")
    ap.add_argument("--only", choices=("exit", "boot"), help="run one benchmark")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)

    sections = []
    if args.only in (None, "exit"):
        sections.append(("exit-roundtrip", exit_benchmark(args)))
    if args.only in (None, "boot"):
        sections.append(("boot", boot_benchmark(args)))
    for name, body in sections:
        print("\n" + body + "\n")
        if not args.no_write:
            update_doc(args.doc, name, body)
    if not args.no_write:
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
