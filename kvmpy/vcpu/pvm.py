"""Completions for the few instructions a PVM-backed KVM's emulator gives up on.

On hosts where KVM is the PVM backend (no VT-x/AMD-V; ``/sys/module/kvm_pvm``), guest ring-0
code runs through KVM's instruction emulator, which returns ``KVM_EXIT_INTERNAL_ERROR`` /
``KVM_INTERNAL_ERROR_EMULATION`` with the instruction bytes for a handful of instructions Linux
executes (measured in ``shared/reference/pvm-host.md``). Where completing them in userspace is
sound, this module does it: ``int3`` (RIP past it, #BP injected), ``popcnt``, ``clac``/``stac``,
``fwait``, ``ldmxcsr``/``stmxcsr``, and ``iret`` within one privilege level in 32/16-bit protected
mode (syslinux and isolinux return from their own interrupt handlers that way; the emulator only
does real-mode ``iret``). Anything beyond that (a privilege change, a task return, virtual-8086
mode) is left alone. This is not an x86 interpreter. On VT-x/AMD-V
hosts these exits never happen and the module is never consulted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("kvmpy.pvm")

REG_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_SEG_PREFIX = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
RFLAGS_CF, RFLAGS_PF, RFLAGS_AF, RFLAGS_ZF, RFLAGS_SF, RFLAGS_OF = 1, 4, 16, 64, 128, 2048
RFLAGS_AC = 1 << 18
BP_VECTOR = 3
# 32-bit word indices into the XSAVE image (Intel SDM vol. 1, 13.4): MXCSR in the legacy
# region at byte 24, XSTATE_BV at byte 512 of the header
XSAVE_MXCSR = 24 // 4
XSAVE_XSTATE_BV = 512 // 4
XFEATURE_SSE = 1 << 1


@dataclass
class MemOperand:
    """An effective address still to be resolved against registers: base + index*scale + disp
    (+ RIP of the next instruction when ``rip_relative``), in segment ``seg``."""

    base: str | None
    index: str | None
    scale: int
    disp: int
    rip_relative: bool
    seg: str | None
    addr_bits: int

    def resolve(self, regs: dict[str, int], next_rip: int, seg_bases: dict[str, int]) -> int:
        ea = self.disp
        if self.rip_relative:
            ea += next_rip
        if self.base:
            ea += regs[self.base]
        if self.index:
            ea += regs[self.index] * self.scale
        ea &= (1 << self.addr_bits) - 1
        if self.seg in ("fs", "gs"):
            ea += seg_bases[self.seg]
        return ea & 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class Decoded:
    """One decoded instruction of the supported set."""

    op: str  # "int3" | "popcnt" | "clac" | "stac" | "fwait" | "ldmxcsr" | "stmxcsr" | "iret"
    length: int
    opsize: int = 0  # operand size in bytes (popcnt)
    reg: str | None = None  # destination register (popcnt)
    rm_reg: str | None = None  # register source
    mem: MemOperand | None = None  # memory operand


def _modrm(insn: bytes, pos: int, rex: int, addr_bits: int, seg: str | None):
    """Decode ModRM (+SIB, +displacement) at ``pos``. Returns (reg index, rm register name or
    None, MemOperand or None, new position)."""
    modrm = insn[pos]
    pos += 1
    mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
    reg |= (rex & 4) << 1
    if mod == 3:
        return reg, REG_NAMES[rm | ((rex & 1) << 3)], None, pos
    if addr_bits == 16:
        raise ValueError("16-bit addressing is not supported")
    base: str | None = None
    index: str | None = None
    scale = 1
    rip_rel = False
    if rm == 4:
        sib = insn[pos]
        pos += 1
        ss, idx, b = sib >> 6, (sib >> 3) & 7, sib & 7
        idx |= (rex & 2) << 2
        if idx != 4:
            index = REG_NAMES[idx]
            scale = 1 << ss
        if b == 5 and mod == 0:
            disp = int.from_bytes(insn[pos : pos + 4], "little", signed=True)
            pos += 4
        else:
            base = REG_NAMES[b | ((rex & 1) << 3)]
            disp = 0
    elif rm == 5 and mod == 0:
        disp = int.from_bytes(insn[pos : pos + 4], "little", signed=True)
        pos += 4
        rip_rel = addr_bits == 64
    else:
        base = REG_NAMES[rm | ((rex & 1) << 3)]
        disp = 0
    if mod == 1:
        disp = int.from_bytes(insn[pos : pos + 1], "little", signed=True)
        pos += 1
    elif mod == 2:
        disp = int.from_bytes(insn[pos : pos + 4], "little", signed=True)
        pos += 4
    if pos > len(insn):
        raise ValueError("instruction bytes end inside the operand")
    return reg, None, MemOperand(base, index, scale, disp, rip_rel, seg, addr_bits), pos


def decode(insn: bytes, mode_bits: int) -> Decoded | None:
    """Decode ``insn`` if it is one of the completed instructions, else None. ``mode_bits`` is
    the code segment's default size (16, 32 or 64)."""
    pos = 0
    opsize_prefix = addr_prefix = rep = False
    seg = None
    try:
        while insn[pos] in (0x66, 0x67, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65):
            b = insn[pos]
            opsize_prefix |= b == 0x66
            addr_prefix |= b == 0x67
            rep |= b == 0xF3
            seg = _SEG_PREFIX.get(b, seg)
            pos += 1
        rex = 0
        if mode_bits == 64 and 0x40 <= insn[pos] <= 0x4F:
            rex = insn[pos]
            pos += 1
        if mode_bits == 64:
            addr_bits = 32 if addr_prefix else 64
        else:
            addr_bits = (16 if mode_bits == 32 else 32) if addr_prefix else mode_bits
        op = insn[pos]
        if op == 0xCF and mode_bits != 64 and not rex:
            size = 2 if (mode_bits == 16) != opsize_prefix else 4
            return Decoded("iret", pos + 1, size)
        if op == 0xCC and pos == 0:
            return Decoded("int3", 1)
        if op == 0x9B and pos == 0:
            return Decoded("fwait", 1)
        if op != 0x0F:
            return None
        op2 = insn[pos + 1]
        if op2 == 0x01 and insn[pos + 2] in (0xCA, 0xCB):
            return Decoded("clac" if insn[pos + 2] == 0xCA else "stac", pos + 3)
        if op2 == 0xB8 and rep:
            reg, rm_reg, mem, end = _modrm(insn, pos + 2, rex, addr_bits, seg)
            size = 8 if rex & 8 else (2 if opsize_prefix else 4)
            return Decoded("popcnt", end, size, REG_NAMES[reg], rm_reg, mem)
        if op2 == 0xAE and not rep:
            reg, rm_reg, mem, end = _modrm(insn, pos + 2, rex, addr_bits, seg)
            if mem is not None and reg & 7 in (2, 3):
                return Decoded("ldmxcsr" if reg & 7 == 2 else "stmxcsr", end, 4, mem=mem)
        return None
    except (IndexError, ValueError):
        return None


