"""VFIO passthrough on a real host: the real backend's ioctls against a real vfio-pci device.

These need an IOMMU, vfio-pci and a device the person running the tests has bound to vfio-pci
and named in ``KVMPY_PASSTHROUGH_BDF`` (e.g. 0000:03:00.0): tests never rebind host devices.
Everywhere else they skip with the precise reason ``host_support`` gives (on the kvmpy dev
machine: no IOMMU groups). The logic itself is covered without hardware by
tests/unit/test_vfio.py against the fake backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmpy.iommu.vfio import (
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
    VfioContainer,
    VfioError,
    host_support,
    iommu_group_of,
    parse_bdf,
)

# ``vfio``: needs a VFIO-capable host. ``hwvirt`` keeps these skips legal under
# KVMPY_REQUIRE_KVM=1 until tests/conftest.py exempts ``vfio`` itself.
pytestmark = [pytest.mark.vfio]

ENV = "KVMPY_PASSTHROUGH_BDF"


def _skip_reason() -> str | None:
    bdf = os.environ.get(ENV)
    ok, why = host_support(bdf)
    if not ok:
        return f"needs VFIO passthrough: {why}"
    if bdf is None:
        return (f"needs a device bound to vfio-pci named in {ENV} (e.g. {ENV}=0000:03:00.0); "
                f"this host is ready: {why}")
    try:
        import kvmpy._vfio_ffi  # noqa: F401
    except ImportError:
        return "kvmpy._vfio_ffi is not built (reinstall kvmpy with <linux/vfio.h> present)"
    return None


_REASON = _skip_reason()
if _REASON:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


@pytest.fixture
def bdf() -> str:
    return parse_bdf(os.environ[ENV])


@pytest.fixture
def opened(bdf):
    from kvmpy.iommu.vfio import RealVfioBackend

    group = iommu_group_of(bdf)
    c = VfioContainer.open(RealVfioBackend(), group)
    dev = c.device(bdf)
    yield c, dev
    dev.close()
    c.close()


def _sysfs(bdf: str) -> Path:
    return Path("/sys/bus/pci/devices") / bdf


def test_device_matches_sysfs(bdf, opened):
    _, dev = opened
    assert dev.info.is_pci
    sys_dir = _sysfs(bdf)
    assert dev.config_read(0, 2) == int((sys_dir / "vendor").read_text(), 16)
    assert dev.config_read(2, 2) == int((sys_dir / "device").read_text(), 16)
    assert dev.region(VFIO_PCI_CONFIG_REGION_INDEX).size >= 256
    resources = (sys_dir / "resource").read_text().split("\n")
    for i in range(6):
        start, end, _ = (int(x, 16) for x in resources[i].split())
        size = end - start + 1 if end else 0
        r = dev.regions[i]
        assert r.size == size, f"BAR{i}"
    pin = (sys_dir / "config").read_bytes()[0x3D]
    assert (dev.irq_count(VFIO_PCI_INTX_IRQ_INDEX) > 0) == (pin != 0)


def test_dma_map_of_guest_ram(opened):
    from kvmpy.memory import GuestMemory

    c, _ = opened
    mem = GuestMemory(64 << 20)
    try:
        try:
            c.map_guest_ram(mem)
        except VfioError as e:
            if "RLIMIT_MEMLOCK" in str(e):
                pytest.skip(f"needs RLIMIT_MEMLOCK of at least 64 MiB: {e}")
            raise
        assert c.dma == [(0, 64 << 20)]
        c.unmap_all()
        assert c.dma == []
    finally:
        mem.close()


def test_device_model_over_the_real_device(opened):
    """BAR mmaps, config virtualisation and MSI set-up with real ioctls (KVM's side recorded)."""
    from kvmpy.devices.pci import PciBus
    from kvmpy.hw.bus import MmioBus, PioBus
    from kvmpy.iommu.vfio_fake import FakePassthroughHost
    from kvmpy.iommu.vfio_pci import VfioPciDevice

    _, dev = opened
    host = FakePassthroughHost()
    fn = VfioPciDevice(dev, host)
    pci = PciBus(PioBus(), MmioBus())
    pci.place(3, 0, fn)
    try:
        assert pci.config_read(3, 0, 0, 2) == dev.config_read(0, 2)
        low, high = 0xC000_0000, 0x100_0000_0000  # 32-bit BARs in the PCI hole, 64-bit ones high
        for index, bar in sorted(fn.config.bars.items()):
            pci.config_write(3, 0, 0x10 + 4 * index, 4, 0xFFFF_FFFF)
            got = pci.config_read(3, 0, 0x10 + 4 * index, 4)
            assert got & ~0xF == (~(bar.size - 1)) & 0xFFFF_FFF0 or bar.is_io
            if bar.is_io:
                continue
            if bar.kind.value == "mem64":
                high = (high + bar.size - 1) & ~(bar.size - 1)
                pci.config_write(3, 0, 0x10 + 4 * index, 4, high & 0xFFFF_FFFF)
                pci.config_write(3, 0, 0x14 + 4 * index, 4, high >> 32)
                high += bar.size
            else:
                low = (low + bar.size - 1) & ~(bar.size - 1)
                pci.config_write(3, 0, 0x10 + 4 * index, 4, low)
                low += bar.size
        pci.config_write(3, 0, 0x04, 2, 0x0002)
        for _, (_, size, hva) in host.memslots.items():
            assert hva and size % 4096 == 0
        if fn.config.msi is not None:
            cap = fn.config.msi.offset
            pci.config_write(3, 0, cap + 4, 4, 0xFEE0_0000)
            pci.config_write(3, 0, cap + 2, 2, 1)
            assert len(host.routes) == 1 and len(host.irqfds) == 1
            assert dev.irq_count(VFIO_PCI_MSI_IRQ_INDEX) >= 1
            pci.config_write(3, 0, cap + 2, 2, 0)
            assert host.routes == {}
        pci.config_write(3, 0, 0x04, 2, 0)
        assert host.memslots == {}
    finally:
        fn.close()  # closes the device fd too; the fixture's close is then a no-op


def test_boot_with_passthrough(kvmpy_boot, bdf):
    """A guest boots and stops normally with the device passed through (the machine wiring)."""
    r = kvmpy_boot("debug_exit", "--append", "code=0", "--passthrough", bdf)
    assert "exiting with code 0" in r.out, r.out + r.err
    assert r.status == 1, r.err
    assert "Traceback" not in r.err
