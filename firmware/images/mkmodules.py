"""Pack the kernel modules the HVM guest needs into a small initramfs overlay (newc cpio, gzip).

Debian's kernel builds libata, ata_piix, SCSI, sd and sr as modules (CONFIG_ATA=m,
CONFIG_ATA_PIIX=m, CONFIG_SCSI=m), so the direct-boot initramfs — busybox and /init, no modules —
sees no disk on the PC platform. This overlay carries the modules for the PIIX IDE disk and
CD-ROM, with everything they depend on, taken from the very kernel package vmlinuz came from:

    python3 firmware/images/mkmodules.py KERNEL.deb OUT.cpio.gz ata_piix sd_mod sr_mod

The NIC's driver comes too, whether named or not: e1000 (CONFIG_E1000=m) for kvmpy's Intel
82540EM (8086:100E), listed in NET_MODULES and packed after the modules named on the command
line. It loads without a NIC present (the driver registers and binds nothing), so every guest
of the HVM images carries it; the network tests (tests/guest/test_linux_net.py) need it.

Appended to build/initramfs.cpio.gz (Linux unpacks concatenated compressed archives in order),
it adds /lib/modules/kvmpy/*.ko and /lib/modules/kvmpy/load.order, the files in an order where
each module comes after its dependencies; /init (tests/guest/initramfs/init) insmods them in
that order when the list is there.

The package has no modules.dep (depmod runs at install; Debian's linux-image packages ship only
modules.order, modules.builtin and modules.builtin.modinfo), so dependencies come from each
module's own `.modinfo` section (`depends=a,b`; e1000's is empty in Debian's 6.1 kernels). The
.deb is streamed twice through `dpkg-deb --fsys-tarfile` (once for the dependency graph, once for
the chosen files) rather than unpacked: the package holds ~400 MB of modules, of which about
2 MB are needed.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODDIR = "lib/modules/kvmpy"
ORDER_FILE = f"{MODDIR}/load.order"
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")
#: Packed whatever the command line names: the driver of kvmpy's e1000 NIC (82540EM).
NET_MODULES = ("e1000",)


def _mkinitramfs():
    """tests/guest/initramfs/mkinitramfs.py: its newc writer keeps both archives alike."""
    path = ROOT / "tests" / "guest" / "initramfs" / "mkinitramfs.py"
    spec = importlib.util.spec_from_file_location("kvmpy_mkinitramfs", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def module_name(path: str) -> str:
    """The kernel's name for a module file: basename without .ko, dashes as underscores."""
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def _modules(deb: Path) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """(path, tar, member) for every .ko in the package, streamed."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".ko") and "/kernel/" in member.name:
                    yield member.name, tar, member
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed ({proc.returncode})")


def dependencies(data: bytes) -> list[str]:
    """The module names in a .ko's `depends=` modinfo entry."""
    m = _DEPENDS.search(data)
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def load_order(wanted: list[str], graph: dict[str, list[str]]) -> list[str]:
    """Module names, dependencies first (depth-first post-order), each once."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in graph:
            raise KeyError(f"module {name!r} is not in the kernel package (built in, or misspelt?)")
        if name in visiting:
            raise ValueError(f"module dependency cycle through {name!r}")
        visiting.add(name)
        for dep in graph[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for w in wanted:
        visit(w.replace("-", "_"))
    return order


def with_net_modules(wanted: list[str]) -> list[str]:
    """``wanted`` followed by the NET_MODULES it does not name already."""
    named = {w.replace("-", "_") for w in wanted}
    return [*wanted, *(m for m in NET_MODULES if m not in named)]


def build(deb: Path, wanted: list[str]) -> tuple[bytes, list[str]]:
    """The gzip'd overlay archive and the load order (file names) of ``wanted`` and NET_MODULES."""
    wanted = with_net_modules(wanted)
    graph: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for path, tar, member in _modules(deb):
        name = module_name(path)
        graph[name] = dependencies(tar.extractfile(member).read())
        paths[name] = path
    order = load_order(wanted, graph)
    chosen = {paths[n]: n for n in order}
    data: dict[str, bytes] = {}
    for path, tar, member in _modules(deb):
        if path in chosen:
            data[chosen[path]] = tar.extractfile(member).read()
    mk = _mkinitramfs()
    files = [Path(paths[n]).name for n in order]
    entries = [mk.Entry(d, stat.S_IFDIR | 0o755) for d in ("lib", "lib/modules", MODDIR)]
    entries += [mk.Entry(f"{MODDIR}/{Path(paths[n]).name}", stat.S_IFREG | 0o644, data[n]) for n in order]
    entries.append(mk.Entry(ORDER_FILE, stat.S_IFREG | 0o644, "".join(f + "\n" for f in files).encode()))
    return gzip.compress(mk.write_newc(entries), compresslevel=9, mtime=0), files


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 64
    deb, out, wanted = Path(argv[0]), Path(argv[1]), argv[2:]
    try:
        archive, files = build(deb, wanted)
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        print(f"mkmodules: {e}", file=sys.stderr)
        return 1
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(archive)
    tmp.replace(out)
    print(f"mkmodules: {out}: {' '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
