#!/usr/bin/env python3
"""DMA translation under Linux: disk and network throughput with intel_iommu strict, lazy and
passthrough, and without an IOMMU (hardware-assisted hosts; skipped on PVM, saying why).

Run through make (`make bench-dma-linux`, which `make bench-dma` and so `make bench` run first).

The guest is the one of tests/guest/test_linux_vtd.py: Debian's kernel with the busybox initramfs
and its driver overlay (build/images/initrd.gz: ata_piix, sd_mod, e1000), booted directly under
kvmpy with an IDE data disk, an e1000 on the UDP socket backend whose other end is that test's
EchoPeer (ARP and ICMP echo for 10.0.2.2) and its edu device, 2 vCPUs, 512 MiB, in four modes:

- strict: `--iommu vtd`, `intel_iommu=on,strict` (DMA domains: the IOTLB is invalidated on every
  unmap);
- lazy: `--iommu vtd`, `intel_iommu=on` (DMA-FQ domains: unmaps are batched in a flush queue;
  Debian's default once the IOMMU is on);
- pt: `--iommu vtd`, `intel_iommu=on iommu=pt` (identity domains: no translation);
- none: no `--iommu` (no DMAR table).

In each, /init (tests/guest/initramfs/init, `kvmpy.bench=disk,net`) reads N MiB from /dev/sda with
O_DIRECT (busybox `dd bs=1M iflag=direct` after dropping the page cache), then sends COUNT ICMP
echoes of SIZE data bytes to the peer, each when the last was answered (`ping -q -A`), R rounds
of each, timed inside the guest (adjtimex(2), µs) and printed as `KVMPY-BENCH` lines. The same
boot reports (`kvmpy.iommu=report`) the IOMMU groups and their default domain type, so every run
is checked to be in the mode it claims (DMA / DMA-FQ / identity / no unit), the kernel's
invalidation-policy line, and that no DMA faulted.

Optionally (--qemu-compare, on by default when qemu-system-x86_64 exists) the same kernel,
initrd and command lines under QEMU `-M q35` with `-device intel-iommu,intremap=on`
(`kernel-irqchip=split`, as kvmpy remaps interrupts by default), `-device piix3-ide` with the
data disk and `-device e1000` on `-netdev socket,udp=` to the same kind of peer.

Boots alternate between variants, --runs boots each; medians over all rounds of all boots; the
ratios compare each mode with the same VMM's no-IOMMU run. Writes the section between
<!-- bench:dma-linux:begin/end --> in docs/performance.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from run_bench import display, host_line, kvm_backend, qemu_version, update_doc, utc_now

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
SECTION = "dma-linux"
KERNEL = ROOT / "build" / "debian" / "vmlinuz"
INITRD = ROOT / "build" / "images" / "initrd.gz"  # test_linux_vtd.NET_INITRD
DOC_DISK = "data.img"  # the data disk's name in the report's commands
DOC_NET = "socket,udp=KVMPY_PORT:PEER_PORT"  # and the network's
DATA_DEV = "/dev/sda"  # the data disk is the direct-boot machine's only IDE disk (test_linux_vtd)
MIB = 1 << 20
SECTOR = 512
#: an ICMP echo's frame on the wire, less the FCS: Ethernet 14 + IPv4 20 + ICMP 8 + data
ECHO_OVERHEAD = 14 + 20 + 8
IDE_IDS = "8086:7010"  # PIIX3 IDE, as sysfs spells it (kvmpy's and QEMU's piix3-ide)
E1000_IDS = "8086:100e"
#: the modes, by test_linux_vtd's Mode names, and what the report calls them
MODES = (("on-strict", "strict"), ("on", "lazy"), ("pt", "pt"), ("no-iommu", "none"))
VMMS = ("kvmpy", "QEMU")
#: bench/run_bench.py's PVM_REASON, said of throughput rather than of a boot time
PVM_REASON = ("this host's KVM is PVM-backed (kvm_pvm loaded): Linux's ring-0 code runs through KVM's "
              "instruction emulator there and does not reach init in useful time (see the README's "
              "section on PVM hosts), so disk and network rates inside it would measure that emulator, "
              "not the cost of DMA translation")


def skip_reason(force: bool) -> str | None:
    """Why Linux guests cannot be measured here (bench/run_bench.py's boot-to-init rule)."""
    if not Path("/dev/kvm").exists():
        return "/dev/kvm is absent"
    if kvm_backend().startswith("PVM") and not force:
        return PVM_REASON
    return None


# ---------------------------------------------------------------------------------------------
# what is run


@dataclass
class Variant:
    vmm: str  # kvmpy | QEMU
    label: str  # strict | lazy | pt | none
    mode: object  # test_linux_vtd.Mode
    disk_mbs: list[float] = field(default_factory=list)  # MiB/s, one per round
    rtts: list[float] = field(default_factory=list)  # echo round trips per second, one per round
    net_mbs: list[float] = field(default_factory=list)  # MB/s of echo frames, both directions
    domains: set[str] = field(default_factory=set)
    policy: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.vmm} {self.label}"

    @property
    def failed(self) -> bool:
        return len(self.failures) >= 2


