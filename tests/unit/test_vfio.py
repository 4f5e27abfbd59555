"""VFIO passthrough without an IOMMU: host-support detection on fake sysfs trees, the container
sequence and DMA mapping against the fake backend (which enforces the kernel's ordering rules),
and the passed-through PCI function driven through the PCI bus the way a guest driver drives it:
BAR sizing and moving (memslots and trapped pages), configuration virtualisation, MSI, MSI-X
and INTx wiring, reset, teardown."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kvmpy import layout
from kvmpy.devices.pci import PciBus
from kvmpy.errors import UsageError
from kvmpy.hw.bus import MmioBus, PioBus
from kvmpy.iommu import vfio
from kvmpy.iommu.vfio import (
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VfioContainer,
    VfioError,
    VfioUnavailableError,
    host_support,
    parse_bdf,
)
from kvmpy.iommu.vfio_fake import (
    FAKE_MMAP_BASE,
    FakePassthroughHost,
    FakeVfioBackend,
    make_fake_nic,
    make_host_tree,
)
from kvmpy.iommu.vfio_pci import Passthrough, VfioPciDevice
from kvmpy.memory import GuestMemory

BDF = "0000:03:00.0"
GROUP = 12
SLOT = 3
BAR0_GPA, BAR3_GPA = 0xE000_0000, 0xE002_0000
MSI_CAP, MSIX_CAP = 0x50, 0x70


# --- helpers --------------------------------------------------------------------------------------
def sysfs(tmp_path: Path, devices: dict[str, str | None], group: int = GROUP, *, vfio_node: bool = True,
          bridges: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A fake /sys and /dev: ``devices`` (bdf -> driver) all in IOMMU ``group``."""
    return make_host_tree(tmp_path, devices, group, vfio_node=vfio_node, bridges=bridges)


@pytest.fixture
def backend() -> FakeVfioBackend:
    return FakeVfioBackend({BDF: make_fake_nic(rom=b"\x55\xaa" + bytes(0x7FFE))}, {GROUP: [BDF]})


class Machine:
    """The pieces a profile would give a passed-through function: buses, a PCI bus, KVM's side."""

    def __init__(self, backend: FakeVfioBackend) -> None:
        self.backend = backend
        self.pio, self.mmio = PioBus(), MmioBus()
        self.pci = PciBus(self.pio, self.mmio)
        self.host = FakePassthroughHost()
        self.container = VfioContainer.open(backend, GROUP)
        self.dev = self.container.device(BDF)
        self.fake = backend.devices[BDF]
        self.fn = VfioPciDevice(self.dev, self.host)
        self.pci.place(SLOT, 0, self.fn)

    def cfg_read(self, off: int, size: int = 4) -> int:
        return self.pci.config_read(SLOT, 0, off, size)

    def cfg_write(self, off: int, value: int, size: int = 4) -> None:
        self.pci.config_write(SLOT, 0, off, size, value)

    def enable_bars(self) -> None:
        self.cfg_write(0x10, BAR0_GPA)
        self.cfg_write(0x18, 0xC000)
        self.cfg_write(0x1C, BAR3_GPA)
        self.cfg_write(0x04, 0x0007, 2)

    def irq_calls(self, index: int) -> list[tuple]:
        return [c for c in self.backend.irq_log if c[1] == index]


@pytest.fixture
def m(backend: FakeVfioBackend) -> Machine:
    mach = Machine(backend)
    yield mach
    mach.fn.close()
    mach.container.close()


def readable(fd: int) -> bool:
    try:
        return os.eventfd_read(fd) > 0
    except BlockingIOError:
        return False


# --- the header ----------------------------------------------------------------------------------
def test_constants_are_the_headers():
    ffi_mod = pytest.importorskip("kvmpy._vfio_ffi", reason="kvmpy._vfio_ffi not built")
    lib = ffi_mod.lib
    names = [n for n in dir(vfio) if n.startswith("VFIO_") and isinstance(getattr(vfio, n), int)]
    assert len(names) > 30
    for name in names:
        assert getattr(lib, name) == getattr(vfio, name), name


