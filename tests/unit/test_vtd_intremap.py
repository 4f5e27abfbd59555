"""Interrupt remapping driven the way Linux's irq_remapping.c drives it: IRTA + SIRTP, a global
IEC flush through the queue, IRE (CFI left clear), IRTEs in guest memory and messages through
the per-requester MsiSender. IRTEs and messages are built here from raw bit positions, so the
tests pin the formats rather than echo the model."""

from __future__ import annotations

import random
import struct

import pytest
from test_vtd_support import FEADDR, FECTL, FEDATA, FSTS, GCMD, GSTS, IRTA, PPF, QI_DONE, VtdGuest, sid

from kvmpy.errors import UsageError
from kvmpy.hw.dma import BytearrayDmaSpace
from kvmpy.iommu import IOAPIC_SOURCE_ID, Dmar, IntelIommu, irta, irte, remappable_msi
from kvmpy.options import parse_iommu

ECAP = 0x10
IRE, SIRTP, CFI = 1 << 25, 1 << 24, 1 << 23
IRT = 0x90_0000  # 1 MiB for 65536 entries, above the page-table pool
DEV = sid(0, 3, 0)
FEE = 0xFEE0_0000


# -- raw formats (VT-d spec 9.10 and 5.1.2) -----------------------------------------------------
def entry(
    vector: int,
    dest: int = 0,
    *,
    p: int = 1,
    fpd: int = 0,
    dm: int = 0,
    rh: int = 0,
    tm: int = 0,
    dlm: int = 0,
    sid_: int = 0,
    sq: int = 0,
    svt: int = 0,
    x2apic: bool = False,
    lo_extra: int = 0,
    hi_extra: int = 0,
) -> bytes:
    """P 0, FPD 1, DM 2, RH 3, TM 4, DLM 7:5, V 23:16, DST 63:32 (xAPIC: 47:40); SID 79:64,
    SQ 81:80, SVT 83:82."""
    dst = dest if x2apic else dest << 8
    lo = p | fpd << 1 | dm << 2 | rh << 3 | tm << 4 | dlm << 5 | vector << 16 | dst << 32 | lo_extra
    hi = sid_ | sq << 16 | svt << 18 | hi_extra
    return struct.pack("<QQ", lo, hi)


def msi(handle: int, *, shv: bool = False, hi: int = 0) -> int:
    """Remappable address: 0xFEE, handle[14:0] at 19:5, bit 4 format, bit 3 SHV, bit 2 handle[15]."""
    return hi << 32 | FEE | (handle & 0x7FFF) << 5 | 1 << 4 | int(shv) << 3 | (handle >> 15) << 2


class IrGuest(VtdGuest):
    """A guest kernel with interrupt remapping set up as intel_setup_irq_remapping +
    iommu_enable_irq_remapping do it."""

    def __init__(self, *, s: int = 0xF, eime: bool = False, cfi: bool = False, **options: object) -> None:
        self.changes = 0
        options.setdefault("intremap", True)
        super().__init__(**options)
        self.iommu.on_irte_change = self._changed
        self.enable_qi()
        self.w64(IRTA, IRT | int(eime) << 11 | s)
        self.w32(GCMD, self.gcmd | SIRTP)
        assert self.r32(GSTS) & SIRTP  # IRTPS
        self.flush_iec()
        self.gcmd_set(IRE)
        if cfi:
            self.gcmd_set(CFI)
        self.w32(FECTL, 0)  # fault events unmasked, to FEE00000 vector 0x40
        self.w32(FEDATA, 0x40)
        self.w32(FEADDR, FEE)
        self.msi.sent.clear()
        self.events.clear()

    def _changed(self) -> None:
        self.changes += 1

    def put_irte(self, index: int, raw: bytes) -> None:
        self.poke(IRT + 16 * index, raw)

    def flush_iec(self, index: int | None = None, im: int = 0) -> None:
        """qi_global_iec / qi_flush_iec: type 4, G bit 4 (1 = index), IM 31:27, IIDX 47:32."""
        desc = 4 if index is None else 4 | 1 << 4 | im << 27 | index << 32
        assert self.submit((desc, 0)) == QI_DONE

    def send(self, address: int, data: int = 0, requester: int = DEV) -> list[tuple[int, int]]:
        """Send through the requester's MsiSender; what reached the machine (fault events aside)."""
        self.msi.sent.clear()
        self.iommu.msi_sender(requester).send(address, data)
        return [m for m in self.msi.sent if m != (FEE, 0x40)]

    def ir_faults(self) -> list[dict]:
        return self.events_named("vtd.ir-fault")

    def last_fault(self) -> tuple[int, int, int, int]:
        """(index, sid, reason, T) of the one recorded fault, as Linux decodes the FRCD."""
        recs = [(lo, hi) for lo, hi in self.fault_records() if hi >> 63]
        assert len(recs) == 1, recs
        lo, hi = recs[0]
        assert lo & 0xFFFF_FFFF_FFFF == 0  # FI bits 47:12 clear for interrupt faults
        return lo >> 48, hi & 0xFFFF, (hi >> 32) & 0xFF, (hi >> 62) & 1


