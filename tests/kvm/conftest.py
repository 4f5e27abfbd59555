"""Helpers for tests that run our own guest programs under a real KVM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def guest_program():
    """Builds (incrementally) and returns the path of one of firmware/tests' programs."""
    from firmware.build import build

    def get(name: str) -> Path:
        return build(name)

    return get
