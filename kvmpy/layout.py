"""The PC memory map, port numbers, MMIO windows and IRQ lines, as named constants.

Every device address in kvmpy comes from here: the machine builder places devices using these
names and no device picks its own address. The values follow the QEMU PC conventions that
firmware (SeaBIOS) and guests expect.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# --- Guest-physical memory map ------------------------------------------------------------
#: RAM below this sits at 0; RAM beyond it continues at HIGHMEM_START (the 32-bit PCI hole).
LOWMEM_LIMIT = 0xC000_0000
HIGHMEM_START = 0x1_0000_0000
#: The EBDA/legacy window: RAM in the memslot but reported reserved in the e820 map.
EBDA_START = 0x9_FC00
LEGACY_HOLE_START = 0xA_0000  # VGA window + option ROMs + BIOS: never plain RAM to the guest
BIOS_AREA_START = 0xE_0000  # where ACPI RSDP and MP tables are searched for
HIGH_RAM_START = 0x10_0000  # 1 MiB

#: Guest memory that KVM needs for itself on Intel (set before the first vCPU runs).
KVM_IDENTITY_MAP_ADDR = 0xFFFB_C000
KVM_TSS_ADDR = 0xFFFB_D000

PCI_HOLE_START = LOWMEM_LIMIT
PCI_MMIO_START = 0xC000_0000
PCI_MMIO_END = 0xFEC0_0000
IOAPIC_BASE = 0xFEC0_0000
HPET_BASE = 0xFED0_0000
VTD_BASE = 0xFED9_0000
LAPIC_BASE = 0xFEE0_0000
BIOS_ROM_END = 0x1_0000_0000

MIN_MEMORY = 16 * MiB

# --- Direct-boot scratch layout (low memory, below the EBDA) --------------------------------
BOOT_GDT_ADDR = 0x500
BOOT_IDT_ADDR = 0x520
BOOT_PARAMS_ADDR = 0x7000
BOOT_PML4_ADDR = 0x9000
BOOT_PDPT_ADDR = 0xA000
BOOT_PD_ADDR = 0xB000  # four pages: 0xB000..0xEFFF map the first 4 GiB with 2 MiB pages
BOOT_STACK_TOP = 0x8FF0
BOOT_CMDLINE_ADDR = 0x2_0000
BOOT_CMDLINE_MAX = 0x1_0000
MULTIBOOT_INFO_ADDR = 0x3_0000  # multiboot info, module list, mmap and strings: up to 0x9_0000
MULTIBOOT_INFO_END = 0x9_0000
ACPI_TABLES_ADDR = 0xE_0000  # RSDP and tables for direct boot, found by the standard scan
ACPI_TABLES_END = 0x10_0000

# --- I/O ports ---------------------------------------------------------------------------
PIT_PORT = 0x40
SYSTEM_CONTROL_B_PORT = 0x61  # PIT gate 2 / speaker, refresh toggle, OUT2 (split irqchip)
PIC_MASTER_PORT = 0x20  # the 8259 pair and the ELCR: kvmpy's only with the split irqchip
PIC_SLAVE_PORT = 0xA0
ELCR_PORT = 0x4D0
I8042_DATA_PORT = 0x60
I8042_CMD_PORT = 0x64
RTC_PORT = 0x70
POST_PORT = 0x80
PORT92 = 0x92  # system control port A: fast A20 and fast reset
COM1_PORT = 0x3F8
COM2_PORT = 0x2F8
DEBUG_EXIT_PORT = 0xF4
FW_CFG_PORT = 0x510  # selector (16-bit) at 0x510, data at 0x511
FW_CFG_DMA_PORT = 0x514  # 64-bit big-endian DMA address register, 0x514..0x51b
PCI_CONFIG_ADDR_PORT = 0xCF8
PCI_CONFIG_DATA_PORT = 0xCFC
RESET_CONTROL_PORT = 0xCF9
IDE0_PORT = 0x1F0  # primary channel command block (8 ports); control block at 0x3F6
IDE0_CTL_PORT = 0x3F6
IDE1_PORT = 0x170
IDE1_CTL_PORT = 0x376
ACPI_PM_BASE = 0x600  # PIIX4-style: PM1a_EVT 0x600, PM1a_CNT 0x604, PM_TMR 0x608
ACPI_GPE0_BASE = 0xAFE0
ACPI_GPE0_LEN = 4

# --- Interrupt lines (ISA IRQ == GSI with the identity routing the MADT describes) ----------
IRQ_PIT = 0
IRQ_KEYBOARD = 1
IRQ_COM2 = 3
IRQ_COM1 = 4
IRQ_RTC = 8
IRQ_ACPI_SCI = 9
IRQ_MOUSE = 12
IRQ_IDE0 = 14
IRQ_IDE1 = 15
IOAPIC_PINS = 24

# --- CPU ---------------------------------------------------------------------------------
#: LAPIC IDs are the vCPU indices; the IOAPIC takes the next ID after the CPUs.
MAX_VCPUS_DEFAULT = 255
