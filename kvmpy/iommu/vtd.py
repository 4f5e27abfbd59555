"""An Intel VT-d DMA-remapping unit (legacy mode) that a real guest driver programs.

What it is: the 4 KiB register block Linux's ``intel-iommu`` driver (and our own guest programs)
drive, the legacy root/context tables and second-level page walk (``tables``), the primary fault
log and fault event (``faults``), a context cache and an IOTLB that the guest must invalidate —
through registers or through the invalidation queue — and one translated ``DmaSpace`` per PCI
requester; with ``intremap`` also interrupt remapping (``intremap``: the IRTE lookup and the
interrupt-entry cache) and one remapping ``MsiSender`` per requester. Devices never see this
class: the PCI bus hands each function ``iommu.dma_space(requester_id)`` through its
``dma_provider`` seam, and its MSIs go out through ``iommu.msi_sender(requester_id)``.

**Wiring** (the machine builder):
``mmio.register(layout.VTD_BASE, VTD_MMIO_SIZE, iommu, "vt-d", sizes=VTD_ACCESS_SIZES)``;
``pci.set_dma_provider(iommu.dma_space)``; ``msi`` is the machine's MsiSender (fault and
invalidation-completion events are ordinary compatibility-format MSIs, never remapped); the ACPI
DMAR table from ``kvmpy.iommu.dmar`` goes into ``build_tables(extra_tables=[...])`` — with
``intr_remap=iommu.intremap`` (``Dmar.for_unit(iommu, ...)`` does that), since Linux enables
interrupt remapping only when the DMAR flag, ECAP.IR and the IOAPIC's device scope all agree.
With interrupt remapping, every interrupt source sends through ``iommu.msi_sender(rid)``: PCI
functions with their bus:dev.fn, the IOAPIC with ``IOAPIC_SOURCE_ID`` (0xFF00, the id its DMAR
scope names); ``translate_msi`` gives the same answer without sending, for sources whose
messages are cached as KVM GSI routes, and ``on_irte_change`` says when such routes must be
recomputed.

**Capabilities** mirror QEMU's ``intel-iommu`` so Linux takes the same paths as on QEMU: VER 1.0;
CAP with ND=6 (65536 domains), SAGAW 39-bit (and 48-bit when ``aw_bits=48``), MGAW = aw_bits-1,
SLLPS 2 MiB and 1 GiB, PSI with MAMV 18, read/write draining, FRO 0x22 (records at 0x220), NFR
per ``fault_records``, CM per ``caching_mode``; ECAP with QI per ``queued_invalidation``, IRO
0xF (IVA at 0xF0, IOTLB at 0xF8), PT per ``pass_through``, and C (page-walk coherency) clear as
QEMU reports it (Linux then flushes CPU caches after table updates: harmless). No ESRTPS, so
Linux issues the global context and IOTLB invalidations after setting the root pointer, which
exercises both invalidation paths. With ``intremap`` (which needs QI, as Linux does), ECAP.IR and
MHMV = 0xF as QEMU; ECAP.EIM (x2APIC 32-bit destinations) only with ``eim``. RWBF, PLMR/PHMR,
AFL, DT, PI, SMTS are not offered.

**Register semantics** are data (``_registers``): writable, write-1-to-clear and write-only
bits per register, and the action a write starts. 8-byte registers may be accessed whole or as
two dwords; CCMD and IOTLB act when their high dword is written (``writeq`` or the second
``writel``). GCMD is write-only: each write is the full desired state of the persistent bits
(TE, QIE) plus one-shot commands (SRTP, WBF), and GSTS follows at once because drivers spin on
it. Reserved bits ignore writes and read 0; nothing a guest writes raises. With interrupt
remapping, GCMD.SIRTP latches IRTA (address, EIME, size) and sets GSTS.IRTPS; IRE and CFI are
persistent bits mirrored in GSTS.IRES/CFIS.

**Caching.** The context cache holds validated context entries by requester; the IOTLB holds
leaf translations by (requester, page, size), tagged with the domain id, so domain- and
page-selective invalidation work as the spec says. Only successful translations are cached —
allowed with CM either 0 or 1 — and entries stay until invalidated (or evicted when a cache
fills, which hardware may also do), so a guest that edits a PTE without invalidating keeps the
old translation, like hardware; the invalidation makes the new one visible. Setting the root
pointer and toggling TE flush everything (as QEMU does; the spec requires software to
invalidate anyway). IH in page-selective invalidation only concerns non-leaf caches, which this
model does not keep.

**Queued invalidation** is processed synchronously in the IQT write: Linux's
``qi_submit_sync`` spins on the wait descriptor's status word right after the write. A bad
descriptor or tail sets FSTS.IQE (IQER.IQEI says why), leaves IQH at that descriptor and stops
fetching until software clears IQE.

**Interrupt remapping** (``intremap.py`` has the formats and checks). While GSTS.IRES = 0 every
message passes unchanged. With it set, a remappable-format message is looked up in the IRTE the
handle (and subhandle) names and delivered as the compatibility-format message the entry
describes; a compatibility-format message passes only while CFIS = 1 (and EIME = 0). A blocked
message is dropped, recorded in the same fault log as DMA faults (FI = index << 48, T = 0) unless
the IRTE's FPD suppresses a qualified reason, and reported as ``"vtd.ir-fault"``. Validated IRTEs
are cached until an IEC descriptor (global or index-selective), SIRTP, or a full cache drops
them. ``on_irte_change()`` is called after every IEC invalidation, SIRTP, IRE or CFI change,
reset and restore — whenever a message's translation may have changed.

**Trace events**: ``on_event(name, fields)``, when set, is called with ``"vtd.fault"`` for every
blocked request (``outcome``: recorded, suppressed by FPD, collapsed or overflow),
``"vtd.invalidate"`` for every invalidation (``cache`` context/iotlb/device-tlb/iec,
``granularity``, ``via`` register or queue), ``"vtd.ir-fault"`` for every blocked interrupt
(``sid``, ``index``, ``reason``, ``outcome``, ``address``, ``data``), ``"vtd.wait"`` for wait descriptors,
``"vtd.queue-error"`` when IQE is set, and ``"vtd.command"`` for GCMD commands. Fields are plain
ints, bools and strings.
"""

from __future__ import annotations

import copy
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from ..errors import DmaFault
from ..hw.dma import DmaSpace
from ..hw.irq import MsiSender
from .faults import (
    FSTS_ICE,
    FSTS_IQE,
    FSTS_ITE,
    FSTS_PFO,
    IR_QUALIFIED,
    QUALIFIED,
    FaultLog,
    FaultReason,
    TranslationFault,
    describe,
)
from .intremap import IRTA_EIME, IRTA_S_MASK, InterruptRemapper, IrFault
from .regfile import Reg, RegisterFile
from .tables import TT_PASS_THROUGH, ContextEntry, PageWalker

