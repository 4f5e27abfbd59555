"""ACPI table objects that compute their own lengths, pointers and checksums.

Why objects and not hand-packed byte strings: every table is placed twice -- once at a fixed
guest-physical address for direct boot, once inside fw_cfg files that SeaBIOS relocates with
the table-loader -- and the two differ only in the pointer values. So a table declares *where*
its pointers are (``pointers()``) and *what* its checksums cover (``checksums()``); ``encode``
fills the pointers for a given placement and then fixes every checksum. Sizes and offsets follow
ACPI 6.0 (chapter 5.2) and are pinned by the unit tests.

Revisions chosen: RSDP 2 (ACPI 2.0+, with XSDT), FADT 6 (276 bytes, ACPI 6.0; Linux and
SeaBIOS accept it, SeaBIOS reads only the revision-1 fields), MADT 4, DSDT 2 (64-bit integers),
RSDT/XSDT 1, FACS version 2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .. import layout

__all__ = [
    "OEM_ID",
    "OEM_REVISION",
    "CREATOR_ID",
    "CREATOR_REVISION",
    "HEADER_SIZE",
    "Pointer",
    "AcpiBlob",
    "Sdt",
    "Table",
    "RawTable",
    "Rsdp",
    "Rsdt",
    "Xsdt",
    "Facs",
    "Fadt",
    "Madt",
    "Dsdt",
    "gas",
    "checksum",
    "madt_local_apic",
    "madt_ioapic",
    "madt_interrupt_override",
    "madt_local_apic_nmi",
]

OEM_ID = b"KVMPY "
OEM_REVISION = 1
CREATOR_ID = b"KVMP"
CREATOR_REVISION = 1
HEADER_SIZE = 36
_HEADER = struct.Struct("<4sIBB6s8sI4sI")
_CHECKSUM_OFFSET = 9

AddrOf = Callable[["AcpiBlob"], int]


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` (with that byte counted as 0) sum to 0 modulo 256."""
    return (-sum(data)) & 0xFF


@dataclass(frozen=True, eq=False)
class Pointer:
    """A little-endian field of ``size`` bytes at ``offset`` holding the address of ``target``."""

    offset: int
    size: int
    target: AcpiBlob


class AcpiBlob:
    """Anything placed in guest memory as part of the ACPI tables (tables, FACS, RSDP).

    Subclasses provide ``raw()`` (the bytes with pointer fields 0), ``pointers()`` and
    ``checksums()``; ``encode`` does the rest. Identity matters: pointers name their target
    object, so one object is one table in guest memory.
    """

    signature: bytes = b""
    #: Required alignment of the table's guest-physical address.
    alignment: int = 1

    def raw(self) -> bytes:
        raise NotImplementedError

    def pointers(self) -> list[Pointer]:
        return []

    def checksums(self) -> list[tuple[int, int, int]]:
        """(result offset, start, length) triples, applied in order."""
        return []

    @property
    def length(self) -> int:
        return len(self.raw())

    def encode(self, addr_of: AddrOf | None = None) -> bytes:
        """The table with its pointers set to ``addr_of(target)`` (0 without it), checksums fixed."""
        out = bytearray(self.raw())
        for p in self.pointers():
            value = addr_of(p.target) if addr_of is not None else 0
            if value >> (8 * p.size):
                raise ValueError(
                    f"{self.signature!r}: address {value:#x} of {p.target.signature!r} "
                    f"does not fit a {p.size}-byte pointer"
                )
            out[p.offset : p.offset + p.size] = value.to_bytes(p.size, "little")
        fix_checksums(out, self.checksums())
        return bytes(out)

    def to_bytes(self) -> bytes:
        """The table on its own, pointers 0 (for inspection and tools such as ``iasl -d``)."""
        return self.encode()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.signature.decode('ascii', 'replace')}>"