def test_struct_layouts_are_the_kernel_abi():
    ffi = pytest.importorskip("kvmpy._vfio_ffi", reason="kvmpy._vfio_ffi not built").ffi
    assert ffi.offsetof("struct vfio_irq_set", "data") == 20
    assert ffi.sizeof("struct vfio_iommu_type1_dma_map") == 32
    assert ffi.sizeof("struct vfio_region_info") == 32
    assert ffi.offsetof("struct vfio_region_info_cap_sparse_mmap", "areas") == 16
    lib = pytest.importorskip("kvmpy._vfio_ffi").lib
    assert lib.VFIO_GET_API_VERSION == 0x3B64 and lib.VFIO_IOMMU_UNMAP_DMA == 0x3B72


def test_real_backend_reports_a_missing_container(tmp_path):
    pytest.importorskip("kvmpy._vfio_ffi", reason="kvmpy._vfio_ffi not built")
    b = vfio.RealVfioBackend(dev_root=tmp_path)
    with pytest.raises(VfioError) as e:
        b.open_container()
    assert e.value.errno == errno.ENOENT and "vfio/vfio" in str(e.value)


# --- names and host support ------------------------------------------------------------------------
def test_parse_bdf():
    assert parse_bdf("0000:03:00.0") == BDF
    assert parse_bdf("03:00.0") == BDF
    assert parse_bdf("1:0a:1f.7") == "0001:0a:1f.7"
    for bad in ("03:00", "0000:03:20.0", "3.0", "0000:03:00.8", "zz:00.0", ""):
        with pytest.raises(UsageError) as e:
            parse_bdf(bad)
        assert "0000:03:00.0" in str(e.value) and str(e.value).count(".") <= 3


