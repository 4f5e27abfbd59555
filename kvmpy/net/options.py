"""``--net`` values: what a user writes, checked and turned into ``NetSpec`` values.

Syntax (QEMU's comma-separated ``KIND,KEY=VALUE`` style; several ``--net`` give several NICs)::

    --net tap,ifname=tap0[,mac=52:54:00:12:34:56]
    --net socket,listen=PATH[,mac=...]        Unix stream socket, waits for a peer
    --net socket,connect=PATH[,mac=...]       connects to a listening kvmpy (or QEMU)
    --net socket,udp=LOCAL:REMOTE[,mac=...]   UDP datagrams on 127.0.0.1
    --net none                                no NIC (also QEMU's spelling)

A NIC without ``mac=`` gets 52:54:00:12:34:56 plus its index (QEMU's default OUI and first
address, so guests and scripts written for QEMU see familiar addresses); two NICs with the same
address are refused, as is a multicast or all-zero address: an Ethernet station address is
unicast (bit 0 of the first octet clear). Everything malformed is a ``UsageError`` (exit status
64); whether the TAP exists or someone listens is only known when the backend opens
(``NetworkError``, 74).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kvmpy.errors import UsageError

from .socket import unix_path_problem
from .tap import ifname_problem

#: QEMU's default MAC for the first NIC (OUI 52:54:00, locally administered).
DEFAULT_MAC = bytes.fromhex("525400123456")

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}$")
_KEYS = {"tap": ("ifname", "mac"), "socket": ("listen", "connect", "udp", "mac")}
_SYNTAX = ("use tap,ifname=NAME, socket,listen=PATH, socket,connect=PATH, "
           "socket,udp=LOCAL:REMOTE or none")


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """Six hex octets separated by ':' (or '-'); unicast and not all zero."""
    if not _MAC_RE.match(text):
        raise UsageError(f"MAC address {text!r} is not valid: write six two-digit hex octets, "
                         "e.g. 52:54:00:12:34:56")
    mac = bytes.fromhex(re.sub("[:-]", "", text))
    if mac[0] & 1:
        raise UsageError(f"MAC address {text} is a multicast address (the first octet is odd): a "
                         "NIC needs a unicast address, e.g. 52:54:00:12:34:56")
    if not any(mac):
        raise UsageError(f"MAC address {text} is all zeros: a NIC needs a real address")
    return mac


def default_mac(index: int) -> bytes:
    """52:54:00:12:34:56 + ``index``: the default address of the ``index``-th NIC."""
    value = int.from_bytes(DEFAULT_MAC, "big") + index
    return (value & ((1 << 48) - 1)).to_bytes(6, "big")


@dataclass(frozen=True)
class NetSpec:
    """One NIC and its backend, as the user asked for it (validated, not opened)."""

    kind: str  # "tap" or "socket"
    mac: bytes
    index: int = 0
    ifname: str | None = None  # tap
    listen: str | None = None  # socket over a Unix stream socket
    connect: str | None = None
    udp: tuple[int, int] | None = None  # socket over UDP on 127.0.0.1: (local, remote)

    @property
    def mac_text(self) -> str:
        return format_mac(self.mac)

    def describe(self) -> str:
        """How the option would be written back: for messages and ``kvmpy info``."""
        if self.kind == "tap":
            where = f"ifname={self.ifname}"
        elif self.listen is not None:
            where = f"listen={self.listen}"
        elif self.connect is not None:
            where = f"connect={self.connect}"
        else:
            assert self.udp is not None
            where = f"udp={self.udp[0]}:{self.udp[1]}"
        return f"{self.kind},{where},mac={self.mac_text}"


def _fields(text: str, parts: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:
            raise UsageError(f"--net {text!r}: {part!r} is not KEY=VALUE")
        if key in fields:
            raise UsageError(f"--net {text!r}: {key} is given twice")
        fields[key] = value
    return fields


def _port(text: str, what: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"--net {text!r}: the {what} port {value!r} is not a number from 1 to 65535")
    return int(value)


def parse_net(text: str, index: int = 0) -> NetSpec | None:
    """One ``--net`` value; None for ``none``. ``index`` picks the default MAC."""
    kind, *parts = text.split(",")
    if kind == "none":
        if parts:
            raise UsageError(f"--net {text!r}: none takes no options")
        return None
    if kind not in _KEYS:
        raise UsageError(f"--net {text!r}: unknown kind {kind!r}; {_SYNTAX}")
    fields = _fields(text, parts)
    unknown = sorted(set(fields) - set(_KEYS[kind]))
    if unknown:
        raise UsageError(f"--net {text!r}: unknown key {unknown[0]!r} for {kind} "
                         f"(known: {', '.join(_KEYS[kind])})")
    mac = parse_mac(fields["mac"]) if "mac" in fields else default_mac(index)
    if kind == "tap":
        ifname = fields.get("ifname")
        if ifname is None:
            raise UsageError(f"--net {text!r}: name the TAP device with ifname=NAME")
        problem = ifname_problem(ifname)
        if problem:
            raise UsageError(f"--net {text!r}: TAP name {ifname!r} is not valid: {problem}")
        return NetSpec("tap", mac, index, ifname=ifname)
    ways = [k for k in ("listen", "connect", "udp") if k in fields]
    if len(ways) != 1:
        raise UsageError(f"--net {text!r}: socket needs exactly one of listen=PATH, connect=PATH "
                         "and udp=LOCAL:REMOTE")
    way = ways[0]
    value = fields[way]
    if way == "udp":
        local, colon, remote = value.partition(":")
        if not colon:
            raise UsageError(f"--net {text!r}: write udp=LOCAL_PORT:REMOTE_PORT (both on 127.0.0.1)")
        ports = (_port(text, "local", local), _port(text, "remote", remote))
        if ports[0] == ports[1]:
            raise UsageError(f"--net {text!r}: the local and remote ports must differ")
        return NetSpec("socket", mac, index, udp=ports)
    problem = unix_path_problem(value)
    if problem:
        raise UsageError(f"--net {text!r}: {way}={value!r}: {problem}")
    return NetSpec("socket", mac, index, **{way: value})


def parse_nets(values: Sequence[str]) -> list[NetSpec]:
    """All ``--net`` values of a command line, in order; NIC ``i`` defaults to MAC base + i.

    Refuses combinations that cannot work: ``none`` with a NIC, one MAC twice, one TAP, one
    listen or connect path or one local UDP port for two NICs."""
    if "none" in values and len(values) > 1:
        raise UsageError("--net none cannot be combined with other --net options")
    specs: list[NetSpec] = []
    for text in values:
        spec = parse_net(text, len(specs))
        if spec is not None:
            specs.append(spec)
    seen: dict[object, NetSpec] = {}
    for spec in specs:
        keys: list[tuple[str, object]] = [("MAC address", spec.mac_text)]
        if spec.ifname:
            keys.append(("TAP device", spec.ifname))
        # one NIC may listen where another connects (two NICs of one guest linked), but a
        # path cannot be listened on twice, and a listener takes one peer
        if spec.listen:
            keys.append(("listen path", spec.listen))
        if spec.connect:
            keys.append(("connect path", spec.connect))
        if spec.udp:
            keys.append(("local UDP port", spec.udp[0]))
        for what, value in keys:
            other = seen.get((what, value))
            if other is not None:
                raise UsageError(f"--net {spec.describe()} and --net {other.describe()} use the same "
                                 f"{what} ({value})")
            seen[(what, value)] = spec
    return specs