def guest_append(vtd, mode, args: argparse.Namespace) -> str:
    """The kernel command line: the mode's IOMMU words, the report, the network and the benchmark."""
    from guestlib import kernel_cmdline
    return kernel_cmdline("poweroff", *mode.words, "kvmpy.iommu=report",
                          f"kvmpy.net={vtd.GUEST_IP}/{vtd.PREFIX}", f"kvmpy.ping={vtd.PEER_IP}",
                          "kvmpy.bench=disk,net", f"kvmpy.bench.disk={DATA_DEV}:{args.mib}",
                          f"kvmpy.bench.net={vtd.PEER_IP}:{args.pings}:{args.size}",
                          f"kvmpy.bench.rounds={args.rounds}")


def kvmpy_argv(vtd, mode, append: str, disk: str, net: str) -> list[str]:
    from guestlib import VMM_COMMAND
    return [*VMM_COMMAND, "boot", "--kernel", str(KERNEL), "--initrd", str(INITRD), "--append", append,
            *vtd.machine_args(mode, Path(disk), net)]


def qemu_argv(qemu: str, vtd, mode, append: str, disk: str, ports: tuple[str, str]) -> list[str]:
    """QEMU q35 with the same guest; ports = (QEMU's local UDP port, the peer's)."""
    machine = "q35,kernel-irqchip=split" if mode.iommu else "q35"
    argv = [qemu, "-accel", "kvm", "-M", machine, "-cpu", "host", "-m", vtd.MEMORY, "-smp", str(vtd.CPUS),
            "-display", "none", "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "stdio",
            "-kernel", str(KERNEL), "-initrd", str(INITRD), "-append", append]
    if mode.iommu:  # before the devices it translates for
        argv += ["-device", "intel-iommu,intremap=on"]
    return argv + ["-device", "piix3-ide,id=pide", "-drive", f"if=none,id=d0,file={disk},format=raw",
                   "-device", "ide-hd,drive=d0,bus=pide.0",
                   "-netdev", f"socket,id=n0,udp=127.0.0.1:{ports[1]},localaddr=127.0.0.1:{ports[0]}",
                   "-device", "e1000,netdev=n0"]


def write_disk(path: Path, mib: int) -> None:
    """A fully allocated image (no holes for the host to short-cut), 1 MiB of noise repeated."""
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(block)


# ---------------------------------------------------------------------------------------------
# one boot


def start_guest(vtd, argv: list[str], timeout: float):
    """test_linux_vtd.VtdGuest (GuestProcess's pumps, markers and deadline) over any argv: kvmpy's
    or QEMU's, not only `kvmpy boot ARGS`."""
    g = vtd.VtdGuest.__new__(vtd.VtdGuest)
    g.append = ""
    g._start(argv, timeout, interactive=False)
    return g


def fields(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if "=" in w)


def check_mode(g, v: Variant) -> list[str]:
    """What the guest's kernel made of the IOMMU, against the mode asked for."""
    problems = []
    mode = v.mode
    pci = {}
    for line in g.markers("IOMMU-PCI"):
        bdf, ids, *rest = line.split()
        pci[ids] = fields(rest).get("group", "none")
    groups = {}
    for line in g.markers("IOMMU-GROUP"):
        num, *rest = line.split()
        groups[num] = fields(rest).get("type", "unknown")
    seen = set()
    for ids in (IDE_IDS, E1000_IDS):
        if ids not in pci:
            problems.append(f"no PCI device {ids}")
            continue
        seen.add(groups.get(pci[ids], "none") if pci[ids] != "none" else "none")
    v.domains |= seen
    want = {mode.domain or "none"}
    if seen != want:
        problems.append(f"the disk's and the NIC's domains are {sorted(seen)}, not {sorted(want)}")
    klog = g.markers("IOMMU-KLOG")
    for pattern in mode.klog:
        if not any(re.search(pattern, line) for line in klog):
            problems.append(f"no kernel log line {pattern!r}")
    pol = [m.group(1) for line in klog if (m := re.search(r"TLB invalidation policy: (\w+) mode", line))]
    if pol and mode.domain:
        v.policy = pol[-1]
    faults = g.markers("IOMMU-FAULTS")
    if faults != ["0"]:
        problems.append(f"DMA faults: {faults} {g.markers('IOMMU-FAULT')[:2]}")
    return problems


