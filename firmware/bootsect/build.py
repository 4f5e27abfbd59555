"""Build kvmpy's real-mode boot-sector programs (firmware/bootsect/*.S) on demand.

Each program is a raw disk image prefix: a 512-byte boot sector (``boot.S``: segments, stack,
loading the rest with int 13h AH=02) followed by the program's own sectors, linked flat at
0x7C00 by ``bootsect.ld``. ``firmware/bootsect/Makefile`` builds them with the system gcc (as
the preprocessing driver of GNU as), ld and objcopy; builds are incremental and serialised with
a lock file, so parallel test workers may call :func:`build` at the same time.

    from firmware.bootsect.build import build
    image = build("int13")      # -> <repo>/build/firmware/bootsect/int13.bin

Why a separate helper from ``firmware/build.py``: those programs are 32-bit multiboot ELFs that
kvmpy loads itself; these are disk contents that the BIOS loads, so they are built, named and
used differently (written to the start of a disk image). The errors are the same classes, so a
test can skip or fail on a missing toolchain the same way for both.
"""

from __future__ import annotations

import os
import pathlib

from ..build import FirmwareBuildError, ToolchainMissingError, run_make

BOOTSECT_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BOOTSECT_DIR.parent.parent
BUILD_DIR = REPO_ROOT / "build" / "firmware" / "bootsect"
SECTOR = 512
#: Support files, not programs: the boot sector every program starts with, and the print helpers.
_LIBRARY = {"boot", "lib"}

__all__ = [
    "BUILD_DIR",
    "FirmwareBuildError",
    "ToolchainMissingError",
    "build",
    "build_all",
    "programs",
]


def programs() -> list[str]:
    """The names :func:`build` accepts: every ``*.S`` here except the shared ``boot`` and ``lib``."""
    return sorted(p.stem for p in BOOTSECT_DIR.glob("*.S") if p.stem not in _LIBRARY)


def _make(out_dir: pathlib.Path, targets: list[str]) -> None:
    run_make(BOOTSECT_DIR, out_dir, targets, tools=("make", "gcc", "ld", "objcopy"),
             what="kvmpy's boot-sector programs")


def _checked(image: pathlib.Path) -> pathlib.Path:
    """The Makefile checks this too; a stale or hand-made file must not reach a test."""
    if not image.is_file():
        raise FirmwareBuildError(f"make succeeded but {image} does not exist")
    data = image.read_bytes()
    if len(data) < SECTOR or len(data) % SECTOR or data[510:512] != b"\x55\xaa":
        raise FirmwareBuildError(f"{image} is not a boot sector image ({len(data)} bytes, "
                                 f"signature {data[510:512].hex() if len(data) >= 512 else 'missing'})")
    return image


def build(name: str, out_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Build program ``name`` if needed and return the path of its image (whole sectors)."""
    if name not in programs():
        raise ValueError(f"unknown boot-sector program {name!r}; known: {', '.join(programs())}")
    out = pathlib.Path(out_dir).resolve() if out_dir is not None else BUILD_DIR
    image = out / f"{name}.bin"
    _make(out, [str(image)])
    return _checked(image)


def build_all(out_dir: str | os.PathLike[str] | None = None) -> dict[str, pathlib.Path]:
    """Build every program; returns {name: image path}."""
    out = pathlib.Path(out_dir).resolve() if out_dir is not None else BUILD_DIR
    _make(out, ["all"])
    return {name: _checked(out / f"{name}.bin") for name in programs()}


if __name__ == "__main__":
    import sys

    for n in sys.argv[1:] or programs():
        print(build(n))
