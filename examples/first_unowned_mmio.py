#!/usr/bin/env python3
"""Find the first MMIO access to an address no device owns, and show who made it.

    python3 examples/first_unowned_mmio.py --kernel build/firmware/mmio_probe.elf

Takes the options of ``kvmpy boot``. A hook on MMIO exits with ``device="unowned"`` fires on
the first access that falls outside every device window (kvmpy would answer it like hardware:
reads as zero, writes dropped), prints the access, the instruction behind it (disassembled
from guest memory through the guest's page tables) and a few registers, then stops the run.
The ``mmio_probe`` guest program (firmware/tests/mmio_probe.c) looks for an HPET and a TPM by
reading their ID registers, as firmware does; kvmpy's direct-boot machine has neither, so it
is a ready-made culprit.
"""

from __future__ import annotations

import sys

from kvmpy import Machine


def main(argv: list[str]) -> int:
    vm = Machine.from_args(argv + ["--console", "none"])
    found = []

    @vm.tracer.on("mmio", device="unowned")
    def first(event):
        regs = event.regs()
        value = f" value {event.value:#x}" if event.is_write else ""
        found.append(f"first unowned MMIO access: {event.direction} of {event.size} byte(s) at "
                     f"{event.addr:#x}{value} on vCPU {event.vcpu}\n"
                     f"  instruction: {event.disassemble()}\n"
                     f"  rip={regs.rip:#x} rax={regs.rax:#x} rbx={regs.rbx:#x} rsi={regs.rsi:#x} "
                     f"rdi={regs.rdi:#x}")
        event.stop("found the first unowned MMIO access")

    with vm:
        stop = vm.run()
    if not found:
        print(f"no MMIO access to an unowned address before the guest stopped ({stop.message})")
        return 1
    print(found[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
