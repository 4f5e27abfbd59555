"""The invalidation queue: enabling it, IQH following IQT, the wait descriptor's status write
and completion interrupt, and what a malformed descriptor or tail does (IQE, IQER, recovery the
way Linux's qi_check_fault recovers)."""

from __future__ import annotations

import pytest
from test_vtd_support import (
    ECAP,
    FEADDR,
    FECTL,
    FEDATA,
    FSTS,
    GCMD,
    GSTS,
    ICS,
    IEADDR,
    IECTL,
    IEDATA,
    IM,
    IP,
    IQA,
    IQE,
    IQER,
    IQH,
    IQT,
    QI_DONE,
    QIE,
    VtdGuest,
)

WAIT_SW = 1 << 5
WAIT_IF = 1 << 4


def setup(**options: object) -> VtdGuest:
    g = VtdGuest(**options)
    g.linux_init(qi=True)
    g.w32(FEDATA, 0x31)
    g.w32(FEADDR, 0xFEE0_0000)
    g.w32(FECTL, 0)
    g.w32(IEDATA, 0x32)
    g.w32(IEADDR, 0xFEE0_1000)
    g.w32(IECTL, 0)
    return g


def test_enable_and_head_follows_tail() -> None:
    g = VtdGuest()
    assert g.r64(ECAP) & 2
    g.enable_qi()
    assert g.r32(GSTS) & QIE
    assert g.r64(IQA) == g.queue and g.r64(IQH) == 0
    assert g.submit() == QI_DONE
    assert g.r64(IQH) == g.r64(IQT) == 1 << 4
    assert g.submit((1 << 4 | 1, 0), (1 << 4 | 2, 0)) == QI_DONE
    assert g.r32(IQH) == 4 << 4


def test_wait_descriptor_writes_status_data_untranslated() -> None:
    g = setup()
    target = 0x30_0004
    g.put_q(target, 0)
    g.submit((0xDEAD_BEEF << 32 | WAIT_SW | 5, target), wait=False)
    assert g.q(target) == 0xDEAD_BEEF  # four bytes only
    assert g.q(target - 4) >> 32 == 0xDEAD_BEEF


def test_wait_descriptor_interrupt() -> None:
    g = setup()
    g.submit((WAIT_IF | 5, 0), wait=False)
    assert g.r32(ICS) == 1
    assert g.msi.sent == [(0xFEE0_1000, 0x32)]
    assert not g.r32(IECTL) & IP
    # IWC still set: a second completion raises no new interrupt
    g.submit((WAIT_IF | 5, 0), wait=False)
    assert len(g.msi.sent) == 1
    g.w32(ICS, 1)
    assert g.r32(ICS) == 0
    g.submit((WAIT_IF | WAIT_SW | QI_DONE << 32 | 5, g.status), wait=False)
    assert len(g.msi.sent) == 2 and g.q(g.status) == QI_DONE


def test_completion_interrupt_masked_then_unmasked() -> None:
    g = setup()
    g.w32(IECTL, IM)
    g.submit((WAIT_IF | 5, 0), wait=False)
    assert g.msi.sent == [] and g.r32(IECTL) == IM | IP
    g.w32(IECTL, 0)
    assert g.msi.sent == [(0xFEE0_1000, 0x32)] and g.r32(IECTL) == 0


def test_clearing_iwc_while_masked_clears_pending() -> None:
    g = setup()
    g.w32(IECTL, IM)
    g.submit((WAIT_IF | 5, 0), wait=False)
    g.w32(ICS, 1)
    assert not g.r32(IECTL) & IP
    g.w32(IECTL, 0)
    assert g.msi.sent == []


def test_fence_only_wait_is_accepted() -> None:
    g = setup()
    g.submit((1 << 6 | 5, 0), wait=False)
    assert not g.r32(FSTS) & IQE and g.r32(IQH) == g.r32(IQT)


