"""The PIIX3 IDE controller core: two ATA channels, ATA disks, ATAPI CD-ROMs, bus-master DMA.

This is the function 8086:7010 of the i440FX/PIIX3 platform minus its PCI face: a thin PCI
wrapper exposes it (class 0x0101, prog-if 0x80: legacy ports, bus master) and maps BAR4 onto
:attr:`PiixIde.bus_master`. The controller itself knows no port number and no IRQ number; the
machine places it (see *Wiring* below).

What guests rely on, and therefore what this model is careful about:

* **Taskfile semantics (ATA/ATAPI-7 vol. 1 §5, §6).** Each drive latches every write to the
  command block (both drives of a channel see it, as on the cable); reads come from the drive
  selected by DEV in the device register. The five parameter registers are two-deep FIFOs for
  48-bit commands, read back through HOB in device control. Reading *status* clears the pending
  interrupt, reading *alternate status* does not. nIEN gates the interrupt output, SRST resets both
  drives (BSY while asserted; on release the signature: nsector = lbal = 1, lbam/lbah = 0/0 for
  ATA and 0x14/0xEB for ATAPI, error = 0x01 "passed"; ATA drives come back DRDY, ATAPI with 0).
  A drive that is not attached reads all registers as 0 (except the device register), which is
  how SeaBIOS and libata's ``ata_devchk``/``ata_sff_dev_classify`` decide "no device 1".
* **Interrupt protocol (what libata-sff's HSM expects).** PIO data-in: INTRQ with each DRQ block,
  none after the last block has been read. PIO data-out: the first block is requested without an
  interrupt, each further block and the completion raise one. Non-data commands interrupt on
  completion. PACKET: the 12-byte command is requested without an interrupt (IDENTIFY PACKET
  word 0 says "accelerated DRQ", so libata polls for it), then INTRQ per data chunk and one more
  at completion (interrupt reason I/O|C/D). DMA: INTRQ at the end of the transfer. SRST raises
  none. Any interrupt raised while the line is already high is made a fresh edge, because the
  legacy IRQ 14/15 inputs are edge-triggered.
* **Bus-master IDE (Intel PIIX3 datasheet §2.7; SFF-8038i).** Per channel: command (START,
  direction = "write to memory"), status (ACTIVE, ERROR and INTERRUPT write-1-to-clear, the two
  "drive DMA capable" bits read/write), PRD table address (dword aligned). A DMA command
  (READ/WRITE DMA (EXT), PACKET with the DMA feature bit) leaves the drive DRDY|DRQ until the
  engine is started; the transfer then runs to completion synchronously inside the write that set
  START (or inside the command write, if START came first), which is the ordering both libata
  (``bmdma_setup`` → command → ``bmdma_start``) and SeaBIOS (command → START → poll INTERRUPT)
  use. At the end: INTERRUPT set (on the rising edge of the channel's interrupt, as the datasheet
  says), ACTIVE cleared when the PRD table was used up exactly, left set when the table described
  more memory than the command moved; a table shorter than the transfer clears ACTIVE without an
  interrupt. PRD entries: 32-bit address (bit 0 ignored), 16-bit even byte count where 0 means
  64 KiB, EOT in bit 31 of the second dword; every byte goes through the :class:`DmaSpace`.
  A :class:`DmaFault` (memory outside RAM, or blocked by the IOMMU) ends the transfer with
  ERROR|INTERRUPT in the bus-master status and ERR/ABRT in the drive's status — it never escapes.
* **Commands are data.** :data:`ATA_COMMANDS` and :data:`ATAPI_COMMANDS` map opcodes to a row
  naming the handler and the row's flags (48-bit, DMA, write, multiple; ATAPI: allowed during a
  unit attention, needs a medium). Unknown opcodes abort with ERR+ABRT (ATA) or CHECK CONDITION,
  ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (ATAPI). An LBA beyond the disk gives IDNF.
  A write to a read-only disk aborts before any data moves, so it never reaches the image.
* **ATAPI sense and media change (MMC-5 §4.1.6).** Errors set sense key/ASC/ASCQ for REQUEST
  SENSE and put the sense key in the error register. After ``insert_media``/``eject`` the next
  command (other than INQUIRY, REQUEST SENSE, GET CONFIGURATION, GET EVENT STATUS) first reports
  NOT READY / MEDIUM NOT PRESENT and then UNIT ATTENTION / MEDIUM MAY HAVE CHANGED, the sequence
  that guests without GET EVENT STATUS NOTIFICATION rely on (it is QEMU's); GET EVENT STATUS
  NOTIFICATION reports "new media" / "media removal" once. PIO replies honour the byte count
  limit from lbam/lbah (0 and 0xFFFF are taken as 0xFFFE; a limit that cuts the reply is made
  even).

Data-port cost: the guest's ``rep insw`` arrives as one access per word, so the data port is
checked first and a word is two byte loads from a ``bytearray``; :meth:`IdeChannel.read_string`
and :meth:`IdeChannel.write_string` move a whole string access at once for a loop that hands
string I/O over in bulk.

Wiring (what the machine builder does; ports and IRQs are its constants)::

    ide = PiixIde(dma_space, irqs=(irq14, irq15), drives=((AtaDisk(open_disk(path)), None),
                                                           (AtapiCdrom(open_cdrom(iso)), None)))
    pio.register(0x1F0, CMD_BLOCK_LEN, ide.channels[0], "ide0", sizes=CMD_BLOCK_SIZES)
    pio.register(0x3F6, CTL_BLOCK_LEN, ide.channels[0].control, "ide0-ctl", sizes=CTL_BLOCK_SIZES)
    pio.register(0x170, CMD_BLOCK_LEN, ide.channels[1], "ide1", sizes=CMD_BLOCK_SIZES)
    pio.register(0x376, CTL_BLOCK_LEN, ide.channels[1].control, "ide1-ctl", sizes=CTL_BLOCK_SIZES)
    # BAR4 (16 I/O ports), when the guest assigns and enables it:
    pio.register(bar4, BM_BLOCK_LEN, ide.bus_master, "ide-bm", sizes=BM_BLOCK_SIZES)
    ide.bus_master_enabled = bool(pci_command & PCI_COMMAND_MASTER)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvmpy import __version__
from kvmpy.devices.blockdev import CDROM_SECTOR_SIZE, DISK_SECTOR_SIZE, BlockBackend, BlockIOError
from kvmpy.errors import DmaFault
from kvmpy.hw.dma import DmaSpace
from kvmpy.hw.irq import IrqLine

log = logging.getLogger("kvmpy.devices.ide")

# --- Register blocks ------------------------------------------------------------------------
#: Command block: 8 ports (data, error/feature, sector count, LBA low/mid/high, device,
#: status/command). 16- and 32-bit accesses are meaningful at the data port only.
CMD_BLOCK_LEN = 8
CMD_BLOCK_SIZES = (1, 2, 4)
#: Control block: one port (alternate status / device control). The next port (0x3F7) is the
#: floppy controller's on a PC, so it is not claimed.
CTL_BLOCK_LEN = 1
CTL_BLOCK_SIZES = (1,)
#: Bus-master block (BAR4): 8 bytes per channel.
BM_BLOCK_LEN = 16
BM_BLOCK_SIZES = (1, 2, 4)
BM_CHANNEL_STRIDE = 8

# Command block offsets (ATA/ATAPI-7 vol. 1 §5)
REG_DATA = 0
REG_ERROR = REG_FEATURE = 1
REG_NSECTOR = 2
REG_LBAL = 3
REG_LBAM = 4
REG_LBAH = 5
REG_DEVICE = 6
REG_STATUS = REG_COMMAND = 7

# Status register
ST_ERR = 0x01
ST_DRQ = 0x08
ST_DSC = 0x10  # device seek complete / service
ST_DF = 0x20
ST_DRDY = 0x40
ST_BSY = 0x80
ST_READY = ST_DRDY | ST_DSC

# Error register
ER_AMNF = 0x01  # also "diagnostics passed" after reset / EXECUTE DEVICE DIAGNOSTIC
ER_ABRT = 0x04
ER_MCR = 0x08
ER_IDNF = 0x10
ER_MC = 0x20
ER_UNC = 0x40
ER_ICRC = 0x80
DIAG_PASSED = 0x01

# Device control register
DC_NIEN = 0x02
DC_SRST = 0x04
DC_HOB = 0x80

# Device register
DEV_LBA = 0x40
DEV_DEV = 0x10
DEV_HEAD = 0x0F

# ATAPI interrupt reason (in the sector count register) and PACKET features
IREASON_COD = 0x01
IREASON_IO = 0x02
PACKET_FEATURE_DMA = 0x01
ATAPI_PACKET_SIZE = 12
ATAPI_SIGNATURE = (0x14, 0xEB)

# Bus-master registers (per channel) and bits
BM_CMD = 0
BM_STATUS = 2
BM_PRD = 4
BM_CMD_START = 0x01
BM_CMD_TO_MEMORY = 0x08  # "read/write control": 1 = the engine writes memory (device reads)
BM_CMD_MASK = BM_CMD_START | BM_CMD_TO_MEMORY
BM_ST_ACTIVE = 0x01
BM_ST_ERROR = 0x02
BM_ST_INTR = 0x04
BM_ST_DRV0_DMA = 0x20
BM_ST_DRV1_DMA = 0x40
BM_ST_W1C = BM_ST_ERROR | BM_ST_INTR
BM_ST_RW = BM_ST_DRV0_DMA | BM_ST_DRV1_DMA
PRD_ENTRY = struct.Struct("<II")
PRD_EOT = 0x8000_0000
#: A PRD table may not cross a 64 KiB boundary, so it has at most 8192 entries; this bounds the
#: walk of a table a confused guest forgot to terminate.
PRD_MAX_ENTRIES = 0x10000 // PRD_ENTRY.size

# ATA command opcodes
CMD_NOP = 0x00
CMD_DEVICE_RESET = 0x08
CMD_RECALIBRATE = 0x10
CMD_READ_SECTORS = 0x20
CMD_READ_SECTORS_NORETRY = 0x21
CMD_READ_SECTORS_EXT = 0x24
CMD_READ_DMA_EXT = 0x25
CMD_READ_MULTIPLE_EXT = 0x29
CMD_WRITE_SECTORS = 0x30
CMD_WRITE_SECTORS_NORETRY = 0x31
CMD_WRITE_SECTORS_EXT = 0x34
CMD_WRITE_DMA_EXT = 0x35
CMD_WRITE_MULTIPLE_EXT = 0x39
CMD_READ_VERIFY = 0x40
CMD_READ_VERIFY_NORETRY = 0x41
CMD_READ_VERIFY_EXT = 0x42
CMD_SEEK = 0x70
CMD_EXECUTE_DIAGNOSTIC = 0x90
CMD_INITIALIZE_PARAMS = 0x91
CMD_PACKET = 0xA0
CMD_IDENTIFY_PACKET = 0xA1
CMD_READ_MULTIPLE = 0xC4
CMD_WRITE_MULTIPLE = 0xC5
CMD_SET_MULTIPLE = 0xC6
CMD_READ_DMA = 0xC8
CMD_READ_DMA_NORETRY = 0xC9
CMD_WRITE_DMA = 0xCA
CMD_WRITE_DMA_NORETRY = 0xCB
CMD_STANDBY_IMMEDIATE = 0xE0
CMD_IDLE_IMMEDIATE = 0xE1
CMD_STANDBY = 0xE2
CMD_IDLE = 0xE3
CMD_CHECK_POWER_MODE = 0xE5
CMD_FLUSH_CACHE = 0xE7
CMD_FLUSH_CACHE_EXT = 0xEA
CMD_IDENTIFY = 0xEC
CMD_SET_FEATURES = 0xEF

# SET FEATURES subcommands (feature register)
SF_ENABLE_WCACHE = 0x02
SF_SET_XFER_MODE = 0x03
SF_DISABLE_LOOKAHEAD = 0x55
SF_DISABLE_REVERT = 0x66
SF_DISABLE_WCACHE = 0x82
SF_ENABLE_LOOKAHEAD = 0xAA
SF_ENABLE_REVERT = 0xCC
# transfer mode values (sector count register): mode class in bits 7:3, mode in bits 2:0
XFER_PIO_DEFAULT = 0x00
XFER_PIO_FLOW = 0x08
XFER_MWDMA = 0x20
XFER_UDMA = 0x40
MAX_PIO_MODE = 4
MAX_MWDMA_MODE = 2
MAX_UDMA_MODE = 5

#: Commands that leave a drive in standby (every other command wakes it).
_KEEP_STANDBY = frozenset((0xE5, 0xE2, 0xE0))

#: Sectors per DRQ block the drive accepts for READ/WRITE MULTIPLE (IDENTIFY word 47).
MAX_MULT_SECTORS = 16
POWER_ACTIVE = 0xFF
POWER_STANDBY = 0x00

# SCSI / MMC opcodes used by ATAPI CD-ROMs
SCSI_TEST_UNIT_READY = 0x00
SCSI_REQUEST_SENSE = 0x03
SCSI_INQUIRY = 0x12
SCSI_START_STOP_UNIT = 0x1B
SCSI_PREVENT_ALLOW = 0x1E
SCSI_READ_CAPACITY = 0x25
SCSI_READ_10 = 0x28
SCSI_SEEK_10 = 0x2B
SCSI_READ_TOC = 0x43
SCSI_GET_CONFIGURATION = 0x46
SCSI_GET_EVENT_STATUS = 0x4A
SCSI_READ_DISC_INFO = 0x51
SCSI_MODE_SENSE_10 = 0x5A
SCSI_READ_12 = 0xA8
SCSI_SET_CD_SPEED = 0xBB
SCSI_MECHANISM_STATUS = 0xBD

# Sense keys and additional sense codes (SPC-3 / MMC-5)
SENSE_NONE = 0x00
SENSE_NOT_READY = 0x02
SENSE_MEDIUM_ERROR = 0x03
SENSE_ILLEGAL_REQUEST = 0x05
SENSE_UNIT_ATTENTION = 0x06
SENSE_ABORTED_COMMAND = 0x0B
ASC_UNRECOVERED_READ_ERROR = 0x11
ASC_INVALID_OPCODE = 0x20
ASC_LBA_OUT_OF_RANGE = 0x21
ASC_INVALID_FIELD_IN_CDB = 0x24
ASC_MEDIUM_MAY_HAVE_CHANGED = 0x28
ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x39
ASC_MEDIUM_NOT_PRESENT = 0x3A
ASC_MEDIA_REMOVAL_PREVENTED = 0x53
ASC_DMA_ERROR = 0x47  # "SCSI parity error" family; used for a faulted bus-master transfer

# MMC mode pages, profiles, features, events
MODE_PAGE_ERROR_RECOVERY = 0x01
MODE_PAGE_CAPABILITIES = 0x2A
MODE_PAGE_ALL = 0x3F
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
#: Media with more blocks than an 80-minute CD are reported as DVD-ROM.
CD_MAX_BLOCKS = 80 * 60 * 75
GESN_MEDIA_CLASS = 4
MEC_NO_CHANGE = 0
MEC_EJECT_REQUEST = 1
MEC_NEW_MEDIA = 2
MEC_MEDIA_REMOVAL = 3

#: How many sectors a DMA transfer moves per backend call: bounds the host memory used.
DMA_CHUNK_BYTES = 256 * 1024

# What a PIO DRQ block leads to when the guest has moved its last byte (the state machine's
# continuation, kept as a number so that it is part of the snapshot).
XFER_NONE = 0
XFER_END_NO_IRQ = 1  # IDENTIFY: data-in done, no completion interrupt
XFER_ATA_READ = 2
XFER_ATA_WRITE = 3
XFER_PACKET = 4
XFER_ATAPI_DATA = 5

# A DMA command waiting for the engine
DMA_NONE = 0
DMA_ATA_READ = 1
DMA_ATA_WRITE = 2
DMA_ATAPI_IN = 3


class SenseError(Exception):
    """An ATAPI command ends in CHECK CONDITION with this sense (raised by handlers)."""

    def __init__(self, key: int, asc: int, ascq: int = 0) -> None:
        super().__init__(f"sense {key:#x}/{asc:#04x}/{ascq:#04x}")
        self.key = key
        self.asc = asc
        self.ascq = ascq


@dataclass(frozen=True)
class MediumRead:
    """What a READ handler returns: stream ``count`` blocks from ``lba`` to the host."""

    lba: int
    count: int


# --- Drives ---------------------------------------------------------------------------------
def _ata_string(text: str, length: int) -> bytes:
    """An IDENTIFY string: ASCII, space padded, each pair of characters swapped (ATA-7 §6.17)."""
    raw = text.encode("ascii", "replace")[:length].ljust(length, b" ")
    out = bytearray(length)
    out[0::2] = raw[1::2]
    out[1::2] = raw[0::2]
    return bytes(out)


def _scsi_string(text: str, length: int) -> bytes:
    return text.encode("ascii", "replace")[:length].ljust(length, b" ")


class Drive:
    """What is attached to a channel position: the medium and the identity strings.

    Guest-visible state (registers, modes, sense data) lives in the channel's
    :class:`DriveState`, so that one snapshot holds all of it."""

    kind = "none"
    default_model = "KVMPY DRIVE"
    sector_size = DISK_SECTOR_SIZE

    def __init__(
        self,
        backend: BlockBackend | None,
        *,
        model: str | None = None,
        serial: str | None = None,
        firmware: str | None = None,
    ) -> None:
        if backend is not None and backend.sector_size != self.sector_size:
            raise ValueError(
                f"{type(self).__name__} needs a backend with {self.sector_size}-byte sectors, "
                f"got {backend.sector_size}"
            )
        self.backend = backend
        self.model = model or self.default_model
        self.serial = serial  # filled in by the controller from the position when None
        self.firmware = firmware or __version__

    @property
    def is_atapi(self) -> bool:
        return self.kind == "atapi"


class AtaDisk(Drive):
    """An ATA hard disk backed by a raw image with 512-byte sectors."""

    kind = "ata"
    default_model = "KVMPY HARDDISK"
    sector_size = DISK_SECTOR_SIZE

    def __init__(self, backend: BlockBackend, **kw: str | None) -> None:
        if backend is None:
            raise ValueError("an ATA disk needs a backend")
        super().__init__(backend, **kw)

    @property
    def sectors(self) -> int:
        assert self.backend is not None
        return self.backend.sectors

    @property
    def readonly(self) -> bool:
        assert self.backend is not None
        return self.backend.readonly


class AtapiCdrom(Drive):
    """An ATAPI CD/DVD-ROM drive; ``backend`` is the medium (2048-byte blocks) or None."""

    kind = "atapi"
    default_model = "KVMPY DVD-ROM"
    sector_size = CDROM_SECTOR_SIZE

    def __init__(self, backend: BlockBackend | None = None, **kw: str | None) -> None:
        super().__init__(backend, **kw)


# --- State ----------------------------------------------------------------------------------
def _restore_into(dst: object, src: object) -> None:
    """Copy ``src``'s fields into ``dst`` in place, recursing into nested state dataclasses, so
    that objects holding a reference to ``dst`` (a channel holds its ChannelState) stay valid."""
    for f in dataclasses.fields(dst):  # type: ignore[arg-type]
        mine, theirs = getattr(dst, f.name), getattr(src, f.name)
        if dataclasses.is_dataclass(mine):
            _restore_into(mine, theirs)
        elif isinstance(mine, list) and mine and dataclasses.is_dataclass(mine[0]):
            for a, b in zip(mine, theirs, strict=True):
                _restore_into(a, b)
        else:
            setattr(dst, f.name, copy.deepcopy(theirs))


@dataclass
class DriveState:
    """One drive's registers and settings, as the guest sees them."""

    # taskfile as latched by this drive; hob_* are the previous writes (48-bit commands)
    feature: int = 0
    nsector: int = 0
    lbal: int = 0
    lbam: int = 0
    lbah: int = 0
    hob_feature: int = 0
    hob_nsector: int = 0
    hob_lbal: int = 0
    hob_lbam: int = 0
    hob_lbah: int = 0
    device: int = 0
    status: int = 0
    error: int = 0
    # settings the guest made
    mult_sectors: int = MAX_MULT_SECTORS
    xfer_mode: int = XFER_MWDMA | MAX_MWDMA_MODE
    wcache: bool = True
    lookahead: bool = True
    heads: int = 16  # current CHS translation (INITIALIZE DEVICE PARAMETERS)
    spt: int = 63
    power: int = POWER_ACTIVE
    # ATAPI
    sense_key: int = SENSE_NONE
    asc: int = 0
    ascq: int = 0
    media_changed: int = 0  # 1: next command reports NOT READY, 2: then UNIT ATTENTION
    media_event: int = MEC_NO_CHANGE
    tray_open: bool = False
    locked: bool = False

    def set_signature(self, atapi: bool) -> None:
        """The reset/diagnostic signature (ATA/ATAPI-7 vol. 1 §9.12)."""
        self.nsector = self.lbal = 1
        self.lbam, self.lbah = ATAPI_SIGNATURE if atapi else (0, 0)
        self.hob_nsector = self.hob_lbal = self.hob_lbam = self.hob_lbah = 0
        self.device = 0
        self.error = DIAG_PASSED
        self.status = 0 if atapi else ST_READY