# -- capabilities and registers ------------------------------------------------------------------
def test_ecap_with_intremap_matches_qemu() -> None:
    plain = VtdGuest()
    g = VtdGuest(intremap=True)
    x2 = VtdGuest(intremap=True, eim=True)
    assert g.r64(ECAP) == 0xF00F4A  # QI | IR | PT | IRO 0xF | MHMV 0xF
    assert x2.r64(ECAP) == 0xF00F5A  # QEMU's value with eim=on
    assert (g.r64(ECAP) >> 3) & 1 == 1 and (g.r64(ECAP) >> 4) & 1 == 0 and (g.r64(ECAP) >> 20) & 0xF == 0xF
    assert g.r64(0x08) == plain.r64(0x08) == x2.r64(0x08)  # CAP unaffected
    assert plain.r64(ECAP) & (1 << 3 | 1 << 4) == 0


def test_intremap_needs_qi_and_eim_needs_intremap() -> None:
    mem = BytearrayDmaSpace(0x1000)
    with pytest.raises(ValueError, match="queued invalidation"):
        IntelIommu(mem, object(), intremap=True, queued_invalidation=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eim"):
        IntelIommu(mem, object(), eim=True)  # type: ignore[arg-type]


def test_irta_fields_and_eime_only_with_eim() -> None:
    g = VtdGuest(intremap=True)
    g.w64(IRTA, (1 << 64) - 1)
    assert g.r64(IRTA) == 0x7F_FFFF_F00F  # address 38:12 and S; EIME (bit 11) reserved without EIM
    x2 = VtdGuest(intremap=True, eim=True)
    x2.w64(IRTA, (1 << 64) - 1)
    assert x2.r64(IRTA) == 0x7F_FFFF_F80F
    g.w32(IRTA, 0x1234_5007)
    g.w32(IRTA + 4, 0x12)
    assert g.r64(IRTA) == 0x12_1234_5007
    # FEUADDR / IEUADDR carry x2APIC destination bits only with EIM
    g.w32(0x44, 0xFFFF_FFFF)
    x2.w32(0x44, 0xFFFF_FFFF)
    assert g.r32(0x44) == 0 and x2.r32(0x44) == 0xFFFF_FFFF


def test_ir_commands_are_ignored_without_intremap() -> None:
    g = VtdGuest()
    g.w32(GCMD, IRE | SIRTP | CFI)
    assert g.r32(GSTS) == 0
    assert g.r64(IRTA) == 0  # reserved
    g.iommu.msi_sender(DEV).send(msi(3), 0)
    assert g.msi.sent == [(msi(3), 0)]


def test_linux_enable_sequence() -> None:
    g = IrGuest()
    assert g.r32(GSTS) & (IRE | SIRTP) == IRE | SIRTP and not g.r32(GSTS) & CFI
    assert g.iommu.interrupt_remapping_enabled and not g.iommu.compatibility_format_allowed
    # SIRTP, the global IEC flush and IRE each told the machine its routes may be stale
    assert g.changes == 3
    g.gcmd_set(CFI)
    assert g.r32(GSTS) & CFI and g.changes == 4
    g.gcmd_clear(IRE)
    assert not g.r32(GSTS) & IRE and g.r32(GSTS) & CFI and g.changes == 5


# -- remapping -----------------------------------------------------------------------------------
def test_disabled_passes_every_message_unchanged() -> None:
    g = VtdGuest(intremap=True)
    assert g.iommu.translate_msi(DEV, msi(5), 0) == (msi(5), 0)
    g.iommu.msi_sender(DEV).send(FEE | 1 << 12, 0x4031)
    g.iommu.msi_sender(DEV).send(msi(5), 0)
    assert g.msi.sent == [(FEE | 1 << 12, 0x4031), (msi(5), 0)]


def test_msi_with_subhandle_is_remapped() -> None:
    """Linux's fill_msi_msg: SHV = 1, subhandle in data[15:0]; the index is handle + subhandle."""
    g = IrGuest()
    g.put_irte(10, entry(0x41, dest=3))
    g.put_irte(13, entry(0x43, dest=2, dm=1, rh=1, dlm=1))
    assert g.send(msi(10, shv=True), 0) == [(FEE | 3 << 12, 0x4041)]
    assert g.send(msi(10, shv=True), 3) == [(FEE | 2 << 12 | 1 << 3 | 1 << 2, 0x4000 | 1 << 8 | 0x43)]
    assert g.iommu.stats.interrupts == 2


def test_without_shv_the_data_is_ignored() -> None:
    """An IOAPIC RTE's vector and trigger travel in the data; only the handle selects."""
    g = IrGuest()
    g.put_irte(7, entry(0x55, dest=1))
    assert g.send(msi(7), 0x8000 | 0x21) == [(FEE | 1 << 12, 0x4055)]


def test_level_triggered_entry() -> None:
    g = IrGuest()
    g.put_irte(1, entry(0x66, dest=0, tm=1))
    ((address, data),) = g.send(msi(1, shv=True))
    assert data == 0x66 | 1 << 14 | 1 << 15  # assert + level
    assert address == FEE


def test_handle_bit_15_lives_in_address_bit_2() -> None:
    g = IrGuest()
    g.put_irte(0x8005, entry(0x77, dest=4))
    g.put_irte(0x0005, entry(0x11, dest=1))
    assert msi(0x8005) & 0xFFFF_FFFF == FEE | 5 << 5 | 1 << 4 | 1 << 2
    assert g.send(msi(0x8005, shv=True)) == [(FEE | 4 << 12, 0x4077)]
    assert g.send(msi(0x0005, shv=True)) == [(FEE | 1 << 12, 0x4011)]
    # the subhandle carries into bit 15 too
    assert g.send(msi(0x7FFF, shv=True), 0x8005 - 0x7FFF) == [(FEE | 4 << 12, 0x4077)]


def test_x2apic_destination_with_eime() -> None:
    g = IrGuest(eime=True, intremap=True, eim=True)
    g.put_irte(2, entry(0x30, dest=0x12345, x2apic=True))
    assert g.send(msi(2, shv=True)) == [(0x123 << 40 | FEE | 0x45 << 12, 0x4030)]
    # with EIME, compatibility format is blocked even with CFI set
    g.gcmd_set(CFI)
    assert g.send(FEE | 1 << 12, 0x30) == []
    assert g.last_fault() == (0, DEV, 0x25, 0)


def test_ioapic_rte_message_and_source_id() -> None:
    """The IOAPIC's remappable RTE (bit 48 format, 63:49 handle[14:0], bit 11 handle[15]) becomes
    address 0xFEE00000 | RTE[63:48] << 4 | RTE[11] << 2; Linux sets SVT=1 SQ=0 SID=0xFF00."""
    assert IOAPIC_SOURCE_ID == 0xFF00
    g = IrGuest()
    g.put_irte(0x8003, entry(0x39, dest=1, svt=1, sid_=0xFF00))
    rte = 0x8003 << 49 | 1 << 48 | 1 << 11 | 1 << 15 | 3  # level, vector = pin 3 (Linux's virtual vector)
    address = FEE | ((rte >> 48) & 0xFFFF) << 4 | ((rte >> 11) & 1) << 2
    data = (rte & 0xFF) | ((rte >> 15) & 1) << 15
    assert address == msi(0x8003)
    assert g.send(address, data, requester=IOAPIC_SOURCE_ID) == [(FEE | 1 << 12, 0x4039)]
    assert g.send(address, data, requester=DEV) == []
    assert g.last_fault() == (0x8003, DEV, 0x26, 0)
    assert g.iommu.translate_msi(IOAPIC_SOURCE_ID, address, data) == (FEE | 1 << 12, 0x4039)


# -- compatibility format ------------------------------------------------------------------------
def test_compatibility_format_needs_cfi() -> None:
    g = IrGuest()
    compat = (FEE | 2 << 12, 0x4035)
    assert g.send(*compat) == []
    assert g.last_fault() == (0, DEV, 0x25, 0)
    assert g.iommu.translate_msi(DEV, *compat) is None
    g.gcmd_set(CFI)
    assert g.send(*compat) == [compat]
    assert g.iommu.translate_msi(DEV, *compat) == compat


# -- faults --------------------------------------------------------------------------------------
def test_fault_record_event_and_trace() -> None:
    g = IrGuest(s=0)  # two entries
    assert g.send(msi(9, shv=True)) == []
    assert g.last_fault() == (9, DEV, 0x21, 0)  # index beyond the table; T = 0
    assert g.r32(FSTS) & PPF
    assert (FEE, 0x40) in g.msi.sent  # the fault event
    (ev,) = g.ir_faults()
    assert ev["reason"] == 0x21 and ev["index"] == 9 and ev["sid"] == DEV and ev["outcome"] == "recorded"
    assert ev["bdf"] == "00:03.0" and ev["address"] == msi(9, shv=True)
    rec = g.iommu.faults.pending(g.iommu.state)[0]
    assert rec.interrupt and rec.index == 9 and rec.reason == 0x21


@pytest.mark.parametrize(
    "address,data",
    [
        (msi(1, shv=True, hi=1), 0),  # address bits 63:32
        (msi(1, shv=True) & ~0xFFF0_0000 | 0xFED0_0000, 0),  # not 0xFEE
        (msi(1, shv=True), 0x1_0000),  # data 31:16 with SHV
    ],
)
def test_reserved_request_fields_fault_0x20(address: int, data: int) -> None:
    g = IrGuest()
    g.put_irte(1, entry(0x41))
    assert g.send(address, data) == []
    assert g.last_fault() == (0, DEV, 0x20, 0)


def test_not_present_faults_0x22() -> None:
    g = IrGuest()
    g.put_irte(4, entry(0x41, p=0))
    assert g.send(msi(4, shv=True)) == []
    assert g.last_fault() == (4, DEV, 0x22, 0)


def test_table_outside_memory_faults_0x23() -> None:
    g = VtdGuest(intremap=True, mem_size=16 << 20)
    g.enable_qi()
    g.w64(IRTA, 0x40_0000_0000 | 0xF)  # 256 GiB: no memory there
    g.w32(GCMD, g.gcmd | SIRTP)
    g.gcmd_set(IRE)
    g.iommu.msi_sender(DEV).send(msi(6, shv=True), 0)
    assert g.msi.sent == []
    recs = [(lo, hi) for lo, hi in g.fault_records() if hi >> 63]
    assert [(lo >> 48, (hi >> 32) & 0xFF) for lo, hi in recs] == [(6, 0x23)]


@pytest.mark.parametrize(
    "raw",
    [
        entry(0x41, lo_extra=1 << 12),  # bits 14:12
        entry(0x41, lo_extra=1 << 15),  # IM = posted format, not offered
        entry(0x41, lo_extra=1 << 24),  # bits 31:24
        entry(0x41, lo_extra=1 << 32),  # xAPIC DST bits 39:32
        entry(0x41, lo_extra=1 << 48),  # xAPIC DST bits 63:48
        entry(0x41, hi_extra=1 << 20),  # bits 127:84
        entry(0x41, dlm=3),  # reserved delivery mode
        entry(0x41, dlm=6),
        entry(0x41, svt=3),  # reserved SVT
    ],
)
def test_reserved_irte_bits_fault_0x24(raw: bytes) -> None:
    g = IrGuest()
    g.put_irte(8, raw)
    assert g.send(msi(8, shv=True)) == []
    assert g.last_fault() == (8, DEV, 0x24, 0)


def test_x2apic_destination_bits_are_not_reserved_with_eime() -> None:
    g = IrGuest(eime=True, intremap=True, eim=True)
    g.put_irte(8, entry(0x41, lo_extra=1 << 48 | 1 << 32))
    assert g.send(msi(8, shv=True)) == [(1 << 48 | FEE | 1 << 12, 0x4041)]


@pytest.mark.parametrize(
    "raw,reason",
    [
        (entry(0, p=0, fpd=1), 0x22),
        (entry(0x41, fpd=1, lo_extra=1 << 24), 0x24),
        (entry(0x41, fpd=1, svt=1, sid_=0x99), 0x26),
    ],
)
def test_fpd_suppresses_qualified_faults(raw: bytes, reason: int) -> None:
    g = IrGuest()
    g.put_irte(3, raw)
    assert g.send(msi(3, shv=True)) == []
    assert not g.r32(FSTS) & PPF and not any(hi >> 63 for _, hi in g.fault_records())
    (ev,) = g.ir_faults()
    assert ev["outcome"] == "suppressed" and ev["reason"] == reason


def test_fpd_does_not_suppress_index_beyond_table() -> None:
    g = IrGuest(s=0)
    g.put_irte(1, entry(0x41, fpd=1))
    assert g.send(msi(1, shv=True), 1) == []  # index 2, outside a 2-entry table
    assert g.last_fault() == (2, DEV, 0x21, 0)


def test_repeated_fault_is_collapsed() -> None:
    g = IrGuest()
    g.send(msi(4, shv=True))
    g.send(msi(4, shv=True))
    assert [e["outcome"] for e in g.ir_faults()] == ["recorded", "collapsed"]


# -- source-id verification ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "sq,ok,bad",
    [
        (0, [sid(0, 3, 0)], [sid(0, 3, 1), sid(0, 3, 4)]),
        (1, [sid(0, 3, 0), sid(0, 3, 4)], [sid(0, 3, 1), sid(0, 3, 2)]),  # ignore bit 2
        (2, [sid(0, 3, 0), sid(0, 3, 2), sid(0, 3, 6)], [sid(0, 3, 1)]),  # ignore bits 2:1
        (3, [sid(0, 3, f) for f in range(8)], [sid(0, 4, 0), sid(1, 3, 0)]),  # ignore the function
    ],
)
def test_svt1_requester_id_with_sq_mask(sq: int, ok: list[int], bad: list[int]) -> None:
    g = IrGuest()
    g.put_irte(5, entry(0x41, svt=1, sq=sq, sid_=sid(0, 3, 0)))
    for r in ok:
        assert g.send(msi(5, shv=True), requester=r) == [(FEE, 0x4041)], hex(r)
    for r in bad:
        assert g.send(msi(5, shv=True), requester=r) == [], hex(r)
        assert g.ir_faults()[-1]["reason"] == 0x26


