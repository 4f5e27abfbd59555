"""DMA-remapping faults: reason codes, the primary fault log and the fault event.

**Reason codes** (VT-d spec, "Non-recoverable fault reason encodings" for legacy-mode DMA
remapping; the same numbers as QEMU's ``VTDFaultReason`` and VirtualBox's ``VTDADDRFAULT_L*``).
A not-present paging entry (R = W = 0) is a permission fault, 5 for a write and 6 for a read;
7 is only for a paging entry that could not be *read*. An invalid TTM latched from RTADDR gives
0x30 (the spec's RTA.1 condition) for every request.

**Qualified faults** are the ones a context entry's FPD (fault processing disable) bit
suppresses: the request is still blocked, but nothing is recorded or signalled. Faults found
before a context entry is in hand (root table, reserved bits in root/context entries) are always
reported. The split follows QEMU's ``vtd_qualified_faults``.

**Primary fault logging** (spec 7.3.1, QEMU ``vtd_report_dmar_fault``): records form a ring of
``count`` 128-bit registers at CAP.FRO*16. A fault goes to the next slot in turn; if FSTS.PFO is
already set, or that slot still holds an unserviced record (F = 1), the fault is dropped and PFO
is set. Recording sets F, makes FSTS.PPF (the OR of every F) read 1, and — if PPF was clear —
points FSTS.FRI at the record. Hardware "may collapse" faults from one requester while a record
of it is pending; this model collapses only an exact repeat (same requester, page, reason and
type), so a device retrying a blocked transfer does not fill the ring, but two different faults
from one device are both seen.

**The fault event** is an MSI described by FEADDR/FEUADDR/FEDATA. It is raised only when a new
condition appears with none already pending (PPF, PFO, IQE, ICE and ITE all clear before): then
FECTL.IP is set, and unless FECTL.IM masks it the MSI is sent and IP cleared. A masked event stays
pending in IP and is sent when software clears IM; software servicing every condition (clearing
PFO/IQE/ICE/ITE and every F) clears IP.

Record layout (bits of the 128-bit register): 63:12 FI (page address of the request), 79:64 SID,
103:96 FR (reason), 126 T (1 = read, 0 = write — the spec's encoding, which Linux prints as
"DMA Read"/"DMA Write"), 127 F.

**Interrupt-remapping faults** (reasons 0x20-0x26, spec "Interrupt Remapping Fault Conditions")
share the same log and event. Their record carries the interrupt index in FI bits 63:48 (bits
47:12 clear) and T = 0: T is defined only for DMA faults (QEMU's ``vtd_report_ir_fault`` records
them the same way, and Linux's ``dmar_fault_do_one`` prints ``fault index`` as FI >> 48 for these
reasons). A blocked request whose index was never computed (a malformed request, a blocked
compatibility-format interrupt) records index 0. The IRTE's FPD bit suppresses the qualified
ones: not present (0x22), reserved bits (0x24) and source-id mismatch (0x26).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from .regfile import RegisterFile

__all__ = [
    "FaultReason",
    "QUALIFIED",
    "IR_QUALIFIED",
    "is_interrupt_fault",
    "describe",
    "TranslationFault",
    "FaultRecord",
    "FaultLog",
    "FSTS_PFO",
    "FSTS_PPF",
    "FSTS_IQE",
    "FSTS_ICE",
    "FSTS_ITE",
    "FSTS_FRI_SHIFT",
    "FSTS_PENDING",
    "FECTL_IM",
    "FECTL_IP",
]


class FaultReason(IntEnum):
    """Legacy-mode DMA-remapping fault reasons (the FR field of a fault record)."""

    ROOT_NOT_PRESENT = 0x1
    CONTEXT_NOT_PRESENT = 0x2
    CONTEXT_INVALID = 0x3  # AW not in SAGAW, TT reserved/unsupported, SLPTPTR unreadable
    ADDRESS_BEYOND_MGAW = 0x4
    WRITE_DENIED = 0x5  # includes a not-present entry on a write
    READ_DENIED = 0x6  # includes a not-present entry on a read
    PAGING_ENTRY_READ_ERROR = 0x7  # a next-level pointer led to memory that cannot be read
    ROOT_TABLE_READ_ERROR = 0x8
    CONTEXT_TABLE_READ_ERROR = 0x9
    ROOT_RESERVED = 0xA
    CONTEXT_RESERVED = 0xB
    PAGING_ENTRY_RESERVED = 0xC
    TRANSLATION_TYPE_BLOCKED = 0xD  # only for translated/translation (ATS) requests; never raised here
    ROOT_TTM_INVALID = 0x30  # RTADDR.TTM programmed with a mode this unit does not support
    # Interrupt remapping (spec 5.1.4.1 / 7.1): the FI field then holds the interrupt index.
    IR_REQUEST_RESERVED = 0x20  # remappable request with reserved address/data bits set
    IR_INDEX_BEYOND_TABLE = 0x21  # interrupt_index >= the table size IRTA.S latched
    IR_ENTRY_NOT_PRESENT = 0x22
    IR_TABLE_READ_ERROR = 0x23  # the IRTE could not be read from IRTA's address
    IR_ENTRY_RESERVED = 0x24  # reserved (or conditionally reserved) IRTE bits set
    IR_COMPAT_BLOCKED = 0x25  # compatibility-format interrupt while CFIS = 0 or EIME = 1
    IR_SOURCE_ID_MISMATCH = 0x26  # requester id fails the IRTE's SVT/SQ/SID check


_DESCRIPTIONS = {
    FaultReason.ROOT_NOT_PRESENT: "root entry not present",
    FaultReason.CONTEXT_NOT_PRESENT: "context entry not present",
    FaultReason.CONTEXT_INVALID: "invalid context entry",
    FaultReason.ADDRESS_BEYOND_MGAW: "address beyond the guest address width",
    FaultReason.WRITE_DENIED: "write not permitted by the page tables",
    FaultReason.READ_DENIED: "read not permitted by the page tables",
    FaultReason.PAGING_ENTRY_READ_ERROR: "paging entry could not be read",
    FaultReason.ROOT_TABLE_READ_ERROR: "root table could not be read",
    FaultReason.CONTEXT_TABLE_READ_ERROR: "context table could not be read",
    FaultReason.ROOT_RESERVED: "reserved bits set in a root entry",
    FaultReason.CONTEXT_RESERVED: "reserved bits set in a context entry",
    FaultReason.PAGING_ENTRY_RESERVED: "reserved bits set in a paging entry",
    FaultReason.TRANSLATION_TYPE_BLOCKED: "request blocked by the context entry's translation type",
    FaultReason.ROOT_TTM_INVALID: "root table address register names an unsupported table mode",
    FaultReason.IR_REQUEST_RESERVED: "reserved bits set in a remappable interrupt request",
    FaultReason.IR_INDEX_BEYOND_TABLE: "interrupt index beyond the remapping table size",
    FaultReason.IR_ENTRY_NOT_PRESENT: "interrupt remapping table entry not present",
    FaultReason.IR_TABLE_READ_ERROR: "interrupt remapping table could not be read",
    FaultReason.IR_ENTRY_RESERVED: "reserved bits set in an interrupt remapping table entry",
    FaultReason.IR_COMPAT_BLOCKED: "compatibility-format interrupt blocked",
    FaultReason.IR_SOURCE_ID_MISMATCH: "interrupt requester failed the entry's source-id check",
}

#: Reasons that a context entry's FPD bit suppresses.
QUALIFIED = frozenset(
    {
        FaultReason.CONTEXT_NOT_PRESENT,
        FaultReason.CONTEXT_INVALID,
        FaultReason.ADDRESS_BEYOND_MGAW,
        FaultReason.WRITE_DENIED,
        FaultReason.READ_DENIED,
        FaultReason.PAGING_ENTRY_READ_ERROR,
        FaultReason.PAGING_ENTRY_RESERVED,
        FaultReason.TRANSLATION_TYPE_BLOCKED,
    }
)


#: Interrupt-remapping reasons that an IRTE's FPD bit suppresses (the spec's "qualified" ones).
IR_QUALIFIED = frozenset(
    {
        FaultReason.IR_ENTRY_NOT_PRESENT,
        FaultReason.IR_ENTRY_RESERVED,
        FaultReason.IR_SOURCE_ID_MISMATCH,
    }
)

IR_REASON_FIRST = 0x20
IR_REASON_LAST = 0x2F


def is_interrupt_fault(reason: int) -> bool:
    """Whether a fault reason belongs to interrupt remapping (FI then holds an index)."""
    return IR_REASON_FIRST <= reason <= IR_REASON_LAST


def describe(reason: int) -> str:
    """One line for a reason code, e.g. for trace output and DmaFault messages."""
    try:
        return _DESCRIPTIONS[FaultReason(reason)]
    except ValueError:
        return f"fault reason {reason:#x}"


class TranslationFault(Exception):
    """Raised by the table walk: the request is blocked for ``reason``.

    ``fpd`` is the FPD bit of the context entry involved (False when none was read yet).
    """

    def __init__(self, reason: FaultReason, fpd: bool = False) -> None:
        super().__init__(describe(reason))
        self.reason = reason
        self.fpd = fpd


# --- FSTS / FECTL bits (spec 11.4.7.1, 11.4.7.2) ------------------------------------------
FSTS_PFO = 1 << 0  # primary fault overflow (RW1C)
FSTS_PPF = 1 << 1  # primary pending fault (RO: OR of every record's F)
FSTS_IQE = 1 << 4  # invalidation queue error (RW1C)
FSTS_ICE = 1 << 5  # invalidation completion error (RW1C)
FSTS_ITE = 1 << 6  # invalidation time-out error (RW1C)
FSTS_FRI_SHIFT = 8  # 15:8 fault record index (RO)
FSTS_FRI_MASK = 0xFF << FSTS_FRI_SHIFT
#: Conditions that, while any is pending, keep a new fault from raising a new event.
FSTS_PENDING = FSTS_PFO | FSTS_PPF | FSTS_IQE | FSTS_ICE | FSTS_ITE

FECTL_IM = 1 << 31  # interrupt mask
FECTL_IP = 1 << 30  # interrupt pending (RO)

# --- fault record fields, high qword (bits 127:64 of the record) --------------------------
FRCD_HI_F = 1 << 63
FRCD_HI_T = 1 << 62  # 1 = read request
FRCD_HI_FR_SHIFT = 32
FRCD_HI_SID_MASK = 0xFFFF
FRCD_LO_FI_MASK = ~0xFFF & 0xFFFF_FFFF_FFFF_FFFF
FRCD_LO_IR_INDEX_SHIFT = 48  # interrupt-remapping faults: FI bits 63:48 are the index


@dataclass(frozen=True)
class FaultRecord:
    """One fault recording register's content.

    For an interrupt-remapping fault ``addr`` is the FI field as recorded (index << 48) and
    ``write`` is True (T = 0); ``interrupt``/``index`` read it the way software does.
    """

    sid: int
    addr: int
    reason: int
    write: bool

    @property
    def interrupt(self) -> bool:
        return is_interrupt_fault(self.reason)

    @property
    def index(self) -> int:
        """The interrupt index of an interrupt-remapping fault (FI bits 63:48)."""
        return self.addr >> FRCD_LO_IR_INDEX_SHIFT

    def encode(self) -> tuple[int, int]:
        """(low qword, high qword) with F set."""
        hi = FRCD_HI_F | (self.reason & 0xFF) << FRCD_HI_FR_SHIFT | (self.sid & FRCD_HI_SID_MASK)
        if not self.write:
            hi |= FRCD_HI_T
        return self.addr & FRCD_LO_FI_MASK, hi

    @classmethod
    def decode(cls, lo: int, hi: int) -> FaultRecord | None:
        """The record in (lo, hi), or None when its F bit is clear."""
        if not hi & FRCD_HI_F:
            return None
        return cls(
            hi & FRCD_HI_SID_MASK, lo & FRCD_LO_FI_MASK, (hi >> FRCD_HI_FR_SHIFT) & 0xFF, not hi & FRCD_HI_T
        )


class _RingState(Protocol):
    csr: bytearray
    next_fault: int


class FaultLog:
    """The primary fault log and fault event of one remapping unit (see the module docstring).

    ``send_event()`` delivers the fault-event MSI as FEADDR/FEUADDR/FEDATA describe it.
    """

    def __init__(
        self,
        regs: RegisterFile,
        base: int,
        count: int,
        send_event: Callable[[], None],
    ) -> None:
        self.regs = regs
        self.base = base
        self.count = count
        self.send_event = send_event

    # -- records --------------------------------------------------------------------------
    def _hi_off(self, i: int) -> int:
        return self.base + 16 * i + 8

    def record_at(self, st: _RingState, i: int) -> FaultRecord | None:
        lo = self.regs.get_at(st.csr, self.base + 16 * i, 8)
        hi = self.regs.get_at(st.csr, self._hi_off(i), 8)
        return FaultRecord.decode(lo, hi)

    def pending(self, st: _RingState) -> list[FaultRecord]:
        """Every record with F set, in ring order from FSTS.FRI."""
        fri = (self.regs.get(st.csr, "FSTS") & FSTS_FRI_MASK) >> FSTS_FRI_SHIFT
        out = []
        for k in range(self.count):
            r = self.record_at(st, (fri + k) % self.count)
            if r is not None:
                out.append(r)
        return out

    def record(self, st: _RingState, sid: int, addr: int, reason: int, write: bool) -> str:
        """Log one fault; returns what happened: "recorded", "collapsed" or "overflow"."""
        fsts = self.regs.get(st.csr, "FSTS")
        if fsts & FSTS_PFO:
            return "overflow"
        new = FaultRecord(sid & 0xFFFF, addr & FRCD_LO_FI_MASK, reason, write)
        if fsts & FSTS_PPF and new in self.pending(st):
            return "collapsed"
        i = st.next_fault % self.count
        if self.regs.get_at(st.csr, self._hi_off(i), 8) & FRCD_HI_F:
            self.regs.set(st.csr, "FSTS", fsts | FSTS_PFO)
            return "overflow"
        lo, hi = new.encode()
        self.regs.set_at(st.csr, self.base + 16 * i, 8, lo)
        self.regs.set_at(st.csr, self._hi_off(i), 8, hi)
        st.next_fault = (i + 1) % self.count
        new_fsts = fsts | FSTS_PPF
        if not fsts & FSTS_PPF:
            new_fsts = (new_fsts & ~FSTS_FRI_MASK) | (i << FSTS_FRI_SHIFT)
        self.regs.set(st.csr, "FSTS", new_fsts)
        self.raise_event(st, fsts)
        return "recorded"

    def record_interrupt(self, st: _RingState, sid: int, index: int, reason: int) -> str:
        """Log one interrupt-remapping fault: FI = index << 48, T = 0 (see the module docstring)."""
        return self.record(st, sid, (index & 0xFFFF) << FRCD_LO_IR_INDEX_SHIFT, reason, True)

    def update_ppf(self, st: _RingState) -> None:
        """Recompute FSTS.PPF after software cleared F bits, then maybe clear FECTL.IP."""
        any_f = any(self.regs.get_at(st.csr, self._hi_off(i), 8) & FRCD_HI_F for i in range(self.count))
        fsts = self.regs.get(st.csr, "FSTS")
        fsts = fsts | FSTS_PPF if any_f else fsts & ~FSTS_PPF
        self.regs.set(st.csr, "FSTS", fsts)
        self.update_ip(st)

    # -- the event ------------------------------------------------------------------------
    def raise_event(self, st: _RingState, fsts_before: int) -> None:
        """A new condition (fault recorded, IQE, ...) appeared; FSTS was ``fsts_before``."""
        if fsts_before & FSTS_PENDING:
            return  # an earlier condition is still unserviced: no new interrupt
        fectl = self.regs.get(st.csr, "FECTL") | FECTL_IP
        self.regs.set(st.csr, "FECTL", fectl)
        if not fectl & FECTL_IM:
            self.send_event()
            self.regs.set(st.csr, "FECTL", fectl & ~FECTL_IP)

    def unmasked(self, st: _RingState) -> None:
        """FECTL was written: a pending event is delivered once IM is clear."""
        fectl = self.regs.get(st.csr, "FECTL")
        if fectl & FECTL_IP and not fectl & FECTL_IM:
            self.send_event()
            self.regs.set(st.csr, "FECTL", fectl & ~FECTL_IP)

    def update_ip(self, st: _RingState) -> None:
        """Software serviced conditions: IP clears once none is left."""
        if not self.regs.get(st.csr, "FSTS") & FSTS_PENDING:
            fectl = self.regs.get(st.csr, "FECTL")
            if fectl & FECTL_IP:
                self.regs.set(st.csr, "FECTL", fectl & ~FECTL_IP)