def _two_drives() -> list[DriveState]:
    return [DriveState(), DriveState()]


@dataclass
class ChannelState:
    """One channel: its two drives, the shared control bits, the PIO/DMA transfer in progress
    and the channel's bus-master registers."""

    drives: list[DriveState] = field(default_factory=_two_drives)
    select: int = 0  # DEV bit of the last device-register write
    devctl: int = 0
    intrq: bool = False  # a drive asserts INTRQ (cleared by a status read)
    line: bool = False  # the level driven on the IRQ line (INTRQ gated by nIEN)
    # PIO: the current DRQ block and what its end leads to
    buf: bytearray = field(default_factory=bytearray)
    pos: int = 0
    end: int = 0
    xfer: int = XFER_NONE
    xfer_drive: int = 0
    lba: int = 0
    remaining: int = 0  # sectors after the current block
    block: int = 1  # sectors per DRQ block
    # ATAPI reply stream (PIO chunks or DMA)
    atapi_dma: bool = False
    byte_limit: int = 0
    reply: bytearray = field(default_factory=bytearray)  # bytes ready to go
    reply_left: int = 0  # bytes still to move, including ``reply``
    read_lba: int = 0  # medium blocks still to fetch into ``reply``
    read_blocks: int = 0
    # DMA
    dma_pending: int = DMA_NONE
    bm_cmd: int = 0
    bm_status: int = 0
    bm_prd: int = 0
    bm_armed: bool = False  # START went 0 -> 1 and no transfer has used it yet