def boot_once(vtd, v: Variant, argv: list[str], args: argparse.Namespace, peer) -> str | None:
    """One boot: its rounds appended to v; None, or why it failed."""
    import pytest
    g = start_guest(vtd, argv, args.timeout)
    try:
        g.wait_for(r"KVMPY-BOOT-OK")
        rc = g.wait()
    except pytest.fail.Exception as e:  # GuestProcess fails the "test" on a timeout or early exit
        return str(e).splitlines()[0][:300]
    finally:
        g.kill()
    if rc != vtd.EXIT_POWEROFF or "Kernel panic" in g.output:
        return f"exit status {rc}{', kernel panic' if 'Kernel panic' in g.output else ''}"
    problems = check_mode(g, v)
    blocks = " ".join(g.markers("BLOCK")).split()  # KVMPY-BLOCK sda:<sectors> ...
    sizes = dict(w.split(":", 1) for w in blocks if ":" in w)
    name = DATA_DEV.rsplit("/", 1)[-1]
    if sizes.get(name) != str(args.mib * MIB // SECTOR):  # the data disk, not some other one
        problems.append(f"{DATA_DEV} is not the {args.mib} MiB data disk: block devices {sizes}")
    disk, net = [], []
    for line in g.markers("BENCH"):
        kind, *rest = line.split()
        f = fields(rest)
        if kind == "disk":
            from_device = int(f.get("sectors", 0)) * SECTOR >= int(f.get("bytes", 0))
            if f.get("rc") != "0" or not from_device or int(f.get("usec", 0)) <= 0:
                problems.append(f"disk round failed: {line}")
            else:
                disk.append(int(f["bytes"]) / MIB / (int(f["usec"]) / 1e6))
        elif kind == "net":
            sent, recv = int(f.get("sent", 0)), int(f.get("received", 0))
            if f.get("rc") != "0" or recv != args.pings or sent != args.pings or int(f.get("usec", 0)) <= 0:
                problems.append(f"net round failed: {line}")
            else:
                s = int(f["usec"]) / 1e6
                net.append((recv / s, recv * 2 * (ECHO_OVERHEAD + args.size) / s / 1e6))
    if len(disk) != args.rounds or len(net) != args.rounds:
        problems.append(f"{len(disk)} disk and {len(net)} net rounds of {args.rounds}: "
                        f"{g.markers('BENCH')}")
    if peer.responder.icmp_echoes < args.rounds * args.pings:
        problems.append(f"the peer answered {peer.responder.icmp_echoes} echoes")
    if problems:
        return "; ".join(problems)[:400]
    v.disk_mbs += disk
    v.rtts += [r for r, _ in net]
    v.net_mbs += [b for _, b in net]
    return None


def run_variant(vtd, netpeer, v: Variant, args: argparse.Namespace, disk: str) -> str | None:
    append = guest_append(vtd, v.mode, args)
    local = vtd._free_udp_port()
    endpoint = netpeer.UdpEndpoint(0, local)
    peer = netpeer.PeerThread(endpoint, vtd.EchoPeer()).start()
    try:
        remote = endpoint.sock.getsockname()[1]
        if v.vmm == "kvmpy":
            argv = kvmpy_argv(vtd, v.mode, append, disk, f"socket,udp={local}:{remote}")
        else:
            argv = qemu_argv(args.qemu, vtd, v.mode, append, disk, (str(local), str(remote)))
        return boot_once(vtd, v, argv, args, peer)
    finally:
        peer.stop()


# ---------------------------------------------------------------------------------------------
# the report


def load_vtd():
    """tests/guest/test_linux_vtd.py and tests/netpeer.py, whose guest and peer this runs."""
    for p in (ROOT / "tests" / "guest", ROOT / "tests"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import netpeer
    import test_linux_vtd
    return test_linux_vtd, netpeer


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.1f} ({min(xs):,.1f}–{max(xs):,.1f})" if xs else "—"


def ratio(xs: list[float], base: list[float]) -> str:
    if not xs or not base:
        return "—"
    return f"{statistics.median(xs) / statistics.median(base):.2f}"


def plan(args: argparse.Namespace) -> list[str]:
    return [
        "Debian's kernel and the test initramfs with its driver overlay (build/images/initrd.gz), "
        "booted directly under kvmpy with an IDE data disk, an e1000 on the UDP socket backend "
        "(the peer is tests/guest/test_linux_vtd.py's EchoPeer: ARP and ICMP echo for 10.0.2.2) and "
        "edu, 2 vCPUs, 512 MiB (that test's machine), in four modes: **strict** "
        "`--iommu vtd` + `intel_iommu=on,strict` (DMA domains: the IOTLB invalidated on every unmap), "
        "**lazy** `--iommu vtd` + `intel_iommu=on` (DMA-FQ domains: a flush queue batches "
        "invalidations), **pt** `--iommu vtd` + `intel_iommu=on iommu=pt` (identity domains) and "
        "**none** (no `--iommu`, no DMAR table). In each the guest's /init (`kvmpy.bench=disk,net`) "
        f"reads {args.mib} MiB from {DATA_DEV} with O_DIRECT (busybox `dd bs=1M iflag=direct`, page "
        f"cache dropped first) and sends {args.pings} ICMP echoes of {args.size} data bytes to the "
        f"peer, each when the last was answered (`ping -q -A`), {args.rounds} rounds of each, timed "
        "inside the guest (adjtimex(2), µs). Each boot also reports its IOMMU groups "
        "(`kvmpy.iommu=report`): a run counts only if the disk's and the NIC's domain type is the "
        "mode's, and no DMA faulted. QEMU, where installed: the same kernel, initrd and command lines "
        "on `-M q35` (with `kernel-irqchip=split` and `-device intel-iommu,intremap=on` in the IOMMU "
        "modes, as kvmpy remaps interrupts by default), `-device piix3-ide` with the data disk and "
        "`-device e1000` on `-netdev socket,udp=`.",
    ]


def commands(args: argparse.Namespace, vtd=None) -> list[str]:
    lines = ["Commands (from the repository root; the benchmark writes its own data disk, shown here as "
             f"{DOC_DISK}, and starts the peer on a free UDP port; strict shown: another mode's kernel "
             "words replace `intel_iommu=on,strict`, and none drops `--iommu vtd`, QEMU's "
             "`-device intel-iommu` and `kernel-irqchip=split`):", "", "```",
             f"make bench-dma-linux    # or: python3 bench/linux_dma_bench.py --runs {args.runs} --rounds "
             f"{args.rounds} --mib {args.mib} --pings {args.pings} --size {args.size}"]
    if vtd is not None:
        mode = next(m for m in vtd.MODES if m.name == "on-strict")
        append = guest_append(vtd, mode, args)
        argv = kvmpy_argv(vtd, mode, append, DOC_DISK, DOC_NET)
        lines.append(display(argv))
        if args.qemu_compare:
            ports = ("KVMPY_PORT", "PEER_PORT")
            lines.append(display(qemu_argv(args.qemu, vtd, mode, append, DOC_DISK, ports)))
    return lines + ["```"]


def report(args: argparse.Namespace, host: str, vs: list[Variant], vtd) -> str:
    lines = ["## DMA translation under Linux: intel_iommu strict, lazy and passthrough", "",
             f"Written by `make bench-dma-linux` (bench/linux_dma_bench.py) on {utc_now()}. Host: {host}. "
             f"QEMU: {qemu_version(args.qemu) if args.qemu_compare else 'not run'}.", "", *plan(args), "",
             f"Boots: {args.runs} of each variant, alternating; medians (min–max) over all rounds of all "
             "boots. net MB/s counts the echo frames both ways (Ethernet, IPv4 and ICMP headers and the "
             "data; no FCS). vs none: the median against the same VMM's no-IOMMU median.", "",
             "| VMM | mode | domain seen | invalidation | disk MiB/s | vs none | echoes/s | net MB/s "
             "| vs none | rounds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for v in vs:
        base = next((b for b in vs if b.vmm == v.vmm and b.label == "none"), None)
        rel = v is not base and base is not None
        lines.append(
            f"| {v.vmm} | {v.label} | {', '.join(sorted(v.domains)) or '—'} | {v.policy or '—'} | "
            f"{med(v.disk_mbs)} | {ratio(v.disk_mbs, base.disk_mbs) if rel else '—'} | {med(v.rtts)} | "
            f"{med(v.net_mbs)} | {ratio(v.net_mbs, base.net_mbs) if rel else '—'} | {len(v.disk_mbs)} |")
        notes += [f"{v.name}: {f}" for f in v.failures[:2]]
    for vmm in VMMS:
        s = next((v for v in vs if v.vmm == vmm and v.label == "strict"), None)
        lz = next((v for v in vs if v.vmm == vmm and v.label == "lazy"), None)
        if s and lz and s.disk_mbs and lz.disk_mbs and s.rtts and lz.rtts:
            notes.append(f"{vmm}: strict/lazy {ratio(s.disk_mbs, lz.disk_mbs)} (disk), "
                         f"{ratio(s.rtts, lz.rtts)} (echoes).")
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else []) + commands(args, vtd)
    return "\n".join(lines)


def skipped(args: argparse.Namespace, reason: str) -> str:
    vtd = None
    try:
        vtd, _ = load_vtd()
    except ImportError:  # without pytest the commands are left out; the reason is what matters
        pass
    return "\n".join([
        "## DMA translation under Linux: intel_iommu strict, lazy and passthrough", "",
        f"Skipped on the last `make bench-dma-linux` ({utc_now()}, host: {host_line()}): {reason}.", "",
        "It runs unchanged on a host with VT-x/AMD-V (`--force` tries it anyway). What it measures "
        "there: " + plan(args)[0], "", *commands(args, vtd)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="boots of each variant, alternating")
    ap.add_argument("--rounds", type=int, default=3, help="disk and network rounds in each boot")
    ap.add_argument("--mib", type=int, default=64, help="MiB read from the data disk per round")
    ap.add_argument("--pings", type=int, default=2000, help="ICMP echoes per round")
    ap.add_argument("--size", type=int, default=1472, help="data bytes per echo (1472: 1500-byte IP packets)")
    ap.add_argument("--modes", default="strict,lazy,pt,none", help="some of strict, lazy, pt, none")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--no-qemu", dest="qemu_compare", action="store_false", help="kvmpy only")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one boot may take")
    ap.add_argument("--force", action="store_true", help="run even on a PVM-backed host (expect timeouts)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    labels = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not labels or set(labels) - {label for _, label in MODES}:
        ap.error("--modes: some of strict, lazy, pt, none")
    if min(args.runs, args.rounds, args.mib, args.pings) < 1 or not 0 < args.size <= 1472:
        ap.error("--runs, --rounds, --mib and --pings must be positive; --size 1..1472")
    if args.qemu_compare and shutil.which(args.qemu) is None:
        print(f"linux_dma_bench: {args.qemu} not found: kvmpy only", flush=True)
        args.qemu_compare = False

    reason = skip_reason(args.force)
    if reason:
        print(f"linux strict/lazy: skipped: {reason}", flush=True)
        body = skipped(args, reason)
    else:
        vtd, netpeer = load_vtd()
        import pytest
        from guestlib import make_targets
        try:
            make_targets("build/debian/vmlinuz", "build/images/initrd.gz", makefile="firmware/images.mk")
        except pytest.fail.Exception as e:
            print(f"linux_dma_bench: {e}", file=sys.stderr)
            return 2
        modes = {m.name: m for m in vtd.MODES}
        vs = [Variant(vmm, label, modes[name]) for vmm in VMMS if vmm == "kvmpy" or args.qemu_compare
              for name, label in MODES if label in labels]
        host = host_line()
        print(f"Linux DMA translation: {len(vs)} variants, {args.runs} boots each, {args.rounds} rounds "
              f"a boot; {host}", flush=True)
        with tempfile.TemporaryDirectory(prefix="kvmpy-linuxdma-") as tmp:
            disk = Path(tmp) / DOC_DISK
            write_disk(disk, args.mib)
            for i in range(args.runs):
                k = i % len(vs)
                for v in vs[k:] + vs[:k]:
                    if v.failed:
                        continue
                    why = run_variant(vtd, netpeer, v, args, str(disk))
                    if why:
                        v.failures.append(f"boot {i + 1}: {why}")
                        print(f"  boot {i + 1}: {v.name}: FAILED: {why}", flush=True)
                    else:
                        print(f"  boot {i + 1}: {v.name:13s} disk {v.disk_mbs[-1]:8.1f} MiB/s, "
                              f"{v.rtts[-1]:8.1f} echoes/s ({v.net_mbs[-1]:.2f} MB/s)", flush=True)
        body = report(args, host, vs, vtd)
    print("\n" + body + "\n")
    if not args.no_write:
        update_doc(args.doc, SECTION, body)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
