#!/usr/bin/env python3
"""Capture the guest's console byte stream from traced port writes, without touching the UART.

    python3 examples/console_capture.py --kernel build/firmware/demo.elf --append batch

Takes the options of ``kvmpy boot``. A hook watches every write to COM1's eight ports and keeps
what a 16550 would transmit: bytes written to THR (offset 0) while the divisor latch is closed
(LCR bit 7) and loopback is off (MCR bit 4). It prints the text it reassembled and whether it
is byte for byte what the UART sent to the console.
"""

from __future__ import annotations

import sys

from kvmpy import Machine

COM1 = 0x3F8
THR, LCR, MCR = 0, 3, 4
LCR_DLAB, MCR_LOOP = 0x80, 0x10


def main(argv: list[str]) -> int:
    vm = Machine.from_args(argv + ["--console", "none"])
    captured = bytearray()
    regs = {LCR: 0, MCR: 0}

    @vm.tracer.on("io", port=range(COM1, COM1 + 8), direction="out")
    def uart_write(event):
        offset = event.port - COM1
        if offset in regs:
            regs[offset] = event.value
        elif offset == THR and not regs[LCR] & LCR_DLAB and not regs[MCR] & MCR_LOOP:
            captured.extend(event.data)  # string I/O (rep outsb) carries several bytes

    with vm:
        stop = vm.run()
        console = vm.output
    text = captured.decode(errors="replace")
    sys.stdout.write(text)
    same = bytes(captured) == console
    print(f"--- {len(captured)} bytes captured from traced 'out' exits; identical to the console output: "
          f"{'yes' if same else 'NO'}; the guest stopped: {stop.message or stop.reason.name}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
