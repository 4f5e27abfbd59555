"""Pieces both machine profiles place the same way: the PCI host and the IDE controller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..devices.acpi_pm import ResetControl
from ..devices.blockdev import open_cdrom, open_disk
from ..devices.ide import (
    CMD_BLOCK_LEN,
    CMD_BLOCK_SIZES,
    CTL_BLOCK_LEN,
    CTL_BLOCK_SIZES,
    AtaDisk,
    AtapiCdrom,
    Drive,
    PiixIde,
)
from ..devices.pci import I440FX_DEVFN, PIIX3_IDE_DEVFN, PIIX3_ISA_DEVFN, I440fx, PciBus, Piix3Isa
from ..devices.pci.piix_ide import Piix3Ide
from ..options import place_drives

if TYPE_CHECKING:
    from ..machine import Machine


def iommu_tables(config) -> list:
    """The extra ACPI tables the IOMMU needs (its DMAR), for the profiles' table builders."""
    if config.iommu is None:
        return []
    from ..iommu import Dmar

    # the IOAPIC's id is the CPU count (kvmpy's MADT numbers the CPUs from 0)
    return [Dmar(config.iommu.aw_bits, ioapic_id=config.cpus, intr_remap=config.iommu.intremap)]


def place_iommu(m: Machine, pci: PciBus) -> Any:
    """With ``--iommu vtd``: the VT-d register block at its MMIO address, and every PCI
    function's DMA through the IOMMU's translated view of that requester."""
    spec = m.config.iommu
    if spec is None:
        return None
    from ..iommu import VTD_ACCESS_SIZES, VTD_MMIO_SIZE, IntelIommu

    iommu = IntelIommu(m.memory, m.msi_sender, aw_bits=spec.aw_bits, caching_mode=spec.caching_mode,
                       queued_invalidation=spec.queued_invalidation,
                       intremap=spec.intremap)
    m.mmio.register(layout.VTD_BASE, VTD_MMIO_SIZE, iommu, "vt-d", sizes=VTD_ACCESS_SIZES)
    pci.set_dma_provider(iommu.dma_space)
    iommu.on_event = lambda name, fields: _trace_iommu(m, name, fields)
    if spec.intremap:
        route_msis_through(iommu, pci, m)
    return iommu


def route_msis_through(iommu: Any, pci: PciBus, m: Machine) -> None:
    """Interrupt remapping: every PCI function's MSIs, and the IOAPIC's messages, pass the
    IOMMU's remapping as their requester (bus:dev.fn; the IOAPIC its DMAR-scope source-id)."""
    from ..iommu import IOAPIC_SOURCE_ID

    for dev, fn, function in pci.functions():
        if getattr(function, "msi_sender", None) is not None:
            function.msi_sender = iommu.msi_sender(dev << 3 | fn)
    chip = m.irqchip
    if chip is not None:
        chip.set_remapping(iommu.msi_sender(IOAPIC_SOURCE_ID),
                           lambda a, d: iommu.translate_msi(IOAPIC_SOURCE_ID, a, d))
        iommu.on_irte_change = chip.refresh_routes


def _trace_iommu(m: Machine, name: str, fields: dict) -> None:
    """Faults and invalidations reach the tracer as events of their own (nothing when nobody
    listens). They happen on the vCPU thread whose exit made the device DMA."""
    if not m.tracer.active:
        return
    import threading
    import time

    from ..events import IommuEvent

    thread = threading.current_thread().name
    vcpu = int(thread[len("kvmpy-vcpu"):]) if thread.startswith("kvmpy-vcpu") else -1
    m.tracer.emit(IommuEvent(vcpu, time.perf_counter(), name, dict(fields)))


def pci_host(m: Machine, reset: ResetControl,
             pam_changed: Callable[[int, int, bool, bool], None]) -> tuple[PciBus, I440fx, Piix3Isa]:
    """The PCI bus behind 0xCF8/0xCFC (0xCF9 to ``reset``), the i440FX host bridge and the PIIX3
    ISA bridge that routes PCI interrupts onto ISA IRQs. Device DMA goes to guest RAM (or, once
    ``place_iommu`` ran, through the IOMMU)."""
    pci = PciBus(m.pio, m.mmio, reset_control=reset, dma_provider=lambda rid: m.memory)
    pci.register_ports()
    host = I440fx(pam_changed)
    pci.place(*I440FX_DEVFN, host)
    isa = Piix3Isa({irq: m.irq_line(irq) for irq in range(16)})
    pci.place(*PIIX3_ISA_DEVFN, isa)
    pci.set_intx_router(isa)
    return pci, host, isa


def place_ide(m: Machine, pci: PciBus) -> PiixIde:
    """The PIIX3 IDE function with the configured drives at QEMU's index positions, its channels
    on the legacy ports and IRQs 14 and 15."""
    drives: dict[int, Drive] = {}
    for index, spec in place_drives(m.config.drives).items():
        if spec.media == "cdrom":
            drives[index] = AtapiCdrom(open_cdrom(spec.file))
        else:
            drives[index] = AtaDisk(open_disk(spec.file, readonly=spec.readonly))
    fn = Piix3Ide([m.irq_line(layout.IRQ_IDE0), m.irq_line(layout.IRQ_IDE1)], drives)
    pci.place(*PIIX3_IDE_DEVFN, fn)
    ide = fn.ide
    for ch, (cmd, ctl) in enumerate(((layout.IDE0_PORT, layout.IDE0_CTL_PORT),
                                     (layout.IDE1_PORT, layout.IDE1_CTL_PORT))):
        m.pio.register(cmd, CMD_BLOCK_LEN, ide.channels[ch], f"ide{ch}", sizes=CMD_BLOCK_SIZES)
        m.pio.register(ctl, CTL_BLOCK_LEN, ide.channels[ch].control, f"ide{ch}-ctl",
                       sizes=CTL_BLOCK_SIZES)
    return ide


