"""The e1000 as a PCI function and a register file: identity and BARs, EEPROM through EERD
and bit-banged EECD, the PHY through MDIC, IOADDR/IODATA, access widths, unknown offsets,
interrupt registers with the INTx level and MSI, ITR throttling, CTRL.RST, link changes."""

from __future__ import annotations

import pytest
from test_e1000_support import IO_BASE, MAC, MMIO_BASE, Rig

from kvmpy.devices.e1000 import E1000, check_mac, mac_for_index, parse_mac
from kvmpy.devices.e1000 import eeprom as EE
from kvmpy.devices.e1000 import phy as P
from kvmpy.devices.e1000 import regs as R
from kvmpy.devices.pci import CMD_MEMORY
from kvmpy.devices.pci import config as c


@pytest.fixture
def rig() -> Rig:
    return Rig()


# -- PCI identity ---------------------------------------------------------------------------------
def test_pci_identity(rig: Rig) -> None:
    assert rig.cfg_read(c.VENDOR_ID, 2) == 0x8086
    assert rig.cfg_read(c.DEVICE_ID, 2) == 0x100E
    assert rig.cfg_read(c.REVISION_ID, 1) == 3
    assert rig.cfg_read(c.CLASS_DEVICE, 2) == 0x0200
    assert rig.cfg_read(c.SUBSYSTEM_VENDOR_ID, 2) == 0x8086
    assert rig.cfg_read(c.INTERRUPT_PIN, 1) == 1
    assert rig.nic.config.find_capability(c.CAP_ID_MSI) is not None


def test_bars_size_as_firmware_sizes_them() -> None:
    r = Rig()
    r.cfg_write(c.COMMAND, 2, 0)
    r.cfg_write(c.BAR0, 4, 0xFFFF_FFFF)
    assert r.cfg_read(c.BAR0, 4) == 0xFFFE_0000  # 128 KiB, 32-bit non-prefetchable memory
    r.cfg_write(c.BAR0 + 4, 4, 0xFFFF_FFFF)
    assert r.cfg_read(c.BAR0 + 4, 4) == 0xFFFF_FFC1  # 64 bytes of I/O


def test_rom_bar_when_given() -> None:
    rom = b"\x55\xaa" + bytes(510)
    r = Rig(rom=rom)
    r.cfg_write(c.ROM_ADDRESS, 4, 0xFEC0_0001)
    assert r.mmio.read(0xFEC0_0000, 2) == 0xAA55
    assert Rig().nic.config.rom is None


def test_registers_follow_the_bar(rig: Rig) -> None:
    rig.cfg_write(c.BAR0, 4, 0xFE00_0000)
    assert rig.mmio.read(0xFE00_0000 + R.STATUS, 4) & R.STATUS_LU
    assert rig.mmio.read(MMIO_BASE + R.STATUS, 4) == 0  # nobody there any more
    rig.cfg_write(c.COMMAND, 2, 0)
    assert rig.mmio.read(0xFE00_0000 + R.STATUS, 4) == 0


# -- MAC addresses --------------------------------------------------------------------------------
def test_parse_mac() -> None:
    assert parse_mac("52:54:00:12:34:56") == MAC
    assert parse_mac("52-54-00-12-34-56") == MAC
    for bad, why in (("52:54:00:12:34", "six"), ("52:54:00:12:34:zz", "hex"),
                     ("01:00:5e:00:00:01", "multicast"), ("00:00:00:00:00:00", "not valid")):
        with pytest.raises(ValueError, match=why):
            parse_mac(bad)
    with pytest.raises(ValueError):
        check_mac(b"\x01\x02")
    assert mac_for_index(1) == bytes.fromhex("525400123457")
    with pytest.raises(ValueError):
        E1000(b"\x01" * 6)


# -- EEPROM ----------------------------------------------------------------------------------------
def test_eeprom_via_eerd_checksum_and_mac(rig: Rig) -> None:
    words = [rig.eerd(i) for i in range(EE.WORDS)]
    assert sum(words) & 0xFFFF == 0xBABA
    assert b"".join(w.to_bytes(2, "little") for w in words[:3]) == MAC
    assert words[EE.WORD_DEVICE_ID] == 0x100E
    assert words[EE.WORD_VENDOR_ID] == 0x8086
    assert words[EE.WORD_SUBSYSTEM_ID] == rig.cfg_read(c.SUBSYSTEM_ID, 2)
    assert words[EE.WORD_SUBSYSTEM_VENDOR] == rig.cfg_read(c.SUBSYSTEM_VENDOR_ID, 2)
    # beyond the part: DONE with no data
    rig.wr(R.EERD, R.EERD_START | 0x80 << R.EERD_ADDR_SHIFT)
    assert rig.rd(R.EERD) == R.EERD_DONE | 0x80 << R.EERD_ADDR_SHIFT