def fix_checksums(buf: bytearray, sums: Iterable[tuple[int, int, int]]) -> None:
    """Set each checksum byte so its range sums to 0 (in order: the RSDP has two)."""
    for result, start, length in sums:
        buf[result] = 0
        buf[result] = checksum(buf[start : start + length])


def _id(value: bytes | str, size: int) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    if len(raw) > size:
        raise ValueError(f"identifier {raw!r} longer than {size} bytes")
    return raw.ljust(size, b" ")


class Sdt(AcpiBlob):
    """A System Description Table: the 36-byte common header, then ``payload()``.

    Header fields: signature, length, revision, checksum (offset 9, over the whole table), OEM
    ID "KVMPY ", OEM table ID ("KVMPY" + the first three letters of the signature unless
    given), OEM revision, creator ID and creator revision.
    """

    revision: int = 1

    def __init__(self, oem_table_id: bytes | str | None = None) -> None:
        self.oem_table_id = _id(oem_table_id or b"KVMPY" + self.signature[:3], 8)

    def payload(self) -> bytes:
        raise NotImplementedError

    def header(self, length: int) -> bytes:
        return _HEADER.pack(
            self.signature,
            length,
            self.revision,
            0,
            OEM_ID,
            self.oem_table_id,
            OEM_REVISION,
            CREATOR_ID,
            CREATOR_REVISION,
        )

    def raw(self) -> bytes:
        body = self.payload()
        return self.header(HEADER_SIZE + len(body)) + body

    def checksums(self) -> list[tuple[int, int, int]]:
        return [(_CHECKSUM_OFFSET, 0, self.length)]


class Table(Sdt):
    """A table given as signature and payload bytes (MCFG, DMAR, SSDT, ... built elsewhere)."""

    def __init__(
        self,
        signature: bytes | str,
        payload: bytes,
        revision: int = 1,
        oem_table_id: bytes | str | None = None,
    ) -> None:
        self.signature = _id(signature, 4)
        self.revision = revision
        self._payload = bytes(payload)
        super().__init__(oem_table_id)

    def payload(self) -> bytes:
        return self._payload


class RawTable(AcpiBlob):
    """A complete table built elsewhere (header included); only its checksum is recomputed."""

    def __init__(self, data: bytes) -> None:
        if len(data) < HEADER_SIZE or struct.unpack_from("<I", data, 4)[0] != len(data):
            raise ValueError("raw ACPI table: header length does not match the data")
        self._data = bytes(data)
        self.signature = self._data[:4]

    def raw(self) -> bytes:
        return self._data

    def checksums(self) -> list[tuple[int, int, int]]:
        return [(_CHECKSUM_OFFSET, 0, len(self._data))]


# --- RSDP, RSDT, XSDT -----------------------------------------------------------------------------
class Rsdp(AcpiBlob):
    """Root System Description Pointer, ACPI 2.0 form (36 bytes, revision 2).

    Offsets: "RSD PTR " 0, checksum 8 (over bytes 0-19), OEM ID 9, revision 15, RSDT address 16
    (4 bytes), length 20, XSDT address 24 (8 bytes), extended checksum 32 (over all 36), 3
    reserved. Firmware and Linux find it by scanning 0xE0000-0xFFFFF on 16-byte boundaries.
    """

    signature = b"RSD PTR "
    alignment = 16
    SIZE = 36

    def __init__(self, rsdt: Rsdt | None, xsdt: Xsdt | None) -> None:
        self.rsdt = rsdt
        self.xsdt = xsdt

    def raw(self) -> bytes:
        return struct.pack("<8sB6sBIIQB3x", self.signature, 0, OEM_ID, 2, 0, self.SIZE, 0, 0)

    def pointers(self) -> list[Pointer]:
        out = []
        if self.rsdt is not None:
            out.append(Pointer(16, 4, self.rsdt))
        if self.xsdt is not None:
            out.append(Pointer(24, 8, self.xsdt))
        return out

    def checksums(self) -> list[tuple[int, int, int]]:
        return [(8, 0, 20), (32, 0, self.SIZE)]