def test_svt2_bus_range_start_in_high_byte() -> None:
    """Linux's set_irte_verify_bus writes SID = start_bus << 8 | end_bus."""
    g = IrGuest()
    g.put_irte(5, entry(0x41, svt=2, sid_=2 << 8 | 4))
    for bus in (2, 3, 4):
        assert g.send(msi(5, shv=True), requester=sid(bus, 7, 1)) == [(FEE, 0x4041)]
    for bus in (1, 5):
        assert g.send(msi(5, shv=True), requester=sid(bus, 0, 0)) == []
    assert {e["reason"] for e in g.ir_faults()} == {0x26}


def test_translate_msi_without_requester_skips_verification() -> None:
    g = IrGuest()
    g.put_irte(5, entry(0x41, svt=1, sid_=0x1234))
    assert g.iommu.translate_msi(None, msi(5, shv=True), 0) == (FEE, 0x4041)
    assert g.iommu.translate_msi(DEV, msi(5, shv=True), 0) is None
    assert g.ir_faults() == []  # computing a route records nothing...
    assert g.iommu.translate_msi(DEV, msi(5, shv=True), 0, record_fault=True) is None
    assert g.last_fault() == (5, DEV, 0x26, 0)  # ...unless asked


# -- the interrupt-entry cache -------------------------------------------------------------------
def test_edited_entry_needs_index_invalidation() -> None:
    g = IrGuest()
    g.put_irte(20, entry(0x41, dest=1))
    assert g.send(msi(20, shv=True)) == [(FEE | 1 << 12, 0x4041)]
    g.put_irte(20, entry(0x42, dest=2))  # modify_irte without qi_flush_iec
    assert g.send(msi(20, shv=True)) == [(FEE | 1 << 12, 0x4041)]  # the cached entry
    changes = g.changes
    g.flush_iec(21)  # another index: no effect
    assert g.send(msi(20, shv=True)) == [(FEE | 1 << 12, 0x4041)]
    g.flush_iec(20)
    assert g.send(msi(20, shv=True)) == [(FEE | 2 << 12, 0x4042)]
    assert g.changes == changes + 2
    assert [e["granularity"] for e in g.events_named("vtd.invalidate")] == ["index", "index"]


