"""The i440FX host bridge (82441FX PMC, 8086:1237 rev 02, class 0x0600) at 00:00.0.

SeaBIOS recognises the PC by this function, then shadows itself through its PAM registers and
(if the PIIX4 says SMM is not yet set up) opens SMRAM. The bridge itself touches no memory: it
tells the machine, which owns the KVM memslots, through callbacks.

**PAM** (Programmable Attribute Map, 82441FX datasheet 3.2.17; QEMU hw/pci-host/i440fx.c and
pam.c). Seven bytes at 0x59-0x5F hold thirteen 2-bit attributes, bit 0 = RE (reads go to DRAM),
bit 1 = WE (writes go to DRAM); otherwise the access goes to PCI, where the BIOS ROM (0xE0000-
0xFFFFF, the "isa-bios" alias of the flash image's last 128 KiB) and option-ROM space live:

=======  ============  ===================
segment  register      range
=======  ============  ===================
0        0x59 [5:4]    0xF0000-0xFFFFF (64 KiB, the BIOS)
1, 2     0x5A [1:0], [5:4]  0xC0000, 0xC4000 (16 KiB each)
...      ...           ...
11, 12   0x5F [1:0], [5:4]  0xE8000, 0xEC000
=======  ============  ===================

The low nibble of 0x59 is reserved (reads 0). Reset value: all zero, so the reset vector's far
jump into 0xFE05B reads the ROM. SeaBIOS's ``make_bios_writable`` writes 0x30/0x33 (all RAM,
read-write) with two dword writes at 0x58 and 0x5C and copies itself from the 4 GiB alias; at
the end of POST ``make_bios_readonly`` sets 0x10/0x11 (read RAM, writes to PCI).

``pam_changed(start, size, read_ram, write_ram)`` is called for every segment whose attribute
changes (and for all of them from ``reset``/``restore``/``sync_memory``). What the machine
must make the CPU see in ``[start, start + size)``, and how KVM can express it:

* ``read_ram=False, write_ram=False`` — PCI: reads return the ROM contents (for 0xC0000-
  0xDFFFF whatever option-ROM space shows), writes are dropped. Map the ROM copy as a
  read-only memslot (``KVM_MEM_READONLY``): reads run at full speed, writes exit as
  KVM_EXIT_MMIO and are ignored.
* ``read_ram=True, write_ram=False`` — reads from RAM, writes go to the ROM (dropped): map the
  RAM backing of this range as a *read-only* memslot (the memfd at the same offset); writes
  exit as MMIO and are ignored. This is the state SeaBIOS leaves at the end of POST.
* ``read_ram=False, write_ram=True`` — reads from ROM, writes into RAM (how old BIOSes copy a
  ROM onto its own shadow). One memslot cannot send reads and writes to different pages, so
  map the ROM read-only and, on the write exits, store the data into the RAM backing at that
  address (exact; slow, but this state is transient). QEMU approximates it as plain RAM.
* ``read_ram=True, write_ram=True`` — plain RAM: a normal read-write memslot.

Memslots may not overlap, so each switch is delete-then-create of the segment's slot (16 KiB
pieces are page aligned). Because reset puts everything back to ROM, a VMM-level reset gives
SeaBIOS a pristine image without re-copying anything.

**SMRAM** (0x72; datasheet 3.2.22): C_BASE_SEG (2:0) reads 010 (0xA0000) and is fixed;
G_SMRAME (3), D_LCK (4), D_CLS (5), D_OPEN (6) are writable. With D_OPEN set, 0xA0000-0xBFFFF
shows RAM to the CPU instead of the legacy VGA window; D_LCK clears D_OPEN and makes D_LCK,
D_OPEN and G_SMRAME read-only until reset. kvmpy emulates no SMM (PIIX4 reports SMM already
initialised), so only D_OPEN has an effect: ``smram_changed(ram_visible)`` when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import STS_DEVSEL_MEDIUM, STS_FAST_BACK, PciConfig
from .function import PciFunction

INTEL_VENDOR_ID = 0x8086
I440FX_DEVICE_ID = 0x1237
I440FX_REVISION = 0x02
CLASS_BRIDGE_HOST = 0x0600

PAM0 = 0x59
PAM_LEN = 7
PAM_RE = 0x1
PAM_WE = 0x2
PAM_ATTR_MASK = PAM_RE | PAM_WE
PAM_BIOS_BASE = 0xF_0000
PAM_BIOS_SIZE = 0x1_0000
PAM_EXPAN_BASE = 0xC_0000
PAM_EXPAN_SIZE = 0x4000
PAM_SEGMENT_COUNT = 13

SMRAM = 0x72
SMRAM_C_BASE_SEG = 0x02  # 0xA0000-0xBFFFF, hardwired
SMRAM_G_SMRAME = 0x08
SMRAM_D_LCK = 0x10
SMRAM_D_CLS = 0x20
SMRAM_D_OPEN = 0x40
SMRAM_WMASK = SMRAM_G_SMRAME | SMRAM_D_LCK | SMRAM_D_CLS | SMRAM_D_OPEN
SMRAM_BASE = 0xA_0000
SMRAM_SIZE = 0x2_0000

#: i440FX PCICMD/PCISTS reset values (datasheet 3.2.3/3.2.4): memory + bus master; fast
#: back-to-back capable, medium DEVSEL.
I440FX_COMMAND_RESET = 0x0006
I440FX_STATUS_RESET = STS_FAST_BACK | STS_DEVSEL_MEDIUM

PamCallback = Callable[[int, int, bool, bool], None]


@dataclass(frozen=True)
class PamSegment:
    """One of the thirteen shadowable segments and where its two bits live."""

    index: int
    start: int
    size: int
    offset: int  # configuration byte
    shift: int  # 0: low nibble, 4: high nibble


PAM_SEGMENTS: tuple[PamSegment, ...] = (PamSegment(0, PAM_BIOS_BASE, PAM_BIOS_SIZE, PAM0, 4),) + tuple(
    PamSegment(
        i, PAM_EXPAN_BASE + (i - 1) * PAM_EXPAN_SIZE, PAM_EXPAN_SIZE, PAM0 + (i + 1) // 2, 0 if i & 1 else 4
    )
    for i in range(1, PAM_SEGMENT_COUNT)
)


class I440fx(PciFunction):
    """The host bridge function; see the module docstring for the callbacks' contract.

    The constructor calls no callback (memory may not exist yet): the machine calls
    ``sync_memory()`` (or ``reset()``) once its memslots are ready."""

    def __init__(
        self,
        pam_changed: PamCallback,
        *,
        smram_changed: Callable[[bool], None] | None = None,
        name: str = "i440fx",
    ) -> None:
        cfg = PciConfig(
            INTEL_VENDOR_ID,
            I440FX_DEVICE_ID,
            CLASS_BRIDGE_HOST,
            revision=I440FX_REVISION,
            command=I440FX_COMMAND_RESET,
            status=I440FX_STATUS_RESET,
            device_area_writable=True,  # DRAM timing/row registers: storage, as in QEMU
        )
        cfg.declare(PAM0, 1, 0, wmask=PAM_ATTR_MASK << 4)
        for off in range(PAM0 + 1, PAM0 + PAM_LEN):
            cfg.declare(off, 1, 0, wmask=PAM_ATTR_MASK | PAM_ATTR_MASK << 4)
        cfg.declare(SMRAM, 1, SMRAM_C_BASE_SEG, wmask=SMRAM_WMASK)
        super().__init__(cfg, name)
        self.pam_changed = pam_changed
        self.smram_changed = smram_changed
        cfg.on_write(PAM0, PAM_LEN, self._pam_written)
        cfg.on_write(SMRAM, 1, self._smram_written)

    # -- queries ---------------------------------------------------------------------------------
    def pam_attr(self, segment: PamSegment, value: int | None = None) -> int:
        v = self.config.data[segment.offset] if value is None else value
        return (v >> segment.shift) & PAM_ATTR_MASK

    def pam_state(self, addr: int) -> tuple[bool, bool] | None:
        """(read_ram, write_ram) for the segment holding ``addr``; None outside 0xC0000-0xFFFFF."""
        for seg in PAM_SEGMENTS:
            if seg.start <= addr < seg.start + seg.size:
                a = self.pam_attr(seg)
                return bool(a & PAM_RE), bool(a & PAM_WE)
        return None

    @property
    def smram_open(self) -> bool:
        return bool(self.config.data[SMRAM] & SMRAM_D_OPEN)

    # -- side effects ----------------------------------------------------------------------------
    def _announce(self, seg: PamSegment) -> None:
        a = self.pam_attr(seg)
        self.pam_changed(seg.start, seg.size, bool(a & PAM_RE), bool(a & PAM_WE))

    def _pam_written(self, offset: int, size: int, value: int) -> None:
        cfg = self.config
        for seg in PAM_SEGMENTS:
            if offset <= seg.offset < offset + size:
                if self.pam_attr(seg, cfg.previous(seg.offset, 1)) != self.pam_attr(seg):
                    self._announce(seg)

    def _smram_written(self, offset: int, size: int, value: int) -> None:
        cfg = self.config
        old = cfg.previous(SMRAM, 1)
        new = cfg.data[SMRAM]
        locked = SMRAM_D_LCK | SMRAM_G_SMRAME | SMRAM_D_OPEN
        if old & SMRAM_D_LCK:
            new = (new & ~locked) | (old & locked)
        elif new & SMRAM_D_LCK:
            new &= ~SMRAM_D_OPEN
        cfg.data[SMRAM] = new
        if (old ^ new) & SMRAM_D_OPEN and self.smram_changed is not None:
            self.smram_changed(bool(new & SMRAM_D_OPEN))

    def sync_memory(self) -> None:
        """Announce every segment's state (and SMRAM's) so the machine's memslots match."""
        for seg in PAM_SEGMENTS:
            self._announce(seg)
        if self.smram_changed is not None:
            self.smram_changed(self.smram_open)

    def _after_state_change(self) -> None:
        super()._after_state_change()
        self.sync_memory()