log = logging.getLogger("kvmpy.iommu.vtd")

__all__ = [
    "VTD_MMIO_SIZE",
    "VTD_ACCESS_SIZES",
    "IntelIommu",
    "VtdDmaSpace",
    "VtdMsiSender",
    "VtdDmaFault",
    "VtdState",
    "VtdStats",
    "EventHook",
]

#: One 4 KiB page of registers (DRHD size field 0); drivers use 4- and 8-byte accesses.
VTD_MMIO_SIZE = 0x1000
VTD_ACCESS_SIZES = (4, 8)

# --- register offsets (VT-d spec 10.4) ---------------------------------------------------
REG_VER = 0x00
REG_CAP = 0x08
REG_ECAP = 0x10
REG_GCMD = 0x18
REG_GSTS = 0x1C
REG_RTADDR = 0x20
REG_CCMD = 0x28
REG_FSTS = 0x34
REG_FECTL = 0x38
REG_FEDATA = 0x3C
REG_FEADDR = 0x40
REG_FEUADDR = 0x44
REG_PMEN = 0x64
REG_IQH = 0x80
REG_IQT = 0x88
REG_IQA = 0x90
REG_ICS = 0x9C
REG_IECTL = 0xA0
REG_IEDATA = 0xA4
REG_IEADDR = 0xA8
REG_IEUADDR = 0xAC
REG_IQER = 0xB0
REG_IRTA = 0xB8
#: IVA and IOTLB sit at ECAP.IRO*16 (QEMU's placement).
IOTLB_REG_OFFSET = 0xF0
REG_IVA = IOTLB_REG_OFFSET
REG_IOTLB = IOTLB_REG_OFFSET + 8
#: Fault recording registers at CAP.FRO*16 (QEMU's placement, after the MTRR block).
FRCD_REG_OFFSET = 0x220

# --- CAP (10.4.2) --------------------------------------------------------------------------
CAP_ND_64K = 6  # 2^(4+2*6) = 65536 domain ids
CAP_CM = 1 << 7
CAP_SAGAW_SHIFT = 8
CAP_SAGAW_39 = 0x2 << CAP_SAGAW_SHIFT  # AW=1, 3-level
CAP_SAGAW_48 = 0x4 << CAP_SAGAW_SHIFT  # AW=2, 4-level
CAP_MGAW_SHIFT = 16
CAP_FRO_SHIFT = 24
CAP_SLLPS_2M = 1 << 34
CAP_SLLPS_1G = 1 << 35
CAP_PSI = 1 << 39
CAP_NFR_SHIFT = 40
CAP_MAMV_SHIFT = 48
CAP_DWD = 1 << 54
CAP_DRD = 1 << 55
MAMV = 18

# --- ECAP (10.4.3) -------------------------------------------------------------------------
ECAP_C = 1 << 0
ECAP_QI = 1 << 1
ECAP_DT = 1 << 2
ECAP_IR = 1 << 3
ECAP_EIM = 1 << 4
ECAP_PT = 1 << 6
ECAP_IRO_SHIFT = 8
ECAP_MHMV_SHIFT = 20
MHMV = 0xF  # largest IEC index mask (IM) the unit honours, as QEMU reports it

# --- GCMD / GSTS (10.4.4, 10.4.5): same bit positions -----------------------------------
GCMD_TE = 1 << 31
GCMD_SRTP = 1 << 30
GCMD_SFL = 1 << 29
GCMD_EAFL = 1 << 28
GCMD_WBF = 1 << 27
GCMD_QIE = 1 << 26
GCMD_IRE = 1 << 25
GCMD_SIRTP = 1 << 24
GCMD_CFI = 1 << 23
GCMD_ALL = 0xFF80_0000

# --- RTADDR (10.4.6) -----------------------------------------------------------------------
RTADDR_TTM_SHIFT = 10
RTADDR_TTM_MASK = 0x3 << RTADDR_TTM_SHIFT  # 00 legacy; 01 scalable (needs ECAP.SMTS)

# --- CCMD (10.4.7) -------------------------------------------------------------------------
CCMD_ICC = 1 << 63
CCMD_CIRG_SHIFT = 61
CCMD_CAIG_SHIFT = 59
CCMD_CAIG_MASK = 0x3 << CCMD_CAIG_SHIFT
CCMD_FM_SHIFT = 32
CCMD_SID_SHIFT = 16
CCMD_WRITABLE = 0xE000_0003_FFFF_FFFF  # ICC, CIRG, FM, SID, DID
GRAN_GLOBAL, GRAN_DOMAIN, GRAN_DEVICE = 1, 2, 3
GRAN_PAGE = 3  # IOTLB's third granularity

# --- IOTLB / IVA (10.4.8) ------------------------------------------------------------------
IOTLB_IVT = 1 << 63
IOTLB_IIRG_SHIFT = 60
IOTLB_IAIG_SHIFT = 57
IOTLB_IAIG_MASK = 0x3 << IOTLB_IAIG_SHIFT
IOTLB_DID_SHIFT = 32
IOTLB_WRITABLE = 0xB003_FFFF_0000_0000  # IVT, IIRG, DR, DW, DID
IVA_WRITABLE = 0xFFFF_FFFF_FFFF_F07F  # ADDR, IH, AM
IVA_IH = 1 << 6
IVA_AM_MASK = 0x3F

# --- invalidation queue (10.4.22-10.4.28, 6.5.2) -------------------------------------------
IQA_QS_MASK = 0x7
IQT_QT_MASK = 0x7FFF0  # 18:4, byte offset of a 128-bit descriptor
ICS_IWC = 1 << 0
IECTL_IM = 1 << 31
IECTL_IP = 1 << 30
DESC_SIZE = 16
# IQER.IQEI: why IQE was set (Intel's IQERCD_REG description)
IQEI_NONE = 0
IQEI_TAIL = 1
IQEI_FETCH = 2
IQEI_TYPE = 3
IQEI_RESERVED = 4

DESC_CONTEXT = 1
DESC_IOTLB = 2
DESC_DEVICE_TLB = 3
DESC_IEC = 4
DESC_WAIT = 5
DESC_TYPE_HI_MASK = 0xE00  # bits 11:9 extend the type in VT-d 3.x; only 0 is legacy

