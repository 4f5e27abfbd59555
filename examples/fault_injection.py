#!/usr/bin/env python3
"""Fault injection from Python: hooks answer a device's reads themselves, and the guest believes it.

    python3 examples/fault_injection.py --kernel build/firmware/demo.elf --append batch

Takes the options of ``kvmpy boot``. Two injections, each visible in the guest's own report:

- a phantom COM2: kvmpy has no second UART, so the demo guest's scratch-register test at
  0x2ff fails and it reports "COM2 (0x2f8): absent". Here a hook keeps what the guest writes to
  0x2ff (and swallows the write) and answers reads with it, so the test passes and the guest
  reports a 16550 that does not exist;
- a broken fw_cfg (with ``--break-fw-cfg``): the hook answers the signature item's data reads
  with "XXXX" instead of "QEMU", and the guest decides fw_cfg is absent.

The guest's console is printed as it arrives; the exit status is 0 when the guest saw the fake.
"""

from __future__ import annotations

import sys

from kvmpy import Machine

COM2_SCRATCH = 0x2FF
FW_CFG_SELECTOR, FW_CFG_DATA = 0x510, 0x511
FW_CFG_SIGNATURE = 0x0000


def main(argv: list[str]) -> int:
    break_fw_cfg = "--break-fw-cfg" in argv
    argv = [a for a in argv if a != "--break-fw-cfg"]
    vm = Machine.from_args(argv + ["--console", "none"])
    scratch = {"value": 0xFF}

    @vm.tracer.on("io", port=COM2_SCRATCH, direction="out")
    def keep(event):
        scratch["value"] = event.value
        event.swallow()  # nothing is there: nobody else should see it

    @vm.tracer.on("io", port=COM2_SCRATCH, direction="in")
    def give_back(event):
        return scratch["value"]  # the answer to the guest's `in`: no device is asked

    if break_fw_cfg:
        selected = {"key": None}

        @vm.tracer.on("io", port=FW_CFG_SELECTOR, direction="out")
        def select(event):
            selected["key"] = event.value

        @vm.tracer.on("io", port=FW_CFG_DATA, direction="in")
        def signature(event):
            if selected["key"] == FW_CFG_SIGNATURE:
                return b"X" * event.count  # one byte per element of a `rep insb`

    with vm:
        vm.run()
        out = vm.output.decode(errors="replace")
    sys.stdout.write(out)
    fooled = "COM2 (0x2f8): 16550 UART" in out and (not break_fw_cfg or "fw_cfg: absent" in out)
    print(f"--- the guest {'believed' if fooled else 'did NOT believe'} the injected answers")
    return 0 if fooled else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
