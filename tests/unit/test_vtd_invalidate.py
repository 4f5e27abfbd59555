"""Caching and invalidation: a guest that edits its tables keeps the old translation until it
invalidates at a granularity that covers the change — through CCMD/IOTLB registers and through
the invalidation queue — and the registers report the actual granularity Linux checks."""

from __future__ import annotations

import pytest
from test_vtd_support import CCMD, GSTS, ICC, IVT, MIB, QI_DONE, QIE, VtdGuest, sid

from kvmpy.errors import DmaFault

DEV = sid(0, 3, 0)
OTHER = sid(0, 4, 0)  # another device, another domain
IVA, IOTLB = 0xF0, 0xF8


def setup(qi: bool, **options: object) -> tuple[VtdGuest, int, int]:
    g = VtdGuest(**options)
    pgd1, pgd2 = g.alloc(), g.alloc()
    g.set_context(DEV, pgd1, did=1)
    g.set_context(OTHER, pgd2, did=2)
    g.linux_init(qi=qi)
    assert bool(g.r32(GSTS) & QIE) == qi
    return g, pgd1, pgd2


def remap(g: VtdGuest, pgd: int, iova: int, phys: int) -> None:
    """Point an existing 4K mapping elsewhere without telling the IOMMU."""
    g.map(pgd, 3, iova, phys)


def sees(g: VtdGuest, requester: int, iova: int) -> int:
    return g.iommu.translate(requester, iova, False)


# --- helpers that issue one invalidation either way -------------------------------------
def inv_iotlb(
    g: VtdGuest, qi: bool, gran: int, did: int = 0, addr: int = 0, am: int = 0, ih: bool = False
) -> int:
    """Returns IAIG for the register interface (the queue has no such field: 0)."""
    if qi:
        lo = did << 16 | gran << 4 | 2
        hi = addr | (1 << 6 if ih else 0) | am
        assert g.submit((lo, hi)) == QI_DONE
        return 0
    if gran == 3:
        g.w64(IVA, addr | (1 << 6 if ih else 0) | am)
    g.w64(IOTLB, IVT | gran << 60 | did << 32)
    val = g.r64(IOTLB)
    assert not val & IVT
    return (val >> 57) & 3


def inv_context(g: VtdGuest, qi: bool, gran: int, did: int = 0, source: int = 0, fm: int = 0) -> int:
    if qi:
        assert g.submit((fm << 48 | source << 32 | did << 16 | gran << 4 | 1, 0)) == QI_DONE
        return 0
    g.w64(CCMD, ICC | gran << 61 | fm << 32 | source << 16 | did)
    val = g.r64(CCMD)
    assert not val & ICC
    return (val >> 59) & 3


QI = [pytest.param(False, id="register"), pytest.param(True, id="queue")]


@pytest.mark.parametrize("qi", QI)
def test_stale_translation_until_global_iotlb_invalidation(qi: bool) -> None:
    g, pgd1, _ = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    assert sees(g, DEV, 0x1000) == 0xA0_0000
    remap(g, pgd1, 0x1000, 0xB0_0000)
    assert sees(g, DEV, 0x1000) == 0xA0_0000  # cached, as on hardware
    aig = inv_iotlb(g, qi, 1)
    assert sees(g, DEV, 0x1000) == 0xB0_0000
    if not qi:
        assert aig == 1


@pytest.mark.parametrize("qi", QI)
def test_stale_unmap_until_invalidated(qi: bool) -> None:
    g, pgd1, _ = setup(qi)
    leaf = g.map(pgd1, 3, 0x1000, 0xA0_0000)
    sees(g, DEV, 0x1000)
    g.put_q(leaf, 0)  # unmap
    assert sees(g, DEV, 0x1000) == 0xA0_0000
    inv_iotlb(g, qi, 3, did=1, addr=0x1000)
    with pytest.raises(DmaFault):
        sees(g, DEV, 0x1000)


@pytest.mark.parametrize("qi", QI)
def test_domain_selective_iotlb_invalidation(qi: bool) -> None:
    g, pgd1, pgd2 = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    g.map(pgd2, 3, 0x1000, 0xA1_0000)
    sees(g, DEV, 0x1000), sees(g, OTHER, 0x1000)
    remap(g, pgd1, 0x1000, 0xB0_0000)
    remap(g, pgd2, 0x1000, 0xB1_0000)
    aig = inv_iotlb(g, qi, 2, did=2)
    assert sees(g, OTHER, 0x1000) == 0xB1_0000
    assert sees(g, DEV, 0x1000) == 0xA0_0000  # domain 1 untouched
    inv_iotlb(g, qi, 2, did=1)
    assert sees(g, DEV, 0x1000) == 0xB0_0000
    if not qi:
        assert aig == 2


