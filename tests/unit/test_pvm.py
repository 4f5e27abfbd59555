"""The PVM completion decoder: instruction bytes as Linux emits them (pvm-host.md)."""

from kvmpy.vcpu.pvm import RFLAGS_CF, RFLAGS_ZF, decode, popcnt_result


def test_int3_and_fwait():
    assert decode(bytes.fromhex("cc90909090"), 64).op == "int3"
    assert decode(bytes.fromhex("cc90909090"), 64).length == 1
    d = decode(b"\x9b", 64)
    assert d.op == "fwait" and d.length == 1


def test_clac_stac():
    assert decode(bytes.fromhex("0f01ca"), 64).op == "clac"
    d = decode(bytes.fromhex("0f01cb90"), 64)
    assert d.op == "stac" and d.length == 3


def test_popcnt_register_form():
    # f3 48 0f b8 c7: popcnt rax, rdi
    d = decode(bytes.fromhex("f3480fb8c7"), 64)
    assert (d.op, d.length, d.opsize, d.reg, d.rm_reg) == ("popcnt", 5, 8, "rax", "rdi")
    # f3 0f b8 c1: popcnt eax, ecx (32-bit)
    d = decode(bytes.fromhex("f30fb8c1"), 64)
    assert (d.opsize, d.reg, d.rm_reg) == (4, "rax", "rcx")
    # 66 f3 45 0f b8 c8: popcnt r9w, r8w
    d = decode(bytes.fromhex("66f3450fb8c8"), 64)
    assert (d.opsize, d.reg, d.rm_reg) == (2, "r9", "r8")


def test_popcnt_memory_forms():
    # f3 48 0f b8 47 08: popcnt rax, [rdi+8]
    d = decode(bytes.fromhex("f3480fb84708"), 64)
    assert d.length == 6 and d.mem.base == "rdi" and d.mem.disp == 8
    assert d.mem.resolve({"rdi": 0x1000}, 0, {}) == 0x1008
    # f3 48 0f b8 05 10 00 00 00: popcnt rax, [rip+0x10]
    d = decode(bytes.fromhex("f3480fb80510000000"), 64)
    assert d.mem.rip_relative and d.length == 9
    assert d.mem.resolve({}, 0xFFFF_FFFF_8100_0009, {}) == 0xFFFF_FFFF_8100_0019
    # f3 4a 0f b8 04 c5 00 10 00 00: popcnt rax, [r8*8+0x1000] (SIB, no base)
    d = decode(bytes.fromhex("f34a0fb804c500100000"), 64)
    assert d.mem.base is None and d.mem.index == "r8" and d.mem.scale == 8
    assert d.mem.resolve({"r8": 2}, 0, {}) == 0x1010
    # gs-prefixed: 65 f3 48 0f b8 04 25 28 00 00 00: popcnt rax, gs:[0x28]
    d = decode(bytes.fromhex("65f3480fb8042528000000"), 64)
    assert (
        d.mem.seg == "gs"
        and d.mem.resolve({}, 0, {"gs": 0xFFFF_8880_0000_0000, "fs": 0}) == 0xFFFF_8880_0000_0028
    )


def test_ldmxcsr_stmxcsr():
    # 0f ae 54 24 04: ldmxcsr [rsp+4]
    d = decode(bytes.fromhex("0fae542404"), 64)
    assert d.op == "ldmxcsr" and d.length == 5 and d.mem.base == "rsp" and d.mem.disp == 4
    d = decode(bytes.fromhex("0fae5c2404"), 64)
    assert d.op == "stmxcsr"


def test_everything_else_is_refused():
    assert decode(bytes.fromhex("660f6ef9"), 64) is None  # movd xmm7, ecx: SIMD, not ours
    assert decode(bytes.fromhex("480fae2f"), 64) is None  # xrstor64 [rdi]
    assert decode(bytes.fromhex("0fae"), 64) is None  # truncated
    assert decode(b"", 64) is None
    assert decode(bytes.fromhex("0fae00"), 64) is None  # fxsave [rax]


def test_popcnt_semantics():
    assert popcnt_result(0xFF00FF, 8, 0, RFLAGS_CF) == (16, 0)
    assert popcnt_result(0, 8, 123, 0) == (0, RFLAGS_ZF)
    # 32-bit: only the low half counts, the result zero-extends
    assert popcnt_result(0xFFFF_FFFF_0000_0001, 4, 0xFFFF_FFFF_FFFF_FFFF, 0)[0] == 1
    # 16-bit: the upper bits of the destination stay
    assert popcnt_result(0x3, 2, 0xAAAA_0000, 0)[0] == 0xAAAA_0002


def test_iret_decode():
    from kvmpy.vcpu.pvm import decode

    d = decode(bytes.fromhex("cfc39090"), 32)
    assert (d.op, d.length, d.opsize) == ("iret", 1, 4)
    assert decode(bytes.fromhex("66cf"), 32).opsize == 2
    assert decode(bytes.fromhex("cf"), 16).opsize == 2
    assert decode(bytes.fromhex("66cf"), 16).opsize == 4
    assert decode(bytes.fromhex("48cf"), 64) is None  # iretq: not ours
    assert decode(bytes.fromhex("cf"), 64) is None


def test_segment_from_descriptor():
    from kvmpy.vcpu.pvm import segment_from_descriptor

    code32 = segment_from_descriptor(0x20, 0x00CF9B000000FFFF)
    assert code32["base"] == 0 and code32["limit"] == 0xFFFF_FFFF and code32["db"] == 1
    assert code32["type"] == 0xB and code32["dpl"] == 0 and code32["g"] == 1
    code16 = segment_from_descriptor(0x08, 0x00009A010000FFFF)  # base 0x10000, 64 KiB, 16-bit
    assert code16["base"] == 0x10000 and code16["limit"] == 0xFFFF and code16["db"] == 0
    assert segment_from_descriptor(0x10, 0x00CF93000000FFFF) is None  # data segment
    assert segment_from_descriptor(0x20, 0x00CF1B000000FFFF) is None  # not present


def test_iret_flags():
    from kvmpy.vcpu.pvm import iret_flags

    # CPL 0: IF and IOPL come from the stack; VM never
    assert iret_flags(0x2, 0x3202 | (1 << 17), 4, 0) == 0x3202
    # CPL 3 with IOPL 0: neither IF nor IOPL change
    assert iret_flags(0x0202, 0x3002, 4, 3) == 0x0202 | 0x2
    # 16-bit: the upper half stays
    assert iret_flags(0x4_0002, 0x0246, 2, 0) == 0x4_0246
