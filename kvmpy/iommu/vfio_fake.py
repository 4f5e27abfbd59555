"""A fake VFIO backend and a fake KVM side, so passthrough is tested on hosts without an IOMMU.

``FakeVfioBackend`` implements ``vfio.VfioBackend`` over ``FakePciDevice`` models and enforces
the ordering and validity rules the kernel enforces (drivers/vfio/container.c, group.c,
pci/vfio_pci_intrs.c): SET_IOMMU only with a group attached, GET_DEVICE_FD only once the IOMMU
is set, MAP_DMA page-aligned and not overlapping, one interrupt index enabled at a time,
NORESIZE indexes not grown while enabled, the INTx unmask eventfd only while INTx is enabled,
mmap only inside the areas the region allows, and no pread/pwrite of the MSI-X table (vfio-pci
refuses those). Everything is recorded for tests to assert on. Interrupt eventfds are real,
since the device model creates real ones; ``fire`` signals one the way the hardware would.

``FakePassthroughHost`` implements ``vfio_pci.PassthroughHost`` by recording memslots, irqfds
and MSI routes.

For a real KVM guest (tests/kvm/test_passthrough_guest.py) the backend can hold each mmappable
BAR in anonymous shared memory (``host_memory=True``): ``mmap`` then returns real host addresses
inside it, which KVM maps as memslots, and pread/pwrite see the same bytes (as vfio-pci's mmap
and read/write reach the same device memory). ``on_write`` lets a test see the guest's writes to
trapped BAR registers as they happen, and ``make_host_tree`` builds the /sys and /dev entries
``vfio.host_support`` accepts.
"""

from __future__ import annotations

import errno
import mmap as _mmap
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .vfio import (
    VFIO_DEVICE_FLAGS_PCI,
    VFIO_DEVICE_FLAGS_RESET,
    VFIO_GROUP_FLAGS_CONTAINER_SET,
    VFIO_GROUP_FLAGS_VIABLE,
    VFIO_IRQ_INFO_AUTOMASKED,
    VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE,
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS,
    VFIO_PCI_NUM_REGIONS,
    VFIO_PCI_ROM_REGION_INDEX,
    VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
    VFIO_TYPE1_IOMMU,
    DeviceInfo,
    IrqInfo,
    MappedArea,
    RegionInfo,
    VFIO_TYPE1v2_IOMMU,
    VfioError,
)

#: vfio-pci places region N at fd offset N << 40 (VFIO_PCI_OFFSET_SHIFT); users must not rely on
#: it (they use region_info.offset), which the fake checks by using it too.
REGION_SHIFT = 40
FAKE_MMAP_BASE = 0x7F00_0000_0000
PAGE = 4096
_RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE


@dataclass
class FakePciDevice:
    """A device as VFIO shows it: config bytes, region contents and infos, interrupt infos."""

    config: bytearray
    regions: dict[int, RegionInfo]
    contents: dict[int, bytearray | _mmap.mmap]  # an mmap: see FakeVfioBackend(host_memory=True)
    irqs: dict[int, IrqInfo]
    flags: int = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET
    msix_table: tuple[int, int, int] | None = None  # (bar, offset, size in bytes)
    # recorded
    config_writes: list[tuple[int, bytes]] = field(default_factory=list)
    bar_writes: list[tuple[int, int, bytes]] = field(default_factory=list)
    resets: int = 0
    # interrupt state, as vfio-pci keeps it
    triggers: dict[int, list[int]] = field(default_factory=dict)  # index -> eventfds
    intx_unmask_fd: int | None = None
    intx_masked: bool = False
    intx_resamples: int = 0  # unmasks that came through the unmask eventfd


