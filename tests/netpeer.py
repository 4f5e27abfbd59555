"""The host side of a guest's network link, for tests: a peer that answers ARP and echoes UDP,
the transports it can sit on, and a network namespace with a TAP device to run guests in.

Why a peer of our own: the guest program ``firmware/tests/e1000.c`` (and later iPXE or Linux)
must exchange real frames with something whose answers the test controls and can count, on
every transport a backend offers, without any frame leaving this machine.

* ``Responder``: pure frame logic. It answers ARP requests for its address (10.0.2.2 by
  default, the address QEMU's user network gives the host) and echoes UDP datagrams sent to
  port 7 (the echo service), swapping addresses and ports and recomputing the checksums; it
  keeps every frame it saw and counts them by kind.
* Endpoints, one frame per ``recv``/``send``: ``FdEndpoint`` (a TAP descriptor the test opened
  itself: then the test *is* the guest side), ``PacketEndpoint`` (a raw ``AF_PACKET`` socket on
  an interface: the host side of a TAP, at layer 2), ``StreamEndpoint`` (the other end of
  ``--net socket,listen=|connect=``: QEMU's 4-byte big-endian length framing) and
  ``UdpEndpoint`` (the other end of ``--net socket,udp=``).
* ``PeerThread``: a Responder serving an endpoint in the background until stopped.
* ``NetNamespace``: ``ip netns add``, a TAP device in it (``ip tuntap add ... mode tap``), the
  host side's 10.0.2.2/24, IPv6 off on the TAP (no router solicitations in the guest's way),
  torn down at exit. ``exec_prefix()`` runs kvmpy inside (``ip netns exec``); ``call(fn)`` runs
  Python code in it (a thread joins the namespace with setns(2): sockets and TAP descriptors
  it opens stay bound to the namespace). ``netns_skip_reason()`` says why it cannot be made;
  the only acceptable reason is a missing privilege.
* ``UdpEchoServer``: a kernel-socket echo on 10.0.2.2:7 inside a namespace, for when the
  namespace's own IP stack (which answers ARP itself) is the guest's peer.
* ``FrameSink``: a backend's ``deliver`` for unit tests (keeps, refuses or ignores frames).

A guest-program test over TAP, for example::

    @pytest.fixture
    def netns():
        yield from netpeer.netns_or_skip()      # skips only without root / CAP_NET_ADMIN

    def test_e1000_tap(netns, guest_program):
        with netpeer.UdpEchoServer(ns=netns) as echo:
            p = netns.run(sys.executable, "-m", "kvmpy", "boot", "--kernel", str(guest_program("e1000")),
                          "--net", "tap,ifname=tap0", "--append", "frames=16", timeout=120)
        assert "E1000 OK" in p.stdout and len(echo.datagrams) == 16

and over a socket backend, ``PeerThread(StreamEndpoint.listen(path))`` with kvmpy started with
``--net socket,connect=PATH`` (or ``UdpEndpoint(5556, 5555)`` with ``socket,udp=5555:5556``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

PEER_IP = "10.0.2.2"
GUEST_IP = "10.0.2.15"
PEER_MAC = bytes.fromhex("52550a000202")  # QEMU's user-network host address
GUEST_MAC = bytes.fromhex("525400123456")
BROADCAST = b"\xff" * 6
ECHO_PORT = 7
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
IPPROTO_UDP = 17
ARP_REQUEST, ARP_REPLY = 1, 2
PACKET_OUTGOING = 4  # <linux/if_packet.h>: a frame this host sent, seen by a packet socket

T = TypeVar("T")


# --- frames ---------------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """UDP checksum over the IPv4 pseudo-header; 0 is sent as 0xFFFF (RFC 768)."""
    c = checksum(src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, len(udp)) + udp)
    return c or 0xFFFF


def ip4(text: str) -> bytes:
    return socket.inet_aton(text)


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp_frame(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, dst: bytes | None = None) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, sha, ip4(spa), tha, ip4(tpa))
    return ether(dst or (BROADCAST if op == ARP_REQUEST else tha), sha, ETH_P_ARP, body)


def udp_frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, sport: int, dport: int,
              payload: bytes, ident: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame with correct IP and UDP checksums."""
    s, d = ip4(src_ip), ip4(dst_ip)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    udp = udp[:6] + struct.pack("!H", udp_checksum(s, d, udp)) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0x4000, 64, IPPROTO_UDP, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return ether(dst_mac, src_mac, ETH_P_IP, hdr + udp)


