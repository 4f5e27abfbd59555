"""The e1000 receive path the way Linux's e1000 driver sets it up: the ring with wrap-around,
frames over several descriptors, CRC present or stripped, address and VLAN filtering, RX
checksum status, ring-full behaviour and back-pressure, RXDMT0, DMA faults, statistics,
snapshot/restore."""

from __future__ import annotations

import struct
import zlib

import pytest
from test_e1000_support import (
    BCAST,
    MAC,
    PEER,
    RX_BUFS,
    RX_RING,
    Rig,
    eth,
    ipv4,
    mta_hash,
    tcp,
    tcp_frame,
    udp,
)

from kvmpy.devices.e1000 import regs as R

RCTL = R.RCTL_EN | R.RCTL_BAM | R.RCTL_SECRC


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.setup_rx()
    return r


def frame_n(n: int, size: int = 100, dst: bytes = MAC) -> bytes:
    return eth(dst, PEER, 0x88B5, bytes([n]) * (size - 14))


def test_ring_wraps(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_RXT0)
    n = 0
    head = 0
    for _ in range(4):
        for _ in range(5):
            assert rig.nic.can_receive()
            assert rig.nic.receive(frame_n(n))
            buf, length, _csum, status, errors, _special = rig.rx_desc(head)
            assert buf == RX_BUFS + 0x4000 * head
            assert length == 100 and errors == 0
            assert status & R.RXD_STAT_DD and status & R.RXD_STAT_EOP
            assert rig.rx_data(head) == frame_n(n)
            n += 1
            head = (head + 1) % 8
            assert rig.rd(R.RDH) == head
            # the driver takes it and gives the descriptor back
            rig.rx_recycle(head - 1 if head else 7)
        assert rig.intx
        assert rig.rd(R.ICR) & R.ICR_RXT0
    assert rig.rd(R.GPRC) == 20


def test_short_frames_are_padded(rig: Rig) -> None:
    arp = eth(BCAST, PEER, 0x0806, bytes(28))
    assert rig.nic.receive(arp)
    assert rig.rx_data(0) == arp + bytes(18)


def test_crc_kept_when_secrc_clear(rig: Rig) -> None:
    rig.wr(R.RCTL, R.RCTL_EN)
    frame = frame_n(1)
    rig.nic.receive(frame)
    data = rig.rx_data(0)
    assert len(data) == 104  # Linux's e1000 takes the 4 FCS bytes off itself
    assert data == frame + zlib.crc32(frame).to_bytes(4, "little")


def test_frame_over_several_descriptors(rig: Rig) -> None:
    rig.wr(R.RCTL, R.RCTL_EN | R.RCTL_SECRC | 3 << R.RCTL_BSIZE_SHIFT)  # 256-byte buffers
    frame = eth(MAC, PEER, 0x88B5, bytes(range(256)) * 4)[:1000]
    assert rig.nic.receive(frame)
    lengths = [rig.rx_desc(i)[1] for i in range(4)]
    assert lengths == [256, 256, 256, 232]
    assert [rig.rx_desc(i)[3] & R.RXD_STAT_EOP for i in range(4)] == [0, 0, 0, R.RXD_STAT_EOP]
    assert all(rig.rx_desc(i)[3] & R.RXD_STAT_DD for i in range(4))
    assert b"".join(rig.rx_data(i) for i in range(4)) == frame
    assert rig.rd(R.RDH) == 4


@pytest.mark.parametrize("bsize,bsex,size", [(0, 0, 2048), (1, 0, 1024), (2, 0, 512), (3, 0, 256),
                                            (1, 1, 16384), (2, 1, 8192), (3, 1, 4096)])
