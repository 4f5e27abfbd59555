"""The e1000 transmit path the way Linux's e1000 driver uses it: legacy descriptors around the
ring, context + data descriptors with checksum offload, TSO of a 64 KiB send, VLAN insertion,
DMA faults, loopback, statistics. Every checksum is verified with the test's own code."""

from __future__ import annotations

import struct

import pytest
from test_e1000_support import (
    MAC,
    PEER,
    TX_BUFS,
    Rig,
    eth,
    inet_sum,
    ipv4,
    pseudo,
    tcp,
    udp,
)

from kvmpy.devices.e1000 import regs as R

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])
DATA = R.TXD_CMD_DEXT | R.TXD_CMD_RS
DTYP_D = R.TXD_DTYP_DATA << 20


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.setup_tx()
    return r


def frame_n(n: int, size: int = 100) -> bytes:
    return eth(PEER, MAC, 0x88B5, bytes([n]) * (size - 14))


def test_legacy_ring_wraps_and_writes_back_dd(rig: Rig) -> None:
    rig.wr(R.IMS, R.ICR_TXDW)
    sent = 0
    for batch in (5, 5, 5):  # 8 descriptors: the second and third batches wrap
        slots = [rig.tx_legacy(frame_n(sent + i)) for i in range(batch)]
        rig.tx_kick()
        assert rig.rd(R.TDH) == rig.tx_tail
        for s in slots:
            assert rig.tx_status(s) & R.TXD_STAT_DD
        assert rig.intx
        assert rig.rd(R.ICR) & R.ICR_TXDW
        assert rig.rd(R.ICS) == 0
        sent += batch
    assert rig.sent == [frame_n(i) for i in range(15)]


def test_no_rs_no_writeback(rig: Rig) -> None:
    i = rig.tx_legacy(frame_n(1), cmd=R.TXD_CMD_EOP)
    rig.tx_kick()
    assert rig.tx_status(i) == 0
    assert rig.sent == [frame_n(1)]
    assert rig.rd(R.ICR) == R.ICR_TXQE


def test_multi_descriptor_packet_and_short_pad(rig: Rig) -> None:
    frame = frame_n(7, 300)
    rig.ram.write(TX_BUFS, frame[:100])
    rig.ram.write(TX_BUFS + 0x1000, frame[100:])
    rig.put_tx(TX_BUFS, 100 | R.TXD_CMD_RS << 24, 0)
    rig.put_tx(TX_BUFS + 0x1000, 200 | (R.TXD_CMD_RS | R.TXD_CMD_EOP) << 24, 0)
    rig.tx_kick()
    assert rig.sent == [frame]
    short = eth(PEER, MAC, 0x0806, b"x" * 28)
    rig.tx_legacy(short)
    rig.tx_kick()
    assert rig.sent[-1] == short + bytes(60 - len(short))  # TCTL.PSP pads


def test_tx_disabled_until_tctl_en(rig: Rig) -> None:
    rig.wr(R.TCTL, 0)
    rig.tx_legacy(frame_n(1))
    rig.tx_kick()
    assert rig.sent == [] and rig.rd(R.TDH) == 0
    rig.wr(R.TCTL, R.TCTL_EN)
    assert rig.sent == [frame_n(1)]


def test_bad_ring_pointers_do_nothing(rig: Rig) -> None:
    rig.wr(R.TDT, 99)  # beyond the ring: refused, not walked
    assert rig.sent == [] and rig.rd(R.TDH) == 0


def _context(ipcss: int, ipcso: int, ipcse: int, tucss: int, tucso: int, tucse: int, tucmd: int,
             paylen: int = 0, hdrlen: int = 0, mss: int = 0) -> tuple[int, int, int]:
    """A context descriptor as the three little-endian words put_tx takes."""
    raw = struct.pack("<BBHBBHIBBH", ipcss, ipcso, ipcse, tucss, tucso, tucse,
                      paylen | (R.TXD_CMD_DEXT | R.TXD_CMD_RS | tucmd) << 24, 0, hdrlen, mss)
    return struct.unpack("<QII", raw)


