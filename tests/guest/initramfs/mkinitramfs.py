"""Build (and read back) the busybox initramfs of the Linux guest tests.

    mkinitramfs.py sample OUT
        write the deterministic test file (SAMPLE_SIZE bytes) that becomes /data/sample.bin
    mkinitramfs.py cpio OUT --busybox BUSYBOX --init INIT --sample SAMPLE
        write a gzip'd newc cpio archive: /bin/busybox with its applet links, /init, /dev (with
        console and null nodes, so init has a console before devtmpfs is mounted), /proc, /sys,
        /data/sample.bin
    mkinitramfs.py list ARCHIVE
        print the archive's entries like `cpio -tv` (mode, size, name[ -> target])

The archive is reproducible: fixed inode numbers, mtime 0, owner root, gzip mtime 0. The
applet list comes from running the (static) busybox on the host: `busybox --list-full`.
No `cpio` tool is needed. The tests import read_newc() and sample_bytes() from here.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SIZE = 1 << 20
SAMPLE_SEED = b"kvmpy-initramfs-sample-v1"

NEWC_MAGIC = b"070701"
NEWC_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
               "rdevmajor", "rdevminor", "namesize", "check")
NEWC_HEADER_SIZE = 6 + 8 * len(NEWC_FIELDS)  # 110
TRAILER = "TRAILER!!!"


def sample_bytes(size: int = SAMPLE_SIZE, seed: bytes = SAMPLE_SEED) -> bytes:
    """SHA-256 in counter mode over `seed`: the same bytes on every host, incompressible."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


@dataclass
class Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        return {stat.S_IFDIR: "d", stat.S_IFREG: "-", stat.S_IFLNK: "l",
                stat.S_IFCHR: "c", stat.S_IFBLK: "b"}.get(stat.S_IFMT(self.mode), "?")


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def write_newc(entries: list[Entry]) -> bytes:
    """Serialize entries (parents before children) followed by the trailer."""
    out = bytearray()
    for ino, e in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = e.name.encode() + b"\0"
        is_trailer = e.name == TRAILER
        fields = {
            "ino": 0 if is_trailer else ino,
            "mode": e.mode,
            "uid": 0, "gid": 0,
            "nlink": 0 if is_trailer else (2 if stat.S_ISDIR(e.mode) else 1),
            "mtime": 0,
            "filesize": len(e.data),
            "devmajor": 0, "devminor": 0,
            "rdevmajor": e.rdev[0], "rdevminor": e.rdev[1],
            "namesize": len(name),
            "check": 0,
        }
        out += NEWC_MAGIC + b"".join(b"%08X" % fields[f] for f in NEWC_FIELDS)
        out += name + b"\0" * _pad4(NEWC_HEADER_SIZE + len(name))
        out += e.data + b"\0" * _pad4(len(e.data))
    return bytes(out)


def read_newc(raw: bytes) -> list[Entry]:
    """Parse a (decompressed) newc archive; stops at the trailer."""
    entries = []
    pos = 0
    while True:
        if raw[pos:pos + 6] != NEWC_MAGIC:
            raise ValueError(f"bad newc magic at offset {pos}")
        vals = {f: int(raw[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i, f in enumerate(NEWC_FIELDS)}
        pos += NEWC_HEADER_SIZE
        name = raw[pos:pos + vals["namesize"] - 1].decode()
        pos += vals["namesize"] + _pad4(NEWC_HEADER_SIZE + vals["namesize"])
        data = raw[pos:pos + vals["filesize"]]
        pos += vals["filesize"] + _pad4(vals["filesize"])
        if name == TRAILER:
            return entries
        entries.append(Entry(name, vals["mode"], data, (vals["rdevmajor"], vals["rdevminor"])))


def read_archive(path: str | Path) -> list[Entry]:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return read_newc(raw)


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (e.g. 'bin/sh', 'usr/bin/awk') from busybox itself."""
    res = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True)
    return sorted({line.strip().lstrip("/") for line in res.stdout.splitlines() if line.strip()})


def build_entries(busybox: Path, init: Path, sample: Path) -> list[Entry]:
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "data", "tmp",
            "root", "etc"}
    links = [a for a in busybox_applets(busybox) if a != "bin/busybox"]
    for link in links:
        parent = str(Path(link).parent)
        while parent not in (".", ""):
            dirs.add(parent)
            parent = str(Path(parent).parent)
    entries = [Entry(d, stat.S_IFDIR | (0o1777 if d == "tmp" else 0o755)) for d in sorted(dirs)]
    entries += [
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        Entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        Entry("init", stat.S_IFREG | 0o755, init.read_bytes()),
        Entry("data/sample.bin", stat.S_IFREG | 0o644, sample.read_bytes()),
    ]
    entries += [Entry(link, stat.S_IFLNK | 0o777, b"/bin/busybox") for link in links]
    return entries


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sample")
    p.add_argument("out", type=Path)
    p = sub.add_parser("cpio")
    p.add_argument("out", type=Path)
    p.add_argument("--busybox", type=Path, required=True)
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--sample", type=Path, required=True)
    p = sub.add_parser("list")
    p.add_argument("archive", type=Path)
    args = ap.parse_args(argv)

    if args.cmd == "sample":
        _write_atomic(args.out, sample_bytes())
    elif args.cmd == "cpio":
        raw = write_newc(build_entries(args.busybox, args.init, args.sample))
        _write_atomic(args.out, gzip.compress(raw, compresslevel=9, mtime=0))
    else:
        for e in read_archive(args.archive):
            extra = f" -> {e.data.decode()}" if e.kind == "l" else ""
            if e.kind in "cb":
                extra = f" ({e.rdev[0]},{e.rdev[1]})"
            print(f"{e.kind}{stat.filemode(e.mode)[1:]} {len(e.data):>8} {e.name}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