def make_fake_nic(*, sparse: bool = True, rom: bytes | None = None, reset: bool = True) -> FakePciDevice:
    """An 82574L-like NIC (8086:10d3): BAR0 128 KiB MMIO, BAR2 32-byte I/O, BAR3 16 KiB MMIO
    holding the MSI-X table (5 vectors at 0) and PBA (at 0x2000); PM, MSI (64-bit, 4 vectors,
    per-vector mask) and MSI-X capabilities; INTA#."""
    cfg = bytearray(256)

    def put(off: int, width: int, value: int) -> None:
        cfg[off : off + width] = value.to_bytes(width, "little")

    put(0x00, 2, 0x8086)
    put(0x02, 2, 0x10D3)
    put(0x06, 2, 0x0010)  # capability list
    put(0x09, 1, 0x00)
    put(0x0A, 2, 0x0200)  # Ethernet controller
    put(0x10, 4, 0xFEBC_0000)  # BAR0: 32-bit memory at the host's address
    put(0x18, 4, 0x0000_E001)  # BAR2: I/O
    put(0x1C, 4, 0xFEBE_0000)  # BAR3: 32-bit memory (MSI-X)
    put(0x2C, 2, 0x8086)
    put(0x2E, 2, 0xA01F)
    put(0x34, 1, 0x40)
    put(0x3C, 1, 0x0B)
    put(0x3D, 1, 0x01)
    # PM at 0x40 -> MSI at 0x50 -> MSI-X at 0x70 -> PCIe at 0xA0
    put(0x40, 2, 0x5001)
    put(0x42, 2, 0x0003)
    put(0x50, 2, 0x7005)
    put(0x52, 2, 0x0184)  # per-vector mask, 64-bit, MMC = 2 (4 vectors)
    put(0x70, 2, 0xA011)
    put(0x72, 2, 0x0004)  # table size 5
    put(0x74, 4, 0x0000_0003)  # table in BAR3 at 0
    put(0x78, 4, 0x0000_2003)  # PBA in BAR3 at 0x2000
    put(0xA0, 2, 0x0010)
    put(0xA2, 2, 0x0002)
    mmap_rw = _RW | VFIO_REGION_INFO_FLAG_MMAP
    regions: dict[int, RegionInfo] = {}
    contents: dict[int, bytearray] = {}
    for i in range(VFIO_PCI_NUM_REGIONS):
        regions[i] = RegionInfo(i, 0, 0, i << REGION_SHIFT)
    regions[0] = RegionInfo(0, mmap_rw, 0x2_0000, 0 << REGION_SHIFT)
    regions[2] = RegionInfo(2, _RW, 0x20, 2 << REGION_SHIFT)
    bar3_sparse = ((0x1000, 0x1000), (0x3000, 0x1000)) if sparse else None
    regions[3] = RegionInfo(3, mmap_rw | (VFIO_REGION_INFO_FLAG_CAPS if sparse else 0), 0x4000,
                            3 << REGION_SHIFT, bar3_sparse)
    regions[VFIO_PCI_CONFIG_REGION_INDEX] = RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX, _RW, 256,
                                                       VFIO_PCI_CONFIG_REGION_INDEX << REGION_SHIFT)
    if rom is not None:
        regions[VFIO_PCI_ROM_REGION_INDEX] = RegionInfo(
            VFIO_PCI_ROM_REGION_INDEX, VFIO_REGION_INFO_FLAG_READ, len(rom),
            VFIO_PCI_ROM_REGION_INDEX << REGION_SHIFT)
        contents[VFIO_PCI_ROM_REGION_INDEX] = bytearray(rom)
    for i in (0, 2, 3):
        contents[i] = bytearray(regions[i].size)
    contents[VFIO_PCI_CONFIG_REGION_INDEX] = cfg
    ev = VFIO_IRQ_INFO_EVENTFD
    irqs = {
        VFIO_PCI_INTX_IRQ_INDEX: IrqInfo(0, ev | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1),
        VFIO_PCI_MSI_IRQ_INDEX: IrqInfo(1, ev | VFIO_IRQ_INFO_NORESIZE, 4),
        VFIO_PCI_MSIX_IRQ_INDEX: IrqInfo(2, ev | VFIO_IRQ_INFO_NORESIZE, 5),
        3: IrqInfo(3, ev, 1),
        4: IrqInfo(4, ev, 1),
    }
    flags = VFIO_DEVICE_FLAGS_PCI | (VFIO_DEVICE_FLAGS_RESET if reset else 0)
    return FakePciDevice(cfg, regions, contents, irqs, flags, msix_table=(3, 0, 5 * 16))


