"""Errors of the network backends, each a one-sentence ``KvmpyError`` with its own exit status.

Why a class of their own: a backend fails for reasons outside kvmpy and outside the command
line's syntax (no TAP device by that name, nobody listening on a socket, a port in use), and
scripts that start guests want to tell "the host's network set-up is wrong" from "the option is
malformed" (``UsageError``, 64) without parsing messages.

Exit statuses (documented in the README's table with the others):

* ``NetworkError``: 74 (``EX_IOERR`` of sysexits.h: the host resource could not be used).
* ``NetworkPermissionError``: 77 (``EX_NOPERM``), the status ``/dev/kvm`` permission errors
  use too: the fix is the same kind (a capability, an owner, a group), not a different option.
"""

from __future__ import annotations

from kvmpy.errors import KvmpyError


class NetworkError(KvmpyError):
    """A network backend could not be opened or used (no such device, nobody listening, ...)."""

    exit_status = 74  # EX_IOERR


class NetworkPermissionError(NetworkError):
    """The host refused a network resource to this user (a TAP without CAP_NET_ADMIN, ...)."""

    exit_status = 77  # EX_NOPERM
