"""IOMMU models: translated DmaSpaces for devices, and the ACPI tables that describe them.

Only ``hw`` (DmaSpace, MsiSender), ``acpi`` (table objects), ``layout`` and ``errors`` are used
here; devices never import this package — they receive ``IntelIommu.dma_space(rid)`` through the
PCI bus's ``dma_provider``.
"""

from __future__ import annotations

from .dmar import Dmar
from .faults import FaultReason, FaultRecord, TranslationFault, describe
from .tables import ContextEntry, PageWalker, Translation, context_entry, root_entry, sl_pte
from .vtd import (
    VTD_ACCESS_SIZES,
    VTD_MMIO_SIZE,
    EventHook,
    IntelIommu,
    VtdDmaFault,
    VtdDmaSpace,
    VtdState,
    VtdStats,
)

__all__ = [
    "IntelIommu",
    "VtdDmaSpace",
    "VtdDmaFault",
    "VtdState",
    "VtdStats",
    "EventHook",
    "VTD_MMIO_SIZE",
    "VTD_ACCESS_SIZES",
    "Dmar",
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