def _eventfd_take(fd: int) -> bool:
    try:
        return os.eventfd_read(fd) > 0
    except BlockingIOError:
        return False


def _buffer_address(buf: _mmap.mmap) -> int:
    """The host address of an anonymous mapping (what a real VFIO mmap returns)."""
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def make_host_tree(root: str | Path, devices: Mapping[str, str | None], group: int, *,
                   vfio_node: bool = True, bridges: Sequence[str] = ()) -> tuple[Path, Path]:
    """A fake ``/sys`` and ``/dev`` under ``root`` that ``vfio.host_support`` reads as an IOMMU
    host: ``devices`` (bdf -> bound driver, None for none) all in IOMMU ``group``, the VFIO
    container node, and (``vfio_node``) the group's node. Returns (sys_root, dev_root)."""
    sysr, devr = Path(root) / "sys", Path(root) / "dev"
    gdir = sysr / "kernel/iommu_groups" / str(group) / "devices"
    gdir.mkdir(parents=True)
    for bdf, drv in devices.items():
        d = sysr / "bus/pci/devices" / bdf
        d.mkdir(parents=True)
        if drv is not None:
            (sysr / "bus/pci/drivers" / drv).mkdir(parents=True, exist_ok=True)
            (d / "driver").symlink_to(f"../../drivers/{drv}")
        (d / "iommu_group").symlink_to(f"../../../../kernel/iommu_groups/{group}")
        (gdir / bdf).symlink_to(f"../../../../bus/pci/devices/{bdf}")
        cfg = bytearray(64)
        cfg[0x0E] = 1 if bdf in bridges else 0  # header type: a bridge's group stays viable
        (d / "config").write_bytes(bytes(cfg))
    (devr / "vfio").mkdir(parents=True)
    (devr / "vfio/vfio").write_bytes(b"")
    if vfio_node:
        (devr / "vfio" / str(group)).write_bytes(b"")
    return sysr, devr


@dataclass
class _Fd:
    kind: str  # "container" | "group" | "device"
    obj: object


@dataclass
class _Container:
    groups: list[int] = field(default_factory=list)
    iommu: int = 0