class Rsdt(Sdt):
    """Root System Description Table: 32-bit addresses of every table but the FACS and DSDT."""

    signature = b"RSDT"
    revision = 1

    def __init__(self, tables: Sequence[AcpiBlob]) -> None:
        self.tables = list(tables)
        super().__init__()

    def payload(self) -> bytes:
        return bytes(4 * len(self.tables))

    def pointers(self) -> list[Pointer]:
        return [Pointer(HEADER_SIZE + 4 * i, 4, t) for i, t in enumerate(self.tables)]


class Xsdt(Sdt):
    """Extended System Description Table: the RSDT's list with 64-bit addresses."""

    signature = b"XSDT"
    revision = 1

    def __init__(self, tables: Sequence[AcpiBlob]) -> None:
        self.tables = list(tables)
        super().__init__()

    def payload(self) -> bytes:
        return bytes(8 * len(self.tables))

    def pointers(self) -> list[Pointer]:
        return [Pointer(HEADER_SIZE + 8 * i, 8, t) for i, t in enumerate(self.tables)]


# --- FACS -------------------------------------------------------------------------------------------
class Facs(AcpiBlob):
    """Firmware ACPI Control Structure: 64 bytes, 64-byte aligned, no checksum.

    Offsets: "FACS" 0, length 4, hardware signature 8, firmware waking vector 12, global lock 16,
    flags 20, X firmware waking vector 24, version 32, OSPM flags 36. Nothing in it is used
    without S3/S4; the FADT must still point at one.
    """

    signature = b"FACS"
    alignment = 64
    SIZE = 64
    VERSION = 2

    def raw(self) -> bytes:
        return struct.pack("<4sIIIIIQB3xI24x", self.signature, self.SIZE, 0, 0, 0, 0, 0, self.VERSION, 0)


# --- Generic Address Structure ------------------------------------------------------------------------
GAS_SYSTEM_MEMORY = 0
GAS_SYSTEM_IO = 1
GAS_ACCESS_UNDEFINED = 0
GAS_ACCESS_BYTE = 1
GAS_ACCESS_WORD = 2
GAS_ACCESS_DWORD = 3
GAS_ACCESS_QWORD = 4


def gas(space: int, bit_width: int, address: int, access_size: int = 0, bit_offset: int = 0) -> bytes:
    """Generic Address Structure (12 bytes): space id, bit width, bit offset, access size, address."""
    return struct.pack("<BBBBQ", space, bit_width, bit_offset, access_size, address)


def _io_gas(address: int, length: int, access_size: int) -> bytes:
    return gas(GAS_SYSTEM_IO, 8 * length, address, access_size) if address else bytes(12)


# --- FADT ----------------------------------------------------------------------------------------------
# Fixed feature flags (FADT offset 112).
FADT_F_WBINVD = 1 << 0
FADT_F_PROC_C1 = 1 << 2
FADT_F_PWR_BUTTON = 1 << 4  # set = no fixed power button
FADT_F_SLP_BUTTON = 1 << 5  # set = no fixed sleep button
FADT_F_RTC_S4 = 1 << 7
FADT_F_TMR_VAL_EXT = 1 << 8
FADT_F_RESET_REG_SUP = 1 << 10
FADT_F_USE_PLATFORM_CLOCK = 1 << 15
FADT_F_FORCE_APIC_PHYSICAL_DESTINATION_MODE = 1 << 19
FADT_F_HW_REDUCED_ACPI = 1 << 20

# IA-PC boot architecture flags (FADT offset 109).
IAPC_LEGACY_DEVICES = 1 << 0
IAPC_8042 = 1 << 1
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_MSI_NOT_SUPPORTED = 1 << 3
IAPC_PCIE_ASPM_CONTROLS = 1 << 4
IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5

