"""``kvmpy boot | run | trace | info``: the command line (``trace`` lives in ``tracecli``).

Every failure a user can cause (bad option, missing or corrupt file, no /dev/kvm, too much
memory) is a ``KvmpyError``: it is printed as one sentence on stderr and the process exits with
that error's status, never with a traceback. A run that ends exits with the status of the
guest's stop (0 for poweroff; see ``events.StopReason`` and the README's table).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import KvmpyError, UsageError
from .events import GuestStop, StopReason
from .options import _Parser, add_boot_options, config_from_namespace
from .tracecli import add_trace_options, cmd_trace

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _print_stop(stop: GuestStop) -> None:
    if stop.reason is StopReason.POWEROFF and not stop.message:
        return
    text = stop.message or stop.reason.name.lower().replace("_", " ")
    first, *rest = text.splitlines() or [""]
    print(f"kvmpy: {first} (exit status {stop.status})", file=sys.stderr)
    for line in rest:
        print(line, file=sys.stderr)


def cmd_boot(ns: argparse.Namespace) -> int:
    from .machine import Machine

    config = config_from_namespace(ns)
    with Machine(config) as m:
        stop = m.run()
    if stop.reason is not StopReason.POWEROFF or ns.verbose:
        _print_stop(stop)
    return stop.status


def cmd_info(ns: argparse.Namespace) -> int:
    from .info import report

    print(report())
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    """What ``make run`` does: Linux on a hardware-assisted host, the demo guest elsewhere."""
    from .kvm import host_vendor

    vendor = host_vendor()
    kernel = PROJECT_ROOT / "build" / "debian" / "vmlinuz"
    initrd = PROJECT_ROOT / "build" / "initramfs.cpio.gz"
    interactive = os.isatty(0)
    if vendor in ("VT-x", "AMD-V") and kernel.exists() and initrd.exists():
        action = "shell" if interactive else "poweroff"
        argv = ["--kernel", str(kernel), "--initrd", str(initrd), "--memory", ns.memory,
                "--cpus", ns.cpus, "--append",
                f"console=ttyS0 panic=-1 quiet kvmpy.action={action}"]
    else:
        demo = PROJECT_ROOT / "build" / "firmware" / "demo.elf"
        if vendor == "PVM":
            print("kvmpy: this host's KVM is PVM-backed (no VT-x/AMD-V), where Linux guests do not "
                  "boot in useful time; booting kvmpy's demo guest instead.", file=sys.stderr)
        else:
            print("kvmpy: Debian's kernel is not built; booting kvmpy's demo guest "
                  "('make images' fetches the kernel).", file=sys.stderr)
        if not demo.exists():
            raise UsageError(f"{demo} is missing: run 'make' first")
        argv = ["--kernel", str(demo), "--memory", ns.memory, "--cpus", ns.cpus]
        if not interactive:
            argv += ["--append", "batch"]
    if interactive:
        print("kvmpy: Ctrl-A x quits.", file=sys.stderr)
    bns = boot_parser_for_run().parse_args(argv)
    bns.verbose = ns.verbose
    return cmd_boot(bns)


def boot_parser_for_run() -> argparse.ArgumentParser:
    p = _Parser(prog="kvmpy boot")
    add_boot_options(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kvmpy", description="A virtual machine monitor in Python over Linux KVM.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what kvmpy does")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    b = sub.add_parser("boot", help="boot a kernel (bzImage, PVH vmlinux or multiboot)")
    add_boot_options(b)
    b.set_defaults(func=cmd_boot)
    r = sub.add_parser("run", help="boot Linux (hardware-assisted hosts) or the demo guest")
    r.add_argument("--memory", "-m", default="256M")
    r.add_argument("--cpus", "-c", default="2")
    r.set_defaults(func=cmd_run)
    t = sub.add_parser("trace", help="boot a kernel and trace its VM exits: statistics, event files, "
                       "timelines, Python hooks")
    add_trace_options(t)
    t.set_defaults(func=cmd_trace)
    i = sub.add_parser("info", help="report what this host's KVM offers")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        ns = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                            format="kvmpy: %(name)s: %(message)s")
        if not getattr(ns, "func", None):
            raise UsageError("no command given: use 'kvmpy boot', 'kvmpy run', 'kvmpy trace' or 'kvmpy info' "
                             "(see 'kvmpy --help')")
        return ns.func(ns)
    except KvmpyError as e:
        print(f"kvmpy: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
