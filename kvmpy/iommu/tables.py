"""Legacy-mode VT-d translation structures: root table, context tables, second-level page walk.

Formats (VT-d spec 9.1, 9.3, 9.8; checked against QEMU's ``intel_iommu_internal.h`` and
VirtualBox's ``iommu-intel.h``), all little-endian:

* **Root table**: 4 KiB, 256 16-byte entries indexed by bus. Low qword: bit 0 P, bits 63:12 the
  context-table pointer (CTP); bits 11:1 and everything above the host address width are
  reserved, and so is the whole high qword.
* **Context table**: 4 KiB, 256 16-byte entries indexed by devfn. Low qword: bit 0 P, bit 1 FPD
  (fault processing disable), bits 3:2 TT (00 untranslated requests through the second-level
  tables, 01 the same plus device-TLB requests — needs ECAP.DT, 10 pass-through — needs ECAP.PT,
  11 reserved), bits 11:4 reserved, bits 63:12 SLPTPTR. High qword: bits 2:0 AW (1 = 39-bit,
  3-level; 2 = 48-bit, 4-level; must be a SAGAW value), 6:3 ignored, 7 reserved, 23:8 DID,
  63:24 reserved.
* **Second-level paging entries**: 4 KiB tables of 512 8-byte entries. Bit 0 R, bit 1 W (an
  entry with neither is not present), bit 7 PS (a 2 MiB leaf at level 2, a 1 GiB leaf at
  level 3; reserved at level 4), bit 11 SNP (reserved without ECAP.SC), bit 62 TM (reserved
  without ECAP.DT), bits 63 and 61:52 ignored, bits (HAW-1):12 the address, bits 51:HAW
  reserved; a large leaf's address bits below its size are reserved too. Bits 6:2 and 10:8 are
  ignored by this model, as by QEMU (they carry memory-type and execute bits only with ECAP.MTS
  or ERS, which are not offered).

The walk (spec 3.6, QEMU ``vtd_iova_to_slpte``): levels = AW + 2; an address at or above
2^min(30 + 9*AW, MGAW+1) faults with reason 4; at each level the entry at index
(iova >> (12 + 9*(level-1))) & 511 is read; permissions are the AND of R/W down the walk; the
leaf is a level-1 entry or one with PS at level 2/3. Order of checks per entry: not present →
permission fault (5 write / 6 read); reserved bits in a present entry → 0xC; the requested access
not permitted → 5/6. (QEMU checks the permission before the reserved bits; both orders are
allowed by the spec, which defines reserved-bit faults for present entries only.) A table that
cannot be read faults with 7 — or 3 (invalid context entry) when it is the top-level table,
since then it is the context entry's SLPTPTR that is bad.

All table reads go through the raw guest-memory DmaSpace: table walks are not themselves
translated. Builders (``root_entry``, ``context_entry``, ``sl_pte``) encode the formats once
for tests and tools.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import DmaFault
from ..hw.dma import DmaSpace
from .faults import FaultReason, TranslationFault

__all__ = [
    "ROOT_ENTRY_SIZE",
    "CONTEXT_ENTRY_SIZE",
    "PTE_SIZE",
    "TT_UNTRANSLATED",
    "TT_DEVICE_TLB",
    "TT_PASS_THROUGH",
    "PTE_R",
    "PTE_W",
    "PTE_PS",
    "PTE_SNP",
    "ContextEntry",
    "Translation",
    "PageWalker",
    "root_entry",
    "context_entry",
    "sl_pte",
    "agaw_width",
]

ROOT_ENTRY_SIZE = 16
CONTEXT_ENTRY_SIZE = 16
PTE_SIZE = 8
ENTRIES_PER_TABLE = 512
PAGE_SHIFT = 12

# Root entry, low qword
ROOT_P = 1 << 0
ROOT_RSVD_LO = 0xFFE  # bits 11:1
# Context entry, low qword
CTX_P = 1 << 0
CTX_FPD = 1 << 1
CTX_TT_SHIFT = 2
CTX_TT_MASK = 0x3 << CTX_TT_SHIFT
CTX_RSVD_LO = 0xFF0  # bits 11:4
# Context entry, high qword
CTX_AW_MASK = 0x7
CTX_DID_SHIFT = 8
CTX_DID_MASK = 0xFFFF << CTX_DID_SHIFT
CTX_RSVD_HI = 0xFFFF_FFFF_FF00_0080  # bits 63:24 and 7

TT_UNTRANSLATED = 0
TT_DEVICE_TLB = 1
TT_PASS_THROUGH = 2

# Second-level paging entry
PTE_R = 1 << 0
PTE_W = 1 << 1
PTE_PS = 1 << 7
PTE_SNP = 1 << 11
PTE_TM = 1 << 62
PTE_IGNORED_HIGH = 0xBFF0_0000_0000_0000  # bits 63 and 61:52
ADDR_BITS_MAX = 52

_Q = struct.Struct("<Q")
_QQ = struct.Struct("<QQ")


def agaw_width(aw: int) -> int:
    """Address width of a context entry's AW value: 30 + 9*AW (39 for AW=1, 48 for AW=2)."""
    return 30 + 9 * aw


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """A decoded, validated legacy context entry (what the context cache holds)."""

    lo: int
    hi: int
    fpd: bool
    tt: int
    slptptr: int
    aw: int
    did: int

    @property
    def levels(self) -> int:
        return self.aw + 2

    @property
    def pass_through(self) -> bool:
        return self.tt == TT_PASS_THROUGH