@dataclass
class IdeState:
    """Everything the guest can observe of the controller."""

    channels: list[ChannelState] = field(default_factory=lambda: [ChannelState(), ChannelState()])

    def snapshot(self) -> IdeState:
        return copy.deepcopy(self)

    def restore(self, snap: IdeState) -> None:
        _restore_into(self, snap)


# --- Command tables -------------------------------------------------------------------------
@dataclass(frozen=True)
class AtaCommand:
    """A row of the ATA command table: the handler's name and how it behaves."""

    name: str
    handler: str
    ata: bool = True  # accepted by a hard disk
    atapi: bool = False  # accepted by a packet device
    lba48: bool = False
    dma: bool = False
    write: bool = False
    multiple: bool = False


def _rw(
    name: str, *, lba48: bool = False, dma: bool = False, write: bool = False, multiple: bool = False
) -> AtaCommand:
    return AtaCommand(name, "_ata_rw", lba48=lba48, dma=dma, write=write, multiple=multiple)


ATA_COMMANDS: dict[int, AtaCommand] = {
    CMD_NOP: AtaCommand("NOP", "_ata_nop", atapi=True),
    CMD_DEVICE_RESET: AtaCommand("DEVICE RESET", "_ata_device_reset", ata=False, atapi=True),
    CMD_RECALIBRATE: AtaCommand("RECALIBRATE", "_ata_complete"),
    CMD_READ_SECTORS: _rw("READ SECTORS"),
    CMD_READ_SECTORS_NORETRY: _rw("READ SECTORS"),
    CMD_READ_SECTORS_EXT: _rw("READ SECTORS EXT", lba48=True),
    CMD_READ_DMA_EXT: _rw("READ DMA EXT", lba48=True, dma=True),
    CMD_READ_MULTIPLE_EXT: _rw("READ MULTIPLE EXT", lba48=True, multiple=True),
    CMD_WRITE_SECTORS: _rw("WRITE SECTORS", write=True),
    CMD_WRITE_SECTORS_NORETRY: _rw("WRITE SECTORS", write=True),
    CMD_WRITE_SECTORS_EXT: _rw("WRITE SECTORS EXT", lba48=True, write=True),
    CMD_WRITE_DMA_EXT: _rw("WRITE DMA EXT", lba48=True, dma=True, write=True),
    CMD_WRITE_MULTIPLE_EXT: _rw("WRITE MULTIPLE EXT", lba48=True, write=True, multiple=True),
    CMD_READ_VERIFY: AtaCommand("READ VERIFY SECTORS", "_ata_verify"),
    CMD_READ_VERIFY_NORETRY: AtaCommand("READ VERIFY SECTORS", "_ata_verify"),
    CMD_READ_VERIFY_EXT: AtaCommand("READ VERIFY SECTORS EXT", "_ata_verify", lba48=True),
    CMD_SEEK: AtaCommand("SEEK", "_ata_seek"),
    CMD_EXECUTE_DIAGNOSTIC: AtaCommand("EXECUTE DEVICE DIAGNOSTIC", "_ata_diagnostic", atapi=True),
    CMD_INITIALIZE_PARAMS: AtaCommand("INITIALIZE DEVICE PARAMETERS", "_ata_init_params"),
    CMD_PACKET: AtaCommand("PACKET", "_ata_packet", ata=False, atapi=True),
    CMD_IDENTIFY_PACKET: AtaCommand("IDENTIFY PACKET DEVICE", "_ata_identify", ata=False, atapi=True),
    CMD_READ_MULTIPLE: _rw("READ MULTIPLE", multiple=True),
    CMD_WRITE_MULTIPLE: _rw("WRITE MULTIPLE", write=True, multiple=True),
    CMD_SET_MULTIPLE: AtaCommand("SET MULTIPLE MODE", "_ata_set_multiple"),
    CMD_READ_DMA: _rw("READ DMA", dma=True),
    CMD_READ_DMA_NORETRY: _rw("READ DMA", dma=True),
    CMD_WRITE_DMA: _rw("WRITE DMA", dma=True, write=True),
    CMD_WRITE_DMA_NORETRY: _rw("WRITE DMA", dma=True, write=True),
    CMD_STANDBY_IMMEDIATE: AtaCommand("STANDBY IMMEDIATE", "_ata_standby", atapi=True),
    CMD_IDLE_IMMEDIATE: AtaCommand("IDLE IMMEDIATE", "_ata_idle", atapi=True),
    CMD_STANDBY: AtaCommand("STANDBY", "_ata_standby", atapi=True),
    CMD_IDLE: AtaCommand("IDLE", "_ata_idle", atapi=True),
    CMD_CHECK_POWER_MODE: AtaCommand("CHECK POWER MODE", "_ata_check_power", atapi=True),
    CMD_FLUSH_CACHE: AtaCommand("FLUSH CACHE", "_ata_flush"),
    CMD_FLUSH_CACHE_EXT: AtaCommand("FLUSH CACHE EXT", "_ata_flush", lba48=True),
    CMD_IDENTIFY: AtaCommand("IDENTIFY DEVICE", "_ata_identify"),
    CMD_SET_FEATURES: AtaCommand("SET FEATURES", "_ata_set_features", atapi=True),
}


@dataclass(frozen=True)
class AtapiCommand:
    """A row of the ATAPI (MMC) command table."""

    name: str
    handler: str
    allow_ua: bool = False  # may run while a unit attention is pending (MMC-5 §4.1.6.1)
    needs_medium: bool = False  # reports NOT READY without a medium (MMC-5 §4.1.8)


ATAPI_COMMANDS: dict[int, AtapiCommand] = {
    SCSI_TEST_UNIT_READY: AtapiCommand("TEST UNIT READY", "_scsi_test_unit_ready", needs_medium=True),
    SCSI_REQUEST_SENSE: AtapiCommand("REQUEST SENSE", "_scsi_request_sense", allow_ua=True),
    SCSI_INQUIRY: AtapiCommand("INQUIRY", "_scsi_inquiry", allow_ua=True),
    SCSI_START_STOP_UNIT: AtapiCommand("START STOP UNIT", "_scsi_start_stop"),
    SCSI_PREVENT_ALLOW: AtapiCommand("PREVENT ALLOW MEDIUM REMOVAL", "_scsi_prevent_allow"),
    SCSI_READ_CAPACITY: AtapiCommand("READ CAPACITY", "_scsi_read_capacity", needs_medium=True),
    SCSI_READ_10: AtapiCommand("READ(10)", "_scsi_read", needs_medium=True),
    SCSI_SEEK_10: AtapiCommand("SEEK(10)", "_scsi_seek", needs_medium=True),
    SCSI_READ_TOC: AtapiCommand("READ TOC/PMA/ATIP", "_scsi_read_toc", needs_medium=True),
    SCSI_GET_CONFIGURATION: AtapiCommand("GET CONFIGURATION", "_scsi_get_configuration", allow_ua=True),
    SCSI_GET_EVENT_STATUS: AtapiCommand(
        "GET EVENT STATUS NOTIFICATION", "_scsi_get_event_status", allow_ua=True
    ),
    SCSI_READ_DISC_INFO: AtapiCommand("READ DISC INFORMATION", "_scsi_read_disc_info", needs_medium=True),
    SCSI_MODE_SENSE_10: AtapiCommand("MODE SENSE(10)", "_scsi_mode_sense"),
    SCSI_READ_12: AtapiCommand("READ(12)", "_scsi_read", needs_medium=True),
    SCSI_SET_CD_SPEED: AtapiCommand("SET CD SPEED", "_scsi_nothing"),
    SCSI_MECHANISM_STATUS: AtapiCommand("MECHANISM STATUS", "_scsi_mechanism_status"),
}


# --- IDENTIFY -------------------------------------------------------------------------------
def _checksummed(words: list[int]) -> bytes:
    """Pack 256 words and set word 255 to the integrity word (signature 0xA5, checksum)."""
    words[255] = 0x00A5
    raw = bytearray(struct.pack("<256H", *words))
    raw[511] = (-sum(raw[:511])) & 0xFF
    return bytes(raw)


def _put_string(words: list[int], first: int, text: str, nwords: int) -> None:
    raw = _ata_string(text, nwords * 2)
    for i in range(nwords):
        words[first + i] = raw[2 * i] | (raw[2 * i + 1] << 8)


