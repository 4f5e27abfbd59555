"""The ACPI DMAR table: how a guest learns that a VT-d unit exists and where its registers are.

Linux finds VT-d only through this table (``detect_intel_iommu`` → ``parse_dmar_table``). Layout
(VT-d spec 8.1-8.3; QEMU's ``build_dmar_q35``), little-endian after the 36-byte ACPI header
(signature "DMAR", revision 1):

* +36 host address width minus one (aw_bits - 1, as QEMU writes it), +37 flags (bit 0
  INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2 DMA_CTRL_PLATFORM_OPT_IN), +38 ten reserved bytes,
  then remapping structures.
* One DRHD (type 0): u16 type, u16 length, u8 flags (bit 0 INCLUDE_PCI_ALL: every PCI device
  of the segment is behind this unit), u8 size (register set is 2^size pages; 0 for our one
  page), u16 segment, u64 register base, then device scopes.
* Device scope: u8 type (3 IOAPIC, 4 MSI-capable HPET), u8 length (6 + 2 per path entry),
  u8 flags, u8 reserved, u8 enumeration id (the IOAPIC id, or the HPET number), u8 start bus,
  then (device, function) path entries.

Platform devices behind the unit are not on a real PCI bus; QEMU names its IOAPIC with the
pseudo requester id bus 0xFF, device 0, function 0 (``Q35_PSEUDO_BUS_PLATFORM``,
``Q35_PSEUDO_DEVFN_IOAPIC``) and we do the same (``IOAPIC_SOURCE_ID``). DMA remapping does not
use it; interrupt remapping does: Linux (``ir_parse_one_ioapic_scope``) takes the scope's
enumeration id as the IOAPIC id — it must equal the MADT's IOAPIC id, or Linux refuses interrupt
remapping ("ioapic N has no mapping iommu") — and start bus plus the last path entry as its
source id, which it writes into every IOAPIC IRTE with SVT = 1, SQ = 0 (a source id of 0 makes
``set_ioapic_sid`` fail). So the IOAPIC's messages must reach the IOMMU carrying 0xFF00. The
scope is always there. An HPET scope is optional (QEMU has none); its requester id is equally
arbitrary and is a parameter.

Flags: INTR_REMAP is set exactly when the unit offers ECAP.IR (Linux's ``dmar_ir_support``
requires both). X2APIC_OPT_OUT stays clear as in QEMU's ``build_dmar_q35`` even without ECAP.EIM:
Linux (``intel_prepare_irq_remapping``) then remaps in xAPIC mode ("dmar0 does not support EIM")
and, as a KVM guest, may still run its LAPICs in x2APIC physical mode for APIC ids below 256; the
opt-out bit would reach the same xAPIC remapping by another path, with a firmware warning.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .. import layout
from ..acpi.tables import Sdt
from .intremap import IOAPIC_SOURCE_ID

__all__ = [
    "DMAR_FLAG_INTR_REMAP",
    "DMAR_FLAG_X2APIC_OPT_OUT",
    "DRHD_INCLUDE_PCI_ALL",
    "SCOPE_IOAPIC",
    "SCOPE_HPET",
    "IOAPIC_SOURCE_ID",
    "IOAPIC_REQUESTER_ID",
    "HPET_REQUESTER_ID",
    "Dmar",
    "device_scope",
]

DMAR_FLAG_INTR_REMAP = 1 << 0
DMAR_FLAG_X2APIC_OPT_OUT = 1 << 1
DRHD_TYPE = 0
DRHD_INCLUDE_PCI_ALL = 1 << 0
SCOPE_PCI_ENDPOINT = 1
SCOPE_PCI_BRIDGE = 2
SCOPE_IOAPIC = 3
SCOPE_HPET = 4

#: The IOAPIC's pseudo requester id (bus 0xFF, 00.0), as QEMU's q35 gives it (an older name).
IOAPIC_REQUESTER_ID = IOAPIC_SOURCE_ID
#: The HPET's pseudo requester id (bus 0xFF, 1f.0): any id no PCI function uses would do.
HPET_REQUESTER_ID = 0xFF00 | (0x1F << 3)

_DMAR_FIXED = struct.Struct("<BB10x")
_DRHD = struct.Struct("<HHBBHQ")


class _Unit(Protocol):
    aw_bits: int
    intremap: bool


def device_scope(kind: int, enumeration_id: int, requester_id: int) -> bytes:
    """A one-level device scope: start bus and (device, function) from ``requester_id``."""
    bus, dev, fn = requester_id >> 8 & 0xFF, requester_id >> 3 & 0x1F, requester_id & 7
    return struct.pack("<BBBBBBBB", kind, 8, 0, 0, enumeration_id & 0xFF, bus, dev, fn)


class Dmar(Sdt):
    """DMAR with one DRHD (INCLUDE_PCI_ALL, segment 0) and an IOAPIC scope (HPET optional).

    Accepted by ``kvmpy.acpi.build_tables(extra_tables=[Dmar(...)])`` like any table object.
    """

    signature = b"DMAR"
    revision = 1

    def __init__(
        self,
        aw_bits: int = 39,
        *,
        register_base: int = layout.VTD_BASE,
        ioapic_id: int = 0,
        ioapic_requester_id: int = IOAPIC_REQUESTER_ID,
        hpet_id: int | None = None,
        hpet_requester_id: int = HPET_REQUESTER_ID,
        intr_remap: bool = False,
        x2apic_opt_out: bool = False,
        segment: int = 0,
    ) -> None:
        if not 12 <= aw_bits <= 64:
            raise ValueError(f"host address width {aw_bits} is not sensible")
        self.aw_bits = aw_bits
        self.register_base = register_base
        self.ioapic_id = ioapic_id
        self.ioapic_requester_id = ioapic_requester_id
        self.hpet_id = hpet_id
        self.hpet_requester_id = hpet_requester_id
        self.intr_remap = intr_remap
        self.x2apic_opt_out = x2apic_opt_out
        self.segment = segment
        super().__init__()

    @classmethod
    def for_unit(cls, iommu: _Unit, *, ioapic_id: int, hpet_id: int | None = None, **kw: object) -> Dmar:
        """The DMAR describing ``iommu`` (an IntelIommu): its address width and INTR_REMAP flag,
        so the table cannot disagree with ECAP.IR."""
        return cls(
            iommu.aw_bits, ioapic_id=ioapic_id, hpet_id=hpet_id, intr_remap=iommu.intremap, **kw  # type: ignore[arg-type]
        )

    @property
    def flags(self) -> int:
        return (DMAR_FLAG_INTR_REMAP if self.intr_remap else 0) | (
            DMAR_FLAG_X2APIC_OPT_OUT if self.x2apic_opt_out else 0
        )

    def drhd(self) -> bytes:
        scopes = device_scope(SCOPE_IOAPIC, self.ioapic_id, self.ioapic_requester_id)
        if self.hpet_id is not None:
            scopes += device_scope(SCOPE_HPET, self.hpet_id, self.hpet_requester_id)
        head = _DRHD.pack(
            DRHD_TYPE, _DRHD.size + len(scopes), DRHD_INCLUDE_PCI_ALL, 0, self.segment, self.register_base
        )
        return head + scopes

    def payload(self) -> bytes:
        return _DMAR_FIXED.pack(self.aw_bits - 1, self.flags) + self.drhd()
