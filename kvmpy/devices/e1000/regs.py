"""The 82540EM's register map as data: offsets, bit meanings, and one table that says for every
register its reset value, which bits software may write, whether reading clears it, and which
method gives it side effects.

Why a table: the 82540 has ~200 registers and almost all of them are plain storage or
saturating read-clear counters; only a dozen (CTRL, EECD, EERD, MDIC, the interrupt registers,
RCTL, the ring tails) *do* something. Writing the common behaviour once and naming the
exceptions keeps every access size and every odd offset behaving the same way.

Sources: Intel PCI/PCI-X Family of Gigabit Ethernet Controllers Software Developer's Manual
(8254x SDM, rev. 4.0), chapter 13 (register descriptions) and table 13-2 (the register
summary); names follow Linux's ``e1000_hw.h`` so a reader can grep both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: BAR0: the 128 KiB register window; BAR1: the I/O window with IOADDR/IODATA (SDM 13.2.1).
MMIO_SIZE = 0x2_0000
IO_SIZE = 0x40
IOADDR = 0x00
IODATA = 0x04
#: Registers are dwords; the table is indexed by ``offset >> 2``.
REG_COUNT = MMIO_SIZE // 4

# --- General (SDM 13.4) ------------------------------------------------------------------------
CTRL = 0x0000
STATUS = 0x0008
EECD = 0x0010
EERD = 0x0014
CTRL_EXT = 0x0018
MDIC = 0x0020
FCAL = 0x0028
FCAH = 0x002C
FCT = 0x0030
VET = 0x0038
ICR = 0x00C0
ITR = 0x00C4
ICS = 0x00C8
IMS = 0x00D0
IMC = 0x00D8
RCTL = 0x0100
FCTTV = 0x0170
TXCW = 0x0178
RXCW = 0x0180
TCTL = 0x0400
TIPG = 0x0410
AIT = 0x0458
LEDCTL = 0x0E00
PBA = 0x1000
FCRTL = 0x2160
FCRTH = 0x2168
RDFH = 0x2410
RDFT = 0x2418
RDFHS = 0x2420
RDFTS = 0x2428
RDFPC = 0x2430
RDBAL = 0x2800
RDBAH = 0x2804
RDLEN = 0x2808
RDH = 0x2810
RDT = 0x2818
RDTR = 0x2820
RXDCTL = 0x2828
RADV = 0x282C
RSRPD = 0x2C00
TXDMAC = 0x3000
TDFH = 0x3410
TDFT = 0x3418
TDFHS = 0x3420
TDFTS = 0x3428
TDFPC = 0x3430
TDBAL = 0x3800
TDBAH = 0x3804
TDLEN = 0x3808
TDH = 0x3810
TDT = 0x3818
TIDV = 0x3820
TXDCTL = 0x3828
TADV = 0x382C
TSPMT = 0x3830
RXCSUM = 0x5000
MTA = 0x5200  # 128 dwords
RA = 0x5400  # 16 pairs RAL/RAH
VFTA = 0x5600  # 128 dwords
WUC = 0x5800
WUFC = 0x5808
WUS = 0x5810
MANC = 0x5820
IPAV = 0x5838
MTA_COUNT = 128
RA_COUNT = 16
VFTA_COUNT = 128

# --- Statistics (SDM 13.7): read-only, cleared by reading, saturating ---------------------------
CRCERRS = 0x4000
ALGNERRC = 0x4004
SYMERRS = 0x4008
RXERRC = 0x400C
MPC = 0x4010
SCC = 0x4014
ECOL = 0x4018
MCC = 0x401C
LATECOL = 0x4020
COLC = 0x4028
DC = 0x4030
TNCRS = 0x4034
SEC = 0x4038
CEXTERR = 0x403C
RLEC = 0x4040
XONRXC = 0x4048
XONTXC = 0x404C
XOFFRXC = 0x4050
XOFFTXC = 0x4054
FCRUC = 0x4058
PRC64 = 0x405C
PRC127 = 0x4060
PRC255 = 0x4064
PRC511 = 0x4068
PRC1023 = 0x406C
PRC1522 = 0x4070
GPRC = 0x4074
BPRC = 0x4078
MPRC = 0x407C
GPTC = 0x4080
GORCL = 0x4088
GORCH = 0x408C
GOTCL = 0x4090
GOTCH = 0x4094
RNBC = 0x40A0
RUC = 0x40A4
RFC = 0x40A8
ROC = 0x40AC
RJC = 0x40B0
MGTPRC = 0x40B4
MGTPDC = 0x40B8
MGTPTC = 0x40BC
TORL = 0x40C0
TORH = 0x40C4
TOTL = 0x40C8
TOTH = 0x40CC
TPR = 0x40D0
TPT = 0x40D4
PTC64 = 0x40D8
PTC127 = 0x40DC
PTC255 = 0x40E0
PTC511 = 0x40E4
PTC1023 = 0x40E8
PTC1522 = 0x40EC
MPTC = 0x40F0
BPTC = 0x40F4
TSCTC = 0x40F8
TSCTFC = 0x40FC
#: The counters that are the low halves of 64-bit counters; reading the high half clears both.
STAT64 = (GORCL, GOTCL, TORL, TOTL)
#: Packet-size bins (64, 65-127, 128-255, 256-511, 512-1023, 1024-max), sizes counting the FCS.
PRC_BINS = (PRC64, PRC127, PRC255, PRC511, PRC1023, PRC1522)
PTC_BINS = (PTC64, PTC127, PTC255, PTC511, PTC1023, PTC1522)

# --- CTRL (SDM 13.4.1) ----------------------------------------------------------------------------
CTRL_FD = 0x0000_0001
CTRL_LRST = 0x0000_0008
CTRL_ASDE = 0x0000_0020
CTRL_SLU = 0x0000_0040
CTRL_ILOS = 0x0000_0080
CTRL_SPD_1000 = 0x0000_0200
CTRL_FRCSPD = 0x0000_0800
CTRL_FRCDPX = 0x0000_1000
CTRL_SWDPIN0 = 0x0004_0000
CTRL_SWDPIN2 = 0x0010_0000
CTRL_RST = 0x0400_0000
CTRL_RFCE = 0x0800_0000
CTRL_TFCE = 0x1000_0000
CTRL_VME = 0x4000_0000
CTRL_PHY_RST = 0x8000_0000
#: Link forced up at 1000 Mb/s, SDP pins as QEMU leaves them: what drivers find after reset.
CTRL_RESET = CTRL_SWDPIN2 | CTRL_SWDPIN0 | CTRL_SPD_1000 | CTRL_SLU

# --- STATUS (SDM 13.4.2) --------------------------------------------------------------------------
STATUS_FD = 0x0000_0001
STATUS_LU = 0x0000_0002
STATUS_TXOFF = 0x0000_0010
STATUS_SPEED_1000 = 0x0000_0080
STATUS_ASDV_1000 = 0x0000_0200
#: A conventional 33 MHz/32-bit PCI function (PCI66, BUS64, PCIX_MODE clear), full duplex
#: gigabit link up.
STATUS_LINK_UP = STATUS_FD | STATUS_LU | STATUS_SPEED_1000 | STATUS_ASDV_1000

# --- EECD / EERD (SDM 13.4.3, 13.4.4; 5.x Microwire interface) -----------------------------------
EECD_SK = 0x0001
EECD_CS = 0x0002
EECD_DI = 0x0004
EECD_DO = 0x0008
EECD_FWE_MASK = 0x0030
EECD_REQ = 0x0040
EECD_GNT = 0x0080
EECD_PRES = 0x0100
EECD_SIZE = 0x0200  # Microwire: 0 = 64 words (6 address bits), 1 = 256 words
#: What software may set; the rest is status the device drives.
EECD_WRITABLE = EECD_SK | EECD_CS | EECD_DI | EECD_FWE_MASK | EECD_REQ
EERD_START = 0x0000_0001
EERD_DONE = 0x0000_0010
EERD_ADDR_SHIFT = 8
EERD_ADDR_MASK = 0x0000_FF00
EERD_DATA_SHIFT = 16

# --- CTRL_EXT (SDM 13.4.6) ------------------------------------------------------------------------
CTRL_EXT_EE_RST = 0x0000_2000  # reload from the EEPROM; self-clearing

# --- MDIC (SDM 13.4.7) ----------------------------------------------------------------------------
MDIC_DATA_MASK = 0x0000_FFFF
MDIC_REG_SHIFT = 16
MDIC_REG_MASK = 0x001F_0000
MDIC_PHY_SHIFT = 21
MDIC_PHY_MASK = 0x03E0_0000
MDIC_OP_WRITE = 0x0400_0000
MDIC_OP_READ = 0x0800_0000
MDIC_READY = 0x1000_0000
MDIC_INT_EN = 0x2000_0000
MDIC_ERROR = 0x4000_0000
#: The internal PHY answers at MDIO address 1 (Linux's e1000_detect_gig_phy uses 1).
PHY_ADDRESS = 1

# --- Interrupt causes: ICR/ICS/IMS/IMC share the layout (SDM 13.4.17-21) --------------------------
ICR_TXDW = 0x0000_0001  # transmit descriptor written back
ICR_TXQE = 0x0000_0002  # transmit queue empty
ICR_LSC = 0x0000_0004  # link status change
ICR_RXSEQ = 0x0000_0008  # receive sequence error
ICR_RXDMT0 = 0x0000_0010  # receive descriptors below the minimum threshold
ICR_RXO = 0x0000_0040  # receiver overrun
ICR_RXT0 = 0x0000_0080  # receiver timer (a frame was received)
ICR_MDAC = 0x0000_0200  # MDI/O access complete
ICR_RXCFG = 0x0000_0400
ICR_PHYINT = 0x0000_1000
ICR_GPI_SDP6 = 0x0000_2000
ICR_GPI_SDP7 = 0x0000_4000
ICR_TXD_LOW = 0x0000_8000
ICR_SRPD = 0x0001_0000
#: Every cause the 82540 has; IMS keeps only these.
ICR_VALID = 0x0001_F6DF

# --- RCTL (SDM 13.4.22) ---------------------------------------------------------------------------
RCTL_EN = 0x0000_0002
RCTL_SBP = 0x0000_0004
RCTL_UPE = 0x0000_0008
RCTL_MPE = 0x0000_0010
RCTL_LPE = 0x0000_0020
RCTL_LBM_MASK = 0x0000_00C0
RCTL_LBM_MAC = 0x0000_0040
RCTL_RDMTS_SHIFT = 8
RCTL_RDMTS_MASK = 0x0000_0300
RCTL_MO_SHIFT = 12
RCTL_MO_MASK = 0x0000_3000
RCTL_BAM = 0x0000_8000
RCTL_BSIZE_SHIFT = 16
RCTL_BSIZE_MASK = 0x0003_0000
RCTL_VFE = 0x0004_0000
RCTL_CFIEN = 0x0008_0000
RCTL_CFI = 0x0010_0000
RCTL_DPF = 0x0040_0000
RCTL_PMCF = 0x0080_0000
RCTL_BSEX = 0x0200_0000
RCTL_SECRC = 0x0400_0000
#: Buffer sizes by BSIZE, without and with BSEX (BSEX with BSIZE 00 is reserved: 2048).
RX_BUFFER_SIZES = ((2048, 1024, 512, 256), (2048, 16384, 8192, 4096))
#: MTA hash: which 12 bits of the last two destination bytes index the table, by RCTL.MO
#: (SDM 13.5.1: MO 00 uses bits 47:36, 01 bits 46:35, 10 bits 45:34, 11 bits 43:32).
MTA_SHIFTS = (4, 3, 2, 0)

# --- TCTL (SDM 13.4.33) ---------------------------------------------------------------------------
TCTL_EN = 0x0000_0002
TCTL_PSP = 0x0000_0008

# --- RAH (SDM 13.5.3) -----------------------------------------------------------------------------
RAH_AV = 0x8000_0000
RAH_WRITABLE = 0x8003_FFFF  # AV, AS (address select), address bytes 4-5

# --- RXCSUM (SDM 13.4.26) -------------------------------------------------------------------------
RXCSUM_PCSS_MASK = 0x0000_00FF
RXCSUM_IPOFL = 0x0000_0100
RXCSUM_TUOFL = 0x0000_0200

# --- Descriptors (SDM 3.2.3, 3.3.3, 3.3.6, 3.3.7) -------------------------------------------------
DESC_SIZE = 16
# RX status / errors
RXD_STAT_DD = 0x01
RXD_STAT_EOP = 0x02
RXD_STAT_IXSM = 0x04
RXD_STAT_VP = 0x08
RXD_STAT_TCPCS = 0x20
RXD_STAT_IPCS = 0x40
RXD_ERR_CE = 0x01
RXD_ERR_TCPE = 0x20
RXD_ERR_IPE = 0x40
RXD_ERR_RXE = 0x80
# TX command byte (bits 31:24 of the descriptor's second dword)
TXD_CMD_EOP = 0x01  # legacy and data descriptors
TXD_CMD_IFCS = 0x02
TXD_CMD_IC = 0x04  # legacy: insert checksum at CSO
TXD_CMD_TSE = 0x04  # data and context descriptors: TCP segmentation
TXD_CMD_RS = 0x08
TXD_CMD_RPS = 0x10
TXD_CMD_DEXT = 0x20
TXD_CMD_VLE = 0x40
TXD_CMD_IDE = 0x80
# context descriptor TUCMD (same byte)
TXD_TUCMD_TCP = 0x01
TXD_TUCMD_IP = 0x02
TXD_TUCMD_TSE = 0x04
TXD_DTYP_CONTEXT = 0x0
TXD_DTYP_DATA = 0x1
TXD_STAT_DD = 0x01
TXD_STAT_ERRBITS = 0x0E  # EC, LC, TU: cleared on write-back (nothing collides here)
TXD_POPTS_IXSM = 0x01
TXD_POPTS_TXSM = 0x02

# --- The table -------------------------------------------------------------------------------------


class Kind(enum.Enum):
    """How a register behaves when nothing special is said."""

    RW = "rw"  # storage through the writable mask
    RO = "ro"  # writes ignored
    WO = "wo"  # reads 0 (the interrupt mask clear register)
    RC = "rc"  # statistics: read-only, cleared by reading, saturating at all-ones
    RC_HI = "rc_hi"  # high half of a 64-bit counter: reading it clears both halves


@dataclass(frozen=True)
class Reg:
    """One register's declaration. ``on_read``/``on_write`` name an ``E1000`` method that
    gives it side effects (it then does its own storage); ``action`` marks registers whose
    writes are commands (set/clear masks), so a partial-width write fills the untouched byte
    lanes with zeros instead of the stored value."""

    offset: int
    name: str
    reset: int = 0
    wmask: int = 0xFFFF_FFFF
    kind: Kind = Kind.RW
    on_read: str | None = None
    on_write: str | None = None
    action: bool = False


def _table() -> dict[int, Reg]:
    regs = [
        Reg(CTRL, "CTRL", CTRL_RESET, on_write="_write_ctrl"),
        Reg(STATUS, "STATUS", STATUS_LINK_UP, 0, Kind.RO),
        Reg(EECD, "EECD", on_read="_read_eecd", on_write="_write_eecd"),
        Reg(EERD, "EERD", on_write="_write_eerd"),
        Reg(CTRL_EXT, "CTRL_EXT", on_write="_write_ctrl_ext"),
        Reg(MDIC, "MDIC", on_write="_write_mdic"),
        Reg(FCAL, "FCAL"),
        Reg(FCAH, "FCAH", wmask=0xFFFF),
        Reg(FCT, "FCT", wmask=0xFFFF),
        Reg(VET, "VET", 0x8100, 0xFFFF),
        Reg(ICR, "ICR", on_read="_read_icr", on_write="_write_icr", action=True),
        Reg(ITR, "ITR", wmask=0xFFFF, on_write="_write_itr"),
        Reg(ICS, "ICS", on_read="_read_ics", on_write="_write_ics", action=True),
        Reg(IMS, "IMS", wmask=ICR_VALID, on_write="_write_ims", action=True),
        Reg(IMC, "IMC", kind=Kind.WO, on_write="_write_imc", action=True),
        Reg(RCTL, "RCTL", wmask=0x07FF_FFFE, on_write="_write_rctl"),
        Reg(FCTTV, "FCTTV", wmask=0xFFFF),
        Reg(TXCW, "TXCW"),
        Reg(RXCW, "RXCW", kind=Kind.RO),
        Reg(TCTL, "TCTL", on_write="_write_tctl"),
        Reg(TIPG, "TIPG"),
        Reg(AIT, "AIT", wmask=0xFFFF),
        # LEDCTL/PBA/MANC: QEMU's reset values, with which Linux, Windows and iPXE are happy
        Reg(LEDCTL, "LEDCTL", 0x0000_0602),
        Reg(PBA, "PBA", 0x0010_0030),
        Reg(FCRTL, "FCRTL"),
        Reg(FCRTH, "FCRTH"),
        Reg(RDBAL, "RDBAL", wmask=0xFFFF_FFF0),
        Reg(RDBAH, "RDBAH"),
        Reg(RDLEN, "RDLEN", wmask=0x000F_FF80),
        Reg(RDH, "RDH", wmask=0xFFFF),
        Reg(RDT, "RDT", wmask=0xFFFF, on_write="_write_rdt"),
        Reg(RDTR, "RDTR", wmask=0xFFFF),
        Reg(RXDCTL, "RXDCTL"),
        Reg(RADV, "RADV", wmask=0xFFFF),
        Reg(RSRPD, "RSRPD", wmask=0xFFF),
        Reg(TXDMAC, "TXDMAC"),
        Reg(TDBAL, "TDBAL", wmask=0xFFFF_FFF0),
        Reg(TDBAH, "TDBAH"),
        Reg(TDLEN, "TDLEN", wmask=0x000F_FF80),
        Reg(TDH, "TDH", wmask=0xFFFF, on_write="_write_tdh"),
        Reg(TDT, "TDT", wmask=0xFFFF, on_write="_write_tdt"),
        Reg(TIDV, "TIDV", wmask=0xFFFF),
        Reg(TXDCTL, "TXDCTL"),
        Reg(TADV, "TADV", wmask=0xFFFF),
        Reg(TSPMT, "TSPMT"),
        Reg(RXCSUM, "RXCSUM", wmask=0x3FF),  # offloads off until the driver asks (SDM 13.4.26)
        Reg(WUC, "WUC"),
        Reg(WUFC, "WUFC"),
        Reg(WUS, "WUS"),
        Reg(MANC, "MANC", 0x0022_2300),
        Reg(IPAV, "IPAV"),
    ]
    # The packet-buffer FIFO pointers: storage (diagnostics write and read them back)
    for off, name in ((RDFH, "RDFH"), (RDFT, "RDFT"), (RDFHS, "RDFHS"), (RDFTS, "RDFTS"),
                      (RDFPC, "RDFPC"), (TDFH, "TDFH"), (TDFT, "TDFT"), (TDFHS, "TDFHS"),
                      (TDFTS, "TDFTS"), (TDFPC, "TDFPC")):
        regs.append(Reg(off, name, wmask=0x1FFF))
    for i in range(MTA_COUNT):
        regs.append(Reg(MTA + 4 * i, f"MTA[{i}]"))
    for i in range(VFTA_COUNT):
        regs.append(Reg(VFTA + 4 * i, f"VFTA[{i}]"))
    for i in range(RA_COUNT):
        regs.append(Reg(RA + 8 * i, f"RAL[{i}]"))
        regs.append(Reg(RA + 8 * i + 4, f"RAH[{i}]", wmask=RAH_WRITABLE))
    highs = {lo + 4 for lo in STAT64}
    for off in range(CRCERRS, TSCTFC + 4, 4):
        if off in (0x4024, 0x402C, 0x4044, 0x4084, 0x4098, 0x409C):
            continue  # holes in the statistics block
        kind = Kind.RC_HI if off in highs else Kind.RC
        regs.append(Reg(off, _STAT_NAMES.get(off, f"STAT_{off:#x}"), wmask=0, kind=kind))
    table: dict[int, Reg] = {}
    for r in regs:
        assert r.offset % 4 == 0 and r.offset >> 2 not in table, r
        table[r.offset >> 2] = r
    return table


_STAT_NAMES = {
    globals()[name]: name
    for name in (
        "CRCERRS ALGNERRC SYMERRS RXERRC MPC SCC ECOL MCC LATECOL COLC DC TNCRS SEC CEXTERR RLEC "
        "XONRXC XONTXC XOFFRXC XOFFTXC FCRUC PRC64 PRC127 PRC255 PRC511 PRC1023 PRC1522 GPRC BPRC "
        "MPRC GPTC GORCL GORCH GOTCL GOTCH RNBC RUC RFC ROC RJC MGTPRC MGTPDC MGTPTC TORL TORH TOTL "
        "TOTH TPR TPT PTC64 PTC127 PTC255 PTC511 PTC1023 PTC1522 MPTC BPTC TSCTC TSCTFC"
    ).split()
}

#: index (offset >> 2) -> declaration, for every register the device implements.
REGISTERS: dict[int, Reg] = _table()


def reset_image() -> list[int]:
    """The register file right after a reset (RAL0/RAH0 are loaded from the EEPROM later)."""
    regs = [0] * REG_COUNT
    for idx, r in REGISTERS.items():
        regs[idx] = r.reset
    return regs
