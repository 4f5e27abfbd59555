"""Network boot: the e1000 carries Debian's iPXE ROM (ipxe-qemu) in its expansion ROM BAR,
SeaBIOS finds and runs it for `--boot n`, and iPXE drives our e1000 far enough to start.

On PVM-backed hosts iPXE stops after its "Press Ctrl-B" banner, under QEMU too (see
shared/reference/pvm-host.md): its protected-mode timer path does not survive KVM's emulator
there. So this tier checks what runs everywhere: the ROM is found, run, and initialises the
NIC. DHCP and HTTP through iPXE belong to the hwvirt tier."""

from __future__ import annotations

import socket
from pathlib import Path

from hvmtools import HvmMachine

ROM = Path(__file__).resolve().parents[2] / "build" / "debian" / "pxe-e1000.rom"


def test_ipxe_rom_runs_from_the_nic(hvm, tmp_path: Path) -> None:
    assert ROM.exists(), f"{ROM} is missing: 'make test' fetches it from Debian's ipxe-qemu"
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "128M", "--boot", "n",
                        "--net", f"socket,udp={ports[0]}:{ports[1]}")
    # on a PVM host iPXE may die just after its banner (see above), before the watcher polls:
    # what counts is what the screen shows, whichever way the run ended
    h.run_until(lambda m: "Press Ctrl-B for the iPXE command line" in m.screen_text(), timeout=120)
    text = h.screen_text()
    assert "Press Ctrl-B for the iPXE command line" in text, f"iPXE did not start{h.report()}"
    assert "iPXE (http://ipxe.org) 00:03.0" in text  # SeaBIOS ran the ROM from the ROM BAR
    assert "Booting from ROM" in text  # the boot order put the network first
    assert "iPXE initialising devices...ok" in text  # iPXE probed our e1000
