"""Architectural state kvmpy gives a vCPU before it first runs: CPUID, MSRs, LAPIC, entry mode.

Why here and not in the loaders: a loader only says *what* mode the kernel wants to be entered in
(``long64`` or ``prot32``) and with which registers; building the GDT, page tables and segment
state for that mode is the same for every kernel format.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import replace

from .. import layout
from ..kvm import CpuidEntry, VcpuFd

log = logging.getLogger("kvmpy.vcpu")

# Selectors per Linux's boot protocol (Documentation/arch/x86/boot.rst): __BOOT_CS 0x10,
# __BOOT_DS 0x18. Multiboot and PVH only ask for flat segments, so the same GDT serves them.
BOOT_CS = 0x10
BOOT_DS = 0x18
_GDT_CODE64 = 0x00AF_9B00_0000_FFFF
_GDT_CODE32 = 0x00CF_9B00_0000_FFFF
_GDT_DATA = 0x00CF_9300_0000_FFFF

CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

MSR_IA32_MISC_ENABLE = 0x1A0
MSR_MTRR_DEF_TYPE = 0x2FF
MISC_ENABLE_FAST_STRING = 1 << 0
MTRR_ENABLE_WB = (1 << 11) | 6

APIC_LVT_LINT0 = 0x350
APIC_LVT_LINT1 = 0x360
APIC_MODE_NMI = 0x4
APIC_MODE_EXTINT = 0x7

CPUID_HYPERVISOR = 1 << 31  # leaf 1 ECX
CPUID_HTT = 1 << 28  # leaf 1 EDX


def shape_cpuid(supported: list[CpuidEntry], apic_id: int, ncpus: int) -> list[CpuidEntry]:
    """KVM's supported CPUID, made true for one vCPU of an ``ncpus`` machine: its APIC id in
    leaf 1 and in the x2APIC topology leaves, the logical count, the hypervisor bit."""
    shift = max(0, (ncpus - 1).bit_length())
    out = []
    for e in supported:
        if e.function == 1:
            ebx = (e.ebx & 0xFFFF) | (min(ncpus, 255) << 16) | ((apic_id & 0xFF) << 24)
            edx = e.edx | CPUID_HTT if ncpus > 1 else e.edx & ~CPUID_HTT
            e = replace(e, ebx=ebx, ecx=e.ecx | CPUID_HYPERVISOR, edx=edx)
        elif e.function in (0xB, 0x1F):
            # one thread per core, all cores in one package
            if e.index == 0:
                e = replace(e, eax=0, ebx=1, ecx=(1 << 8) | 0, edx=apic_id)
            elif e.index == 1:
                e = replace(e, eax=shift, ebx=ncpus, ecx=(2 << 8) | 1, edx=apic_id)
            else:
                e = replace(e, eax=0, ebx=0, ecx=e.index & 0xFF, edx=apic_id)
        elif e.function == 4:
            e = replace(e, eax=(e.eax & 0x3FF_FFFF) | ((max(ncpus, 1) - 1) << 26) if e.eax & 0x1F else e.eax)
        out.append(e)
    return out


def setup_lapic(vcpu: VcpuFd) -> None:
    """LINT0 as ExtINT and LINT1 as NMI, as a PC BIOS leaves them: legacy PIC interrupts then
    reach the boot CPU through its local APIC (DESIGN.md, facts)."""
    regs = vcpu.get_lapic()

    def set_mode(off: int, mode: int) -> None:
        (v,) = struct.unpack_from("<I", regs, off)
        v = (v & ~(0x7 << 8) & ~(1 << 16)) | (mode << 8)
        struct.pack_into("<I", regs, off, v)

    set_mode(APIC_LVT_LINT0, APIC_MODE_EXTINT)
    set_mode(APIC_LVT_LINT1, APIC_MODE_NMI)
    vcpu.set_lapic(regs)


def setup_msrs(vcpu: VcpuFd) -> None:
    msrs = {MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING, MSR_MTRR_DEF_TYPE: MTRR_ENABLE_WB}
    for idx, val in msrs.items():
        try:
            vcpu.set_msrs({idx: val})
        except Exception as e:  # some backends (PVM) refuse MSRs a real CPU has; not fatal
            log.debug("MSR %#x not set: %s", idx, e)


def boot_gdt(mode: str) -> bytes:
    code = _GDT_CODE64 if mode == "long64" else _GDT_CODE32
    return struct.pack("<4Q", 0, 0, code, _GDT_DATA)


def identity_page_tables() -> list[tuple[int, bytes]]:
    """PML4 -> one PDPT -> four page directories of 2 MiB pages: the first 4 GiB identity-mapped,
    what the 64-bit Linux boot protocol requires of the loader."""
    pml4 = struct.pack("<Q", layout.BOOT_PDPT_ADDR | 0x3).ljust(4096, b"\0")
    pdpt = b"".join(struct.pack("<Q", (layout.BOOT_PD_ADDR + i * 4096) | 0x3) for i in range(4))
    pdpt = pdpt.ljust(4096, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(4 * 512))
    return [(layout.BOOT_PML4_ADDR, pml4), (layout.BOOT_PDPT_ADDR, pdpt), (layout.BOOT_PD_ADDR, pds)]


def _flat(seg, selector: int, code: bool, long64: bool) -> None:
    seg.base = 0
    seg.limit = 0xFFFF_FFFF
    seg.selector = selector
    seg.type = 0xB if code else 0x3
    seg.present = 1
    seg.dpl = 0
    seg.db = 0 if (code and long64) else 1
    seg.s = 1
    seg.l = 1 if (code and long64) else 0
    seg.g = 1
    seg.avl = 0
    seg.unusable = 0


def entry_memory(mode: str) -> list[tuple[int, bytes]]:
    """What the entry state needs in guest RAM: the GDT and, for long mode, the page tables."""
    writes = [(layout.BOOT_GDT_ADDR, boot_gdt(mode))]
    if mode == "long64":
        writes += identity_page_tables()
    return writes


def set_entry_state(vcpu: VcpuFd, mode: str, rip: int, regs: dict[str, int]) -> None:
    """Put the boot vCPU in ``mode`` at ``rip`` with the given general registers."""
    if mode not in ("long64", "prot32"):
        raise ValueError(f"unknown entry mode {mode!r}")
    long64 = mode == "long64"
    s = vcpu.get_sregs()
    _flat(s.cs, BOOT_CS, True, long64)
    for seg in (s.ds, s.es, s.fs, s.gs, s.ss):
        _flat(seg, BOOT_DS, False, long64)
    s.gdt.base = layout.BOOT_GDT_ADDR
    s.gdt.limit = 4 * 8 - 1
    s.idt.base = 0
    s.idt.limit = 0
    if long64:
        s.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG
        s.cr3 = layout.BOOT_PML4_ADDR
        s.cr4 = CR4_PAE
        s.efer = EFER_LME | EFER_LMA
    else:
        s.cr0 = CR0_PE | CR0_ET | CR0_NE
        s.cr3 = 0
        s.cr4 = 0
        s.efer = 0
    vcpu.set_sregs(s)
    r = vcpu.get_regs()
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11",
                 "r12", "r13", "r14", "r15"):
        setattr(r, name, 0)
    r.rsp = layout.BOOT_STACK_TOP
    r.rflags = 0x2
    r.rip = rip
    for name, value in regs.items():
        key = name if name.startswith("r") else "r" + name[1:] if name.startswith("e") else name
        setattr(r, key, value)
    vcpu.set_regs(r)
