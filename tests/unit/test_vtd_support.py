"""A guest-side driver for the VT-d model, shared by the test_vtd_* modules.

``VtdGuest`` builds root, context and second-level tables in a plain bytearray per the spec
(raw bit positions written out here, not taken from the model, so the tests pin the formats)
and drives the registers in the order Linux's intel-iommu driver does: RTADDR + GCMD.SRTP,
global context/IOTLB invalidation through CCMD/IOTLB or through the queue with a wait
descriptor, then GCMD.TE. Register accesses go through ``read``/``write`` with 4- or 8-byte
sizes, as the MMIO bus delivers them.
"""

from __future__ import annotations

import struct

from kvmpy.hw.dma import BytearrayDmaSpace
from kvmpy.iommu import IntelIommu

# Register offsets (spec 10.4), written out independently of the model.
VER, CAP, ECAP, GCMD, GSTS, RTADDR, CCMD = 0x00, 0x08, 0x10, 0x18, 0x1C, 0x20, 0x28
FSTS, FECTL, FEDATA, FEADDR, FEUADDR, PMEN = 0x34, 0x38, 0x3C, 0x40, 0x44, 0x64
IQH, IQT, IQA, ICS, IECTL = 0x80, 0x88, 0x90, 0x9C, 0xA0
IEDATA, IEADDR, IEUADDR, IQER = 0xA4, 0xA8, 0xAC, 0xB0
IRTA = 0xB8

TE, SRTP, WBF, QIE = 1 << 31, 1 << 30, 1 << 27, 1 << 26
ICC, IVT = 1 << 63, 1 << 63
PFO, PPF, IQE = 1 << 0, 1 << 1, 1 << 4
IM, IP = 1 << 31, 1 << 30
QI_DONE = 2

MIB = 1 << 20
GIB = 1 << 30
PAGE = 0x1000


def sid(bus: int, dev: int, fn: int) -> int:
    return bus << 8 | dev << 3 | fn


