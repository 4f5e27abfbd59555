"""The TAP backend, inside a network namespace each test creates (no frame leaves this
machine): the ioctl's numbers against the kernel's header, frames both ways between the
backend and the TAP's host side, the namespace's own IP stack as a peer, and the errors
(no such device without privilege, someone else's TAP, a busy TAP, not a TAP, bad names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from kvmpy.console import IoThread
from kvmpy.net import NetworkError, NetworkPermissionError, open_backend, parse_net
from kvmpy.net import tap as tapmod
from kvmpy.net.tap import IFF_NO_PI, IFF_TAP, IFNAMSIZ, IFREQ_SIZE, TUNSETIFF, TapBackend, ifname_problem

try:
    import netpeer
except ImportError:
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import netpeer

NOBODY = 65534

PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
int main(void) { printf("%lu %d %d %d %zu %zu\n", (unsigned long)TUNSETIFF, IFF_TAP, IFF_NO_PI,
    IFNAMSIZ, sizeof(struct ifreq), offsetof(struct ifreq, ifr_flags)); return 0; }
"""


def test_ioctl_numbers_match_the_kernel_header(tmp_path):
    """TUNSETIFF is computed as _IOW('T', 202, int) and struct ifreq declared by hand in tap.py:
    the compiler, reading <linux/if_tun.h> and <net/if.h>, must agree with every number."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to read <linux/if_tun.h> (Debian: apt-get install gcc)")
    src, exe = tmp_path / "probe.c", tmp_path / "probe"
    src.write_text(PROBE)
    p = subprocess.run(["gcc", "-o", str(exe), str(src)], capture_output=True, text=True)
    if p.returncode and "No such file" in p.stderr:
        pytest.skip(f"kernel headers missing (Debian: apt-get install linux-libc-dev): {p.stderr}")
    assert p.returncode == 0, p.stderr
    tunsetiff, iff_tap, iff_no_pi, ifnamsiz, ifreq_size, flags_off = map(
        int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split())
    assert TUNSETIFF == tunsetiff == 0x400454CA
    assert (IFF_TAP, IFF_NO_PI, IFNAMSIZ, IFREQ_SIZE) == (iff_tap, iff_no_pi, ifnamsiz, ifreq_size)
    assert tapmod._IFREQ_FLAGS.size == ifreq_size and flags_off == 16


@pytest.mark.parametrize("name, problem", [
    ("tap0", None), ("t", None), ("x" * 15, None), ("br-lan.1", None),
    ("", "empty"), ("x" * 16, "at most 15"), ("a/b", "'/'"), ("a:b", "':'"), ("a b", "spaces"),
    ("tap%d", "'%'"), (".", "not interface names"), ("tap\u00e9", "ASCII"), ("a\tb", "spaces"),
])
def test_interface_names(name, problem):
    got = ifname_problem(name)
    assert (got is None) if problem is None else (problem in got)


def test_bad_name_is_refused_before_touching_the_kernel():
    with pytest.raises(NetworkError, match="is not valid"):
        TapBackend("a/b")


# --- inside a namespace of our own -------------------------------------------------------------
@pytest.fixture
def ns():
    """A namespace with tap0 up and no address: the kernel stays silent on it."""
    yield from netpeer.netns_or_skip(host_cidr=None)


@pytest.fixture
def ns_ip():
    """A namespace with tap0 up and 10.0.2.2/24: the namespace's IP stack is the peer."""
    yield from netpeer.netns_or_skip()


@pytest.fixture
def io():
    t = IoThread()
    t.start()
    yield t
    t.stop()


def eth(i: int, size: int = 60, ethertype: int = 0x88B5) -> bytes:
    dst, src = bytes.fromhex("525400123456"), bytes.fromhex("525400abcdef")
    body = i.to_bytes(4, "big") + bytes((i * 3 + j) & 0xFF for j in range(size - 18))
    return dst + src + ethertype.to_bytes(2, "big") + body


def is_ours(frame: bytes) -> bool:
    """Our test frames only: a kernel may still say something on a fresh link."""
    return netpeer.ethertype(frame) == 0x88B5


def ours(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if is_ours(f)]


def recv_ours(pkt, timeout: float = 5.0) -> bytes | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        f = pkt.recv(timeout=max(0.0, end - time.monotonic()))
        if f is None or netpeer.ethertype(f) == 0x88B5:
            return f
    return None