class Translation(NamedTuple):
    """A leaf: the output page base, its size as a shift (12, 21, 30), and the permissions."""

    base: int
    shift: int
    read: bool
    write: bool


class PageWalker:
    """Root/context lookup and second-level walk for one unit's configuration.

    ``aw_bits`` is the host address width (MGAW = aw_bits - 1 in CAP); ``agaws`` the AW values
    SAGAW advertises; ``pass_through`` whether ECAP.PT is set; ``large_levels`` the levels
    where PS may be set (from CAP.SLLPS).
    """

    def __init__(
        self,
        aw_bits: int,
        agaws: frozenset[int],
        *,
        pass_through: bool = True,
        large_levels: frozenset[int] = frozenset({2, 3}),
    ) -> None:
        self.aw_bits = aw_bits
        self.agaws = agaws
        self.pass_through = pass_through
        self.large_levels = large_levels
        self.haw_mask = (1 << aw_bits) - 1
        #: Reserved bits beyond the host address width, in any entry that holds an address.
        self.above_haw = ((1 << 64) - 1) & ~self.haw_mask & ~PTE_IGNORED_HIGH
        self.addr_mask = self.haw_mask & ~0xFFF
        base = self.above_haw | PTE_SNP
        self.rsvd = (0, base, base, base, base | PTE_PS)
        self.rsvd_large = (0, 0, base | 0x1F_F000, base | 0x3FFF_F000, 0)

    # -- root and context --------------------------------------------------------------------
    def context(self, memory: DmaSpace, root: int, sid: int) -> ContextEntry:
        """The validated context entry of requester ``sid`` (bus << 8 | devfn)."""
        bus, devfn = (sid >> 8) & 0xFF, sid & 0xFF
        try:
            re_lo, re_hi = _QQ.unpack(memory.read(root + ROOT_ENTRY_SIZE * bus, ROOT_ENTRY_SIZE))
        except (DmaFault, ValueError, OverflowError):
            raise TranslationFault(FaultReason.ROOT_TABLE_READ_ERROR) from None
        if not re_lo & ROOT_P:
            raise TranslationFault(FaultReason.ROOT_NOT_PRESENT)
        if re_hi or re_lo & (ROOT_RSVD_LO | self.above_haw):
            raise TranslationFault(FaultReason.ROOT_RESERVED)
        ctp = re_lo & self.addr_mask
        try:
            lo, hi = _QQ.unpack(memory.read(ctp + CONTEXT_ENTRY_SIZE * devfn, CONTEXT_ENTRY_SIZE))
        except (DmaFault, ValueError, OverflowError):
            raise TranslationFault(FaultReason.CONTEXT_TABLE_READ_ERROR) from None
        fpd = bool(lo & CTX_FPD)
        if not lo & CTX_P:
            raise TranslationFault(FaultReason.CONTEXT_NOT_PRESENT, fpd)
        if hi & CTX_RSVD_HI or lo & (CTX_RSVD_LO | self.above_haw):
            raise TranslationFault(FaultReason.CONTEXT_RESERVED, fpd)
        aw = hi & CTX_AW_MASK
        tt = (lo & CTX_TT_MASK) >> CTX_TT_SHIFT
        if aw not in self.agaws:
            raise TranslationFault(FaultReason.CONTEXT_INVALID, fpd)
        if tt == TT_DEVICE_TLB or tt == 3 or (tt == TT_PASS_THROUGH and not self.pass_through):
            raise TranslationFault(FaultReason.CONTEXT_INVALID, fpd)
        return ContextEntry(lo, hi, fpd, tt, lo & self.addr_mask, aw, (hi & CTX_DID_MASK) >> CTX_DID_SHIFT)

    # -- second-level walk --------------------------------------------------------------------
    def limit(self, ctx: ContextEntry) -> int:
        """First address beyond what ``ctx`` can translate (AGAW clipped to the MGAW)."""
        return 1 << min(agaw_width(ctx.aw), self.aw_bits)

    def walk(self, memory: DmaSpace, ctx: ContextEntry, iova: int, write: bool) -> Translation:
        """Translate ``iova`` for one access; raises TranslationFault (with ``ctx.fpd``)."""
        fpd = ctx.fpd
        if iova < 0 or iova >= self.limit(ctx):
            raise TranslationFault(FaultReason.ADDRESS_BEYOND_MGAW, fpd)
        denied = FaultReason.WRITE_DENIED if write else FaultReason.READ_DENIED
        table = ctx.slptptr
        level = ctx.levels
        top = level
        readable = writable = True
        while True:
            shift = PAGE_SHIFT + 9 * (level - 1)
            addr = table + PTE_SIZE * ((iova >> shift) & (ENTRIES_PER_TABLE - 1))
            try:
                (pte,) = _Q.unpack(memory.read(addr, PTE_SIZE))
            except (DmaFault, ValueError, OverflowError):
                reason = FaultReason.CONTEXT_INVALID if level == top else FaultReason.PAGING_ENTRY_READ_ERROR
                raise TranslationFault(reason, fpd) from None
            if not pte & (PTE_R | PTE_W):
                raise TranslationFault(denied, fpd)
            leaf = level == 1 or (pte & PTE_PS and level in self.large_levels)
            rsvd = self.rsvd_large[level] if leaf and level > 1 else self.rsvd[level]
            if level > 1 and pte & PTE_PS and level not in self.large_levels:
                rsvd |= PTE_PS
            if pte & rsvd:
                raise TranslationFault(FaultReason.PAGING_ENTRY_RESERVED, fpd)
            readable = readable and bool(pte & PTE_R)
            writable = writable and bool(pte & PTE_W)
            if not (writable if write else readable):
                raise TranslationFault(denied, fpd)
            if leaf:
                return Translation(pte & self.addr_mask & ~((1 << shift) - 1), shift, readable, writable)
            table = pte & self.addr_mask
            level -= 1


# --- builders -------------------------------------------------------------------------------
def root_entry(ctp: int, present: bool = True) -> bytes:
    """A 16-byte legacy root entry pointing at the context table ``ctp``."""
    return _QQ.pack((ctp & ~0xFFF) | (ROOT_P if present else 0), 0)


def context_entry(
    slptptr: int = 0,
    did: int = 0,
    aw: int = 1,
    tt: int = TT_UNTRANSLATED,
    *,
    fpd: bool = False,
    present: bool = True,
) -> bytes:
    """A 16-byte legacy context entry."""
    lo = (slptptr & ~0xFFF) | (tt & 3) << CTX_TT_SHIFT | (CTX_FPD if fpd else 0) | (CTX_P if present else 0)
    hi = (aw & CTX_AW_MASK) | (did & 0xFFFF) << CTX_DID_SHIFT
    return _QQ.pack(lo, hi)


def sl_pte(addr: int, read: bool = True, write: bool = True, *, large: bool = False) -> int:
    """A second-level paging entry value (next table or page frame at ``addr``)."""
    return (addr & ~0xFFF) | (PTE_R if read else 0) | (PTE_W if write else 0) | (PTE_PS if large else 0)
