"""Debian's SeaBIOS on kvmpy's PC, judged by what it shows on the VGA text screen.

Why these: the banner proves the whole early platform (PAM shadowing, fw_cfg, PCI, the VGA
option ROM's int 10h) works, since SeaBIOS prints it through the VGA BIOS only after all of it;
"not a bootable disk" proves it read the IDE disk and judged its MBR; the boot menu proves the
PS/2 keyboard's interrupts and scan code translation reach a real BIOS, and that the drives it
lists are ours. The screen is decoded from the text buffer (no OCR).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from hvmtools import HvmMachine, make_disk

#: PS/2 scan code set 2 make codes (release: 0xF0 then the make code).
KEY_ESC = 0x76
KEY_2 = 0x1E
BANNER = re.compile(r"^SeaBIOS \(version [^)]+\)$")


def test_banner_on_the_vga_text_screen(hvm, bootsect, tmp_path: Path) -> None:
    """SeaBIOS's first line is its banner; then it boots the disk, whose MBR runs."""
    disk = tmp_path / "hello.img"
    make_disk(disk, 1 << 20, bootsect("hello"))
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "64M")
    stop = h.run()
    screen = h.screen()
    assert stop.status == 1, f"the boot sector did not run to its end{h.report()}"
    assert screen and BANNER.match(screen[0]), f"no SeaBIOS banner on the first row{h.report()}"
    assert "Booting from Hard Disk..." in screen, h.report()
    assert "HELLO drive=0x80" in h.serial, h.report()
    # kvmpy's PC leaves fw_cfg's boot-menu flag off, as QEMU does: no 2.5 s wait for ESC
    assert "Press ESC for boot menu." not in screen, h.report()


def test_disk_that_is_not_bootable(hvm, tmp_path: Path) -> None:
    """A disk without the 0xAA55 signature: SeaBIOS says so, tries the rest, and gives up."""
    disk = tmp_path / "blank.img"
    make_disk(disk, 1 << 20)
    h: HvmMachine = hvm("--hvm", str(disk), "--memory", "64M")
    assert h.wait_for_screen(r"^No bootable device\."), f"SeaBIOS never gave up{h.report()}"
    screen = h.screen()
    assert BANNER.match(screen[0]), h.report()
    assert "Booting from Hard Disk..." in screen, h.report()
    assert "Boot failed: not a bootable disk" in screen, h.report()
    assert "HELLO" not in h.serial


def test_boot_menu_lists_the_drives_and_boots_the_choice(hvm, bootsect, tmp_path: Path) -> None:
    """fw_cfg's boot-menu flag makes SeaBIOS offer its menu; ESC on the PS/2 keyboard opens it,
    it lists both IDE disks, and "2" boots the second one. The first disk is blank, so the
    program's HELLO can only come from the choice made in the menu."""
    blank, second = tmp_path / "blank.img", tmp_path / "second.img"
    make_disk(blank, 1 << 20)
    make_disk(second, 2 << 20, bootsect("hello"))
    h: HvmMachine = hvm("--drive", f"file={blank},index=0", "--drive", f"file={second},index=1",
                        "--memory", "64M")
    fw_cfg = h.devices["fw_cfg"]
    fw_cfg.set_boot_menu(True)
    # long enough that the ESC, sent as soon as the prompt shows, always lands inside the wait
    fw_cfg.add_file("etc/boot-menu-wait", struct.pack("<H", 5000))

    seen: dict[str, list[str]] = {}

    def drive_the_menu(m: HvmMachine) -> bool:
        screen = m.screen()
        if "prompt" not in seen and "Press ESC for boot menu." in screen:
            seen["prompt"] = screen
            m.tap(KEY_ESC)
        elif "prompt" in seen and "menu" not in seen and "Select boot device:" in screen \
                and any(row.startswith("2. ") for row in screen):
            seen["menu"] = screen
            m.tap(KEY_2)
        return False  # the guest ends the run itself (debug-exit) once the choice booted

    h.run_until(drive_the_menu)
    assert "prompt" in seen, f'"Press ESC for boot menu." never appeared{h.report()}'
    assert "menu" in seen, f"the boot menu did not open after ESC was pressed{h.report()}"
    # the menu stays on the screen under "Booting from Hard Disk..." (HELLO does not clear it);
    # read it there, since the watcher may have seen the last line half printed
    items = [row for row in h.screen() if re.match(r"^\d+\. ", row)]
    assert len(items) == 2, f"the menu should list exactly the two disks: {items}"
    assert re.match(r"^1\. ata0-0: .*Hard-Disk \(1 MiBytes\)$", items[0]), items
    assert re.match(r"^2\. ata0-1: .*Hard-Disk \(2 MiBytes\)$", items[1]), items
    assert h.stop is not None and h.stop.status == 1, f"the chosen disk did not boot{h.report()}"
    assert "HELLO drive=0x80" in h.serial, h.report()
