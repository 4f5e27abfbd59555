#!/usr/bin/env python3
"""A histogram of the port I/O exits a guest makes while it boots, busiest port first.

    python3 examples/exit_histogram.py --kernel build/firmware/demo.elf --append batch

Takes the options of ``kvmpy boot``. An ``after`` hook (it runs once the device has answered,
so it sees the value an ``in`` returned) counts exits per port and direction, and the device
that owns the port; the bars are scaled to the busiest port. ``kvmpy trace --stats`` prints the
same counts among its tables; this is the twenty-line version to start your own from.
"""

from __future__ import annotations

import sys
from collections import Counter

from kvmpy import Machine

WIDTH = 50


def main(argv: list[str]) -> int:
    vm = Machine.from_args(argv + ["--console", "none"])
    counts: Counter[tuple[int, str]] = Counter()
    owners: dict[int, str] = {}

    @vm.tracer.on("io", after=True)
    def count(event):
        counts[event.port, event.direction] += 1  # one exit, even for a string (rep ins/outs) one
        owners[event.port] = event.device or "(unowned)"

    with vm:
        stop = vm.run()
    total = sum(counts.values())
    print(f"{total} port I/O exits on {len(owners)} ports until: {stop.message or stop.reason.name}")
    top = max(counts.values(), default=1)
    for (port, direction), n in counts.most_common():
        bar = "#" * max(1, round(WIDTH * n / top))
        print(f"  {port:#06x} {direction:<3} {owners[port]:<12} {n:>7}  {bar}")
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