def test_checksum_offload_tcp(rig: Rig) -> None:
    """Linux CHECKSUM_PARTIAL: the stack seeds the TCP checksum with the pseudo-header sum
    (length included), the IP checksum is left for IXSM to fill."""
    payload = bytes(range(256)) * 3 + b"odd"
    seg = bytearray(tcp(payload, csum=False))
    seed = (~inet_sum(pseudo(SRC, DST, 6, len(seg)))) & 0xFFFF
    seg[16:18] = struct.pack("!H", seed)
    ip = bytearray(ipv4(6, bytes(seg), csum=False))
    frame = eth(PEER, MAC, 0x0800, bytes(ip))
    rig.put_tx(*_context(14, 24, 33, 34, 50, 0, R.TXD_TUCMD_IP | R.TXD_TUCMD_TCP))
    rig.ram.write(TX_BUFS, frame)
    popts = R.TXD_POPTS_IXSM | R.TXD_POPTS_TXSM
    i = rig.put_tx(TX_BUFS, len(frame) | DTYP_D | (DATA | R.TXD_CMD_EOP) << 24, popts << 8)
    rig.tx_kick()
    assert rig.tx_status(0) & R.TXD_STAT_DD and rig.tx_status(i) & R.TXD_STAT_DD
    (out,) = rig.sent
    assert inet_sum(out[14:34]) == 0
    assert inet_sum(pseudo(SRC, DST, 6, len(seg)) + out[34:]) == 0
    assert out[54:] == payload
    assert out == eth(PEER, MAC, 0x0800, ipv4(6, tcp(payload)))


def test_checksum_offload_udp_over_several_descriptors(rig: Rig) -> None:
    payload = b"dns?" * 100
    seg = bytearray(udp(payload, csum=False))
    seg[6:8] = struct.pack("!H", (~inet_sum(pseudo(SRC, DST, 17, len(seg)))) & 0xFFFF)
    frame = eth(PEER, MAC, 0x0800, ipv4(17, bytes(seg)))
    rig.put_tx(*_context(0, 0, 0, 34, 40, 0, R.TXD_TUCMD_IP))
    rig.ram.write(TX_BUFS, frame[:42])
    rig.ram.write(TX_BUFS + 0x1000, frame[42:])
    popts = R.TXD_POPTS_TXSM
    rig.put_tx(TX_BUFS, 42 | DTYP_D | DATA << 24, popts << 8)
    rig.put_tx(TX_BUFS + 0x1000, (len(frame) - 42) | DTYP_D | (DATA | R.TXD_CMD_EOP) << 24, 0)
    rig.tx_kick()
    (out,) = rig.sent
    assert inet_sum(pseudo(SRC, DST, 17, len(seg)) + out[34:]) == 0
    assert out == eth(PEER, MAC, 0x0800, ipv4(17, udp(payload)))


def test_legacy_insert_checksum(rig: Rig) -> None:
    body = b"\x00\x00" + b"legacy checksum"
    frame = eth(PEER, MAC, 0x88B5, body)
    rig.ram.write(TX_BUFS, frame)
    cmd = R.TXD_CMD_EOP | R.TXD_CMD_RS | R.TXD_CMD_IC
    rig.put_tx(TX_BUFS, len(frame) | 14 << 16 | cmd << 24, 14 << 8)  # CSO 14, CSS 14
    rig.tx_kick()
    out = rig.sent[0]
    assert inet_sum(out[14 : len(frame)]) == 0


def tso_send(rig: Rig, payload: bytes, mss: int, *, flags: int = 0x19) -> bytes:
    """Linux's e1000_tso: tot_len and the IP checksum zeroed, TCP checksum seeded with the
    pseudo-header sum without length, one context and the data in 4 KiB pieces."""
    options = b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2)  # NOP NOP timestamps: 32-byte header
    th = bytearray(tcp(b"", seq=0xFFFF_F000, flags=flags, options=options, csum=False))
    th[16:18] = struct.pack("!H", (~inet_sum(pseudo(SRC, DST, 6, 0))) & 0xFFFF)
    ih = bytearray(ipv4(6, b"", ident=0xFFF0, total=0, csum=False))
    header = eth(PEER, MAC, 0x0800, bytes(ih) + bytes(th))
    hdrlen = len(header)
    assert hdrlen == 66
    rig.setup_tx(count=32)
    tucmd = R.TXD_TUCMD_IP | R.TXD_TUCMD_TCP | R.TXD_TUCMD_TSE
    rig.put_tx(*_context(14, 24, 33, 34, 50, 0, tucmd, len(payload), hdrlen, mss))
    rig.ram.write(TX_BUFS, header)
    popts = (R.TXD_POPTS_IXSM | R.TXD_POPTS_TXSM) << 8
    tse = R.TXD_CMD_TSE
    rig.put_tx(TX_BUFS, hdrlen | DTYP_D | (DATA | tse) << 24, popts)
    for off in range(0, len(payload), 4096):
        piece = payload[off : off + 4096]
        buf = TX_BUFS + 0x1000 + 2 * off
        rig.ram.write(buf, piece)
        eop = R.TXD_CMD_EOP if off + 4096 >= len(payload) else 0
        rig.put_tx(buf, len(piece) | DTYP_D | (DATA | tse | eop) << 24, popts)
    rig.tx_kick()
    return header