EDU_DEVFN = (4, 0)


def place_extra_devices(m: Machine, pci: PciBus) -> dict[str, Any]:
    """The PCI devices asked for with ``--device`` (QEMU's edu DMA test device), with MSI
    delivered through the in-kernel irqchip."""
    placed: dict[str, Any] = {}
    for name in m.config.devices:
        if name == "edu":
            from ..devices.edu import Edu

            edu = Edu()
            edu.msi_sender = m.msi_sender
            pci.place(*EDU_DEVFN, edu)
            placed["edu"] = edu
    return placed


#: PCI slots for devices assigned with --passthrough
PASSTHROUGH_SLOTS = (12, 13, 14, 15)


@dataclass(frozen=True)
class VfioAccess:
    """How ``place_passthrough`` reaches VFIO. The default is the real thing: ioctls on
    /dev/vfio, devices found in /sys, and each IOMMU group registered with KVM's KVM-VFIO device.
    A test hands ``Machine(config, vfio=...)`` another: ``vfio_fake.FakeVfioBackend`` over a
    fake tree from ``vfio_fake.make_host_tree``, with ``kvm_vfio_device=False`` because the
    KVM-VFIO device tells KVM about a real VFIO group (KVM_DEV_VFIO_GROUP_ADD takes its fd) and
    with the fake there is none. Everything else (memslots, irqfds, MSI routes) stays real KVM."""

    backend: Any = None  # a vfio.VfioBackend; None: RealVfioBackend(dev_root)
    sys_root: str | Path = "/sys"
    dev_root: str | Path = "/dev"
    kvm_vfio_device: bool = True


def place_passthrough(m: Machine, pci: PciBus, isa: Piix3Isa | None) -> dict[str, Any]:
    """Host PCI functions assigned through VFIO (``--passthrough``), each at its own slot; the
    INTx GSI follows the PIIX3's routing of the slot's PIRQ, as the guest programs it."""
    if not m.config.passthrough:
        return {}
    from ..devices.pci.piix import PIRQ_COUNT, PIRQRC
    from ..errors import UsageError
    from ..iommu.vfio_pci import Passthrough
    from ..passthrough import KvmPassthroughHost

    if len(m.config.passthrough) > len(PASSTHROUGH_SLOTS):
        raise UsageError(f"at most {len(PASSTHROUGH_SLOTS)} --passthrough devices fit on the PCI bus")
    access: VfioAccess = getattr(m, "vfio", None) or VfioAccess()
    host = KvmPassthroughHost(m, kvm_vfio_device=access.kvm_vfio_device)
    pt = Passthrough.open(m.config.passthrough, host, m.memory, backend=access.backend,
                          sys_root=access.sys_root, dev_root=access.dev_root)
    m.closers.append(host.close)  # closers run in reverse: pt.close (KVM-VFIO GROUP_DEL) first
    m.closers.append(pt.close)
    for slot, fn in zip(PASSTHROUGH_SLOTS, pt.functions, strict=False):
        pci.place(slot, 0, fn)

    def route_intx() -> None:
        for fn in pt.functions:
            pirq = pci.pirq_of(fn)
            fn.set_intx_gsi(isa.route(pirq) if isa is not None and pirq is not None else None)

    if isa is not None:
        isa.config.on_write(PIRQRC, PIRQ_COUNT, lambda *_: route_intx())
    route_intx()
    return {"passthrough": pt}


#: PCI slots for the NICs, in --net order (00:03.0 is where QEMU's pc puts the first one)
NIC_SLOTS = (3, 5, 6, 7, 8, 9, 10, 11)


def place_nics(m: Machine, pci: PciBus, rom: bytes | None = None) -> dict[str, Any]:
    """One e1000 per --net, each joined to its backend: frames the guest sends go to the
    backend from the vCPU thread without blocking; frames from the host arrive on the I/O
    thread under the device lock, held back (never dropped) while the guest's ring is full."""
    if not m.config.nets:
        return {}
    from ..devices.e1000 import E1000
    from ..errors import UsageError
    from ..net import open_backends

    if len(m.config.nets) > len(NIC_SLOTS):
        raise UsageError(f"at most {len(NIC_SLOTS)} --net NICs fit on the PCI bus")
    backends = open_backends(m.config.nets)
    m.net_backends.extend(backends)
    placed: dict[str, Any] = {}
    for i, (spec, backend) in enumerate(zip(m.config.nets, backends, strict=True)):
        nic = E1000(spec.mac, backend.send, rom=rom, on_rx_space=backend.rx_ready,
                    name=f"e1000-{i}" if i else "e1000")
        nic.msi_sender = m.msi_sender
        pci.place(NIC_SLOTS[i], 0, nic)
        backend.attach(m.io, m.lock, nic.receive)
        placed[nic.name] = nic
    return placed


def close_drives(ide: Any) -> None:
    """Flush and close every backend (nothing the guest wrote may be lost at exit)."""
    for ch in getattr(ide, "channels", ()):
        for drive in ch.drives:
            backend = getattr(drive, "backend", None)
            if backend is not None:
                if not backend.readonly:
                    backend.flush()
                backend.close()
