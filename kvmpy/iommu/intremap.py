"""VT-d interrupt remapping: the IRTE format, the remapping lookup and its interrupt-entry cache.

Why it exists: with interrupt remapping on, a device (or the IOAPIC) no longer names a CPU and a
vector in its MSI; it names an *interrupt index* into a table the guest kernel owns, and the
IOMMU turns the index into the real message after checking that the requester is allowed to use
that entry. That is what stops an assigned device from injecting arbitrary interrupts.

Formats (VT-d spec 5.1 and 9.10; checked against QEMU's ``intel_iommu.c`` / ``x86-iommu.c`` and
Linux's ``irq_remapping.c``), little-endian:

* **IRTA_REG** (0xB8, 64-bit): bits 63:12 the table address, bit 11 EIME (x2APIC 32-bit
  destinations; writable only with ECAP.EIM), bits 3:0 S — the table has 2^(S+1) entries. GCMD.SIRTP
  latches it; Linux writes S = 0xF (65536 entries).
* **IRTE** (16 bytes, remapped format). Low qword: bit 0 P, 1 FPD (suppress qualified faults — read
  even when P = 0), 2 DM (1 = logical), 3 RH, 4 TM (1 = level), 7:5 DLM, 11:8 available, 14:12
  reserved, 15 IM (1 = posted format: posted interrupts are not offered, so it is reserved here),
  23:16 vector, 31:24 reserved, 63:32 DST — x2APIC (EIME = 1): the 32-bit APIC id; xAPIC: the
  8-bit id in bits 47:40, bits 39:32 and 63:48 reserved. High qword: 15:0 SID, 17:16 SQ, 19:18 SVT,
  63:20 reserved. DLM values 3 and 6 and SVT value 3 are reserved encodings (spec: "conditionally
  reserved fields programmed wrongly" → 0x24; QEMU instead reports SVT 3 as a source-id failure).
* **Source-id check** (SVT): 0 none; 1 compare SID with the requester id under the SQ mask (SQ 0:
  all 16 bits, 1: ignore bit 2, 2: ignore bits 2:1, 3: ignore bits 2:0 — the function number);
  2 the requester's bus must lie in [SID 15:8, SID 7:0] (start bus, end bus — Linux's
  ``set_irte_verify_bus`` writes ``start << 8 | end``; QEMU reads the two the other way round).
* **Remappable MSI** (address bit 4 = 1): address 31:20 = 0xFEE, 19:5 handle[14:0], 3 SHV, 2
  handle[15], 1:0 ignored; bits 63:32 must be 0. With SHV the index is handle + data[15:0] and
  data[31:16] must be 0; without it the index is the handle and the data is ignored (the IOAPIC
  puts its RTE vector and trigger there). Address bit 4 = 0 is a compatibility-format interrupt:
  it passes unchanged only while GSTS.CFIS = 1 and EIME = 0, otherwise it is blocked (0x25).
* **The output** is a compatibility-format MSI (QEMU's ``x86_iommu_irq_to_msi_message``): address
  0xFEE00000 | dest[7:0] << 12 | RH << 3 | DM << 2, and with EIME dest[31:8] in address bits 63:40
  (KVM's 32-bit x2APIC id format); data vector | DLM << 8 | 1 << 14 (assert) | TM << 15.

Check order (spec table of interrupt-remapping fault conditions, as QEMU's ``vtd_irte_get``):
request reserved bits (0x20) → compatibility format blocked (0x25) → index ≥ table size (0x21) →
IRTE unreadable (0x23) → not present (0x22) → reserved bits (0x24) → source id (0x26). The first
four are always reported; an IRTE with FPD = 1 suppresses the last three.

**Interrupt-entry cache**: validated IRTEs (present, no reserved bits) are kept by index until the
guest invalidates them with an IEC descriptor (global, or 2^IM entries from IIDX), sets the table
pointer again, or the cache fills. Not-present and malformed entries are never cached (CM = 0
semantics), so a newly filled slot is seen at once, while an edited live entry needs the
invalidation Linux's ``modify_irte`` issues — as on hardware.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import DmaFault
from ..hw.dma import DmaSpace
from .faults import FaultReason

__all__ = [
    "IRTE_SIZE",
    "IRTA_EIME",
    "IRTA_S_MASK",
    "IOAPIC_SOURCE_ID",
    "Irte",
    "IrFault",
    "InterruptRemapper",
    "irte",
    "remappable_msi",
    "irta",
]

IRTE_SIZE = 16
#: Spec 5.1.1: S = 0xF is the largest table (65536 entries), all a 16-bit index can reach.
MAX_IRT_ENTRIES = 1 << 16

# --- IRTA_REG (spec 11.4.8.5 / 10.4.29) ----------------------------------------------------
IRTA_EIME = 1 << 11
IRTA_S_MASK = 0xF

# --- IRTE, low qword (spec 9.10) -----------------------------------------------------------
IRTE_P = 1 << 0
IRTE_FPD = 1 << 1
IRTE_DM = 1 << 2
IRTE_RH = 1 << 3
IRTE_TM = 1 << 4
IRTE_DLM_SHIFT = 5
IRTE_AVAIL_SHIFT = 8
IRTE_IM = 1 << 15  # posted format (needs CAP.PI): reserved here
IRTE_VECTOR_SHIFT = 16
IRTE_DST_SHIFT = 32
IRTE_RSVD_LO = 0x7000 | IRTE_IM | 0xFF00_0000  # bits 14:12, 15, 31:24
#: xAPIC destinations use DST bits 15:8 only (IRTE bits 47:40); 39:32 and 63:48 are reserved.
IRTE_RSVD_LO_XAPIC = 0xFF << 32 | 0xFFFF << 48
# --- IRTE, high qword ----------------------------------------------------------------------
IRTE_SQ_SHIFT = 16
IRTE_SVT_SHIFT = 18
IRTE_RSVD_HI = 0xFFFF_FFFF_FFF0_0000  # bits 127:84
SVT_NONE, SVT_SID_SQ, SVT_BUS = 0, 1, 2
#: SQ → requester-id bits compared (spec table "SQ field"; QEMU's ``vtd_svt_mask``).
SQ_MASKS = (0xFFFF, 0xFFFB, 0xFFF9, 0xFFF8)
#: Delivery-mode encodings the spec leaves reserved (011b, 110b).
DLM_RESERVED = frozenset({3, 6})

# --- interrupt requests (spec 5.1.2) -------------------------------------------------------
MSI_ADDR_HEAD_SHIFT = 20
MSI_ADDR_HEAD = 0xFEE
MSI_ADDR_REMAPPABLE = 1 << 4  # interrupt format: 1 = remappable
MSI_ADDR_SHV = 1 << 3
MSI_ADDR_HANDLE15 = 1 << 2
MSI_ADDR_HANDLE_SHIFT = 5
MSI_DATA_SUBHANDLE_MASK = 0xFFFF
MSI_DATA_RESERVED_SHV = 0xFFFF_0000
# compatibility-format output (the LAPIC's MSI layout)
MSI_BASE = 0xFEE0_0000
MSI_ADDR_DEST_SHIFT = 12
MSI_ADDR_RH = 1 << 3
MSI_ADDR_DM = 1 << 2
MSI_DATA_DLM_SHIFT = 8
MSI_DATA_ASSERT = 1 << 14
MSI_DATA_TM = 1 << 15

#: The IOAPIC's source id: QEMU's q35 pseudo platform bus 0xFF, devfn 0
#: (``Q35_PSEUDO_BUS_PLATFORM``, ``Q35_PSEUDO_DEVFN_IOAPIC``). The DMAR table's IOAPIC device scope
#: names it (start bus 0xFF, path 00.0), Linux copies it into the SID of every IOAPIC IRTE with
#: SVT = 1, SQ = 0 (``set_ioapic_sid``), so the IOAPIC's messages must carry exactly this id.
IOAPIC_SOURCE_ID = 0xFF00

#: Entries the interrupt-entry cache holds before it is emptied (bounds memory; hardware evicts too).
IEC_CAPACITY = 4096

_QQ = struct.Struct("<QQ")


class IrFault(Exception):
    """An interrupt request blocked for ``reason``.

    ``index`` is the interrupt index computed for it (0 when none was), ``fpd`` the FPD bit of the
    IRTE involved (False before one was read).
    """

    def __init__(self, reason: FaultReason, index: int = 0, fpd: bool = False) -> None:
        super().__init__(f"interrupt remapping fault {int(reason):#x}")
        self.reason = reason
        self.index = index
        self.fpd = fpd


@dataclass(frozen=True, slots=True)
class Irte:
    """A decoded, validated remapped-format IRTE (what the interrupt-entry cache holds).

    ``dest`` is the APIC destination already taken from DST per EIME (8-bit id in xAPIC mode).
    """

    lo: int
    hi: int
    fpd: bool
    logical: bool
    redirection_hint: bool
    level: bool
    delivery_mode: int
    vector: int
    dest: int
    sid: int
    sq: int
    svt: int

    def message(self) -> tuple[int, int]:
        """The compatibility-format (address, data) this entry delivers."""
        dest = self.dest
        address = (
            MSI_BASE
            | (dest & 0xFF) << MSI_ADDR_DEST_SHIFT
            | (MSI_ADDR_RH if self.redirection_hint else 0)
            | (MSI_ADDR_DM if self.logical else 0)
            | (dest & 0xFFFF_FF00) << 32
        )
        data = (
            self.vector
            | self.delivery_mode << MSI_DATA_DLM_SHIFT
            | MSI_DATA_ASSERT
            | (MSI_DATA_TM if self.level else 0)
        )
        return address, data

    def allows(self, sid: int) -> bool:
        """Whether requester ``sid`` passes this entry's source-id verification."""
        if self.svt == SVT_NONE:
            return True
        if self.svt == SVT_SID_SQ:
            mask = SQ_MASKS[self.sq]
            return sid & mask == self.sid & mask
        bus = (sid >> 8) & 0xFF
        return self.sid >> 8 <= bus <= self.sid & 0xFF  # SVT_BUS: [start bus, end bus]


