"""VFIO passthrough end to end inside a real KVM guest, on a host without an IOMMU.

The Machine is the real one (``--passthrough BDF``: profiles/parts.py ``place_passthrough``,
kvmpy/passthrough.py's KVM side, the GsiRouter's MSI routes); only VFIO itself is the fake
backend (kvmpy/iommu/vfio_fake.py) over a fake sysfs tree, with its BAR memory in anonymous
shared memory so that KVM maps it as memslots. Our guest program (firmware/tests/passthrough.c)
finds the device, sizes and programs its BARs, reads and writes BAR memory, reads the
configuration space VfioPciDevice virtualises, enables MSI, MSI-X and INTx, and rings a
doorbell in its I/O BAR; the test answers from another thread with ``FakeVfioBackend.fire``,
which signals the eventfd that KVM delivers through its irqfd and GSI route — kvmpy takes no
exit for it. Afterwards the test checks host-side what the guest wrote.
"""

from __future__ import annotations

import errno
import queue
import threading

import pytest

from kvmpy.iommu.vfio import (
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
)
from kvmpy.iommu.vfio_fake import FakeVfioBackend, make_fake_nic, make_host_tree
from kvmpy.machine import Machine
from kvmpy.options import parse_boot_args
from kvmpy.profiles.parts import PASSTHROUGH_SLOTS, VfioAccess

BDF = "0000:03:00.0"
GROUP = 7
SEED, SEED3 = 0x1357_9BDF, 0x2468_ACE0
# what firmware/tests/passthrough.c expects and writes (its constants)
BAR0_SIZE, BAR3_SIZE = 0x2_0000, 0x4000
TRAP_REG, TRAP_MAGIC, TRAP_WRITE = 0x800, 0x7EA9_C0DE, 0x5EED_1234
IO_REG, IO_MAGIC = 0x10, 0x10AD_10AD
DOORBELL = 0xD000_0000
DEV_REG, DEV_REG_VALUE = 0xE0, 0xCAFE_F00D
MSI_VECTOR, MSIX_VECTOR, MSIX_MASKED_VEC = 0x61, 0x62, 0x63
MARKERS = ("PT FOUND 00:0c.0 8086:10d3", "CONFIG OK", "BARS OK", "BAR MEM OK", "BAR TRAP OK", "MSI OK",
           "MSI MASK OK", "MSIX OK", "MSIX MASK OK", "INTX OK", "PASSTHROUGH OK")


