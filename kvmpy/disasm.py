"""The guest instruction behind an exit, disassembled (``kvmpy trace --decode``).

Why iced-x86 (PyPI ``iced-x86``) rather than capstone: it decodes every x86 instruction up to
the newest extensions and is checked against Intel's XED and the manuals with a large test
suite, where capstone's x86 tables are older and have known misdecodings; it is one
self-contained wheel (Rust, abi3) with no C library to find at run time; it decodes 16-, 32-
and 64-bit code, which a tracer needs because firmware and boot code run in all three; and it
reports each instruction's memory operands (segment, base, index, scale, displacement, access),
which is what lets us *check* that an instruction is the one that caused an exit (below).
Decoding costs microseconds, less than the ioctls that fetch the registers.

Where the instruction is: the bytes are read at CS base + RIP through KVM_TRANSLATE (the guest's
page tables, page by page) and guest RAM. But RIP does not always point at the exiting
instruction: KVM completes a read (``in``, MMIO load) on the next KVM_RUN, so RIP is still on
it, while a write may already have been retired (KVM's instruction emulator, and with it PVM
hosts, advance RIP past an ``out`` or an MMIO store before exiting). So the instruction at RIP
is taken when it explains the exit (the right kind, direction and size, and the same port or
guest-physical address, computed from its operands and the registers); otherwise the
instruction that ends exactly at RIP and explains it; otherwise the one at RIP, marked ``?``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DmaFault, UsageError
from .events import ExitEvent, IoExit, MmioExit

if TYPE_CHECKING:
    from .machine import Machine

MAX_INSN = 15
PAGE = 4096
EFER_LMA = 1 << 10


def _iced() -> Any:
    try:
        import iced_x86
    except ImportError:
        raise UsageError("--decode needs the iced-x86 package (pip install iced-x86; "
                         "'make setup' installs it)") from None
    return iced_x86


def bitness(sregs: Any) -> int:
    """16, 32 or 64, from CS.L with EFER.LMA, CS.D and CR0.PE (real mode is 16-bit)."""
    if sregs.cs.l and sregs.efer & EFER_LMA:
        return 64
    if sregs.cr0 & 1 and sregs.cs.db:
        return 32
    return 16


def decode(code: bytes, bits: int, ip: int = 0) -> str:
    """The first instruction of ``code`` in Intel syntax, or a note when it does not decode."""
    iced = _iced()
    if not code:
        return "(no code bytes)"
    insn = iced.Decoder(bits, code, ip=ip).decode()
    if insn.code == iced.Code.INVALID:
        return f"(undecodable: {code[:MAX_INSN].hex(' ')})"
    return iced.Formatter(iced.FormatterSyntax.INTEL).format(insn)


class _Cpu:
    """The registers an address computation needs, fetched once per exit."""

    def __init__(self, iced: Any, regs: Any, sregs: Any, bits: int) -> None:
        R = iced.Register
        self.iced = iced
        self.bits = bits
        self.gpr = {getattr(R, n.upper()): getattr(regs, n) for n in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")}
        flat = ("cs", "ds", "es", "ss") if bits == 64 else ()  # bases ignored in 64-bit mode
        self.seg = {getattr(R, n.upper()): 0 if n in flat else getattr(sregs, n).base
                    for n in ("cs", "ds", "es", "fs", "gs", "ss")}

    def reg(self, r: int) -> int:
        if r == self.iced.Register.NONE:
            return 0
        ext = self.iced.RegisterExt
        value = self.gpr.get(ext.full_register(r), 0)
        return value & ((1 << (8 * ext.size(r))) - 1)


class Disassembler:
    """Decodes the instruction behind an exit. Call it on the exiting vCPU's thread (a hook or
    a listener, before the vCPU re-enters the guest), where its registers can be read."""

    def __init__(self, machine: Machine) -> None:
        iced = _iced()
        self.machine = machine
        self._iced = iced
        self._formatter = iced.Formatter(iced.FormatterSyntax.INTEL)
        self._info = iced.InstructionInfoFactory()
        M = iced.Mnemonic
        self._io_in = {M.IN: 0, M.INSB: 1, M.INSW: 2, M.INSD: 4}
        self._io_out = {M.OUT: 0, M.OUTSB: 1, M.OUTSW: 2, M.OUTSD: 4}
        A = iced.OpAccess
        self._reads = {A.READ, A.COND_READ, A.READ_WRITE, A.READ_COND_WRITE}
        self._writes = {A.WRITE, A.COND_WRITE, A.READ_WRITE, A.READ_COND_WRITE}

    # -- reading code --------------------------------------------------------------------------
    def read_linear(self, index: int, linear: int, length: int) -> bytes:
        """Bytes at a linear address through the page tables; fewer where a page is unmapped or
        not RAM."""
        vcpu = self.machine.vcpus[index]
        out = bytearray()
        addr = linear
        while len(out) < length:
            chunk = min(length - len(out), PAGE - (addr & (PAGE - 1)))
            gpa = vcpu.translate(addr)
            if gpa is None:
                break
            try:
                out += self.machine.memory.read(gpa, chunk)
            except DmaFault:
                break
            addr += chunk
        return bytes(out)

    def _bytes_before(self, index: int, linear: int) -> bytes:
        """Up to 15 bytes that end at ``linear`` (fewer if the page before is not readable)."""
        start = max(linear - MAX_INSN, 0)
        data = self.read_linear(index, start, linear - start)
        if len(data) == linear - start:
            return data
        page = linear & ~(PAGE - 1)
        return self.read_linear(index, page, linear - page) if page >= start else b""

    def _decode(self, code: bytes, bits: int, ip: int) -> Any:
        insn = self._iced.Decoder(bits, code, ip=ip).decode()
        return None if insn.code == self._iced.Code.INVALID else insn

    # -- what the hooks and the recorder call -------------------------------------------------
    def at_rip(self, index: int) -> str:
        """The instruction at the vCPU's RIP."""
        vcpu = self.machine.vcpus[index]
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        bits = bitness(sregs)
        linear = self._linear(regs.rip, sregs, bits)
        insn = self._decode(self.read_linear(index, linear, MAX_INSN), bits, regs.rip)
        return self._formatter.format(insn) if insn is not None else f"(no instruction at {linear:#x})"

    def for_exit(self, event: ExitEvent) -> str:
        """The instruction that caused ``event`` (see the module's docstring for how it is
        found); prefixed with ``?`` when none explains the exit and the one at RIP is shown."""
        vcpu = self.machine.vcpus[event.vcpu]
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        bits = bitness(sregs)
        rip = regs.rip
        linear = self._linear(rip, sregs, bits)
        at_rip = self._decode(self.read_linear(event.vcpu, linear, MAX_INSN), bits, rip)
        if not isinstance(event, IoExit | MmioExit):
            return self._show(at_rip, linear)
        cpu = _Cpu(self._iced, regs, sregs, bits)
        before = self._bytes_before(event.vcpu, linear)
        # exact operand size first: "89 0e" (a 4-byte store) also ends where "66 89 0e" does
        for exact in (True, False):
            if at_rip is not None and self._explains(at_rip, event, cpu, exact):
                return self._formatter.format(at_rip)
            for k in range(1, len(before) + 1):
                insn = self._decode(before[-k:], bits, (rip - k) & ((1 << bits) - 1))
                if insn is not None and insn.len == k and self._explains(insn, event, cpu, exact):
                    return self._formatter.format(insn)
        return "? " + self._show(at_rip, linear)

    def _show(self, insn: Any, linear: int) -> str:
        return self._formatter.format(insn) if insn is not None else f"(no instruction at {linear:#x})"

    @staticmethod
    def _linear(rip: int, sregs: Any, bits: int) -> int:
        return rip if bits == 64 else (sregs.cs.base + rip) & 0xFFFF_FFFF

    # -- does an instruction explain an exit? ---------------------------------------------------
    def _explains(self, insn: Any, event: IoExit | MmioExit, cpu: _Cpu, exact: bool) -> bool:
        """Same kind, direction, port or address; the same size, or with ``exact`` False a
        wider operand (a 16-byte SSE access reaches MMIO in 8-byte pieces)."""
        if isinstance(event, IoExit):
            return self._explains_io(insn, event, cpu)
        return self._explains_mmio(insn, event, cpu, exact)

    def _explains_io(self, insn: Any, ev: IoExit, cpu: _Cpu) -> bool:
        table = self._io_out if ev.is_write else self._io_in
        size = table.get(insn.mnemonic)
        if size is None:
            return False
        iced = self._iced
        if size == 0:  # in/out: the accumulator gives the size, an imm8 or DX the port
            acc, port_op = (1, 0) if ev.is_write else (0, 1)
            size = iced.RegisterExt.size(insn.op_register(acc))
            if insn.op_kind(port_op) == iced.OpKind.IMMEDIATE8:
                port = insn.immediate8
            else:
                port = cpu.reg(iced.Register.DX)
        else:
            port = cpu.reg(iced.Register.DX)
        return size == ev.size and port == ev.port

    def _explains_mmio(self, insn: Any, ev: MmioExit, cpu: _Cpu, exact: bool) -> bool:
        wanted = self._writes if ev.is_write else self._reads
        vcpu = self.machine.vcpus[ev.vcpu]
        size_of = self._iced.MemorySizeExt.size
        for mem in self._info.info(insn).used_memory():
            if mem.access not in wanted:
                continue
            size = size_of(mem.memory_size)
            if size != ev.size and (exact or size < ev.size):
                continue
            width = {1: 0xFFFF, 2: 0xFFFF_FFFF}.get(mem.address_size, (1 << 64) - 1)
            ea = (cpu.reg(mem.base) + cpu.reg(mem.index) * mem.scale + mem.displacement) & width
            linear = (cpu.seg.get(mem.segment, 0) + ea) & ((1 << 64) - 1 if cpu.bits == 64 else 0xFFFF_FFFF)
            page = vcpu.translate(linear & ~(PAGE - 1))
            if page is not None and page + (linear & (PAGE - 1)) == ev.addr:
                return True
        return False