def test_no_iommu_groups(tmp_path):
    (tmp_path / "sys/kernel/iommu_groups").mkdir(parents=True)
    ok, why = host_support(None, sys_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    assert not ok
    assert why.startswith("no IOMMU groups (") and "is empty" in why and "intel_iommu=on" in why
    ok, why2 = host_support(BDF, sys_root=tmp_path / "nowhere", dev_root=tmp_path / "dev")
    assert not ok and why2.startswith("no IOMMU groups")


def test_container_node_missing(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"})
    (devr / "vfio/vfio").unlink()
    ok, why = host_support(None, sys_root=sysr, dev_root=devr)
    assert not ok and why == f"{devr}/vfio/vfio missing (load vfio-pci: modprobe vfio-pci)"


def test_host_ready_without_a_device(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"})
    ok, why = host_support(None, sys_root=sysr, dev_root=devr)
    assert ok and "1 IOMMU groups" in why


def test_no_such_device(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"})
    ok, why = host_support("0000:04:00.0", sys_root=sysr, dev_root=devr)
    assert not ok and why == "no PCI device 0000:04:00.0 on this host"


def test_device_bound_to_another_driver(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "e1000e"})
    ok, why = host_support("03:00.0", sys_root=sysr, dev_root=devr)
    assert not ok and why.startswith("0000:03:00.0 is bound to e1000e, not vfio-pci (")
    assert "driver_override" in why
    sysr, devr = sysfs(tmp_path / "b", {BDF: None})
    ok, why = host_support(BDF, sys_root=sysr, dev_root=devr)
    assert not ok and why.startswith("0000:03:00.0 is bound to no driver, not vfio-pci")


def test_group_not_viable(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci", "0000:03:00.1": "snd_hda_intel"})
    ok, why = host_support(BDF, sys_root=sysr, dev_root=devr)
    assert not ok
    assert why.startswith("IOMMU group 12 is not viable: 0000:03:00.1 is bound to snd_hda_intel")


def test_group_viable_with_stub_unbound_and_bridge(tmp_path):
    sysr, devr = sysfs(
        tmp_path,
        {BDF: "vfio-pci", "0000:03:00.1": "pci-stub", "0000:03:00.2": None, "0000:00:01.0": "pcieport"},
        bridges=("0000:00:01.0",),
    )
    ok, why = host_support(BDF, sys_root=sysr, dev_root=devr)
    assert ok, why
    assert "viable IOMMU group 12" in why


def test_group_node_missing(tmp_path):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"}, vfio_node=False)
    ok, why = host_support(BDF, sys_root=sysr, dev_root=devr)
    assert not ok and why.startswith(f"{devr}/vfio/12 missing")


def test_this_host_reason_is_specific():
    """Whatever this host is, the reason names a concrete thing (used by kvmpy info)."""
    ok, why = host_support(None)
    assert why and (ok or "missing" in why or "IOMMU" in why or "access" in why)


# --- container and DMA --------------------------------------------------------------------------------
def test_container_sequence_order(backend):
    c = VfioContainer.open(backend, GROUP)
    assert [x[0] for x in backend.calls] == ["open_container", "open_group", "set_container", "set_iommu"]
    assert backend.calls[-1] == ("set_iommu", vfio.VFIO_TYPE1v2_IOMMU)
    dev = c.device(BDF)
    with pytest.raises(VfioError):  # device fd still open: the group cannot be detached
        backend.unset_container(c.group_fd)
    dev.close()
    c.close()
    assert backend.open_fds() == {} and backend.group_container == {}
    c.close()  # twice is fine


def test_container_refusals(backend):
    backend.viable = False
    with pytest.raises(VfioUnavailableError, match="IOMMU group 12 is not viable"):
        VfioContainer.open(backend, GROUP)
    assert backend.open_fds() == {}
    backend.viable, backend.extensions = True, set()
    with pytest.raises(VfioUnavailableError, match="type1"):
        VfioContainer.open(backend, GROUP)
    backend.extensions, backend.version = {vfio.VFIO_TYPE1_IOMMU}, 1
    with pytest.raises(VfioUnavailableError, match="API version 1"):
        VfioContainer.open(backend, GROUP)
    backend.version = 0
    c = VfioContainer.open(backend, GROUP)
    assert c.iommu_type == vfio.VFIO_TYPE1_IOMMU
    c.close()
    assert backend.open_fds() == {}


@pytest.fixture
def ram():
    mem = GuestMemory(layout.LOWMEM_LIMIT + 64 * layout.MiB)  # both RAM regions; pages untouched
    yield mem
    mem.close()


def test_dma_maps_every_ram_region(backend, ram):
    c = VfioContainer.open(backend, GROUP)
    c.map_guest_ram(ram)
    rw = vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE
    assert backend.dma == {
        0: (layout.LOWMEM_LIMIT, ram.host_base, rw),
        layout.HIGHMEM_START: (64 * layout.MiB, ram.host_base + layout.LOWMEM_LIMIT, rw),
    }
    c.close()
    assert ("unmap_dma", layout.HIGHMEM_START, 64 * layout.MiB) in backend.calls
    assert backend.dma == {}


def test_dma_outside_iova_ranges_and_memlock(backend, ram):
    backend.ranges = [(0, 0xFEDF_FFFF)]
    c = VfioContainer.open(backend, GROUP)
    with pytest.raises(VfioUnavailableError, match="outside the IOVA ranges"):
        c.map_guest_ram(ram)
    c.close()
    backend.ranges, backend.map_dma_errno = None, errno.ENOMEM
    c = VfioContainer.open(backend, GROUP)
    with pytest.raises(VfioError, match="RLIMIT_MEMLOCK"):
        c.map_guest_ram(ram)
    c.close()


# --- configuration space ---------------------------------------------------------------------------
def test_identity_and_capabilities_come_from_the_device(m):
    assert m.cfg_read(0x00) == 0x10D3_8086
    assert m.cfg_read(0x08) >> 8 == 0x020000
    assert m.cfg_read(0x34, 1) == 0x40
    assert m.cfg_read(0x40, 2) == 0x5001 and m.cfg_read(0x50, 2) == 0x7005 and m.cfg_read(0x70, 2) == 0xA011
    assert m.cfg_read(0x3D, 1) == 1  # INTA#
    assert m.cfg_read(0x06, 2) & 0x10
    m.fake.config[0x06] |= 0x08  # the device's interrupt status shows through
    assert m.cfg_read(0x06, 2) & 0x08
    assert m.cfg_read(0x100) == 0  # conventional bus: no extended space


def test_bar_sizing_is_emulated(m):
    for off, mask in ((0x10, 0xFFFE_0000), (0x18, 0xFFFF_FFE1), (0x1C, 0xFFFF_C000),
                      (0x14, 0), (0x20, 0), (0x24, 0)):
        m.cfg_write(off, 0xFFFF_FFFF)
        assert m.cfg_read(off) == mask, hex(off)
    assert not [w for w in m.fake.config_writes if 0x10 <= w[0] < 0x28]
    m.cfg_write(0x10, BAR0_GPA | 0xF)
    assert m.cfg_read(0x10) == BAR0_GPA
    assert m.fake.config[0x10:0x14] == (0xFEBC_0000).to_bytes(4, "little")  # the host's, untouched


def test_command_is_forwarded_and_kept(m):
    m.cfg_write(0x04, 0x0406, 2)
    assert (0x04, b"\x06\x04") in m.fake.config_writes
    assert m.cfg_read(0x04, 2) == 0x0406
    m.cfg_write(0x04, 0xFFFF_0000 | 0x0002)  # STATUS bytes forwarded too (write-1-to-clear there)
    assert m.fake.config_writes[-1] == (0x04, b"\x02\x00\xff\xff")


def test_other_writes_forwarded_msi_and_line_not(m):
    m.cfg_write(0x44, 0x0003, 2)  # PMCSR: the device's
    assert (0x44, b"\x03\x00") in m.fake.config_writes
    m.cfg_write(0x3C, 0x0A, 1)
    assert m.cfg_read(0x3C, 1) == 0x0A
    n = len(m.fake.config_writes)
    m.cfg_write(MSI_CAP + 4, 0xFEE0_0000)
    m.cfg_write(MSIX_CAP, 0x8000_0000 | 0xA011)  # dword at the MSI-X cap: id/next forwarded, ctrl not
    writes = m.fake.config_writes[n:]
    assert writes == [(MSIX_CAP, b"\x11\xa0")]
    assert m.cfg_read(MSI_CAP + 4) == 0xFEE0_0000
    assert m.fake.config[MSI_CAP + 4 : MSI_CAP + 8] == bytes(4)


def test_msix_capability_registers(m):
    assert m.cfg_read(MSIX_CAP + 2, 2) == 0x0004
    assert m.cfg_read(MSIX_CAP + 4) == 0x3 and m.cfg_read(MSIX_CAP + 8) == 0x2003
    m.cfg_write(MSIX_CAP + 4, 0x1234_5670)
    assert m.cfg_read(MSIX_CAP + 4) == 0x3  # read-only
    m.cfg_write(MSIX_CAP + 2, 0xFFFF, 2)
    assert m.cfg_read(MSIX_CAP + 2, 2) == 0xC004


# --- BARs ---------------------------------------------------------------------------------------------
def test_bars_become_memslots_and_trapped_pages(m):
    m.enable_bars()
    slots = sorted(m.host.memslots.values())
    assert slots == [
        (BAR0_GPA, 0x2_0000, FAKE_MMAP_BASE),
        (BAR3_GPA + 0x1000, 0x1000, FAKE_MMAP_BASE + (3 << 32) + 0x1000),
        (BAR3_GPA + 0x3000, 0x1000, FAKE_MMAP_BASE + (3 << 32) + 0x3000),
    ]
    traps = sorted((mp.base, mp.length) for mp in m.mmio.mappings())
    assert traps == [(BAR3_GPA, 0x1000), (BAR3_GPA + 0x2000, 0x1000)]
    assert [(mp.base, mp.length) for mp in m.pio.mappings() if mp.base == 0xC000] == [(0xC000, 0x20)]


def test_moving_a_bar_moves_its_memslot(m):
    m.enable_bars()
    mmaps = len(m.backend.mmaps)
    m.cfg_write(0x10, 0xD000_0000)
    assert (0xD000_0000, 0x2_0000, FAKE_MMAP_BASE) in m.host.memslots.values()
    assert not any(g == BAR0_GPA for g, _, _ in m.host.memslots.values())
    m.cfg_write(0x1C, 0xD010_0000)
    assert sorted((mp.base, mp.length) for mp in m.mmio.mappings()) == [
        (0xD010_0000, 0x1000), (0xD010_2000, 0x1000)]
    assert len(m.backend.mmaps) == mmaps  # the mmaps are kept; only the slots move
    n = len(m.fake.config_writes)
    seen: list[int] = []
    remove = m.host.remove_memslot
    m.host.remove_memslot = lambda h: (seen.append(len(m.fake.config_writes)), remove(h))
    m.cfg_write(0x04, 0, 2)  # decoding off: nothing mapped, and only then the device told
    assert m.host.memslots == {} and m.mmio.mappings() == []
    assert m.fake.config_writes[n:] == [(0x04, b"\x00\x00")]
    assert seen == [n] * 3  # every memslot went while the device still decoded
    m.host.remove_memslot = remove
    m.cfg_write(0x04, 2, 2)
    assert len(m.host.memslots) == 3


def test_without_sparse_capability_the_msix_pages_are_still_trapped(tmp_path):
    b = FakeVfioBackend({BDF: make_fake_nic(sparse=False)}, {GROUP: [BDF]})
    mach = Machine(b)
    mach.enable_bars()
    bar3 = sorted((g, s) for g, s, _ in mach.host.memslots.values() if g >= BAR3_GPA)
    assert bar3 == [(BAR3_GPA + 0x1000, 0x1000), (BAR3_GPA + 0x3000, 0x1000)]
    mach.fn.close()
    mach.container.close()


def test_memslot_refused_is_logged_not_raised(m):
    m.host.add_memslot(BAR0_GPA, 0x1000, 0x1234)  # something already there
    m.enable_bars()
    assert not any(g == BAR0_GPA and s == 0x2_0000 for g, s, _ in m.host.memslots.values())


def test_io_bar_and_trapped_page_forward(m):
    m.enable_bars()
    m.fake.contents[2][4:8] = (0xCAFE_F00D).to_bytes(4, "little")
    assert m.pio.read(0xC004, 4) == 0xCAFE_F00D
    m.pio.write(0xC010, 2, 0xBEEF)
    assert m.fake.bar_writes[-1] == (2, 0x10, b"\xef\xbe")
    m.fake.contents[3][0x100:0x104] = b"\x01\x02\x03\x04"  # table page, past the table
    assert m.mmio.read(BAR3_GPA + 0x100, 4) == 0x0403_0201
    m.mmio.write(BAR3_GPA + 0x104, 4, 7)
    assert m.fake.bar_writes[-1] == (3, 0x104, b"\x07\x00\x00\x00")


def test_rom_is_the_devices(m):
    m.cfg_write(0x30, 0xFFFF_FFFF)
    assert m.cfg_read(0x30) == 0xFFFF_8001
    m.cfg_write(0x30, 0xE010_0001)
    m.cfg_write(0x04, 2, 2)
    assert m.mmio.read(0xE010_0000, 2) == 0xAA55


def test_rom_without_signature_is_hidden():
    b = FakeVfioBackend({BDF: make_fake_nic(rom=bytes(0x800))}, {GROUP: [BDF]})
    mach = Machine(b)
    mach.cfg_write(0x30, 0xFFFF_FFFF)
    assert mach.cfg_read(0x30) == 0
    mach.fn.close()
    mach.container.close()


# --- INTx ------------------------------------------------------------------------------------------
def test_intx_eventfd_and_resample(m):
    trigger, resample = m.fn.intx_eventfds
    assert m.fake.triggers[VFIO_PCI_INTX_IRQ_INDEX] == [trigger]
    assert m.host.irqfds == {}  # no GSI known yet
    m.backend.irq_log.clear()
    m.fn.set_intx_gsi(11)
    assert m.host.irqfds == {trigger: (11, resample)}
    kinds = [(c[0], c[2]) for c in m.irq_calls(VFIO_PCI_INTX_IRQ_INDEX)]
    assert kinds == [
        ("mask", VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK),
        ("unmask", VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK),
        ("unmask", VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK),
    ]
    assert m.fake.intx_unmask_fd == resample and not m.fake.intx_masked
    assert m.backend.fire(BDF, VFIO_PCI_INTX_IRQ_INDEX)
    assert readable(trigger)
    assert not m.backend.fire(BDF, VFIO_PCI_INTX_IRQ_INDEX)  # automasked until the resample
    m.fn.set_intx_gsi(10)  # the guest re-routed the PIRQ
    assert m.host.irqfds == {trigger: (10, resample)}
    assert ("remove_irqfd", trigger, 11) in m.host.log
    m.fn.set_intx_gsi(None)
    assert m.host.irqfds == {}


# --- MSI -------------------------------------------------------------------------------------------
def program_msi(m: Machine, vectors_log2: int = 2, data: int = 0x4040) -> None:
    m.cfg_write(MSI_CAP + 4, 0xFEE0_1000)
    m.cfg_write(MSI_CAP + 8, 0)
    m.cfg_write(MSI_CAP + 12, data, 2)
    m.cfg_write(MSI_CAP + 2, (vectors_log2 << 4) | 1, 2)


def test_msi_enable_routes_irqfds_and_set_irqs(m):
    m.fn.set_intx_gsi(11)
    m.backend.irq_log.clear()
    program_msi(m)
    intx = m.irq_calls(VFIO_PCI_INTX_IRQ_INDEX)
    assert intx[-1][0] == "trigger" and intx[-1][2] == VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
    assert VFIO_PCI_INTX_IRQ_INDEX not in m.fake.triggers
    msi = m.irq_calls(VFIO_PCI_MSI_IRQ_INDEX)
    assert len(msi) == 1 and msi[0][2] == VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
    fds = list(msi[0][5])
    assert msi[0][3:5] == (0, 4) and m.fake.triggers[VFIO_PCI_MSI_IRQ_INDEX] == fds
    assert sorted(m.host.routes.values()) == [(0xFEE0_1000, 0x4040 | v) for v in range(4)]
    for v, fd in enumerate(fds):
        gsi = m.host.gsi_of(fd)
        assert m.host.routes[gsi] == (0xFEE0_1000, 0x4040 | v)
    assert m.fn.intx_eventfds[0] not in m.host.irqfds  # INTx off while MSI is on
    assert m.backend.fire(BDF, VFIO_PCI_MSI_IRQ_INDEX, 2) and readable(fds[2])


def test_msi_data_change_mask_and_pending(m):
    program_msi(m)
    fds = list(m.fake.triggers[VFIO_PCI_MSI_IRQ_INDEX])
    m.cfg_write(MSI_CAP + 12, 0x4050, 2)
    gsi0 = m.host.gsi_of(fds[0])
    assert m.host.routes[gsi0] == (0xFEE0_1000, 0x4050)
    assert ("update_msi_route", gsi0, 0xFEE0_1000, 0x4050) in m.host.log
    m.cfg_write(MSI_CAP + 0x10, 0b0010)  # mask vector 1
    assert fds[1] not in m.host.irqfds
    assert m.cfg_read(MSI_CAP + 0x14) == 0
    m.backend.fire(BDF, VFIO_PCI_MSI_IRQ_INDEX, 1)
    assert m.cfg_read(MSI_CAP + 0x14) == 0b0010  # pending while masked
    m.cfg_write(MSI_CAP + 0x10, 0)
    assert fds[1] in m.host.irqfds and readable(fds[1])  # re-signalled: KVM injects on bind


def test_msi_disable_tears_down_and_restores_intx(m):
    m.fn.set_intx_gsi(11)
    program_msi(m)
    fds = list(m.fake.triggers[VFIO_PCI_MSI_IRQ_INDEX])
    m.cfg_write(MSI_CAP + 2, 0, 2)
    last = m.irq_calls(VFIO_PCI_MSI_IRQ_INDEX)[-1]
    assert last[2] == VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER and last[4] == 0
    assert m.host.routes == {}
    trigger, resample = m.fn.intx_eventfds
    assert m.host.irqfds == {trigger: (11, resample)}
    assert m.fake.triggers == {VFIO_PCI_INTX_IRQ_INDEX: [trigger]}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_msi_vector_count_change_resets_up(m):
    program_msi(m, vectors_log2=0)
    assert len(m.fake.triggers[VFIO_PCI_MSI_IRQ_INDEX]) == 1
    m.cfg_write(MSI_CAP + 2, (1 << 4) | 1, 2)
    assert len(m.fake.triggers[VFIO_PCI_MSI_IRQ_INDEX]) == 2 and len(m.host.routes) == 2


# --- MSI-X -----------------------------------------------------------------------------------------
def table_write(m: Machine, v: int, addr: int, data: int, masked: bool) -> None:
    base = BAR3_GPA + 16 * v
    m.mmio.write(base, 4, addr & 0xFFFF_FFFF)
    m.mmio.write(base + 4, 4, addr >> 32)
    m.mmio.write(base + 8, 4, data)
    m.mmio.write(base + 12, 4, 1 if masked else 0)


def test_msix_enable_table_and_masks(m):
    m.enable_bars()
    m.cfg_write(MSIX_CAP + 2, 0x8000, 2)
    fds = list(m.fake.triggers[VFIO_PCI_MSIX_IRQ_INDEX])
    assert len(fds) == 5 and m.host.routes == {} and m.host.irqfds == {}  # all masked at reset
    assert m.mmio.read(BAR3_GPA + 12, 4) == 1
    table_write(m, 0, 0xFEE0_2000, 0x41, masked=False)
    gsi = m.host.gsi_of(fds[0])
    assert m.host.routes == {gsi: (0xFEE0_2000, 0x41)}
    assert m.mmio.read(BAR3_GPA, 4) == 0xFEE0_2000 and m.mmio.read(BAR3_GPA + 8, 4) == 0x41
    m.mmio.write(BAR3_GPA + 8, 4, 0x42)  # live data change
    assert m.host.routes[gsi] == (0xFEE0_2000, 0x42)
    m.mmio.write(BAR3_GPA + 12, 4, 0xFFFF_FFFE)  # reserved vector-control bits stay zero
    assert m.mmio.read(BAR3_GPA + 12, 4) == 0
    m.cfg_write(MSIX_CAP + 2, 0xC000, 2)  # function mask
    assert m.host.irqfds == {}
    m.cfg_write(MSIX_CAP + 2, 0x8000, 2)
    assert m.host.gsi_of(fds[0]) == gsi
    assert not [w for w in m.fake.bar_writes if w[0] == 3 and w[1] < 0x50]  # table never forwarded


def test_msix_pba_shows_pending_masked_vectors(m):
    m.enable_bars()
    m.fake.contents[3][0x2000:0x2008] = (1 << 4).to_bytes(8, "little")  # the device's own PBA
    m.cfg_write(MSIX_CAP + 2, 0x8000, 2)
    table_write(m, 2, 0xFEE0_0000, 0x50, masked=True)
    m.backend.fire(BDF, VFIO_PCI_MSIX_IRQ_INDEX, 2)
    assert m.mmio.read(BAR3_GPA + 0x2000, 8) == (1 << 4) | (1 << 2)
    m.mmio.write(BAR3_GPA + 0x2000, 8, 0)  # read-only
    assert not [w for w in m.fake.bar_writes if w[0] == 3 and w[1] == 0x2000]
    m.mmio.write(BAR3_GPA + 2 * 16 + 12, 4, 0)  # unmask: the pending message goes out
    fd2 = m.fake.triggers[VFIO_PCI_MSIX_IRQ_INDEX][2]
    assert fd2 in m.host.irqfds and readable(fd2)
    assert m.mmio.read(BAR3_GPA + 0x2000, 8) == 1 << 4


def test_msix_disable(m):
    m.fn.set_intx_gsi(5)
    m.enable_bars()
    m.cfg_write(MSIX_CAP + 2, 0x8000, 2)
    table_write(m, 1, 0xFEE0_0000, 0x33, masked=False)
    m.cfg_write(MSIX_CAP + 2, 0, 2)
    assert m.host.routes == {} and list(m.host.irqfds) == [m.fn.intx_eventfds[0]]
    assert VFIO_PCI_MSIX_IRQ_INDEX not in m.fake.triggers


# --- lifecycle ---------------------------------------------------------------------------------------
def test_reset_and_snapshot(m):
    m.enable_bars()
    program_msi(m)
    m.fn.reset()
    assert m.fake.resets == 1
    assert m.host.routes == {} and m.host.memslots == {}
    assert m.cfg_read(0x10) == 0 and m.cfg_read(MSI_CAP + 2, 2) & 1 == 0
    assert VFIO_PCI_INTX_IRQ_INDEX in m.fake.triggers
    with pytest.raises(VfioUnavailableError, match="cannot be snapshotted"):
        m.fn.snapshot()


def test_close_releases_everything(backend):
    mach = Machine(backend)
    mach.fn.set_intx_gsi(11)
    mach.enable_bars()
    mach.cfg_write(MSIX_CAP + 2, 0x8000, 2)
    table_write(mach, 0, 0xFEE0_0000, 0x30, masked=False)
    mach.fn.close()
    assert mach.host.memslots == {} and mach.host.irqfds == {} and mach.host.routes == {}
    assert sorted(a.addr for a in backend.munmaps) == sorted(a.addr for a in backend.mmaps)
    assert mach.mmio.mappings() == []
    mach.container.close()
    assert backend.open_fds() == {} and backend.dma == {}


def test_passthrough_open_and_close(tmp_path, backend, ram):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"})
    host = FakePassthroughHost()
    pt = Passthrough.open(["03:00.0"], host, ram, backend=backend, sys_root=sysr, dev_root=devr)
    assert [c[0] for c in backend.calls] == [
        "open_container", "open_group", "set_container", "set_iommu", "map_dma", "map_dma", "device_fd"]
    assert backend.devices[BDF].resets == 1
    assert host.groups == [pt.containers[GROUP].group_fd]
    (fn,) = pt.functions
    assert fn.bdf == "unplaced" and fn.name == f"vfio-{BDF}"
    pt.close()
    assert backend.open_fds() == {} and backend.dma == {} and host.groups == []


def test_passthrough_refuses_with_the_reason(tmp_path, backend, ram):
    sysr, devr = sysfs(tmp_path, {BDF: "e1000e"})
    with pytest.raises(VfioUnavailableError) as e:
        Passthrough.open([BDF], FakePassthroughHost(), ram, backend=backend, sys_root=sysr, dev_root=devr)
    assert str(e.value).startswith("cannot pass 0000:03:00.0 through: 0000:03:00.0 is bound to e1000e")
    assert e.value.exit_status == 69
    assert backend.calls == []


def test_passthrough_failure_midway_leaves_nothing_open(tmp_path, backend, ram):
    sysr, devr = sysfs(tmp_path, {BDF: "vfio-pci"})
    backend.map_dma_errno = errno.ENOMEM
    host = FakePassthroughHost()
    with pytest.raises(VfioError, match="RLIMIT_MEMLOCK"):
        Passthrough.open([BDF], host, ram, backend=backend, sys_root=sysr, dev_root=devr)
    assert backend.open_fds() == {} and host.groups == []


def test_everything_but_the_real_backend_works_without_the_ffi_module():
    """Host detection and the device model import and run when kvmpy._vfio_ffi is absent."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['kvmpy._vfio_ffi'] = None\n"
        "from kvmpy.iommu import vfio, vfio_pci, vfio_fake\n"
        "from kvmpy import info\n"
        "print(info.vfio_status().reason)\n"
        "try:\n    vfio.RealVfioBackend()\n"
        "except vfio.VfioUnavailableError as e:\n    print('refused:', e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 0, p.stderr
    reason, refused = p.stdout.strip().splitlines()
    assert reason == host_support(None)[1]
    assert refused.startswith("refused: kvmpy was built without its VFIO module")
