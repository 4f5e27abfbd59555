"""Network boot through iPXE on kvmpy's e1000, all the way: DHCP, then a script over HTTP.

SeaBIOS runs iPXE from the NIC's ROM BAR (Debian's ipxe-qemu pxe-e1000.rom) for `--boot n`; iPXE
drives our e1000 with its own driver, asks for an address and a boot file with DHCP, fetches the
boot file over HTTP and runs it. The test provides both servers inside a network namespace of
its own (tests/netpeer.py), on the host side of the TAP (10.0.2.2/24), and nothing leaves the
machine:
- DHCP: busybox udhcpd (build/debian/busybox, the busybox the guest tests already fetch) offering
  exactly one address, 10.0.2.15, with the script's URL as the boot file (the BOOTP `file` field
  and option 67, bootfile-name; iPXE takes either);
- HTTP: Python's http.server serving one iPXE script, which prints a token made up per run
  followed by the address and MAC iPXE configured, then loops on the spot (a `goto` to itself:
  this iPXE build has no `poweroff`, and returning to SeaBIOS would move on to other devices).
The test runs the PC in-process (tests/firmware/hvmtools.HvmMachine, built while the thread is
inside the namespace, so its TAP backend opens the namespace's TAP) and stops it once the token is
on the VGA text screen (or on COM1). The token comes only from the script's body, never from the
URL, so seeing it means iPXE ran what it downloaded.

On PVM-backed hosts iPXE stops after its banner, under QEMU too (tests/firmware/test_ipxe.py
checks that much there), so this is the `hwvirt` tier: skipped there with the reason, and
without root or CAP_NET_ADMIN for the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "tests", ROOT / "tests" / "firmware"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import netpeer  # noqa: E402
from hvmtools import make_images  # noqa: E402

pytestmark = pytest.mark.hwvirt

DEBIAN_DIR = ROOT / "build" / "debian"
BUSYBOX = DEBIAN_DIR / "busybox"
ROM = DEBIAN_DIR / "pxe-e1000.rom"
FIRMWARE_TARGETS = ("build/debian/bios-256k.bin", "build/debian/vgabios-stdvga.bin",
                    "build/debian/pxe-e1000.rom", "build/debian/busybox")
HOST_IP = netpeer.PEER_IP  # 10.0.2.2: the namespace's end of the TAP, DHCP and HTTP server
GUEST_IP = netpeer.GUEST_IP  # 10.0.2.15: the only address udhcpd hands out
NETMASK = "255.255.255.0"
GUEST_MAC = "52:54:00:12:34:56"  # kvmpy's MAC for a first NIC without mac=
SCRIPT_PATH = "/boot.ipxe"
#: DHCP (udhcpd checks the address is free with a 2 s ARP probe first) and HTTP on top of
#: SeaBIOS's POST and iPXE's start; well under this on a hardware-assisted host
IPXE_TIMEOUT = 120.0
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="session")
def ipxe_firmware() -> Path:
    """SeaBIOS, its VGA BIOS, iPXE's e1000 ROM and busybox (for udhcpd) in build/debian."""
    make_images(*FIRMWARE_TARGETS, makefile="firmware/debian.mk")
    from hvmtools import firmware_missing

    reason = firmware_missing()
    assert reason is None, reason
    assert ROM.is_file() and BUSYBOX.is_file()
    return DEBIAN_DIR


@pytest.fixture
def netns():
    yield from netpeer.netns_or_skip()


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns into {what}: {os.strerror(e)}")


