"""IOMMU models: translated DmaSpaces for devices, and the ACPI tables that describe them.

Only ``hw`` (DmaSpace, MsiSender), ``acpi`` (table objects), ``layout`` and ``errors`` are used
here; devices never import this package — they receive ``IntelIommu.dma_space(rid)`` through the
PCI bus's ``dma_provider`` — and, with interrupt remapping, send their MSIs through
``IntelIommu.msi_sender(rid)`` (the IOAPIC with ``IOAPIC_SOURCE_ID``).
"""

from __future__ import annotations

from .dmar import Dmar
from .faults import FaultReason, FaultRecord, TranslationFault, describe
from .intremap import IOAPIC_SOURCE_ID, InterruptRemapper, IrFault, Irte, irta, irte, remappable_msi
from .tables import ContextEntry, PageWalker, Translation, context_entry, root_entry, sl_pte
from .vtd import (
    VTD_ACCESS_SIZES,
    VTD_MMIO_SIZE,
    EventHook,
    IntelIommu,
    VtdDmaFault,
    VtdDmaSpace,
    VtdMsiSender,
    VtdState,
    VtdStats,
)

__all__ = [
    "IntelIommu",
    "VtdDmaSpace",
    "VtdMsiSender",
    "VtdDmaFault",
    "VtdState",
    "VtdStats",
    "EventHook",
    "VTD_MMIO_SIZE",
    "VTD_ACCESS_SIZES",
    "Dmar",
    "IOAPIC_SOURCE_ID",
    "InterruptRemapper",
    "Irte",
    "IrFault",
    "irte",
    "irta",
    "remappable_msi",
    "FaultReason",
    "FaultRecord",
    "TranslationFault",
    "describe",
    "ContextEntry",
    "PageWalker",
    "Translation",
    "root_entry",
    "context_entry",
    "sl_pte",
]