# Reserved bits per descriptor (qword 0, qword 1), as QEMU and VirtualBox check them.
_CC_RSVD = (0xFFFC_0000_0000_FFC0, 0xFFFF_FFFF_FFFF_FFFF)
_IOTLB_RSVD = (0xFFFF_FFFF_0000_FF00, 0xF80)
_DEVTLB_RSVD = (0xFFFF_0000_FFE0_FFF8 & ~0xFFF0_0000_0000_F000, 0xFFE)
_IEC_RSVD = (0xFFFF_0000_07FF_FFE0, 0xFFFF_FFFF_FFFF_FFFF)
_WAIT_RSVD = (0xFFFF_FF80, 0x3)
WAIT_IF = 1 << 4
WAIT_SW = 1 << 5
WAIT_FN = 1 << 6

_Q = struct.Struct("<Q")
_QQ = struct.Struct("<QQ")
_L = struct.Struct("<I")

#: IOTLB key: requester id above the page number (iova >> shift < 2^40 for 52-bit addresses).
_KEY_SID_SHIFT = 40
_KEY_PAGE_MASK = (1 << _KEY_SID_SHIFT) - 1
#: Entries per IOTLB size class before it is emptied (hardware evicts too; this bounds memory).
IOTLB_CAPACITY = 8192
CONTEXT_CACHE_CAPACITY = 4096

EventHook = Callable[[str, dict], None]
_IotlbEntry = tuple[int, int, int, bool, bool]  # did, output base, shift, read, write


class VtdDmaFault(DmaFault):
    """A DMA blocked by the IOMMU: a DmaFault (devices end the transfer) with VT-d details."""

    def __init__(
        self, addr: int, length: int, write: bool, *, fault_reason: int, fault_addr: int, requester_id: int
    ) -> None:
        super().__init__(addr, length, write, f"VT-d fault {fault_reason:#x}: {describe(fault_reason)}")
        self.fault_reason = fault_reason
        self.fault_addr = fault_addr
        self.requester_id = requester_id