@dataclass
class Udp:
    """A parsed Ethernet/IPv4/UDP frame (what ``parse_udp`` found valid)."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    payload: bytes
    ident: int


def ethertype(frame: bytes) -> int:
    return struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else -1


def parse_arp(frame: bytes) -> tuple[int, bytes, str, bytes, str] | None:
    """(op, sender MAC, sender IP, target MAC, target IP) of an Ethernet/IPv4 ARP frame."""
    if ethertype(frame) != ETH_P_ARP or len(frame) < 42:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return op, sha, socket.inet_ntoa(spa), tha, socket.inet_ntoa(tpa)


def parse_udp(frame: bytes) -> Udp | None:
    """The UDP datagram in ``frame``, or None when it is not one or a checksum is wrong
    (frames may carry padding beyond the IP datagram: Ethernet's 60-byte minimum)."""
    if ethertype(frame) != ETH_P_IP or len(frame) < 14 + 28:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0xF) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    if ip[0] >> 4 != 4 or ihl < 20 or total > len(ip) or total < ihl + 8 or ip[9] != IPPROTO_UDP:
        return None
    if checksum(ip[:ihl]) != 0 or struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:
        return None  # a bad header, or a fragment
    udp = ip[ihl:total]
    sport, dport, ulen, csum = struct.unpack_from("!HHHH", udp)
    if ulen != len(udp):
        return None
    if csum and checksum(ip[12:16] + ip[16:20] + struct.pack("!BBH", 0, IPPROTO_UDP, ulen) + udp):
        return None
    return Udp(frame[6:12], frame[:6], socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]),
               sport, dport, udp[8:], struct.unpack_from("!H", ip, 4)[0])


@dataclass
class Counts:
    frames: int = 0
    arp_requests: int = 0  # for our address
    arp_replies: int = 0  # answers the guest sent us (to our requests)
    udp_echoed: int = 0
    other: int = 0  # frames we did not answer


@dataclass
class Responder:
    """Answers ARP for ``ip`` and echoes UDP to ``port``; remembers what it saw.

    ``handle`` is called from one thread at a time (a PeerThread); read ``frames`` and
    ``counts`` after stopping it, or tolerate a frame in flight."""

    ip: str = PEER_IP
    mac: bytes = PEER_MAC
    port: int = ECHO_PORT
    frames: list[bytes] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    echoed: list[Udp] = field(default_factory=list)
    #: called with each frame the peer will not answer (e.g. to check a loopback frame never came)
    on_other: Callable[[bytes], None] | None = None

    def handle(self, frame: bytes) -> list[bytes]:
        self.frames.append(frame)
        self.counts.frames += 1
        arp = parse_arp(frame)
        if arp is not None:
            op, sha, spa, _tha, tpa = arp
            if op == ARP_REQUEST and tpa == self.ip:
                self.counts.arp_requests += 1
                return [arp_frame(ARP_REPLY, self.mac, self.ip, sha, spa)]
            if op == ARP_REPLY and tpa == self.ip:
                self.counts.arp_replies += 1
                return []
        udp = parse_udp(frame)
        if udp is not None and udp.dst_ip == self.ip and udp.dport == self.port:
            self.counts.udp_echoed += 1
            self.echoed.append(udp)
            return [udp_frame(self.mac, udp.src_mac, self.ip, udp.src_ip, udp.dport, udp.sport,
                              udp.payload, ident=udp.ident ^ 0x8000)]
        self.counts.other += 1
        if self.on_other is not None:
            self.on_other(frame)
        return []


