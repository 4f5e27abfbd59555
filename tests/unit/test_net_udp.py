"""The UDP backend (socket,udp=LOCAL:REMOTE on 127.0.0.1): one datagram per frame, as QEMU's
-netdev dgram; only the configured peer is heard; errors are one sentence."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from kvmpy.console import IoThread
from kvmpy.net import NetworkError, open_backend, parse_net
from kvmpy.net.socket import UdpBackend

try:
    import netpeer
except ImportError:
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import netpeer


def free_ports(n: int) -> list[int]:
    """Ports nobody on 127.0.0.1 uses right now (the kernel picks them)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def io():
    t = IoThread()
    t.start()
    yield t
    t.stop()


def test_two_backends_exchange_frames(io):
    p1, p2 = free_ports(2)
    a = open_backend(parse_net(f"socket,udp={p1}:{p2}"))
    b = open_backend(parse_net(f"socket,udp={p2}:{p1}"))
    sa, sb = netpeer.FrameSink(), netpeer.FrameSink()
    lock = threading.Lock()
    a.attach(io, lock, sa)
    b.attach(io, lock, sb)
    try:
        frames = [bytes([i]) * (60 + i * 50) for i in range(30)]
        for f in frames:
            assert a.send(f)
            assert b.send(f[::-1])
        assert sb.wait(30) and sa.wait(30)
        assert sb.frames == frames
        assert sa.frames == [f[::-1] for f in frames]
        assert a.link_up and b.link_up
    finally:
        a.close()
        b.close()


def test_netpeer_answers_arp_and_echoes_udp(io):
    mine, peer = free_ports(2)
    backend = UdpBackend(mine, peer)
    sink = netpeer.FrameSink()
    backend.attach(io, threading.Lock(), sink)
    with netpeer.PeerThread(netpeer.UdpEndpoint(peer, mine)) as p:
        g = netpeer.GUEST_MAC
        backend.send(netpeer.arp_frame(netpeer.ARP_REQUEST, g, netpeer.GUEST_IP, b"\0" * 6, netpeer.PEER_IP))
        for seq in range(5):
            backend.send(netpeer.udp_frame(g, netpeer.PEER_MAC, netpeer.GUEST_IP, netpeer.PEER_IP,
                                           40000, 7, b"%d" % seq * 300))
        assert sink.wait(6)
    assert netpeer.parse_arp(sink.frames[0])[0] == netpeer.ARP_REPLY
    echoes = [netpeer.parse_udp(f) for f in sink.frames[1:]]
    assert [e.payload for e in echoes] == [b"%d" % seq * 300 for seq in range(5)]
    assert p.responder.counts.udp_echoed == 5
    backend.close()


def test_datagrams_from_anyone_else_are_dropped(io):
    mine, peer, stranger = free_ports(3)
    backend = UdpBackend(mine, peer)
    sink = netpeer.FrameSink()
    backend.attach(io, threading.Lock(), sink)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", stranger))
    good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good.bind(("127.0.0.1", peer))
    try:
        s.sendto(b"intruder" * 10, ("127.0.0.1", mine))
        good.sendto(b"friend" * 10, ("127.0.0.1", mine))
        assert sink.wait(1)
        time.sleep(0.05)
        assert sink.frames == [b"friend" * 10]
        assert backend.stats.rx_dropped == 1
    finally:
        s.close()
        good.close()
        backend.close()


def test_sending_to_nobody_is_not_an_error(io):
    mine, nobody = free_ports(2)
    backend = UdpBackend(mine, nobody)
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    try:
        for _ in range(10):
            assert backend.send(b"lost" * 20)  # like a cable to an unplugged switch
        time.sleep(0.05)
        assert io.thread.is_alive()
    finally:
        backend.close()


def test_a_frame_too_large_for_a_datagram_is_counted_not_fatal(io):
    mine, peer = free_ports(2)
    backend = UdpBackend(mine, peer)
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    try:
        assert backend.send(b"x" * 65535) is False
        assert backend.stats.tx_errors == 1
        assert backend.send(b"y" * 1500)
    finally:
        backend.close()


def test_held_frames_arrive_in_order(io):
    mine, peer = free_ports(2)
    backend = UdpBackend(mine, peer)
    sink = netpeer.FrameSink()
    sink.accept = False
    backend.attach(io, threading.Lock(), sink)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", peer))
    try:
        for i in range(40):
            s.sendto(i.to_bytes(2, "big") * 30, ("127.0.0.1", mine))
        time.sleep(0.1)
        assert sink.frames == [] and sink.refused >= 1
        sink.accept = True
        backend.rx_ready()
        assert sink.wait(40)
        assert [int.from_bytes(f[:2], "big") for f in sink.frames] == list(range(40))
    finally:
        s.close()
        backend.close()


def test_local_port_in_use():
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        with pytest.raises(NetworkError) as e:
            open_backend(parse_net(f"socket,udp={port}:{port + 1 if port < 65535 else port - 1}"))
        assert str(e.value) == (f"UDP port {port} on 127.0.0.1 is already in use: choose another "
                                "local port")
    finally:
        busy.close()


def test_ports_checked_when_built_directly():
    with pytest.raises(NetworkError, match="must differ"):
        UdpBackend(6000, 6000)
    with pytest.raises(NetworkError, match="not in 1-65535"):
        UdpBackend(0, 6000)


def test_close_releases_the_port():
    (p,) = free_ports(1)
    UdpBackend(p, p + 1 if p < 65535 else p - 1).close()
    UdpBackend(p, p + 1 if p < 65535 else p - 1).close()  # would raise if the port were held
