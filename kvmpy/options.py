"""Machine options and the parsing of their values, shared by the CLI and ``Machine.from_args``.

Every malformed value becomes a ``UsageError`` (one sentence, exit status 64), every value the
host cannot honour a ``ResourceError``; argparse's own errors are routed the same way, so no
bad option ever produces a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .errors import ResourceError, UsageError

DEFAULT_MEMORY = 256 * layout.MiB
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
_UNITS = {"": layout.MiB, "k": layout.KiB, "m": layout.MiB, "g": layout.GiB, "t": 1 << 40}


def parse_memory(text: str) -> int:
    """A memory size as QEMU's ``-m`` takes it: a number with an optional K/M/G/T suffix;
    a bare number means MiB. Returns bytes, rounded down to whole pages."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"memory size {text!r} is not valid: use a number with an optional "
                         "K, M, G or T suffix, such as 512M or 2G")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    size = int(value) & ~0xFFF
    return size


def host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(size: int) -> None:
    if size < layout.MIN_MEMORY:
        raise ResourceError(f"{size >> 20} MiB of guest memory is too small: kvmpy needs at least "
                            f"{layout.MIN_MEMORY >> 20} MiB")
    total = host_memory()
    if size > total:
        raise ResourceError(f"{size >> 20} MiB of guest memory is more than this host has "
                            f"({total >> 20} MiB)")


@dataclass
class MachineConfig:
    """What to build: every ``kvmpy boot`` option as a value."""

    kernel: Path | None = None
    initrds: list[Path] = field(default_factory=list)
    append: str = ""
    memory: int = DEFAULT_MEMORY
    cpus: int = 1
    console: str = "stdio"  # "stdio" | "none" (output captured in memory, no input)
    timeout: float | None = None
    extra_cmdline: list[str] = field(default_factory=list)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting with status 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see 'kvmpy {self.prog.split()[-1]} --help')"
                         if " " in self.prog else message)


def add_boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", "-k", metavar="FILE",
                   help="kernel to boot: a bzImage, an ELF vmlinux with a PVH note, or a multiboot kernel")
    p.add_argument("--initrd", "-i", metavar="FILE", action="append", default=[],
                   help="initial ramdisk (repeat for several; each is a module for multiboot kernels)")
    p.add_argument("--append", "-a", metavar="CMDLINE", default="", help="kernel command line")
    p.add_argument("--memory", "-m", metavar="SIZE", default="256M",
                   help="guest RAM, e.g. 512M or 2G (default 256M)")
    p.add_argument("--cpus", "-c", metavar="N", default="1", help="number of vCPUs (default 1)")
    p.add_argument("--timeout", metavar="SECONDS", default=None,
                   help="stop the guest after this many seconds (exit status 124)")
    p.add_argument("--console", choices=("stdio", "none"), default="stdio",
                   help="where the serial console goes (default: this terminal)")


def config_from_namespace(ns: argparse.Namespace) -> MachineConfig:
    if not ns.kernel:
        raise UsageError("no kernel given: use --kernel FILE")
    try:
        cpus = int(ns.cpus)
    except ValueError:
        raise UsageError(f"--cpus {ns.cpus!r} is not a number") from None
    if cpus < 1:
        raise UsageError(f"--cpus must be at least 1, not {cpus}")
    timeout = None
    if ns.timeout is not None:
        try:
            timeout = float(ns.timeout)
        except ValueError:
            raise UsageError(f"--timeout {ns.timeout!r} is not a number of seconds") from None
    memory = parse_memory(ns.memory)
    check_memory(memory)
    return MachineConfig(
        kernel=Path(ns.kernel),
        initrds=[Path(p) for p in ns.initrd],
        append=ns.append,
        memory=memory,
        cpus=cpus,
        console=ns.console,
        timeout=timeout,
    )


def boot_parser(prog: str = "kvmpy boot") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Boot a kernel directly (no firmware).")
    add_boot_options(p)
    return p


def parse_boot_args(argv: list[str]) -> MachineConfig:
    return config_from_namespace(boot_parser().parse_args(argv))
