"""`--screenshot FILE.png` from the command line: the PNG a user opens shows SeaBIOS's screen,
written when the run ends (here: the --timeout) and on SIGUSR2 while it runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from hvmtools import read_png

ROOT = Path(__file__).resolve().parents[2]


def _not_blank(rgb: bytes) -> bool:
    return len(set(rgb[i : i + 3] for i in range(0, len(rgb), 3))) > 1


def test_screenshot_at_exit_and_on_sigusr2(seabios, tmp_path: Path) -> None:
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(1 << 20))
    shot = tmp_path / "screen.png"
    p = subprocess.Popen([sys.executable, "-m", "kvmpy", "boot", "--hvm", str(disk), "--memory", "64M",
                          "--timeout", "20", "--screenshot", str(shot)],
                         cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(8)  # SeaBIOS's banner is up within seconds
    p.send_signal(signal.SIGUSR2)
    for _ in range(100):
        if shot.exists():
            break
        time.sleep(0.1)
    assert shot.exists(), "no screenshot on SIGUSR2"
    mid = read_png(shot)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 124, err
    width, height, rgb = read_png(shot)
    assert (width, height) == (720, 400) and _not_blank(rgb)
    assert (mid[0], mid[1]) == (720, 400) and _not_blank(mid[2])
