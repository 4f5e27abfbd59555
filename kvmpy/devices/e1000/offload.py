"""Checksums and TCP segmentation the way the 82540 does them for the driver.

**Checksums.** The Internet checksum is the ones'-complement sum of big-endian 16-bit words.
Reading the bytes as one big-endian integer N, that sum is N mod 0xFFFF (65536 is 1 modulo
65535), so ``int.from_bytes`` plus one modulo computes it in C at memory speed — the per-frame
cost that matters in Python. A result of 0 stands for both ones'-complement zeros; the
checksum written is then 0xFFFF, which is what hardware (and QEMU's
``net_checksum_finish_nozero``) sends, and a valid packet sums to zero.

**TX insertion** (SDM 3.3.5, 3.3.6): a context descriptor gives, for the IP and the TCP/UDP
checksum, where summing starts (CSS), where the result goes (CSO) and the last byte included
(CSE, 0 = end of packet). The device sums exactly those bytes — including whatever the driver
left in the checksum field, which for TCP/UDP is the pseudo-header sum the stack seeds it with
— and stores the complement. **TSO** (SDM 3.5): the first HDRLEN bytes are the prototype
header, the rest is cut into MSS-sized payloads; each frame gets the header with the IPv4
total length (or IPv6 payload length) for its size, the IPv4 id plus the frame's index, the
TCP sequence number advanced by the bytes before it, FIN and PSH only on the last frame, and
its TCP/UDP length added into the pseudo-header seed (the driver seeds it without the length,
as Linux's ``e1000_tso`` does) before both checksums are recomputed.

**RX status** (SDM 3.2.3, 13.4.26): with RXCSUM.IPOFL the IPv4 header checksum is checked
(IPCS, error IPE); with TUOFL the TCP or UDP checksum of an unfragmented IPv4 packet (TCPCS,
error TCPE); UDP with checksum 0 has none. IXSM ("ignore checksum indication") is set when
neither offload is on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from . import regs as R

ETH_HLEN = 14
ETH_ALEN = 6
ETHERTYPE_IPV4 = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN = 0x01
TCP_PSH = 0x08
IPV6_HLEN = 40

_CONTEXT = struct.Struct("<BBHBBHIBBH")


def sum16(data: bytes | bytearray | memoryview) -> int:
    """The ones'-complement sum of ``data`` as 16-bit big-endian words, modulo 0xFFFF
    (0 stands for both zeros); an odd length is padded with a zero byte."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % 0xFFFF


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of ``data`` (never 0: a zero result is sent as 0xFFFF)."""
    return 0xFFFF - sum16(data)


@dataclass(frozen=True)
class TxContext:
    """A TX context descriptor (SDM 3.3.6): offload parameters for the packets after it."""

    ipcss: int = 0
    ipcso: int = 0
    ipcse: int = 0
    tucss: int = 0
    tucso: int = 0
    tucse: int = 0
    paylen: int = 0
    tucmd: int = 0
    hdrlen: int = 0
    mss: int = 0

    @classmethod
    def parse(cls, raw: bytes) -> TxContext:
        ipcss, ipcso, ipcse, tucss, tucso, tucse, cmd_len, _sta, hdrlen, mss = _CONTEXT.unpack(raw)
        return cls(ipcss, ipcso, ipcse, tucss, tucso, tucse, cmd_len & 0xFFFFF, cmd_len >> 24, hdrlen, mss)

    @property
    def tse(self) -> bool:
        return bool(self.tucmd & R.TXD_TUCMD_TSE)


def insert_checksum(buf: bytearray, css: int, cso: int, cse: int) -> None:
    """Sum ``buf[css..cse]`` (to the end when ``cse`` is 0) and store the checksum at ``cso``;
    offsets outside the packet leave it unchanged (QEMU's ``putsum``)."""
    end = len(buf)
    if cse and cse < end:
        end = cse + 1
    if cso + 2 > end or css >= end:
        return
    c = 0xFFFF - sum16(memoryview(buf)[css:end])
    buf[cso] = c >> 8
    buf[cso + 1] = c & 0xFF


def add_to_field(buf: bytearray, at: int, value: int) -> None:
    """Ones'-complement add ``value`` to the 16-bit field at ``at`` (the pseudo-header seed)."""
    if at + 2 > len(buf):
        return
    v = (buf[at] << 8 | buf[at + 1]) + value
    v = (v & 0xFFFF) + (v >> 16)
    v = (v & 0xFFFF) + (v >> 16)
    buf[at] = v >> 8
    buf[at + 1] = v & 0xFF


def apply_checksums(buf: bytearray, ctx: TxContext, popts: int) -> None:
    """The checksums a data descriptor's POPTS asks for, with the context's offsets."""
    if popts & R.TXD_POPTS_TXSM:
        insert_checksum(buf, ctx.tucss, ctx.tucso, ctx.tucse)
    if popts & R.TXD_POPTS_IXSM:
        insert_checksum(buf, ctx.ipcss, ctx.ipcso, ctx.ipcse)


def _put16(buf: bytearray, at: int, value: int) -> None:
    if at + 2 <= len(buf):
        buf[at] = (value >> 8) & 0xFF
        buf[at + 1] = value & 0xFF


def _get16(buf: bytes, at: int) -> int:
    return buf[at] << 8 | buf[at + 1] if at + 2 <= len(buf) else 0


def segment(packet: bytes, ctx: TxContext, popts: int) -> Iterator[bytearray]:
    """TCP (or UDP) segmentation of ``packet`` per the TSO context; see the module docstring.

    Yields nothing when the context cannot describe the packet (no MSS, header longer than
    the packet), which the caller counts as a failed segmentation context."""
    hdrlen, mss = ctx.hdrlen, ctx.mss
    if mss == 0 or hdrlen == 0 or hdrlen > len(packet):
        return
    header = packet[:hdrlen]
    payload = memoryview(packet)[hdrlen:]
    total = len(payload)
    ipv4 = bool(ctx.tucmd & R.TXD_TUCMD_IP)
    tcp = bool(ctx.tucmd & R.TXD_TUCMD_TCP)
    ipcss, tucss = ctx.ipcss, ctx.tucss
    ip_id = _get16(header, ipcss + 4) if ipv4 else 0
    seq = int.from_bytes(header[tucss + 4 : tucss + 8], "big") if tcp and tucss + 8 <= hdrlen else 0
    flags_at = tucss + 13 if tcp and tucss + 14 <= hdrlen else -1
    txsm = popts & R.TXD_POPTS_TXSM
    ixsm = popts & R.TXD_POPTS_IXSM
    off = 0
    index = 0
    while True:
        chunk = payload[off : off + mss]
        last = off + mss >= total
        seg = bytearray(header)
        seg += chunk
        size = len(seg)
        if ipv4:
            if ipcss + 4 <= hdrlen:
                _put16(seg, ipcss + 2, size - ipcss)
            if ipcss + 6 <= hdrlen:
                _put16(seg, ipcss + 4, ip_id + index)
        elif ipcss + 6 <= hdrlen:
            _put16(seg, ipcss + 4, size - ipcss - IPV6_HLEN)
        l4len = size - tucss
        if tcp:
            if flags_at >= 0:
                seg[tucss + 4 : tucss + 8] = ((seq + off) & 0xFFFF_FFFF).to_bytes(4, "big")
                if not last:
                    seg[flags_at] &= ~(TCP_FIN | TCP_PSH) & 0xFF
        elif tucss + 6 <= hdrlen:
            _put16(seg, tucss + 4, l4len)
        if txsm:
            add_to_field(seg, ctx.tucso, l4len)
            insert_checksum(seg, tucss, ctx.tucso, ctx.tucse)
        if ixsm:
            insert_checksum(seg, ipcss, ctx.ipcso, ctx.ipcse)
        yield seg
        if last:
            return
        off += mss
        index += 1


def _raw(data: bytes | memoryview) -> int:
    """The bytes as one big-endian integer, odd lengths padded: summed modulo 0xFFFF later."""
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


def rx_checksum(frame: bytes, rxcsum: int, vet: int) -> tuple[int, int, int]:
    """(status bits, error bits, packet checksum) for a received frame's last descriptor; see
    the module docstring. ``frame`` is what goes into the buffers (VLAN tag stripped, FCS
    included unless RCTL.SECRC). The packet checksum (SDM 3.2.3: the ones'-complement sum from
    RXCSUM.PCSS to the end, FCS included when it is kept) is put together from the pieces the
    TCP/UDP check sums anyway when their alignment allows, so a frame is read once, not twice."""
    n = len(frame)
    pcss = rxcsum & R.RXCSUM_PCSS_MASK
    if not rxcsum & (R.RXCSUM_IPOFL | R.RXCSUM_TUOFL):
        return R.RXD_STAT_IXSM, 0, _packet_sum(frame, pcss)
    if n < ETH_HLEN + 20:
        return 0, 0, _packet_sum(frame, pcss)
    etype = frame[12] << 8 | frame[13]
    ip = ETH_HLEN
    if etype == vet and n >= ETH_HLEN + 4 + 20:
        etype = frame[16] << 8 | frame[17]
        ip += 4
    vihl = frame[ip]
    ihl = (vihl & 0x0F) * 4
    if etype != ETHERTYPE_IPV4 or vihl >> 4 != 4 or ihl < 20 or ip + ihl > n:
        return 0, 0, _packet_sum(frame, pcss)
    status = errors = 0
    if rxcsum & R.RXCSUM_IPOFL:
        status |= R.RXD_STAT_IPCS
        if sum16(frame[ip : ip + ihl]):
            errors |= R.RXD_ERR_IPE
    if rxcsum & R.RXCSUM_TUOFL:
        proto = frame[ip + 9]
        total = frame[ip + 2] << 8 | frame[ip + 3]
        fragment = (frame[ip + 6] << 8 | frame[ip + 7]) & 0x3FFF
        l4 = ip + ihl
        end = ip + total
        l4len = end - l4
        if (
            not fragment
            and total >= ihl
            and end <= n
            and (
                (proto == IPPROTO_TCP and l4len >= 20)
                or (proto == IPPROTO_UDP and l4len >= 8 and (frame[l4 + 6] or frame[l4 + 7]))
            )
        ):
            view = memoryview(frame)
            segment = _raw(view[l4:end]) % 0xFFFF  # the one long sum
            # pseudo header: addresses, protocol, length
            pseudo = int.from_bytes(frame[ip + 12 : ip + 20], "big") + proto + l4len
            status |= R.RXD_STAT_TCPCS
            if (pseudo + segment) % 0xFFFF:
                errors |= R.RXD_ERR_TCPE
            if pcss <= l4 and not (l4 - pcss) & 1 and not l4len & 1:
                packet = _raw(view[pcss:l4]) + segment + _raw(view[end:])
                return status, errors, packet % 0xFFFF
    return status, errors, _packet_sum(frame, pcss)


def _packet_sum(frame: bytes, pcss: int) -> int:
    return sum16(memoryview(frame)[pcss:]) if pcss < len(frame) else 0
