#!/usr/bin/env python3
"""What the guest's IOMMU refused: every blocked DMA and interrupt, by device and reason.

    python3 examples/dma_faults.py --kernel build/firmware/vtd.elf --device edu --iommu vtd --append strict

Takes the options of ``kvmpy boot`` (give it ``--iommu vtd``). The VT-d unit reports what it
does through the tracer, beside the exits: a listener collects its ``vtd.fault`` events (a DMA
the guest's page tables do not allow) and ``vtd.ir-fault`` events (an interrupt its remapping
table refuses) and, when the guest stops, prints one line per requester, kind and reason with
the count and the first address (DMA) or interrupt index. This is what a driver developer wants
after "my device stopped working once I turned the IOMMU on": which device, which address,
which rule.
"""

from __future__ import annotations

import sys
from collections import Counter

from kvmpy import Machine
from kvmpy.events import IommuEvent


def main(argv: list[str]) -> int:
    vm = Machine.from_args(argv + ["--console", "none"])
    if vm.config.iommu is None:
        vm.close()
        print("dma_faults: give the machine an IOMMU (--iommu vtd)", file=sys.stderr)
        return 2
    counts: Counter[tuple[str, str, str]] = Counter()
    first: dict[tuple[str, str, str], str] = {}

    def listen(event, _handling) -> None:
        if not isinstance(event, IommuEvent) or event.event not in ("vtd.fault", "vtd.ir-fault"):
            return
        f = event.fields
        if event.event == "vtd.fault":
            key = (f["bdf"], "DMA write" if f["write"] else "DMA read",
                   f"0x{f['reason']:02x} {f['text']}")
            where = f"address {f['addr']:#x}"
        else:
            key = (f["bdf"], "interrupt", f"0x{f['reason']:02x} {f['text']}")
            where = f"index {f['index']:#x}"
        counts[key] += 1
        first.setdefault(key, where)

    vm.tracer.add_listener(listen)
    with vm:
        stop = vm.run()
    print(f"the guest stopped: {stop.message}")
    if not counts:
        print("the IOMMU blocked nothing")
        return 0
    for key, n in sorted(counts.items()):
        bdf, kind, reason = key
        print(f"{bdf}  {kind:10}  {n:3}x  reason {reason}  (first: {first[key]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