def test_eerd_format_detection_like_ipxe(rig: Rig) -> None:
    """iPXE writes START alone and tells the layouts apart by which DONE bit rises."""
    rig.wr(R.EERD, R.EERD_START)
    v = rig.rd(R.EERD)
    assert v & 0x10 and not v & 0x02
    assert v >> 16 == MAC[0] | MAC[1] << 8


def test_eeprom_via_bit_banged_eecd(rig: Rig) -> None:
    words = rig.eecd_read_words(0, EE.WORDS)
    assert words == [rig.eerd(i) for i in range(EE.WORDS)]
    assert sum(words) & 0xFFFF == 0xBABA
    assert rig.eecd_read_words(1, 2) == words[1:3]


def test_eeprom_for_another_mac_still_sums() -> None:
    other = bytes.fromhex("02123456789a")
    words = EE.build_image(other, vendor_id=0x8086, device_id=0x100E, subsystem_vendor_id=0x8086,
                           subsystem_id=0x1E)
    assert sum(words) & 0xFFFF == 0xBABA
    assert EE.image_mac(words) == other


def test_ral0_rah0_autoloaded(rig: Rig) -> None:
    assert rig.rd(R.RA) == int.from_bytes(MAC[:4], "little")
    assert rig.rd(R.RA + 4) == R.RAH_AV | int.from_bytes(MAC[4:], "little")


# -- PHY -------------------------------------------------------------------------------------------
def test_phy_reads_through_mdic(rig: Rig) -> None:
    bmsr = rig.phy_read(P.PHY_STATUS)
    assert bmsr & P.STATUS_LINK and bmsr & P.STATUS_AN_COMPLETE
    assert rig.phy_read(P.PHY_ID1) == 0x0141
    assert rig.phy_read(P.PHY_ID2) == 0x0C20
    assert rig.phy_read(P.PHY_CTRL) & P.CTRL_AUTONEG_EN
    assert rig.phy_read(P.PHY_LP_ABILITY) & P.LP_ACK
    assert rig.phy_read(P.PHY_1000T_STATUS) & 0x0800  # partner 1000BASE-T full duplex
    assert rig.phy_read(P.M88_PHY_SPEC_STATUS) & P.M88_STATUS_LINK


def test_phy_writes_and_errors(rig: Rig) -> None:
    rig.mdic(R.MDIC_OP_WRITE, P.PHY_AUTONEG_ADV, 0x01E1)
    assert rig.phy_read(P.PHY_AUTONEG_ADV) == 0x01E1
    rig.mdic(R.MDIC_OP_WRITE, P.PHY_CTRL, P.CTRL_RESET | P.CTRL_AUTONEG_EN | P.CTRL_RESTART_AN)
    assert rig.phy_read(P.PHY_CTRL) == P.CTRL_AUTONEG_EN  # reset and restart self-clear
    assert rig.phy_read(P.PHY_STATUS) & P.STATUS_LINK
    assert rig.mdic(R.MDIC_OP_WRITE, P.PHY_ID1, 0) & R.MDIC_ERROR  # read-only
    assert rig.mdic(R.MDIC_OP_READ, 0x1B) & R.MDIC_ERROR  # no such register
    assert rig.mdic(R.MDIC_OP_READ, P.PHY_STATUS, phy=2) & R.MDIC_ERROR  # nobody at address 2
    assert rig.phy_read(P.PHY_ID1) == 0x0141


def test_mdic_interrupt(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_MDAC)
    rig.mdic(R.MDIC_OP_READ | R.MDIC_INT_EN, P.PHY_STATUS)
    assert rig.intx
    assert rig.rd(R.ICR) == R.ICR_MDAC
    assert not rig.intx