@dataclass
class VtdState:
    """Guest-visible state: the register bytes and what hardware latched from them.

    ``root``/``ttm`` are latched by SRTP, the queue base and size by QIE; ``iq_head`` is IQH in
    descriptors; ``next_fault`` is the fault-record slot the next fault goes to; ``irt_*`` are
    the interrupt-remapping table address, entry count (0: none latched) and EIME latched by
    SIRTP. The caches are not state: hardware may drop cached entries at any time, so a restored
    unit starts with empty caches (the interrupt-entry cache included).
    """

    csr: bytearray
    root: int = 0
    ttm: int = 0
    iq_base: int = 0
    iq_entries: int = 0
    iq_head: int = 0
    next_fault: int = 0
    irt_base: int = 0
    irt_entries: int = 0
    irt_eime: bool = False

    def reset(self, power_on: bytearray) -> None:
        self.restore(VtdState(bytearray(power_on)))

    def snapshot(self) -> VtdState:
        return copy.deepcopy(self)

    def restore(self, snap: VtdState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


@dataclass
class VtdStats:
    """Counters for tracing and benchmarks (not guest-visible)."""

    walks: int = 0
    faults: int = 0
    interrupts: int = 0  # messages remapped and delivered
    ir_faults: int = 0
    invalidations: dict[str, int] = field(default_factory=dict)


def _registers(cap: int, ecap: int, aw_bits: int, nfr: int) -> list[Reg]:
    """The register block as data (offset, width, reset value, bit semantics, action)."""
    haw_page = ((1 << aw_bits) - 1) & ~0xFFF
    # The upper message-address registers carry x2APIC destination bits 31:8, so they exist only
    # with ECAP.EIM (spec 10.4.13, 10.4.27).
    upper = 0xFFFF_FFFF if ecap & ECAP_EIM else 0
    regs = [
        Reg("VER", REG_VER, 4, reset=0x10),  # 1.0
        Reg("CAP", REG_CAP, 8, reset=cap),
        Reg("ECAP", REG_ECAP, 8, reset=ecap),
        Reg("GCMD", REG_GCMD, 4, writable=GCMD_ALL, write_only=0xFFFF_FFFF, on_write="_w_gcmd"),
        Reg("GSTS", REG_GSTS, 4),
        Reg("RTADDR", REG_RTADDR, 8, writable=haw_page | RTADDR_TTM_MASK),
        Reg("CCMD", REG_CCMD, 8, writable=CCMD_WRITABLE, on_write="_w_ccmd", trigger=(4, 8)),
        Reg("FSTS", REG_FSTS, 4, w1c=FSTS_PFO | FSTS_IQE | FSTS_ICE | FSTS_ITE, on_write="_w_fsts"),
        Reg("FECTL", REG_FECTL, 4, reset=1 << 31, writable=1 << 31, on_write="_w_fectl"),
        Reg("FEDATA", REG_FEDATA, 4, writable=0xFFFF),
        Reg("FEADDR", REG_FEADDR, 4, writable=0xFFFF_FFFC),
        Reg("FEUADDR", REG_FEUADDR, 4, writable=upper),  # reserved (reads 0) without ECAP.EIM
        Reg("PMEN", REG_PMEN, 4),  # read-only 0: no protected memory regions (CAP.PLMR = PHMR = 0)
        Reg("IVA", REG_IVA, 8, writable=IVA_WRITABLE, write_only=(1 << 64) - 1),
        Reg("IOTLB", REG_IOTLB, 8, writable=IOTLB_WRITABLE, on_write="_w_iotlb", trigger=(4, 8)),
    ]
    if ecap & ECAP_QI:
        regs += [
            Reg("IQH", REG_IQH, 8),
            Reg("IQT", REG_IQT, 8, writable=IQT_QT_MASK, on_write="_w_iqt", trigger=(0, 4)),
            Reg("IQA", REG_IQA, 8, writable=haw_page | IQA_QS_MASK),
            Reg("ICS", REG_ICS, 4, w1c=ICS_IWC, on_write="_w_ics"),
            Reg("IECTL", REG_IECTL, 4, reset=IECTL_IM, writable=IECTL_IM, on_write="_w_iectl"),
            Reg("IEDATA", REG_IEDATA, 4, writable=0xFFFF),
            Reg("IEADDR", REG_IEADDR, 4, writable=0xFFFF_FFFC),
            Reg("IEUADDR", REG_IEUADDR, 4, writable=upper),
            Reg("IQER", REG_IQER, 8),
        ]
    if ecap & ECAP_IR:
        eime = IRTA_EIME if ecap & ECAP_EIM else 0
        regs.append(Reg("IRTA", REG_IRTA, 8, writable=haw_page | eime | IRTA_S_MASK))
    for i in range(nfr):
        off = FRCD_REG_OFFSET + 16 * i
        regs.append(Reg(f"FRCD{i}_LO", off, 8))
        regs.append(Reg(f"FRCD{i}_HI", off + 8, 8, w1c=1 << 63, on_write="_w_frcd"))
    return regs


class IntelIommu:
    """One VT-d remapping unit (see the module docstring).

    ``memory`` is raw guest memory (tables, queue and status writes go there untranslated);
    ``msi`` delivers the fault and completion events, and every interrupt ``msi_sender`` lets
    through. ``intremap`` offers interrupt remapping (needs ``queued_invalidation``: the
    interrupt-entry cache is invalidated only through the queue); ``eim`` adds x2APIC 32-bit
    destinations (ECAP.EIM, IRTA.EIME). ``on_irte_change`` is called whenever remapped messages
    may translate differently (see the module docstring).
    """

    LENGTH = VTD_MMIO_SIZE
    SIZES = VTD_ACCESS_SIZES

    def __init__(
        self,
        memory: DmaSpace,
        msi: MsiSender,
        *,
        aw_bits: int = 39,
        caching_mode: bool = False,
        queued_invalidation: bool = True,
        pass_through: bool = True,
        fault_records: int = 4,
        intremap: bool = False,
        eim: bool = False,
        on_event: EventHook | None = None,
        on_irte_change: Callable[[], None] | None = None,
    ) -> None:
        if aw_bits not in (39, 48):
            raise ValueError(f"aw_bits must be 39 or 48, not {aw_bits}")
        if not 1 <= fault_records <= 256 or FRCD_REG_OFFSET + 16 * fault_records > VTD_MMIO_SIZE:
            raise ValueError(f"fault_records must be 1..{(VTD_MMIO_SIZE - FRCD_REG_OFFSET) // 16}")
        if intremap and not queued_invalidation:
            raise ValueError("interrupt remapping needs queued invalidation (Linux requires ECAP.QI for it)")
        if eim and not intremap:
            raise ValueError("eim (x2APIC interrupt destinations) is part of interrupt remapping")
        self.memory = memory
        self.msi = msi
        self.on_event = on_event
        self.on_irte_change = on_irte_change
        self.intremap = intremap
        self.eim = eim
        self.aw_bits = aw_bits
        self.caching_mode = caching_mode
        self.queued_invalidation = queued_invalidation
        self.fault_records = fault_records
        agaws = {1} | ({2} if aw_bits == 48 else set())
        self.cap = (
            CAP_ND_64K
            | (CAP_CM if caching_mode else 0)
            | (CAP_SAGAW_39 | (CAP_SAGAW_48 if aw_bits == 48 else 0))
            | (aw_bits - 1) << CAP_MGAW_SHIFT
            | (FRCD_REG_OFFSET // 16) << CAP_FRO_SHIFT
            | CAP_SLLPS_2M
            | CAP_SLLPS_1G
            | CAP_PSI
            | (fault_records - 1) << CAP_NFR_SHIFT
            | MAMV << CAP_MAMV_SHIFT
            | CAP_DWD
            | CAP_DRD
        )
        self.ecap = (
            (ECAP_QI if queued_invalidation else 0)
            | (IOTLB_REG_OFFSET // 16) << ECAP_IRO_SHIFT
            | (ECAP_PT if pass_through else 0)
            | (ECAP_IR | MHMV << ECAP_MHMV_SHIFT if intremap else 0)
            | (ECAP_EIM if eim else 0)
        )
        self.regs = RegisterFile(VTD_MMIO_SIZE, _registers(self.cap, self.ecap, aw_bits, fault_records))
        self.walker = PageWalker(aw_bits, frozenset(agaws), pass_through=pass_through)
        self.faults = FaultLog(self.regs, FRCD_REG_OFFSET, fault_records, self._send_fault_event)
        self.state = VtdState(self.regs.power_on())
        self.stats = VtdStats()
        self._spaces: dict[int, VtdDmaSpace] = {}
        self._senders: dict[int, VtdMsiSender] = {}
        self.remapper = InterruptRemapper(memory)
        self._te = False
        self._ire = False
        self._cfi = False
        self._ccache: dict[int, ContextEntry] = {}
        self._tlb4k: dict[int, _IotlbEntry] = {}
        self._tlb2m: dict[int, _IotlbEntry] = {}
        self._tlb1g: dict[int, _IotlbEntry] = {}
        self._tlb_sids: dict[int, set[int]] = {}
        self._warned: set[str] = set()

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        self.state.reset(self.regs.power_on())
        self._after_state_change()

    def snapshot(self) -> VtdState:
        return self.state.snapshot()

    def restore(self, snap: VtdState) -> None:
        self.state.restore(snap)
        self._after_state_change()

    def _after_state_change(self) -> None:
        gsts = self.regs.get(self.state.csr, "GSTS")
        self._te = bool(gsts & GCMD_TE)
        self._ire = bool(gsts & GCMD_IRE)
        self._cfi = bool(gsts & GCMD_CFI)
        self._flush_all()
        st = self.state
        self.remapper.set_table(st.irt_base, st.irt_entries, st.irt_eime)
        self._irte_changed()

    @property
    def translation_enabled(self) -> bool:
        return self._te

    @property
    def interrupt_remapping_enabled(self) -> bool:
        """GSTS.IRES: messages from ``msi_sender`` are being remapped."""
        return self._ire

    @property
    def compatibility_format_allowed(self) -> bool:
        """Whether a compatibility-format message passes now (IR off, or CFIS = 1 and EIME = 0)."""
        return not self._ire or (self._cfi and not self.remapper.eime)

    def reg(self, name: str) -> int:
        """A register's raw value, for tests and ``kvmpy info``-style introspection."""
        return self.regs.get(self.state.csr, name)

    # -- MMIO ------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return self.regs.read(self.state.csr, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.regs.in_range(offset, size):
            self._warn_once(f"range{offset:#x}", "VT-d: write of %d bytes at %#x ignored", size, offset)
            return
        for reg in self.regs.write(self.state.csr, offset, size, value):
            getattr(self, reg.on_write)()  # type: ignore[arg-type]

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.info(msg, *args)

    def _get(self, name: str) -> int:
        return self.regs.get(self.state.csr, name)

    def _set(self, name: str, value: int) -> None:
        self.regs.set(self.state.csr, name, value)

    def _emit(self, name: str, **fields: object) -> None:
        hook = self.on_event
        if hook is not None:
            hook(name, fields)

    # -- GCMD ------------------------------------------------------------------------------
    def _w_gcmd(self) -> None:
        cmd = self._get("GCMD")
        for bit, persistent, handler in _GCMD_COMMANDS:
            if persistent:
                if bool(cmd & bit) != bool(self._get("GSTS") & bit):
                    getattr(self, handler)(bool(cmd & bit))
            elif cmd & bit:
                getattr(self, handler)()

    def _set_status(self, bit: int, on: bool) -> None:
        gsts = self._get("GSTS")
        self._set("GSTS", gsts | bit if on else gsts & ~bit)

    def _cmd_translation(self, enable: bool) -> None:
        self._set_status(GCMD_TE, enable)
        self._te = enable
        self._flush_all()
        self._emit("vtd.command", command="translation", enable=enable)

    def _cmd_root_table(self) -> None:
        rtaddr = self._get("RTADDR")
        self.state.root = rtaddr & self.walker.addr_mask
        self.state.ttm = (rtaddr & RTADDR_TTM_MASK) >> RTADDR_TTM_SHIFT
        self._set_status(GCMD_SRTP, True)  # RTPS
        self._flush_all()
        self._emit("vtd.command", command="root-table", root=self.state.root, ttm=self.state.ttm)

    def _cmd_ir_table(self) -> None:
        """SIRTP: latch IRTA; the interrupt-entry cache is invalidated with it (as QEMU does)."""
        if not self.intremap:
            return
        st = self.state
        irta = self._get("IRTA")
        st.irt_base = irta & self.walker.addr_mask
        st.irt_entries = 2 << (irta & IRTA_S_MASK)
        st.irt_eime = bool(irta & IRTA_EIME)
        self.remapper.set_table(st.irt_base, st.irt_entries, st.irt_eime)
        self._set_status(GCMD_SIRTP, True)  # IRTPS
        self._emit(
            "vtd.command", command="ir-table", base=st.irt_base, entries=st.irt_entries, eime=st.irt_eime
        )
        self._irte_changed()

    def _cmd_interrupt_remapping(self, enable: bool) -> None:
        if not self.intremap:
            return
        self._set_status(GCMD_IRE, enable)  # IRES
        self._ire = enable
        self._emit("vtd.command", command="interrupt-remapping", enable=enable)
        self._irte_changed()

    def _cmd_compatibility_format(self, enable: bool) -> None:
        if not self.intremap:
            return
        self._set_status(GCMD_CFI, enable)  # CFIS
        self._cfi = enable
        self._emit("vtd.command", command="compatibility-format", enable=enable)
        self._irte_changed()

    def _irte_changed(self) -> None:
        hook = self.on_irte_change
        if hook is not None:
            hook()

    def _cmd_write_buffer_flush(self) -> None:
        # CAP.RWBF = 0: nothing is buffered, the flush completes at once (WBFS stays 0).
        self._emit("vtd.command", command="write-buffer-flush")

    def _cmd_queued_invalidation(self, enable: bool) -> None:
        if not self.ecap & ECAP_QI:
            return
        st = self.state
        if enable:
            iqa = self._get("IQA")
            st.iq_base = iqa & self.walker.addr_mask
            st.iq_entries = 256 << (iqa & IQA_QS_MASK)
            st.iq_head = 0
            self._set("IQH", 0)
            self._set_status(GCMD_QIE, True)
            self._emit("vtd.command", command="queued-invalidation", enable=True, base=st.iq_base)
            # Tail already moved before enabling (Windows does this; QEMU accepts it).
            if self._get("IQT") and not self._get("FSTS") & FSTS_IQE:
                self._process_queue()
        else:
            st.iq_head = 0
            self._set("IQH", 0)
            self._set_status(GCMD_QIE, False)
            self._emit("vtd.command", command="queued-invalidation", enable=False)

    # -- register-based invalidation ---------------------------------------------------------
    def _w_ccmd(self) -> None:
        ccmd = self._get("CCMD")
        if not ccmd & CCMD_ICC:
            return
        gran = (ccmd >> CCMD_CIRG_SHIFT) & 3
        done = self._inv_context(
            gran,
            ccmd & 0xFFFF,
            (ccmd >> CCMD_SID_SHIFT) & 0xFFFF,
            (ccmd >> CCMD_FM_SHIFT) & 3,
            via="register",
        )
        ccmd = (ccmd & ~(CCMD_ICC | CCMD_CAIG_MASK)) | (done << CCMD_CAIG_SHIFT)
        self._set("CCMD", ccmd)

    def _w_iotlb(self) -> None:
        val = self._get("IOTLB")
        if not val & IOTLB_IVT:
            return
        gran = (val >> IOTLB_IIRG_SHIFT) & 3
        iva = self.regs.get_at(self.state.csr, REG_IVA, 8)
        done = self._inv_iotlb(
            gran,
            (val >> IOTLB_DID_SHIFT) & 0xFFFF,
            iva & ~0xFFF,
            iva & IVA_AM_MASK,
            bool(iva & IVA_IH),
            via="register",
        )
        val = (val & ~(IOTLB_IVT | IOTLB_IAIG_MASK)) | (done << IOTLB_IAIG_SHIFT)
        self._set("IOTLB", val)

    # -- status and events -------------------------------------------------------------------
    def _w_fsts(self) -> None:
        self.faults.update_ip(self.state)
        # No descriptors are fetched while IQE is set; clearing it lets the queue run on.
        if (
            self.ecap & ECAP_QI
            and not self._get("FSTS") & FSTS_IQE
            and self._get("GSTS") & GCMD_QIE
            and self.state.iq_head != self._tail()
        ):
            self._process_queue()

    def _w_fectl(self) -> None:
        self.faults.unmasked(self.state)

    def _w_frcd(self) -> None:
        self.faults.update_ppf(self.state)

    def _w_ics(self) -> None:
        iectl = self._get("IECTL")
        if iectl & IECTL_IP and not self._get("ICS") & ICS_IWC:
            self._set("IECTL", iectl & ~IECTL_IP)

    def _w_iectl(self) -> None:
        iectl = self._get("IECTL")
        if iectl & IECTL_IP and not iectl & IECTL_IM:
            self._send_completion_event()
            self._set("IECTL", iectl & ~IECTL_IP)

    def _send_fault_event(self) -> None:
        self.msi.send(self._get("FEUADDR") << 32 | self._get("FEADDR"), self._get("FEDATA"))

    def _send_completion_event(self) -> None:
        self.msi.send(self._get("IEUADDR") << 32 | self._get("IEADDR"), self._get("IEDATA"))

    def _completion_event(self) -> None:
        """A wait descriptor with IF completed: ICS.IWC, then the event unless masked."""
        if self._get("ICS") & ICS_IWC:
            return  # the previous completion is not serviced yet: no new event
        self._set("ICS", ICS_IWC)
        iectl = self._get("IECTL") | IECTL_IP
        self._set("IECTL", iectl)
        if not iectl & IECTL_IM:
            self._send_completion_event()
            self._set("IECTL", iectl & ~IECTL_IP)

    # -- queued invalidation -----------------------------------------------------------------
    def _tail(self) -> int:
        return (self._get("IQT") & IQT_QT_MASK) >> 4

    def _w_iqt(self) -> None:
        if self._get("GSTS") & GCMD_QIE and not self._get("FSTS") & FSTS_IQE:
            self._process_queue()

    def _queue_error(self, iqei: int) -> None:
        fsts = self._get("FSTS")
        self._set("FSTS", fsts | FSTS_IQE)
        self._set("IQER", iqei)
        self.faults.raise_event(self.state, fsts)
        self._emit("vtd.queue-error", head=self.state.iq_head, iqei=iqei)

    def _process_queue(self) -> None:
        """Run descriptors from IQH up to IQT, synchronously (see the module docstring)."""
        st = self.state
        tail = self._tail()
        if tail >= st.iq_entries:
            self._queue_error(IQEI_TAIL)
            return
        while st.iq_head != tail:
            try:
                lo, hi = _QQ.unpack(self.memory.read(st.iq_base + DESC_SIZE * st.iq_head, DESC_SIZE))
            except (DmaFault, ValueError, OverflowError):
                self._queue_error(IQEI_FETCH)
                return
            handler = _DESCRIPTORS.get(lo & 0xF) if not lo & DESC_TYPE_HI_MASK else None
            if handler is None:
                self._queue_error(IQEI_TYPE)
                return
            err = getattr(self, handler)(lo, hi)
            if err is not None:
                self._queue_error(err)
                return
            st.iq_head = (st.iq_head + 1) % st.iq_entries
            self._set("IQH", st.iq_head << 4)

    def _desc_context(self, lo: int, hi: int) -> int | None:
        if lo & _CC_RSVD[0] or hi & _CC_RSVD[1]:
            return IQEI_RESERVED
        gran = (lo >> 4) & 3
        if not gran:
            return IQEI_RESERVED
        self._inv_context(gran, (lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFF, (lo >> 48) & 3, via="queue")
        return None

    def _desc_iotlb(self, lo: int, hi: int) -> int | None:
        if lo & _IOTLB_RSVD[0] or hi & _IOTLB_RSVD[1]:
            return IQEI_RESERVED
        gran = (lo >> 4) & 3
        am = hi & IVA_AM_MASK
        if not gran or (gran == GRAN_PAGE and am > MAMV):
            return IQEI_RESERVED
        self._inv_iotlb(gran, (lo >> 16) & 0xFFFF, hi & ~0xFFF, am, bool(hi & IVA_IH), via="queue")
        return None

    def _desc_device_tlb(self, lo: int, hi: int) -> int | None:
        # No ECAP.DT, so no device has a device-TLB: accepted, nothing to do.
        if lo & _DEVTLB_RSVD[0] or hi & _DEVTLB_RSVD[1]:
            return IQEI_RESERVED
        self._count("device-tlb")
        self._emit("vtd.invalidate", cache="device-tlb", sid=(lo >> 32) & 0xFFFF, via="queue")
        return None

    def _desc_iec(self, lo: int, hi: int) -> int | None:
        if lo & _IEC_RSVD[0] or hi & _IEC_RSVD[1]:
            return IQEI_RESERVED
        self._inv_iec(global_=not lo & (1 << 4), index=(lo >> 32) & 0xFFFF, mask=(lo >> 27) & 0x1F)
        return None

    def _inv_iec(self, *, global_: bool, index: int, mask: int) -> None:
        """Interrupt-entry-cache invalidation (queue only: there is no register interface).

        Index-selective invalidation drops 2^IM entries from IIDX rounded down to that size; an
        IM above MHMV is honoured too (more is invalidated, never less). Without ECAP.IR the
        descriptor is accepted and does nothing, as there is no cache.
        """
        self._count("iec")
        if self.intremap:
            self.remapper.invalidate(None if global_ else index, mask)
        self._emit(
            "vtd.invalidate",
            cache="iec",
            granularity="global" if global_ else "index",
            index=index,
            im=mask,
            via="queue",
        )
        self._irte_changed()

    def _desc_wait(self, lo: int, hi: int) -> int | None:
        if lo & _WAIT_RSVD[0] or hi & _WAIT_RSVD[1]:
            return IQEI_RESERVED
        # Everything before this descriptor has completed (processing is synchronous).
        if lo & WAIT_SW:
            try:
                self.memory.write(hi & ~0x3, _L.pack(lo >> 32))
            except (DmaFault, ValueError, OverflowError):
                return IQEI_NONE
        if lo & WAIT_IF:
            self._completion_event()
        self._emit(
            "vtd.wait",
            status_write=bool(lo & WAIT_SW),
            interrupt=bool(lo & WAIT_IF),
            addr=hi & ~0x3,
            data=lo >> 32,
        )
        return None

    # -- invalidation (shared by both interfaces) ---------------------------------------------
    def _count(self, what: str) -> None:
        inv = self.stats.invalidations
        inv[what] = inv.get(what, 0) + 1

    def _inv_context(self, gran: int, did: int, sid: int, fm: int, *, via: str) -> int:
        """Context-cache invalidation; returns the actual granularity (0 = not done)."""
        cc = self._ccache
        if gran == GRAN_GLOBAL:
            cc.clear()
            name = "global"
        elif gran == GRAN_DOMAIN:
            for k in [k for k, c in cc.items() if c.did == did]:
                del cc[k]
            name = "domain"
        elif gran == GRAN_DEVICE:
            ignore = (0, 0b100, 0b110, 0b111)[fm]  # FM masks function-number bits
            keep = ~ignore & 0xFFFF
            for k in [k for k in cc if k & keep == sid & keep]:
                del cc[k]
            name = "device"
        else:
            return 0
        self._count("context")
        self._emit("vtd.invalidate", cache="context", granularity=name, did=did, sid=sid, fm=fm, via=via)
        return gran

    def _inv_iotlb(self, gran: int, did: int, addr: int, am: int, ih: bool, *, via: str) -> int:
        """IOTLB invalidation; returns the actual granularity (0 = not done).

        A page-selective request with AM beyond MAMV is done domain-selectively and reported so.
        """
        if gran == GRAN_PAGE and am > MAMV:
            gran = GRAN_DOMAIN
        if gran == GRAN_GLOBAL:
            self._flush_iotlb()
            detail: dict[str, object] = {}
        elif gran == GRAN_DOMAIN:
            for d in (self._tlb4k, self._tlb2m, self._tlb1g):
                for k in [k for k, e in d.items() if e[0] == did]:
                    del d[k]
            self._tlb_sids.pop(did, None)
            detail = {"did": did}
        elif gran == GRAN_PAGE:
            self._inv_pages(did, addr, am)
            detail = {"did": did, "addr": addr, "am": am, "ih": ih}
        else:
            return 0
        self._count("iotlb")
        self._emit(
            "vtd.invalidate",
            cache="iotlb",
            granularity=("global", "domain", "page")[gran - 1],
            via=via,
            **detail,
        )
        return gran

    def _inv_pages(self, did: int, addr: int, am: int) -> None:
        """Drop every translation of domain ``did`` overlapping 2^am pages at ``addr``."""
        sids = self._tlb_sids.get(did)
        if not sids:
            return
        size = 0x1000 << am
        start = addr & ~(size - 1) & ((1 << 64) - 1)
        end = start + size
        for shift, d in ((12, self._tlb4k), (21, self._tlb2m), (30, self._tlb1g)):
            if not d:
                continue
            first, last = start >> shift, (end - 1) >> shift
            if (last - first + 1) * len(sids) <= len(d):
                for sid in sids:
                    base = sid << _KEY_SID_SHIFT
                    for page in range(first, last + 1):
                        e = d.get(base | page)
                        if e is not None and e[0] == did:
                            del d[base | page]
            else:
                for k in [k for k, e in d.items() if e[0] == did and first <= k & _KEY_PAGE_MASK <= last]:
                    del d[k]

    def _flush_iotlb(self) -> None:
        self._tlb4k.clear()
        self._tlb2m.clear()
        self._tlb1g.clear()
        self._tlb_sids.clear()

    def _flush_all(self) -> None:
        self._ccache.clear()
        self._flush_iotlb()

    # -- translation ---------------------------------------------------------------------------
    def dma_space(self, requester_id: int) -> VtdDmaSpace:
        """The translated view of guest memory for requester ``bus << 8 | dev << 3 | fn``."""
        sid = requester_id & 0xFFFF
        space = self._spaces.get(sid)
        if space is None:
            space = self._spaces[sid] = VtdDmaSpace(self, sid)
        return space

    # -- interrupt remapping -----------------------------------------------------------------
    def msi_sender(self, requester_id: int) -> VtdMsiSender:
        """The MsiSender for interrupts from requester ``bus << 8 | dev << 3 | fn``.

        While remapping is off it forwards to the machine's sender unchanged; while it is on,
        each message is remapped (or blocked and recorded as a fault) — see the module docstring.
        The IOAPIC uses ``IOAPIC_SOURCE_ID``.
        """
        sid = requester_id & 0xFFFF
        sender = self._senders.get(sid)
        if sender is None:
            sender = self._senders[sid] = VtdMsiSender(self, sid)
        return sender

    def translate_msi(
        self, requester_id: int | None, address: int, data: int, *, record_fault: bool = False
    ) -> tuple[int, int] | None:
        """The (address, data) a message from ``requester_id`` would be delivered as, or None.

        For sources whose messages live in KVM GSI routes (the IOAPIC's pins, irqfd-driven
        MSIs): call again after ``on_irte_change``. A blocked message is recorded as a fault
        only with ``record_fault`` (computing a route is not an interrupt). ``requester_id`` None
        skips source-id verification.
        """
        if not self._ire:
            return address, data
        sid = None if requester_id is None else requester_id & 0xFFFF
        return self._remap(sid, address, data, record_fault)

    def _send_interrupt(self, sid: int, address: int, data: int) -> None:
        if not self._ire:
            self.msi.send(address, data)
            return
        out = self._remap(sid, address, data, True)
        if out is not None:
            self.stats.interrupts += 1
            self.msi.send(out[0], out[1])

    def _remap(self, sid: int | None, address: int, data: int, record: bool) -> tuple[int, int] | None:
        try:
            return self.remapper.remap(sid, address, data, cfi=self._cfi)
        except IrFault as f:
            if record:
                self._ir_fault(0 if sid is None else sid, address, data, f)
            return None

    def _ir_fault(self, sid: int, address: int, data: int, f: IrFault) -> None:
        self.stats.ir_faults += 1
        if f.fpd and f.reason in IR_QUALIFIED:
            outcome = "suppressed"
        else:
            outcome = self.faults.record_interrupt(self.state, sid, f.index, int(f.reason))
        self._emit(
            "vtd.ir-fault",
            sid=sid,
            bdf=f"{sid >> 8:02x}:{sid >> 3 & 0x1F:02x}.{sid & 7}",
            index=f.index,
            reason=int(f.reason),
            text=describe(f.reason),
            outcome=outcome,
            address=address,
            data=data,
        )

    def translate(self, requester_id: int, addr: int, write: bool) -> int:
        """Translate one address as a DMA of one byte would (faults recorded as for DMA)."""
        return self._map(requester_id & 0xFFFF, addr, 1, write)[0][0]

    def _map(self, sid: int, addr: int, length: int, write: bool) -> list[tuple[int, int]]:
        """(output address, length) pieces for an access, every page checked before any use."""
        if addr < 0 or length < 0 or addr + length > 1 << 64:
            raise DmaFault(addr, length, write)
        out: list[tuple[int, int]] = []
        iova = addr
        end = addr + length
        while iova < end:
            try:
                phys, page_end = self._translate(sid, iova, write)
            except TranslationFault as f:
                self._fault(sid, iova, f, write)
                raise VtdDmaFault(
                    addr, length, write, fault_reason=int(f.reason), fault_addr=iova, requester_id=sid
                ) from None
            n = min(end, page_end) - iova
            if out and out[-1][0] + out[-1][1] == phys:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((phys, n))
            iova += n
        return out

    def _translate(self, sid: int, iova: int, write: bool) -> tuple[int, int]:
        """(output address, end of the input page) for one address; raises TranslationFault."""
        ctx = self._ccache.get(sid)
        if ctx is None:
            ctx = self._load_context(sid)
        if ctx.tt == TT_PASS_THROUGH:
            return iova, (iova | 0xFFF) + 1
        key = sid << _KEY_SID_SHIFT
        e = self._tlb4k.get(key | iova >> 12)
        if e is None:
            e = self._tlb2m.get(key | iova >> 21)
            if e is None:
                e = self._tlb1g.get(key | iova >> 30)
                if e is None:
                    e = self._walk(sid, ctx, iova, write)
        if not (e[4] if write else e[3]):
            raise TranslationFault(FaultReason.WRITE_DENIED if write else FaultReason.READ_DENIED, ctx.fpd)
        shift = e[2]
        return e[1] | (iova & ((1 << shift) - 1)), ((iova >> shift) + 1) << shift

    def _load_context(self, sid: int) -> ContextEntry:
        if self.state.ttm:
            raise TranslationFault(FaultReason.ROOT_TTM_INVALID)
        ctx = self.walker.context(self.memory, self.state.root, sid)
        if len(self._ccache) >= CONTEXT_CACHE_CAPACITY:
            self._ccache.clear()
        self._ccache[sid] = ctx
        return ctx

    def _walk(self, sid: int, ctx: ContextEntry, iova: int, write: bool) -> _IotlbEntry:
        self.stats.walks += 1
        t = self.walker.walk(self.memory, ctx, iova, write)
        e: _IotlbEntry = (ctx.did, t.base, t.shift, t.read, t.write)
        d = self._tlb4k if t.shift == 12 else self._tlb2m if t.shift == 21 else self._tlb1g
        if len(d) >= IOTLB_CAPACITY:
            d.clear()
        d[sid << _KEY_SID_SHIFT | iova >> t.shift] = e
        sids = self._tlb_sids.get(ctx.did)
        if sids is None:
            self._tlb_sids[ctx.did] = {sid}
        else:
            sids.add(sid)
        return e

    def _fault(self, sid: int, iova: int, f: TranslationFault, write: bool) -> None:
        self.stats.faults += 1
        if f.fpd and f.reason in QUALIFIED:
            outcome = "suppressed"
        else:
            outcome = self.faults.record(self.state, sid, iova, int(f.reason), write)
        self._emit(
            "vtd.fault",
            sid=sid,
            bdf=f"{sid >> 8:02x}:{sid >> 3 & 0x1F:02x}.{sid & 7}",
            addr=iova,
            write=write,
            reason=int(f.reason),
            text=describe(f.reason),
            outcome=outcome,
        )


#: GCMD bits: (bit, persistent?, handler). Persistent bits act when they differ from GSTS;
#: one-shot bits act whenever written as 1. SIRTP runs before IRE so that one write setting
#: both enables remapping with the new table (QEMU's order). The IR commands do nothing
#: without ``intremap`` (GSTS stays 0).
_GCMD_COMMANDS: tuple[tuple[int, bool, str], ...] = (
    (GCMD_TE, True, "_cmd_translation"),
    (GCMD_SRTP, False, "_cmd_root_table"),
    (GCMD_WBF, False, "_cmd_write_buffer_flush"),
    (GCMD_QIE, True, "_cmd_queued_invalidation"),
    (GCMD_SIRTP, False, "_cmd_ir_table"),
    (GCMD_IRE, True, "_cmd_interrupt_remapping"),
    (GCMD_CFI, True, "_cmd_compatibility_format"),
)

#: Invalidation descriptor handlers by type (bits 3:0 of qword 0). Types 6-9 exist only in
#: scalable mode or with page requests, neither offered, so they are invalid here.
_DESCRIPTORS: dict[int, str] = {
    DESC_CONTEXT: "_desc_context",
    DESC_IOTLB: "_desc_iotlb",
    DESC_DEVICE_TLB: "_desc_device_tlb",
    DESC_IEC: "_desc_iec",
    DESC_WAIT: "_desc_wait",
}


class VtdDmaSpace:
    """One requester's DMA through the IOMMU.

    With translation off it is guest memory itself. With it on, every page of an access is
    translated before any byte moves, so a blocked page ends a transfer without a partial
    write; the fault is recorded and ``VtdDmaFault`` (a ``DmaFault``) raised.
    """

    __slots__ = ("_iommu", "_memory", "requester_id")

    def __init__(self, iommu: IntelIommu, requester_id: int) -> None:
        self._iommu = iommu
        self._memory = iommu.memory
        self.requester_id = requester_id

    def read(self, addr: int, length: int) -> bytes:
        iommu = self._iommu
        if not iommu._te:
            return self._memory.read(addr, length)
        # Fast path: a cached context and a cached 4K translation for a one-page access.
        sid = self.requester_id
        ctx = iommu._ccache.get(sid)
        if ctx is not None and length > 0:
            if ctx.tt == TT_PASS_THROUGH:
                return self._memory.read(addr, length)
            off = addr & 0xFFF
            if off + length <= 0x1000 and addr >= 0:
                e = iommu._tlb4k.get(sid << _KEY_SID_SHIFT | addr >> 12)
                if e is not None and e[3]:
                    return self._memory.read(e[1] | off, length)
        if length <= 0:
            if length < 0:
                raise DmaFault(addr, length, False)
            return b""
        pieces = iommu._map(sid, addr, length, False)
        if len(pieces) == 1:
            return self._memory.read(*pieces[0])
        return b"".join(self._memory.read(p, n) for p, n in pieces)

    def write(self, addr: int, data: bytes) -> None:
        iommu = self._iommu
        memory = self._memory
        if not iommu._te:
            memory.write(addr, data)
            return
        if not data:
            return
        sid = self.requester_id
        ctx = iommu._ccache.get(sid)
        if ctx is not None:
            if ctx.tt == TT_PASS_THROUGH:
                memory.write(addr, data)
                return
            off = addr & 0xFFF
            if off + len(data) <= 0x1000 and addr >= 0:
                e = iommu._tlb4k.get(sid << _KEY_SID_SHIFT | addr >> 12)
                if e is not None and e[4]:
                    memory.write(e[1] | off, data)
                    return
        pieces = iommu._map(sid, addr, len(data), True)
        if len(pieces) == 1:
            memory.write(pieces[0][0], data)
            return
        contains = getattr(memory, "contains", None)
        if contains is not None:
            for p, n in pieces:
                if not contains(p, n):
                    raise DmaFault(p, n, True)
        view = memoryview(data)
        done = 0
        for p, n in pieces:
            memory.write(p, bytes(view[done : done + n]))
            done += n

    def __repr__(self) -> str:
        sid = self.requester_id
        return f"<VtdDmaSpace {sid >> 8:02x}:{sid >> 3 & 0x1F:02x}.{sid & 7}>"


class VtdMsiSender:
    """One requester's interrupts through the IOMMU (an ``MsiSender``; see ``msi_sender``)."""

    __slots__ = ("_iommu", "requester_id")

    def __init__(self, iommu: IntelIommu, requester_id: int) -> None:
        self._iommu = iommu
        self.requester_id = requester_id

    def send(self, address: int, data: int) -> None:
        self._iommu._send_interrupt(self.requester_id, address, data)

    def __repr__(self) -> str:
        sid = self.requester_id
        return f"<VtdMsiSender {sid >> 8:02x}:{sid >> 3 & 0x1F:02x}.{sid & 7}>"