def test_frames_flow_both_ways(ns, io):
    backend = ns.call(open_backend, parse_net("tap,ifname=tap0"))
    pkt = ns.call(netpeer.PacketEndpoint, "tap0")
    sink = netpeer.FrameSink(keep=is_ours)
    backend.attach(io, threading.Lock(), sink)
    try:
        assert backend.ifname == "tap0" and not backend.created
        sizes = [60, 64, 590, 1514]
        for i, n in enumerate(sizes):  # guest -> host side
            assert backend.send(eth(i, n))
        got = [recv_ours(pkt) for _ in sizes]
        assert got == [eth(i, n) for i, n in enumerate(sizes)]
        for i, n in enumerate(sizes):  # host side -> guest
            pkt.send(eth(100 + i, n))
        assert sink.wait(len(sizes))
        assert ours(sink.frames) == [eth(100 + i, n) for i, n in enumerate(sizes)]
        assert backend.stats.tx_frames == backend.stats.rx_frames == len(sizes)
    finally:
        pkt.close()
        backend.close()


def test_held_frames_arrive_in_order(ns, io):
    backend = ns.call(TapBackend, "tap0")
    pkt = ns.call(netpeer.PacketEndpoint, "tap0")
    sink = netpeer.FrameSink(keep=is_ours)
    sink.accept = False
    backend.attach(io, threading.Lock(), sink)
    try:
        for i in range(30):
            pkt.send(eth(i))
        deadline = time.monotonic() + 5
        while sink.refused == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.refused and not sink.frames
        sink.accept = True
        backend.rx_ready()
        assert sink.wait(30)
        assert ours(sink.frames) == [eth(i) for i in range(30)]
    finally:
        pkt.close()
        backend.close()


def test_the_namespace_stack_answers_arp_and_udp_echo(ns_ip, io):
    """What the guest program sees through --net tap: the host answers ARP for 10.0.2.2, and a
    UDP echo on 10.0.2.2:7 in the namespace returns datagrams."""
    backend = ns_ip.call(TapBackend, "tap0")
    sink = netpeer.FrameSink()
    backend.attach(io, threading.Lock(), sink)
    g = netpeer.GUEST_MAC
    try:
        with netpeer.UdpEchoServer(ns=ns_ip) as echo:
            backend.send(netpeer.arp_frame(netpeer.ARP_REQUEST, g, netpeer.GUEST_IP, b"\0" * 6,
                                           netpeer.PEER_IP))
            assert sink.wait(1)
            op, host_mac, spa, tha, tpa = next(filter(None, map(netpeer.parse_arp, sink.frames)))
            assert (op, spa, tha, tpa) == (netpeer.ARP_REPLY, netpeer.PEER_IP, g, netpeer.GUEST_IP)
            backend.send(netpeer.udp_frame(g, host_mac, netpeer.GUEST_IP, netpeer.PEER_IP, 40000, 7,
                                           b"through the tap" * 20))
            deadline = time.monotonic() + 5
            while not any(map(netpeer.parse_udp, sink.frames)) and time.monotonic() < deadline:
                time.sleep(0.01)
            reply = next(u for u in map(netpeer.parse_udp, sink.frames) if u is not None)
            assert reply.payload == b"through the tap" * 20 and reply.dport == 40000
            assert len(echo.datagrams) == 1
    finally:
        backend.close()


def test_a_tap_that_does_not_exist_is_created_up_and_transient(ns, io):
    backend = ns.call(TapBackend, "kvmtap7")
    try:
        assert backend.created
        assert ns.interface_exists("kvmtap7")
        link = ns.run("ip", "-o", "link", "show", "kvmtap7").stdout
        assert "<" in link and "UP" in link.split("<", 1)[1].split(">", 1)[0]
    finally:
        backend.close()
    assert not ns.interface_exists("kvmtap7"), "a TAP kvmpy created must go away with it"


def test_a_tap_in_use_by_another_process(ns):
    first = ns.call(TapBackend, "tap0")
    try:
        with pytest.raises(NetworkError) as e:
            ns.call(TapBackend, "tap0")
        assert str(e.value) == ("TAP device tap0 is already in use by another process (a "
                                "single-queue TAP takes one user at a time)")
        assert e.value.exit_status == 74
    finally:
        first.close()
    ns.call(TapBackend, "tap0").close()  # free again once closed


def test_an_interface_that_is_not_a_tap(ns):
    ns.ip("tuntap", "add", "dev", "tun9", "mode", "tun")
    for name in ("lo", "tun9"):
        with pytest.raises(NetworkError, match=f"^{name} exists but is not a single-queue TAP"):
            ns.call(TapBackend, name)


