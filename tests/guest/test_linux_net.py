"""Linux guests on kvmpy's e1000: Debian's own e1000 driver, real traffic, checked at both ends.

Debian's kernel booted directly (bzImage + build/images/initrd.gz: the busybox initramfs with the
module overlay of firmware/images/mkmodules.py, which carries e1000.ko) with `--net`. The guest's
/init (tests/guest/initramfs/init) loads e1000, configures eth0 from `kvmpy.net=` and runs what
the command line asks for, reporting KVMPY-* markers on the serial console; the host side is a
network namespace of the test's own with a TAP (tests/netpeer.py), whose IP stack, sockets and
busybox are the guest's peer. Nothing leaves the machine.

- ping both ways: the guest pings the namespace's address, the namespace pings the guest's once
  the guest reported its link up; the driver bound is e1000, on 8086:100E, with kvmpy's MAC.
- TCP, 64 MiB each way with busybox nc (the guest connects both times): deterministic data from
  the guest (built from /data/sample.bin, which the host reads out of the same archive) hashed by
  the guest before sending and by the host on arrival; random data from the host hashed by the
  host before sending and by the guest on arrival. Each SHA-256 and byte count must agree.
- many small packets: 2000 small ICMP echoes each way, one as soon as the last was answered
  (ping -A), counted by the sender and by the namespace's ICMP counters; and 2000 TFTP DATA
  datagrams of 64 bytes from a server in the test, each acknowledged by the guest in lockstep,
  the file's SHA-256 checked.
- two Linux guests over the socket backend (one `listen=`, one `connect=`): each pings the other.

These need hardware-assisted KVM (skipped on PVM hosts, see conftest.py) and root or
CAP_NET_ADMIN for the namespace (skipped without, saying so).
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "tests", ROOT / "tests" / "firmware"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import netpeer  # noqa: E402
from hvmtools import make_images  # noqa: E402

pytestmark = pytest.mark.hwvirt


import guestlib as _guest  # noqa: E402
from guestlib import GUEST_TIMEOUT, VMM_COMMAND, GuestProcess, kernel_cmdline  # noqa: E402

NET_INITRD = ROOT / "build" / "images" / "initrd.gz"
BUSYBOX = ROOT / "build" / "debian" / "busybox"
E1000_MODULE = b"lib/modules/kvmpy/e1000.ko"

EXIT_POWEROFF = 0
HOST_IP = netpeer.PEER_IP  # the namespace's end of the TAP, 10.0.2.2/24
GUEST_IP = netpeer.GUEST_IP  # 10.0.2.15
PREFIX = 24
GUEST_MAC = "52:54:00:12:34:56"  # kvmpy's MAC for a first NIC without mac=
E1000_PCI = "8086:100e"  # as sysfs spells the 82540EM's vendor:device
MIB = 1 << 20
TRANSFER_MIB = 64
SMALL_PACKETS = 2000
TFTP_BLKSIZE = 64
TFTP_FILE = "kvmpy.bin"
#: A guest's whole run when it moves 128 MiB: boot, both transfers (each given 300 s by /init).
TRANSFER_TIMEOUT = GUEST_TIMEOUT + 600
#: A guest's whole run with 3 x SMALL_PACKETS round trips one after the other (at 20 ms a round
#: trip, two minutes).
SMALL_PACKETS_TIMEOUT = GUEST_TIMEOUT + 300
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) packets received")


# --- images and guests -----------------------------------------------------------------------
@dataclass(frozen=True)
class NetImages:
    kernel: Path
    initrd: Path
    sample: bytes  # /data/sample.bin as the guest has it


@pytest.fixture(scope="session")
def net_images(guest_images) -> NetImages:
    """The kernel, the initrd with the module overlay, and the sample; `guest_images` skips first
    where Linux cannot run."""
    make_images("build/debian/vmlinuz", "build/images/initrd.gz", "build/debian/busybox")
    # Concatenated gzip members, one per archive: the overlay's names are in the second.
    assert E1000_MODULE in gzip.decompress(NET_INITRD.read_bytes()), \
        f"{NET_INITRD} carries no {E1000_MODULE.decode()} (firmware/images/mkmodules.py)"
    mk = _guest._load_mkinitramfs()
    sample = {e.name: e for e in mk.read_archive(_guest.INITRD)}["data/sample.bin"].data
    assert hashlib.sha256(sample).hexdigest() == guest_images.sample_sha256
    return NetImages(guest_images.kernel, NET_INITRD, sample)


class NetGuest(GuestProcess):
    """`kvmpy boot --kernel ... --net ...` (optionally inside a namespace: `prefix` is its
    `ip netns exec NAME`), always with the serial line on stdin for `kvmpy.action=shell`."""

    def __init__(self, images: NetImages, append: str, nets: list[str], prefix: Sequence[str] = (),
                 memory: str = "512M", cpus: int = 2, timeout: float = GUEST_TIMEOUT):
        self.append = append
        argv = [*prefix, *VMM_COMMAND, "boot", "--kernel", str(images.kernel),
                "--initrd", str(images.initrd), "--append", append,
                "--memory", memory, "--cpus", str(cpus)]
        for spec in nets:
            argv += ["--net", spec]
        self._start(argv, timeout, interactive=True)

    def finish(self) -> int:
        """Leave the shell /init started (kvmpy.action=shell): /init powers off. The exit status."""
        self.wait_for(r"KVMPY-SHELL-READY")
        self.send("exit")
        rc = self.wait()
        assert "Kernel panic" not in self.output, self.describe()
        return rc


@pytest.fixture
def net_guest(net_images):
    """Factory: net_guest(nets, *append words, ns=None, timeout=...) -> NetGuest, booted with
    kvmpy.action=shell; every process is killed at teardown."""
    started: list[NetGuest] = []

    def boot(nets: list[str], *words: str, ns: netpeer.NetNamespace | None = None,
             timeout: float = GUEST_TIMEOUT) -> NetGuest:
        g = NetGuest(net_images, kernel_cmdline("shell", *words), nets,
                     prefix=ns.exec_prefix() if ns is not None else [], timeout=timeout)
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()


@pytest.fixture
def netns():
    yield from netpeer.netns_or_skip()


def tap_guest(net_guest, netns, *words: str, timeout: float = GUEST_TIMEOUT) -> NetGuest:
    """A guest on the namespace's TAP with the address GUEST_IP/PREFIX."""
    return net_guest([f"tap,ifname={netns.tap}"], f"kvmpy.net={GUEST_IP}/{PREFIX}", *words, ns=netns,
                     timeout=timeout)


