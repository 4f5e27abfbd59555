"""The register block as a driver sees it: identification, capability fields Linux decodes,
reset values, access widths (whole quadwords and dword halves), reserved and read-only bits,
GCMD/GSTS, state snapshot/restore, and random nonsense that must never raise."""

from __future__ import annotations

import random

import pytest
from test_vtd_support import (
    CAP,
    CCMD,
    ECAP,
    FECTL,
    FSTS,
    GCMD,
    GSTS,
    ICS,
    IECTL,
    IQA,
    IQH,
    IQT,
    IRTA,
    PMEN,
    QIE,
    RTADDR,
    SRTP,
    TE,
    VER,
    WBF,
    VtdGuest,
    sid,
)

from kvmpy import layout
from kvmpy.errors import DmaFault
from kvmpy.hw.bus import MmioBus
from kvmpy.iommu import VTD_ACCESS_SIZES, VTD_MMIO_SIZE, IntelIommu


def field(value: int, hi: int, lo: int) -> int:
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def test_version_is_1_0() -> None:
    g = VtdGuest()
    assert g.r32(VER) == 0x10


@pytest.mark.parametrize("aw_bits,sagaw,mgaw", [(39, 0b00010, 38), (48, 0b00110, 47)])
def test_cap_fields(aw_bits: int, sagaw: int, mgaw: int) -> None:
    cap = VtdGuest(aw_bits=aw_bits).r64(CAP)
    assert field(cap, 2, 0) == 6  # ND: 65536 domains
    assert field(cap, 3, 3) == 0  # AFL
    assert field(cap, 4, 4) == 0  # RWBF
    assert field(cap, 6, 5) == 0  # PLMR, PHMR
    assert field(cap, 7, 7) == 0  # CM
    assert field(cap, 12, 8) == sagaw
    assert field(cap, 21, 16) == mgaw
    assert field(cap, 33, 24) * 16 == 0x220  # FRO
    assert field(cap, 37, 34) == 0b0011  # SLLPS: 2 MiB and 1 GiB
    assert field(cap, 39, 39) == 1  # PSI
    assert field(cap, 47, 40) + 1 == 4  # NFR
    assert field(cap, 53, 48) == 18  # MAMV
    assert field(cap, 55, 54) == 0b11  # DWD, DRD
    assert field(cap, 63, 63) == 0  # ESRTPS: Linux does the global flushes itself


def test_cap_matches_qemu_for_one_fault_record() -> None:
    """QEMU's intel-iommu (one record) reports CAP 0xd2008c22260206 / 0xd2008c222f0606."""
    assert VtdGuest(fault_records=1).r64(CAP) == 0xD2008C22260206
    assert VtdGuest(fault_records=1, aw_bits=48).r64(CAP) == 0xD2008C222F0606


def test_caching_mode_sets_cm() -> None:
    assert VtdGuest(caching_mode=True).r64(CAP) & 1 << 7


def test_ecap_fields() -> None:
    ecap = VtdGuest().r64(ECAP)
    assert ecap == 0xF42  # QEMU's value with pass-through: QI | PT | IRO 0xF
    assert field(ecap, 0, 0) == 0  # C as QEMU reports it
    assert field(ecap, 1, 1) == 1  # QI
    assert field(ecap, 3, 2) == 0  # DT, IR
    assert field(ecap, 6, 6) == 1  # PT
    assert field(ecap, 17, 8) * 16 == 0xF0  # IRO
    assert field(ecap, 43, 43) == 0  # SMTS
    assert VtdGuest(queued_invalidation=False, pass_through=False).r64(ECAP) == 0xF00


def test_reset_values() -> None:
    g = VtdGuest()
    assert g.r32(GSTS) == 0 and g.r32(FSTS) == 0
    assert g.r32(FECTL) == 1 << 31 and g.r32(IECTL) == 1 << 31
    assert g.r64(RTADDR) == 0 and g.r64(IQA) == 0 and g.r64(IQH) == 0 and g.r64(IQT) == 0


def test_cap_and_ecap_are_read_only() -> None:
    g = VtdGuest()
    cap, ecap = g.r64(CAP), g.r64(ECAP)
    g.w64(CAP, 0)
    g.w64(ECAP, ~0)
    g.w32(VER, 0)
    assert g.r64(CAP) == cap and g.r64(ECAP) == ecap and g.r32(VER) == 0x10


def test_quadword_registers_as_dword_halves() -> None:
    g = VtdGuest()
    cap = g.r64(CAP)
    assert g.r32(CAP) == cap & 0xFFFF_FFFF and g.r32(CAP + 4) == cap >> 32
    g.w32(RTADDR, 0x0012_3000)
    g.w32(RTADDR + 4, 0x55)
    assert g.r64(RTADDR) == 0x55_0012_3000
    g.w64(RTADDR, 0x12_3456_7000)
    assert g.r32(RTADDR + 4) == 0x12 and g.r32(RTADDR) == 0x3456_7000