class FakeVfioBackend:
    """See the module docstring. ``groups`` maps IOMMU group numbers to the devices in them."""

    def __init__(
        self,
        devices: dict[str, FakePciDevice],
        groups: dict[int, Sequence[str]],
        *,
        viable: bool = True,
        api_version: int = 0,
        extensions: Sequence[int] = (VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU),
        iova_ranges: list[tuple[int, int]] | None = None,
        map_dma_errno: int = 0,
        host_memory: bool = False,
    ) -> None:
        """``host_memory``: each mmappable region's contents move into anonymous shared memory
        (same bytes), so ``mmap`` hands out host addresses a real KVM memslot can map; without
        it ``mmap`` returns made-up addresses (``FAKE_MMAP_BASE``) that only a recording host
        accepts."""
        self.devices = devices
        self.host_memory = host_memory
        if host_memory:
            for d in devices.values():
                for index, r in d.regions.items():
                    if r.mappable and index in d.contents and not isinstance(d.contents[index], _mmap.mmap):
                        backing = _mmap.mmap(-1, max(r.size, PAGE))
                        backing[: len(d.contents[index])] = bytes(d.contents[index])
                        d.contents[index] = backing
        #: called as ``on_write(bdf, region index, offset, data)`` after every pwrite to a BAR
        #: (the trapped registers the guest writes; config writes are in ``config_writes``)
        self.on_write: Callable[[str, int, int, bytes], None] | None = None
        self.groups = {g: list(d) for g, d in groups.items()}
        self.viable = viable
        self.version = api_version
        self.extensions = set(extensions)
        self.ranges = iova_ranges
        self.map_dma_errno = map_dma_errno
        self.fds: dict[int, _Fd] = {}
        self._next_fd = 1000
        self.group_container: dict[int, _Container] = {}
        self.dma: dict[int, tuple[int, int, int]] = {}  # iova -> (size, vaddr, flags)
        self.calls: list[tuple] = []
        self.irq_log: list[tuple[str, int, int, int, int, tuple[int, ...]]] = []
        self.mmaps: list[MappedArea] = []
        self.munmaps: list[MappedArea] = []
        self.closed: list[int] = []

    # -- bookkeeping ----------------------------------------------------------------------------
    def _new(self, kind: str, obj: object) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self.fds[fd] = _Fd(kind, obj)
        return fd

    def _get(self, fd: int, kind: str, op: str) -> object:
        f = self.fds.get(fd)
        if f is None or f.kind != kind:
            raise VfioError(op, errno.EBADF, f"fd {fd} is not an open {kind}")
        return f.obj

    def _dev(self, fd: int, op: str) -> tuple[str, FakePciDevice]:
        bdf = self._get(fd, "device", op)
        assert isinstance(bdf, str)
        return bdf, self.devices[bdf]

    def open_fds(self) -> dict[int, str]:
        return {fd: f.kind for fd, f in self.fds.items()}

    # -- container ----------------------------------------------------------------------------------
    def open_container(self) -> int:
        self.calls.append(("open_container",))
        return self._new("container", _Container())

    def api_version(self, container: int) -> int:
        self._get(container, "container", "VFIO_GET_API_VERSION")
        return self.version

    def check_extension(self, container: int, extension: int) -> int:
        self._get(container, "container", "VFIO_CHECK_EXTENSION")
        return 1 if extension in self.extensions else 0

    def set_iommu(self, container: int, iommu_type: int) -> None:
        c = self._get(container, "container", "VFIO_SET_IOMMU")
        assert isinstance(c, _Container)
        self.calls.append(("set_iommu", iommu_type))
        if not c.groups or iommu_type not in self.extensions or c.iommu:
            raise VfioError("VFIO_SET_IOMMU", errno.EINVAL)
        c.iommu = iommu_type

    def iova_ranges(self, container: int) -> list[tuple[int, int]] | None:
        return self.ranges

    def map_dma(self, container: int, iova: int, size: int, vaddr: int, flags: int) -> None:
        c = self._get(container, "container", "VFIO_IOMMU_MAP_DMA")
        assert isinstance(c, _Container)
        self.calls.append(("map_dma", iova, size, vaddr, flags))
        if self.map_dma_errno:
            raise VfioError("VFIO_IOMMU_MAP_DMA", self.map_dma_errno)
        if not c.iommu or (iova | size | vaddr) & (PAGE - 1) or size == 0:
            raise VfioError("VFIO_IOMMU_MAP_DMA", errno.EINVAL)
        if any(a < iova + size and iova < a + s for a, (s, _, _) in self.dma.items()):
            raise VfioError("VFIO_IOMMU_MAP_DMA", errno.EEXIST)
        self.dma[iova] = (size, vaddr, flags)

    def unmap_dma(self, container: int, iova: int, size: int) -> None:
        self._get(container, "container", "VFIO_IOMMU_UNMAP_DMA")
        self.calls.append(("unmap_dma", iova, size))
        if self.dma.get(iova, (None,))[0] != size:
            raise VfioError("VFIO_IOMMU_UNMAP_DMA", errno.EINVAL)
        del self.dma[iova]

    # -- group ----------------------------------------------------------------------------------------
    def open_group(self, group: int) -> int:
        if group not in self.groups:
            raise VfioError(f"open /dev/vfio/{group}", errno.ENOENT)
        self.calls.append(("open_group", group))
        return self._new("group", group)

    def group_status(self, group_fd: int) -> int:
        g = self._get(group_fd, "group", "VFIO_GROUP_GET_STATUS")
        flags = VFIO_GROUP_FLAGS_VIABLE if self.viable else 0
        return flags | (VFIO_GROUP_FLAGS_CONTAINER_SET if g in self.group_container else 0)

    def set_container(self, group_fd: int, container: int) -> None:
        g = self._get(group_fd, "group", "VFIO_GROUP_SET_CONTAINER")
        c = self._get(container, "container", "VFIO_GROUP_SET_CONTAINER")
        assert isinstance(g, int) and isinstance(c, _Container)
        self.calls.append(("set_container", g))
        if not self.viable or g in self.group_container:
            err = errno.EINVAL if g in self.group_container else errno.EPERM
            raise VfioError("VFIO_GROUP_SET_CONTAINER", err)
        self.group_container[g] = c
        c.groups.append(g)

    def unset_container(self, group_fd: int) -> None:
        g = self._get(group_fd, "group", "VFIO_GROUP_UNSET_CONTAINER")
        assert isinstance(g, int)
        self.calls.append(("unset_container", g))
        if any(f.kind == "device" and f.obj in self.groups[g] for f in self.fds.values()):
            raise VfioError("VFIO_GROUP_UNSET_CONTAINER", errno.EBUSY, "device fds still open")
        c = self.group_container.pop(g, None)
        if c is None:
            raise VfioError("VFIO_GROUP_UNSET_CONTAINER", errno.EINVAL)
        c.groups.remove(g)
        if not c.groups:
            c.iommu = 0
            self.dma.clear()

    def device_fd(self, group_fd: int, bdf: str) -> int:
        g = self._get(group_fd, "group", "VFIO_GROUP_GET_DEVICE_FD")
        c = self.group_container.get(g)  # type: ignore[arg-type]
        if c is None or not c.iommu:
            raise VfioError("VFIO_GROUP_GET_DEVICE_FD", errno.EINVAL, "no container or IOMMU set")
        if bdf not in self.groups[g]:  # type: ignore[index]
            raise VfioError("VFIO_GROUP_GET_DEVICE_FD", errno.ENODEV)
        self.calls.append(("device_fd", bdf))
        return self._new("device", bdf)

    # -- device ---------------------------------------------------------------------------------------
    def device_info(self, device: int) -> DeviceInfo:
        _, d = self._dev(device, "VFIO_DEVICE_GET_INFO")
        return DeviceInfo(d.flags, VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS)

    def region_info(self, device: int, index: int) -> RegionInfo:
        _, d = self._dev(device, "VFIO_DEVICE_GET_REGION_INFO")
        if index not in d.regions:
            raise VfioError("VFIO_DEVICE_GET_REGION_INFO", errno.EINVAL)
        return d.regions[index]

    def irq_info(self, device: int, index: int) -> IrqInfo:
        _, d = self._dev(device, "VFIO_DEVICE_GET_IRQ_INFO")
        return d.irqs[index]

    def set_irqs(
        self, device: int, index: int, flags: int, start: int, count: int, fds: Sequence[int] = ()
    ) -> None:
        bdf, d = self._dev(device, "VFIO_DEVICE_SET_IRQS")
        action = flags & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER)
        kind = {VFIO_IRQ_SET_ACTION_MASK: "mask", VFIO_IRQ_SET_ACTION_UNMASK: "unmask",
                VFIO_IRQ_SET_ACTION_TRIGGER: "trigger"}[action]
        if flags & VFIO_IRQ_SET_DATA_EVENTFD and len(fds) != count:
            raise VfioError("VFIO_DEVICE_SET_IRQS", errno.EINVAL, "count does not match the eventfds")
        self.irq_log.append((kind, index, flags, start, count, tuple(fds)))
        info = d.irqs[index]
        if start + count > info.count:
            raise VfioError("VFIO_DEVICE_SET_IRQS", errno.EINVAL, "beyond the index's count")
        if kind == "trigger":
            if flags & VFIO_IRQ_SET_DATA_NONE and count == 0:
                d.triggers.pop(index, None)
                if index == VFIO_PCI_INTX_IRQ_INDEX:
                    d.intx_unmask_fd = None
                return
            if flags & VFIO_IRQ_SET_DATA_EVENTFD:
                others = [i for i in d.triggers if i != index]
                if others:  # vfio_pci_set_irqs_ioctl: one interrupt type at a time
                    raise VfioError("VFIO_DEVICE_SET_IRQS", errno.EINVAL, f"index {others[0]} is enabled")
                cur = d.triggers.get(index)
                if cur is not None and info.noresize and start + count > len(cur):
                    raise VfioError("VFIO_DEVICE_SET_IRQS", errno.EINVAL, "NORESIZE index grown")
                vec = list(cur or [-1] * (start + count))
                vec.extend([-1] * (start + count - len(vec)))
                vec[start : start + count] = fds
                d.triggers[index] = vec
            return
        if index != VFIO_PCI_INTX_IRQ_INDEX or VFIO_PCI_INTX_IRQ_INDEX not in d.triggers:
            raise VfioError("VFIO_DEVICE_SET_IRQS", errno.EINVAL, "mask/unmask needs INTx enabled")
        if kind == "unmask" and flags & VFIO_IRQ_SET_DATA_EVENTFD:
            d.intx_unmask_fd = fds[0] if fds[0] >= 0 else None
        elif kind == "mask":
            d.intx_masked = True
        else:
            d.intx_masked = False

    def fire(self, bdf: str, index: int, vector: int = 0) -> bool:
        """The hardware raises an interrupt: signal the eventfd VFIO holds (INTx then masks
        itself, AUTOMASKED). False when nothing is set up to receive it.

        INTx stays masked until unmasked through SET_IRQS or through the unmask eventfd: vfio-pci
        watches that one (a virqfd) and unmasks when it is signalled, which KVM's resampling irqfd
        does at the guest's EOI. The fake looks at it here, when the next interrupt is due."""
        d = self.devices[bdf]
        fds = d.triggers.get(index)
        if not fds or vector >= len(fds) or fds[vector] < 0:
            return False
        if index == VFIO_PCI_INTX_IRQ_INDEX:
            if d.intx_masked and d.intx_unmask_fd is not None and _eventfd_take(d.intx_unmask_fd):
                d.intx_masked = False
                d.intx_resamples += 1
            if d.intx_masked:
                return False
            d.intx_masked = True
        os.eventfd_write(fds[vector], 1)
        return True

    def reset(self, device: int) -> None:
        _, d = self._dev(device, "VFIO_DEVICE_RESET")
        if not d.flags & VFIO_DEVICE_FLAGS_RESET:
            raise VfioError("VFIO_DEVICE_RESET", errno.EINVAL)
        d.resets += 1

    def _locate(self, d: FakePciDevice, offset: int, size: int, op: str) -> tuple[int, int]:
        index, off = offset >> REGION_SHIFT, offset & ((1 << REGION_SHIFT) - 1)
        r = d.regions.get(index)
        if r is None or off + size > r.size or index not in d.contents:
            raise VfioError(op, errno.EINVAL, f"{size} bytes at {offset:#x}")
        if d.msix_table is not None and index == d.msix_table[0]:
            t_off, t_len = d.msix_table[1:]
            if off < t_off + t_len and t_off < off + size:  # vfio_pci_bar_rw excludes the table
                raise VfioError(op, errno.EINVAL, "the MSI-X table is not accessible")
        return index, off

    def pread(self, device: int, offset: int, size: int) -> bytes:
        _, d = self._dev(device, "pread")
        index, off = self._locate(d, offset, size, "pread")
        return bytes(d.contents[index][off : off + size])

    def pwrite(self, device: int, offset: int, data: bytes) -> None:
        bdf, d = self._dev(device, "pwrite")
        index, off = self._locate(d, offset, len(data), "pwrite")
        if index == VFIO_PCI_CONFIG_REGION_INDEX:
            d.config_writes.append((off, bytes(data)))
            for i, b in enumerate(data):
                if off + i >= 4:  # vendor/device ids read-only
                    d.config[off + i] = b
            return
        if index == VFIO_PCI_ROM_REGION_INDEX:
            raise VfioError("pwrite", errno.EINVAL, "the ROM is read-only")
        d.bar_writes.append((index, off, bytes(data)))
        d.contents[index][off : off + len(data)] = data
        if self.on_write is not None:
            self.on_write(bdf, index, off, bytes(data))

    def mmap(self, device: int, offset: int, size: int) -> MappedArea:
        _, d = self._dev(device, "mmap")
        index, off = offset >> REGION_SHIFT, offset & ((1 << REGION_SHIFT) - 1)
        r = d.regions.get(index)
        if r is None or (off | size) & (PAGE - 1) or not any(
            a <= off and off + size <= a + s for a, s in r.mmap_areas()
        ):
            raise VfioError("mmap", errno.EINVAL, f"{size:#x} bytes at {offset:#x}")
        backing = d.contents.get(index)
        if isinstance(backing, _mmap.mmap):
            area = MappedArea(_buffer_address(backing) + off, size, offset)
        else:
            area = MappedArea(FAKE_MMAP_BASE + (index << 32) + off, size, offset)
        self.mmaps.append(area)
        return area

    def munmap(self, area: MappedArea) -> None:
        self.munmaps.append(area)

    def close(self, fd: int) -> None:
        if fd not in self.fds:
            raise VfioError("close", errno.EBADF, f"fd {fd}")
        f = self.fds.pop(fd)
        self.closed.append(fd)
        if f.kind == "group" and f.obj in self.group_container:
            self.group_container[f.obj].groups.remove(f.obj)  # type: ignore[index]
            del self.group_container[f.obj]  # type: ignore[arg-type]
        if f.kind == "device":
            d = self.devices[f.obj]  # type: ignore[index]
            d.triggers.clear()
            d.intx_unmask_fd = None