def test_index_mask_and_global_invalidation() -> None:
    g = IrGuest()
    for i in range(32, 40):
        g.put_irte(i, entry(0x41))
        g.send(msi(i, shv=True))
    reads = g.iommu.remapper.reads
    for i in range(32, 40):
        g.put_irte(i, entry(0x50 + i - 32))
    g.flush_iec(36, im=2)  # clear_entries: 2^IM entries from the aligned index 36
    got = [g.send(msi(i, shv=True))[0][1] & 0xFF for i in range(32, 40)]
    assert got == [0x41] * 4 + [0x54, 0x55, 0x56, 0x57]
    assert g.iommu.remapper.reads == reads + 4
    g.flush_iec()
    assert [g.send(msi(i, shv=True))[0][1] & 0xFF for i in range(32, 40)] == list(range(0x50, 0x58))


def test_not_present_entries_are_not_cached() -> None:
    g = IrGuest()
    assert g.send(msi(30, shv=True)) == []
    g.put_irte(30, entry(0x41))  # a newly allocated entry needs no invalidation
    assert g.send(msi(30, shv=True)) == [(FEE, 0x4041)]


def test_sirtp_invalidates_and_switches_tables() -> None:
    g = IrGuest()
    g.put_irte(1, entry(0x41))
    g.send(msi(1, shv=True))
    g.poke(IRT + 0x10_0000 + 16, entry(0x99))
    g.w64(IRTA, IRT + 0x10_0000 | 0xF)
    assert g.send(msi(1, shv=True)) == [(FEE, 0x4041)]  # IRTA alone changes nothing
    g.w32(GCMD, g.gcmd | SIRTP)
    assert g.send(msi(1, shv=True)) == [(FEE, 0x4099)]