def test_rtaddr_keeps_only_its_fields() -> None:
    g = VtdGuest(aw_bits=39)
    g.w64(RTADDR, (1 << 64) - 1)
    assert g.r64(RTADDR) == ((1 << 39) - 1) & ~0x3FF  # address below HAW, TTM 11:10


def test_gcmd_reads_zero_and_gsts_follows() -> None:
    g = VtdGuest()
    g.w32(GCMD, TE)
    assert g.r32(GCMD) == 0
    assert g.r32(GSTS) == TE
    g.w32(GSTS, 0)  # read-only
    assert g.r32(GSTS) == TE
    g.w32(GCMD, 0)
    assert g.r32(GSTS) == 0
    assert [e["command"] for n, e in g.events if n == "vtd.command"] == ["translation", "translation"]


def test_srtp_latches_rtaddr_once() -> None:
    g = VtdGuest()
    dev = sid(0, 3, 0)
    g.set_context(dev, g.alloc())  # tables at g.root
    g.w64(RTADDR, g.root)
    g.w32(GCMD, SRTP)
    assert g.r32(GSTS) & SRTP  # RTPS
    g.w64(RTADDR, 0x7F0000)  # not latched until the next SRTP
    g.w32(GCMD, TE)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(dev).read(0, 1)
    assert exc.value.fault_reason == 6  # type: ignore[attr-defined]  # walked g.root's tables


def test_one_shot_commands_with_persistent_bits_like_linux() -> None:
    """Linux writes ``gcmd | DMA_GCMD_SRTP`` with TE already on: TE must stay on."""
    g = VtdGuest()
    g.gcmd_set(TE)
    g.w64(RTADDR, g.root)
    g.w32(GCMD, g.gcmd | SRTP)
    assert g.r32(GSTS) & TE and g.r32(GSTS) & SRTP
    g.w32(GCMD, g.gcmd | WBF)  # RWBF = 0: completes at once, WBFS never set
    assert not g.r32(GSTS) & WBF


def test_pmen_reports_no_protected_regions() -> None:
    g = VtdGuest()
    g.w32(PMEN, 1 << 31)
    assert g.r32(PMEN) == 0


def test_reserved_offsets_read_zero_and_ignore_writes() -> None:
    g = VtdGuest()
    for off in (0x04, 0x30, 0x48, 0x58, 0x68, 0x70, 0x78, IRTA, 0xC0, 0x100, 0x200, 0x260, 0xFF8):
        g.w32(off, 0xFFFF_FFFF)
        g.w64(off & ~7, (1 << 64) - 1)
        assert g.r32(off) == 0, hex(off)


def test_status_bits_are_write_one_to_clear_or_read_only() -> None:
    g = VtdGuest()
    g.w32(FSTS, 0xFFFF_FFFF)
    assert g.r32(FSTS) == 0
    g.w32(ICS, 1)
    assert g.r32(ICS) == 0
    g.w64(CCMD, (1 << 64) - 1 & ~(1 << 63))
    assert (g.r64(CCMD) >> 59) & 3 == 0  # CAIG is hardware's


def test_iqa_iqt_masks() -> None:
    g = VtdGuest()
    g.w64(IQA, (1 << 64) - 1)
    assert g.r64(IQA) == (((1 << 39) - 1) & ~0xFFF) | 0x7  # no DW without scalable mode
    g.w64(IQT, (1 << 64) - 1)
    assert g.r64(IQT) == 0x7FFF0
    g.w64(IQH, 0x10)
    assert g.r64(IQH) == 0


def test_accesses_outside_the_block_are_ignored() -> None:
    g = VtdGuest()
    g.iommu.write(VTD_MMIO_SIZE - 4, 8, 1)
    g.iommu.write(-4, 4, 1)
    assert g.iommu.read(VTD_MMIO_SIZE - 4, 8) == 0


def test_on_the_mmio_bus() -> None:
    g = VtdGuest()
    bus = MmioBus()
    bus.register(layout.VTD_BASE, VTD_MMIO_SIZE, g.iommu, "vt-d", sizes=VTD_ACCESS_SIZES)
    assert bus.read(layout.VTD_BASE + CAP, 8) == g.r64(CAP)
    assert bus.read(layout.VTD_BASE + VER, 4) == 0x10
    bus.write(layout.VTD_BASE + GCMD, 4, TE)
    assert bus.read(layout.VTD_BASE + GSTS, 4) == TE


def test_bad_options_are_refused() -> None:
    from kvmpy.hw.dma import BytearrayDmaSpace

    with pytest.raises(ValueError):
        IntelIommu(BytearrayDmaSpace(16), object(), aw_bits=57)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IntelIommu(BytearrayDmaSpace(16), object(), fault_records=0)  # type: ignore[arg-type]