#: The PIIX4-style PM block that ``layout.ACPI_PM_BASE`` describes.
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2
PM_TMR_LEN = 4
PM1A_CNT_OFFSET = 4
PM_TMR_OFFSET = 8
#: RTC CMOS register holding the century (what Linux's rtc-cmos reads via the FADT).
RTC_CENTURY_REGISTER = 0x32


class Fadt(Sdt):
    """Fixed ACPI Description Table, revision 6 (ACPI 6.0): 276 bytes.

    The PM1a event/control blocks, PM timer and GPE0 block sit at ``pm_base``, ``pm_base + 4``,
    ``pm_base + 8`` and ``gpe0_base`` (PIIX4 layout, what SeaBIOS also programs when it finds
    ``etc/table-loader``), each also given as an X_ Generic Address. SMI_CMD is 0: ACPI is
    always enabled and the PM device reports SCI_EN set, so Linux never tries to switch modes.
    Reset is I/O port 0xCF9 value 0x06 (RESET_REG_SUP). FIRMWARE_CTRL points at the FACS;
    DSDT and X_DSDT both point at the DSDT (equal, so ACPICA does not complain).
    """

    signature = b"FACP"
    revision = 6
    MINOR_REVISION = 0
    SIZE = 276

    # Offsets of the fields others point at or test.
    FIRMWARE_CTRL = 36
    DSDT = 40
    SCI_INT = 46
    SMI_CMD = 48
    PM1A_EVT_BLK = 56
    PM1A_CNT_BLK = 64
    PM_TMR_BLK = 76
    GPE0_BLK = 80
    IAPC_BOOT_ARCH = 109
    FLAGS = 112
    RESET_REG = 116
    RESET_VALUE = 128
    X_FIRMWARE_CTRL = 132
    X_DSDT = 140
    X_PM1A_EVT_BLK = 148
    X_PM1A_CNT_BLK = 172
    X_PM_TMR_BLK = 208
    X_GPE0_BLK = 220

    def __init__(
        self,
        facs: Facs,
        dsdt: Dsdt,
        *,
        pm_base: int = layout.ACPI_PM_BASE,
        gpe0_base: int = layout.ACPI_GPE0_BASE,
        gpe0_len: int = layout.ACPI_GPE0_LEN,
        sci_irq: int = layout.IRQ_ACPI_SCI,
        iapc_boot_arch: int = IAPC_LEGACY_DEVICES | IAPC_8042,
        flags: int | None = None,
        reset_port: int = layout.RESET_CONTROL_PORT,
        reset_value: int = 0x06,
        cpus: int = 1,
    ) -> None:
        self.facs = facs
        self.dsdt = dsdt
        self.pm_base = pm_base
        self.gpe0_base = gpe0_base
        self.gpe0_len = gpe0_len
        self.sci_irq = sci_irq
        self.iapc_boot_arch = iapc_boot_arch
        if flags is None:
            flags = (
                FADT_F_WBINVD
                | FADT_F_PROC_C1
                | FADT_F_SLP_BUTTON
                | FADT_F_RTC_S4
                | FADT_F_RESET_REG_SUP
                | FADT_F_USE_PLATFORM_CLOCK
            )
            if cpus > 8:  # flat logical xAPIC mode addresses at most 8 CPUs
                flags |= FADT_F_FORCE_APIC_PHYSICAL_DESTINATION_MODE
        self.flags = flags
        self.reset_port = reset_port
        self.reset_value = reset_value
        super().__init__()

    def payload(self) -> bytes:
        pm1a_evt = self.pm_base
        pm1a_cnt = self.pm_base + PM1A_CNT_OFFSET
        pm_tmr = self.pm_base + PM_TMR_OFFSET
        gpe0 = self.gpe0_base if self.gpe0_len else 0
        p = bytearray()
        p += struct.pack("<II", 0, 0)  # FIRMWARE_CTRL, DSDT (pointers)
        p += struct.pack("<BBH", 0, 0, self.sci_irq)  # reserved, preferred PM profile, SCI_INT
        p += struct.pack("<I", 0)  # SMI_CMD: none, ACPI is always on
        p += struct.pack("<BBBB", 0, 0, 0, 0)  # ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        p += struct.pack("<IIIIIIII", pm1a_evt, 0, pm1a_cnt, 0, 0, pm_tmr, gpe0, 0)
        p += struct.pack("<BBBBBBBB", PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, self.gpe0_len, 0, 0, 0)
        # P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: C2 and C3 are not supported.
        p += struct.pack("<HHHH", 0x0FFF, 0x0FFF, 0, 0)
        p += struct.pack("<BBBBB", 0, 0, 0, 0, RTC_CENTURY_REGISTER)  # duty, alarms, CENTURY
        p += struct.pack("<HB", self.iapc_boot_arch, 0)
        p += struct.pack("<I", self.flags)
        p += gas(GAS_SYSTEM_IO, 8, self.reset_port, GAS_ACCESS_BYTE)
        p += struct.pack("<BHB", self.reset_value, 0, self.MINOR_REVISION)  # + ARM_BOOT_ARCH
        p += struct.pack("<QQ", 0, 0)  # X_FIRMWARE_CTRL (unused: FIRMWARE_CTRL is set), X_DSDT
        p += _io_gas(pm1a_evt, PM1_EVT_LEN, GAS_ACCESS_WORD)  # status and enable are 16-bit halves
        p += bytes(12)  # X_PM1b_EVT_BLK
        p += _io_gas(pm1a_cnt, PM1_CNT_LEN, GAS_ACCESS_WORD)
        p += bytes(12)  # X_PM1b_CNT_BLK
        p += bytes(12)  # X_PM2_CNT_BLK
        p += _io_gas(pm_tmr, PM_TMR_LEN, GAS_ACCESS_DWORD)
        p += _io_gas(gpe0, self.gpe0_len, GAS_ACCESS_BYTE)
        p += bytes(12)  # X_GPE1_BLK
        p += bytes(12) + bytes(12)  # SLEEP_CONTROL_REG, SLEEP_STATUS_REG (hardware-reduced only)
        p += struct.pack("<Q", 0)  # hypervisor vendor identity
        assert HEADER_SIZE + len(p) == self.SIZE
        return bytes(p)

    def pointers(self) -> list[Pointer]:
        return [
            Pointer(self.FIRMWARE_CTRL, 4, self.facs),
            Pointer(self.DSDT, 4, self.dsdt),
            Pointer(self.X_DSDT, 8, self.dsdt),
        ]


