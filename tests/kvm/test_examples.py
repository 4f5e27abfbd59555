"""The tracing examples in examples/, run as a user runs them, against our guest programs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, *args: str, timeout: float = 120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def test_console_capture_equals_the_console(guest_program):
    demo = str(guest_program("demo"))
    rc, out, err = run_example("console_capture.py", "--kernel", demo, "--append", "batch")
    assert rc == 0, out + err
    assert "kvmpy demo guest" in out and "demo: powering off" in out
    assert "identical to the console output: yes" in out


def test_exit_histogram_counts_the_ports(guest_program):
    demo = str(guest_program("demo"))
    rc, out, err = run_example("exit_histogram.py", "--kernel", demo, "--append", "batch")
    assert rc == 0, out + err
    first, busiest = out.splitlines()[:2]
    assert "port I/O exits on" in first and "ACPI S5" in first
    assert busiest.split()[:3] == ["0x03f8", "out", "serial"]  # the console is the busiest port
    assert any(line.split()[:3] == ["0x0510", "out", "fw_cfg"] for line in out.splitlines())


def test_first_unowned_mmio_finds_the_hpet_probe(guest_program):
    rc, out, err = run_example("first_unowned_mmio.py", "--kernel", str(guest_program("mmio_probe")))
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "first unowned MMIO access: read of 4 byte(s) at 0xfed00000 on vCPU 0"
    assert lines[1].strip().startswith("instruction: mov e") and "[e" in lines[1]
    assert "rip=0x10" in lines[2]


def test_fault_injection_fools_the_guest(guest_program):
    demo = str(guest_program("demo"))
    rc, out, err = run_example("fault_injection.py", "--kernel", demo, "--append", "batch")
    assert rc == 0, out + err
    assert "COM2 (0x2f8): 16550 UART (scratch register works)" in out
    assert "fw_cfg: signature QEMU" in out
    rc, out, err = run_example("fault_injection.py", "--kernel", demo, "--append", "batch", "--break-fw-cfg")
    assert rc == 0, out + err
    assert "fw_cfg: absent" in out


def test_dma_faults_lists_what_the_iommu_blocked(guest_program):
    rc, out, err = run_example("dma_faults.py", "--kernel", str(guest_program("vtd")), "--device", "edu",
                               "--iommu", "vtd", "--append", "strict", "--memory", "64M")
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "the guest stopped: debug-exit value 0x0"
    rows = {tuple(line.split()[:2]) + (line.split("reason ")[1][:4],) for line in lines[1:]}
    assert ("00:04.0", "DMA", "0x05") in rows and ("00:04.0", "DMA", "0x06") in rows
    assert {("00:04.0", "interrupt", r) for r in ("0x21", "0x22", "0x25", "0x26")} <= rows
    assert "(first: address 0x800000)" in out and "(first: index 0x8005)" in out
    rc, out, err = run_example("dma_faults.py", "--kernel", str(guest_program("vtd")))
    assert rc == 2 and "--iommu vtd" in err
