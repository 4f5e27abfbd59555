"""The e1000 driven like a driver by our guest program (firmware/tests/e1000.c): EEPROM, PHY,
INTx through the IOAPIC and MSI, TX and RX rings that wrap, MAC loopback, and real frames
exchanged with a peer over every backend (UDP, a Unix stream, a TAP in a namespace the test
creates), and between two kvmpy guests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import netpeer  # noqa: E402

MARKERS = ("PCI OK", "EEPROM OK", "PHY OK", "IRQ OK (ioapic", "IRQ OK (msi", "TX OK", "RX OK",
           "LOOPBACK OK", "E1000 OK")


def free_udp_ports() -> tuple[int, int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    return ports  # type: ignore[return-value]


def test_nic_without_a_peer(kvmpy_boot):
    local, remote = free_udp_ports()
    r = kvmpy_boot("e1000", "--net", f"socket,udp={local}:{remote}", "--append", "peer=none",
                   "--memory", "64M")
    assert r.status == 1, r.out + r.err
    for marker in ("EEPROM OK", "PHY OK", "IRQ OK (ioapic", "IRQ OK (msi", "LOOPBACK OK", "E1000 OK"):
        assert marker in r.out, marker


def test_frames_over_udp(kvmpy_boot):
    local, remote = free_udp_ports()
    peer = netpeer.PeerThread(netpeer.UdpEndpoint(remote, local)).start()
    try:
        r = kvmpy_boot("e1000", "--net", f"socket,udp={local}:{remote}", "--append", "frames=20",
                       "--memory", "64M")
    finally:
        peer.stop()
    assert r.status == 1, r.out + r.err
    for marker in MARKERS:
        assert marker in r.out, marker
    counts = peer.responder.counts
    assert counts.arp_requests >= 1 and counts.udp_echoed == 20


def test_frames_over_a_unix_stream(kvmpy_boot, tmp_path):
    path = str(tmp_path / "link.sock")
    peer = netpeer.PeerThread(netpeer.StreamEndpoint.listen(path)).start()
    try:
        r = kvmpy_boot("e1000", "--net", f"socket,connect={path}", "--append", "frames=12",
                       "--memory", "64M")
    finally:
        peer.stop()
    assert r.status == 1, r.out + r.err
    assert "E1000 OK" in r.out and peer.responder.counts.udp_echoed == 12


@pytest.fixture
def netns():
    yield from netpeer.netns_or_skip()


def test_frames_over_a_tap_in_a_namespace(netns, guest_program):
    """The namespace's own IP stack is the peer: it answers ARP, a UDP echo serves port 7."""
    with netpeer.UdpEchoServer(ns=netns) as echo:
        p = netns.run(sys.executable, "-m", "kvmpy", "boot", "--kernel", str(guest_program("e1000")),
                      "--net", f"tap,ifname={netns.tap}", "--append", "frames=16", "--memory", "64M",
                      timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "E1000 OK" in p.stdout and len(echo.datagrams) == 16


def test_two_guests_over_the_socket_backend(guest_program, tmp_path):
    path = str(tmp_path / "guests.sock")
    elf = str(guest_program("e1000"))
    echo = subprocess.Popen([sys.executable, "-m", "kvmpy", "boot", "--kernel", elf, "--net",
                             f"socket,listen={path}", "--append", "role=echo frames=10", "--memory", "64M"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    try:
        for _ in range(200):
            if Path(path).exists():
                break
            time.sleep(0.05)
        client = subprocess.run([sys.executable, "-m", "kvmpy", "boot", "--kernel", elf, "--net",
                                 f"socket,connect={path},mac=52:54:00:12:34:57", "--append",
                                 "frames=10 mac=52:54:00:12:34:57", "--memory", "64M"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=120, cwd=ROOT)
        out, err = echo.communicate(timeout=60)
    finally:
        if echo.poll() is None:
            echo.kill()
            echo.wait()
    assert client.returncode == 1, client.stdout + client.stderr
    assert "E1000 OK" in client.stdout
    assert echo.returncode == 1 and b"ECHO OK" in out, out + err