def _xfer_words(mode: int) -> tuple[int, int]:
    """Words 63 (multiword DMA) and 88 (Ultra DMA): supported modes and the one selected."""
    w63 = (1 << (MAX_MWDMA_MODE + 1)) - 1
    w88 = (1 << (MAX_UDMA_MODE + 1)) - 1
    if mode & 0xF8 == XFER_MWDMA:
        w63 |= 0x100 << (mode & 7)
    elif mode & 0xF8 == XFER_UDMA:
        w88 |= 0x100 << (mode & 7)
    return w63, w88


def _reset_result(unit: int, other_present: bool) -> int:
    """Word 93, hardware reset result: jumper-selected, diagnostics passed, 80-wire cable."""
    word = 0x4000 | 0x2000
    if unit == 0:
        word |= 0x0001 | 0x0002 | 0x0008  # bit 0 set, bits 2:1 = 01 (jumper), bit 3 passed
        if other_present:
            word |= 0x0010 | 0x0020  # PDIAG- and DASP- seen from device 1
    else:
        word |= 0x0100 | 0x0200 | 0x0800  # device 1: bit 8 set, bits 10:9 = 01, bit 11 passed
    return word


def identify_disk(drive: AtaDisk, ds: DriveState, unit: int, other_present: bool) -> bytes:
    """The 256-word IDENTIFY DEVICE block of an ATA disk (ATA/ATAPI-7 vol. 1 table 16)."""
    w = [0] * 256
    sectors = drive.sectors
    cyls = max(1, min(sectors // (16 * 63), 16383))
    w[0] = 0x0040  # fixed device, ATA
    w[1], w[3], w[6] = cyls, 16, 63  # default CHS translation
    _put_string(w, 10, drive.serial or "", 10)
    w[20], w[21], w[22] = 3, 512, 4  # obsolete: buffer type/size, ECC bytes (old drivers print them)
    _put_string(w, 23, drive.firmware, 4)
    _put_string(w, 27, drive.model, 20)
    w[47] = 0x8000 | MAX_MULT_SECTORS
    w[49] = 0x0800 | 0x0200 | 0x0100  # IORDY supported, LBA supported, DMA supported
    w[50] = 0x4000
    w[51] = w[52] = 0x0200  # obsolete PIO/DMA timing mode 2
    w[53] = 0x0007  # words 54-58, 64-70 and 88 are valid
    cur_cyls = max(1, min(sectors // (ds.heads * ds.spt), 65535))
    w[54], w[55], w[56] = cur_cyls, ds.heads, ds.spt
    cur_cap = cur_cyls * ds.heads * ds.spt
    w[57], w[58] = cur_cap & 0xFFFF, cur_cap >> 16
    w[59] = (0x0100 | ds.mult_sectors) if ds.mult_sectors else 0
    lba28 = min(sectors, 0x0FFF_FFFF)
    w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
    w[63], w[88] = _xfer_words(ds.xfer_mode)
    w[64] = 0x0003  # PIO modes 3 and 4
    w[65] = w[66] = w[67] = w[68] = 120  # cycle times (ns)
    w[80] = 0x00F0  # ATA/ATAPI-4 to -7
    w[81] = 0x0000
    w[82] = 0x4000 | 0x0040 | 0x0020  # NOP, look-ahead, write cache
    w[83] = 0x4000 | 0x2000 | 0x1000 | 0x0400  # FLUSH CACHE EXT, FLUSH CACHE, 48-bit address
    w[84] = 0x4000
    w[85] = 0x4000 | (0x0040 if ds.lookahead else 0) | (0x0020 if ds.wcache else 0)
    w[86] = 0x2000 | 0x1000 | 0x0400
    w[87] = 0x4000
    w[93] = _reset_result(unit, other_present)
    for i in range(4):
        w[100 + i] = (sectors >> (16 * i)) & 0xFFFF
    w[106] = 0x4000  # one 512-byte logical sector per physical sector
    return _checksummed(w)


def identify_packet(drive: AtapiCdrom, ds: DriveState, unit: int, other_present: bool) -> bytes:
    """The 256-word IDENTIFY PACKET DEVICE block of a CD-ROM (ATA/ATAPI-7 vol. 1 table 26)."""
    w = [0] * 256
    # ATAPI, CD-ROM device type, removable, accelerated DRQ (50 us: no CDB interrupt), 12-byte packets
    w[0] = 0x8000 | (0x05 << 8) | 0x0080 | 0x0040
    _put_string(w, 10, drive.serial or "", 10)
    _put_string(w, 23, drive.firmware, 4)
    _put_string(w, 27, drive.model, 20)
    w[49] = 0x0800 | 0x0200 | 0x0100  # IORDY, LBA, DMA
    w[50] = 0x4000
    w[53] = 0x0006  # words 64-70 and 88 are valid
    w[63], w[88] = _xfer_words(ds.xfer_mode)
    w[64] = 0x0003
    w[65] = w[66] = w[67] = w[68] = 120
    w[71] = w[72] = 30  # typical PACKET command release / service times (us)
    w[80] = 0x00F0
    w[82] = 0x4000 | 0x0200 | 0x0010  # NOP, DEVICE RESET, PACKET feature set
    w[83] = 0x4000
    w[84] = 0x4000
    w[85] = 0x4000 | 0x0200 | 0x0010
    w[87] = 0x4000
    w[93] = _reset_result(unit, other_present)
    return _checksummed(w)


# --- Bus-master scatter/gather --------------------------------------------------------------
class _PrdWalker:
    """Walks a PRD table lazily, one entry when the previous one is used up, so that a guest's
    table is read exactly as far as the transfer needs (as the engine does)."""

    __slots__ = ("dma", "table", "index", "addr", "left", "eot")

    def __init__(self, dma: DmaSpace, table: int) -> None:
        self.dma = dma
        self.table = table
        self.index = 0
        self.addr = 0
        self.left = 0
        self.eot = False

    def _next(self) -> bool:
        if self.eot or self.index >= PRD_MAX_ENTRIES:
            return False
        raw = self.dma.read((self.table + self.index * PRD_ENTRY.size) & 0xFFFF_FFFF, PRD_ENTRY.size)
        self.index += 1
        addr, ctl = PRD_ENTRY.unpack(raw)
        self.addr = addr & 0xFFFF_FFFE
        self.left = (ctl & 0xFFFE) or 0x10000
        self.eot = bool(ctl & PRD_EOT)
        return True

    def scatter(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` into the regions; returns how many bytes fitted."""
        view = memoryview(data)
        done, total = 0, len(view)
        while done < total:
            if not self.left and not self._next():
                break
            n = min(self.left, total - done)
            self.dma.write(self.addr, bytes(view[done : done + n]))
            self.addr += n
            self.left -= n
            done += n
        return done

    def gather(self, length: int) -> bytes:
        """Read up to ``length`` bytes from the regions (fewer when the table ends)."""
        parts: list[bytes] = []
        done = 0
        while done < length:
            if not self.left and not self._next():
                break
            n = min(self.left, length - done)
            parts.append(self.dma.read(self.addr, n))
            self.addr += n
            self.left -= n
            done += n
        return b"".join(parts)

    def more_space(self) -> bool:
        """The table describes memory beyond what was used (the engine stays ACTIVE)."""
        return self.left > 0 or (not self.eot and self.index < PRD_MAX_ENTRIES)


# --- The channel ----------------------------------------------------------------------------
_WORD_PAD = b"\0\0\0\0"


class ControlBlock:
    """The control-block port of a channel: alternate status (read) / device control (write)."""

    LENGTH = CTL_BLOCK_LEN
    SIZES = CTL_BLOCK_SIZES

    __slots__ = ("channel",)

    def __init__(self, channel: IdeChannel) -> None:
        self.channel = channel

    def read(self, offset: int, size: int) -> int:
        return self.channel.alt_status()

    def write(self, offset: int, size: int, value: int) -> None:
        self.channel.write_devctl(value & 0xFF)


class IdeChannel:
    """One ATA channel: the command-block device (register it at the channel's 8 ports) with
    its ``control`` port, two drive positions and the channel's half of the bus-master block."""

    LENGTH = CMD_BLOCK_LEN
    SIZES = CMD_BLOCK_SIZES

    def __init__(self, controller: PiixIde, index: int, irq: IrqLine, state: ChannelState,
                 drives: Sequence[Drive | None]) -> None:
        self.controller = controller
        self.index = index
        self.irq = irq
        self.st = state
        self.drives: list[Drive | None] = [None, None]
        for unit, d in enumerate(drives):
            if d is not None:
                self.attach(unit, d)
        self.control = ControlBlock(self)
        self._warned: set[str] = set()
        self._ata = {op: getattr(self, c.handler) for op, c in ATA_COMMANDS.items()}
        self._atapi = {op: getattr(self, c.handler) for op, c in ATAPI_COMMANDS.items()}
        self._block_done_table: dict[int, Callable[[], None]] = {
            XFER_NONE: self._end_transfer,
            XFER_END_NO_IRQ: self._pio_in_done,
            XFER_ATA_READ: self._ata_read_block_done,
            XFER_ATA_WRITE: self._ata_write_block_done,
            XFER_PACKET: self._packet_received,
            XFER_ATAPI_DATA: self._atapi_chunk_done,
        }

    def attach(self, unit: int, drive: Drive | None) -> None:
        """Put ``drive`` at position ``unit`` (0 master, 1 slave), before the guest runs."""
        if drive is not None and drive.serial is None:
            drive.serial = f"KVMPY{self.index * 2 + unit + 1:05d}"
        self.drives[unit] = drive

    # -- helpers ------------------------------------------------------------------------------
    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.info("ide%d: " + msg, self.index, *args)

    def _set_line(self) -> None:
        st = self.st
        level = st.intrq and not st.devctl & DC_NIEN
        if level != st.line:
            if level:
                st.bm_status |= BM_ST_INTR  # set on the rising edge of the channel's interrupt
            st.line = level
            self.irq.set_level(level)

    def _raise_irq(self) -> None:
        """A drive asserts INTRQ; a new event while the line is high becomes a fresh edge."""
        st = self.st
        if st.line:
            st.line = False
            self.irq.set_level(False)
        st.intrq = True
        self._set_line()

    def _clear_irq(self) -> None:
        if self.st.intrq:
            self.st.intrq = False
            self._set_line()

    def resync_irq(self) -> None:
        """Drive the IRQ line from the state (after restore)."""
        st = self.st
        st.line = st.intrq and not st.devctl & DC_NIEN
        self.irq.set_level(st.line)

    def _end_transfer(self) -> None:
        st = self.st
        st.pos = st.end = 0
        st.xfer = XFER_NONE

    def _start_pio(self, data: bytes | bytearray | None, length: int, xfer: int) -> None:
        """Open a DRQ block: ``data`` for the host to read, or ``length`` bytes for it to write."""
        st = self.st
        if data is None:
            st.buf = bytearray(length + len(_WORD_PAD))
            st.end = length
        else:
            st.buf = bytearray(data)
            st.buf += _WORD_PAD  # a word or dword access at the last byte stays inside
            st.end = len(data)
        st.pos = 0
        st.xfer = xfer
        ds = st.drives[st.xfer_drive]
        ds.status = (ds.status & ~(ST_BSY | ST_ERR)) | ST_DRQ | ST_DRDY

    def _complete(self, ds: DriveState, *, irq: bool = True, status: int = ST_READY) -> None:
        self._end_transfer()
        ds.status = status
        if irq:
            self._raise_irq()

    def _abort(self, ds: DriveState, error: int = ER_ABRT) -> None:
        """End the command with ERR and ``error`` (ABRT by default) and interrupt."""
        self._end_transfer()
        self.st.dma_pending = DMA_NONE
        ds.error = error
        ds.status = ST_DRDY | ST_ERR
        self._raise_irq()

    # -- the command block --------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == REG_DATA:
            return self._data_read(size)
        if size != 1:  # odd wide access to the byte registers: do it a byte at a time
            return sum(self.read(offset + i, 1) << (8 * i) for i in range(size) if offset + i < CMD_BLOCK_LEN)
        st = self.st
        ds = st.drives[st.select]
        if offset == REG_STATUS and st.intrq:
            st.intrq = False  # the channel's one INTRQ, whichever drive is selected (as QEMU)
            self._set_line()
        if self.drives[st.select] is None:
            return ds.device if offset == REG_DEVICE else 0
        if offset == REG_STATUS:
            return ds.status
        hob = st.devctl & DC_HOB
        if offset == REG_ERROR:
            return ds.error
        if offset == REG_NSECTOR:
            return ds.hob_nsector if hob else ds.nsector
        if offset == REG_LBAL:
            return ds.hob_lbal if hob else ds.lbal
        if offset == REG_LBAM:
            return ds.hob_lbam if hob else ds.lbam
        if offset == REG_LBAH:
            return ds.hob_lbah if hob else ds.lbah
        return ds.device  # REG_DEVICE

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == REG_DATA:
            self._data_write(size, value)
            return
        if size != 1:
            for i in range(size):
                if offset + i < CMD_BLOCK_LEN:
                    self.write(offset + i, 1, (value >> (8 * i)) & 0xFF)
            return
        st = self.st
        if offset == REG_COMMAND:
            self._command(value)
            return
        if st.drives[st.select].status & ST_BSY:
            return  # the command block is not writable while the device is busy
        st.devctl &= ~DC_HOB  # any command-block write clears HOB
        if offset == REG_DEVICE:
            for ds in st.drives:
                ds.device = value
            st.select = (value >> 4) & 1
            return
        name = _TF_FIELDS[offset]
        hob = "hob_" + name
        for ds in st.drives:
            setattr(ds, hob, getattr(ds, name))
            setattr(ds, name, value)

    # -- data port ------------------------------------------------------------------------------
    def _data_read(self, size: int) -> int:
        st = self.st
        pos = st.pos
        if pos >= st.end:
            return 0
        buf = st.buf
        if size == 2:
            value = buf[pos] | (buf[pos + 1] << 8)
        elif size == 4:
            value = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16) | (buf[pos + 3] << 24)
        else:
            value = buf[pos]
        pos += size
        st.pos = pos
        if pos >= st.end:
            self._block_done()
        return value

    def _data_write(self, size: int, value: int) -> None:
        st = self.st
        pos = st.pos
        if pos >= st.end:
            return
        buf = st.buf
        buf[pos] = value & 0xFF
        if size >= 2:
            buf[pos + 1] = (value >> 8) & 0xFF
            if size == 4:
                buf[pos + 2] = (value >> 16) & 0xFF
                buf[pos + 3] = value >> 24
        pos += size
        st.pos = pos
        if pos >= st.end:
            self._block_done()

    def read_string(self, offset: int, size: int, count: int) -> bytes:
        """``rep ins`` of ``count`` items of ``size`` bytes, in one call (the same bytes, the same
        state changes as ``count`` single reads)."""
        if offset != REG_DATA:
            return b"".join(self.read(offset, size).to_bytes(size, "little") for _ in range(count))
        st = self.st
        want = size * count
        out = bytearray()
        while len(out) < want and st.pos < st.end:
            take = min(st.end - st.pos, want - len(out))
            take = -(-take // size) * size  # whole items; a last partial one reads padding
            out += st.buf[st.pos : st.pos + take]
            st.pos += take
            if st.pos >= st.end:
                self._block_done()
        if len(out) < want:
            out += bytes(want - len(out))
        return bytes(out[:want])

    def write_string(self, offset: int, size: int, data: bytes | bytearray | memoryview) -> None:
        """``rep outs`` of ``len(data) // size`` items in one call."""
        if offset != REG_DATA:
            for i in range(0, len(data), size):
                self.write(offset, size, int.from_bytes(data[i : i + size], "little"))
            return
        st = self.st
        view = memoryview(data)
        i = 0
        while i < len(view) and st.pos < st.end:
            take = min(st.end - st.pos, len(view) - i)
            take = -(-take // size) * size
            take = min(take, len(view) - i)
            st.buf[st.pos : st.pos + take] = view[i : i + take]
            st.pos += take
            i += take
            if st.pos >= st.end:
                self._block_done()

    def _block_done(self) -> None:
        """The host has moved the last byte of the DRQ block."""
        st = self.st
        st.drives[st.xfer_drive].status &= ~ST_DRQ
        self._block_done_table[st.xfer]()

    def _pio_in_done(self) -> None:
        self._complete(self.st.drives[self.st.xfer_drive], irq=False)

    # -- control block ------------------------------------------------------------------------
    def alt_status(self) -> int:
        st = self.st
        if self.drives[st.select] is None:
            return 0
        return st.drives[st.select].status

    def write_devctl(self, value: int) -> None:
        st = self.st
        old = st.devctl
        st.devctl = value
        if value & DC_SRST and not old & DC_SRST:
            # SRST asserted: both drives stop whatever they did and stay busy
            self._end_transfer()
            st.dma_pending = DMA_NONE
            for unit, ds in enumerate(st.drives):
                if self.drives[unit] is not None:
                    ds.status = ST_BSY
            st.intrq = False
        elif old & DC_SRST and not value & DC_SRST:
            # SRST released: diagnostics done, signatures in place, device 0 selected, no IRQ
            for unit, ds in enumerate(st.drives):
                d = self.drives[unit]
                ds.set_signature(d is not None and d.is_atapi)
                if d is None:
                    ds.status = 0
            st.select = 0
            st.intrq = False
        self._set_line()

    # -- command dispatch ---------------------------------------------------------------------
    def _command(self, opcode: int) -> None:
        st = self.st
        unit = st.select
        drive = self.drives[unit]
        ds = st.drives[unit]
        if drive is None:
            return  # nobody answers; the status stays 0
        # Only DEVICE RESET may interrupt a busy ATAPI device (ATA/ATAPI-7 vol. 1 §6.9)
        if ds.status & (ST_BSY | ST_DRQ) and not (opcode == CMD_DEVICE_RESET and drive.is_atapi):
            self._log_once(f"busy{opcode}", "command %#04x while busy (status %#04x) ignored",
                           opcode, ds.status)
            return
        self._clear_irq()
        st.xfer_drive = unit  # every continuation of this command works on this drive
        spec = ATA_COMMANDS.get(opcode)
        if spec is None or not (spec.atapi if drive.is_atapi else spec.ata):
            if spec is None:
                self._log_once(f"cmd{opcode}", "unknown command %#04x aborted", opcode)
            if drive.is_atapi:
                ds.set_signature(True)  # packet devices abort ATA commands with the signature
            self._abort(ds)
            return
        ds.error = 0
        if ds.power == POWER_STANDBY and opcode not in _KEEP_STANDBY:
            ds.power = POWER_ACTIVE
        self._ata[opcode](drive, ds, spec)

    # -- ATA commands ---------------------------------------------------------------------------
    def _ata_complete(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        self._complete(ds)

    def _ata_nop(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        self._abort(ds)  # NOP always aborts (ATA/ATAPI-7 vol. 1 §6.21)

    def _ata_device_reset(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        self._end_transfer()
        self.st.dma_pending = DMA_NONE
        ds.set_signature(True)  # no interrupt: the host polls for BSY to clear

    def _ata_diagnostic(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        st = self.st
        self._end_transfer()
        for unit, other in enumerate(st.drives):
            d = self.drives[unit]
            if d is not None:
                other.set_signature(d.is_atapi)
        self._raise_irq()

    def _ata_identify(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        unit = self.st.xfer_drive
        other = self.drives[1 - unit] is not None
        if isinstance(drive, AtaDisk):
            data = identify_disk(drive, ds, unit, other)
        else:
            assert isinstance(drive, AtapiCdrom)
            data = identify_packet(drive, ds, unit, other)
        self._start_pio(data, len(data), XFER_END_NO_IRQ)
        ds.status |= ST_DSC
        self._raise_irq()

    def _lba(self, ds: DriveState, lba48: bool) -> int:
        """The address in the taskfile: LBA48, LBA28 or CHS under the current translation."""
        if lba48:
            return (
                (ds.hob_lbah << 40) | (ds.hob_lbam << 32) | (ds.hob_lbal << 24)
                | (ds.lbah << 16) | (ds.lbam << 8) | ds.lbal
            )
        if ds.device & DEV_LBA:
            return ((ds.device & DEV_HEAD) << 24) | (ds.lbah << 16) | (ds.lbam << 8) | ds.lbal
        cyl = (ds.lbah << 8) | ds.lbam
        head = ds.device & DEV_HEAD
        if ds.lbal == 0 or head >= ds.heads or ds.lbal > ds.spt:
            return -1
        return (cyl * ds.heads + head) * ds.spt + ds.lbal - 1

    @staticmethod
    def _count(ds: DriveState, lba48: bool) -> int:
        if lba48:
            return ((ds.hob_nsector << 8) | ds.nsector) or 0x10000
        return ds.nsector or 0x100

    def _in_range(self, drive: AtaDisk, lba: int, count: int) -> bool:
        return 0 <= lba and lba + count <= drive.sectors

    def _ata_rw(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        assert isinstance(drive, AtaDisk)
        st = self.st
        if spec.multiple and not ds.mult_sectors:
            self._abort(ds)  # READ/WRITE MULTIPLE before SET MULTIPLE MODE
            return
        if spec.write and drive.readonly:
            self._log_once("ro", "write to the read-only disk %d aborted", st.select)
            self._abort(ds)
            return
        lba = self._lba(ds, spec.lba48)
        count = self._count(ds, spec.lba48)
        if not self._in_range(drive, lba, count):
            self._abort(ds, ER_IDNF)
            return
        st.lba = lba
        st.remaining = count
        st.block = ds.mult_sectors if spec.multiple else 1
        if spec.dma:
            st.dma_pending = DMA_ATA_WRITE if spec.write else DMA_ATA_READ
            ds.status = ST_READY | ST_DRQ
            self._maybe_run_dma()
        elif spec.write:
            self._ata_write_next_block(first=True)
        else:
            self._ata_read_next_block()

    def _ata_read_next_block(self) -> None:
        st = self.st
        drive = self.drives[st.xfer_drive]
        ds = st.drives[st.xfer_drive]
        assert isinstance(drive, AtaDisk) and drive.backend is not None
        n = min(st.block, st.remaining)
        try:
            data = drive.backend.read_sectors(st.lba, n)
        except BlockIOError as e:
            self._log_once("rerr", "%s", e)
            self._abort(ds, ER_UNC)
            return
        st.lba += n
        st.remaining -= n
        self._start_pio(data, len(data), XFER_ATA_READ)
        ds.status |= ST_DSC
        self._raise_irq()

    def _ata_read_block_done(self) -> None:
        if self.st.remaining:
            self._ata_read_next_block()
        else:
            self._complete(self.st.drives[self.st.xfer_drive], irq=False)  # PIO in: no last IRQ

    def _ata_write_next_block(self, first: bool = False) -> None:
        st = self.st
        n = min(st.block, st.remaining)
        self._start_pio(None, n * DISK_SECTOR_SIZE, XFER_ATA_WRITE)
        st.drives[st.xfer_drive].status |= ST_DSC
        if not first:
            self._raise_irq()  # PIO out: the first block is requested without an interrupt

    def _ata_write_block_done(self) -> None:
        st = self.st
        drive = self.drives[st.xfer_drive]
        ds = st.drives[st.xfer_drive]
        assert isinstance(drive, AtaDisk) and drive.backend is not None
        try:
            drive.backend.write_sectors(st.lba, memoryview(st.buf)[: st.end])
        except BlockIOError as e:
            self._log_once("werr", "%s", e)
            self._abort(ds, ER_ABRT)
            return
        n = st.end // DISK_SECTOR_SIZE
        st.lba += n
        st.remaining -= n
        if st.remaining:
            self._ata_write_next_block()
        else:
            self._complete(ds)

    def _ata_verify(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        assert isinstance(drive, AtaDisk)
        lba, count = self._lba(ds, spec.lba48), self._count(ds, spec.lba48)
        if not self._in_range(drive, lba, count):
            self._abort(ds, ER_IDNF)
        else:
            self._complete(ds)

    def _ata_seek(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        assert isinstance(drive, AtaDisk)
        if not self._in_range(drive, self._lba(ds, False), 1):
            self._abort(ds, ER_IDNF)
        else:
            self._complete(ds)

    def _ata_init_params(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        if ds.nsector == 0:
            self._abort(ds)
            return
        ds.heads = (ds.device & DEV_HEAD) + 1
        ds.spt = ds.nsector
        self._complete(ds)

    def _ata_set_multiple(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        n = ds.nsector
        if n > MAX_MULT_SECTORS or (n & (n - 1)):
            self._abort(ds)
            return
        ds.mult_sectors = n  # 0 disables multiple mode
        self._complete(ds)

    def _ata_standby(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        ds.power = POWER_STANDBY
        self._complete(ds, status=ST_DRDY | ST_DSC if not drive.is_atapi else ST_DRDY)

    def _ata_idle(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        ds.power = POWER_ACTIVE
        self._complete(ds, status=ST_READY if not drive.is_atapi else ST_DRDY)

    def _ata_check_power(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        ds.nsector = ds.power
        self._complete(ds, status=ST_READY if not drive.is_atapi else ST_DRDY)

    def _ata_flush(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        assert drive.backend is not None
        try:
            drive.backend.flush()  # the completion interrupt comes only after fsync returned
        except BlockIOError as e:
            self._log_once("ferr", "%s", e)
            self._abort(ds)
            return
        self._complete(ds)

    def _ata_set_features(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        sub = ds.feature
        ok = True
        if sub == SF_SET_XFER_MODE:
            mode = ds.nsector
            kind, n = mode & 0xF8, mode & 7
            if mode in (0x00, 0x01) or (kind == XFER_PIO_FLOW and n <= MAX_PIO_MODE):
                pass  # PIO modes: timing only
            elif (kind == XFER_MWDMA and n <= MAX_MWDMA_MODE) or (kind == XFER_UDMA and n <= MAX_UDMA_MODE):
                ds.xfer_mode = mode
            else:
                ok = False
        elif sub in (SF_ENABLE_WCACHE, SF_DISABLE_WCACHE) and not drive.is_atapi:
            ds.wcache = sub == SF_ENABLE_WCACHE
        elif sub in (SF_ENABLE_LOOKAHEAD, SF_DISABLE_LOOKAHEAD) and not drive.is_atapi:
            ds.lookahead = sub == SF_ENABLE_LOOKAHEAD
        elif sub in (SF_ENABLE_REVERT, SF_DISABLE_REVERT):
            pass
        else:
            ok = False
        if not ok:
            self._log_once(f"sf{sub:x}", "SET FEATURES %#04x (count %#04x) aborted", sub, ds.nsector)
            self._abort(ds)
            return
        self._complete(ds, status=ST_READY if not drive.is_atapi else ST_DRDY)

    # -- ATAPI ----------------------------------------------------------------------------------
    def _ata_packet(self, drive: Drive, ds: DriveState, spec: AtaCommand) -> None:
        st = self.st
        st.atapi_dma = bool(ds.feature & PACKET_FEATURE_DMA)
        st.byte_limit = ds.lbam | (ds.lbah << 8)
        ds.nsector = (ds.nsector & ~0x07) | IREASON_COD
        self._start_pio(None, ATAPI_PACKET_SIZE, XFER_PACKET)
        ds.status |= ST_DSC  # accelerated DRQ: no interrupt, the host polls for DRQ

    def _packet_received(self) -> None:
        st = self.st
        drive = self.drives[st.xfer_drive]
        ds = st.drives[st.xfer_drive]
        assert isinstance(drive, AtapiCdrom)
        cdb = bytes(st.buf[:ATAPI_PACKET_SIZE])
        self._end_transfer()
        try:
            result = self._atapi_dispatch(drive, ds, cdb)
        except SenseError as e:
            self._atapi_error(ds, e.key, e.asc, e.ascq)
            return
        if cdb[0] != SCSI_REQUEST_SENSE and ds.sense_key != SENSE_UNIT_ATTENTION:
            ds.sense_key, ds.asc, ds.ascq = SENSE_NONE, 0, 0
        if result is None:
            self._atapi_ok(ds)
        elif isinstance(result, MediumRead):
            self._atapi_start_data(ds, b"", result.count * CDROM_SECTOR_SIZE, result.lba, result.count)
        else:
            self._atapi_start_data(ds, result, len(result), 0, 0)

    def _medium(self, drive: AtapiCdrom, ds: DriveState) -> BlockBackend | None:
        return drive.backend if drive.backend is not None and not ds.tray_open else None

    def _atapi_dispatch(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes | MediumRead | None:
        spec = ATAPI_COMMANDS.get(cdb[0])
        if spec is None:
            self._log_once(f"scsi{cdb[0]}", "unsupported ATAPI command %#04x", cdb[0])
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
        present = self._medium(drive, ds) is not None
        if not spec.allow_ua:
            if ds.sense_key == SENSE_UNIT_ATTENTION:
                raise SenseError(SENSE_UNIT_ATTENTION, ds.asc, ds.ascq)  # until REQUEST SENSE
            if ds.media_changed and present:
                # a swapped medium looks first absent, then changed (MMC; what QEMU guests expect)
                if ds.media_changed == 1:
                    ds.media_changed = 2
                    raise SenseError(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT)
                ds.media_changed = 0
                raise SenseError(SENSE_UNIT_ATTENTION, ASC_MEDIUM_MAY_HAVE_CHANGED)
        if spec.needs_medium and not present:
            raise SenseError(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT, 0x02 if ds.tray_open else 0x01)
        return self._atapi[cdb[0]](drive, ds, cdb)

    def _atapi_ok(self, ds: DriveState) -> None:
        ds.error = 0
        ds.nsector = (ds.nsector & ~0x07) | IREASON_IO | IREASON_COD
        self._complete(ds, status=ST_READY)

    def _atapi_error(self, ds: DriveState, key: int, asc: int, ascq: int = 0) -> None:
        """CHECK CONDITION: ERR with the sense key in the error register's high nibble."""
        self._end_transfer()
        st = self.st
        st.dma_pending = DMA_NONE
        st.reply = bytearray()
        st.reply_left = st.read_blocks = 0
        ds.sense_key, ds.asc, ds.ascq = key, asc, ascq
        ds.error = key << 4
        ds.nsector = (ds.nsector & ~0x07) | IREASON_IO | IREASON_COD
        ds.status = ST_DRDY | ST_ERR
        self._raise_irq()

    def _atapi_start_data(self, ds: DriveState, data: bytes, total: int, lba: int, blocks: int) -> None:
        st = self.st
        if total == 0:
            self._atapi_ok(ds)
            return
        st.reply = bytearray(data)
        st.reply_left = total
        st.read_lba = lba
        st.read_blocks = blocks
        if st.atapi_dma:
            st.dma_pending = DMA_ATAPI_IN
            ds.status = ST_READY | ST_DRQ
            self._maybe_run_dma()
        else:
            self._atapi_next_chunk()

    def _atapi_take(self, n: int) -> bytes:
        """The next ``n`` reply bytes, fetching medium blocks as needed."""
        st = self.st
        if len(st.reply) < n and st.read_blocks:
            drive = self.drives[st.xfer_drive]
            assert drive is not None and drive.backend is not None
            need = -(-(n - len(st.reply)) // CDROM_SECTOR_SIZE)
            k = min(st.read_blocks, need)
            st.reply += drive.backend.read_sectors(st.read_lba, k)
            st.read_lba += k
            st.read_blocks -= k
        chunk = bytes(st.reply[:n])
        del st.reply[:n]
        st.reply_left -= len(chunk)
        return chunk

    def _atapi_next_chunk(self) -> None:
        st = self.st
        ds = st.drives[st.xfer_drive]
        limit = st.byte_limit
        if limit in (0, 0xFFFF):
            limit = 0xFFFE
        n = min(st.reply_left, limit)
        if n < st.reply_left and n & 1:
            n -= 1  # a limit that splits the reply must be even
        try:
            chunk = self._atapi_take(n)
        except BlockIOError as e:
            self._log_once("cderr", "%s", e)
            self._atapi_error(ds, SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR)
            return
        ds.lbam, ds.lbah = n & 0xFF, n >> 8
        ds.nsector = (ds.nsector & ~0x07) | IREASON_IO
        self._start_pio(chunk, n, XFER_ATAPI_DATA)
        ds.status |= ST_DSC
        self._raise_irq()

    def _atapi_chunk_done(self) -> None:
        st = self.st
        if st.reply_left > 0:
            self._atapi_next_chunk()
        else:
            self._atapi_ok(st.drives[st.xfer_drive])

    # -- ATAPI commands (return reply bytes, a MediumRead, or None; raise SenseError) ----------
    def _scsi_nothing(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> None:
        return None

    _scsi_test_unit_ready = _scsi_nothing

    def _scsi_request_sense(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        sense = bytearray(18)
        sense[0] = 0x70  # current error, fixed format
        sense[2] = ds.sense_key
        sense[7] = 10  # additional sense length
        sense[12], sense[13] = ds.asc, ds.ascq
        ds.sense_key, ds.asc, ds.ascq = SENSE_NONE, 0, 0
        return bytes(sense[: cdb[4]])

    def _scsi_inquiry(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        if cdb[1] & 0x01 or cdb[2]:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)  # no VPD pages
        alloc = (cdb[3] << 8) | cdb[4]
        data = bytes((0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0))  # CD/DVD, removable, ATAPI format
        data += _scsi_string("KVMPY", 8) + _scsi_string(drive.model, 16) + _scsi_string(drive.firmware, 4)
        return data[:alloc]

    def _scsi_start_stop(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> None:
        start, loej = cdb[4] & 0x01, cdb[4] & 0x02
        if cdb[4] & 0xF0 or not loej:
            return None  # power conditions, spin up/down: nothing to do
        if not start:  # eject
            if ds.locked and not ds.tray_open:
                key = SENSE_NOT_READY if drive.backend is not None else SENSE_ILLEGAL_REQUEST
                raise SenseError(key, ASC_MEDIA_REMOVAL_PREVENTED, 0x02)
            if not ds.tray_open:
                ds.tray_open = True
                if drive.backend is not None:
                    ds.media_event = MEC_MEDIA_REMOVAL
        elif ds.tray_open:  # load
            ds.tray_open = False
            if drive.backend is not None:
                ds.media_event = MEC_NEW_MEDIA
        return None

    def _scsi_prevent_allow(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> None:
        ds.locked = bool(cdb[4] & 0x01)
        return None

    def _scsi_read_capacity(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        medium = self._medium(drive, ds)
        assert medium is not None
        return struct.pack(">II", medium.sectors - 1, CDROM_SECTOR_SIZE)

    def _scsi_read(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> MediumRead | None:
        medium = self._medium(drive, ds)
        assert medium is not None
        lba = int.from_bytes(cdb[2:6], "big")
        count = int.from_bytes(cdb[7:9] if cdb[0] == SCSI_READ_10 else cdb[6:10], "big")
        if lba + count > medium.sectors:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        return MediumRead(lba, count) if count else None

    def _scsi_seek(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> None:
        medium = self._medium(drive, ds)
        assert medium is not None
        if int.from_bytes(cdb[2:6], "big") >= medium.sectors:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        return None

    @staticmethod
    def _toc_address(lba: int, msf: bool) -> bytes:
        if not msf:
            return struct.pack(">I", lba)
        frames = lba + 150
        return bytes((0, frames // (75 * 60), (frames // 75) % 60, frames % 75))

    def _scsi_read_toc(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        medium = self._medium(drive, ds)
        assert medium is not None
        msf = bool(cdb[1] & 0x02)
        fmt = cdb[2] & 0x0F or cdb[9] >> 6  # MMC format field, or the old SFF-8020 bits
        start = cdb[6]
        alloc = (cdb[7] << 8) | cdb[8]
        if fmt == 0:  # TOC: track 1 (data) and the lead-out
            if start > 1 and start != 0xAA:
                raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
            body = b""
            if start <= 1:
                body += bytes((0, 0x14, 1, 0)) + self._toc_address(0, msf)
            body += bytes((0, 0x16, 0xAA, 0)) + self._toc_address(medium.sectors, msf)
            data = struct.pack(">HBB", len(body) + 2, 1, 1) + body
        elif fmt == 1:  # session information: one session, first track at 0
            body = bytes((0, 0x14, 1, 0)) + self._toc_address(0, msf)
            data = struct.pack(">HBB", len(body) + 2, 1, 1) + body
        else:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
        return data[:alloc]

    def _mode_page(self, page: int, ds: DriveState, changeable: bool) -> bytes:
        if page == MODE_PAGE_ERROR_RECOVERY:
            body = bytes(6) if changeable else bytes((0x00, 0x05, 0, 0, 0, 0))  # read retry count 5
        else:
            if changeable:
                body = bytes(20)
            else:
                body = bytes(
                    (
                        0x3B,  # reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM
                        0x00,  # writes nothing
                        0x71,  # audio play, composite, digital ports, multi-session
                        0x60,
                        0x29 | (0x02 if ds.locked else 0),  # tray, eject, lock (+ locked state)
                        0x00,
                    )
                ) + struct.pack(">HHHH", 706, 2, 512, 706) + bytes(4)  # 4x, 2 levels, 512 KiB
        return bytes((page, len(body))) + body

    def _scsi_mode_sense(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        pc, page = cdb[2] >> 6, cdb[2] & 0x3F
        alloc = (cdb[7] << 8) | cdb[8]
        if pc == 3:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_SAVING_PARAMETERS_NOT_SUPPORTED)
        if page == MODE_PAGE_ALL:
            pages = (MODE_PAGE_ERROR_RECOVERY, MODE_PAGE_CAPABILITIES)
        elif page in (MODE_PAGE_ERROR_RECOVERY, MODE_PAGE_CAPABILITIES):
            pages = (page,)
        else:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
        body = b"".join(self._mode_page(p, ds, pc == 1) for p in pages)
        if ds.tray_open:
            medium_type = 0x71  # door open
        elif drive.backend is None:
            medium_type = 0x70  # door closed, no disc
        else:
            medium_type = 0x01  # 120 mm CD-ROM, data only
        header = struct.pack(">HB5x", len(body) + 6, medium_type)
        return (header + body)[:alloc]

    def _profile(self, drive: AtapiCdrom, ds: DriveState) -> int:
        medium = self._medium(drive, ds)
        if medium is None:
            return 0
        return PROFILE_DVD_ROM if medium.sectors > CD_MAX_BLOCKS else PROFILE_CD_ROM

    def _scsi_get_configuration(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        rt = cdb[1] & 0x03
        start = (cdb[2] << 8) | cdb[3]
        alloc = (cdb[7] << 8) | cdb[8]
        if rt == 3:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
        current = self._profile(drive, ds)
        present = current != 0
        profiles = b"".join(
            struct.pack(">HBx", p, 1 if p == current else 0) for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM)
        )
        blocking = 16 if current == PROFILE_DVD_ROM else 1
        # (code, current, version, data)
        features = [
            (0x0000, True, 0, profiles),  # profile list
            (0x0001, True, 2, struct.pack(">IB3x", 2, 0x01)),  # core: ATAPI, DBE
            (0x0003, True, 0, bytes((0x29, 0, 0, 0))),  # removable medium: tray, eject, lock
            (0x0010, present, 0, struct.pack(">IHBx", CDROM_SECTOR_SIZE, blocking, 0)),  # random readable
        ]
        out = b""
        for code, cur, version, data in features:
            if code < start or (rt == 1 and not cur) or (rt == 2 and code != start):
                continue
            flags = (version << 2) | 0x02 | (0x01 if cur else 0)  # persistent, current
            out += struct.pack(">HBB", code, flags, len(data)) + data
        header = struct.pack(">I2xH", len(out) + 4, current)
        return (header + out)[:alloc]

    def _scsi_get_event_status(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        if not cdb[1] & 0x01:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)  # polled mode only
        alloc = (cdb[7] << 8) | cdb[8]
        supported = 1 << GESN_MEDIA_CLASS
        if cdb[4] & supported:
            status = (0x01 if ds.tray_open else 0) | (0x02 if self._medium(drive, ds) is not None else 0)
            event = ds.media_event
            ds.media_event = MEC_NO_CHANGE
            data = struct.pack(">HBB", 6, GESN_MEDIA_CLASS, supported) + bytes((event, status, 0, 0))
        else:
            data = struct.pack(">HBB", 2, 0x80, supported)  # no event available
        return data[:alloc]

    def _scsi_read_disc_info(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        if cdb[1] & 0x07:
            raise SenseError(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
        alloc = (cdb[7] << 8) | cdb[8]
        data = bytearray(34)
        data[1] = 32
        data[2] = 0x0E  # last session complete, disc finalized
        data[3] = data[4] = data[5] = data[6] = 1  # first track, sessions, first/last track
        data[7] = 0x20  # unrestricted use
        return bytes(data[:alloc])

    def _scsi_mechanism_status(self, drive: AtapiCdrom, ds: DriveState, cdb: bytes) -> bytes:
        alloc = (cdb[8] << 8) | cdb[9]
        data = bytes((0, 0x10 if ds.tray_open else 0, 0, 0, 0, 1, 0, 0))
        return data[:alloc]

    # -- bus master ---------------------------------------------------------------------------
    def bm_read(self, offset: int) -> int:
        """One byte of this channel's bus-master registers."""
        st = self.st
        if offset == BM_CMD:
            return st.bm_cmd
        if offset == BM_STATUS:
            return st.bm_status
        if BM_PRD <= offset < BM_PRD + 4:
            return (st.bm_prd >> (8 * (offset - BM_PRD))) & 0xFF
        return 0

    def bm_write(self, offset: int, value: int) -> None:
        st = self.st
        if offset == BM_CMD:
            old = st.bm_cmd
            st.bm_cmd = value & BM_CMD_MASK
            if value & BM_CMD_START and not old & BM_CMD_START:
                st.bm_status |= BM_ST_ACTIVE
                st.bm_armed = True
                self._maybe_run_dma()
            elif old & BM_CMD_START and not value & BM_CMD_START:
                st.bm_status &= ~BM_ST_ACTIVE  # stopping the engine ends its activity
                st.bm_armed = False
        elif offset == BM_STATUS:
            keep = st.bm_status & (BM_ST_ACTIVE | (BM_ST_W1C & ~value))  # write 1 to clear
            st.bm_status = (value & BM_ST_RW) | keep
        elif BM_PRD <= offset < BM_PRD + 4:
            shift = 8 * (offset - BM_PRD)
            st.bm_prd = ((st.bm_prd & ~(0xFF << shift)) | (value << shift)) & 0xFFFF_FFFC

    def _maybe_run_dma(self) -> None:
        st = self.st
        if st.dma_pending and st.bm_armed and self.controller.bus_master_enabled:
            self._run_dma()

    def _run_dma(self) -> None:
        """Move the whole transfer through the PRD table, then end the command."""
        st = self.st
        kind = st.dma_pending
        st.dma_pending = DMA_NONE
        st.bm_armed = False
        drive = self.drives[st.xfer_drive]
        ds = st.drives[st.xfer_drive]
        assert drive is not None and drive.backend is not None
        to_memory = kind in (DMA_ATA_READ, DMA_ATAPI_IN)
        if bool(st.bm_cmd & BM_CMD_TO_MEMORY) != to_memory:
            self._log_once("dir", "bus-master direction bit disagrees with the command; using the command's")
        prd = _PrdWalker(self.controller.dma, st.bm_prd)
        backend = drive.backend
        complete = False
        try:
            if kind == DMA_ATA_READ:
                per = DMA_CHUNK_BYTES // DISK_SECTOR_SIZE
                while st.remaining:
                    n = min(st.remaining, per)
                    data = backend.read_sectors(st.lba, n)
                    moved = prd.scatter(data)
                    st.lba += moved // DISK_SECTOR_SIZE
                    st.remaining -= moved // DISK_SECTOR_SIZE
                    if moved < len(data):
                        break
                complete = st.remaining == 0
            elif kind == DMA_ATA_WRITE:
                per = DMA_CHUNK_BYTES // DISK_SECTOR_SIZE
                while st.remaining:
                    n = min(st.remaining, per)
                    data = prd.gather(n * DISK_SECTOR_SIZE)
                    whole = len(data) // DISK_SECTOR_SIZE
                    if whole:
                        backend.write_sectors(st.lba, data[: whole * DISK_SECTOR_SIZE])
                    st.lba += whole
                    st.remaining -= whole
                    if whole < n:
                        break
                complete = st.remaining == 0
            else:
                while st.reply_left:
                    data = self._atapi_take(min(st.reply_left, DMA_CHUNK_BYTES))
                    moved = prd.scatter(data)
                    if moved < len(data):
                        break
                complete = st.reply_left == 0
        except DmaFault as e:
            self._log_once("fault", "bus-master DMA stopped: %s", e)
            st.bm_status = (st.bm_status | BM_ST_ERROR) & ~BM_ST_ACTIVE
            if drive.is_atapi:
                self._atapi_error(ds, SENSE_ABORTED_COMMAND, ASC_DMA_ERROR)
            else:
                self._abort(ds, ER_ABRT)
            return
        except BlockIOError as e:
            self._log_once("dmaio", "%s", e)
            st.bm_status &= ~BM_ST_ACTIVE
            if drive.is_atapi:
                self._atapi_error(ds, SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR)
            else:
                self._abort(ds, ER_ABRT if kind == DMA_ATA_WRITE else ER_UNC)
            return
        if not complete:
            # The PRD table ended before the data did: ACTIVE drops, no interrupt (PIIX §2.7.3)
            self._log_once("short", "PRD table shorter than the transfer")
            st.bm_status &= ~BM_ST_ACTIVE
            st.reply = bytearray()
            st.reply_left = st.read_blocks = 0
            ds.status = ST_READY
            return
        if not prd.more_space():
            st.bm_status &= ~BM_ST_ACTIVE
        if drive.is_atapi:
            self._atapi_ok(ds)
        else:
            self._complete(ds)

    # -- reset ----------------------------------------------------------------------------------
    def power_on(self) -> None:
        """Hardware reset: every register to its power-on value, the medium left as it is."""
        st = self.st
        trays = [ds.tray_open for ds in st.drives]
        fresh = ChannelState()
        _restore_into(st, fresh)
        for unit, ds in enumerate(st.drives):
            d = self.drives[unit]
            ds.tray_open = trays[unit]
            ds.set_signature(d is not None and d.is_atapi)
            if d is None:
                ds.status = 0
        self.resync_irq()


#: Register offsets 1-5 and the DriveState field each one writes (feature, count, LBA bytes).
_TF_FIELDS = {
    REG_FEATURE: "feature", REG_NSECTOR: "nsector", REG_LBAL: "lbal", REG_LBAM: "lbam", REG_LBAH: "lbah"
}


class BusMasterBlock:
    """The 16-byte bus-master register block (BAR4): channel 0 at +0, channel 1 at +8."""

    LENGTH = BM_BLOCK_LEN
    SIZES = BM_BLOCK_SIZES

    __slots__ = ("controller",)

    def __init__(self, controller: PiixIde) -> None:
        self.controller = controller

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            o = offset + i
            if o < BM_BLOCK_LEN:
                ch = self.controller.channels[o // BM_CHANNEL_STRIDE]
                value |= ch.bm_read(o % BM_CHANNEL_STRIDE) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        # PRD bytes first, command last: a dword write that sets START sees the new table
        for i in sorted(range(size), key=lambda i: (offset + i) % BM_CHANNEL_STRIDE == BM_CMD):
            o = offset + i
            if o < BM_BLOCK_LEN:
                ch = self.controller.channels[o // BM_CHANNEL_STRIDE]
                ch.bm_write(o % BM_CHANNEL_STRIDE, (value >> (8 * i)) & 0xFF)


class PiixIde:
    """The PIIX3 IDE function's controller: two channels and the bus-master block.

    ``dma`` is the function's DMA space (its requester ID's view of guest memory); ``irqs`` are
    the primary and secondary channels' interrupt lines (IRQ 14 and 15 in legacy mode);
    ``drives`` gives (master, slave) per channel."""

    def __init__(
        self,
        dma: DmaSpace,
        irqs: Sequence[IrqLine],
        drives: Sequence[Sequence[Drive | None]] = ((None, None), (None, None)),
    ) -> None:
        if len(irqs) != 2 or len(drives) != 2 or any(len(d) != 2 for d in drives):
            raise ValueError("PiixIde needs two IRQ lines and (master, slave) for two channels")
        self.dma = dma
        self.state = IdeState()
        self.channels = [IdeChannel(self, i, irqs[i], self.state.channels[i], drives[i]) for i in range(2)]
        self.bus_master = BusMasterBlock(self)
        self._bus_master_enabled = True
        self.reset()

    @classmethod
    def from_positions(cls, dma: DmaSpace, irqs: Sequence[IrqLine], positions: dict[int, Drive]) -> PiixIde:
        """Drives by QEMU's ``-drive index=N`` numbering: 0/1 primary master/slave, 2/3 secondary."""
        grid: list[list[Drive | None]] = [[None, None], [None, None]]
        for index, drive in positions.items():
            if not 0 <= index <= 3:
                raise ValueError(f"IDE position {index} does not exist (0-3)")
            grid[index // 2][index % 2] = drive
        return cls(dma, irqs, drives=grid)

    @property
    def bus_master_enabled(self) -> bool:
        """PCI command register bit 2: without it the engine cannot reach memory (DMA waits)."""
        return self._bus_master_enabled

    @bus_master_enabled.setter
    def bus_master_enabled(self, on: bool) -> None:
        self._bus_master_enabled = bool(on)
        if on:
            for ch in self.channels:
                ch._maybe_run_dma()

    def drive(self, channel: int, unit: int) -> Drive | None:
        return self.channels[channel].drives[unit]

    # -- media ----------------------------------------------------------------------------------
    def _cdrom(self, channel: int, unit: int) -> tuple[AtapiCdrom, DriveState]:
        d = self.channels[channel].drives[unit]
        if not isinstance(d, AtapiCdrom):
            raise ValueError(f"ide{channel}.{unit} is not a CD-ROM drive")
        return d, self.state.channels[channel].drives[unit]

    def insert_media(self, channel: int, unit: int, backend: BlockBackend) -> BlockBackend | None:
        """Put a medium in the CD-ROM drive (closing its tray); returns the medium it replaces."""
        if backend.sector_size != CDROM_SECTOR_SIZE:
            raise ValueError("a CD-ROM medium needs 2048-byte blocks (use open_cdrom)")
        d, ds = self._cdrom(channel, unit)
        old, d.backend = d.backend, backend
        ds.tray_open = False
        ds.media_changed = 1
        ds.media_event = MEC_NEW_MEDIA
        return old

    def eject(self, channel: int, unit: int, *, force: bool = False) -> BlockBackend | None:
        """Take the medium out; a guest-locked drive refuses (and the guest sees an eject
        request event) unless ``force``. Returns the medium removed, or None."""
        d, ds = self._cdrom(channel, unit)
        if ds.locked and not force:
            ds.media_event = MEC_EJECT_REQUEST
            return None
        old, d.backend = d.backend, None
        if old is not None:
            ds.media_event = MEC_MEDIA_REMOVAL
            ds.media_changed = 0
        return old

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        for ch in self.channels:
            ch.power_on()

    def snapshot(self) -> IdeState:
        return self.state.snapshot()

    def restore(self, snap: IdeState) -> None:
        self.state.restore(snap)
        for ch in self.channels:
            ch.resync_irq()