def assert_link_up(g: NetGuest, mac: str = GUEST_MAC) -> None:
    """eth0 is kvmpy's e1000, driven by Linux's e1000 driver, with its link up."""
    g.wait_for(r"KVMPY-NET-MAC ")
    out = g.describe()
    assert "e1000" in g.marker("MODULES").split(), out
    assert "KVMPY-MODULE-FAILED" not in g.output, out
    assert g.marker("NET-DRIVER") == "e1000", out
    assert g.marker("NET-PCI") == E1000_PCI, out
    assert g.marker("NET-MAC") == mac, out
    assert g.marker("NET-LINK") == "up", out


# --- the host side ---------------------------------------------------------------------------
def busybox_ping(ns: netpeer.NetNamespace, ip: str, *opts: str, timeout: float = 120) -> tuple[int, int, str]:
    """Ping from inside the namespace with the busybox the guest runs too (no iputils needed):
    (transmitted, received, output)."""
    p = ns.run(str(BUSYBOX), "ping", *opts, ip, timeout=timeout)
    m = PING_SUMMARY.search(p.stdout)
    return (int(m.group(1)), int(m.group(2)), p.stdout + p.stderr) if m else (0, 0, p.stdout + p.stderr)


def icmp_counters(ns: netpeer.NetNamespace) -> dict[str, int]:
    """The namespace's Icmp counters from /proc/net/snmp (InEchos, OutEchoReps, ...), read by a
    process in it (/proc/net shows the reader's namespace)."""
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines()
             if line.startswith("Icmp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def _tcp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST_IP, 0))
    s.listen(1)
    return s


class _OneConnection:
    """A TCP listener on HOST_IP in the namespace that serves one connection on a thread."""

    def __init__(self, ns: netpeer.NetNamespace, timeout: float) -> None:
        self.listener = ns.call(_tcp_listener)
        self.port = self.listener.getsockname()[1]
        self.timeout = timeout
        self.peer: str | None = None
        self.seconds = 0.0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(self.timeout)
            conn, addr = self.listener.accept()
            self.peer = addr[0]
            with conn:
                conn.settimeout(self.timeout)
                t0 = time.monotonic()
                self.serve(conn)
                self.seconds = time.monotonic() - t0
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.listener.close()
            self.done.set()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def result(self, timeout: float = 60) -> None:
        assert self.done.wait(timeout), f"the host side on port {self.port} is still busy"
        if self.error is not None:
            raise AssertionError(f"the host side on port {self.port} failed: {self.error!r}")


class TcpSink(_OneConnection):
    """Reads one connection to its end (the guest's FIN), keeps the bytes, then closes."""

    def serve(self, conn: socket.socket) -> None:
        data = bytearray()
        while chunk := conn.recv(MIB):
            data += chunk
        self.data = bytes(data)


class TcpSource(_OneConnection):
    """Sends ``payload`` on one connection, then half-closes and waits for the guest's FIN."""

    def __init__(self, ns: netpeer.NetNamespace, payload: bytes, timeout: float) -> None:
        self.payload = payload
        super().__init__(ns, timeout)

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(self.payload)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):  # busybox nc sends nothing (its stdin is /dev/null)
            pass