def test_tso_64k_mss_1448(rig: Rig) -> None:
    payload = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(65536))
    mss = 1448
    tso_send(rig, payload, mss)
    segs = rig.sent
    assert len(segs) == -(-len(payload) // mss) == 46
    got = b""
    for n, s in enumerate(segs):
        last = n == len(segs) - 1
        size = 66 + (len(payload) - mss * n if last else mss)
        assert len(s) == size
        ip = s[14:34]
        assert struct.unpack("!H", ip[2:4])[0] == size - 14  # total length
        assert struct.unpack("!H", ip[4:6])[0] == (0xFFF0 + n) & 0xFFFF  # id, wrapping
        assert inet_sum(ip) == 0
        th = s[34:66]
        assert struct.unpack("!I", th[4:8])[0] == (0xFFFF_F000 + n * mss) & 0xFFFF_FFFF
        flags = th[13]
        assert bool(flags & 0x01) == last and bool(flags & 0x08) == last  # FIN, PSH
        assert flags & 0x10  # ACK everywhere
        assert inet_sum(pseudo(SRC, DST, 6, size - 34) + s[34:]) == 0
        got += s[66:]
    assert got == payload
    assert rig.rd(R.TSCTC) == 1
    assert rig.rd(R.TPT) == 46 and rig.rd(R.GPTC) == 46
    assert all(rig.tx_status(i) & R.TXD_STAT_DD for i in range(18))


def test_tso_exact_multiple_and_tiny(rig: Rig) -> None:
    tso_send(rig, b"a" * 3000, 1000, flags=0x18)
    assert [len(s) - 66 for s in rig.sent] == [1000, 1000, 1000]
    assert [s[47] & 0x08 for s in rig.sent] == [0, 0, 8]
    rig.sent.clear()
    tso_send(rig, b"b" * 10, 1448)
    assert len(rig.sent) == 1 and len(rig.sent[0]) == 76


def test_tso_without_mss_fails_cleanly(rig: Rig) -> None:
    tso_send(rig, b"c" * 100, 0)
    assert rig.sent == []
    assert rig.rd(R.TSCTFC) == 1


def test_vlan_insertion(rig: Rig) -> None:
    frame = frame_n(3)
    rig.ram.write(TX_BUFS, frame)
    cmd = R.TXD_CMD_EOP | R.TXD_CMD_RS | R.TXD_CMD_VLE
    rig.put_tx(TX_BUFS, len(frame) | cmd << 24, 0x2064 << 16)
    rig.tx_kick()
    assert rig.sent[-1] == frame  # CTRL.VME off: no tag
    rig.setbits(R.CTRL, R.CTRL_VME)
    rig.put_tx(TX_BUFS, len(frame) | cmd << 24, 0x2064 << 16)
    rig.tx_kick()
    assert rig.sent[-1] == frame[:12] + b"\x81\x00\x20\x64" + frame[12:]


def test_buffer_outside_ram_completes_with_error(rig: Rig) -> None:
    bad = rig.put_tx(0xFFFF_0000_0000, 100 | (R.TXD_CMD_EOP | R.TXD_CMD_RS) << 24, 0)
    good = rig.tx_legacy(frame_n(9))
    rig.tx_kick()
    assert rig.tx_status(bad) & R.TXD_STAT_DD  # ended, not hung
    assert rig.tx_status(good) & R.TXD_STAT_DD
    assert rig.sent == [frame_n(9)]
    assert rig.nic.state.dma_errors == 1


def test_ring_outside_ram(rig: Rig) -> None:
    rig.wr(R.TDBAL, 0xFFFF_FF00)
    rig.wr(R.TDBAH, 0x7)
    rig.wr(R.TDT, 3)
    assert rig.rd(R.TDH) == 3
    assert rig.sent == []
    assert rig.nic.state.dma_errors == 3


def test_no_bus_master_no_dma(rig: Rig) -> None:
    rig.cfg_write(0x04, 2, 0x0003)
    rig.tx_legacy(frame_n(1))
    rig.tx_kick()
    assert rig.sent == []
    assert rig.nic.state.dma_errors >= 1


def test_mac_loopback(rig: Rig) -> None:
    rig.setup_rx(rctl=R.RCTL_EN | R.RCTL_SECRC | R.RCTL_LBM_MAC)
    frame = eth(MAC, MAC, 0x88B5, b"loop" * 20)
    rig.tx_legacy(frame)
    rig.tx_kick()
    assert rig.sent == []
    assert rig.rx_data(0) == frame
    assert rig.rx_desc(0)[3] & R.RXD_STAT_EOP
    assert rig.nic.receive(frame) is True  # taken and dropped: the wire is not listened to
    assert rig.rd(R.RDH) == 1


def test_tx_statistics(rig: Rig) -> None:
    rig.tx_legacy(eth(b"\xff" * 6, MAC, 0x0806, bytes(46)))
    rig.tx_legacy(eth(bytes.fromhex("01005e000001"), MAC, 0x0800, bytes(186)))
    rig.tx_legacy(frame_n(1, 1514))
    rig.tx_kick()
    assert rig.rd(R.TPT) == 3 and rig.rd(R.TPT) == 0
    assert rig.rd(R.GPTC) == 3
    assert rig.rd(R.BPTC) == 1 and rig.rd(R.MPTC) == 1
    assert rig.rd(R.PTC64) == 1 and rig.rd(R.PTC255) == 1 and rig.rd(R.PTC1522) == 1
    octets = 64 + 204 + 1518
    assert rig.rd(R.GOTCL) == octets
    assert rig.rd(R.GOTCH) == 0
    assert rig.rd(R.GOTCL) == 0  # reading the high half cleared both
    assert rig.rd(R.TOTL) == octets


def test_tso_ipv6(rig: Rig) -> None:
    src6 = bytes.fromhex("fd000000000000000000000000000001")
    dst6 = bytes.fromhex("fd000000000000000000000000000002")
    th = bytearray(tcp(b"", seq=7, flags=0x18, csum=False))
    ph0 = src6 + dst6 + struct.pack("!IxxxB", 0, 6)  # IPv6 pseudo header, length 0
    th[16:18] = struct.pack("!H", (~inet_sum(ph0)) & 0xFFFF)
    ip6 = struct.pack("!IHBB16s16s", 0x6000_0000, 0, 6, 64, src6, dst6)
    header = eth(PEER, MAC, 0x86DD, ip6 + bytes(th))
    payload = bytes(range(256)) * 10
    rig.setup_tx(count=8)
    rig.put_tx(*_context(14, 0, 0, 54, 70, 0, R.TXD_TUCMD_TCP | R.TXD_TUCMD_TSE, len(payload),
                         len(header), 1000))
    rig.ram.write(TX_BUFS, header + payload)
    popts = R.TXD_POPTS_TXSM << 8
    rig.put_tx(TX_BUFS, (len(header) + len(payload)) | DTYP_D | (DATA | R.TXD_CMD_TSE | R.TXD_CMD_EOP) << 24,
               popts)
    rig.tx_kick()
    assert [len(s) - 74 for s in rig.sent] == [1000, 1000, 560]
    for n, s in enumerate(rig.sent):
        plen = struct.unpack("!H", s[18:20])[0]
        assert plen == len(s) - 54
        assert struct.unpack("!I", s[58:62])[0] == 7 + 1000 * n
        ph = src6 + dst6 + struct.pack("!IxxxB", plen, 6)
        assert inet_sum(ph + s[54:]) == 0


def test_empty_packet_sends_nothing(rig: Rig) -> None:
    i = rig.put_tx(TX_BUFS, (R.TXD_CMD_EOP | R.TXD_CMD_RS) << 24, 0)
    rig.tx_legacy(frame_n(2))
    rig.tx_kick()
    assert rig.tx_status(i) & R.TXD_STAT_DD
    assert rig.sent == [frame_n(2)]