@pytest.mark.parametrize("qi", QI)
def test_page_selective_invalidation_with_address_mask(qi: bool) -> None:
    g, pgd1, _ = setup(qi)
    for i in range(8):
        g.map(pgd1, 3, 0x10_0000 + i * 0x1000, 0xA0_0000 + i * 0x1000)
        sees(g, DEV, 0x10_0000 + i * 0x1000)
        remap(g, pgd1, 0x10_0000 + i * 0x1000, 0xC0_0000 + i * 0x1000)
    # AM=2: four pages from 0x104000 (low address bits below the mask are ignored)
    aig = inv_iotlb(g, qi, 3, did=1, addr=0x10_5000 & ~0xFFF, am=2)
    after = [sees(g, DEV, 0x10_0000 + i * 0x1000) for i in range(8)]
    assert after[:4] == [0xA0_0000 + i * 0x1000 for i in range(4)]
    assert after[4:] == [0xC0_0000 + i * 0x1000 for i in range(4, 8)]
    if not qi:
        assert aig == 3


@pytest.mark.parametrize("qi", QI)
def test_page_selective_is_per_domain_and_honours_ih(qi: bool) -> None:
    g, pgd1, pgd2 = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    g.map(pgd2, 3, 0x1000, 0xA1_0000)
    sees(g, DEV, 0x1000), sees(g, OTHER, 0x1000)
    remap(g, pgd1, 0x1000, 0xB0_0000)
    remap(g, pgd2, 0x1000, 0xB1_0000)
    inv_iotlb(g, qi, 3, did=2, addr=0x1000, ih=True)  # IH: only leaf entries changed
    assert sees(g, OTHER, 0x1000) == 0xB1_0000
    assert sees(g, DEV, 0x1000) == 0xA0_0000


@pytest.mark.parametrize("qi", QI)
def test_page_selective_drops_a_large_page_it_overlaps(qi: bool) -> None:
    g, pgd1, _ = setup(qi)
    pde = g.map(pgd1, 3, 0x20_0000, 0x40_0000, size=2 * MIB)
    assert sees(g, DEV, 0x20_0000 + 0x5_5000) == 0x45_5000
    g.put_q(pde, 0x60_0000 | 0x83)
    inv_iotlb(g, qi, 3, did=1, addr=0x20_0000 + 0x1F_F000)  # one 4K page inside it
    assert sees(g, DEV, 0x20_0000 + 0x5_5000) == 0x65_5000


def test_page_selective_beyond_mamv_is_done_domain_wide() -> None:
    g, pgd1, _ = setup(False)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    sees(g, DEV, 0x1000)
    remap(g, pgd1, 0x1000, 0xB0_0000)
    assert inv_iotlb(g, False, 3, did=1, addr=0, am=40 & 0x3F) == 2
    assert sees(g, DEV, 0x1000) == 0xB0_0000


def test_register_invalidation_with_invalid_granularity_reports_zero() -> None:
    g, _, _ = setup(False)
    g.w64(IOTLB, IVT | 0 << 60)
    val = g.r64(IOTLB)
    assert not val & IVT and (val >> 57) & 3 == 0
    g.w64(CCMD, ICC | 0 << 61)
    val = g.r64(CCMD)
    assert not val & ICC and (val >> 59) & 3 == 0


@pytest.mark.parametrize("qi", QI)
def test_context_cache_global(qi: bool) -> None:
    g, pgd1, pgd2 = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    g.map(pgd2, 3, 0x1000, 0xA1_0000)
    assert sees(g, DEV, 0x1000) == 0xA0_0000
    g.set_context(DEV, pgd2, did=2)  # move the device to domain 2
    inv_iotlb(g, qi, 1)  # the IOTLB alone does not reload the context entry
    assert sees(g, DEV, 0x1000) == 0xA0_0000
    caig = inv_context(g, qi, 1)
    inv_iotlb(g, qi, 1)
    assert sees(g, DEV, 0x1000) == 0xA1_0000
    if not qi:
        assert caig == 1


@pytest.mark.parametrize("qi", QI)
def test_context_cache_domain_selective(qi: bool) -> None:
    g, pgd1, pgd2 = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    g.map(pgd2, 3, 0x1000, 0xA1_0000)
    sees(g, DEV, 0x1000)
    g.set_context(DEV, pgd2, did=2)
    inv_context(g, qi, 2, did=2)  # wrong domain: DEV's cached entry (did 1) stays
    inv_iotlb(g, qi, 1)
    assert sees(g, DEV, 0x1000) == 0xA0_0000
    caig = inv_context(g, qi, 2, did=1)
    inv_iotlb(g, qi, 2, did=1)
    assert sees(g, DEV, 0x1000) == 0xA1_0000
    if not qi:
        assert caig == 2


