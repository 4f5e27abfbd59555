"""The HVM PC: what an unmodified guest expects of a QEMU ``pc`` machine, booted by SeaBIOS.

00:00.0 i440FX host bridge (PAM steers the 0xC0000-0xFFFFF shadow window), 00:01.0 PIIX3
ISA bridge (PIRQ routing), 00:01.1 PIIX3 IDE, 00:01.3 PIIX4 ACPI PM, 00:02.0 std VGA with
Debian's vgabios-stdvga as its ROM; on the ISA side COM1, the i8042, the CMOS RTC, fw_cfg with
DMA and the debug-exit port; KVM's in-kernel PIC, IOAPIC, LAPICs and PIT. SeaBIOS (Debian's
bios-256k.bin) is mapped at the top of 4 GiB and starts at the reset vector; the ACPI tables are
kvmpy's own, handed over through fw_cfg's table-loader so SeaBIOS installs them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..acpi import build_tables
from ..acpi.pc import pc_dsdt_terms
from ..devices.acpi_pm import AcpiPm, ResetControl
from ..devices.fw_cfg import e820_table
from ..devices.pci import PIIX4_PM_DEVFN, Piix4Pm
from ..devices.vga import StdVga
from ..devices.vga.pci import StdVgaPci
from ..errors import ImageError, MissingFileError, ResourceError, UsageError
from ..options import MachineConfig, place_drives
from ..shadow import LegacyWindow
from .isa import MachineStop, place_legacy_devices
from .parts import (
    iommu_tables,
    pci_host,
    place_extra_devices,
    place_ide,
    place_iommu,
    place_nics,
    place_passthrough,
)

if TYPE_CHECKING:
    from ..machine import Machine

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIOS = PROJECT_ROOT / "build" / "debian" / "bios-256k.bin"
DEFAULT_VGABIOS = PROJECT_ROOT / "build" / "debian" / "vgabios-stdvga.bin"
DEFAULT_NIC_ROM = PROJECT_ROOT / "build" / "debian" / "pxe-e1000.rom"
VGA_DEVFN = (2, 0)
VGA_WINDOW = 0xA_0000
VGA_WINDOW_LEN = 0x2_0000
VGA_PORTS = 0x3B0
VGA_PORTS_LEN = 0x30
VBE_DISPI_PORT = 0x1CE
#: The memory kvmpy gives KVM for itself (TSS, identity map) must never be RAM to the guest.
KVM_PRIVATE = (layout.KVM_IDENTITY_MAP_ADDR, layout.KVM_TSS_ADDR + 3 * 4096)
#: SeaBIOS's legacy boot order in CMOS (src/boot.c): nibbles 1 floppy, 2 disk, 3 CD-ROM, 4 network
CMOS_BOOTFLAG1 = 0x38
CMOS_BOOTFLAG2 = 0x3D
_BOOT_NIBBLE = {"c": 2, "d": 3, "n": 4}
#: Holes in the RAM memslots: the VGA window and the shadow segments are mapped separately.
MEMORY_HOLES = ((VGA_WINDOW, 0x10_0000),)


@dataclass
class Prepared:
    bios: bytes
    vgabios: bytes
    acpi_files: dict[str, bytes]
    nic_rom: bytes | None = None


def _read(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} does not exist{hint}") from None
    except OSError as e:
        raise MissingFileError(f"cannot read {what} {path}: {e.strerror}") from None


def prepare(config: MachineConfig) -> Prepared:
    """Check every file and build the tables before KVM is touched."""
    hint = " (run 'make' to fetch it from Debian's packages)"
    bios = _read(config.bios or DEFAULT_BIOS, "the firmware image", "" if config.bios else hint)
    if len(bios) % 0x1_0000 or not 0x1_0000 <= len(bios) <= 0x100_0000:
        raise ImageError(f"the firmware image {config.bios or DEFAULT_BIOS} is {len(bios)} bytes: "
                            "it must be a multiple of 64 KiB, at most 16 MiB")
    vgabios = _read(DEFAULT_VGABIOS, "the VGA BIOS", hint)
    for d in config.drives:
        if not d.file.exists():
            raise MissingFileError(f"the {d.media} image {d.file} does not exist")
    place_drives(config.drives)
    if config.cpus > layout.MAX_VCPUS_DEFAULT:
        raise ResourceError(f"{config.cpus} vCPUs asked for, but kvmpy supports at most "
                            f"{layout.MAX_VCPUS_DEFAULT} (8-bit xAPIC ids)")
    # the DSDT also describes PCI0 and the PIIX3's interrupt links, so an ACPI OS finds and
    # routes PCI; the 32-bit window starts where RAM below 4 GiB ends, as on QEMU's pc
    low = min(config.memory, layout.LOWMEM_LIMIT)
    tables = build_tables(cpus=config.cpus, extra_tables=iommu_tables(config),
                          dsdt_extra=pc_dsdt_terms(pci_hole=(low, layout.PCI_MMIO_END)))
    nic_rom = None
    if config.nets:
        if DEFAULT_NIC_ROM.exists():
            nic_rom = DEFAULT_NIC_ROM.read_bytes()
        elif "n" in config.boot_order:
            raise MissingFileError(f"network boot needs iPXE's ROM {DEFAULT_NIC_ROM}{hint}")
    elif "n" in config.boot_order[:1]:
        raise UsageError("--boot n needs a network card: add --net")
    return Prepared(bios, vgabios, tables.loader_files(), nic_rom)


def build(m: Machine, prep: Prepared) -> dict[str, Any]:
    """Create the devices, place them on the buses and the PCI bus; return them by name."""
    stop = MachineStop(m)
    devices = place_legacy_devices(m, stop)
    rtc, fw_cfg = devices["rtc"], devices["fw_cfg"]
    order = [_BOOT_NIBBLE[c] for c in m.config.boot_order[:3]] + [0, 0, 0]
    rtc.set_nvram(CMOS_BOOTFLAG2, order[0] | (order[1] << 4))
    rtc.set_nvram(CMOS_BOOTFLAG1, (rtc.nvram(CMOS_BOOTFLAG1) & 0x0F) | (order[2] << 4))
    for name, data in prep.acpi_files.items():
        fw_cfg.add_file(name, data)
    e820 = [(0, m.memory.lowmem_size, 1)]
    if m.memory.highmem_size:
        e820.append((layout.HIGHMEM_START, m.memory.highmem_size, 1))
    e820.append((KVM_PRIVATE[0], KVM_PRIVATE[1] - KVM_PRIVATE[0], 2))
    fw_cfg.add_file("etc/e820", e820_table(e820))

    # the shadow window and the BIOS ROM, steered by the host bridge's PAM registers
    legacy = LegacyWindow(m.vm, m.memory, prep.bios, m.alloc_slots(14))
    reset = ResetControl(stop)
    pci, host, isa = pci_host(m, reset, legacy.set_segment)
    pm = AcpiPm(m.irq_line(layout.IRQ_ACPI_SCI), stop)
    pci.place(*PIIX4_PM_DEVFN, Piix4Pm(pm))
    m.pio.register(layout.ACPI_GPE0_BASE, pm.gpe0.LENGTH, pm.gpe0, "acpi-gpe0", sizes=pm.gpe0.SIZES)

    vga = StdVga()
    fb_slot = m.alloc_slots(1)
    fb_addr = int(m.ffi_address(vga.framebuffer))

    fb_mapped = [False]

    def map_framebuffer(addr: int | None) -> None:
        if fb_mapped[0]:
            m.vm.set_memory_region(fb_slot, 0, 0, 0)
            fb_mapped[0] = False
        if addr is not None:
            m.vm.set_memory_region(fb_slot, addr, len(vga.framebuffer), fb_addr)
            fb_mapped[0] = True

    pci.place(*VGA_DEVFN, StdVgaPci(vga, prep.vgabios, map_framebuffer))
    m.pio.register(VGA_PORTS, VGA_PORTS_LEN, vga.ports, "vga", sizes=vga.ports.SIZES)
    m.pio.register(VBE_DISPI_PORT, vga.dispi.LENGTH, vga.dispi, "vbe", sizes=vga.dispi.SIZES)
    m.mmio.register(VGA_WINDOW, VGA_WINDOW_LEN, vga.memory, "vga-window", sizes=vga.memory.SIZES)
    ide = place_ide(m, pci)
    devices.update(place_extra_devices(m, pci))
    devices.update(place_nics(m, pci, prep.nic_rom))
    devices.update(place_passthrough(m, pci, isa))
    iommu = place_iommu(m, pci)
    if iommu is not None:
        devices["iommu"] = iommu
    host.sync_memory()

    devices.update(ide=ide, pci=pci, host_bridge=host, isa=isa, acpi_pm=pm, reset=reset, vga=vga,
                   legacy=legacy)
    return devices
