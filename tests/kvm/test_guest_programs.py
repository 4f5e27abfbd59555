"""Our guest programs under kvmpy: SMP bring-up, fw_cfg, the UART's interrupts, multiboot."""

import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from kvmpy.machine import Machine
from kvmpy.options import MachineConfig


@pytest.mark.parametrize("irqchip", ["kernel", "split"])
@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_smp_bring_up(kvmpy_boot, cpus, irqchip):
    r = kvmpy_boot("smp", "--cpus", str(cpus), "--memory", "64M", "--irqchip", irqchip)
    assert r.status == 1, r.out + r.err
    assert f"CPUS {cpus}" in r.out and "SMP OK" in r.out
    ups = sorted(int(x) for x in re.findall(r"AP (\d+) up", r.out))
    assert ups == list(range(1, cpus))


def test_fw_cfg_from_a_guest(guest_program):
    data = bytes((i * 7 + 3) & 0xFF for i in range(10000))
    cfg = MachineConfig(kernel=Path(guest_program("fwcfg")), memory=96 << 20, cpus=2, console="none")
    with Machine(cfg) as m:
        m.devices["fw_cfg"].add_file("etc/kvmpy-test", data)
        stop = m.run(timeout=120)
        out = m.output.decode()
    assert stop.status == 1, out + stop.message
    want = f"len={len(data)} sum=0x{sum(data) & 0xFFFFFFFF:08x}"
    assert f"etc/kvmpy-test PIO {want}" in out
    assert f"etc/kvmpy-test DMA {want}" in out
    assert "FWCFG OK" in out
    # what the guest reads through fw_cfg agrees with the machine it runs in
    assert re.search(r"\b2 CPUs?\b|cpus[ =:]+2|CPU count[ =:]+2", out, re.I), out
    assert re.search(r"96 MiB|0x6000000|100663296", out), out


@pytest.mark.parametrize("irqchip", ["kernel", "split"])
@pytest.mark.parametrize("route", ["ioapic", "pic"])
def test_serial_thre_and_rx_interrupts(guest_program, route, irqchip):
    """Input typed once the guest's driver is ready (it flushes the FIFO when it sets up, as
    Linux's 8250 driver does) arrives through RX interrupts and is echoed back — through KVM's
    in-kernel PIC and IOAPIC, and through kvmpy's own (the split irqchip)."""
    line = b"the quick brown fox jumps over the lazy dog"
    cmd = [sys.executable, "-m", "kvmpy", "boot", "--kernel", str(guest_program("serial_irq")),
           "--append", f"rx={route}", "--irqchip", irqchip]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as p:
        seen = b""
        while b"RX READY" not in seen:
            chunk = p.stdout.read1(4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        p.stdin.write(line + b"\n")
        p.stdin.flush()
        rest, err = p.communicate(timeout=60)
    out = (seen + rest).decode(errors="replace")
    assert p.returncode == 1, out + err.decode()
    assert "THRE OK (ioapic" in out and "THRE OK (pic" in out
    assert line.upper().decode() in out
    assert f"RX {len(line)}" in out and "SERIAL_IRQ OK" in out


def test_multiboot_cmdline_and_modules(kvmpy_boot, tmp_path):
    """QEMU's -kernel convention: the command line starts with the kernel's file name, each
    --initrd is a module named by its file name, and the memory map is filled in."""
    mods = []
    for i, size in enumerate((5000, 70000)):
        p = tmp_path / f"mod{i}.bin"
        p.write_bytes(zlib.compress(bytes(range(256)) * (size // 256 + 1))[:size].ljust(size, b"\0"))
        mods.append(p)
    r = kvmpy_boot("demo", "--append", "batch hello=world", "--initrd", str(mods[0]),
                   "--initrd", str(mods[1]), "--memory", "80M")
    assert r.status == 0, r.out + r.err
    kernel = re.search(r"Command line: '(\S+) batch hello=world'", r.out)
    assert kernel and kernel.group(1).endswith("demo.elf"), r.out
    found = re.findall(r"Module (\d+): 0x([0-9a-f]+)-0x([0-9a-f]+) '([^']*)'", r.out)
    assert [(int(n), name) for n, _, _, name in found] == [(0, str(mods[0])), (1, str(mods[1]))]
    for (_, start, end, _), p in zip(found, mods, strict=True):
        assert int(end, 16) - int(start, 16) == p.stat().st_size
        assert int(start, 16) % 4096 == 0
    assert "total RAM: 79 MiB" in r.out  # 80 MiB less the EBDA and the BIOS area


def test_demo_batch_report(kvmpy_boot):
    r = kvmpy_boot("demo", "--append", "batch", "--cpus", "2", "--memory", "128M")
    assert r.status == 0, r.out + r.err
    assert "kvmpy demo guest" in r.out
    assert "CPUs: 2 (APIC ids 0 1)" in r.out
    assert "fw_cfg: signature QEMU" in r.out
    assert "demo: powering off" in r.out


def test_instructions_pvm_cannot_emulate(guest_program):
    """int3, popcnt, fwait, ldmxcsr/stmxcsr, clac/stac and a protected-mode iret give their
    architectural results: run
    natively on VT-x/AMD-V, completed by kvmpy where KVM is PVM-backed."""
    cfg = MachineConfig(kernel=Path(guest_program("insns")), memory=32 << 20, console="none")
    with Machine(cfg) as m:
        stop = m.run(timeout=60)
        out = m.output.decode()
        completed = dict(m.pvm.counts) if m.pvm is not None else None
    assert stop.status == 1, out + stop.message
    assert "INSNS OK" in out
    if completed is not None:  # a PVM host: each of these went through kvmpy
        assert completed["int3"] == 1 and completed["popcnt"] == 3 and completed["fwait"] == 1
        assert completed["ldmxcsr"] == 1 and completed["stmxcsr"] == 1
        assert completed["iret"] == 1
        if "clac/stac OK" in out:
            assert completed["clac"] == 1 and completed["stac"] == 1
