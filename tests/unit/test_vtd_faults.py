"""Fault recording: the record format, the ring and its overflow, FPD, and the fault event MSI
with its mask and pending bit — driven the way Linux's dmar_fault handler reads and clears."""

from __future__ import annotations

import pytest
from test_vtd_support import FEADDR, FECTL, FEDATA, FSTS, IM, IP, PFO, PPF, VtdGuest, sid

from kvmpy.errors import DmaFault

DEV = sid(0, 3, 0)
MSI_ADDR, MSI_DATA = 0xFEE0_0000, 0x41


def setup(fault_records: int = 4, **options: object) -> tuple[VtdGuest, int]:
    g = VtdGuest(fault_records=fault_records, **options)
    pgd = g.alloc()
    for fn in range(8):
        g.set_context(sid(0, 3, fn), pgd)
    g.set_context(sid(0, 4, 0), pgd, fpd=True)
    g.map(pgd, 3, 0x1000, 0xB0_0000, write=False)
    g.linux_init()
    # dmar_set_interrupt: data, address, then unmask
    g.w32(FEDATA, MSI_DATA)
    g.w32(FEADDR, MSI_ADDR)
    g.w32(FECTL, 0)
    return g, pgd


def blocked_read(g: VtdGuest, requester: int, addr: int) -> None:
    with pytest.raises(DmaFault):
        g.iommu.dma_space(requester).read(addr, 4)


def decode(lo: int, hi: int) -> dict:
    """The fields Linux's dmar_fault reads: F 127, T 126, FR 103:96, SID 79:64, FI 63:12."""
    return {
        "F": hi >> 63,
        "T": (hi >> 62) & 1,
        "FR": (hi >> 32) & 0xFF,
        "SID": hi & 0xFFFF,
        "FI": lo & ~0xFFF,
    }


def test_record_contents_for_read_and_write() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5123)
    with pytest.raises(DmaFault):
        g.iommu.dma_space(sid(0, 3, 1)).write(0x1004, b"no")
    recs = [decode(*r) for r in g.fault_records()]
    assert recs[0] == {"F": 1, "T": 1, "FR": 6, "SID": DEV, "FI": 0x5000}
    assert recs[1] == {"F": 1, "T": 0, "FR": 5, "SID": sid(0, 3, 1), "FI": 0x1000}
    assert recs[2]["F"] == 0
    fsts = g.r32(FSTS)
    assert fsts & PPF and not fsts & PFO and (fsts >> 8) & 0xFF == 0


def test_top_dword_read_like_linux() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5000)
    fro = 0x220
    top = g.r32(fro + 12)
    assert top >> 31 == 1 and (top >> 30) & 1 == 1 and top & 0xFF == 6
    assert g.r32(fro + 8) == DEV
    assert g.r64(fro) == 0x5000


def test_fault_event_msi_sent_once_per_condition() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5000)
    assert g.msi.sent == [(MSI_ADDR, MSI_DATA)]
    assert not g.r32(FECTL) & IP
    blocked_read(g, sid(0, 3, 1), 0x6000)  # PPF already set: recorded, no new interrupt
    assert len(g.msi.sent) == 1
    assert sum(1 for r in g.fault_records() if r[1] >> 63) == 2


def linux_dmar_fault(g: VtdGuest) -> list[dict]:
    """dmar_fault(): walk records from FRI until F is clear, clear each, then FSTS."""
    fsts = g.r32(FSTS)
    out = []
    if fsts & PPF:
        i = (fsts >> 8) & 0xFF
        cap = g.r64(0x08)
        n = ((cap >> 40) & 0xFF) + 1
        for _ in range(n):
            off = 0x220 + 16 * i
            top = g.r32(off + 12)
            if not top >> 31:
                break
            out.append(decode(g.r64(off), g.r32(off + 12) << 32 | g.r32(off + 8)))
            g.w32(off + 12, 1 << 31)
            i = (i + 1) % n
    g.w32(FSTS, PFO | PPF | 1 << 7)
    return out


def test_ring_wraps_and_fri_points_at_the_first_pending() -> None:
    g, _ = setup(fault_records=4)
    for fn in range(3):
        blocked_read(g, sid(0, 3, fn), 0x5000)
    assert [r["SID"] for r in linux_dmar_fault(g)] == [sid(0, 3, fn) for fn in range(3)]
    assert not g.r32(FSTS) & PPF
    for fn in range(3, 6):  # slots 3, 0, 1
        blocked_read(g, sid(0, 3, fn), 0x5000)
    assert (g.r32(FSTS) >> 8) & 0xFF == 3
    assert [r["SID"] for r in linux_dmar_fault(g)] == [sid(0, 3, fn) for fn in range(3, 6)]
    assert len(g.msi.sent) == 2