def test_ctrl_phy_rst_resets_phy(rig: Rig) -> None:
    rig.mdic(R.MDIC_OP_WRITE, P.PHY_AUTONEG_ADV, 0x0001)
    ctrl = rig.rd(R.CTRL)
    rig.wr(R.CTRL, ctrl | R.CTRL_PHY_RST)
    rig.wr(R.CTRL, ctrl)
    assert rig.phy_read(P.PHY_AUTONEG_ADV) == 0x0DE1


# -- access paths ----------------------------------------------------------------------------------
def test_ioaddr_iodata(rig: Rig) -> None:
    rig.pio.write(IO_BASE, 4, R.STATUS)
    assert rig.pio.read(IO_BASE, 4) == R.STATUS
    assert rig.pio.read(IO_BASE + 4, 4) == rig.rd(R.STATUS)
    rig.pio.write(IO_BASE, 4, R.RDBAL)
    rig.pio.write(IO_BASE + 4, 4, 0x1234_5678)
    assert rig.rd(R.RDBAL) == 0x1234_5670  # through the register's mask
    rig.pio.write(IO_BASE, 4, R.ICS)
    rig.wr(R.IMS, R.ICR_LSC)
    rig.pio.write(IO_BASE + 4, 4, R.ICR_LSC)  # side effects too
    assert rig.intx
    rig.pio.write(IO_BASE, 4, R.ICR)
    assert rig.pio.read(IO_BASE + 4, 4) == R.ICR_LSC
    assert not rig.intx
    assert rig.pio.read(IO_BASE + 8, 4) == 0


def test_partial_and_wide_accesses(rig: Rig) -> None:
    rig.wr(R.RDBAL, 0x1234_5670)
    assert rig.rd(R.RDBAL, 2) == 0x5670
    assert rig.rd(R.RDBAL + 2, 2) == 0x1234
    assert rig.rd(R.RDBAL + 3, 1) == 0x12
    rig.wr(R.RDBAL + 2, 0xABCD, 2)
    assert rig.rd(R.RDBAL) == 0xABCD_5670
    rig.wr(R.RDBAL, 0x0000_0005_0000_0010, 8)  # RDBAL and RDBAH in one go
    assert rig.rd(R.RDBAH) == 5 and rig.rd(R.RDBAL) == 0x10
    assert rig.rd(R.RDBAL, 8) == 0x5_0000_0010
    # a byte write to a command register does not replay the other lanes
    rig.wr(R.IMS, 0x90)
    rig.wr(R.IMC + 1, 0x02, 1)  # clears MDAC (bit 9) only
    assert rig.rd(R.IMS) == 0x90


def test_unknown_offsets_read_zero_and_ignore_writes(rig: Rig, caplog) -> None:
    with caplog.at_level("INFO", logger="kvmpy.pci"):
        rig.wr(0x1F000, 0xDEAD)
        assert rig.rd(0x1F000) == 0
        rig.wr(0x1F000, 0xDEAD)
    assert sum("unknown register" in m for m in caplog.messages) == 2  # once for writes, once for reads


def test_read_only_and_masks(rig: Rig) -> None:
    status = rig.rd(R.STATUS)
    rig.wr(R.STATUS, 0)
    assert rig.rd(R.STATUS) == status
    rig.wr(R.TDLEN, 0xFFFF_FFFF)
    assert rig.rd(R.TDLEN) == 0x000F_FF80
    rig.wr(R.RDH, 0x12345)
    assert rig.rd(R.RDH) == 0x2345
    rig.wr(R.GPRC, 5)
    assert rig.rd(R.GPRC) == 0


# -- interrupts ------------------------------------------------------------------------------------
def test_icr_ims_imc_ics_and_intx(rig: Rig) -> None:
    assert not rig.intx
    rig.wr(R.ICS, R.ICR_RXT0)  # cause without mask: recorded, line low
    assert not rig.intx
    assert rig.rd(R.ICS) == R.ICR_RXT0  # ICS reads ICR without clearing
    rig.wr(R.IMS, R.ICR_RXT0 | R.ICR_TXDW)
    assert rig.rd(R.IMS) == R.ICR_RXT0 | R.ICR_TXDW
    assert rig.intx
    assert rig.cfg_read(c.STATUS, 2) & c.STS_INTERRUPT
    assert rig.rd(R.ICR) == R.ICR_RXT0  # read clears
    assert not rig.intx
    assert rig.rd(R.ICR) == 0
    rig.wr(R.ICS, R.ICR_TXDW | R.ICR_LSC)
    assert rig.intx
    rig.wr(R.ICR, R.ICR_TXDW)  # write-1-to-clear
    assert not rig.intx
    assert rig.rd(R.ICR) == R.ICR_LSC
    rig.wr(R.IMC, R.ICR_RXT0)
    assert rig.rd(R.IMS) == R.ICR_TXDW
    assert rig.rd(R.IMC) == 0  # write-only
    rig.wr(R.IMC, 0xFFFF_FFFF)
    rig.wr(R.ICS, R.ICR_TXDW)
    assert not rig.intx
    rig.wr(R.IMS, R.ICR_TXDW)  # unmasking a pending cause raises the line
    assert rig.intx