# -- state ---------------------------------------------------------------------------------------
def test_snapshot_restore_keeps_remapping_state() -> None:
    g = IrGuest(s=3)
    g.put_irte(3, entry(0x41))
    g.send(msi(3, shv=True))
    snap = g.iommu.snapshot()
    assert (snap.irt_base, snap.irt_entries, snap.irt_eime) == (IRT, 16, False)
    g.put_irte(3, entry(0x42))  # not invalidated: the running unit keeps 0x41
    assert g.send(msi(3, shv=True)) == [(FEE, 0x4041)]
    g.iommu.reset()
    assert not g.iommu.interrupt_remapping_enabled and g.r64(IRTA) == 0
    assert g.send(msi(3, shv=True)) == [(msi(3, shv=True), 0)]
    changes = g.changes
    other = IntelIommu(g.mem, g.msi, intremap=True)
    other.restore(snap)
    g.iommu.restore(snap)
    assert g.changes == changes + 1  # routes must be recomputed after a restore
    for unit in (g.iommu, other):
        assert unit.interrupt_remapping_enabled
        assert unit.translate_msi(DEV, msi(3, shv=True), 0) == (FEE, 0x4042)  # cache was dropped
        assert unit.translate_msi(DEV, msi(16, shv=True), 0) is None  # 16 entries latched


