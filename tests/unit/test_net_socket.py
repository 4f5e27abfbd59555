"""The Unix stream socket backend (listen=/connect=): frames both ways through a real I/O
thread, QEMU's length framing, peers that come and go, a guest that cannot take frames, a host
side that does not read, and the errors a user can cause."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from kvmpy.console import IoThread
from kvmpy.net import MAX_FRAME, NetworkError, open_backend, open_backends, parse_net, parse_nets
from kvmpy.net.socket import StreamBackend

try:
    import netpeer
except ImportError:  # run from another directory: tests/ holds the helper
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import netpeer


@pytest.fixture
def sockdir():
    """A short directory: Unix socket paths hold 107 bytes, pytest's tmp_path can be longer."""
    d = tempfile.mkdtemp(prefix="kvmpy-net-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def io():
    t = IoThread()
    t.start()
    yield t
    t.stop()


def wait(pred, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def frame(i: int, size: int = 60) -> bytes:
    return i.to_bytes(4, "big") + bytes((i + j) & 0xFF for j in range(size - 4))


def pair(path, io):
    a, b = open_backends(parse_nets([f"socket,listen={path}", f"socket,connect={path}"]))
    sa, sb = netpeer.FrameSink(), netpeer.FrameSink()
    lock = threading.Lock()
    a.attach(io, lock, sa)
    b.attach(io, lock, sb)
    assert wait(lambda: a.link_up), "the listener never accepted the connection"
    return a, b, sa, sb


def test_two_endpoints_exchange_frames(sockdir, io):
    a, b, sa, sb = pair(f"{sockdir}/link", io)
    try:
        sizes = [1, 14, 60, 1514, 9000, MAX_FRAME]
        for i, n in enumerate(sizes):
            assert b.send(frame(i, max(n, 4))[:n])
            assert a.send(frame(100 + i, max(n, 4))[:n])
        assert sa.wait(len(sizes)) and sb.wait(len(sizes))
        assert sa.frames == [frame(i, max(n, 4))[:n] for i, n in enumerate(sizes)]
        assert sb.frames == [frame(100 + i, max(n, 4))[:n] for i, n in enumerate(sizes)]
        assert a.stats.rx_frames == b.stats.tx_frames == len(sizes)
        assert a.stats.tx_dropped == b.stats.tx_dropped == 0
    finally:
        a.close()
        b.close()
    assert not os.path.exists(f"{sockdir}/link"), "the listener's socket file was left behind"


def test_many_frames_keep_their_order(sockdir, io):
    a, b, sa, _ = pair(f"{sockdir}/link", io)
    try:
        for i in range(2000):
            b.send(frame(i, 60 + i % 1400))
        assert sa.wait(2000, timeout=10)
        assert [int.from_bytes(f[:4], "big") for f in sa.frames] == list(range(2000))
    finally:
        a.close()
        b.close()


def test_qemu_stream_framing_on_the_wire(sockdir, io):
    """A QEMU -netdev stream peer (netpeer.StreamEndpoint) understands us and we it."""
    path = f"{sockdir}/q"
    backend = open_backend(parse_net(f"socket,listen={path}"))
    sink = netpeer.FrameSink()
    backend.attach(io, threading.Lock(), sink)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.connect(path)
        assert wait(lambda: backend.link_up)
        # two frames in one write, the second split across writes: framing, not packets
        raw.sendall(b"\x00\x00\x00\x03abc\x00\x00\x00\x05de")
        time.sleep(0.05)
        raw.sendall(b"fgh")
        assert sink.wait(2)
        assert sink.frames == [b"abc", b"defgh"]
        backend.send(b"hello")
        raw.settimeout(5)
        assert raw.recv(100) == b"\x00\x00\x00\x05hello"
    finally:
        raw.close()
        backend.close()


def test_responder_over_the_socket_backend(sockdir, io):
    """netpeer's Responder on a StreamEndpoint answers ARP and echoes UDP through the backend."""
    path = f"{sockdir}/peer"
    ep = netpeer.StreamEndpoint.listen(path)
    backend = open_backend(parse_net(f"socket,connect={path}"))
    sink = netpeer.FrameSink()
    backend.attach(io, threading.Lock(), sink)
    with netpeer.PeerThread(ep) as peer:
        g = netpeer.GUEST_MAC
        backend.send(netpeer.arp_frame(netpeer.ARP_REQUEST, g, netpeer.GUEST_IP, b"\0" * 6, netpeer.PEER_IP))
        backend.send(netpeer.udp_frame(g, netpeer.PEER_MAC, netpeer.GUEST_IP, netpeer.PEER_IP, 40000, 7,
                                       b"ping" * 100))
        assert sink.wait(2)
    arp = netpeer.parse_arp(sink.frames[0])
    assert arp == (netpeer.ARP_REPLY, netpeer.PEER_MAC, netpeer.PEER_IP, g, netpeer.GUEST_IP)
    echo = netpeer.parse_udp(sink.frames[1])
    assert echo is not None and echo.payload == b"ping" * 100
    assert (echo.sport, echo.dport, echo.dst_ip) == (7, 40000, netpeer.GUEST_IP)
    assert peer.responder.counts.udp_echoed == 1 and peer.responder.counts.arp_requests == 1
    backend.close()


def test_full_guest_ring_holds_frames_in_order(sockdir, io):
    """deliver() == False: the frame is held (not dropped), reading pauses, and everything
    arrives in order once the guest has room again."""
    a, b, sa, _ = pair(f"{sockdir}/link", io)
    try:
        sa.accept = False
        for i in range(50):
            b.send(frame(i))
        assert wait(lambda: sa.refused >= 1)
        time.sleep(0.1)  # the backend retries from its periodic callback: still refused
        assert sa.frames == [] and a.stats.rx_held >= 1
        sa.accept = True
        a.rx_ready()  # the guest gave the ring buffers: retried at once
        assert sa.wait(50)
        assert [int.from_bytes(f[:4], "big") for f in sa.frames] == list(range(50))
        assert a.stats.rx_dropped == 0
    finally:
        a.close()
        b.close()


def test_a_room_for_some_frames_at_a_time(sockdir, io):
    a, b, sa, _ = pair(f"{sockdir}/link", io)
    try:
        budget = [3]

        def room(_frame: bytes) -> bool:
            if budget[0] == 0:
                return False
            budget[0] -= 1
            return True

        sa.accept = room
        for i in range(20):
            b.send(frame(i))
        for n in range(3, 21, 3):
            assert sa.wait(min(n, 20))
            budget[0] = 3
            a.rx_ready()
        assert sa.wait(20)
        assert [int.from_bytes(f[:4], "big") for f in sa.frames] == list(range(20))
    finally:
        a.close()
        b.close()


def test_listener_link_is_down_until_a_peer_connects(sockdir, io):
    path = f"{sockdir}/l"
    backend = open_backend(parse_net(f"socket,listen={path}"))
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    try:
        assert not backend.link_up
        assert backend.send(b"x" * 60) is False
        assert backend.stats.tx_dropped == 1
        ep = netpeer.StreamEndpoint.connect(path)
        assert wait(lambda: backend.link_up)
        assert backend.send(b"y" * 60)
        assert ep.recv(timeout=5) == b"y" * 60
        ep.close()
        assert wait(lambda: not backend.link_up), "a closed peer must take the link down"
        ep2 = netpeer.StreamEndpoint.connect(path)  # the next peer is accepted
        assert wait(lambda: backend.link_up)
        assert backend.peers == 2
        ep2.close()
    finally:
        backend.close()


def test_a_second_peer_is_refused_while_one_is_connected(sockdir, io, caplog):
    path = f"{sockdir}/l"
    backend = open_backend(parse_net(f"socket,listen={path}"))
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    first = netpeer.StreamEndpoint.connect(path)
    try:
        assert wait(lambda: backend.link_up)
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        second.connect(path)
        second.settimeout(5)
        assert second.recv(10) == b""  # closed by the backend
        second.close()
        backend.send(b"z" * 60)
        assert first.recv(timeout=5) == b"z" * 60
    finally:
        first.close()
        backend.close()


def test_connecting_side_survives_the_peer_leaving(sockdir, io):
    path = f"{sockdir}/p"
    ep = netpeer.StreamEndpoint.listen(path)
    backend = open_backend(parse_net(f"socket,connect={path}"))
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    assert ep.accept(timeout=5)
    ep.close()
    # the next sends see EPIPE/ECONNRESET (or the reader sees EOF first): link down, no exception
    assert wait(lambda: (backend.send(b"q" * 60), not backend.link_up)[1])
    assert backend.send(b"q" * 60) is False
    backend.close()


def test_a_peer_that_does_not_read_never_blocks_the_sender(sockdir, io):
    """The vCPU's send() must return at once even when the peer's socket is full: frames wait in
    a bounded queue, then are dropped and counted; a reader later gets them in order."""
    path = f"{sockdir}/slow"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    backend = open_backend(parse_net(f"socket,connect={path}"))
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    conn, _ = lst.accept()
    try:
        worst = 0.0
        for i in range(4000):
            t0 = time.perf_counter()
            backend.send(frame(i, 1500))
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 0.1, f"send() blocked for {worst:.3f} s"
        assert backend.stats.tx_dropped > 0
        assert backend.stats.tx_frames + backend.stats.tx_dropped == 4000
        ep = netpeer.StreamEndpoint(conn)
        got = []
        while True:
            f = ep.recv(timeout=1)
            if f is None:
                break
            got.append(int.from_bytes(f[:4], "big"))
        assert got == list(range(len(got))), "frames were reordered or a frame was cut"
        assert len(got) == backend.stats.tx_frames
    finally:
        backend.close()
        conn.close()
        lst.close()


def test_a_peer_that_breaks_the_framing_is_dropped(sockdir, io, caplog):
    path = f"{sockdir}/bad"
    backend = open_backend(parse_net(f"socket,listen={path}"))
    backend.attach(io, threading.Lock(), netpeer.FrameSink())
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.connect(path)
        assert wait(lambda: backend.link_up)
        raw.sendall((MAX_FRAME + 1).to_bytes(4, "big"))
        assert wait(lambda: not backend.link_up)
        raw.settimeout(5)
        assert raw.recv(10) == b""
    finally:
        raw.close()
        backend.close()


def test_a_failing_device_does_not_kill_the_io_thread(sockdir, io, caplog):
    a, b, sa, _ = pair(f"{sockdir}/link", io)
    calls = []

    def flaky(frame: bytes) -> bool:
        calls.append(frame)
        if len(calls) == 1:
            raise RuntimeError("device bug")
        return sa(frame)

    a._deliver = flaky  # the backend calls whatever deliver it was given
    try:
        with caplog.at_level(logging.ERROR, logger="kvmpy.net"):
            b.send(frame(1))
            assert wait(lambda: len(calls) == 1)
            b.send(frame(2))
            assert sa.wait(1)
        assert io.thread.is_alive()
        assert "device bug" in caplog.text
    finally:
        a.close()
        b.close()


# --- errors a user can cause ------------------------------------------------------------------
def test_connect_to_a_path_that_does_not_exist(sockdir):
    with pytest.raises(NetworkError) as e:
        open_backend(parse_net(f"socket,connect={sockdir}/nothing"))
    assert str(e.value).startswith(f"nothing is listening on {sockdir}/nothing")
    assert e.value.exit_status == 74


def test_connect_to_a_file_nobody_listens_on(sockdir):
    stale = f"{sockdir}/stale"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()  # a socket file left behind by a process that exited
    with pytest.raises(NetworkError, match="nothing is listening on"):
        StreamBackend.connect(stale)
    with open(f"{sockdir}/plain", "w"):
        pass
    with pytest.raises(NetworkError, match="nothing is listening on"):
        StreamBackend.connect(f"{sockdir}/plain")


def test_listen_on_a_path_that_exists(sockdir):
    path = f"{sockdir}/taken"
    with open(path, "w") as f:
        f.write("mine")
    with pytest.raises(NetworkError) as e:
        open_backend(parse_net(f"socket,listen={path}"))
    assert "already exists" in str(e.value)
    with open(path) as f:
        assert f.read() == "mine", "the existing file must not be touched"


def test_listen_in_a_directory_that_does_not_exist(sockdir):
    with pytest.raises(NetworkError, match="directory does not exist"):
        StreamBackend.listen(f"{sockdir}/no/such/dir/s")


def test_close_leaves_a_replaced_socket_file_alone(sockdir):
    path = f"{sockdir}/s"
    backend = StreamBackend.listen(path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)  # someone else's socket now
    backend.close()
    assert os.path.exists(path)
    other.close()


def test_open_backends_opens_listeners_first_and_cleans_up_on_error(sockdir):
    path = f"{sockdir}/both"
    specs = parse_nets([f"socket,connect={path}", f"socket,listen={path}"])
    backends = open_backends(specs)
    assert [b.listening for b in backends] == [False, True]
    for b in backends:
        b.close()
    bad = parse_nets([f"socket,listen={sockdir}/ok", f"socket,connect={sockdir}/missing"])
    with pytest.raises(NetworkError):
        open_backends(bad)
    assert not os.path.exists(f"{sockdir}/ok"), "the listener opened first was not closed"