def configured() -> tuple[VtdGuest, int]:
    g = VtdGuest()
    pgd = g.alloc()
    dev = sid(0, 3, 0)
    g.set_context(dev, pgd, did=7)
    g.map(pgd, 3, 0x1000, 0xA0_0000)
    g.linux_init()
    g.w32(FECTL, 1 << 31)
    with pytest.raises(DmaFault):
        g.iommu.dma_space(dev).read(0x9000, 1)
    return g, pgd


def test_snapshot_restore_round_trip() -> None:
    g, pgd = configured()
    dev = sid(0, 3, 0)
    snap = g.iommu.snapshot()
    regs = {off: g.r64(off) for off in range(0, 0x300, 8)}
    g.iommu.reset()
    assert g.r32(GSTS) == 0 and not g.iommu.translation_enabled
    assert g.iommu.dma_space(dev).read(0x1000, 1) == g.peek(0x1000, 1)  # identity again
    g.iommu.restore(snap)
    assert g.iommu.snapshot() == snap
    assert {off: g.r64(off) for off in range(0, 0x300, 8)} == regs
    assert g.iommu.translation_enabled
    assert g.iommu.translate(dev, 0x1234, False) == 0xA0_0234
    # the queue keeps going from where it was
    assert g.submit((1 << 4 | 2, 0)) == 2
    # a restored copy in a second unit behaves the same
    other = IntelIommu(g.mem, g.msi)
    other.restore(snap)
    assert other.translate(dev, 0x1FFF, False) == 0xA0_0FFF


def test_snapshot_is_independent_of_later_changes() -> None:
    g, _ = configured()
    snap = g.iommu.snapshot()
    before = bytes(snap.csr)
    g.w32(FSTS, 0xFF)
    g.gcmd_clear(TE)
    assert bytes(snap.csr) == before


def test_reset_clears_caches() -> None:
    g, pgd = configured()
    dev = sid(0, 3, 0)
    assert g.iommu.translate(dev, 0x1000, False) == 0xA0_0000
    g.map(pgd, 3, 0x1000, 0xB0_0000)  # stale in the IOTLB
    assert g.iommu.translate(dev, 0x1000, False) == 0xA0_0000
    snap = g.iommu.snapshot()
    g.iommu.restore(snap)  # a restored unit starts with empty caches
    assert g.iommu.translate(dev, 0x1000, False) == 0xB0_0000


def test_random_register_nonsense_never_raises() -> None:
    rng = random.Random(6)
    offsets = [o for o in range(0, 0x300, 4)] + [0xFF8, 0xFFC]
    for round_ in range(40):
        g = VtdGuest(aw_bits=rng.choice((39, 48)), queued_invalidation=rng.random() < 0.7)
        # sometimes start from a sane configuration so deeper paths are reached
        if round_ % 2:
            pgd = g.alloc()
            g.set_context(sid(0, 3, 0), pgd)
            g.map(pgd, 3, 0x1000, 0xA0_0000)
            g.linux_init()
        for _ in range(400):
            off = rng.choice(offsets)
            size = rng.choice((4, 8, 1, 2))
            value = (
                rng.getrandbits(64) if rng.random() < 0.7 else rng.choice((0, (1 << 64) - 1, QIE, TE | SRTP))
            )
            if rng.random() < 0.5:
                g.iommu.write(off, size, value & ((1 << (8 * size)) - 1))
            else:
                g.iommu.read(off, size)
            if rng.random() < 0.1:  # scribble on guest memory the IOMMU reads
                addr = rng.randrange(0x10_0000, 0x10_8000) & ~7
                g.put_q(addr, rng.getrandbits(64))
            if rng.random() < 0.2:
                space = g.iommu.dma_space(rng.getrandbits(16))
                try:
                    if rng.random() < 0.5:
                        space.read(rng.getrandbits(rng.choice((12, 32, 48, 64))), rng.randrange(0, 9000))
                    else:
                        space.write(
                            rng.getrandbits(rng.choice((12, 24, 40))), b"\xaa" * rng.randrange(0, 9000)
                        )
                except DmaFault:
                    pass
        g.iommu.snapshot()


def test_random_tables_never_raise_anything_but_dma_faults() -> None:
    rng = random.Random(66)
    g = VtdGuest()
    g.linux_init()
    for _ in range(3000):
        addr = rng.randrange(g.TABLES, g.TABLES + 16 * 0x1000) & ~7
        g.put_q(
            addr,
            rng.getrandbits(64) if rng.random() < 0.5 else rng.getrandbits(24) << 12 | rng.getrandbits(2),
        )
        if rng.random() < 0.05:
            g.flush_context_global()
            g.flush_iotlb_global()
        try:
            g.iommu.dma_space(rng.choice((0x0018, 0x0100, rng.getrandbits(16)))).read(rng.getrandbits(39), 8)
        except DmaFault:
            pass