# --- endpoints --------------------------------------------------------------------------------
class Endpoint(Protocol):
    def fileno(self) -> int: ...

    def recv(self, timeout: float | None = None) -> bytes | None: ...

    def send(self, frame: bytes) -> None: ...

    def close(self) -> None: ...


def _readable(fd: int, timeout: float | None) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class FdEndpoint:
    """A TAP descriptor (IFF_TAP|IFF_NO_PI): one frame per read and write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open_tap(cls, ifname: str) -> FdEndpoint:
        """Attach to (or create) TAP ``ifname`` in the calling thread's namespace."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:  # TUNSETIFF, IFF_TAP | IFF_NO_PI: spelled out here, independent of kvmpy.net.tap
            fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", ifname.encode(), 0x1002))
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def fileno(self) -> int:
        return self.fd

    def recv(self, timeout: float | None = None) -> bytes | None:
        if not _readable(self.fd, timeout):
            return None
        return os.read(self.fd, 65536)

    def send(self, frame: bytes) -> None:
        os.write(self.fd, frame)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PacketEndpoint:
    """A raw AF_PACKET socket on an interface: every frame that crosses it, at layer 2.

    On a TAP interface, what the TAP's descriptor side writes arrives here, and what this
    sends leaves through the TAP towards the descriptor side. Frames this socket sent itself
    (PACKET_OUTGOING) are skipped."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.ifname = ifname

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, timeout: float | None = None) -> bytes | None:
        while _readable(self.sock.fileno(), timeout):
            data, addr = self.sock.recvfrom(65536)
            if addr[2] != PACKET_OUTGOING:
                return data
        return None

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()


class StreamEndpoint:
    """A Unix stream socket with 4-byte big-endian length framing (QEMU's -netdev stream)."""

    def __init__(self, sock: socket.socket, listener: socket.socket | None = None,
                 path: str | None = None) -> None:
        self.sock = sock
        self.listener = listener
        self.path = path
        self.buf = bytearray()

    @classmethod
    def connect(cls, path: str, timeout: float = 5.0) -> StreamEndpoint:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.settimeout(None)
        return cls(s)

    @classmethod
    def listen(cls, path: str) -> StreamEndpoint:
        """Bind and listen now; the first ``recv`` (or ``accept``) takes the connection."""
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        return cls(None, lst, path)  # type: ignore[arg-type]

    def accept(self, timeout: float | None = None) -> bool:
        if self.sock is None:
            assert self.listener is not None
            if not _readable(self.listener.fileno(), timeout):
                return False
            self.sock, _ = self.listener.accept()
        return True

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else self.listener.fileno()

    def recv(self, timeout: float | None = None) -> bytes | None:
        if not self.accept(timeout):
            return None
        while True:
            if len(self.buf) >= 4:
                n = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= 4 + n:
                    frame = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return frame
            if not _readable(self.sock.fileno(), timeout):
                return None
            data = self.sock.recv(65536 + 4)
            if not data:
                raise EOFError("the peer closed the stream")
            self.buf += data

    def send(self, frame: bytes) -> None:
        if not self.accept(None):
            raise RuntimeError("not connected")
        self.sock.sendall(len(frame).to_bytes(4, "big") + frame)

    def close(self) -> None:
        for s in (self.sock, self.listener):
            if s is not None:
                s.close()
        if self.path and self.listener is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class UdpEndpoint:
    """UDP on 127.0.0.1: bound to ``local_port``, sending to ``remote_port``."""

    def __init__(self, local_port: int, remote_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", local_port))
        self.remote = ("127.0.0.1", remote_port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, timeout: float | None = None) -> bytes | None:
        if not _readable(self.sock.fileno(), timeout):
            return None
        return self.sock.recv(65536)

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.remote)

    def close(self) -> None:
        self.sock.close()


class PeerThread:
    """Serves ``responder`` on ``endpoint`` in a background thread until ``stop()``."""

    def __init__(self, endpoint: Endpoint, responder: Responder | None = None) -> None:
        self.endpoint = endpoint
        self.responder = responder or Responder()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._seen = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="netpeer", daemon=True)

    def start(self) -> PeerThread:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.endpoint.recv(timeout=0.05)
                if frame is None:
                    continue
                for answer in self.responder.handle(frame):
                    self.endpoint.send(answer)
                with self._seen:
                    self._seen.notify_all()
        except EOFError:
            pass
        except BaseException as exc:  # reported by stop(): a test must see a broken peer
            self.error = exc

    def wait_for(self, predicate: Callable[[Responder], bool], timeout: float) -> bool:
        """Wait until ``predicate(responder)`` holds (e.g. ``lambda r: r.counts.udp_echoed >= 8``)."""
        with self._seen:
            return self._seen.wait_for(lambda: predicate(self.responder) or not self.thread.is_alive(),
                                       timeout) and predicate(self.responder)

    def stop(self) -> Responder:
        self._stop.set()
        self.thread.join(timeout=5)
        self.endpoint.close()
        if self.error is not None:
            raise self.error
        return self.responder

    def __enter__(self) -> PeerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- network namespaces -----------------------------------------------------------------------
CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN = 12
_libc = ctypes.CDLL(None, use_errno=True)
_ns_counter = itertools.count()


def has_cap_net_admin() -> bool:
    """Whether this process may create namespaces, TAP devices and raw sockets."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def netns_skip_reason() -> str | None:
    """Why a test cannot build its own namespace and TAP here; None when it can."""
    if not has_cap_net_admin():
        return ("needs root or CAP_NET_ADMIN to create a network namespace and a TAP device "
                "(run the tests as root, or give python CAP_NET_ADMIN)")
    return None


def _ip(*args: str) -> None:
    if shutil.which("ip") is None:
        raise RuntimeError("iproute2's 'ip' is not installed (Debian: apt-get install iproute2)")
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {p.stderr.strip()}")


class NetNamespace:
    """A network namespace of our own with a TAP device and the host side's address on it.

    ``with NetNamespace() as ns:`` creates ``kvmpy-<pid>-<n>`` with ``lo`` up and TAP ``tap``
    (owned by ``tap_user`` if given, so an unprivileged kvmpy may attach), the address
    ``host_cidr`` on it (None: no address, the kernel then stays silent) and the link up;
    everything goes away with the namespace at exit, even when the test failed."""

    def __init__(self, tap: str | None = "tap0", host_cidr: str | None = f"{PEER_IP}/24",
                 tap_user: str | None = None) -> None:
        self.name = f"kvmpy-{os.getpid()}-{next(_ns_counter)}"
        self.tap = tap
        self.host_cidr = host_cidr
        self.tap_user = tap_user
        self._created = False

    def __enter__(self) -> NetNamespace:
        reason = netns_skip_reason()
        if reason:
            raise PermissionError(reason)
        _ip("netns", "add", self.name)
        self._created = True
        try:
            self.ip("link", "set", "lo", "up")
            if self.tap:
                self.ip("tuntap", "add", "dev", self.tap, "mode", "tap",
                        *(("user", self.tap_user) if self.tap_user else ()))
                self.sysctl(f"net/ipv6/conf/{self.tap}/disable_ipv6", "1")
                if self.host_cidr:
                    self.ip("addr", "add", self.host_cidr, "dev", self.tap)
                self.ip("link", "set", self.tap, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._created:
            self._created = False
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def run(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run([*self.exec_prefix(), *cmd], **kwargs)

    def sysctl(self, key: str, value: str) -> bool:
        """Write /proc/sys/KEY inside the namespace; False when the key does not exist."""
        return self.call(_write_proc_sys, key, value)

    def call(self, fn: Callable[..., T], *args, as_uid: int | None = None, as_gid: int | None = None,
             **kwargs) -> T:
        """Run ``fn`` on a thread that has joined this namespace; return what it returns.

        Network namespaces are per thread: descriptors ``fn`` opens (sockets, /dev/net/tun)
        stay bound to the namespace after the thread ends, so the test keeps using them.
        ``as_uid``/``as_gid``: the thread (only it: raw syscalls, not glibc's process-wide
        setuid) becomes that user without capabilities first, to see what an unprivileged
        user would get."""
        result: list = []
        error: list[BaseException] = []

        def body() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise OSError(e, f"setns into {self.name}: {os.strerror(e)}")
                finally:
                    os.close(fd)
                if as_uid is not None:
                    _drop_thread_credentials(as_uid, as_gid if as_gid is not None else as_uid)
                result.append(fn(*args, **kwargs))
            except BaseException as exc:
                error.append(exc)

        t = threading.Thread(target=body, name=f"netns-{self.name}")
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def interface_exists(self, name: str) -> bool:
        return self.call(_if_exists, name)


# x86-64 system call numbers: the raw calls change the calling thread's credentials only
_SYS_SETGROUPS, _SYS_SETRESUID, _SYS_SETRESGID = 116, 117, 119


def _drop_thread_credentials(uid: int, gid: int) -> None:
    """This thread becomes uid/gid with no supplementary groups; the kernel clears its
    effective capabilities as the effective uid leaves 0 (the saved uid stays 0, so nothing
    else changes, and the thread is thrown away afterwards)."""
    for call, args in ((_SYS_SETGROUPS, (0, None)), (_SYS_SETRESGID, (-1, gid, -1)),
                       (_SYS_SETRESUID, (-1, uid, -1))):
        if _libc.syscall(call, *args) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"dropping thread credentials: {os.strerror(e)}")


def _write_proc_sys(key: str, value: str) -> bool:
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


def _if_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def netns_or_skip(**kwargs) -> Iterator[NetNamespace]:
    """Body of a pytest fixture: ``yield from netns_or_skip()`` gives a NetNamespace, or skips
    the test when (and only when) the privilege to make one is missing."""
    import pytest

    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    with NetNamespace(**kwargs) as ns:
        yield ns


class UdpEchoServer:
    """A UDP echo on ``ip:port`` in the calling thread's (or ``ns``'s) network namespace,
    counting the datagrams it echoed; for tests where the namespace's IP stack is the peer."""

    def __init__(self, ip: str = PEER_IP, port: int = ECHO_PORT, ns: NetNamespace | None = None) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            return s

        self.sock = ns.call(make) if ns is not None else make()
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="udp-echo", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not _readable(self.sock.fileno(), 0.05):
                continue
            try:
                data, addr = self.sock.recvfrom(65536)
                self.datagrams.append((data, addr))  # before the echo: a test may look at once
                self.sock.sendto(data, addr)
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return
                continue

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> UdpEchoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class FrameSink:
    """A backend's ``deliver`` for tests: keeps frames, can refuse them (a full RX ring), and
    lets a test wait for a count. ``accept`` may be a bool or a function of the frame."""

    def __init__(self, keep: Callable[[bytes], bool] | None = None) -> None:
        self.frames: list[bytes] = []
        self.refused = 0
        self.ignored = 0
        self.accept: bool | Callable[[bytes], bool] = True
        #: frames for which keep() is false are taken but not kept (e.g. a kernel's IPv6 chatter)
        self.keep = keep
        self._cond = threading.Condition()

    def __call__(self, frame: bytes) -> bool:
        ok = self.accept(frame) if callable(self.accept) else self.accept
        with self._cond:
            if not ok:
                self.refused += 1
                return False
            if self.keep is not None and not self.keep(frame):
                self.ignored += 1
                return True
            self.frames.append(frame)
            self._cond.notify_all()
        return True

    def wait(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.frames) >= count, timeout)


if __name__ == "__main__":  # a peer for manual runs: python tests/netpeer.py udp 5556 5555
    import sys

    kind, *rest = sys.argv[1:] or ["udp", "5556", "5555"]
    if kind == "udp":
        ep: Endpoint = UdpEndpoint(int(rest[0]), int(rest[1]))
    elif kind == "listen":
        ep = StreamEndpoint.listen(rest[0])
    elif kind == "connect":
        ep = StreamEndpoint.connect(rest[0])
    else:
        ep = PacketEndpoint(rest[0])
    peer = PeerThread(ep).start()
    try:
        peer.thread.join()
    except KeyboardInterrupt:
        pass
    r = peer.stop()
    print(r.counts)