# --- MADT ------------------------------------------------------------------------------------------------
MADT_PCAT_COMPAT = 1 << 0
MADT_LAPIC_ENABLED = 1 << 0
# MPS INTI flags: polarity bits 0-1, trigger mode bits 2-3.
MPS_POLARITY_CONFORMS = 0x0
MPS_POLARITY_ACTIVE_HIGH = 0x1
MPS_POLARITY_ACTIVE_LOW = 0x3
MPS_TRIGGER_CONFORMS = 0x0
MPS_TRIGGER_EDGE = 0x1 << 2
MPS_TRIGGER_LEVEL = 0x3 << 2

MADT_TYPE_LOCAL_APIC = 0
MADT_TYPE_IOAPIC = 1
MADT_TYPE_INTERRUPT_OVERRIDE = 2
MADT_TYPE_LOCAL_APIC_NMI = 4


def madt_local_apic(uid: int, apic_id: int, enabled: bool = True) -> bytes:
    """Processor Local APIC structure (type 0, 8 bytes)."""
    return struct.pack("<BBBBI", MADT_TYPE_LOCAL_APIC, 8, uid, apic_id, MADT_LAPIC_ENABLED if enabled else 0)


def madt_ioapic(ioapic_id: int, address: int, gsi_base: int = 0) -> bytes:
    """I/O APIC structure (type 1, 12 bytes)."""
    return struct.pack("<BBBBII", MADT_TYPE_IOAPIC, 12, ioapic_id, 0, address, gsi_base)