def test_buffer_sizes(bsize: int, bsex: int, size: int) -> None:
    r = Rig()
    r.setup_rx(count=64, fill=63)
    r.wr(R.RCTL, R.RCTL_EN | R.RCTL_SECRC | R.RCTL_LPE | bsize << R.RCTL_BSIZE_SHIFT
         | (R.RCTL_BSEX if bsex else 0))
    frame = frame_n(1, 9000)
    assert r.nic.receive(frame)
    used = -(-9000 // size)
    assert [r.rx_desc(i)[1] for i in range(used)][0] == min(size, 9000)
    assert b"".join(r.rx_data(i) for i in range(used)) == frame


def test_oversized_without_lpe_dropped(rig: Rig) -> None:
    assert rig.nic.receive(frame_n(1, 1518))
    assert rig.nic.receive(frame_n(2, 1519))
    assert rig.rd(R.RDH) == 1
    assert rig.rd(R.ROC) == 1


def test_unicast_filter(rig: Rig) -> None:
    assert rig.nic.receive(frame_n(1, dst=PEER))  # not for us: taken, dropped
    assert rig.rd(R.RDH) == 0
    rig.wr(R.RA + 8, int.from_bytes(PEER[:4], "little"))
    rig.wr(R.RA + 12, R.RAH_AV | int.from_bytes(PEER[4:], "little"))
    rig.nic.receive(frame_n(2, dst=PEER))  # a second exact address
    assert rig.rd(R.RDH) == 1
    other = bytes.fromhex("020000000099")
    rig.nic.receive(frame_n(3, dst=other))
    assert rig.rd(R.RDH) == 1
    rig.setbits(R.RCTL, R.RCTL_UPE)  # promiscuous
    rig.nic.receive(frame_n(4, dst=other))
    assert rig.rd(R.RDH) == 2


def test_broadcast_needs_bam(rig: Rig) -> None:
    rig.nic.receive(frame_n(1, dst=BCAST))
    assert rig.rd(R.RDH) == 1
    rig.wr(R.RCTL, R.RCTL_EN | R.RCTL_SECRC)
    rig.nic.receive(frame_n(2, dst=BCAST))
    assert rig.rd(R.RDH) == 1
    assert rig.rd(R.BPRC) == 1


def test_multicast_via_mta(rig: Rig) -> None:
    group = bytes.fromhex("01005e0000fb")  # mDNS
    rig.nic.receive(frame_n(1, dst=group))
    assert rig.rd(R.RDH) == 0
    reg, bit = mta_hash(group)
    rig.wr(R.MTA + 4 * reg, 1 << bit)
    rig.nic.receive(frame_n(2, dst=group))
    assert rig.rd(R.RDH) == 1
    assert rig.rx_data(0) == frame_n(2, dst=group)
    rig.nic.receive(frame_n(3, dst=bytes.fromhex("01005e000001")))  # another group
    assert rig.rd(R.RDH) == 1
    rig.setbits(R.RCTL, R.RCTL_MPE)
    rig.nic.receive(frame_n(4, dst=bytes.fromhex("01005e000001")))
    assert rig.rd(R.RDH) == 2
    assert rig.rd(R.MPRC) == 2


@pytest.mark.parametrize("mo", [1, 2, 3])
def test_mta_offsets(mo: int) -> None:
    r = Rig()
    r.setup_rx(rctl=RCTL | mo << R.RCTL_MO_SHIFT)
    group = bytes.fromhex("333300000001")
    value = (group[5] << 8 | group[4]) >> (4, 3, 2, 0)[mo] & 0xFFF
    r.wr(R.MTA + 4 * (value >> 5), 1 << (value & 31))
    r.nic.receive(frame_n(1, dst=group))
    assert r.rd(R.RDH) == 1


def test_vlan_strip_and_filter(rig: Rig) -> None:
    inner = frame_n(1)
    tagged = inner[:12] + b"\x81\x00\x60\x0a" + inner[12:]  # priority 3, VLAN 10
    rig.nic.receive(tagged)
    assert rig.rx_data(0) == tagged  # CTRL.VME off: the tag stays in the data
    assert not rig.rx_desc(0)[3] & R.RXD_STAT_VP
    rig.setbits(R.CTRL, R.CTRL_VME)
    rig.nic.receive(tagged)
    *_, status, _errors, special = rig.rx_desc(1)
    assert status & R.RXD_STAT_VP and special == 0x600A
    assert rig.rx_data(1) == inner
    rig.setbits(R.RCTL, R.RCTL_VFE)
    rig.nic.receive(tagged)  # VLAN 10 not in the VFTA
    assert rig.rd(R.RDH) == 2
    rig.wr(R.VFTA + 4 * (10 >> 5), 1 << (10 & 31))
    rig.nic.receive(tagged)
    assert rig.rd(R.RDH) == 3
    rig.nic.receive(inner)  # untagged frames are not VLAN-filtered
    assert rig.rd(R.RDH) == 4


def test_rx_checksum_status(rig: Rig) -> None:
    assert rig.rd(R.RXCSUM) == 0
    rig.nic.receive(tcp_frame(b"off"))
    assert rig.rx_desc(0)[3] & R.RXD_STAT_IXSM  # no offload asked for: ignore the bits
    rig.rx_recycle(0)
    rig.wr(R.RDH, 0)
    rig.wr(R.RDT, 7)
    rig.wr(R.RXCSUM, R.RXCSUM_IPOFL | R.RXCSUM_TUOFL)
    good = tcp_frame(b"hello" * 50)
    rig.nic.receive(good)
    *_, status, errors, _ = rig.rx_desc(0)
    assert status & R.RXD_STAT_IPCS and status & R.RXD_STAT_TCPCS
    assert not status & R.RXD_STAT_IXSM and errors == 0
    bad_tcp = bytearray(good)
    bad_tcp[-1] ^= 0xFF
    rig.nic.receive(bytes(bad_tcp))
    *_, status, errors, _ = rig.rx_desc(1)
    assert status & R.RXD_STAT_TCPCS and errors == R.RXD_ERR_TCPE
    bad_ip = bytearray(good)
    bad_ip[22] ^= 1  # TTL changes, header checksum does not
    rig.nic.receive(bytes(bad_ip))
    assert rig.rx_desc(2)[4] & R.RXD_ERR_IPE
    u = eth(MAC, PEER, 0x0800, ipv4(17, udp(b"query" * 9)))
    rig.nic.receive(u)
    assert rig.rx_desc(3)[3] & R.RXD_STAT_TCPCS and rig.rx_desc(3)[4] == 0
    nosum = eth(MAC, PEER, 0x0800, ipv4(17, udp(b"x" * 40, csum=False)))
    rig.nic.receive(nosum)
    assert not rig.rx_desc(4)[3] & R.RXD_STAT_TCPCS  # UDP without checksum
    rig.wr(R.RXCSUM, 0)
    rig.nic.receive(good)
    assert rig.rx_desc(5)[3] & R.RXD_STAT_IXSM
    assert not rig.rx_desc(5)[3] & (R.RXD_STAT_IPCS | R.RXD_STAT_TCPCS)


def test_rx_checksum_of_odd_tcp_and_tagged(rig: Rig) -> None:
    rig.wr(R.RXCSUM, R.RXCSUM_TUOFL)  # what Linux's e1000_configure_rx sets
    good = tcp_frame(b"odd")  # padded to 60 on the wire: the IP length must bound the sum
    rig.nic.receive(good)
    assert rig.rx_desc(0)[3] & R.RXD_STAT_TCPCS and rig.rx_desc(0)[4] == 0
    tagged = good[:12] + b"\x81\x00\x00\x05" + good[12:]
    rig.nic.receive(tagged)
    assert rig.rx_desc(1)[3] & R.RXD_STAT_TCPCS and rig.rx_desc(1)[4] == 0
    frag = bytearray(eth(MAC, PEER, 0x0800, ipv4(6, tcp(b"z" * 64))))
    frag[20] |= 0x20  # more fragments
    rig.nic.receive(bytes(frag))
    assert not rig.rx_desc(2)[3] & R.RXD_STAT_TCPCS


def test_ring_full_holds_the_frame(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_RXO)
    for i in range(7):
        assert rig.nic.receive(frame_n(i))
    assert rig.rd(R.RDH) == rig.rd(R.RDT) == 7
    assert not rig.nic.can_receive()
    assert rig.nic.receive(frame_n(99)) is False  # not now: the backend keeps it
    assert not rig.intx and not rig.rd(R.ICR) & R.ICR_RXO
    assert rig.rd(R.MPC) == 0  # nothing was lost
    assert rig.rd(R.RNBC) == 1
    assert rig.rd(R.TPR) == 7
    assert rig.rd(R.RDH) == 7
    calls = rig.rx_space_calls
    rig.rx_recycle(0)  # the driver frees one: the backend is told
    assert rig.rx_space_calls == calls + 1
    assert rig.nic.can_receive()
    assert rig.nic.receive(frame_n(99))
    assert rig.rx_data(7) == frame_n(99)


def test_frame_larger_than_free_buffers(rig: Rig) -> None:
    rig.wr(R.RCTL, R.RCTL_EN | R.RCTL_SECRC | 3 << R.RCTL_BSIZE_SHIFT)
    rig.wr(R.RDT, 2)  # two 256-byte buffers
    assert rig.nic.receive(frame_n(1, 600)) is False
    assert rig.rd(R.RDH) == 0
    assert rig.nic.receive(frame_n(2, 500))
    rig.wr(R.RDT, 1)
    assert rig.nic.receive(frame_n(3, 600))  # three of the seven buffers now: delivered
    assert rig.rd(R.RDH) == 5


def test_frame_larger_than_the_ring_is_missed(rig: Rig) -> None:
    rig.wr(R.RCTL, R.RCTL_EN | R.RCTL_SECRC | R.RCTL_LPE | 3 << R.RCTL_BSIZE_SHIFT)
    rig.wr(R.IMS, R.ICR_RXO)
    assert rig.nic.receive(frame_n(1, 7 * 256 + 1))  # never fits 7 x 256: dropped, not held
    assert rig.intx and rig.rd(R.ICR) & R.ICR_RXO
    assert rig.rd(R.MPC) == 1
    assert rig.rd(R.RDH) == 0


def test_loopback_with_full_ring_misses(rig: Rig) -> None:
    rig.setup_rx(count=8, fill=0, rctl=R.RCTL_EN | R.RCTL_SECRC | R.RCTL_LBM_MAC)
    rig.setup_tx()
    rig.tx_legacy(eth(MAC, MAC, 0x88B5, bytes(50)))
    rig.tx_kick()
    assert rig.rd(R.MPC) == 1 and rig.rd(R.ICR) & R.ICR_RXO
    assert rig.sent == []


def test_rxdmt0(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_RXDMT0)
    for i in range(2):
        rig.nic.receive(frame_n(i))
        assert not rig.rd(R.ICR) & R.ICR_RXDMT0  # 7 - 2 = 5 free: above half the ring
    rig.nic.receive(frame_n(3))
    assert rig.rd(R.ICR) & R.ICR_RXDMT0  # 4 free of 8: down to the RDMTS threshold (1/2)
    rig.wr(R.RCTL, RCTL | 1 << R.RCTL_RDMTS_SHIFT)  # 1/4
    rig.nic.receive(frame_n(4))
    assert not rig.rd(R.ICR) & R.ICR_RXDMT0
    rig.nic.receive(frame_n(5))
    assert rig.rd(R.ICR) & R.ICR_RXDMT0


def test_rx_disabled_and_link_down(rig: Rig) -> None:
    rig.wr(R.RCTL, 0)
    assert not rig.nic.can_receive()
    assert rig.nic.receive(frame_n(1))
    assert rig.rd(R.RDH) == 0
    calls = rig.rx_space_calls
    rig.wr(R.RCTL, RCTL)
    assert rig.rx_space_calls == calls + 1
    rig.nic.set_link(False)
    assert not rig.nic.can_receive()
    rig.nic.receive(frame_n(2))
    assert rig.rd(R.RDH) == 0
    rig.nic.set_link(True)
    assert rig.nic.can_receive()


def test_buffer_outside_ram(rig: Rig) -> None:
    rig.ram.write(RX_RING + 16, struct.pack("<Q", 0x7_0000_0000))
    rig.wr(R.IMS, R.ICR_RXT0)
    assert rig.nic.receive(frame_n(1))
    assert rig.nic.receive(frame_n(2))  # descriptor 1 points outside RAM
    *_, status, errors, _ = rig.rx_desc(1)
    assert status & R.RXD_STAT_DD and status & R.RXD_STAT_EOP and errors & R.RXD_ERR_RXE
    assert rig.rd(R.MPC) == 1
    assert rig.nic.receive(frame_n(3))
    assert rig.rx_data(2) == frame_n(3)
    assert rig.nic.state.dma_errors == 1


def test_ring_outside_ram(rig: Rig) -> None:
    rig.wr(R.RDBAH, 1)
    assert rig.nic.receive(frame_n(1))
    assert rig.rd(R.MPC) == 1
    assert rig.rd(R.RDH) == 0


def test_without_bus_master(rig: Rig) -> None:
    rig.cfg_write(0x04, 2, 0x0003)
    assert not rig.nic.can_receive()
    assert rig.nic.receive(frame_n(1))
    assert rig.rd(R.MPC) == 1
    calls = rig.rx_space_calls
    rig.cfg_write(0x04, 2, 0x0007)
    assert rig.rx_space_calls == calls + 1


def test_rx_statistics(rig: Rig) -> None:
    rig.nic.receive(frame_n(1, 60))
    rig.nic.receive(frame_n(2, 200, dst=BCAST))
    rig.nic.receive(frame_n(3, 1514))
    rig.nic.receive(frame_n(4, dst=PEER))  # filtered: seen, not good
    assert rig.rd(R.TPR) == 4
    assert rig.rd(R.GPRC) == 3 and rig.rd(R.GPRC) == 0
    assert rig.rd(R.BPRC) == 1
    assert rig.rd(R.PRC64) == 1 and rig.rd(R.PRC255) == 1 and rig.rd(R.PRC1522) == 1
    assert rig.rd(R.GORCL) == 64 + 204 + 1518
    assert rig.rd(R.GORCH) == 0 and rig.rd(R.GORCL) == 0
    assert rig.rd(R.TORL) == 64 + 204 + 1518 + 104


def test_snapshot_restore(rig: Rig) -> None:
    rig.setup_tx()
    rig.wr(R.IMS, R.ICR_RXT0)
    rig.wr(R.ITR, 100)
    rig.nic.receive(frame_n(1))
    rig.eecd_read_words(0, 1)
    snap = rig.nic.snapshot()
    ram = bytes(rig.ram.mem)
    rig.nic.receive(frame_n(2))
    rig.nic.receive(frame_n(3))
    after = (rig.rd(R.RDH), rig.rx_data(1))
    rig.wr(R.CTRL, R.CTRL_RST)
    assert rig.rd(R.RCTL) == 0
    rig.ram.mem[:] = ram
    rig.nic.restore(snap)
    assert rig.nic.snapshot() == snap
    assert rig.intx  # the pending RXT0 came back with the state
    assert rig.rd(R.RDH) == 1
    rig.nic.receive(frame_n(2))
    rig.nic.receive(frame_n(3))
    assert (rig.rd(R.RDH), rig.rx_data(1)) == after
    assert rig.eecd_read_words(0, 1) == [MAC[0] | MAC[1] << 8]


def test_snapshot_keeps_a_half_gathered_packet() -> None:
    r = Rig()
    r.setup_tx()
    frame = frame_n(5, 300)
    r.ram.write(0x10_0000, frame)
    r.put_tx(0x10_0000, 100 | R.TXD_CMD_RS << 24, 0)
    r.tx_kick()  # the driver kicked in the middle of a packet
    snap = r.nic.snapshot()
    other = Rig()
    other.ram.mem[:] = r.ram.mem
    other.nic.restore(snap)
    other.tx_count, other.tx_tail = 8, 1
    other.put_tx(0x10_0000 + 100, 200 | (R.TXD_CMD_RS | R.TXD_CMD_EOP) << 24, 0)
    other.tx_kick()
    assert other.sent == [frame]


def _ones_sum(data: bytes) -> int:
    """The ones'-complement sum (not complemented), modulo 0xFFFF like the device reports it."""
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data)) % 0xFFFF


@pytest.mark.parametrize("pcss", [0, 14, 15])
@pytest.mark.parametrize("payload", [b"even" * 100, b"odd" * 101, b"x"])
@pytest.mark.parametrize("secrc", [True, False])
def test_packet_checksum_field(pcss: int, payload: bytes, secrc: bool) -> None:
    r = Rig()
    r.setup_rx(count=16, fill=15, rctl=R.RCTL_EN | (R.RCTL_SECRC if secrc else 0))
    for i, rxcsum in enumerate((0x300 | pcss, pcss)):
        r.wr(R.RXCSUM, rxcsum)
        frame = tcp_frame(payload)
        r.nic.receive(frame)
        wire = frame + bytes(max(0, 60 - len(frame)))
        if not secrc:
            wire += zlib.crc32(wire).to_bytes(4, "little")
        assert r.rx_desc(i)[2] == _ones_sum(wire[pcss:])
        assert r.rx_desc(i)[4] == 0
