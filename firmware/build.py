"""Build kvmpy's own guest programs (firmware/tests/*.c, firmware/demo/demo.c) on demand.

Each program is a 32-bit multiboot v1 ELF kernel, linked at 1 MiB, built by ``firmware/Makefile``
with the system gcc/as/ld (no libgcc, no libc, so gcc-multilib is not needed). Builds are
incremental (make) and serialised with a lock file, so parallel test workers may call
:func:`build` at the same time.

    from firmware.build import build
    elf = build("smp")          # -> <repo>/build/firmware/smp.elf

Raises :class:`ToolchainMissingError` when make/gcc/ld are absent or gcc cannot produce 32-bit
code (tests may skip on it), :class:`FirmwareBuildError` when the build itself fails, and
``ValueError`` for an unknown program name.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import subprocess

FIRMWARE_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = FIRMWARE_DIR.parent
BUILD_DIR = REPO_ROOT / "build" / "firmware"

__all__ = [
    "BUILD_DIR",
    "FirmwareBuildError",
    "ToolchainMissingError",
    "build",
    "build_all",
    "programs",
]


class FirmwareBuildError(RuntimeError):
    """Building a guest program failed; the message carries make's output."""


class ToolchainMissingError(FirmwareBuildError):
    """make, gcc or ld is missing, or gcc cannot generate 32-bit x86 code."""


def programs() -> list[str]:
    """The names :func:`build` accepts: every ``tests/*.c`` and the demo guest."""
    names = sorted(p.stem for p in (FIRMWARE_DIR / "tests").glob("*.c"))
    return names + ["demo"]


def check_toolchain(tools: tuple[str, ...], what: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ToolchainMissingError(
            f"cannot build {what}: {', '.join(missing)} not found "
            "(Debian: apt-get install make gcc binutils)"
        )


def run_make(directory: pathlib.Path, out_dir: pathlib.Path, targets: list[str],
             tools: tuple[str, ...] = ("make", "gcc", "ld", "ar"),
             what: str = "kvmpy's guest programs") -> None:
    """``make -C directory O=out_dir targets``, serialised by a lock file in ``out_dir`` so
    parallel test workers share one build; a failure carries make's output."""
    check_toolchain(tools, what)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["make", "-C", str(directory), f"O={out_dir}", f"-j{os.cpu_count() or 1}", *targets]
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        output = proc.stdout.strip()
        if "cannot build 32-bit code" in output:
            raise ToolchainMissingError(output.splitlines()[-1] if output else "gcc -m32 does not work")
        raise FirmwareBuildError(f"building {' '.join(targets)} failed ({' '.join(cmd)}):\n{output}")


def _make(out_dir: pathlib.Path, targets: list[str]) -> None:
    run_make(FIRMWARE_DIR, out_dir, targets)


def build(name: str, out_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Build program ``name`` if needed and return the path of its ELF."""
    if name not in programs():
        raise ValueError(f"unknown guest program {name!r}; known: {', '.join(programs())}")
    out = pathlib.Path(out_dir).resolve() if out_dir is not None else BUILD_DIR
    elf = out / f"{name}.elf"
    _make(out, [str(elf)])
    if not elf.is_file():
        raise FirmwareBuildError(f"make succeeded but {elf} does not exist")
    return elf


def build_all(out_dir: str | os.PathLike[str] | None = None) -> dict[str, pathlib.Path]:
    """Build every program; returns {name: ELF path}."""
    out = pathlib.Path(out_dir).resolve() if out_dir is not None else BUILD_DIR
    _make(out, ["all"])
    return {name: out / f"{name}.elf" for name in programs()}


if __name__ == "__main__":
    import sys

    names = sys.argv[1:] or programs()
    for n in names:
        print(build(n))