def test_msi_sender_is_one_object_per_requester() -> None:
    g = IrGuest()
    assert g.iommu.msi_sender(DEV) is g.iommu.msi_sender(DEV)
    assert g.iommu.msi_sender(DEV) is not g.iommu.msi_sender(IOAPIC_SOURCE_ID)
    assert repr(g.iommu.msi_sender(IOAPIC_SOURCE_ID)) == "<VtdMsiSender ff:00.0>"


def test_model_builders_match_the_raw_formats() -> None:
    assert irte(
        0x41,
        3,
        fpd=True,
        level=True,
        logical=True,
        redirection_hint=True,
        delivery_mode=1,
        sid=0xFF00,
        sq=2,
        svt=1,
    ) == entry(0x41, 3, fpd=1, tm=1, dm=1, rh=1, dlm=1, sid_=0xFF00, sq=2, svt=1)
    assert irte(0x30, 0x12345, x2apic=True) == entry(0x30, 0x12345, x2apic=True)
    assert remappable_msi(0x8005, subhandle=7) == (msi(0x8005, shv=True), 7)
    assert remappable_msi(9) == (msi(9), 0)
    assert irta(IRT | 0x123, 0xF, eime=True) == IRT | 1 << 11 | 0xF


def test_random_tables_and_messages_never_raise() -> None:
    rng = random.Random(42)
    g = IrGuest(s=5, cfi=rng.random() < 0.5)
    for _ in range(3000):
        g.put_q(
            IRT + 8 * rng.randrange(0, 2 * 64),
            rng.getrandbits(64) if rng.random() < 0.5 else rng.getrandbits(20),
        )
        if rng.random() < 0.05:
            g.flush_iec(None if rng.random() < 0.5 else rng.randrange(64), rng.randrange(4))
        address = rng.choice(
            (msi(rng.randrange(80), shv=rng.random() < 0.5), rng.getrandbits(64), FEE | rng.getrandbits(20))
        )
        g.iommu.msi_sender(rng.getrandbits(16)).send(address, rng.getrandbits(32))
        g.iommu.translate_msi(rng.choice((None, rng.getrandbits(16))), address, rng.getrandbits(32))
        if rng.random() < 0.02:
            for i in range(4):
                g.w64(0x228 + 16 * i, 1 << 63)  # software services the fault records
            g.w32(FSTS, 0x7F)


