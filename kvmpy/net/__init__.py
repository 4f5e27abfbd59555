"""Network backends: where the frames of a guest's NIC go on the host.

* ``options``: ``--net`` values parsed into ``NetSpec`` (``parse_nets``), MAC checks and defaults.
* ``base``: the ``Backend`` interface every backend implements::

      backend = open_backend(spec)                  # opens the host side: errors before the guest runs
      backend.attach(machine.io, machine.lock, nic.receive)   # host -> guest on the I/O thread
      nic = E1000(..., transmit=backend.send)       # guest -> host, never blocking a vCPU
      backend.rx_ready()                            # the guest gave the NIC buffers: retry held frames
      backend.close()

  ``deliver`` (the NIC's ``receive``) is called under the machine's lock and returns False when
  the guest has no room: the backend holds the frame and retries; it never drops it silently.
* ``tap``: a host TAP interface (``--net tap,ifname=tap0``).
* ``socket``: a Unix stream socket with QEMU's length framing, or UDP on 127.0.0.1, linking two
  guests without privileges.
* ``errors``: ``NetworkError`` (exit status 74) and ``NetworkPermissionError`` (77).

This package depends only on ``kvmpy.errors`` (and names ``kvmpy.console.IoThread`` in type
hints): the machine builder wires it to a NIC model, which knows nothing of backends but a
``transmit`` callable.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import MAX_FRAME, Backend, NetStats
from .errors import NetworkError, NetworkPermissionError
from .options import NetSpec, default_mac, format_mac, parse_mac, parse_net, parse_nets

__all__ = [
    "MAX_FRAME",
    "Backend",
    "NetSpec",
    "NetStats",
    "NetworkError",
    "NetworkPermissionError",
    "default_mac",
    "format_mac",
    "open_backend",
    "open_backends",
    "parse_mac",
    "parse_net",
    "parse_nets",
]


def open_backend(spec: NetSpec) -> Backend:
    """Open the host side of one NIC (raises ``NetworkError`` with the reason)."""
    if spec.kind == "tap":
        from .tap import TapBackend

        assert spec.ifname is not None
        return TapBackend(spec.ifname)
    from .socket import StreamBackend, UdpBackend

    if spec.listen is not None:
        return StreamBackend.listen(spec.listen)
    if spec.connect is not None:
        return StreamBackend.connect(spec.connect)
    assert spec.udp is not None
    return UdpBackend(*spec.udp)


def open_backends(specs: Sequence[NetSpec]) -> list[Backend]:
    """Open every NIC's backend, listeners first (so a NIC of the same guest may connect to
    another's ``listen=`` path); returned in ``specs`` order. On an error the ones already
    opened are closed again."""
    order = sorted(range(len(specs)), key=lambda i: specs[i].listen is None)
    opened: dict[int, Backend] = {}
    try:
        for i in order:
            opened[i] = open_backend(specs[i])
    except BaseException:
        for b in opened.values():
            b.close()
        raise
    return [opened[i] for i in range(len(specs))]