class RecordingMsi:
    """An MsiSender that remembers what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def send(self, address: int, data: int) -> None:
        self.sent.append((address, data))


class VtdGuest:
    """Guest memory, an IntelIommu over it, and the driver-side helpers."""

    TABLES = 0x10_0000  # page-table pool: 1 MiB .. 8 MiB
    TABLES_END = 0x80_0000

    def __init__(self, mem_size: int = 16 * MIB, **options: object) -> None:
        self.mem = BytearrayDmaSpace(mem_size)
        self.msi = RecordingMsi()
        self.events: list[tuple[str, dict]] = []
        hook = lambda n, f: self.events.append((n, f))  # noqa: E731
        self.iommu = IntelIommu(self.mem, self.msi, on_event=hook, **options)  # type: ignore[arg-type]
        self._next = self.TABLES
        self.gcmd = 0  # Linux keeps its own copy of the persistent GCMD bits
        self.root = self.alloc()
        self.ctx_tables: dict[int, int] = {}
        self.queue = 0
        self.queue_tail = 0
        self.queue_entries = 256
        self.status = 0

    # -- memory ------------------------------------------------------------------------------
    def alloc(self) -> int:
        addr = self._next
        assert addr + PAGE <= self.TABLES_END, "table pool exhausted"
        self._next += PAGE
        self.mem.mem[addr : addr + PAGE] = bytes(PAGE)
        return addr

    def q(self, addr: int) -> int:
        return struct.unpack_from("<Q", self.mem.mem, addr)[0]

    def put_q(self, addr: int, value: int) -> None:
        struct.pack_into("<Q", self.mem.mem, addr, value & (1 << 64) - 1)

    def poke(self, addr: int, data: bytes) -> None:
        self.mem.mem[addr : addr + len(data)] = data

    def peek(self, addr: int, n: int) -> bytes:
        return bytes(self.mem.mem[addr : addr + n])

    # -- registers -----------------------------------------------------------------------------
    def r32(self, off: int) -> int:
        return self.iommu.read(off, 4)

    def r64(self, off: int) -> int:
        return self.iommu.read(off, 8)

    def w32(self, off: int, value: int) -> None:
        self.iommu.write(off, 4, value & 0xFFFF_FFFF)

    def w64(self, off: int, value: int) -> None:
        self.iommu.write(off, 8, value & (1 << 64) - 1)

    def gcmd_set(self, bit: int) -> None:
        """Linux's iommu_enable_translation / dmar_enable_qi pattern: keep a copy, write it."""
        self.gcmd |= bit
        self.w32(GCMD, self.gcmd)
        assert self.r32(GSTS) & bit

    def gcmd_clear(self, bit: int) -> None:
        self.gcmd &= ~bit
        self.w32(GCMD, self.gcmd)
        assert not self.r32(GSTS) & bit

    # -- tables ------------------------------------------------------------------------------
    def set_root(self, bus: int, ctp: int | None = None, *, present: bool = True, hi: int = 0) -> int:
        """Root entry for ``bus``: bit 0 P, 63:12 context-table pointer."""
        if ctp is None:
            ctp = self.ctx_tables.get(bus) or self.alloc()
        self.ctx_tables[bus] = ctp
        self.put_q(self.root + 16 * bus, ctp | (1 if present else 0))
        self.put_q(self.root + 16 * bus + 8, hi)
        return ctp

    def set_context(
        self,
        requester: int,
        slptptr: int = 0,
        *,
        did: int = 1,
        aw: int = 1,
        tt: int = 0,
        fpd: bool = False,
        present: bool = True,
        lo_extra: int = 0,
        hi_extra: int = 0,
    ) -> None:
        """Context entry: lo 0 P, 1 FPD, 3:2 TT, 63:12 SLPTPTR; hi 2:0 AW, 23:8 DID."""
        bus, devfn = requester >> 8, requester & 0xFF
        ctp = self.ctx_tables.get(bus)
        if ctp is None:
            ctp = self.set_root(bus)
        lo = slptptr | tt << 2 | (2 if fpd else 0) | (1 if present else 0) | lo_extra
        hi = aw | did << 8 | hi_extra
        self.put_q(ctp + 16 * devfn, lo)
        self.put_q(ctp + 16 * devfn + 8, hi)

    def pte_addr(self, pgd: int, levels: int, iova: int, level: int) -> int:
        """Address of the entry for ``iova`` at ``level`` (tables must exist above it)."""
        table = pgd
        for lv in range(levels, level, -1):
            e = self.q(table + 8 * ((iova >> (12 + 9 * (lv - 1))) & 511))
            table = e & 0x000F_FFFF_FFFF_F000
        return table + 8 * ((iova >> (12 + 9 * (level - 1))) & 511)

    def map(
        self,
        pgd: int,
        levels: int,
        iova: int,
        phys: int,
        *,
        read: bool = True,
        write: bool = True,
        size: int = PAGE,
        extra: int = 0,
    ) -> int:
        """Map one page of ``size`` (4K, 2M or 1G); returns the leaf entry's address.

        Intermediate entries get R|W (bit 0, bit 1); a large leaf gets PS (bit 7).
        """
        leaf_level = {PAGE: 1, 2 * MIB: 2, GIB: 3}[size]
        table = pgd
        for lv in range(levels, leaf_level, -1):
            addr = table + 8 * ((iova >> (12 + 9 * (lv - 1))) & 511)
            e = self.q(addr)
            if not e & 3:
                nxt = self.alloc()
                self.put_q(addr, nxt | 3)
                table = nxt
            else:
                table = e & 0x000F_FFFF_FFFF_F000
        addr = table + 8 * ((iova >> (12 + 9 * (leaf_level - 1))) & 511)
        leaf = phys | (1 if read else 0) | (2 if write else 0) | (0x80 if leaf_level > 1 else 0) | extra
        self.put_q(addr, leaf)
        return addr

    # -- driver sequences ----------------------------------------------------------------------
    def set_root_pointer(self, *, split: bool = False, ttm: int = 0) -> None:
        """RTADDR then GCMD.SRTP; wait for GSTS.RTPS (iommu_set_root_entry)."""
        value = self.root | ttm << 10
        if split:
            self.w32(RTADDR, value)
            self.w32(RTADDR + 4, value >> 32)
        else:
            self.w64(RTADDR, value)
        self.w32(GCMD, self.gcmd | SRTP)
        assert self.r32(GSTS) & SRTP

    def enable_qi(self, qs: int = 0) -> None:
        """__dmar_enable_qi: IQT = 0, IQA = base | QS, GCMD.QIE, wait QIES."""
        self.queue = self.alloc()
        for _ in range((1 << qs) - 1):
            self.alloc()
        self.queue_entries = 256 << qs
        self.queue_tail = 0
        self.status = self.alloc()
        self.w32(IQT, 0)
        self.w64(IQA, self.queue | qs)
        self.gcmd_set(QIE)

    def submit(self, *descs: tuple[int, int], wait: bool = True) -> int:
        """qi_submit_sync: the descriptors, a wait descriptor with status write, IQT, spin.

        Returns the status word the wait descriptor wrote (QI_DONE when all went well).
        """
        self.put_q(self.status, 0)
        batch = list(descs)
        if wait:
            batch.append((QI_DONE << 32 | 1 << 5 | 5, self.status))
        for lo, hi in batch:
            slot = self.queue + 16 * self.queue_tail
            self.put_q(slot, lo)
            self.put_q(slot + 8, hi)
            self.queue_tail = (self.queue_tail + 1) % self.queue_entries
        self.w32(IQT, self.queue_tail << 4)
        return self.q(self.status) & 0xFFFF_FFFF

    def flush_context_global(self) -> None:
        if self.r32(GSTS) & QIE:
            assert self.submit((1 << 4 | 1, 0)) == QI_DONE
        else:
            self.w64(CCMD, ICC | 1 << 61)
            val = self.r64(CCMD)
            assert not val & ICC and (val >> 59) & 3 == 1

    def flush_iotlb_global(self) -> None:
        if self.r32(GSTS) & QIE:
            assert self.submit((1 << 4 | 2, 0)) == QI_DONE
        else:
            self.w64(0xF8, IVT | 1 << 60)
            val = self.r64(0xF8)
            assert not val & IVT and (val >> 57) & 3 == 1

    def linux_init(self, *, qi: bool | None = None) -> None:
        """init_dmars: (QI), root pointer, global flushes, translation on."""
        if qi is None:
            qi = bool(self.r64(ECAP) & 2)
        if qi:
            self.enable_qi()
        self.set_root_pointer()
        self.flush_context_global()
        self.flush_iotlb_global()
        self.gcmd_set(TE)

    def fault_records(self) -> list[tuple[int, int]]:
        """(lo, hi) of every fault recording register, from CAP.FRO and CAP.NFR."""
        cap = self.r64(CAP)
        fro = ((cap >> 24) & 0x3FF) * 16
        nfr = ((cap >> 40) & 0xFF) + 1
        return [(self.r64(fro + 16 * i), self.r64(fro + 16 * i + 8)) for i in range(nfr)]

    def events_named(self, name: str) -> list[dict]:
        return [f for n, f in self.events if n == name]


def guest(**options: object) -> VtdGuest:
    return VtdGuest(**options)