def madt_interrupt_override(source: int, gsi: int, flags: int, bus: int = 0) -> bytes:
    """Interrupt Source Override (type 2, 10 bytes): ISA IRQ ``source`` arrives on ``gsi``."""
    return struct.pack("<BBBBIH", MADT_TYPE_INTERRUPT_OVERRIDE, 10, bus, source, gsi, flags)


def madt_local_apic_nmi(uid: int = 0xFF, lint: int = 1, flags: int = 0) -> bytes:
    """Local APIC NMI structure (type 4, 6 bytes); uid 0xFF means all processors."""
    return struct.pack("<BBBHB", MADT_TYPE_LOCAL_APIC_NMI, 6, uid, flags, lint)


#: The PC's ISA routing: the PIT's IRQ0 is wired to IOAPIC pin 2; the SCI is level, active high.
DEFAULT_OVERRIDES: tuple[tuple[int, int, int], ...] = (
    (0, 2, MPS_POLARITY_CONFORMS | MPS_TRIGGER_EDGE),
    (layout.IRQ_ACPI_SCI, layout.IRQ_ACPI_SCI, MPS_POLARITY_ACTIVE_HIGH | MPS_TRIGGER_LEVEL),
)


class Madt(Sdt):
    """Multiple APIC Description Table ("APIC"), revision 4.

    Local APIC address and PCAT_COMPAT (dual 8259s present) at offsets 36/40, then: one enabled
    Processor Local APIC per vCPU (UID = APIC ID = index), the IOAPIC (ID = the CPU count, GSI
    base 0), interrupt source overrides (IRQ0 -> GSI2 edge; IRQ9 -> GSI9 level, active high),
    and LINT1 as NMI on all processors (as the VMM programs the LAPICs).
    """

    signature = b"APIC"
    revision = 4
    ENTRIES_OFFSET = 44

    def __init__(
        self,
        cpus: int,
        *,
        lapic_addr: int = layout.LAPIC_BASE,
        ioapic_addr: int = layout.IOAPIC_BASE,
        ioapic_id: int | None = None,
        overrides: Iterable[tuple[int, int, int]] = DEFAULT_OVERRIDES,
        nmi_lint: int | None = 1,
    ) -> None:
        if not 1 <= cpus <= 254:
            raise ValueError(f"{cpus} CPUs: xAPIC IDs allow 1-254 CPUs beside the IOAPIC")
        self.cpus = cpus
        self.lapic_addr = lapic_addr
        self.ioapic_addr = ioapic_addr
        self.ioapic_id = cpus if ioapic_id is None else ioapic_id
        self.overrides = list(overrides)
        self.nmi_lint = nmi_lint
        super().__init__()

    def payload(self) -> bytes:
        p = bytearray(struct.pack("<II", self.lapic_addr, MADT_PCAT_COMPAT))
        for i in range(self.cpus):
            p += madt_local_apic(i, i)
        p += madt_ioapic(self.ioapic_id, self.ioapic_addr, 0)
        for source, gsi, flags in self.overrides:
            p += madt_interrupt_override(source, gsi, flags)
        if self.nmi_lint is not None:
            p += madt_local_apic_nmi(0xFF, self.nmi_lint)
        return bytes(p)


# --- DSDT ------------------------------------------------------------------------------------------------
class Dsdt(Sdt):
    """Differentiated System Description Table: the header, then AML (see ``aml.py``)."""

    signature = b"DSDT"
    revision = 2  # integers are 64-bit

    def __init__(self, aml_body: bytes) -> None:
        self.aml = bytes(aml_body)
        super().__init__()

    def payload(self) -> bytes:
        return self.aml
