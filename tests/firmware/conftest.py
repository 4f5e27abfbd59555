"""Fixtures for the firmware tier: Debian's SeaBIOS and VGA BIOS running on kvmpy's PC.

Every test needs Debian's ``bios-256k.bin`` and ``vgabios-stdvga.bin`` in ``build/debian/``
(``make test`` fetches them); without them the ``seabios`` fixture (and so ``hvm``) skips with
that reason, which the root conftest turns into a failure under ``KVMPY_REQUIRE_KVM=1``. The
machine wrapper, disk images and PNG decoding live in ``hvmtools.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # pytest's default import mode puts it there; importlib mode does not
    sys.path.insert(0, _HERE)

from hvmtools import DEBIAN_DIR, HvmMachine, firmware_missing  # noqa: E402


@pytest.fixture(scope="session")
def seabios() -> Path:
    """The directory with Debian's SeaBIOS files; skips the test when they are missing."""
    reason = firmware_missing()
    if reason:
        pytest.skip(reason)
    return DEBIAN_DIR


@pytest.fixture
def hvm(seabios: Path) -> Iterator[Callable[..., HvmMachine]]:
    """A factory: ``hvm("--hvm", str(image), "--memory", "64M")`` builds a PC machine; every
    machine it built is closed after the test."""
    made: list[HvmMachine] = []

    def make(*argv: str) -> HvmMachine:
        h = HvmMachine(list(argv))
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture(scope="session")
def bootsect() -> Callable[[str], Path]:
    """Builds (incrementally) one of firmware/bootsect's programs and returns its image path."""
    from firmware.bootsect.build import ToolchainMissingError, build

    def get(name: str) -> Path:
        try:
            return build(name)
        except ToolchainMissingError as e:
            pytest.skip(str(e))

    return get