def _tun_fd(ns) -> int:
    """/dev/net/tun opened with root's rights inside the namespace (a tun descriptor belongs
    to the namespace it was opened in)."""
    return ns.call(os.open, "/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def test_unprivileged_user_without_a_tap_of_their_own(ns):
    with pytest.raises(NetworkPermissionError) as e:
        ns.call(TapBackend, "nosuch0", as_uid=NOBODY)
    msg = str(e.value)
    assert e.value.exit_status == 77
    # /dev/net/tun is 0600 on some hosts (then opening it fails), 0666 on most
    assert ("no permission to open /dev/net/tun" in msg
            or msg.startswith("there is no TAP device nosuch0, and creating one needs CAP_NET_ADMIN"))


def test_unprivileged_user_may_not_create_a_tap(ns, monkeypatch):
    fd = _tun_fd(ns)
    monkeypatch.setattr(tapmod, "_open_tun", lambda: os.dup(fd))
    try:
        with pytest.raises(NetworkPermissionError) as e:
            ns.call(TapBackend, "nosuch0", as_uid=NOBODY)
        assert str(e.value) == ("there is no TAP device nosuch0, and creating one needs CAP_NET_ADMIN "
                                "or a pre-created TAP owned by you: ip tuntap add nosuch0 mode tap "
                                "user nobody")
        assert not ns.interface_exists("nosuch0")
    finally:
        os.close(fd)


def test_unprivileged_user_and_someone_elses_tap(ns, monkeypatch):
    ns.ip("tuntap", "add", "dev", "taproot", "mode", "tap", "user", "root")
    fd = _tun_fd(ns)
    monkeypatch.setattr(tapmod, "_open_tun", lambda: os.dup(fd))
    try:
        with pytest.raises(NetworkPermissionError) as e:
            ns.call(TapBackend, "taproot", as_uid=NOBODY)
        assert str(e.value) == ("TAP device taproot belongs to another user: attaching to it needs "
                                "CAP_NET_ADMIN or a pre-created TAP owned by you: ip tuntap add "
                                "taproot mode tap user nobody")
    finally:
        os.close(fd)


def test_unprivileged_user_with_their_own_tap(ns, io, monkeypatch):
    """The recipe the error message gives works: a TAP created for the user attaches without
    any privilege, and frames flow."""
    ns.ip("tuntap", "add", "dev", "tapnobody", "mode", "tap", "user", str(NOBODY))
    ns.sysctl("net/ipv6/conf/tapnobody/disable_ipv6", "1")
    ns.ip("link", "set", "tapnobody", "up")
    fd = _tun_fd(ns)
    monkeypatch.setattr(tapmod, "_open_tun", lambda: os.dup(fd))
    try:
        backend = ns.call(TapBackend, "tapnobody", as_uid=NOBODY)
    finally:
        os.close(fd)
    pkt = ns.call(netpeer.PacketEndpoint, "tapnobody")
    sink = netpeer.FrameSink(keep=is_ours)
    backend.attach(io, threading.Lock(), sink)
    try:
        assert not backend.created
        backend.send(eth(1))
        assert recv_ours(pkt) == eth(1)
        pkt.send(eth(2))
        assert sink.wait(1) and ours(sink.frames) == [eth(2)]
    finally:
        pkt.close()
        backend.close()


def test_the_namespace_helper_cleans_up():
    reason = netpeer.netns_skip_reason()
    if reason:
        pytest.skip(reason)
    with netpeer.NetNamespace() as ns:
        name = ns.name
        assert ns.interface_exists("tap0")
        assert ns.run("ip", "-o", "addr", "show", "tap0").stdout.count("10.0.2.2/24") == 1
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed


def test_netpeer_tap_endpoint_talks_to_the_namespace_stack(ns_ip):
    """netpeer's own TAP endpoint (the test as the guest side, without kvmpy) sees what a guest
    sees: the host's ARP reply."""
    ep = ns_ip.call(netpeer.FdEndpoint.open_tap, "tap0")
    try:
        g = netpeer.GUEST_MAC
        request = netpeer.arp_frame(netpeer.ARP_REQUEST, g, netpeer.GUEST_IP, b"\0" * 6, netpeer.PEER_IP)
        deadline = time.monotonic() + 5
        arp = None
        while arp is None and time.monotonic() < deadline:
            # asked again each round, as a guest's ARP does: a frame sent while the TAP's carrier
            # is still coming up after the open is dropped by the kernel
            ep.send(request)
            f = ep.recv(timeout=0.5)
            arp = netpeer.parse_arp(f) if f else None
        assert arp is not None and arp[0] == netpeer.ARP_REPLY and arp[2] == netpeer.PEER_IP
    finally:
        ep.close()