@dataclass
class FakePassthroughHost:
    """``PassthroughHost`` that records what KVM would be asked to do."""

    memslots: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # handle -> (gpa, size, hva)
    irqfds: dict[int, tuple[int, int | None]] = field(default_factory=dict)  # fd -> (gsi, resample fd)
    routes: dict[int, tuple[int, int]] = field(default_factory=dict)  # gsi -> (address, data)
    groups: list[int] = field(default_factory=list)
    log: list[tuple] = field(default_factory=list)
    next_gsi: int = 24  # above the IOAPIC's pins, as a machine would allocate
    _next_slot: int = 10

    def add_memslot(self, gpa: int, size: int, host_addr: int) -> object:
        for g, s, _ in self.memslots.values():
            if g < gpa + size and gpa < g + s:
                from kvmpy.errors import KvmError

                raise KvmError("KVM_SET_USER_MEMORY_REGION", errno.EEXIST, f"{gpa:#x} overlaps a memslot")
        h = self._next_slot
        self._next_slot += 1
        self.memslots[h] = (gpa, size, host_addr)
        self.log.append(("add_memslot", gpa, size, host_addr))
        return h

    def remove_memslot(self, handle: object) -> None:
        gpa, size, _ = self.memslots.pop(handle)  # type: ignore[call-overload]
        self.log.append(("remove_memslot", gpa, size))

    def irqfd(self, fd: int, gsi: int, resample_fd: int | None = None) -> None:
        assert fd not in self.irqfds, "irqfd assigned twice"
        self.irqfds[fd] = (gsi, resample_fd)
        self.log.append(("irqfd", fd, gsi, resample_fd))

    def remove_irqfd(self, fd: int, gsi: int) -> None:
        assert self.irqfds.get(fd, (None,))[0] == gsi, "deassigning an irqfd that is not assigned"
        del self.irqfds[fd]
        self.log.append(("remove_irqfd", fd, gsi))

    def add_msi_route(self, address: int, data: int) -> int:
        gsi = self.next_gsi
        self.next_gsi += 1
        self.routes[gsi] = (address, data)
        self.log.append(("add_msi_route", gsi, address, data))
        return gsi

    def update_msi_route(self, gsi: int, address: int, data: int) -> None:
        assert gsi in self.routes
        self.routes[gsi] = (address, data)
        self.log.append(("update_msi_route", gsi, address, data))

    def remove_route(self, gsi: int) -> None:
        del self.routes[gsi]
        self.log.append(("remove_route", gsi))

    def attach_vfio_group(self, group_fd: int) -> None:
        self.groups.append(group_fd)

    def detach_vfio_group(self, group_fd: int) -> None:
        self.groups.remove(group_fd)

    def gsi_of(self, fd: int) -> int | None:
        return self.irqfds.get(fd, (None,))[0]