@pytest.mark.parametrize("qi", QI)
@pytest.mark.parametrize(
    "fm,target,hit",
    [
        (0, sid(0, 3, 1), False),
        (0, sid(0, 3, 0), True),
        (3, sid(0, 3, 7), True),
        (1, sid(0, 3, 4), True),
        (1, sid(0, 3, 2), False),
    ],
)
def test_context_cache_device_selective_with_function_mask(qi: bool, fm: int, target: int, hit: bool) -> None:
    g, pgd1, pgd2 = setup(qi)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    g.map(pgd2, 3, 0x1000, 0xA1_0000)
    sees(g, DEV, 0x1000)
    g.set_context(DEV, pgd2, did=2)
    caig = inv_context(g, qi, 3, source=target, fm=fm)
    inv_iotlb(g, qi, 1)
    assert sees(g, DEV, 0x1000) == (0xA1_0000 if hit else 0xA0_0000)
    if not qi:
        assert caig == 3


def test_split_dword_writes_act_once_after_the_high_half() -> None:
    g, pgd1, _ = setup(False)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    sees(g, DEV, 0x1000)
    remap(g, pgd1, 0x1000, 0xB0_0000)
    value = IVT | 1 << 60
    g.w32(IOTLB, value & 0xFFFF_FFFF)
    assert sees(g, DEV, 0x1000) == 0xA0_0000  # nothing yet
    g.w32(IOTLB + 4, value >> 32)
    assert sees(g, DEV, 0x1000) == 0xB0_0000
    hi = g.r32(IOTLB + 4)
    assert not hi >> 31 and (hi >> 25) & 3 == 1
    # CCMD the same way
    g.w32(CCMD, 0)
    g.w32(CCMD + 4, (ICC | 1 << 61) >> 32)
    assert (g.r64(CCMD) >> 59) & 3 == 1 and not g.r64(CCMD) & ICC


def test_srtp_and_translation_toggle_flush_everything() -> None:
    g, pgd1, _ = setup(False)
    g.map(pgd1, 3, 0x1000, 0xA0_0000)
    sees(g, DEV, 0x1000)
    remap(g, pgd1, 0x1000, 0xB0_0000)
    g.set_root_pointer()
    assert sees(g, DEV, 0x1000) == 0xB0_0000


def test_invalidation_trace_events_and_counters() -> None:
    g, _, _ = setup(True)
    g.events.clear()
    inv_iotlb(g, True, 3, did=1, addr=0x4000, am=1, ih=True)
    (ev,) = [e for e in g.events_named("vtd.invalidate") if e["cache"] == "iotlb"]
    assert ev == {
        "cache": "iotlb",
        "granularity": "page",
        "via": "queue",
        "did": 1,
        "addr": 0x4000,
        "am": 1,
        "ih": True,
    }
    assert g.iommu.stats.invalidations["iotlb"] >= 2
    assert g.events_named("vtd.wait")[0]["status_write"] is True


def test_caches_are_bounded() -> None:
    from kvmpy.iommu import vtd

    g, pgd1, _ = setup(False)
    for i in range(64):
        g.map(pgd1, 3, i * 0x1000, 0xA0_0000 + i * 0x1000)
    old = vtd.IOTLB_CAPACITY
    vtd.IOTLB_CAPACITY = 16
    try:
        for i in range(64):
            assert sees(g, DEV, i * 0x1000) == 0xA0_0000 + i * 0x1000
        assert len(g.iommu._tlb4k) <= 16
    finally:
        vtd.IOTLB_CAPACITY = old


@pytest.mark.parametrize("qi", QI)
def test_large_address_mask_covers_a_whole_2m_region(qi: bool) -> None:
    g, pgd1, _ = setup(qi)
    inside = [0x40_0000 + i * 0x3_0000 for i in range(5)]
    outside = 0x60_0000
    for iova in [*inside, outside]:
        g.map(pgd1, 3, iova, 0xA0_0000 + (iova >> 4))
        sees(g, DEV, iova)
        remap(g, pgd1, iova, 0xC0_0000 + (iova >> 4))
    aig = inv_iotlb(g, qi, 3, did=1, addr=0x40_0000, am=9)  # 512 pages: 0x400000-0x5FFFFF
    assert [sees(g, DEV, iova) for iova in inside] == [0xC0_0000 + (iova >> 4) for iova in inside]
    assert sees(g, DEV, outside) == 0xA0_0000 + (outside >> 4)
    if not qi:
        assert aig == 3