def test_intx_disable_and_msi(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_LSC)
    rig.cfg_write(c.COMMAND, 2, rig.cfg_read(c.COMMAND, 2) | c.CMD_INTX_DISABLE)
    rig.wr(R.ICS, R.ICR_LSC)
    assert not rig.intx
    rig.rd(R.ICR)
    msi = rig.nic.config.msi
    rig.cfg_write(msi.addr_off, 4, 0xFEE0_0000)
    rig.cfg_write(msi.data_off, 2, 0x41)
    rig.cfg_write(msi.ctrl_off, 2, 1)
    rig.wr(R.ICS, R.ICR_LSC)
    assert rig.msi.messages == [(0xFEE0_0000, 0x41)]
    rig.wr(R.ICS, R.ICR_LSC)  # still pending: no new edge, no new message
    assert len(rig.msi.messages) == 1
    rig.rd(R.ICR)
    rig.wr(R.ICS, R.ICR_TXDW | R.ICR_LSC)
    assert len(rig.msi.messages) == 2


def test_itr_throttles_with_injected_clock(rig: Rig) -> None:
    rig.wr(R.ITR, 1000)  # 256 us between interrupts
    rig.wr(R.IMS, R.ICR_RXT0)
    assert rig.nic.tick() is None
    rig.wr(R.ICS, R.ICR_RXT0)
    assert rig.intx  # the first one goes at once
    rig.rd(R.ICR)
    rig.clock.advance_us(100)
    rig.wr(R.ICS, R.ICR_RXT0)
    assert not rig.intx  # too soon: delayed, not lost
    assert rig.timer_calls == 1
    wait = rig.nic.tick()
    assert wait == pytest.approx(156e-6, abs=1e-6)
    rig.clock.advance_us(100)
    assert rig.nic.tick() == pytest.approx(56e-6, abs=1e-6)
    assert not rig.intx
    rig.clock.advance_us(60)
    assert rig.nic.tick() is None
    assert rig.intx
    assert rig.rd(R.ICR) == R.ICR_RXT0
    # a cause the guest collects by polling before the deadline never interrupts
    rig.clock.advance_us(10)
    rig.wr(R.ICS, R.ICR_RXT0)
    assert not rig.intx
    assert rig.rd(R.ICR) == R.ICR_RXT0
    assert rig.nic.tick() is None
    rig.clock.advance_us(1000)
    assert not rig.intx
    # past the deadline, any register access delivers a waiting interrupt
    rig.wr(R.ICS, R.ICR_RXT0)
    assert rig.intx
    rig.rd(R.ICR)
    rig.clock.advance_us(10)
    rig.wr(R.ICS, R.ICR_RXT0)
    assert not rig.intx
    rig.clock.advance_us(300)
    rig.rd(R.STATUS)
    assert rig.intx


def test_itr_zero_never_throttles(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_RXT0)
    for _ in range(5):
        rig.wr(R.ICS, R.ICR_RXT0)
        assert rig.intx
        rig.rd(R.ICR)
        assert not rig.intx
    assert rig.nic.tick() is None


def test_lowering_itr_releases_a_waiting_interrupt(rig: Rig) -> None:
    rig.wr(R.ITR, 0xFFFF)
    rig.wr(R.IMS, R.ICR_RXT0)
    rig.wr(R.ICS, R.ICR_RXT0)
    rig.rd(R.ICR)
    rig.wr(R.ICS, R.ICR_RXT0)
    assert not rig.intx
    rig.wr(R.ITR, 0)
    assert rig.intx


