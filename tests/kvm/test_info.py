"""``kvmpy info``: the host report a newcomer runs first."""

import subprocess
import sys
from pathlib import Path

from kvmpy.info import CAPABILITIES, vfio_status
from kvmpy.kvm import host_vendor


def test_info_reports_the_host():
    p = subprocess.run([sys.executable, "-m", "kvmpy", "info"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "KVM API version 12" in out
    vendor = host_vendor()
    assert f"virtualization: {vendor}" in out
    if Path("/sys/module/kvm_pvm").exists():
        assert "PVM" in out and "instruction" in out and "hwvirt" in out
    for name, _, _ in CAPABILITIES:
        assert name in out
    assert "KVM_CAP_IRQCHIP" in out and "MISSING" not in out
    assert "recommended" in out and "at most" in out
    vf = vfio_status()
    state = "available" if vf.available else "not available"
    assert f"device passthrough (VFIO): {state}: {vf.reason}" in out


def test_run_without_a_terminal_reports_and_powers_off(guest_program):
    """What `make run` does, with stdin not a terminal: the guest reports and powers off."""
    guest_program("demo")
    p = subprocess.run([sys.executable, "-m", "kvmpy", "run"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    if host_vendor() in ("VT-x", "AMD-V") and "kvmpy demo guest" not in p.stdout:
        assert "KVMPY-BOOT-OK" in p.stdout  # Debian's kernel and initramfs
    else:
        assert "kvmpy demo guest" in p.stdout and "demo: powering off" in p.stdout
        if host_vendor() == "PVM":
            assert "PVM" in p.stderr