def popcnt_result(src: int, size: int, old_dst: int, old_flags: int) -> tuple[int, int]:
    """(new destination register value, new RFLAGS) for ``popcnt`` of ``size`` bytes."""
    src &= (1 << (size * 8)) - 1
    count = bin(src).count("1")
    if size == 8:
        dst = count
    elif size == 4:
        dst = count  # 32-bit writes zero-extend
    else:
        dst = (old_dst & ~0xFFFF) | count
    flags = old_flags & ~(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF)
    if src == 0:
        flags |= RFLAGS_ZF
    return dst, flags


RFLAGS_IF = 1 << 9
RFLAGS_IOPL = 3 << 12
RFLAGS_NT = 1 << 14
RFLAGS_VM = 1 << 17
RFLAGS_VIF_VIP = (1 << 19) | (1 << 20)
CR0_PE = 1


def segment_from_descriptor(selector: int, desc: int) -> dict[str, int] | None:
    """The hidden part of a segment register for an 8-byte GDT descriptor, as ``kvm_segment``
    fields; None for a descriptor a same-privilege ``iret`` may not load into CS (not present,
    not a code segment)."""
    limit = (desc & 0xFFFF) | ((desc >> 32) & 0xF_0000)
    base = ((desc >> 16) & 0xFF_FFFF) | ((desc >> 32) & 0xFF00_0000)
    access = (desc >> 40) & 0xFF
    flags = (desc >> 52) & 0xF
    typ, s, dpl, present = access & 0xF, (access >> 4) & 1, (access >> 5) & 3, access >> 7
    if not present or not s or not typ & 0x8:
        return None
    g = (flags >> 3) & 1
    if g:
        limit = (limit << 12) | 0xFFF
    return {"selector": selector, "base": base, "limit": limit, "type": typ | 1, "s": 1, "dpl": dpl,
            "present": 1, "avl": flags & 1, "l": (flags >> 1) & 1, "db": (flags >> 2) & 1, "g": g,
            "unusable": 0}


