"""Host PCI device assignment through VFIO's container/group API (type1 IOMMU).

What lives here: whether the host can pass a device through at all (``host_support``, read from
sysfs and devfs so it works without the cffi module and without privileges), the ``VfioBackend``
protocol that is the only thing touching VFIO file descriptors, the real backend over
``kvmpy._vfio_ffi`` (structs and ioctl numbers from <linux/vfio.h>), and two small owners of
those descriptors: ``VfioContainer`` (container + group, the IOMMU and its DMA mappings) and
``VfioDevice`` (one device fd: its regions and interrupt indexes). The PCI function the guest
sees is ``kvmpy.iommu.vfio_pci.VfioPciDevice``; a fake backend for tests is in ``vfio_fake``.

The sequence (Linux Documentation/driver-api/vfio.rst, "VFIO Usage Example"): open
/dev/vfio/vfio, check API version 0 and the type1 extension; open /dev/vfio/<group>, require the
group VIABLE (every device in it bound to vfio-pci, pci-stub or nothing, bridges excepted);
attach the group to the container, then choose the IOMMU type (only possible once a group is
attached); map guest RAM for DMA (iova = guest-physical address); get the device fd by its
"dddd:bb:dd.f" name. Teardown runs the other way: device fd, DMA unmaps, group unset, fds.

iommufd (/dev/iommu with VFIO cdevs) is not used: the legacy API is available on every kernel
that has VFIO (iommufd provides it in compatibility mode) and this build host has no
<linux/iommufd.h>.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kvmpy.errors import UsageError, VfioError, VfioUnavailableError

# --- Fixed user ABI from <linux/vfio.h>. Kept here so that host detection and the device model
# work without the compiled module; tests/unit/test_vfio.py checks each against the header.
VFIO_API_VERSION = 0
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS = 1 << 3
VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3
VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_MASKABLE = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
VFIO_IRQ_INFO_NORESIZE = 1 << 3
VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1
# vfio-pci's fixed region and interrupt indexes (the enums after VFIO_DEVICE_RESET)
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9
VFIO_PCI_INTX_IRQ_INDEX = 0
VFIO_PCI_MSI_IRQ_INDEX = 1
VFIO_PCI_MSIX_IRQ_INDEX = 2
VFIO_PCI_ERR_IRQ_INDEX = 3
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5

#: Drivers a device may be bound to and still leave its group viable (drivers/vfio/group.c:
#: vfio_dev_driver_allowed and "bound to a vfio driver"); PCI bridges are allowed whatever binds them.
_VIABLE_DRIVERS = ("vfio-pci", "pci-stub")
_PCI_HEADER_TYPE = 0x0E


# --- device names --------------------------------------------------------------------------------
_BDF_RE = re.compile(r"^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def parse_bdf(text: str) -> str:
    """A host PCI address as lspci prints it ("0000:03:00.0", or "03:00.0" for domain 0) in the
    canonical form sysfs and VFIO_GROUP_GET_DEVICE_FD use."""
    m = _BDF_RE.match(text.strip())
    if m is None or int(m.group(3), 16) > 0x1F:
        raise UsageError(
            f"PCI address {text!r} is not valid: use domain:bus:device.function as lspci -D "
            "prints it, such as 0000:03:00.0"
        )
    dom = int(m.group(1) or "0", 16)
    return f"{dom:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}.{m.group(4)}"


# --- host support ------------------------------------------------------------------------------
def _driver(dev_dir: Path) -> str | None:
    link = dev_dir / "driver"
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def _is_bridge(dev_dir: Path) -> bool:
    try:
        cfg = (dev_dir / "config").read_bytes()
    except OSError:
        return False
    return len(cfg) > _PCI_HEADER_TYPE and cfg[_PCI_HEADER_TYPE] & 0x7F != 0


def _viable_driver(drv: str | None) -> bool:
    return drv is None or drv in _VIABLE_DRIVERS or drv.startswith("vfio")


def iommu_group_of(bdf: str, sys_root: str | Path = "/sys") -> int | None:
    """The IOMMU group number of host device ``bdf`` (None when it has none)."""
    try:
        return int(Path(os.readlink(Path(sys_root) / "bus/pci/devices" / bdf / "iommu_group")).name)
    except (OSError, ValueError):
        return None


def host_support(
    bdf: str | None = None, *, sys_root: str | Path = "/sys", dev_root: str | Path = "/dev"
) -> tuple[bool, str]:
    """Whether this host can pass ``bdf`` (or, with None, any device) through, and why not.

    Reads only sysfs and devfs, so it needs neither privileges nor the compiled module; the
    roots are parameters so tests can build fake trees. The reason names the first thing
    missing, with the remedy, in the order a user has to fix them."""
    sysr, devr = Path(sys_root), Path(dev_root)
    groups_dir = sysr / "kernel/iommu_groups"
    try:
        groups = sorted(p.name for p in groups_dir.iterdir())
    except OSError:
        groups = []
    if not groups:
        return False, (
            f"no IOMMU groups ({groups_dir} is empty: the host's IOMMU is off or absent; "
            "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on)"
        )
    container = devr / "vfio/vfio"
    if not container.exists():
        return False, f"{container} missing (load vfio-pci: modprobe vfio-pci)"
    if not os.access(container, os.R_OK | os.W_OK):
        return False, f"no read/write access to {container} (run as root or grant access to it)"
    if bdf is None:
        return True, (
            f"{len(groups)} IOMMU groups and {container}; bind a device to vfio-pci and pass "
            "--passthrough BDF"
        )
    bdf = parse_bdf(bdf)
    dev_dir = sysr / "bus/pci/devices" / bdf
    if not dev_dir.exists():
        return False, f"no PCI device {bdf} on this host"
    drv = _driver(dev_dir)
    if drv != "vfio-pci":
        bound = f"bound to {drv}" if drv else "bound to no driver"
        return False, (
            f"{bdf} is {bound}, not vfio-pci (echo vfio-pci > {dev_dir}/driver_override, unbind it, "
            f"then echo {bdf} > {sysr}/bus/pci/drivers_probe)"
        )
    group = iommu_group_of(bdf, sysr)
    if group is None:
        return False, f"{bdf} has no IOMMU group (the IOMMU does not cover it)"
    members = groups_dir / str(group) / "devices"
    try:
        others = sorted(p.name for p in members.iterdir())
    except OSError:
        others = [bdf]
    for other in others:
        if other == bdf:
            continue
        odir = sysr / "bus/pci/devices" / other
        odrv = _driver(odir)
        if not _viable_driver(odrv) and not _is_bridge(odir):
            return False, (
                f"IOMMU group {group} is not viable: {other} is bound to {odrv} (bind every device "
                "of the group to vfio-pci, or unbind it)"
            )
    node = devr / "vfio" / str(group)
    if not node.exists():
        return False, f"{node} missing although {bdf} is bound to vfio-pci"
    if not os.access(node, os.R_OK | os.W_OK):
        return False, f"no read/write access to {node} (run as root or grant access to it)"
    return True, f"{bdf} is bound to vfio-pci in viable IOMMU group {group} ({node})"


# --- what the backend reports ----------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    flags: int
    num_regions: int
    num_irqs: int

    @property
    def can_reset(self) -> bool:
        return bool(self.flags & VFIO_DEVICE_FLAGS_RESET)

    @property
    def is_pci(self) -> bool:
        return bool(self.flags & VFIO_DEVICE_FLAGS_PCI)


@dataclass(frozen=True)
class RegionInfo:
    """One device region. ``sparse`` lists the (offset, size) areas that may be mmapped when the
    region carries the sparse-mmap capability (None: the whole region, if MMAP is set)."""

    index: int
    flags: int
    size: int
    offset: int
    sparse: tuple[tuple[int, int], ...] | None = None
    msix_mappable: bool = False

    @property
    def readable(self) -> bool:
        return bool(self.flags & VFIO_REGION_INFO_FLAG_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & VFIO_REGION_INFO_FLAG_WRITE)

    @property
    def mappable(self) -> bool:
        return bool(self.flags & VFIO_REGION_INFO_FLAG_MMAP)

    def mmap_areas(self) -> tuple[tuple[int, int], ...]:
        """Where mmap is allowed: the sparse areas, the whole region, or nothing."""
        if not self.mappable or self.size == 0:
            return ()
        if self.sparse is not None:
            return tuple(a for a in self.sparse if a[1] > 0)
        return ((0, self.size),)


@dataclass(frozen=True)
class IrqInfo:
    index: int
    flags: int
    count: int

    @property
    def maskable(self) -> bool:
        return bool(self.flags & VFIO_IRQ_INFO_MASKABLE)

    @property
    def noresize(self) -> bool:
        return bool(self.flags & VFIO_IRQ_INFO_NORESIZE)


@dataclass(frozen=True)
class MappedArea:
    """An mmap of part of a device region: ``addr`` is the host address KVM can use."""

    addr: int
    size: int
    offset: int  # device fd offset it maps


class VfioBackend(Protocol):
    """Every operation on VFIO file descriptors. ``RealVfioBackend`` issues the ioctls;
    ``vfio_fake.FakeVfioBackend`` models a device for tests. Failures raise ``VfioError``."""

    def open_container(self) -> int: ...
    def api_version(self, container: int) -> int: ...
    def check_extension(self, container: int, extension: int) -> int: ...
    def set_iommu(self, container: int, iommu_type: int) -> None: ...
    def iova_ranges(self, container: int) -> list[tuple[int, int]] | None: ...
    def map_dma(self, container: int, iova: int, size: int, vaddr: int, flags: int) -> None: ...
    def unmap_dma(self, container: int, iova: int, size: int) -> None: ...
    def open_group(self, group: int) -> int: ...
    def group_status(self, group_fd: int) -> int: ...
    def set_container(self, group_fd: int, container: int) -> None: ...
    def unset_container(self, group_fd: int) -> None: ...
    def device_fd(self, group_fd: int, bdf: str) -> int: ...
    def device_info(self, device: int) -> DeviceInfo: ...
    def region_info(self, device: int, index: int) -> RegionInfo: ...
    def irq_info(self, device: int, index: int) -> IrqInfo: ...
    def set_irqs(
        self, device: int, index: int, flags: int, start: int, count: int, fds: Sequence[int] = ()
    ) -> None: ...
    def reset(self, device: int) -> None: ...
    def pread(self, device: int, offset: int, size: int) -> bytes: ...
    def pwrite(self, device: int, offset: int, data: bytes) -> None: ...
    def mmap(self, device: int, offset: int, size: int) -> MappedArea: ...
    def munmap(self, area: MappedArea) -> None: ...
    def close(self, fd: int) -> None: ...


# --- the real backend ----------------------------------------------------------------------------
def _load_ffi() -> tuple[Any, Any]:
    try:
        from kvmpy._vfio_ffi import ffi, lib
    except ImportError as e:
        raise VfioUnavailableError(
            "kvmpy was built without its VFIO module (kvmpy._vfio_ffi: <linux/vfio.h> was missing "
            f"at build time; install linux-libc-dev and reinstall kvmpy): {e}"
        ) from None
    return ffi, lib


class RealVfioBackend:
    """VFIO through ioctls on real file descriptors (structs and numbers from <linux/vfio.h>)."""

    def __init__(self, dev_root: str | Path = "/dev") -> None:
        self.ffi, self.lib = _load_ffi()
        self.dev_root = Path(dev_root)

    def _ioctl(self, name: str, fd: int, arg: Any) -> int:
        r = self.lib.kvmpy_vfio_ioctl(fd, getattr(self.lib, name), arg)
        if r < 0:
            raise VfioError(name, -r)
        return r

    def _ioctl_int(self, name: str, fd: int, arg: int) -> int:
        r = self.lib.kvmpy_vfio_ioctl_int(fd, getattr(self.lib, name), arg)
        if r < 0:
            raise VfioError(name, -r)
        return r

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise VfioError(f"open {path}", e.errno or _errno.EIO) from None

    # container
    def open_container(self) -> int:
        return self._open(self.dev_root / "vfio/vfio")

    def api_version(self, container: int) -> int:
        return self._ioctl_int("VFIO_GET_API_VERSION", container, 0)

    def check_extension(self, container: int, extension: int) -> int:
        return self._ioctl_int("VFIO_CHECK_EXTENSION", container, extension)

    def set_iommu(self, container: int, iommu_type: int) -> None:
        self._ioctl_int("VFIO_SET_IOMMU", container, iommu_type)

    def iova_ranges(self, container: int) -> list[tuple[int, int]] | None:
        ffi = self.ffi
        argsz = ffi.sizeof("struct vfio_iommu_type1_info")
        info = ffi.new("struct vfio_iommu_type1_info *", {"argsz": argsz})
        self._ioctl("VFIO_IOMMU_GET_INFO", container, info)
        if not info.flags & self.lib.VFIO_IOMMU_INFO_CAPS or info.argsz <= ffi.sizeof(info[0]):
            return None
        buf = ffi.new("char[]", info.argsz)
        head = ffi.cast("struct vfio_iommu_type1_info *", buf)
        head.argsz = info.argsz
        self._ioctl("VFIO_IOMMU_GET_INFO", container, head)
        for cap_id, off in self._caps(buf, head.cap_offset, info.argsz):
            if cap_id == self.lib.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                cap = ffi.cast("struct vfio_iommu_type1_info_cap_iova_range *", buf + off)
                return [(cap.iova_ranges[i].start, cap.iova_ranges[i].end) for i in range(cap.nr_iovas)]
        return None

    def map_dma(self, container: int, iova: int, size: int, vaddr: int, flags: int) -> None:
        m = self.ffi.new(
            "struct vfio_iommu_type1_dma_map *",
            {"argsz": self.ffi.sizeof("struct vfio_iommu_type1_dma_map"), "flags": flags,
             "vaddr": vaddr, "iova": iova, "size": size},
        )
        self._ioctl("VFIO_IOMMU_MAP_DMA", container, m)

    def unmap_dma(self, container: int, iova: int, size: int) -> None:
        u = self.ffi.new(
            "struct vfio_iommu_type1_dma_unmap *",
            {"argsz": self.ffi.sizeof("struct vfio_iommu_type1_dma_unmap"), "iova": iova, "size": size},
        )
        self._ioctl("VFIO_IOMMU_UNMAP_DMA", container, u)

    # group
    def open_group(self, group: int) -> int:
        return self._open(self.dev_root / "vfio" / str(group))

    def group_status(self, group_fd: int) -> int:
        argsz = self.ffi.sizeof("struct vfio_group_status")
        st = self.ffi.new("struct vfio_group_status *", {"argsz": argsz})
        self._ioctl("VFIO_GROUP_GET_STATUS", group_fd, st)
        return st.flags

    def set_container(self, group_fd: int, container: int) -> None:
        self._ioctl("VFIO_GROUP_SET_CONTAINER", group_fd, self.ffi.new("int32_t *", container))

    def unset_container(self, group_fd: int) -> None:
        self._ioctl_int("VFIO_GROUP_UNSET_CONTAINER", group_fd, 0)

    def device_fd(self, group_fd: int, bdf: str) -> int:
        return self._ioctl("VFIO_GROUP_GET_DEVICE_FD", group_fd, self.ffi.new("char[]", bdf.encode()))

    # device
    def device_info(self, device: int) -> DeviceInfo:
        argsz = self.ffi.sizeof("struct vfio_device_info")
        info = self.ffi.new("struct vfio_device_info *", {"argsz": argsz})
        self._ioctl("VFIO_DEVICE_GET_INFO", device, info)
        return DeviceInfo(info.flags, info.num_regions, info.num_irqs)

    def _caps(self, buf: Any, first: int, limit: int) -> Iterable[tuple[int, int]]:
        """(id, offset) of each capability in an info buffer's chain (offsets from its start)."""
        off, seen = first, set()
        hsize = self.ffi.sizeof("struct vfio_info_cap_header")
        while off and off + hsize <= limit and off not in seen:
            seen.add(off)
            hdr = self.ffi.cast("struct vfio_info_cap_header *", buf + off)
            yield hdr.id, off
            off = hdr.next

    def region_info(self, device: int, index: int) -> RegionInfo:
        ffi, lib = self.ffi, self.lib
        base = ffi.sizeof("struct vfio_region_info")
        info = ffi.new("struct vfio_region_info *", {"argsz": base, "index": index})
        self._ioctl("VFIO_DEVICE_GET_REGION_INFO", device, info)
        sparse: tuple[tuple[int, int], ...] | None = None
        msix_mappable = False
        if info.flags & lib.VFIO_REGION_INFO_FLAG_CAPS and info.argsz > base:
            size = info.argsz  # the kernel said how much room the capability chain needs
            buf = ffi.new("char[]", size)
            full = ffi.cast("struct vfio_region_info *", buf)
            full.argsz, full.index = size, index
            self._ioctl("VFIO_DEVICE_GET_REGION_INFO", device, full)
            info = full
            for cap_id, off in self._caps(buf, full.cap_offset, size):
                if cap_id == lib.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                    cap = ffi.cast("struct vfio_region_info_cap_sparse_mmap *", buf + off)
                    sparse = tuple((cap.areas[i].offset, cap.areas[i].size) for i in range(cap.nr_areas))
                elif cap_id == lib.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                    msix_mappable = True
        return RegionInfo(index, info.flags, info.size, info.offset, sparse, msix_mappable)

    def irq_info(self, device: int, index: int) -> IrqInfo:
        info = self.ffi.new(
            "struct vfio_irq_info *", {"argsz": self.ffi.sizeof("struct vfio_irq_info"), "index": index}
        )
        self._ioctl("VFIO_DEVICE_GET_IRQ_INFO", device, info)
        return IrqInfo(index, info.flags, info.count)

    def set_irqs(
        self, device: int, index: int, flags: int, start: int, count: int, fds: Sequence[int] = ()
    ) -> None:
        ffi = self.ffi
        data_off = ffi.offsetof("struct vfio_irq_set", "data")
        payload = 4 * len(fds) if flags & self.lib.VFIO_IRQ_SET_DATA_EVENTFD else 0
        size = data_off + payload
        buf = ffi.new("char[]", size)
        s = ffi.cast("struct vfio_irq_set *", buf)
        s.argsz, s.flags, s.index, s.start, s.count = size, flags, index, start, count
        if payload:
            arr = ffi.cast("int32_t *", buf + data_off)
            for i, fd in enumerate(fds):
                arr[i] = fd
        self._ioctl("VFIO_DEVICE_SET_IRQS", device, s)

    def reset(self, device: int) -> None:
        self._ioctl_int("VFIO_DEVICE_RESET", device, 0)

    def pread(self, device: int, offset: int, size: int) -> bytes:
        try:
            data = os.pread(device, size, offset)
        except OSError as e:
            raise VfioError("pread", e.errno or _errno.EIO, f"{size} bytes at {offset:#x}") from None
        if len(data) != size:
            raise VfioError("pread", _errno.EIO, f"short read at {offset:#x}")
        return data

    def pwrite(self, device: int, offset: int, data: bytes) -> None:
        try:
            n = os.pwrite(device, data, offset)
        except OSError as e:
            raise VfioError("pwrite", e.errno or _errno.EIO, f"{len(data)} bytes at {offset:#x}") from None
        if n != len(data):
            raise VfioError("pwrite", _errno.EIO, f"short write at {offset:#x}")

    def mmap(self, device: int, offset: int, size: int) -> MappedArea:
        import mmap as _mmap

        err = self.ffi.new("int *")
        addr = self.lib.kvmpy_vfio_mmap(device, size, offset, _mmap.PROT_READ | _mmap.PROT_WRITE, err)
        if err[0]:
            raise VfioError("mmap", err[0], f"{size:#x} bytes at device offset {offset:#x}")
        return MappedArea(int(addr), size, offset)

    def munmap(self, area: MappedArea) -> None:
        r = self.lib.kvmpy_vfio_munmap(area.addr, area.size)
        if r < 0:
            raise VfioError("munmap", -r)

    def close(self, fd: int) -> None:
        os.close(fd)