def pattern(seed: int, size: int) -> bytes:
    """The guest's check pattern: dword i is seed ^ (i * 0x9E3779B1), little-endian."""
    words = ((seed ^ (i * 0x9E37_79B1)) & 0xFFFF_FFFF for i in range(size // 4))
    return b"".join(w.to_bytes(4, "little") for w in words)


class Doorbells:
    """Answers the guest's doorbell writes (BAR2 + 0, seen by the fake backend on the vCPU
    thread) from a thread of its own: the interrupt comes from outside the vCPU's exit, as a
    device's would, and reaches the guest only through KVM."""

    def __init__(self, backend: FakeVfioBackend, machine: Machine) -> None:
        self.backend, self.m = backend, machine
        self.rings: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.fired: list[tuple[int, int, bool]] = []
        self.routes_at_ring: list[dict[int, tuple[int, int]]] = []
        self.thread = threading.Thread(target=self._serve, name="doorbells", daemon=True)
        backend.on_write = self._written

    def _written(self, bdf: str, index: int, offset: int, data: bytes) -> None:
        value = int.from_bytes(data, "little")
        if index == 2 and offset == 0 and len(data) == 4 and value & 0xFF00_0000 == DOORBELL:
            self.routes_at_ring.append(dict(self.m.gsi_router.msi))
            self.rings.put(((value >> 8) & 0xFF, value & 0xFF))

    def _serve(self) -> None:
        while (ring := self.rings.get()) is not None:
            index, vector = ring
            self.fired.append((index, vector, self.backend.fire(BDF, index, vector)))

    def __enter__(self) -> Doorbells:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.rings.put(None)
        self.thread.join(timeout=10)


@pytest.fixture
def fake_host(tmp_path):
    """The fake NIC with the test's contents in its BARs, the backend holding BAR memory in
    host memory, and a sysfs/dev tree where it is bound to vfio-pci in IOMMU group 7."""
    nic = make_fake_nic()
    nic.contents[0][:] = pattern(SEED, BAR0_SIZE)
    bar3 = bytearray(pattern(SEED3, BAR3_SIZE))
    bar3[TRAP_REG : TRAP_REG + 4] = TRAP_MAGIC.to_bytes(4, "little")
    bar3[0x2000:0x3000] = bytes(0x1000)  # the PBA: nothing pending in the "hardware"
    nic.contents[3][:] = bar3
    nic.contents[2][IO_REG : IO_REG + 4] = IO_MAGIC.to_bytes(4, "little")
    backend = FakeVfioBackend({BDF: nic}, {GROUP: [BDF]}, host_memory=True)
    sysr, devr = make_host_tree(tmp_path, {BDF: "vfio-pci"}, GROUP)
    return backend, VfioAccess(backend, sysr, devr, kvm_vfio_device=False)


def boot(guest_program, access: VfioAccess, append: str = ""):
    cfg = parse_boot_args(["--kernel", str(guest_program("passthrough")), "--console", "none",
                           "--memory", "32M", "--passthrough", BDF,
                           "--append", f"seed={SEED:#x} seed3={SEED3:#x} {append}".strip()])
    return Machine(cfg, vfio=access)


def test_guest_drives_a_passed_through_function(guest_program, fake_host):
    backend, access = fake_host
    nic = backend.devices[BDF]
    events: list = []
    with boot(guest_program, access) as m:
        m.tracer.add_listener(lambda e, h: events.append(e))
        pt = m.devices["passthrough"]
        (fn,) = pt.functions
        assert fn.attachment.dev == PASSTHROUGH_SLOTS[0] == 12
        with Doorbells(backend, m) as bells:
            stop = m.run(timeout=120)
        out = m.output.decode(errors="replace")
    assert stop.status == 1, out + f"\n{stop}"
    pos = 0
    for marker in MARKERS:
        at = out.find(marker, pos)
        assert at >= 0, f"{marker!r} missing:\n{out}"
        pos = at

    # every doorbell was answered by an interrupt VFIO was set up to signal
    assert bells.fired == [(VFIO_PCI_MSI_IRQ_INDEX, 0, True), (VFIO_PCI_MSI_IRQ_INDEX, 0, True),
                           (VFIO_PCI_MSIX_IRQ_INDEX, 2, True), (VFIO_PCI_MSIX_IRQ_INDEX, 3, True),
                           (VFIO_PCI_INTX_IRQ_INDEX, 0, True), (VFIO_PCI_INTX_IRQ_INDEX, 0, True)]
    # the second INTx could only fire because KVM's resampler signalled VFIO's unmask eventfd
    # at the guest's EOI
    assert nic.intx_resamples == 1
    # the MSI routes KVM held when the guest rang: its own messages, which never reach the device
    msi_route, _, msix_route, msix_masked, *_ = bells.routes_at_ring
    assert sorted(d for _, d in msi_route.values()) == [MSI_VECTOR]
    assert all(a & 0xFFF0_0000 == 0xFEE0_0000 for a, _ in msi_route.values())
    assert sorted(d for _, d in msix_route.values()) == [MSIX_VECTOR]  # masked entries get none yet
    assert msix_masked == msix_route
    assert nic.config[0x54:0x68] == bytes(0x14), "MSI address/data reached the device"

    # BAR memory: what the guest wrote is in the device's memory, and it got there through the
    # memslots (no BAR0 access went through pwrite)
    bar0 = bytes(nic.contents[0][:BAR0_SIZE])
    assert bar0[: BAR0_SIZE // 2] == pattern(SEED, BAR0_SIZE)[: BAR0_SIZE // 2]
    assert bar0[BAR0_SIZE // 2 :] == pattern(~SEED & 0xFFFF_FFFF, BAR0_SIZE)[BAR0_SIZE // 2 :]
    bar3 = bytes(nic.contents[3][:BAR3_SIZE])
    assert bar3[0x1000:0x2000] == pattern(SEED3, BAR3_SIZE)[0x1000:0x2000]
    assert bar3[0x3000:0x4000] == pattern(~SEED3 & 0xFFFF_FFFF, BAR3_SIZE)[0x3000:0x4000]
    assert {i for i, _, _ in nic.bar_writes} == {2, 3}
    # the trapped write in BAR3's table page, and the doorbells, went through VFIO's pwrite
    assert (3, TRAP_REG + 4, TRAP_WRITE.to_bytes(4, "little")) in nic.bar_writes
    assert len([w for w in nic.bar_writes if w[0] == 2 and w[1] == 0]) == 6
    # the MSI-X table is emulated: the device's copy is untouched
    assert bar3[:0x50] == pattern(SEED3, BAR3_SIZE)[:0x50]

    # configuration space: the device register reached the device; INTERRUPT_LINE, the BARs
    # and the MSI capability stayed in the VMM's shadow
    assert nic.config[DEV_REG : DEV_REG + 4] == DEV_REG_VALUE.to_bytes(4, "little")
    assert nic.config[0x3C] == 0x0B
    assert nic.config[0x10:0x14] == (0xFEBC_0000).to_bytes(4, "little")
    writes = {off for off, _ in nic.config_writes}
    assert 0x04 in writes and DEV_REG in writes and 0x3C not in writes and 0x10 not in writes

    # teardown: nothing left open in the fake backend
    assert backend.open_fds() == {} and backend.dma == {}
    assert sorted(a.addr for a in backend.munmaps) == sorted(a.addr for a in backend.mmaps)

    # no exit at all between a doorbell and the guest's next report: the interrupt was KVM's
    # work (irqfd -> GSI route -> LAPIC) while the guest slept in hlt
    doorbell_port = 0xC000
    rings = [i for i, e in enumerate(events) if getattr(e, "port", None) == doorbell_port
             and e.is_write and e.size == 4]
    assert len(rings) == 6
    for i in rings[:1] + rings[2:3]:  # the unmasked MSI and MSI-X: the guest waits in hlt
        nxt = events[i + 1]
        assert 0x3F8 <= getattr(nxt, "port", 0) < 0x400, f"exit after the doorbell: {nxt}"


def test_guest_without_intx(guest_program, fake_host):
    """``nointx``: MSI and MSI-X only; INTx never gets a GSI since the PIRQ stays unrouted."""
    backend, access = fake_host
    with boot(guest_program, access, "nointx") as m:
        with Doorbells(backend, m) as bells:
            stop = m.run(timeout=120)
        out = m.output.decode(errors="replace")
        (fn,) = m.devices["passthrough"].functions
        assert fn.intx_gsi is None
    assert stop.status == 1, out
    assert "intx: skipped" in out and "PASSTHROUGH OK" in out
    assert len(bells.fired) == 4 and all(ok for *_, ok in bells.fired)


def test_the_kvm_vfio_device_needs_a_real_group(guest_program, fake_host):
    """Why the seam skips KVM_DEV_VFIO_GROUP_ADD with the fake: this host's KVM creates the
    KVM-VFIO device, and refuses the fake's group fd (not an open VFIO group file), and the
    failed open leaves nothing open in the backend."""
    from kvmpy.errors import KvmError

    backend, access = fake_host
    real = VfioAccess(backend, access.sys_root, access.dev_root)  # kvm_vfio_device=True
    with pytest.raises(KvmError, match="KVM_SET_DEVICE_ATTR") as e:
        boot(guest_program, real)
    assert e.value.errno == errno.EBADF
    assert backend.open_fds() == {} and backend.dma == {}