# -- reset and link ----------------------------------------------------------------------------------
def test_ctrl_rst_resets_the_mac(rig: Rig) -> None:
    rig.setup_rx()
    rig.setup_tx()
    rig.wr(R.RA, 0x11223344)
    rig.wr(R.IMS, R.ICR_LSC)
    rig.wr(R.ICS, R.ICR_LSC)
    rig.wr(R.ITR, 500)
    rig.eerd(3)
    assert rig.intx
    rig.wr(R.CTRL, rig.rd(R.CTRL) | R.CTRL_RST)
    assert not rig.rd(R.CTRL) & R.CTRL_RST  # self-clearing
    assert rig.rd(R.CTRL) == R.CTRL_RESET
    assert not rig.intx
    for reg in (R.RCTL, R.TCTL, R.IMS, R.ICR, R.RDLEN, R.TDLEN, R.RDT, R.ITR, R.EERD):
        assert rig.rd(reg) == 0, hex(reg)
    assert rig.rd(R.RA) == int.from_bytes(MAC[:4], "little")  # reloaded from the EEPROM
    assert rig.rd(R.STATUS) & R.STATUS_LU
    assert rig.cfg_read(c.COMMAND, 2) & CMD_MEMORY  # the configuration space is untouched
    assert rig.phy_read(P.PHY_STATUS) & P.STATUS_LINK


def test_ee_rst_reloads_the_address(rig: Rig) -> None:
    rig.wr(R.RA, 0)
    rig.wr(R.CTRL_EXT, rig.rd(R.CTRL_EXT) | R.CTRL_EXT_EE_RST)
    assert not rig.rd(R.CTRL_EXT) & R.CTRL_EXT_EE_RST
    assert rig.rd(R.RA) == int.from_bytes(MAC[:4], "little")


def test_link_change_raises_lsc(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_LSC)
    rig.nic.set_link(False)
    assert rig.intx
    assert not rig.rd(R.STATUS) & R.STATUS_LU
    assert not rig.phy_read(P.PHY_STATUS) & P.STATUS_LINK
    assert rig.rd(R.ICR) == R.ICR_LSC
    rig.nic.set_link(True)
    assert rig.rd(R.STATUS) & R.STATUS_LU
    assert rig.phy_read(P.PHY_STATUS) & P.STATUS_AN_COMPLETE
    assert rig.rd(R.ICR) == R.ICR_LSC


def test_pci_reset(rig: Rig) -> None:
    rig.setup_rx()
    rig.nic.reset()
    assert rig.cfg_read(c.COMMAND, 2) == 0
    assert rig.nic.state.regs[R.RCTL >> 2] == 0


def test_nonsense_never_raises() -> None:
    """A guest programming garbage (random registers, rings and descriptors in random RAM)
    gets garbage, never an exception out of the device."""
    import random

    rnd = random.Random(1234)
    r = Rig()
    r.ram.mem[:] = rnd.randbytes(len(r.ram.mem))
    offsets = sorted({idx << 2 for idx in R.REGISTERS})
    ring_regs = (R.TDBAL, R.TDLEN, R.TDH, R.TDT, R.RDBAL, R.RDLEN, R.RDH, R.RDT, R.TCTL, R.RCTL)
    for step in range(3000):
        off = rnd.choice(ring_regs) if step % 3 == 0 else rnd.choice(offsets)
        if off in (R.TDBAL, R.RDBAL):
            value = rnd.randrange(0, 0x40_0000) & ~0xF
        elif off in (R.TDLEN, R.RDLEN):
            value = rnd.randrange(0, 0x1000)
        elif off in (R.TDT, R.TDH, R.RDT, R.RDH):
            value = rnd.randrange(0, 300)
        else:
            value = rnd.getrandbits(32)
        size = rnd.choice((1, 2, 4, 4, 4, 8))
        if rnd.random() < 0.5:
            r.mmio.write(MMIO_BASE + (off & ~(size - 1)), size, value & ((1 << (8 * size)) - 1))
        else:
            r.mmio.read(MMIO_BASE + (off & ~(size - 1)), size)
        if step % 7 == 0:
            r.nic.receive(rnd.randbytes(rnd.choice((0, 10, 60, 200, 1514, 3000))))
        if step % 11 == 0:
            r.pio.write(IO_BASE + rnd.choice((0, 4)), 4, rnd.getrandbits(17))
            r.pio.read(IO_BASE + 4, 4)
        r.nic.tick()
    r.nic.snapshot()