def _udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST_IP, 0))
    return s


TFTP_RRQ, TFTP_DATA, TFTP_ACK, TFTP_ERROR, TFTP_OACK = 1, 3, 4, 5, 6


class TftpServer:
    """A TFTP server (RFC 1350, with the blksize option of RFC 2348) for one read of TFTP_FILE,
    in lockstep: each DATA block waits for its ACK, retransmitted after 1 s without one. It
    counts what went each way. Replies come from the request's port (one client at a time)."""

    RETRIES = 10

    def __init__(self, ns: netpeer.NetNamespace, payload: bytes, timeout: float) -> None:
        self.sock = ns.call(_udp_socket)
        self.port = self.sock.getsockname()[1]
        self.payload = payload
        self.timeout = timeout
        self.blksize = 512
        self.requested: dict[str, str] = {}
        self.data_sent = 0  # DATA datagrams, retransmissions included
        self.retransmits = 0
        self.acks = 0  # ACKs of the block in flight (duplicates not counted)
        self.blocks = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _recv(self, client, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        end = time.monotonic() + timeout
        while True:
            try:
                pkt, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                return None
            if client is None or addr == client:
                return pkt
            if time.monotonic() >= end:
                return None

    def _await_ack(self, client, block: int, packet: bytes) -> None:
        """Send ``packet`` until the ACK of ``block`` (mod 2**16) comes."""
        for attempt in range(self.RETRIES):
            self.sock.sendto(packet, client)
            if packet[1] == TFTP_DATA:
                self.data_sent += 1
                self.retransmits += int(attempt > 0)
            end = time.monotonic() + 1.0
            while (left := end - time.monotonic()) > 0:
                pkt = self._recv(client, left)
                if pkt is None:
                    break
                op, num = struct.unpack_from("!HH", pkt)
                if op == TFTP_ERROR:
                    raise RuntimeError(f"the client sent an error: {pkt[4:-1]!r}")
                if op == TFTP_ACK and num == block & 0xFFFF:
                    self.acks += packet[1] == TFTP_DATA
                    return
        raise RuntimeError(f"no ACK of block {block} after {self.RETRIES} tries")

    def _run(self) -> None:
        try:
            self.sock.settimeout(self.timeout)
            pkt, client = self.sock.recvfrom(65536)
            op = struct.unpack_from("!H", pkt)[0]
            fields = pkt[2:].split(b"\0")[:-1]
            if op != TFTP_RRQ or not fields or fields[0].decode() != TFTP_FILE:
                self.sock.sendto(struct.pack("!HH", TFTP_ERROR, 1) + b"File not found\0", client)
                raise RuntimeError(f"unexpected request {pkt!r}")
            opts = [f.decode().lower() for f in fields[2:]]
            self.requested = dict(zip(opts[0::2], opts[1::2], strict=False))
            if "blksize" in self.requested:
                self.blksize = min(int(self.requested["blksize"]), TFTP_BLKSIZE)
                oack = struct.pack("!H", TFTP_OACK) + b"blksize\0" + str(self.blksize).encode() + b"\0"
                self._await_ack(client, 0, oack)
            block = 1
            while True:
                chunk = self.payload[(block - 1) * self.blksize: block * self.blksize]
                self._await_ack(client, block, struct.pack("!HH", TFTP_DATA, block & 0xFFFF) + chunk)
                self.blocks = block
                if len(chunk) < self.blksize:
                    break
                block += 1
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.sock.close()
            self.done.set()

    def result(self, timeout: float = 60) -> None:
        assert self.done.wait(timeout), "the TFTP server is still busy"
        if self.error is not None:
            raise AssertionError(f"the TFTP server failed: {self.error!r}")


def guest_stream(sample: bytes, mib: int) -> bytes:
    """What /init's kvmpy.nc sends: copy i of the sample with i as 16 digits over its first 16 bytes."""
    return b"".join(b"%016d" % i + sample[16:] for i in range(mib))


def first_difference(a: bytes, b: bytes) -> int:
    """The first offset where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    for i in range(0, min(len(a), len(b)), MIB):
        x, y = a[i:i + MIB], b[i:i + MIB]
        if x != y:
            return i + next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
    return min(len(a), len(b))


def marker_fields(g: NetGuest, name: str) -> list[str]:
    return g.marker(name).split()


# --- the tests -------------------------------------------------------------------------------
def test_ping_both_ways_over_a_tap(net_guest, netns):
    g = tap_guest(net_guest, netns, f"kvmpy.ping={HOST_IP}")
    g.wait_for(r"KVMPY-NET-LINK ")
    assert_link_up(g)

    # the namespace pings the guest (its kernel answers; nothing of ours runs in the guest)
    sent, received, out = busybox_ping(netns, GUEST_IP, "-c", "3", "-W", "5")
    assert (sent, received) == (3, 3), f"host -> guest ping: {out}\n{g.describe()}"

    g.wait_for(r"KVMPY-PING-(OK|FAIL) ")
    assert g.marker("PING-OK") == HOST_IP, g.describe()
    assert g.finish() == EXIT_POWEROFF, g.describe()


def test_tcp_64_mib_each_way_with_sha256_at_both_ends(net_guest, netns, net_images):
    to_host = guest_stream(net_images.sample, TRANSFER_MIB)
    to_guest = random.Random(0x6B766D70).randbytes(TRANSFER_MIB * MIB)
    sink = TcpSink(netns, timeout=TRANSFER_TIMEOUT)
    source = TcpSource(netns, to_guest, timeout=TRANSFER_TIMEOUT)
    g = tap_guest(net_guest, netns, f"kvmpy.nc={HOST_IP}:{sink.port}:{source.port}:{TRANSFER_MIB}",
                  timeout=TRANSFER_TIMEOUT)
    g.wait_for(r"KVMPY-NET-LINK ")
    assert_link_up(g)

    # guest -> host: the guest's hash of what it sent, the host's of what arrived, and the
    # stream the host computes from the sample on its own: all the same
    g.wait_for(r"KVMPY-NC-SEND ")
    sink.result()
    digest, size, rc = marker_fields(g, "NC-SEND")
    assert rc == "rc=0", g.describe()
    assert int(size) == len(to_host) == TRANSFER_MIB * MIB, g.describe()
    assert digest == hashlib.sha256(to_host).hexdigest(), \
        f"the guest did not make the expected stream\n{g.describe()}"
    assert sink.peer == GUEST_IP
    assert len(sink.data) == len(to_host) and sink.data == to_host, \
        (f"the host received {len(sink.data)} bytes, first difference at offset "
         f"{first_difference(sink.data, to_host)}\n{g.describe()}")
    assert hashlib.sha256(sink.data).hexdigest() == digest

    # host -> guest: random bytes, hashed by the host before sending and by the guest on arrival
    g.wait_for(r"KVMPY-NC-RECV ")
    source.result()
    digest, size, rc = marker_fields(g, "NC-RECV")
    assert rc == "rc=0", g.describe()
    assert int(size) == len(to_guest), g.describe()
    assert digest == hashlib.sha256(to_guest).hexdigest(), g.describe()
    assert source.peer == GUEST_IP
    print(f"\nTCP guest -> host: {TRANSFER_MIB / max(sink.seconds, 1e-6):.1f} MiB/s; "
          f"host -> guest: {TRANSFER_MIB / max(source.seconds, 1e-6):.1f} MiB/s")

    assert g.finish() == EXIT_POWEROFF, g.describe()


def test_many_small_packets(net_guest, netns, net_images):
    # TFTP: SMALL_PACKETS DATA datagrams of TFTP_BLKSIZE bytes or less, the last one short
    payload = random.Random(0x7466).randbytes((SMALL_PACKETS - 1) * TFTP_BLKSIZE + TFTP_BLKSIZE // 2)
    tftp = TftpServer(netns, payload, timeout=SMALL_PACKETS_TIMEOUT)
    before = icmp_counters(netns)
    g = tap_guest(net_guest, netns, f"kvmpy.pingflood={HOST_IP}:{SMALL_PACKETS}",
                  f"kvmpy.tftp={HOST_IP}:{tftp.port}:{TFTP_BLKSIZE}", timeout=SMALL_PACKETS_TIMEOUT)
    g.wait_for(r"KVMPY-NET-LINK ")
    assert_link_up(g)

    # guest -> host echoes: every one answered, as the guest and the namespace both count
    g.wait_for(r"KVMPY-PINGFLOOD ")
    assert marker_fields(g, "PINGFLOOD") == [HOST_IP, str(SMALL_PACKETS), str(SMALL_PACKETS)], g.describe()
    after = icmp_counters(netns)
    assert after["InEchos"] - before["InEchos"] >= SMALL_PACKETS, (before, after)
    assert after["OutEchoReps"] - before["OutEchoReps"] >= SMALL_PACKETS, (before, after)

    # UDP: the file in lockstep, every block acknowledged, the same bytes in the guest
    g.wait_for(r"KVMPY-TFTP ")
    tftp.result()
    digest, size, rc = marker_fields(g, "TFTP")
    assert rc == "rc=0", g.describe()
    assert tftp.requested.get("blksize") == str(TFTP_BLKSIZE) and tftp.blksize == TFTP_BLKSIZE
    assert tftp.blocks == SMALL_PACKETS and tftp.acks == SMALL_PACKETS, (tftp.blocks, tftp.acks)
    assert tftp.data_sent == SMALL_PACKETS + tftp.retransmits
    assert int(size) == len(payload) and digest == hashlib.sha256(payload).hexdigest(), g.describe()

    # host -> guest echoes while the guest waits in its shell
    g.wait_for(r"KVMPY-SHELL-READY")
    sent, received, out = busybox_ping(netns, GUEST_IP, "-q", "-A", "-s", "16", "-c", str(SMALL_PACKETS),
                                       "-W", "5", timeout=SMALL_PACKETS_TIMEOUT)
    assert (sent, received) == (SMALL_PACKETS, SMALL_PACKETS), f"host -> guest flood: {out}\n{g.describe()}"
    print(f"\nTFTP: {tftp.blocks} blocks, {tftp.retransmits} retransmitted")

    assert g.finish() == EXIT_POWEROFF, g.describe()


def test_two_guests_over_the_socket_backend_ping_each_other(net_guest, tmp_path):
    path = tmp_path / "link.sock"
    ips = ("10.0.3.1", "10.0.3.2")
    macs = ("52:54:00:12:34:56", "52:54:00:12:34:57")
    a = net_guest([f"socket,listen={path},mac={macs[0]}"], f"kvmpy.net={ips[0]}/{PREFIX}",
                  f"kvmpy.ping={ips[1]}")
    # the listener's socket file exists once its kvmpy runs; then the other one may connect
    for _ in range(200):
        if path.exists() or a.proc.poll() is not None:
            break
        time.sleep(0.05)
    assert path.exists(), f"kvmpy did not create {path}\n{a.describe()}"
    b = net_guest([f"socket,connect={path},mac={macs[1]}"], f"kvmpy.net={ips[1]}/{PREFIX}",
                  f"kvmpy.ping={ips[0]}")

    for g, mac, peer in ((a, macs[0], ips[1]), (b, macs[1], ips[0])):
        g.wait_for(r"KVMPY-NET-LINK ")
        assert_link_up(g, mac)
        g.wait_for(r"KVMPY-PING-(OK|FAIL) ")
        assert g.marker("PING-OK") == peer, g.describe()
    # both stay up until both have pinged: then each leaves its shell and powers off
    assert b.finish() == EXIT_POWEROFF, b.describe()
    assert a.finish() == EXIT_POWEROFF, a.describe()