# -- ACPI and options ----------------------------------------------------------------------------
def test_dmar_flag_and_ioapic_scope() -> None:
    on = Dmar.for_unit(IntelIommu(BytearrayDmaSpace(16), object(), intremap=True), ioapic_id=2).to_bytes()  # type: ignore[arg-type]
    off = Dmar.for_unit(IntelIommu(BytearrayDmaSpace(16), object()), ioapic_id=2).to_bytes()  # type: ignore[arg-type]
    assert on[37] == 0x01  # INTR_REMAP; X2APIC_OPT_OUT clear, as QEMU's build_dmar_q35
    assert off[37] == 0x00
    assert sum(on) & 0xFF == 0
    # DRHD at 48 (INCLUDE_PCI_ALL), then the IOAPIC scope: type 3, length 8, enumeration id =
    # the MADT IOAPIC id, start bus 0xFF, path (00, 0) -> Linux's source id 0xFF00
    assert on[52] == 1
    assert on[64:72] == bytes([3, 8, 0, 0, 2, 0xFF, 0, 0])
    bus, dev, fn = on[69], on[70], on[71]
    assert bus << 8 | dev << 3 | fn == IOAPIC_SOURCE_ID


def test_iommu_option_intremap() -> None:
    assert parse_iommu("vtd").intremap is True
    assert parse_iommu("vtd,intremap=off").intremap is False
    assert parse_iommu("vtd,qi=off").intremap is False  # IR needs QI: off by default then
    assert parse_iommu("vtd,qi=off,intremap=off").queued_invalidation is False
    with pytest.raises(UsageError, match="intremap=on needs queued invalidation"):
        parse_iommu("vtd,qi=off,intremap=on")
    with pytest.raises(UsageError, match="intremap must be on or off"):
        parse_iommu("vtd,intremap=maybe")
    with pytest.raises(UsageError, match="intremap"):
        parse_iommu("vtd,bogus=1")
