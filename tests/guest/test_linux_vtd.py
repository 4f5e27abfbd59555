"""Linux guests on kvmpy's Intel VT-d IOMMU (`--iommu vtd`): Debian's own intel-iommu driver
programs the unit, and every device's DMA goes through the tables that driver wrote.

Each guest is Debian's kernel with the busybox initramfs and its driver overlay
(build/images/initrd.gz: ata_piix, sd_mod, e1000), booted directly (`--kernel/--initrd`, which
then gets a PCI host bridge) or through SeaBIOS and syslinux from build/images/disk.img
(`--hvm`). The machine has an IDE data disk, an e1000 on the UDP socket backend (the test's own
peer answers ARP and ICMP echo on 10.0.2.2: no privileges needed) and QEMU's edu DMA test device
(`--device edu`). /init (tests/guest/initramfs/init) reports, as KVMPY-* markers:

- `kvmpy.iommu=report`: the units in /sys/class/iommu with the CAP/ECAP the driver read, every
  IOMMU group with its default domain type and devices, each PCI device's group, the kernel's
  DMAR/iommu log lines, and at the very end every DMA fault the kernel logged;
- `kvmpy.write=DEV`: a 1 MiB pattern written to the data disk, synced, read back from the device
  (libata uses bus-master DMA: the controller's PRD table and buffers are translated);
- `kvmpy.net=... kvmpy.ping=... kvmpy.pingflood=...`: e1000 rings and buffers, translated;
- `kvmpy.edu=ADDR`: userspace drives edu with busybox devmem on its BAR0 — enables bus mastering
  through sysfs, fills two pages the command line took out of RAM (memmap=8K$ADDR) with
  patterns, and tells edu to DMA the source page into its buffer and the buffer onto the target
  page. Nobody mapped those pages for edu: in a translated domain (intel_iommu=on) both
  transfers are blocked — the target is unchanged, edu reports the error (its command register's
  error bit, error count and address: kvmpy's extension) and the guest's kernel logs the DMAR
  fault with the device, the page and the reason. With no IOMMU (and with iommu=pt, or
  intel_iommu=off) the same two transfers go through and the target holds the source's words:
  the threat and the protection side by side (`[no-iommu]` against `[on]`).

The modes: intel_iommu=on (lazy invalidation: DMA-FQ domains), intel_iommu=on,strict (DMA),
iommu=pt (identity), intel_iommu=off, and the unit's options aw=48, caching-mode=on (Linux then
invalidates strictly: DMA) and qi=off (register-based invalidation instead of the queue), so both
of Linux's invalidation paths run. Linux facts (log formats, sysfs files) are those of Debian
bookworm's 6.1 kernel: drivers/iommu/intel/{dmar.c,iommu.c} and drivers/iommu/iommu.c.

These need hardware-assisted KVM; on a PVM-backed host they are skipped (see conftest.py), since
Linux does not boot there in useful time.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import netpeer  # noqa: E402
from guestlib import EXTRA_APPEND, GUEST_TIMEOUT, VMM_COMMAND, GuestProcess, kernel_cmdline, make_targets  # noqa: E402

pytestmark = pytest.mark.hwvirt

NET_INITRD = ROOT / "build" / "images" / "initrd.gz"
DISK = ROOT / "build" / "images" / "disk.img"
OVERLAY_MODULES = (b"lib/modules/kvmpy/e1000.ko", b"lib/modules/kvmpy/ata_piix.ko")

EXIT_POWEROFF = 0
MEMORY = "512M"
CPUS = 2
MIB = 1 << 20
DATA_DISK_MIB = 8

# --- the unit -------------------------------------------------------------------------------
#: kvmpy's VT-d register block (QEMU's address), as the DMAR table's DRHD gives it
VTD_BASE = 0xFED90000
#: CAP_REG fields (VT-d spec 10.4.2): CM bit 7, SAGAW bits 12:8 (bit 1 of it: 39-bit 3-level,
#: bit 2: 48-bit 4-level tables), MGAW bits 21:16 (the width minus one)
CAP_CM = 1 << 7
CAP_SAGAW_SHIFT = 8
SAGAW_39 = 1 << 1
SAGAW_48 = 1 << 2
CAP_MGAW_SHIFT = 16
#: ECAP_REG (VT-d spec 10.4.3): QI bit 1
ECAP_QI = 1 << 1
#: what the kernel writes when the DMA to an unmapped page faults (dmar.c, dmar_fault_do_one and
#: dma_remap_fault_reasons): reason 5 for a write, 6 for a read
FAULT_LINE = ("DMAR: [DMA {kind} NO_PASID] Request device [{dev}] fault addr {addr:#x} "
              "[fault reason {reason:#04x}] {text}")
WRITE_FAULT = dict(kind="Write", reason=0x05, text="PTE Write access is not set")
READ_FAULT = dict(kind="Read", reason=0x06, text="PTE Read access is not set")
#: IOMMU_WAIT_OP's panic when the unit does not answer (drivers/iommu/intel/iommu.h)
MALFUNCTION = "DMAR hardware is malfunctioning"

# --- the devices ----------------------------------------------------------------------------
EDU_BDF = "0000:00:04.0"  # where kvmpy places --device edu (kvmpy/profiles/parts.py)
EDU_IDS = "1234:11e8"
EDU_ID = "010000ed"  # edu.rst: the identification register, version 1.0
LIVENESS_WRITTEN = 0x4B564D50  # what /init writes to the liveness register; it reads the inverse
EDU_BAR_SIZE = 1 << 20
EDU_WORDS = 16  # as /init's EDU_WORDS
SOURCE_WORD = 0x53524300  # word i of the source page is this + i (/init's EDU_SOURCE_WORD)
TARGET_WORD = 0x54475400  # word i of the target page is this + i (/init's EDU_TARGET_WORD)
#: The edu test's two pages (the target, then the source): below edu's 28-bit DMA mask, far from
#: where the kernel, the initrd and the firmware sit, inside RAM (taken out of it with memmap=).
TARGET = 0x0800_0000
SOURCE = TARGET + 0x1000
IDE_IDS = "8086:7010"
DISPLAY_CLASS = "0x03"  # PCI base class 03h, display controllers (the HVM PC's stdvga)
E1000_IDS = "8086:100e"
#: libata's sysfs names for DMA transfer modes: the disk's data moves by bus-master DMA
DMA_MODE = re.compile(r"^XFER_(UDMA|MW_DMA|SW_DMA)_\d$")

# --- the network ----------------------------------------------------------------------------
PEER_IP = netpeer.PEER_IP
GUEST_IP = netpeer.GUEST_IP
PREFIX = 24
PINGFLOOD = 200
IPPROTO_ICMP = 1
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8


@dataclass(frozen=True)
class Mode:
    """How the guest gets (or does not get) its IOMMU, and what its kernel must then report."""

    name: str
    iommu: str | None  # the --iommu value; None: no IOMMU at all (no DMAR table either)
    words: tuple[str, ...]  # the IOMMU's words on the kernel command line
    domain: str | None  # the default domain type of every group; None: the kernel uses no unit
    aw: int = 39
    caching_mode: bool = False
    qi: bool = True
    klog: tuple[str, ...] = ()  # further kernel log lines (regexes) this mode must produce

    @property
    def active(self) -> bool:
        return self.domain is not None

    @property
    def translated(self) -> bool:
        """Devices sit in DMA-API domains: only what a driver mapped is reachable."""
        return self.domain in ("DMA", "DMA-FQ")


ON = Mode("on", "vtd", ("intel_iommu=on",), "DMA-FQ",
          klog=(r"^iommu: Default domain type: Translated",
                r"^iommu: DMA domain TLB invalidation policy: lazy mode"))
MODES = [
    ON,
    Mode("on-strict", "vtd", ("intel_iommu=on,strict",), "DMA",
         klog=(r"^DMAR: intel_iommu=strict deprecated",  # and it sets iommu.strict=1's policy
               r"^iommu: DMA domain TLB invalidation policy: strict mode")),
    Mode("pt", "vtd", ("intel_iommu=on", "iommu=pt"), "identity",
         klog=(r"^iommu: Default domain type: Passthrough",)),
    Mode("off", "vtd", ("intel_iommu=off",), None, klog=(r"^DMAR: IOMMU disabled$",)),
    Mode("aw48", "vtd,aw=48", ("intel_iommu=on",), "DMA-FQ", aw=48),
    # Linux: "The flush queue implementation does not perform page-selective invalidations that
    # are required for efficient TLB flushes in virtual environments" -> strict
    Mode("caching-mode", "vtd,caching-mode=on", ("intel_iommu=on",), "DMA", caching_mode=True,
         klog=(r"^DMAR: IOMMU batching disallowed due to virtualization$",)),
    Mode("qi-off", "vtd,qi=off", ("intel_iommu=on",), "DMA-FQ", qi=False),
    Mode("no-iommu", None, (), None),
]


# --- the network peer -----------------------------------------------------------------------
def icmp_echo_reply(frame: bytes, ip: str, mac: bytes) -> bytes | None:
    """The reply to ``frame`` if it is a well-formed ICMP echo request to ``ip``, else None."""
    if netpeer.ethertype(frame) != netpeer.ETH_P_IP or len(frame) < 14 + 20 + 8:
        return None
    pkt = frame[14:]
    ihl = (pkt[0] & 0xF) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    if pkt[0] >> 4 != 4 or ihl < 20 or total > len(pkt) or total < ihl + 8 or pkt[9] != IPPROTO_ICMP:
        return None
    if pkt[16:20] != netpeer.ip4(ip) or netpeer.checksum(pkt[:ihl]) != 0:
        return None
    icmp = pkt[ihl:total]
    if icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0 or netpeer.checksum(icmp) != 0:
        return None
    reply = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + icmp[4:]  # same identifier, sequence and data
    reply = reply[:2] + struct.pack("!H", netpeer.checksum(reply)) + reply[4:]
    ident = struct.unpack_from("!H", pkt, 4)[0] ^ 0x8000
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(reply), ident, 0, 64, IPPROTO_ICMP, 0,
                      netpeer.ip4(ip), pkt[12:16])
    hdr = hdr[:10] + struct.pack("!H", netpeer.checksum(hdr)) + hdr[12:]
    return netpeer.ether(frame[6:12], mac, netpeer.ETH_P_IP, hdr + reply)


@dataclass
class EchoPeer(netpeer.Responder):
    """netpeer's Responder (ARP for 10.0.2.2) that also answers the guest's pings, counting them."""

    icmp_echoes: int = 0

    def handle(self, frame: bytes) -> list[bytes]:
        reply = icmp_echo_reply(frame, self.ip, self.mac)
        if reply is None:
            return super().handle(frame)
        self.frames.append(frame)
        self.counts.frames += 1
        self.icmp_echoes += 1
        return [reply]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def udp_peer():
    """(the running peer, the --net value that joins kvmpy's e1000 to it)."""
    kvmpy_port = _free_udp_port()
    endpoint = netpeer.UdpEndpoint(0, kvmpy_port)
    peer = netpeer.PeerThread(endpoint, EchoPeer()).start()
    yield peer, f"socket,udp={kvmpy_port}:{endpoint.sock.getsockname()[1]}"
    peer.stop()


# --- images and guests ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def vtd_images(guest_images):
    """The initrd with the driver overlay; `guest_images` (conftest) skips first where Linux
    cannot run, and gives the SHA-256 of /data/sample.bin, the pattern /init writes to disk."""
    make_targets("build/debian/vmlinuz", "build/images/initrd.gz", makefile="firmware/images.mk")
    raw = gzip.decompress(NET_INITRD.read_bytes())  # both archives' members, one after the other
    for name in OVERLAY_MODULES:
        assert name in raw, f"{NET_INITRD} carries no {name.decode()} (firmware/images/mkmodules.py)"
    return guest_images


@pytest.fixture(scope="session")
def hvm_vtd_images(vtd_images):
    make_targets("build/images/disk.img", "build/debian/bios-256k.bin", "build/debian/vgabios-stdvga.bin",
                 makefile="firmware/images.mk")
    return vtd_images


class VtdGuest(GuestProcess):
    """`python -m kvmpy boot ARGS`, the serial line on stdin (for the HVM loader's prompt)."""

    def __init__(self, args: list[str], append: str = "", timeout: float = GUEST_TIMEOUT):
        self.append = append
        self._start([*VMM_COMMAND, "boot", *args], timeout, interactive=True)

    def choose(self, label: str, words: list[str]) -> None:
        """Type a boot label and extra kernel words at syslinux's `boot:` prompt."""
        self.wait_for(r"boot:")
        self.send(" ".join([label, *words, *EXTRA_APPEND]))

    def markers(self, name: str) -> list[str]:
        """The text after every `KVMPY-<name> `, in order."""
        return [m.strip() for m in re.findall(rf"KVMPY-{re.escape(name)} ([^\n]*)", self.output)]


@pytest.fixture
def vtd_guest():
    """Factory: vtd_guest(args, append="") -> VtdGuest; every process is killed at teardown."""
    started: list[VtdGuest] = []

    def boot(args: list[str], append: str = "") -> VtdGuest:
        g = VtdGuest([str(a) for a in args], append)
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()


def guest_words(mode: Mode) -> list[str]:
    """The kernel words of every run but the data disk's: the IOMMU's, the edu test's pages and
    switches, the network."""
    return [*mode.words, f"memmap=8K${TARGET:#x}", "kvmpy.iommu=report", f"kvmpy.edu={TARGET:#x}",
            f"kvmpy.net={GUEST_IP}/{PREFIX}", f"kvmpy.ping={PEER_IP}",
            f"kvmpy.pingflood={PEER_IP}:{PINGFLOOD}"]


def machine_args(mode: Mode, data: Path, net: str) -> list[str]:
    args = ["--drive", f"file={data}", "--net", net, "--device", "edu",
            "--memory", MEMORY, "--cpus", str(CPUS)]
    return args + (["--iommu", mode.iommu] if mode.iommu else [])


def data_disk(tmp_path: Path) -> Path:
    path = tmp_path / "data.img"
    with open(path, "wb") as f:
        f.truncate(DATA_DISK_MIB * MIB)
    return path


# --- what the guest reported ----------------------------------------------------------------
def fields(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if "=" in w)


def need(lines: list[str], pattern: str, g: VtdGuest) -> re.Match:
    """The first of ``lines`` matching ``pattern``, or fail showing them all."""
    rx = re.compile(pattern)
    for line in lines:
        m = rx.search(line)
        if m:
            return m
    shown = "\n".join(lines)
    pytest.fail(f"no line matches {pattern!r} among:\n{shown}\n{g.describe()}")


def pattern_words(first: int) -> str:
    return " ".join(f"{first + i:08x}" for i in range(EDU_WORDS))


def assert_ran_to_the_end(g: VtdGuest, rc: int) -> None:
    out = g.describe()
    assert "Kernel panic" not in g.output and MALFUNCTION not in g.output, out
    assert g.marker("ACTION") == "poweroff", out
    assert rc == EXIT_POWEROFF, out


def assert_iommu(g: VtdGuest, mode: Mode) -> None:
    """The DMAR table, the unit the kernel found in it, its groups, in the kernel's own words."""
    out = g.describe()
    seen = g.marker("CMDLINE").split()
    for word in mode.words:
        assert word in seen, f"{word!r} missing from the guest's /proc/cmdline {seen}\n{out}"
    tables = set(g.marker("ACPI").split())
    assert ("DMAR" in tables) == (mode.iommu is not None), f"ACPI tables {sorted(tables)}\n{out}"
    klog = g.markers("IOMMU-KLOG")

    if mode.iommu is None:
        assert not [line for line in klog if line.startswith("DMAR: Host address width")], out
    else:
        # Linux parses the DMAR table and reads the unit whether or not it then uses it
        need(klog, rf"^DMAR: Host address width {mode.aw}$", g)
        need(klog, rf"^DMAR: DRHD base: 0x0*{VTD_BASE:x} flags: 0x1$", g)  # INCLUDE_PCI_ALL
        m = need(klog, rf"^DMAR: dmar0: reg_base_addr {VTD_BASE:x} ver 1:0 "
                       r"cap ([0-9a-f]+) ecap ([0-9a-f]+)$", g)
        cap, ecap = int(m[1], 16), int(m[2], 16)
        sagaw = cap >> CAP_SAGAW_SHIFT & 0x1F
        assert sagaw & SAGAW_39 and bool(sagaw & SAGAW_48) == (mode.aw == 48), f"CAP {cap:#x}\n{out}"
        assert (cap >> CAP_MGAW_SHIFT & 0x3F) + 1 == mode.aw, f"CAP {cap:#x}\n{out}"
        assert bool(cap & CAP_CM) == mode.caching_mode, f"CAP {cap:#x}\n{out}"
        assert bool(ecap & ECAP_QI) == mode.qi, f"ECAP {ecap:#x}\n{out}"

    pci = {}
    for line in g.markers("IOMMU-PCI"):
        bdf, ids, *rest = line.split()
        pci[bdf] = (ids, fields(rest))
    assert pci.get(EDU_BDF, ("",))[0] == EDU_IDS, f"PCI devices {pci}\n{out}"
    groups = {}
    for line in g.markers("IOMMU-GROUP"):
        num, *rest = line.split()
        f = fields(rest)
        groups[num] = (f.get("type"), f.get("devices", "").split(","))
    assert int(g.marker("IOMMU-GROUPS")) == len(groups), out

    if not mode.active:
        assert g.marker("IOMMU-UNITS") == "none", out
        assert not groups and all(f["group"] == "none" for _, f in pci.values()), out
        assert not [line for line in klog if "Virtualization Technology for Directed I/O" in line], out
    else:
        if "intel_iommu=on" in " ".join(mode.words):
            need(klog, r"^DMAR: IOMMU enabled$", g)
        need(klog, r"^DMAR: Intel\(R\) Virtualization Technology for Directed I/O$", g)
        need(klog, "^DMAR: dmar0: Using " + ("Queued" if mode.qi else "Register based") + " invalidation$", g)
        assert g.marker("IOMMU-UNITS") == "dmar0", out
        unit = g.marker("IOMMU-UNIT").split()
        assert unit[0] == "dmar0", out
        uf = fields(unit[1:])
        assert uf["address"] == f"{VTD_BASE:x}" and uf["version"] == "1:0", out
        assert (int(uf["cap"], 16), int(uf["ecap"], 16)) == (cap, ecap), out
        # every PCI function is in a group, as the kernel logged it; each group's default domain
        # is of the mode's type; edu, a single-function device on the root bus, is alone in its own
        for bdf, (_, f) in pci.items():
            assert f["group"] != "none", f"{bdf} is in no IOMMU group\n{out}"
            assert bdf in groups[f["group"]][1], f"group {f['group']} lacks {bdf}: {groups}\n{out}"
            need(klog, rf"{re.escape(bdf)}: Adding to iommu group {f['group']}$", g)
        for num, (kind, devs) in groups.items():
            # Debian's INTEL_IOMMU_DEFAULT_ON_INTGPU_OFF patch (not upstream) keeps integrated
            # graphics out of translation; a group of display devices alone may be identity
            allowed = {mode.domain}
            if all(pci[d][1]["class"].startswith(DISPLAY_CLASS) for d in devs if d in pci):
                allowed.add("identity")
            assert kind in allowed, f"group {num} ({devs}) has a {kind} domain, not {mode.domain}\n{out}"
        assert groups[pci[EDU_BDF][1]["group"]][1] == [EDU_BDF], f"groups {groups}\n{out}"
    for pattern in mode.klog:
        need(klog, pattern, g)


def assert_edu(g: VtdGuest, mode: Mode) -> None:
    """Userspace's DMA through edu: blocked in a translated domain, performed otherwise."""
    out = g.describe()
    bdf, *rest = g.marker("EDU-PCI").split()
    f = fields(rest)
    assert bdf == EDU_BDF and f["enable"] == "ok", out
    bar = int(f["bar0"], 16)
    assert bar and bar % EDU_BAR_SIZE == 0, f"BAR0 at {bar:#x}\n{out}"
    assert int(f["command"], 16) & 0x6 == 0x6, f"memory space and bus master not both on\n{out}"
    ident, live = g.marker("EDU-ID").split()
    assert ident == EDU_ID and live == f"liveness={~LIVENESS_WRITTEN & 0xFFFFFFFF:08x}", out
    # devmem reached both pages: it reads back what it wrote
    assert g.marker("EDU-SOURCE") == pattern_words(SOURCE_WORD), out
    assert g.marker("EDU-TARGET-BEFORE") == pattern_words(TARGET_WORD), out

    dmas = {}
    for line in g.markers("EDU-DMA"):
        name, result, *rest = line.split()
        dmas[name] = (result, fields(rest))
    faults = g.markers("EDU-FAULT")
    dev = EDU_BDF.removeprefix("0000:")
    if mode.translated:
        assert dmas["to-device"] == ("error", {"errors": "1", "erraddr": f"{SOURCE:#x}"}), out
        assert dmas["to-ram"] == ("error", {"errors": "2", "erraddr": f"{TARGET:#x}"}), out
        assert g.marker("EDU-TARGET") == pattern_words(TARGET_WORD), f"the blocked DMA wrote memory\n{out}"
        for fault, addr in ((WRITE_FAULT, TARGET), (READ_FAULT, SOURCE)):
            line = FAULT_LINE.format(dev=dev, addr=addr, **fault)
            assert line in faults, f"the guest's kernel did not log {line!r}: {faults}\n{out}"
    else:
        for name in ("to-device", "to-ram"):
            assert dmas[name] == ("ok", {"errors": "0", "erraddr": "0x0"}), out
        assert g.marker("EDU-TARGET") == pattern_words(SOURCE_WORD), \
            f"the DMA did not copy the source page onto the target\n{out}"
        assert not faults, out

    # and nothing else faulted: the disk's and the network's DMA all went through their mappings
    logged = g.markers("IOMMU-FAULT")
    assert int(g.marker("IOMMU-FAULTS")) == len(logged) == (2 if mode.translated else 0), out
    assert all(f"Request device [{dev}]" in line for line in logged), out


def assert_disk(g: VtdGuest, dev: str, data: Path, sample_sha256: str) -> None:
    """The data disk over ata_piix with DMA: the guest wrote the pattern and read it back, and it
    is in the image file."""
    out = g.describe()
    assert not g.markers("MODULE-FAILED"), out
    ctrls = [tuple(line.split()) for line in g.markers("ATA-CTRL")]
    assert ("0000:00:01.1", IDE_IDS, "ata_piix") in ctrls, f"IDE controllers {ctrls}\n{out}"
    disks = [fields(line.split()[1:]) for line in g.markers("ATA")]
    disks = [d for d in disks if d.get("class") == "ata"]
    assert disks and all(DMA_MODE.match(d["xfer"]) for d in disks), f"ATA devices {disks}\n{out}"
    assert g.marker("DATA-WRITE") == f"{dev} {sample_sha256}", out
    with open(data, "rb") as f:
        assert hashlib.sha256(f.read(MIB)).hexdigest() == sample_sha256, out
        assert f.read() == bytes((DATA_DISK_MIB - 1) * MIB), out


def assert_network(g: VtdGuest, peer: netpeer.PeerThread) -> None:
    out = g.describe()
    assert g.marker("NET-DRIVER") == "e1000" and g.marker("NET-PCI") == E1000_IDS, out
    assert g.marker("NET-LINK") == "up", out
    assert g.marker("PING-OK") == PEER_IP, out
    assert g.marker("PINGFLOOD") == f"{PEER_IP} {PINGFLOOD} {PINGFLOOD}", out
    assert peer.responder.icmp_echoes >= 3 + PINGFLOOD, (peer.responder.icmp_echoes, out)


# --- the tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_direct_boot_guest_on_vtd(vtd_images, vtd_guest, udp_peer, tmp_path, mode):
    peer, net = udp_peer
    data = data_disk(tmp_path)
    append = kernel_cmdline("poweroff", *guest_words(mode), "kvmpy.write=/dev/sda")
    g = vtd_guest(["--kernel", vtd_images.kernel, "--initrd", NET_INITRD, "--append", append,
                   *machine_args(mode, data, net)], append)
    g.wait_for(r"KVMPY-BOOT-OK")
    rc = g.wait()
    assert_ran_to_the_end(g, rc)
    assert_iommu(g, mode)
    assert_edu(g, mode)
    assert_disk(g, "/dev/sda", data, vtd_images.sample_sha256)
    assert_network(g, peer)


def test_hvm_guest_on_vtd(hvm_vtd_images, vtd_guest, udp_peer, tmp_path):
    """The same through SeaBIOS (which passes kvmpy's DMAR on to Linux with the other ACPI tables)
    and syslinux: its `write` label writes the pattern to the data disk, /dev/sdb behind the boot
    disk; the other words are typed after the label."""
    peer, net = udp_peer
    disk = tmp_path / "disk.img"  # a copy: kvmpy opens and locks its disks read-write
    subprocess.run(["cp", "--sparse=always", str(DISK), str(disk)], check=True)
    data = data_disk(tmp_path)
    g = vtd_guest(["--hvm", disk, *machine_args(ON, data, net)])
    g.choose("write", ["quiet", *guest_words(ON)])
    g.wait_for(r"KVMPY-BOOT-OK")
    rc = g.wait()
    assert_ran_to_the_end(g, rc)
    assert_iommu(g, ON)
    assert_edu(g, ON)
    assert_disk(g, "/dev/sdb", data, hvm_vtd_images.sample_sha256)
    assert_network(g, peer)