def test_overflow_sets_pfo_and_drops() -> None:
    g, _ = setup(fault_records=2)
    for fn in range(4):
        blocked_read(g, sid(0, 3, fn), 0x5000)
    fsts = g.r32(FSTS)
    assert fsts & PFO and fsts & PPF
    assert [decode(*r)["SID"] for r in g.fault_records()] == [sid(0, 3, 0), sid(0, 3, 1)]
    assert [e["outcome"] for e in g.events_named("vtd.fault")] == [
        "recorded",
        "recorded",
        "overflow",
        "overflow",
    ]
    # while PFO is set, even a free slot is not used
    g.w32(0x220 + 12, 1 << 31)
    assert g.r32(FSTS) & PFO
    blocked_read(g, sid(0, 3, 7), 0x5000)
    assert not g.fault_records()[0][1] >> 63
    # software clears PFO: recording resumes
    g.w32(FSTS, PFO)
    assert not g.r32(FSTS) & PFO
    blocked_read(g, sid(0, 3, 7), 0x5000)
    assert sum(1 for r in g.fault_records() if r[1] >> 63) == 2


def test_clearing_f_recomputes_ppf() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5000)
    blocked_read(g, sid(0, 3, 1), 0x5000)
    g.w64(0x220 + 8, 1 << 63)  # clear record 0 with a quadword write
    assert g.r32(FSTS) & PPF
    g.w32(0x230 + 12, 1 << 31)  # record 1 via the top dword
    assert not g.r32(FSTS) & PPF
    g.w32(0x220 + 12, 0x7FFF_FFFF)  # writing 0 to F and junk elsewhere changes nothing
    assert g.fault_records()[0] == (0x5000, 0x4000_0006_0000_0000 | DEV)


def test_exact_repeats_collapse_but_different_faults_do_not() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5000)
    blocked_read(g, DEV, 0x5FFF)  # same page, same reason, same type
    blocked_read(g, DEV, 0x6000)  # another page
    with pytest.raises(DmaFault):
        g.iommu.dma_space(DEV).write(0x1000, b"x")  # another reason
    recs = [decode(*r) for r in g.fault_records() if r[1] >> 63]
    assert [(r["FI"], r["FR"]) for r in recs] == [(0x5000, 6), (0x6000, 6), (0x1000, 5)]
    assert g.events_named("vtd.fault")[1]["outcome"] == "collapsed"


def test_fpd_suppresses_qualified_faults() -> None:
    g, pgd = setup()
    fpd_dev = sid(0, 4, 0)
    blocked_read(g, fpd_dev, 0x5000)  # still blocked...
    assert not any(r[1] >> 63 for r in g.fault_records())  # ...but not recorded
    assert not g.r32(FSTS) & PPF and g.msi.sent == []
    assert g.events_named("vtd.fault")[0]["outcome"] == "suppressed"


def test_fpd_of_a_not_present_context_entry_suppresses_too() -> None:
    g, _ = setup()
    g.set_context(sid(0, 5, 0), 0, present=False, fpd=True)
    blocked_read(g, sid(0, 5, 0), 0)
    assert not any(r[1] >> 63 for r in g.fault_records())


def test_fpd_does_not_hide_faults_found_before_the_context_entry() -> None:
    g, _ = setup()
    g.set_context(sid(0, 6, 0), g.alloc(), fpd=True, hi_extra=1 << 30)  # reserved bit: 0xB
    blocked_read(g, sid(0, 6, 0), 0)
    recs = [decode(*r) for r in g.fault_records() if r[1] >> 63]
    assert [r["FR"] for r in recs] == [0xB]


def test_masked_event_stays_pending_until_unmasked() -> None:
    g, _ = setup()
    g.w32(FECTL, IM)
    blocked_read(g, DEV, 0x5000)
    assert g.msi.sent == [] and g.r32(FECTL) == IM | IP
    g.w32(FECTL, IM | IP)  # IP is read-only
    assert g.msi.sent == []
    g.w32(FECTL, 0)
    assert g.msi.sent == [(MSI_ADDR, MSI_DATA)] and g.r32(FECTL) == 0
    g.w32(FECTL, 0)
    assert len(g.msi.sent) == 1


def test_servicing_the_fault_while_masked_clears_pending() -> None:
    g, _ = setup()
    g.w32(FECTL, IM)
    blocked_read(g, DEV, 0x5000)
    assert g.r32(FECTL) & IP
    linux_dmar_fault(g)
    assert not g.r32(FECTL) & IP
    g.w32(FECTL, 0)
    assert g.msi.sent == []


def test_new_fault_after_service_raises_a_new_event() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5000)
    linux_dmar_fault(g)
    blocked_read(g, DEV, 0x5000)
    assert len(g.msi.sent) == 2


def test_event_registers_mask_their_reserved_bits() -> None:
    g, _ = setup()
    g.w32(FEDATA, 0xFFFF_FFFF)
    g.w32(FEADDR, 0xFFFF_FFFF)
    g.w32(0x44, 0xFFFF_FFFF)  # FEUADDR: reserved without EIM
    assert g.r32(FEDATA) == 0xFFFF and g.r32(FEADDR) == 0xFFFF_FFFC and g.r32(0x44) == 0
    g.w32(FECTL, 0x3FFF_FFFF)
    assert g.r32(FECTL) == 0


def test_fault_event_trace_fields() -> None:
    g, _ = setup()
    blocked_read(g, DEV, 0x5040)
    (ev,) = g.events_named("vtd.fault")
    assert ev["sid"] == DEV and ev["bdf"] == "00:03.0" and ev["addr"] == 0x5040
    assert ev["write"] is False and ev["reason"] == 6 and "read" in ev["text"]
    assert g.iommu.stats.faults == 1