# --- owners of the descriptors -------------------------------------------------------------------
class _RamLike(Protocol):
    """What ``VfioContainer.map_guest_ram`` needs of ``kvmpy.memory.GuestMemory``."""

    host_base: int

    @property
    def regions(self) -> Sequence[Any]: ...  # RamRegion: gpa, size, offset


@dataclass
class VfioContainer:
    """A container with one IOMMU group attached and the type1 IOMMU set; owns the DMA map.

    ``open`` checks, in order, what ``host_support`` cannot see without opening the files:
    API version, type1 support and group viability; each failure is a one-sentence error."""

    backend: VfioBackend
    group: int
    fd: int = -1
    group_fd: int = -1
    iommu_type: int = 0
    dma: list[tuple[int, int]] = field(default_factory=list)  # (iova, size) mapped
    _attached: bool = False

    @classmethod
    def open(cls, backend: VfioBackend, group: int) -> VfioContainer:
        c = cls(backend, group)
        try:
            c._open()
        except BaseException:
            c.close()
            raise
        return c

    def _open(self) -> None:
        b = self.backend
        self.fd = b.open_container()
        version = b.api_version(self.fd)
        if version != VFIO_API_VERSION:
            raise VfioUnavailableError(
                f"VFIO API version {version} is not the {VFIO_API_VERSION} kvmpy speaks"
            )
        for t in (VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU):
            if b.check_extension(self.fd, t) > 0:
                self.iommu_type = t
                break
        else:
            raise VfioUnavailableError("the VFIO container offers no type1 IOMMU (is this host's IOMMU x86?)")
        self.group_fd = b.open_group(self.group)
        if not b.group_status(self.group_fd) & VFIO_GROUP_FLAGS_VIABLE:
            raise VfioUnavailableError(
                f"IOMMU group {self.group} is not viable: bind every device in "
                f"/sys/kernel/iommu_groups/{self.group}/devices to vfio-pci"
            )
        b.set_container(self.group_fd, self.fd)
        self._attached = True
        b.set_iommu(self.fd, self.iommu_type)

    def map_dma(self, iova: int, size: int, vaddr: int) -> None:
        """Let the device read and write host memory ``vaddr`` at bus address ``iova``."""
        try:
            self.backend.map_dma(self.fd, iova, size, vaddr, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)
        except VfioError as e:
            if e.errno == _errno.ENOMEM:
                raise VfioError(
                    "VFIO_IOMMU_MAP_DMA", e.errno,
                    f"pinning {size >> 20} MiB at {iova:#x} exceeds RLIMIT_MEMLOCK (ulimit -l): raise it "
                    "to at least the guest's memory size",
                ) from None
            raise
        self.dma.append((iova, size))

    def map_guest_ram(self, memory: _RamLike) -> None:
        """DMA-map every RAM region at iova = guest-physical address: without a vIOMMU the
        device's bus addresses are the guest's physical addresses."""
        ranges = self.backend.iova_ranges(self.fd)
        for r in memory.regions:
            if ranges is not None and not any(lo <= r.gpa and r.gpa + r.size - 1 <= hi for lo, hi in ranges):
                raise VfioUnavailableError(
                    f"guest RAM {r.gpa:#x}-{r.gpa + r.size - 1:#x} is outside the IOVA ranges this "
                    f"host's IOMMU allows ({', '.join(f'{lo:#x}-{hi:#x}' for lo, hi in ranges)})"
                )
            self.map_dma(r.gpa, r.size, memory.host_base + r.offset)

    def unmap_all(self) -> None:
        while self.dma:
            iova, size = self.dma.pop()
            self.backend.unmap_dma(self.fd, iova, size)

    def device(self, bdf: str) -> VfioDevice:
        return VfioDevice.open(self.backend, self.backend.device_fd(self.group_fd, bdf), bdf)

    def close(self) -> None:
        """DMA unmapped, group detached, fds closed; safe to call twice and after a failed open."""
        b = self.backend
        try:
            if self.fd >= 0:
                self.unmap_all()
            if self._attached:
                b.unset_container(self.group_fd)
        finally:
            self._attached = False
            for name in ("group_fd", "fd"):
                fd = getattr(self, name)
                if fd >= 0:
                    b.close(fd)
                    setattr(self, name, -1)


