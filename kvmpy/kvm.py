"""The only module that issues ioctls: ``Kvm`` (the system fd), ``Vm`` and ``VcpuFd``.

Everything above this layer calls methods with names (``vm.set_memory_region``, ``vcpu.run``);
a failed ioctl raises ``KvmError`` naming the ioctl and the errno. Structs and request numbers
come from the cffi module compiled against <linux/kvm.h> (see ``_ffi_build.py``).
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from ._kvm_ffi import ffi, lib
from .errors import KvmError, KvmPermissionError, KvmUnavailableError

__all__ = ["Kvm", "Vm", "VcpuFd", "ffi", "lib", "CpuidEntry", "is_pvm_host"]

_ioctl = lib.kvmpy_ioctl
_ioctl_int = lib.kvmpy_ioctl_int
_NULL = ffi.NULL


def _check(name: str, r: int) -> int:
    if r < 0:
        raise KvmError(name, -r)
    return r


def is_pvm_host() -> bool:
    """True when KVM here is the PVM backend: guest ring-0 code then runs through KVM's
    instruction emulator (see DESIGN.md, "This workplace's KVM is PVM")."""
    return Path("/sys/module/kvm_pvm").exists()


def host_vendor() -> str:
    """'VT-x', 'AMD-V', 'PVM' or 'none', from the loaded KVM modules."""
    mods = Path("/sys/module")
    if (mods / "kvm_intel").exists():
        return "VT-x"
    if (mods / "kvm_amd").exists():
        return "AMD-V"
    if (mods / "kvm_pvm").exists():
        return "PVM"
    return "none"


@dataclass
class CpuidEntry:
    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


class Kvm:
    """The ``/dev/kvm`` system file descriptor."""

    def __init__(self, path: str | None = None) -> None:
        # KVMPY_KVM_DEVICE points kvmpy at another device node (tests use it to check errors)
        path = path or os.environ.get("KVMPY_KVM_DEVICE", "/dev/kvm")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailableError(
                f"{path} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) "
                "and enable virtualization in the firmware"
            ) from None
        except PermissionError:
            raise KvmPermissionError(
                f"no permission to open {path}: add your user to the 'kvm' group "
                "(sudo usermod -aG kvm $USER, then log in again) or run as root"
            ) from None
        except OSError as e:
            raise KvmUnavailableError(f"cannot open {path}: {e.strerror}") from None
        version = _check("KVM_GET_API_VERSION", _ioctl_int(self.fd, lib.KVM_GET_API_VERSION, 0))
        if version != lib.KVM_API_VERSION:
            raise KvmUnavailableError(f"{path} speaks KVM API {version}, kvmpy needs {lib.KVM_API_VERSION}")
        self.api_version = version
        self.vcpu_mmap_size = _check(
            "KVM_GET_VCPU_MMAP_SIZE", _ioctl_int(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0)
        )

    def check_extension(self, cap: int) -> int:
        r = _ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, cap)
        return r if r > 0 else 0

    def max_vcpus(self) -> int:
        return self.check_extension(lib.KVM_CAP_MAX_VCPUS) or self.check_extension(lib.KVM_CAP_NR_VCPUS) or 4

    def recommended_vcpus(self) -> int:
        return self.check_extension(lib.KVM_CAP_NR_VCPUS) or 4

    def supported_cpuid(self) -> list[CpuidEntry]:
        n = 128
        while True:
            buf = ffi.new("struct kvm_cpuid2 *", {"nent": n, "entries": n})
            buf.nent = n
            r = _ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, buf)
            if r == -_errno.E2BIG:
                n *= 2
                continue
            _check("KVM_GET_SUPPORTED_CPUID", r)
            return [
                CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in buf.entries[0 : buf.nent]
            ]

    def msr_index_list(self) -> list[int]:
        n = 512
        while True:
            buf = ffi.new("struct kvm_msr_list *", {"nmsrs": n, "indices": n})
            buf.nmsrs = n
            r = _ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, buf)
            if r == -_errno.E2BIG:
                n = buf.nmsrs
                continue
            _check("KVM_GET_MSR_INDEX_LIST", r)
            return list(buf.indices[0 : buf.nmsrs])

    def create_vm(self) -> Vm:
        fd = _ioctl_int(self.fd, lib.KVM_CREATE_VM, 0)
        return Vm(self, _check("KVM_CREATE_VM", fd))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vm:
    """A VM file descriptor: memory slots, the irqchip, and vCPU creation."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd

    def check_extension(self, cap: int) -> int:
        r = _ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, cap)
        return r if r > 0 else 0

    def set_memory_region(self, slot: int, gpa: int, size: int, host_addr: int, flags: int = 0) -> None:
        region = ffi.new(
            "struct kvm_userspace_memory_region *",
            {"slot": slot, "flags": flags, "guest_phys_addr": gpa, "memory_size": size,
             "userspace_addr": host_addr},
        )
        _check("KVM_SET_USER_MEMORY_REGION", _ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region))

    def set_tss_addr(self, addr: int) -> None:
        _check("KVM_SET_TSS_ADDR", _ioctl_int(self.fd, lib.KVM_SET_TSS_ADDR, addr))

    def set_identity_map_addr(self, addr: int) -> None:
        p = ffi.new("uint64_t *", addr)
        _check("KVM_SET_IDENTITY_MAP_ADDR", _ioctl(self.fd, lib.KVM_SET_IDENTITY_MAP_ADDR, p))

    def create_irqchip(self) -> None:
        _check("KVM_CREATE_IRQCHIP", _ioctl_int(self.fd, lib.KVM_CREATE_IRQCHIP, 0))

    def create_split_irqchip(self, ioapic_pins: int) -> None:
        """KVM keeps the LAPICs; the IOAPIC, the PICs and the PIT are the VMM's. Must come before
        the first vCPU. ``ioapic_pins`` GSIs are reserved for the IOAPIC: KVM scans their
        routes to know which level-triggered vectors end with a KVM_EXIT_IOAPIC_EOI."""
        self.enable_cap(lib.KVM_CAP_SPLIT_IRQCHIP, ioapic_pins)

    def set_gsi_routing(self, routes: list[tuple]) -> None:
        """Replace KVM's whole GSI routing table. Each route is ``(gsi, "irqchip", chip, pin)``
        or ``(gsi, "msi", address, data)``."""
        table = ffi.new("struct kvm_irq_routing *", {"nr": len(routes), "flags": 0,
                                                      "entries": len(routes)})
        for i, route in enumerate(routes):
            e = table.entries[i]
            e.gsi = route[0]
            if route[1] == "msi":
                e.type = lib.KVM_IRQ_ROUTING_MSI
                e.u.msi.address_lo = route[2] & 0xFFFF_FFFF
                e.u.msi.address_hi = route[2] >> 32
                e.u.msi.data = route[3]
            else:
                e.type = lib.KVM_IRQ_ROUTING_IRQCHIP
                e.u.irqchip.irqchip = route[2]
                e.u.irqchip.pin = route[3]
        _check("KVM_SET_GSI_ROUTING", _ioctl(self.fd, lib.KVM_SET_GSI_ROUTING, table))

    def create_device(self, dev_type: int) -> int:
        """KVM_CREATE_DEVICE: a KVM device's fd (KVM_DEV_TYPE_VFIO for passthrough)."""
        d = ffi.new("struct kvm_create_device *", {"type": dev_type})
        _check("KVM_CREATE_DEVICE", _ioctl(self.fd, lib.KVM_CREATE_DEVICE, d))
        return d.fd

    @staticmethod
    def set_device_attr_fd(dev_fd: int, group: int, attr: int, fd: int) -> None:
        """KVM_SET_DEVICE_ATTR whose data is one int32 fd (a VFIO group for KVM_DEV_TYPE_VFIO)."""
        val = ffi.new("int32_t *", fd)
        a = ffi.new("struct kvm_device_attr *", {"group": group, "attr": attr,
                                                 "addr": int(ffi.cast("uintptr_t", val))})
        _check("KVM_SET_DEVICE_ATTR", _ioctl(dev_fd, lib.KVM_SET_DEVICE_ATTR, a))

    def create_pit2(self) -> None:
        cfg = ffi.new("struct kvm_pit_config *", {"flags": lib.KVM_PIT_SPEAKER_DUMMY})
        _check("KVM_CREATE_PIT2", _ioctl(self.fd, lib.KVM_CREATE_PIT2, cfg))

    def enable_cap(self, cap: int, *args: int) -> None:
        c = ffi.new("struct kvm_enable_cap *", {"cap": cap, "args": list(args) + [0] * (4 - len(args))})
        _check("KVM_ENABLE_CAP", _ioctl(self.fd, lib.KVM_ENABLE_CAP, c))

    def irq_line(self, gsi: int, level: bool) -> None:
        lvl = ffi.new("struct kvm_irq_level *", {"irq": gsi, "level": 1 if level else 0})
        _check("KVM_IRQ_LINE", _ioctl(self.fd, lib.KVM_IRQ_LINE, lvl))

    def signal_msi(self, address: int, data: int) -> int:
        m = ffi.new(
            "struct kvm_msi *",
            {"address_lo": address & 0xFFFF_FFFF, "address_hi": address >> 32, "data": data},
        )
        return _check("KVM_SIGNAL_MSI", _ioctl(self.fd, lib.KVM_SIGNAL_MSI, m))

    def ioeventfd(self, addr: int, length: int, fd: int, pio: bool, datamatch: int | None = None,
                  deassign: bool = False) -> None:
        flags = lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        if deassign:
            flags |= 1 << 2  # kvm_ioeventfd_flag_nr_deassign
        e = ffi.new(
            "struct kvm_ioeventfd *",
            {"datamatch": datamatch or 0, "addr": addr, "len": length, "fd": fd, "flags": flags},
        )
        _check("KVM_IOEVENTFD", _ioctl(self.fd, lib.KVM_IOEVENTFD, e))

    def irqfd(self, fd: int, gsi: int, deassign: bool = False, resample_fd: int | None = None) -> None:
        """Signalling ``fd`` raises ``gsi`` without an exit. With ``resample_fd`` the GSI is a
        level interrupt: KVM lowers it at the guest's EOI and signals ``resample_fd`` so the
        source (a VFIO device's INTx) can re-assert it if still pending."""
        flags = lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0
        if resample_fd is not None and not deassign:
            flags |= lib.KVM_IRQFD_FLAG_RESAMPLE
        e = ffi.new(
            "struct kvm_irqfd *",
            {"fd": fd, "gsi": gsi, "flags": flags,
             "resamplefd": resample_fd if resample_fd is not None else 0},
        )
        _check("KVM_IRQFD", _ioctl(self.fd, lib.KVM_IRQFD, e))

    def register_coalesced_mmio(self, addr: int, size: int) -> None:
        z = ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": addr, "size": size})
        _check("KVM_REGISTER_COALESCED_MMIO", _ioctl(self.fd, lib.KVM_REGISTER_COALESCED_MMIO, z))

    def stats_fd(self) -> int:
        return _check("KVM_GET_STATS_FD", _ioctl_int(self.fd, lib.KVM_GET_STATS_FD, 0))

    def create_vcpu(self, index: int) -> VcpuFd:
        fd = _check("KVM_CREATE_VCPU", _ioctl_int(self.fd, lib.KVM_CREATE_VCPU, index))
        return VcpuFd(self, fd, index)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VcpuFd:
    """A vCPU file descriptor and its shared ``kvm_run`` page."""

    def __init__(self, vm: Vm, fd: int, index: int) -> None:
        self.vm = vm
        self.fd = fd
        self.index = index
        size = vm.kvm.vcpu_mmap_size
        self.run_mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_buffer = ffi.from_buffer(self.run_mmap)
        #: cffi view of the kvm_run structure (fields named as in <linux/kvm.h>)
        self.run_struct = ffi.cast("struct kvm_run *", self.run_buffer)

    def run(self) -> int:
        """KVM_RUN. Returns 0, or -errno for EINTR/EAGAIN (a kick or an INIT/SIPI in progress);
        any other failure raises. The GIL is released while the guest runs."""
        r = _ioctl(self.fd, lib.KVM_RUN, _NULL)
        if r < 0 and r not in (-_errno.EINTR, -_errno.EAGAIN):
            raise KvmError("KVM_RUN", -r)
        return r

    def get_regs(self):
        regs = ffi.new("struct kvm_regs *")
        _check("KVM_GET_REGS", _ioctl(self.fd, lib.KVM_GET_REGS, regs))
        return regs

    def set_regs(self, regs) -> None:
        _check("KVM_SET_REGS", _ioctl(self.fd, lib.KVM_SET_REGS, regs))

    def get_sregs(self):
        sregs = ffi.new("struct kvm_sregs *")
        _check("KVM_GET_SREGS", _ioctl(self.fd, lib.KVM_GET_SREGS, sregs))
        return sregs

    def set_sregs(self, sregs) -> None:
        _check("KVM_SET_SREGS", _ioctl(self.fd, lib.KVM_SET_SREGS, sregs))

    def get_fpu(self):
        fpu = ffi.new("struct kvm_fpu *")
        _check("KVM_GET_FPU", _ioctl(self.fd, lib.KVM_GET_FPU, fpu))
        return fpu

    def set_fpu(self, fpu) -> None:
        _check("KVM_SET_FPU", _ioctl(self.fd, lib.KVM_SET_FPU, fpu))

    def get_xsave(self):
        xs = ffi.new("struct kvm_xsave *")
        _check("KVM_GET_XSAVE", _ioctl(self.fd, lib.KVM_GET_XSAVE, xs))
        return xs

    def set_xsave(self, xs) -> None:
        _check("KVM_SET_XSAVE", _ioctl(self.fd, lib.KVM_SET_XSAVE, xs))

    def set_cpuid(self, entries: list[CpuidEntry]) -> None:
        n = len(entries)
        buf = ffi.new("struct kvm_cpuid2 *", {"nent": n, "entries": n})
        buf.nent = n
        for i, e in enumerate(entries):
            d = buf.entries[i]
            d.function, d.index, d.flags = e.function, e.index, e.flags
            d.eax, d.ebx, d.ecx, d.edx = e.eax, e.ebx, e.ecx, e.edx
        _check("KVM_SET_CPUID2", _ioctl(self.fd, lib.KVM_SET_CPUID2, buf))

    def get_lapic(self) -> bytearray:
        st = ffi.new("struct kvm_lapic_state *")
        _check("KVM_GET_LAPIC", _ioctl(self.fd, lib.KVM_GET_LAPIC, st))
        return bytearray(ffi.buffer(st))

    def set_lapic(self, regs: bytes) -> None:
        st = ffi.new("struct kvm_lapic_state *")
        ffi.buffer(st)[:] = bytes(regs)
        _check("KVM_SET_LAPIC", _ioctl(self.fd, lib.KVM_SET_LAPIC, st))

    def set_msrs(self, msrs: dict[int, int]) -> None:
        n = len(msrs)
        buf = ffi.new("struct kvm_msrs *", {"nmsrs": n, "entries": n})
        buf.nmsrs = n
        for i, (idx, val) in enumerate(msrs.items()):
            buf.entries[i].index = idx
            buf.entries[i].data = val
        r = _check("KVM_SET_MSRS", _ioctl(self.fd, lib.KVM_SET_MSRS, buf))
        if r != n:
            bad = list(msrs)[r]
            raise KvmError("KVM_SET_MSRS", _errno.EINVAL, f"MSR {bad:#x} was refused")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        n = len(indices)
        buf = ffi.new("struct kvm_msrs *", {"nmsrs": n, "entries": n})
        buf.nmsrs = n
        for i, idx in enumerate(indices):
            buf.entries[i].index = idx
        r = _check("KVM_GET_MSRS", _ioctl(self.fd, lib.KVM_GET_MSRS, buf))
        return {buf.entries[i].index: buf.entries[i].data for i in range(r)}

    def get_vcpu_events(self):
        ev = ffi.new("struct kvm_vcpu_events *")
        _check("KVM_GET_VCPU_EVENTS", _ioctl(self.fd, lib.KVM_GET_VCPU_EVENTS, ev))
        return ev

    def set_vcpu_events(self, ev) -> None:
        _check("KVM_SET_VCPU_EVENTS", _ioctl(self.fd, lib.KVM_SET_VCPU_EVENTS, ev))

    def get_mp_state(self) -> int:
        st = ffi.new("struct kvm_mp_state *")
        _check("KVM_GET_MP_STATE", _ioctl(self.fd, lib.KVM_GET_MP_STATE, st))
        return st.mp_state

    def set_mp_state(self, state: int) -> None:
        st = ffi.new("struct kvm_mp_state *", {"mp_state": state})
        _check("KVM_SET_MP_STATE", _ioctl(self.fd, lib.KVM_SET_MP_STATE, st))

    def translate(self, gva: int) -> int | None:
        """Guest-virtual to guest-physical through the vCPU's current page tables (KVM walks
        them), or None when the address is not mapped."""
        t = ffi.new("struct kvm_translation *", {"linear_address": gva})
        _check("KVM_TRANSLATE", _ioctl(self.fd, lib.KVM_TRANSLATE, t))
        return t.physical_address if t.valid else None

    def stats_fd(self) -> int:
        return _check("KVM_GET_STATS_FD", _ioctl_int(self.fd, lib.KVM_GET_STATS_FD, 0))

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: with the split irqchip, the PIC's vector as an ExtINT through LINT0.
        Call only from this vCPU's own thread, when ``ready_for_interrupt_injection`` says KVM
        has room for it."""
        irq = ffi.new("struct kvm_interrupt *", {"irq": vector})
        _check("KVM_INTERRUPT", _ioctl(self.fd, lib.KVM_INTERRUPT, irq))

    def set_immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = 1 if value else 0

    def close(self) -> None:
        if self.fd >= 0:
            self.run_buffer = None
            self.run_struct = None
            try:
                self.run_mmap.close()
            except BufferError:
                pass
            os.close(self.fd)
            self.fd = -1
