"""The KVM side of VFIO device assignment: ``vfio_pci.PassthroughHost`` over a Machine.

Why a module of its own: ``kvmpy.iommu.vfio_pci`` models the assigned function without KVM (it
is unit-tested against a fake VFIO backend); what it needs from KVM — memslots for the BARs,
irqfds and MSI routes for its interrupts, the KVM-VFIO device that tells KVM about the group (so
KVM can keep coherent DMA and posted interrupts right) — is this small adapter.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .kvm import lib

if TYPE_CHECKING:
    from .machine import Machine


class KvmPassthroughHost:
    """Memslots from the machine's allocator, interrupts through its GsiRouter."""

    def __init__(self, m: Machine, *, kvm_vfio_device: bool = True) -> None:
        """``kvm_vfio_device=False``: groups are not registered with KVM's KVM-VFIO device (a
        fake VFIO backend has no real group fd for KVM_DEV_VFIO_GROUP_ADD to take)."""
        self.m = m
        self.kvm_vfio_device = kvm_vfio_device
        self._free: list[int] = []
        self._vfio_dev: int | None = None

    def add_memslot(self, gpa: int, size: int, host_addr: int) -> int:
        slot = self._free.pop() if self._free else self.m.alloc_slots(1)
        self.m.vm.set_memory_region(slot, gpa, size, host_addr)
        return slot

    def remove_memslot(self, slot: int) -> None:
        self.m.vm.set_memory_region(slot, 0, 0, 0)
        self._free.append(slot)

    def irqfd(self, fd: int, gsi: int, resample_fd: int | None = None) -> None:
        self.m.vm.irqfd(fd, gsi, resample_fd=resample_fd)

    def remove_irqfd(self, fd: int, gsi: int) -> None:
        self.m.vm.irqfd(fd, gsi, deassign=True)

    def add_msi_route(self, address: int, data: int) -> int:
        return self.m.gsi_router.add_msi_route(address, data)

    def update_msi_route(self, gsi: int, address: int, data: int) -> None:
        self.m.gsi_router.update_msi_route(gsi, address, data)

    def remove_route(self, gsi: int) -> None:
        self.m.gsi_router.remove_route(gsi)

    def attach_vfio_group(self, group_fd: int) -> None:
        if not self.kvm_vfio_device:
            return
        if self._vfio_dev is None:
            self._vfio_dev = self.m.vm.create_device(lib.KVM_DEV_TYPE_VFIO)
        self.m.vm.set_device_attr_fd(self._vfio_dev, lib.KVM_DEV_VFIO_GROUP,
                                     lib.KVM_DEV_VFIO_GROUP_ADD, group_fd)

    def detach_vfio_group(self, group_fd: int) -> None:
        if self._vfio_dev is not None:
            self.m.vm.set_device_attr_fd(self._vfio_dev, lib.KVM_DEV_VFIO_GROUP,
                                         lib.KVM_DEV_VFIO_GROUP_DEL, group_fd)

    def close(self) -> None:
        if self._vfio_dev is not None:
            os.close(self._vfio_dev)
            self._vfio_dev = None