def decode_irte(lo: int, hi: int, index: int, eime: bool) -> Irte:
    """Validate and decode one IRTE; raises IrFault (0x22, 0x24) carrying its FPD bit."""
    fpd = bool(lo & IRTE_FPD)
    if not lo & IRTE_P:
        raise IrFault(FaultReason.IR_ENTRY_NOT_PRESENT, index, fpd)
    dlm = (lo >> IRTE_DLM_SHIFT) & 0x7
    svt = (hi >> IRTE_SVT_SHIFT) & 0x3
    rsvd = IRTE_RSVD_LO if eime else IRTE_RSVD_LO | IRTE_RSVD_LO_XAPIC
    if lo & rsvd or hi & IRTE_RSVD_HI or dlm in DLM_RESERVED or svt == 3:
        raise IrFault(FaultReason.IR_ENTRY_RESERVED, index, fpd)
    dst = lo >> IRTE_DST_SHIFT
    return Irte(
        lo,
        hi,
        fpd,
        bool(lo & IRTE_DM),
        bool(lo & IRTE_RH),
        bool(lo & IRTE_TM),
        dlm,
        (lo >> IRTE_VECTOR_SHIFT) & 0xFF,
        dst if eime else (dst >> 8) & 0xFF,
        hi & 0xFFFF,
        (hi >> IRTE_SQ_SHIFT) & 0x3,
        svt,
    )


