"""The 82540EM's internal PHY, a Marvell 88E1011 (M88) as seen through MDIC.

Only what drivers read or program exists: the IEEE 802.3 clause 22 registers (control,
status, ids, autonegotiation advertisement and link partner, 1000BASE-T control/status,
extended status) and the M88 specific control/status registers Linux's
``e1000_copper_link_mgp_setup`` and ``e1000_phy_m88_get_info`` use. The virtual cable is
always plugged into a gigabit full-duplex partner and autonegotiation has already completed,
so a driver that polls for link finds it at once. Reading or writing a register the PHY does
not have sets MDIC.E, as QEMU does (Linux then reports a PHY error instead of using garbage).

Values: 8254x SDM section 13.3 (PHY registers) and QEMU's ``phy_reg_init``; PHY_ID1/ID2
0x0141/0x0C20 make Linux's ``e1000_detect_gig_phy`` find the M88E1011 (0x01410C20) the 82540
is built with.
"""

from __future__ import annotations

PHY_CTRL = 0x00
PHY_STATUS = 0x01
PHY_ID1 = 0x02
PHY_ID2 = 0x03
PHY_AUTONEG_ADV = 0x04
PHY_LP_ABILITY = 0x05
PHY_AUTONEG_EXP = 0x06
PHY_1000T_CTRL = 0x09
PHY_1000T_STATUS = 0x0A
PHY_EXT_STATUS = 0x0F
M88_PHY_SPEC_CTRL = 0x10
M88_PHY_SPEC_STATUS = 0x11
M88_INT_ENABLE = 0x12
M88_INT_STATUS = 0x13
M88_EXT_PHY_SPEC_CTRL = 0x14
M88_RX_ERR_CNTR = 0x15
M88_PAGE_SELECT = 0x1D
M88_GEN_CONTROL = 0x1E
REG_COUNT = 0x20

# PHY_CTRL (MII BMCR)
CTRL_SPEED_1000 = 0x0040
CTRL_FULL_DUPLEX = 0x0100
CTRL_RESTART_AN = 0x0200
CTRL_POWER_DOWN = 0x0800
CTRL_AUTONEG_EN = 0x1000
CTRL_LOOPBACK = 0x4000
CTRL_RESET = 0x8000
#: Bits that read back as zero: 5:0 reserved, reset and restart-autoneg self-clearing.
CTRL_NOT_STORED = 0x003F | CTRL_RESET | CTRL_RESTART_AN

# PHY_STATUS (MII BMSR)
STATUS_EXT_CAPS = 0x0001
STATUS_LINK = 0x0004
STATUS_AN_ABLE = 0x0008
STATUS_AN_COMPLETE = 0x0020
STATUS_PREAMBLE_SUPPR = 0x0040
STATUS_EXT_STATUS = 0x0100
STATUS_10_HD = 0x0800
STATUS_10_FD = 0x1000
STATUS_100_HD = 0x2000
STATUS_100_FD = 0x4000
STATUS_CAPS = (STATUS_EXT_CAPS | STATUS_AN_ABLE | STATUS_PREAMBLE_SUPPR | STATUS_EXT_STATUS
               | STATUS_10_HD | STATUS_10_FD | STATUS_100_HD | STATUS_100_FD)

# Link partner ability: 10/100 both duplexes, IEEE 802.3 selector, acknowledge
LP_ACK = 0x4000
LP_ABILITY_UP = LP_ACK | 0x01E0 | 0x0001
# M88 PHY specific status: 1000 Mb/s, full duplex, speed/duplex resolved, link
M88_STATUS_1000 = 0x8000
M88_STATUS_FULL_DUPLEX = 0x2000
M88_STATUS_RESOLVED = 0x0800
M88_STATUS_LINK = 0x0400
M88_STATUS_UP = M88_STATUS_1000 | M88_STATUS_FULL_DUPLEX | M88_STATUS_RESOLVED | M88_STATUS_LINK

PHY_ID1_M88 = 0x0141
PHY_ID2_82540 = 0x0C20

#: Reset values (after autonegotiation with a gigabit partner has completed).
_RESET = {
    PHY_CTRL: CTRL_SPEED_1000 | CTRL_FULL_DUPLEX | CTRL_AUTONEG_EN,
    PHY_STATUS: STATUS_CAPS | STATUS_LINK | STATUS_AN_COMPLETE,
    PHY_ID1: PHY_ID1_M88,
    PHY_ID2: PHY_ID2_82540,
    # selector, 10/100 both duplexes, symmetric and asymmetric pause
    PHY_AUTONEG_ADV: 0x0DE1,
    PHY_LP_ABILITY: LP_ABILITY_UP,
    PHY_AUTONEG_EXP: 0x0001,  # link partner is autonegotiation-able
    # advertise 1000BASE-T full duplex, manual master, master
    PHY_1000T_CTRL: 0x0E00,
    # partner 1000 full/half, local and remote receiver OK
    PHY_1000T_STATUS: 0x3C00,
    PHY_EXT_STATUS: 0x3000,  # 1000BASE-T full and half duplex capable
    M88_PHY_SPEC_CTRL: 0x0360,
    M88_PHY_SPEC_STATUS: M88_STATUS_UP,
    M88_EXT_PHY_SPEC_CTRL: 0x0D60,
}

#: Which registers exist for reading / writing.
READABLE = frozenset(
    {PHY_CTRL, PHY_STATUS, PHY_ID1, PHY_ID2, PHY_AUTONEG_ADV, PHY_LP_ABILITY, PHY_AUTONEG_EXP,
     PHY_1000T_CTRL, PHY_1000T_STATUS, PHY_EXT_STATUS, M88_PHY_SPEC_CTRL, M88_PHY_SPEC_STATUS,
     M88_INT_ENABLE, M88_INT_STATUS, M88_EXT_PHY_SPEC_CTRL, M88_RX_ERR_CNTR, M88_PAGE_SELECT,
     M88_GEN_CONTROL}
)
WRITABLE = frozenset(
    {PHY_CTRL, PHY_AUTONEG_ADV, PHY_1000T_CTRL, M88_PHY_SPEC_CTRL, M88_INT_ENABLE,
     M88_EXT_PHY_SPEC_CTRL, M88_PAGE_SELECT, M88_GEN_CONTROL}
)


def reset_registers(link_up: bool = True) -> list[int]:
    """The PHY's registers after a hardware reset."""
    phy = [0] * REG_COUNT
    for reg, value in _RESET.items():
        phy[reg] = value
    set_link(phy, link_up)
    return phy


def set_link(phy: list[int], up: bool) -> None:
    """Cable plugged into a gigabit partner (autonegotiation complete) or unplugged."""
    if up:
        phy[PHY_STATUS] |= STATUS_LINK | STATUS_AN_COMPLETE
        phy[PHY_LP_ABILITY] = LP_ABILITY_UP
        phy[M88_PHY_SPEC_STATUS] = M88_STATUS_UP
    else:
        phy[PHY_STATUS] &= ~(STATUS_LINK | STATUS_AN_COMPLETE)
        phy[PHY_LP_ABILITY] = 0
        phy[M88_PHY_SPEC_STATUS] = 0


def write(phy: list[int], reg: int, value: int) -> None:
    """A write the PHY accepts (``reg`` in WRITABLE)."""
    if reg == PHY_CTRL:
        # reset and autonegotiation restart complete at once; the link stays up
        phy[PHY_CTRL] = value & ~CTRL_NOT_STORED
    else:
        phy[reg] = value & 0xFFFF
