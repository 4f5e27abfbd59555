"""``kvmpy info``: what this host offers kvmpy, as a newcomer's first diagnostic."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from .iommu.vfio import host_support
from .kvm import Kvm, host_vendor, lib

#: (capability, why kvmpy uses it, required?)
CAPABILITIES: list[tuple[str, str, bool]] = [
    ("KVM_CAP_USER_MEMORY", "guest RAM as memslots", True),
    ("KVM_CAP_IRQCHIP", "in-kernel PIC, IOAPIC and local APICs", True),
    ("KVM_CAP_PIT2", "in-kernel PIT timer", True),
    ("KVM_CAP_SET_TSS_ADDR", "Intel real-mode support area", True),
    ("KVM_CAP_SET_IDENTITY_MAP_ADDR", "Intel identity-map page for unpaged guests", False),
    ("KVM_CAP_EXT_CPUID", "per-vCPU CPUID (KVM_SET_CPUID2)", True),
    ("KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs cleanly", True),
    ("KVM_CAP_MP_STATE", "SMP bring-up state", False),
    ("KVM_CAP_VCPU_EVENTS", "injecting exceptions (PVM completions, tracing hooks)", False),
    ("KVM_CAP_SIGNAL_MSI", "message-signalled interrupts from devices", False),
    ("KVM_CAP_IRQFD", "interrupts from backend threads without a vCPU exit", False),
    ("KVM_CAP_IRQFD_RESAMPLE", "level-triggered INTx of passthrough devices", False),
    ("KVM_CAP_IOEVENTFD", "doorbells without a userspace exit", False),
    ("KVM_CAP_COALESCED_MMIO", "batched writes to framebuffer windows", False),
    ("KVM_CAP_READONLY_MEM", "ROM memslots (firmware, option ROMs)", False),
    ("KVM_CAP_SPLIT_IRQCHIP", "userspace IOAPIC for VT-d interrupt remapping", False),
    ("KVM_CAP_BINARY_STATS_FD", "in-kernel exit statistics for 'kvmpy trace --stats'", False),
    ("KVM_CAP_X2APIC_API", "more than 255 vCPUs", False),
    ("KVM_CAP_TSC_DEADLINE_TIMER", "TSC-deadline timer for Linux guests", False),
    ("KVM_CAP_EXCEPTION_PAYLOAD", "exact exception state for hooks", False),
]

VENDOR_NOTES = {
    "VT-x": "Intel VT-x: guest code runs natively in VMX non-root mode.",
    "AMD-V": "AMD-V (SVM): guest code runs natively in guest mode.",
    "PVM": (
        "PVM (kvm_pvm): no VT-x/AMD-V here. KVM runs guest kernel code through its instruction "
        "emulator (about a million instructions a second), so firmware and kvmpy's own guest "
        "programs run, slowly, and Linux guests do not finish booting in useful time. kvmpy "
        "completes the few instructions the emulator gives up on (int3, popcnt, clac/stac, "
        "fwait, ldmxcsr). Tests that boot Linux (the 'hwvirt' tier) are skipped here."
    ),
    "none": "No KVM module is loaded.",
}


@dataclass
class VfioStatus:
    available: bool
    reason: str


def vfio_status(bdf: str | None = None) -> VfioStatus:
    """Whether this host can pass a device (``bdf``, or any) through, with the precise reason:
    the first missing piece (IOMMU, vfio-pci, access, binding, group viability) and its remedy."""
    ok, why = host_support(bdf)
    return VfioStatus(ok, why)


def report() -> str:
    kvm = Kvm()
    vendor = host_vendor()
    lines = [
        "kvmpy host report",
        f"  /dev/kvm: KVM API version {kvm.api_version}",
        f"  virtualization: {vendor}",
        textwrap.fill(VENDOR_NOTES[vendor], 96, initial_indent="    ", subsequent_indent="    "),
        f"  vCPUs: {kvm.recommended_vcpus()} recommended, {kvm.max_vcpus()} at most",
        "  capabilities:",
    ]
    for name, why, required in CAPABILITIES:
        value = kvm.check_extension(getattr(lib, name))
        mark = "yes" if value else ("MISSING" if required else "no")
        lines.append(f"    {name:32} {mark:8} {why}")
    vf = vfio_status()
    lines.append(f"  device passthrough (VFIO): {'available' if vf.available else 'not available'}: "
                 f"{vf.reason}")
    kvm.close()
    return "\n".join(lines)