class InterruptRemapper:
    """The remapping lookup of one unit: the latched table, the IEC, and request decoding.

    ``memory`` is raw guest memory (the table is read untranslated). The owner latches the table
    with ``set_table`` (GCMD.SIRTP) and decides whether remapping is enabled at all; ``remap``
    only ever sees requests that must be remapped.
    """

    def __init__(self, memory: DmaSpace) -> None:
        self.memory = memory
        self.base = 0
        self.entries = 0  # no table latched yet: every index is beyond it
        self.eime = False
        self.cache: dict[int, Irte] = {}
        self.reads = 0  # IRTE fetches from memory (cache misses), for tests and statistics

    def set_table(self, base: int, entries: int, eime: bool) -> None:
        """GCMD.SIRTP: a new table (or the same one anew); cached entries are dropped."""
        self.base = base
        self.entries = entries
        self.eime = eime
        self.cache.clear()

    def invalidate(self, index: int | None = None, mask: int = 0) -> None:
        """IEC invalidation: everything (``index`` None) or 2^mask entries around ``index``."""
        if index is None:
            self.cache.clear()
            return
        count = 1 << mask
        first = index & ~(count - 1)
        if count <= len(self.cache):
            for i in range(first, first + count):
                self.cache.pop(i, None)
        else:
            for i in [i for i in list(self.cache) if first <= i < first + count]:
                del self.cache[i]

    def entry(self, index: int) -> Irte:
        """The validated IRTE at ``index`` (cached or fetched); raises IrFault."""
        e = self.cache.get(index)
        if e is not None:
            return e
        if index >= self.entries:
            raise IrFault(FaultReason.IR_INDEX_BEYOND_TABLE, index)
        try:
            lo, hi = _QQ.unpack(self.memory.read(self.base + IRTE_SIZE * index, IRTE_SIZE))
        except (DmaFault, ValueError, OverflowError):
            raise IrFault(FaultReason.IR_TABLE_READ_ERROR, index) from None
        self.reads += 1
        e = decode_irte(lo, hi, index, self.eime)
        if len(self.cache) >= IEC_CAPACITY:
            self.cache.clear()
        self.cache[index] = e
        return e

    def remap(self, sid: int | None, address: int, data: int, *, cfi: bool) -> tuple[int, int]:
        """The delivered (address, data) for one request; raises IrFault when it is blocked.

        ``sid`` None skips source-id verification (a request whose requester is unknown, as
        QEMU's ``X86_IOMMU_SID_INVALID``); ``cfi`` is GSTS.CFIS.
        """
        if address >> 32 or (address >> MSI_ADDR_HEAD_SHIFT) & 0xFFF != MSI_ADDR_HEAD:
            raise IrFault(FaultReason.IR_REQUEST_RESERVED)
        if not address & MSI_ADDR_REMAPPABLE:
            if cfi and not self.eime:
                return address, data
            raise IrFault(FaultReason.IR_COMPAT_BLOCKED)
        index = (address >> MSI_ADDR_HANDLE_SHIFT) & 0x7FFF | (0x8000 if address & MSI_ADDR_HANDLE15 else 0)
        if address & MSI_ADDR_SHV:
            if data & MSI_DATA_RESERVED_SHV:
                raise IrFault(FaultReason.IR_REQUEST_RESERVED)
            index += data & MSI_DATA_SUBHANDLE_MASK
        e = self.entry(index)
        if sid is not None and not e.allows(sid):
            raise IrFault(FaultReason.IR_SOURCE_ID_MISMATCH, index, e.fpd)
        return e.message()