def iret_flags(old: int, popped: int, size: int, cpl: int) -> int:
    """RFLAGS after a same-privilege protected-mode ``iret`` (Intel SDM vol. 2, IRET): IOPL only
    changes at CPL 0, IF only where CPL <= IOPL, VM/VIF/VIP never here, bit 1 always set; a
    16-bit ``iret`` replaces only the low 16 bits."""
    keep = RFLAGS_VM | RFLAGS_VIF_VIP
    if cpl > 0:
        keep |= RFLAGS_IOPL
    if cpl > (old & RFLAGS_IOPL) >> 12:
        keep |= RFLAGS_IF
    if size == 2:
        keep |= ~0xFFFF & 0xFFFF_FFFF
    new = (old & keep) | (popped & ~keep & 0xFFFF_FFFF)
    return new | 0x2


class PvmCompleter:
    """Completes the supported instructions for one VM; counts what it did for reports."""

    def __init__(self, read_gpa: Callable[[int, int], bytes], write_gpa: Callable[[int, bytes], None]):
        self.read_gpa = read_gpa
        self.write_gpa = write_gpa
        self.counts: Counter[str] = Counter()

    def _linear(self, vcpu, gva: int, length: int, write: bool, data: bytes = b"") -> bytes:
        out = bytearray()
        done = 0
        while done < length:
            chunk = min(length - done, 4096 - ((gva + done) & 0xFFF))
            gpa = vcpu.translate(gva + done)
            if gpa is None:
                raise ValueError(f"guest address {gva + done:#x} is not mapped")
            if write:
                self.write_gpa(gpa, data[done : done + chunk])
            else:
                out += self.read_gpa(gpa, chunk)
            done += chunk
        return bytes(out)

    def _iret(self, vcpu, regs, sregs, size: int) -> bool:
        """Same-privilege protected-mode ``iret``: pop EIP, CS, EFLAGS and load CS from the GDT.
        False (nothing changed) for anything else: the run then stops with the report."""
        if not sregs.cr0 & CR0_PE or regs.rflags & (RFLAGS_VM | RFLAGS_NT):
            return False
        cpl = sregs.cs.selector & 3
        sp_mask = 0xFFFF_FFFF if sregs.ss.db else 0xFFFF
        sp = regs.rsp & sp_mask
        raw = self._linear(vcpu, sregs.ss.base + sp, 3 * size, False)
        eip, cs, eflags = (int.from_bytes(raw[i * size : (i + 1) * size], "little") for i in range(3))
        if cs & 3 != cpl or cs & 4 or (size == 4 and eflags & RFLAGS_VM):
            return False  # privilege change, LDT selector or return to virtual-8086 mode
        index = cs & ~7
        if index + 7 > sregs.gdt.limit or index == 0:
            return False
        desc = int.from_bytes(self._linear(vcpu, sregs.gdt.base + index, 8, False), "little")
        seg = segment_from_descriptor(cs, desc)
        if seg is None or (seg["type"] & 0x4) == 0 and seg["dpl"] != cpl:
            return False  # non-conforming code must have DPL == CPL
        for field, value in seg.items():
            setattr(sregs.cs, field, value)
        vcpu.set_sregs(sregs)
        regs.rip = eip & (0xFFFF if size == 2 else 0xFFFF_FFFF)
        regs.rflags = iret_flags(regs.rflags, eflags, size, cpl)
        regs.rsp = (regs.rsp & ~sp_mask) | ((sp + 3 * size) & sp_mask)
        vcpu.set_regs(regs)
        return True

    def complete(self, vcpu, insn: bytes) -> str | None:
        """Complete ``insn`` on ``vcpu`` (a VcpuFd) and return its name, or None to give up."""
        sregs = vcpu.get_sregs()
        mode_bits = 64 if sregs.cs.l else (32 if sregs.cs.db else 16)
        d = decode(insn, mode_bits)
        if d is None:
            return None
        regs = vcpu.get_regs()
        next_rip = regs.rip + d.length
        try:
            if d.op == "int3":
                ev = vcpu.get_vcpu_events()
                ev.exception.injected = 1
                ev.exception.nr = BP_VECTOR
                ev.exception.has_error_code = 0
                ev.exception.pending = 0
                regs.rip = next_rip
                vcpu.set_regs(regs)
                vcpu.set_vcpu_events(ev)
            elif d.op in ("clac", "stac"):
                regs.rflags = regs.rflags & ~RFLAGS_AC if d.op == "clac" else regs.rflags | RFLAGS_AC
                regs.rip = next_rip
                vcpu.set_regs(regs)
            elif d.op == "fwait":
                regs.rip = next_rip
                vcpu.set_regs(regs)
            elif d.op == "popcnt":
                rv = {n: getattr(regs, n) for n in REG_NAMES}
                if d.mem is not None:
                    ea = d.mem.resolve(rv, next_rip, {"fs": sregs.fs.base, "gs": sregs.gs.base})
                    src = int.from_bytes(self._linear(vcpu, ea, d.opsize, False), "little")
                else:
                    src = rv[d.rm_reg]
                dst, flags = popcnt_result(src, d.opsize, rv[d.reg], regs.rflags)
                setattr(regs, d.reg, dst)
                regs.rflags = flags
                regs.rip = next_rip
                vcpu.set_regs(regs)
            elif d.op == "iret":
                if not self._iret(vcpu, regs, sregs, d.opsize):
                    return None
            elif d.op in ("ldmxcsr", "stmxcsr"):
                rv = {n: getattr(regs, n) for n in REG_NAMES}
                ea = d.mem.resolve(rv, next_rip, {"fs": sregs.fs.base, "gs": sregs.gs.base})
                # MXCSR through the XSAVE image: on PVM hosts KVM_GET/SET_FPU ignore it
                xs = vcpu.get_xsave()
                if d.op == "ldmxcsr":
                    xs.region[XSAVE_MXCSR] = int.from_bytes(self._linear(vcpu, ea, 4, False), "little")
                    xs.region[XSAVE_XSTATE_BV] |= XFEATURE_SSE  # else the restore ignores it
                    vcpu.set_xsave(xs)
                else:
                    self._linear(vcpu, ea, 4, True, int(xs.region[XSAVE_MXCSR]).to_bytes(4, "little"))
                regs.rip = next_rip
                vcpu.set_regs(regs)
        except ValueError as e:
            log.warning("could not complete %s at %#x: %s", d.op, regs.rip, e)
            return None
        self.counts[d.op] += 1
        return d.op
