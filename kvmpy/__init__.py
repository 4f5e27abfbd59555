"""kvmpy: a virtual machine monitor in Python over Linux KVM.

``from kvmpy import Machine`` is the entry point for scripts (see ``examples/``); it is imported
on first use, so ``import kvmpy`` (and the command line's error paths) stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Machine", "__version__"]

if TYPE_CHECKING:
    from .machine import Machine


def __getattr__(name: str) -> Any:
    if name == "Machine":
        from .machine import Machine

        return Machine
    raise AttributeError(f"module 'kvmpy' has no attribute {name!r}")