# --- builders (tests and tools) ---------------------------------------------------------------
def irte(
    vector: int = 0,
    dest: int = 0,
    *,
    present: bool = True,
    fpd: bool = False,
    logical: bool = False,
    redirection_hint: bool = False,
    level: bool = False,
    delivery_mode: int = 0,
    avail: int = 0,
    sid: int = 0,
    sq: int = 0,
    svt: int = SVT_NONE,
    x2apic: bool = False,
) -> bytes:
    """A 16-byte remapped-format IRTE; ``dest`` is the APIC id (placed per ``x2apic``)."""
    dst = dest & 0xFFFF_FFFF if x2apic else (dest & 0xFF) << 8
    lo = (
        (IRTE_P if present else 0)
        | (IRTE_FPD if fpd else 0)
        | (IRTE_DM if logical else 0)
        | (IRTE_RH if redirection_hint else 0)
        | (IRTE_TM if level else 0)
        | (delivery_mode & 7) << IRTE_DLM_SHIFT
        | (avail & 0xF) << IRTE_AVAIL_SHIFT
        | (vector & 0xFF) << IRTE_VECTOR_SHIFT
        | dst << IRTE_DST_SHIFT
    )
    hi = (sid & 0xFFFF) | (sq & 3) << IRTE_SQ_SHIFT | (svt & 3) << IRTE_SVT_SHIFT
    return _QQ.pack(lo, hi)


def remappable_msi(index: int, *, subhandle: int | None = None) -> tuple[int, int]:
    """(address, data) of a remappable-format MSI naming ``index`` (with SHV when subhandle given)."""
    address = (
        MSI_BASE
        | (index & 0x7FFF) << MSI_ADDR_HANDLE_SHIFT
        | MSI_ADDR_REMAPPABLE
        | (MSI_ADDR_HANDLE15 if index & 0x8000 else 0)
        | (MSI_ADDR_SHV if subhandle is not None else 0)
    )
    return address, (subhandle or 0) & MSI_DATA_SUBHANDLE_MASK


def irta(base: int, size_field: int = IRTA_S_MASK, *, eime: bool = False) -> int:
    """An IRTA_REG value: a table of 2^(size_field+1) entries at ``base``."""
    return (base & ~0xFFF) | (IRTA_EIME if eime else 0) | (size_field & IRTA_S_MASK)