@pytest.mark.parametrize(
    "desc,iqei",
    [
        ((0, 0), 3),  # type 0
        ((9, 0), 3),  # page-group response: no PRS
        ((6, 0), 3),  # PASID-based IOTLB: no scalable mode
        ((1 << 9 | 5, 0), 3),  # extended type bits
        ((1 << 4 | 1, 1), 4),  # context: qword 1 is reserved
        ((1 << 6 | 1 << 4 | 1, 0), 4),  # context: bit 6 reserved
        ((0 << 4 | 1, 0), 4),  # context: granularity 0
        ((1 << 8 | 1 << 4 | 2, 0), 4),  # IOTLB: bit 8 reserved
        ((3 << 4 | 2, 1 << 7), 4),  # IOTLB: qword 1 bit 7 reserved
        ((3 << 4 | 2, 19), 4),  # IOTLB: AM beyond MAMV
        ((1 << 7 | 5, 0), 4),  # wait: PD without page requests
        ((WAIT_SW | 5, 0x1001), 4),  # wait: status address bits 1:0 reserved
        ((1 << 5 | 4, 0), 4),  # IEC: bit 5 reserved
    ],
)
def test_malformed_descriptor_sets_iqe_and_stops(desc: tuple[int, int], iqei: int) -> None:
    g = setup()
    head = g.r32(IQH)
    status = g.submit(desc)  # the wait descriptor behind it must not run
    assert status == 0
    assert g.r32(FSTS) & IQE
    assert g.r32(IQH) == head  # IQH points at the bad descriptor
    assert g.r64(IQER) & 0xF == iqei
    assert g.msi.sent == [(0xFEE0_0000, 0x31)]  # fault event
    # more work queued while IQE is set is not fetched
    g.w32(IQT, ((g.queue_tail + 0) % 256) << 4)
    assert g.r32(IQH) == head


def test_linux_recovers_from_iqe_by_replacing_the_bad_descriptor() -> None:
    """qi_check_fault: copy the wait descriptor over the bad one, clear IQE; fetching resumes."""
    g = setup()
    head = g.r32(IQH) >> 4
    g.submit((0xF, 0))  # invalid type, then the wait descriptor at head + 1
    assert g.r32(FSTS) & IQE and g.q(g.status) == 0
    wait_slot = g.queue + 16 * (head + 1)
    g.poke(g.queue + 16 * head, g.peek(wait_slot, 16))
    g.w32(FSTS, IQE)
    assert not g.r32(FSTS) & IQE
    assert g.q(g.status) == QI_DONE
    assert g.r32(IQH) == g.r32(IQT)
    assert g.submit((1 << 4 | 2, 0)) == QI_DONE  # and the queue keeps working


def test_tail_beyond_the_queue_is_an_error() -> None:
    g = setup()
    g.w32(IQT, 300 << 4)  # queue of 256 descriptors
    assert g.r32(FSTS) & IQE and g.r64(IQER) & 0xF == 1


def test_queue_outside_ram_is_a_fetch_error() -> None:
    g = VtdGuest()
    g.w32(IQT, 0)
    g.w64(IQA, 0x7F_0000_0000)
    g.gcmd_set(QIE)
    g.w32(IQT, 1 << 4)
    assert g.r32(FSTS) & IQE and g.r64(IQER) & 0xF == 2


def test_bigger_queue_and_wraparound() -> None:
    g = VtdGuest()
    g.enable_qi(qs=1)  # two pages: 512 descriptors
    g.linux_init(qi=False)  # its two global flushes go through the queue: 4 descriptors
    for _ in range(300):
        assert g.submit((1 << 4 | 2, 0)) == QI_DONE
    assert g.queue_tail == (4 + 600) % 512
    assert g.r32(IQH) == g.r32(IQT) == g.queue_tail << 4


def test_device_tlb_and_iec_descriptors_are_accepted() -> None:
    g = setup()
    dev_tlb = (0x0003 << 32 | 3, 0x1000)
    iec = (5 << 32 | 2 << 27 | 1 << 4 | 4, 0)
    assert g.submit(dev_tlb, iec) == QI_DONE
    assert not g.r32(FSTS) & IQE
    kinds = [e["cache"] for e in g.events_named("vtd.invalidate")]
    assert "device-tlb" in kinds and "iec" in kinds


def test_disabling_qi_resets_the_head() -> None:
    g = setup()
    g.submit()
    assert g.r32(IQH)
    g.gcmd_clear(QIE)
    assert g.r32(IQH) == 0 and not g.r32(GSTS) & QIE
    g.w32(IQT, 0)
    g.gcmd_set(QIE)
    g.queue_tail = 0
    assert g.submit() == QI_DONE


def test_tail_written_before_enable_is_processed_on_enable() -> None:
    g = VtdGuest()
    q = g.alloc()
    g.put_q(q, QI_DONE << 32 | WAIT_SW | 5)
    g.put_q(q + 8, 0x30_0000)
    g.w64(IQA, q)
    g.w32(IQT, 1 << 4)
    g.w32(GCMD, QIE)
    assert g.q(0x30_0000) == QI_DONE


def test_register_invalidation_works_without_qi() -> None:
    g = VtdGuest(queued_invalidation=False)
    assert not g.r64(ECAP) & 2
    g.w32(GCMD, QIE)  # ignored: no QI
    assert not g.r32(GSTS) & QIE
    g.w64(IQA, 0x20_0000)
    assert g.r64(IQA) == 0 and g.r64(IQT) == 0  # the queue registers are reserved
    g.linux_init()
    assert g.iommu.translation_enabled
