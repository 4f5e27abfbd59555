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


@dataclass(frozen=True)
class DriveSpec:
    """One disk or CD-ROM: ``--drive file=PATH[,media=disk|cdrom][,readonly=on][,index=N]``."""

    file: Path
    media: str = "disk"  # "disk" | "cdrom"
    readonly: bool = False
    index: int | None = None  # IDE position: 0 primary master, 1 primary slave, 2, 3 secondary


_BOOL = {"on": True, "yes": True, "true": True, "1": True,
         "off": False, "no": False, "false": False, "0": False}


def parse_drive(text: str) -> DriveSpec:
    """Parse a ``--drive`` value the way QEMU's ``-drive`` spells it (a subset)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            if not fields and key:  # a bare path first, as in QEMU's shorthand
                fields["file"] = key
                continue
            raise UsageError(f"--drive {text!r}: {part!r} is not KEY=VALUE")
        if key not in ("file", "media", "readonly", "index", "format", "if"):
            raise UsageError(f"--drive {text!r}: unknown key {key!r} "
                             "(known: file, media, readonly, index, format, if)")
        fields[key] = value
    if not fields.get("file"):
        raise UsageError(f"--drive {text!r}: no file= given")
    media = fields.get("media", "disk")
    if media not in ("disk", "cdrom"):
        raise UsageError(f"--drive {text!r}: media must be disk or cdrom, not {media!r}")
    if fields.get("format", "raw") != "raw":
        raise UsageError(f"--drive {text!r}: only raw images are supported, not {fields['format']!r}")
    if fields.get("if", "ide") != "ide":
        raise UsageError(f"--drive {text!r}: only if=ide is supported")
    ro_text = fields.get("readonly", "on" if media == "cdrom" else "off").lower()
    if ro_text not in _BOOL:
        raise UsageError(f"--drive {text!r}: readonly must be on or off, not {ro_text!r}")
    index = None
    if "index" in fields:
        try:
            index = int(fields["index"])
        except ValueError:
            raise UsageError(f"--drive {text!r}: index must be 0 to 3") from None
        if not 0 <= index <= 3:
            raise UsageError(f"--drive {text!r}: index must be 0 to 3")
    return DriveSpec(Path(fields["file"]), media, _BOOL[ro_text], index)


def place_drives(drives: list[DriveSpec]) -> dict[int, DriveSpec]:
    """IDE positions for the drives: explicit indexes first, then the first free position,
    disks from the primary master on, CD-ROMs from the secondary master on (as QEMU does)."""
    placed: dict[int, DriveSpec] = {}
    for d in drives:
        if d.index is not None:
            if d.index in placed:
                raise UsageError(f"two drives at IDE index {d.index}")
            placed[d.index] = d
    for d in drives:
        if d.index is None:
            order = (2, 3, 0, 1) if d.media == "cdrom" else (0, 1, 2, 3)
            free = [i for i in order if i not in placed]
            if not free:
                raise UsageError("at most four IDE drives fit (two channels, master and slave)")
            placed[free[0]] = d
    return placed


KNOWN_DEVICES = ("edu",)


@dataclass(frozen=True)
class IommuSpec:
    """``--iommu vtd[,aw=39|48][,caching-mode=on|off][,qi=on|off][,intremap=on|off]``.

    ``intremap`` (interrupt remapping) is on by default, as QEMU's ``intremap=auto`` gives it
    with a split irqchip; it needs queued invalidation, so ``qi=off`` turns it off unless asked
    for, and asking for both is an error.
    """

    kind: str = "vtd"
    aw_bits: int = 39
    caching_mode: bool = False
    queued_invalidation: bool = True
    intremap: bool = True


_IOMMU_BOOL_KEYS = {"caching-mode": "caching_mode", "qi": "queued_invalidation", "intremap": "intremap"}


def parse_iommu(text: str) -> IommuSpec:
    kind, _, rest = text.partition(",")
    if kind != "vtd":
        raise UsageError(f"--iommu {text!r}: the only IOMMU kvmpy models is vtd")
    spec: dict = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise UsageError(f"--iommu {text!r}: {part!r} is not KEY=VALUE")
        if key == "aw":
            if value not in ("39", "48"):
                raise UsageError(f"--iommu {text!r}: aw must be 39 or 48")
            spec["aw_bits"] = int(value)
        elif key in _IOMMU_BOOL_KEYS:
            if value.lower() not in _BOOL:
                raise UsageError(f"--iommu {text!r}: {key} must be on or off")
            spec[_IOMMU_BOOL_KEYS[key]] = _BOOL[value.lower()]
        else:
            raise UsageError(f"--iommu {text!r}: unknown key {key!r} (known: aw, caching-mode, qi, intremap)")
    if not spec.get("queued_invalidation", True):
        if spec.get("intremap"):
            raise UsageError(f"--iommu {text!r}: intremap=on needs queued invalidation (qi=on): "
                             "the interrupt-entry cache is invalidated only through the queue")
        spec["intremap"] = False
    return IommuSpec(kind, **spec)


def parse_passthrough(values: list[str]) -> list[str]:
    """``--passthrough BDF`` values, canonical and each at most once."""
    from .iommu.vfio import parse_bdf

    out: list[str] = []
    for v in values:
        try:
            bdf = parse_bdf(v)
        except UsageError:
            raise UsageError(f"--passthrough {v!r} is not a PCI address: use domain:bus:device.function "
                             "as lspci -D prints it, such as 0000:03:00.0") from None
        if bdf in out:
            raise UsageError(f"--passthrough {v!r}: {bdf} is already passed through")
        out.append(bdf)
    return out


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
    # the HVM PC (firmware boot): set by --hvm, --cdrom, --drive
    hvm: bool = False
    drives: list[DriveSpec] = field(default_factory=list)
    boot_order: str = "cd"  # QEMU's letters: c disk, d CD-ROM, n network
    bios: Path | None = None
    screenshot: Path | None = None
    display: str = "none"
    devices: list[str] = field(default_factory=list)  # extra PCI devices: "edu"
    nets: list = field(default_factory=list)  # kvmpy.net.NetSpec, one e1000 each
    iommu: IommuSpec | None = None
    #: host PCI functions assigned through VFIO, canonical "dddd:bb:dd.f"
    passthrough: list[str] = field(default_factory=list)
    #: "auto" (split when the IOMMU remaps interrupts), "kernel" or "split"
    irqchip: str = "auto"

    @property
    def split_irqchip(self) -> bool:
        """kvmpy's own PICs, IOAPIC and PIT in front of KVM's LAPICs: needed when VT-d remaps
        interrupts (the IOAPIC's messages must reach the IOMMU), or asked for."""
        if self.irqchip == "auto":
            return self.iommu is not None and self.iommu.intremap
        return self.irqchip == "split"


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
    p.add_argument("--net", metavar="SPEC", action="append", default=[],
                   help="an e1000 NIC: tap,ifname=NAME[,mac=..] | socket,listen=PATH | "
                        "socket,connect=PATH | socket,udp=LOCAL:REMOTE | none (repeatable)")
    p.add_argument("--device", metavar="NAME", action="append", default=[],
                   help="add a PCI device: edu (QEMU's DMA test device)")
    p.add_argument("--iommu", metavar="vtd[,aw=39|48][,caching-mode=on][,qi=off][,intremap=off]",
                   default=None, help="give the guest an Intel VT-d IOMMU (all device DMA is "
                                      "translated; interrupts are remapped unless intremap=off)")
    p.add_argument("--passthrough", metavar="BDF", action="append", default=[],
                   help="assign host PCI device BDF (bound to vfio-pci, e.g. 0000:03:00.0) to the "
                        "guest through VFIO (repeatable)")
    p.add_argument("--irqchip", choices=("auto", "kernel", "split"), default="auto",
                   help="interrupt controllers: KVM's in-kernel PICs, IOAPIC and PIT (kernel), or "
                        "kvmpy's own in front of KVM's LAPICs (split); auto: split when --iommu "
                        "remaps interrupts, else kernel")
    h = p.add_argument_group("PC with firmware (HVM)")
    h.add_argument("--hvm", metavar="DISK", default=None,
                   help="boot a disk image through SeaBIOS on an emulated PC (i440FX, IDE, VGA)")
    h.add_argument("--cdrom", metavar="ISO", default=None, help="attach an ATAPI CD-ROM with this image")
    h.add_argument("--drive", metavar="SPEC", action="append", default=[],
                   help="file=PATH[,media=disk|cdrom][,readonly=on][,index=0-3] (repeatable)")
    h.add_argument("--boot", metavar="ORDER", default=None,
                   help="boot order as QEMU spells it: c (disk), d (CD-ROM), n (network)")
    h.add_argument("--bios", metavar="FILE", default=None, help="firmware image (default: Debian's SeaBIOS)")
    h.add_argument("--display", metavar="none|vnc=HOST:PORT", default="none",
                   help="serve the guest's screen and keyboard to VNC clients (e.g. vnc=127.0.0.1:5900 "
                        "or vnc=:0)")
    h.add_argument("--screenshot", metavar="FILE.png", default=None,
                   help="write the guest's screen to this PNG when the run ends")


def config_from_namespace(ns: argparse.Namespace) -> MachineConfig:
    drives = [parse_drive(d) for d in getattr(ns, "drive", [])]
    if getattr(ns, "hvm", None):
        drives.insert(0, DriveSpec(Path(ns.hvm)))
    if getattr(ns, "cdrom", None):
        drives.append(DriveSpec(Path(ns.cdrom), media="cdrom", readonly=True))
    if ns.kernel and (getattr(ns, "hvm", None) or getattr(ns, "bios", None)):
        raise UsageError("--kernel boots directly; it cannot be combined with --hvm or --bios")
    # without a kernel, disks mean a PC booted by firmware; with one, they sit on a PCI IDE
    # controller of the direct-boot machine (for kvmpy's own driver test programs)
    hvm = not ns.kernel and (bool(drives) or bool(getattr(ns, "bios", None)))
    if not ns.kernel and not hvm:
        raise UsageError("no kernel given: use --kernel FILE (or --hvm DISK to boot through firmware)")
    boot = getattr(ns, "boot", None)
    if boot is None:
        boot = "dc" if any(d.media == "cdrom" for d in drives) and not any(
            d.media == "disk" for d in drives) else "cd"
    if not boot or any(c not in "cdn" for c in boot):
        raise UsageError(f"--boot {boot!r}: use the letters c (disk), d (CD-ROM) and n (network)")
    place_drives(drives)
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
    for d in getattr(ns, "device", []):
        if d not in KNOWN_DEVICES:
            raise UsageError(f"--device {d!r}: unknown device (known: {', '.join(KNOWN_DEVICES)})")
    iommu = parse_iommu(ns.iommu) if getattr(ns, "iommu", None) else None
    passthrough = parse_passthrough(getattr(ns, "passthrough", []))
    if passthrough and iommu is not None:
        raise UsageError("--passthrough cannot be combined with --iommu yet: the device's DMA would "
                         "bypass the guest's VT-d tables")
    irqchip = getattr(ns, "irqchip", "auto")
    if passthrough and irqchip == "split":
        raise UsageError("--passthrough needs KVM's in-kernel irqchip (its INTx uses KVM's resampling "
                         "irqfd): leave out --irqchip split")
    if irqchip == "kernel" and iommu is not None and iommu.intremap:
        raise UsageError("--irqchip kernel: interrupt remapping needs kvmpy's IOAPIC; use "
                         "--iommu vtd,intremap=off or --irqchip split")
    nets = []
    if getattr(ns, "net", None):
        from .net.options import parse_nets

        nets = parse_nets(ns.net)
    return MachineConfig(
        nets=nets,
        devices=list(getattr(ns, "device", [])),
        iommu=iommu,
        irqchip=irqchip,
        passthrough=passthrough,
        kernel=Path(ns.kernel) if ns.kernel else None,
        hvm=hvm,
        drives=drives,
        boot_order=boot,
        bios=Path(ns.bios) if getattr(ns, "bios", None) else None,
        screenshot=Path(ns.screenshot) if getattr(ns, "screenshot", None) else None,
        display=_display(getattr(ns, "display", "none"), hvm),
        initrds=[Path(p) for p in ns.initrd],
        append=ns.append,
        memory=memory,
        cpus=cpus,
        console=ns.console,
        timeout=timeout,
    )


def _display(text: str, hvm: bool) -> str:
    if text == "none":
        return text
    if not text.startswith("vnc="):
        raise UsageError(f"--display {text!r}: use none or vnc=HOST:PORT")
    if not hvm:
        raise UsageError("--display needs a machine with a screen: use it with --hvm")
    from .display import parse_address

    parse_address(text)  # a malformed address is a usage error now, not when the guest runs
    return text


def boot_parser(prog: str = "kvmpy boot") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Boot a kernel directly (no firmware).")
    add_boot_options(p)
    return p


def parse_boot_args(argv: list[str]) -> MachineConfig:
    return config_from_namespace(boot_parser().parse_args(argv))