@dataclass
class VfioDevice:
    """One device fd with its region and interrupt tables, read once at open."""

    backend: VfioBackend
    fd: int
    bdf: str
    info: DeviceInfo
    regions: dict[int, RegionInfo]
    irqs: dict[int, IrqInfo]

    @classmethod
    def open(cls, backend: VfioBackend, fd: int, bdf: str) -> VfioDevice:
        try:
            info = backend.device_info(fd)
            if not info.is_pci:
                raise VfioUnavailableError(f"{bdf} is not a vfio-pci device")
            n_regions = min(info.num_regions, VFIO_PCI_NUM_REGIONS)
            regions = {i: backend.region_info(fd, i) for i in range(n_regions)}
            irqs = {i: backend.irq_info(fd, i) for i in range(min(info.num_irqs, VFIO_PCI_NUM_IRQS))}
        except BaseException:
            backend.close(fd)
            raise
        return cls(backend, fd, bdf, info, regions, irqs)

    def region(self, index: int) -> RegionInfo | None:
        r = self.regions.get(index)
        return r if r is not None and r.size > 0 else None

    def irq_count(self, index: int) -> int:
        i = self.irqs.get(index)
        return i.count if i is not None else 0

    def read(self, index: int, offset: int, size: int) -> bytes:
        return self.backend.pread(self.fd, self.regions[index].offset + offset, size)

    def write(self, index: int, offset: int, data: bytes) -> None:
        self.backend.pwrite(self.fd, self.regions[index].offset + offset, data)

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size), "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.write(VFIO_PCI_CONFIG_REGION_INDEX, offset, value.to_bytes(size, "little"))

    def mmap(self, index: int, offset: int, size: int) -> MappedArea:
        return self.backend.mmap(self.fd, self.regions[index].offset + offset, size)

    # interrupts (SET_IRQS, vfio.h: "DATA_EVENTFD binds the specified ACTION to the eventfd")
    def irq_trigger(self, index: int, fds: Sequence[int], start: int = 0) -> None:
        self.backend.set_irqs(
            self.fd, index, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, start, len(fds), fds
        )

    def irq_disable(self, index: int) -> None:
        """The whole index off: DATA_NONE|ACTION_TRIGGER with count 0."""
        self.backend.set_irqs(self.fd, index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0)

    def irq_unmask_fd(self, index: int, fd: int) -> None:
        flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK
        self.backend.set_irqs(self.fd, index, flags, 0, 1, [fd])

    def irq_mask(self, index: int, start: int = 0, count: int = 1) -> None:
        self.backend.set_irqs(self.fd, index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, start, count)

    def irq_unmask(self, index: int, start: int = 0, count: int = 1) -> None:
        flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK
        self.backend.set_irqs(self.fd, index, flags, start, count)

    def reset(self) -> bool:
        """VFIO_DEVICE_RESET when the device offers it (FLR, PM or bus reset); False otherwise."""
        if not self.info.can_reset:
            return False
        self.backend.reset(self.fd)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            self.backend.close(self.fd)
            self.fd = -1