@contextlib.contextmanager
def inside(ns: netpeer.NetNamespace) -> Iterator[None]:
    """The calling thread in ``ns``'s network namespace for the block, then back in its own.

    For building a Machine: the first one must be made on the main thread (it installs the vCPU
    kick signal handler), so NetNamespace.call's helper thread will not do; the TAP descriptor it
    opens stays bound to ``ns`` afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, ns.name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "this thread's own namespace")
    finally:
        os.close(own)


class ScriptServer:
    """HTTP on HOST_IP (port chosen by the kernel) in the namespace, serving ``script`` at
    SCRIPT_PATH and 404 elsewhere; it records (path, client address) of every request."""

    def __init__(self, ns: netpeer.NetNamespace, script: str) -> None:
        body = script.encode()
        requests: list[tuple[str, str]] = []
        self.requests = requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append((self.path, self.client_address[0]))
                if self.path != SCRIPT_PATH:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ns.call(http.server.ThreadingHTTPServer, (HOST_IP, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST_IP}:{self.server.server_address[1]}{SCRIPT_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Udhcpd:
    """busybox udhcpd in the foreground inside the namespace, on its TAP, offering GUEST_IP alone
    with ``boot_url`` as the boot file; its log (stderr) kept for the report."""

    def __init__(self, ns: netpeer.NetNamespace, workdir: Path, boot_url: str) -> None:
        self.leases = workdir / "udhcpd.leases"
        self.log_path = workdir / "udhcpd.log"
        conf = workdir / "udhcpd.conf"
        conf.write_text("\n".join([
            f"interface {ns.tap}",
            f"start {GUEST_IP}",
            f"end {GUEST_IP}",
            "max_leases 1",
            f"lease_file {self.leases}",
            f"pidfile {workdir / 'udhcpd.pid'}",
            f"siaddr {HOST_IP}",
            f"boot_file {boot_url}",  # the BOOTP header's file field
            f"opt bootfile {boot_url}",  # option 67
            f"opt subnet {NETMASK}",
            f"opt router {HOST_IP}",
            "opt lease 3600",
            "",
        ]))
        self.leases.touch()
        self._log = open(self.log_path, "wb")  # closed in close()
        self.proc = subprocess.Popen([*ns.exec_prefix(), str(BUSYBOX), "udhcpd", "-f", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def test_ipxe_gets_a_lease_and_runs_a_script_fetched_over_http(ipxe_firmware, netns, tmp_path):
    from hvmtools import HvmMachine

    token = f"KVMPY-IPXE-TOKEN-{secrets.token_hex(8)}"
    # iPXE expands ${net0/ip} and ${net0/mac} from the settings DHCP gave net0; the closing
    # word tells a whole line from one caught while iPXE is still printing it
    script = f"#!ipxe\necho {token} ip=${{net0/ip}} mac=${{net0/mac}} done\n:hold\ngoto hold\n"
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))

    with contextlib.ExitStack() as stack:
        http_server = ScriptServer(netns, script)
        stack.callback(http_server.close)
        dhcp = Udhcpd(netns, tmp_path, http_server.url)
        stack.callback(dhcp.close)
        with inside(netns):
            h = HvmMachine(["--hvm", str(disk), "--memory", "128M", "--boot", "n",
                            "--net", f"tap,ifname={netns.tap}"])
        stack.callback(h.close)

        line = re.compile(rf"{re.escape(token)} ip=(\S*) mac=(\S*) done\b")
        found = h.run_until(lambda m: bool(line.search(m.screen_text()) or line.search(m.serial)),
                            timeout=IPXE_TIMEOUT)
        report = (f"{h.report()}\n--- HTTP requests: {http_server.requests}\n--- udhcpd:\n{dhcp.log[-3000:]}")
        assert found, f"iPXE never printed the script's token{report}"
        m = line.search(h.screen_text()) or line.search(h.serial)
        assert m is not None, report

        # iPXE configured the address and MAC that DHCP and kvmpy gave it ...
        assert f"sending ACK to {GUEST_IP}" in dhcp.log, report  # busybox udhcpd's own words
        assert m.group(1) == GUEST_IP, report
        assert m.group(2).lower() == GUEST_MAC, report
        # ... and fetched the script from there (the token is only in the script's body)
        assert http_server.requests and http_server.requests[0] == (SCRIPT_PATH, GUEST_IP), report
        assert all(req == (SCRIPT_PATH, GUEST_IP) for req in http_server.requests), report
        assert dhcp.proc.poll() is None, f"udhcpd exited{report}"
