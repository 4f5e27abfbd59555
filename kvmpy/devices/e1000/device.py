"""The Intel 82540EM gigabit NIC (8086:100E rev 3, "PRO/1000 MT Desktop") as a PCI function,
as Linux's ``e1000``, iPXE's ``intel`` and Windows' inbox driver use it.

**Shape.** BAR0 is the 128 KiB register window, BAR1 the 64-byte I/O window with IOADDR (0)
and IODATA (4) for indirect register access, the expansion ROM (iPXE) is optional, and the
interrupt is INTA# or, once the guest enables it, an MSI (the real 82540EM has no MSI
capability; our guest programs use it, and a driver that does not look for it never sees a
difference). Registers are declared in ``regs.REGISTERS``; the few with side effects name a
method here (``_write_tdt`` and friends).

**Host side.** ``transmit(frame)`` gets every frame the guest sends (no FCS), on the vCPU
thread under the machine lock; it must not block (queue or drop). ``receive(frame)`` is called
by the backend on the I/O thread under the same lock. The receive contract:

* ``can_receive()`` says whether a frame would find a home now (receiver enabled, link up,
  bus mastering on, at least one free descriptor). A backend may read from its socket/TAP only
  while it is true, or just offer frames and hold the ones ``receive`` refuses (kvmpy.net's
  backends do that); either way frames wait in the host, not in the guest's lost counters.
* ``on_rx_space()`` (a constructor argument) is called when that may have become true again
  (the guest advanced RDT, enabled the receiver or bus mastering, or the link came up). It runs
  under the lock on the vCPU thread and may call ``receive`` directly or wake the I/O thread.
* ``receive(frame)`` returns True when the device is done with the frame: delivered, or
  dropped the way hardware drops (address/VLAN filter, receiver off, oversized, a DMA fault,
  loopback mode, a frame larger than the whole ring, which counts as missed (MPC) and raises
  RXO). It returns False when the ring has too few free descriptors *now*: nothing was
  delivered or lost, RNBC ("no buffers") counts it, and the backend keeps the frame and offers
  it again after the next ``on_rx_space`` — the packet-buffer FIFO of the real part, without
  its size limit. So the guest sees lossless back-pressure, as with QEMU's ``can_receive``;
  frames only go missed (MPC, RXO) in loopback, where nobody can hold them. Nothing here
  ever blocks.

**Interrupts and ITR.** ICR collects causes; the output is high while ``ICR & IMS`` is non-zero
(a level for INTx; each rising edge is one MSI). ITR (256 ns units) sets the minimum interval
between two assertions: a cause that arrives sooner waits — it is delayed, never lost — until
the interval has passed. The device has no thread, so the wait ends at the first of: any
register access or received frame after the deadline, or ``tick()``, which the machine's I/O
thread calls; it returns the seconds until the delayed interrupt is due (None when none is
waiting), and ``on_timer()`` (a constructor argument) is called whenever a new wait starts so
the I/O thread can shorten its sleep. RDTR/RADV/TIDV/TADV are stored, and their interrupts fire
at once: ITR alone moderates, which is what Linux's dynamic ITR tunes anyway. The clock is
injectable (``clock() -> nanoseconds``) for tests.

**DMA.** Every descriptor and buffer access goes through ``self.dma`` (refused while bus
mastering is off). A fault never escapes: a TX descriptor whose buffer cannot be read still
completes (DD written back when asked) and its packet is dropped; an RX frame whose buffer
cannot be written ends its descriptor with RXE (drivers drop such frames) and counts as
missed; a descriptor that cannot even be read is counted and skipped. ``state.dma_errors``
counts them for the host.

**Loopback.** RCTL.LBM = 01 (MAC loopback) or the PHY's loopback bit sends transmitted frames
to this device's own receive path instead of the backend; the wire is not listened to then.

**Reset.** ``reset()`` is the PCI reset (configuration space too); CTRL.RST resets everything
but the configuration space and the PHY. RAL0/RAH0 are loaded from the EEPROM's MAC after
either, and CTRL_EXT.EE_RST reloads them.
"""

from __future__ import annotations

import copy
import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from ...errors import DmaFault
from ..pci.config import CMD_MASTER, COMMAND, BarKind, PciConfig
from ..pci.function import PciFunction, PciFunctionState
from . import eeprom as ee
from . import offload
from . import phy as P
from . import regs as R
from .offload import TxContext

log = logging.getLogger("kvmpy.devices.e1000")

VENDOR_ID = 0x8086
DEVICE_ID = 0x100E
REVISION = 0x03
CLASS_ETHERNET = 0x0200
#: Intel PRO/1000 MT Desktop Adapter, the board the 82540EM ships on.
SUBSYSTEM_VENDOR_ID = 0x8086
SUBSYSTEM_ID = 0x001E

MMIO_ACCESS_SIZES = (1, 2, 4, 8)
IO_ACCESS_SIZES = (1, 2, 4)
IOADDR_MASK = 0x0001_FFFF

ETH_ZLEN = 60  # shortest frame without FCS
ETH_FCS_LEN = 4
#: Longest frame without FCS: 1518 (VLAN-tagged 1500-byte payload) unless RCTL.LPE, then the
#: 16 KiB the packet buffer holds (QEMU's e1000x_is_oversized).
MAX_STD_FRAME = 1518
MAX_LONG_FRAME = 16384 - ETH_FCS_LEN
#: What the TX side gathers for one packet before giving up on it: a 64 KiB frame, or a TSO
#: header plus 64 KiB of payload — what Linux (GSO_MAX_SIZE) and Windows (LSOv1) send, and a
#: bound on how long one TDT write can keep the machine lock.
MAX_TX_PACKET = 0x1_0000
MAX_TSO_PACKET = 0x1_0000 + 0x100
BROADCAST = b"\xff" * 6

ITR_UNIT_NS = 256

# register indexes used on hot paths
_CTRL = R.CTRL >> 2
_STATUS = R.STATUS >> 2
_EECD = R.EECD >> 2
_EERD = R.EERD >> 2
_CTRL_EXT = R.CTRL_EXT >> 2
_MDIC = R.MDIC >> 2
_VET = R.VET >> 2
_ICR = R.ICR >> 2
_ITR = R.ITR >> 2
_IMS = R.IMS >> 2
_RCTL = R.RCTL >> 2
_TCTL = R.TCTL >> 2
_RDBAL = R.RDBAL >> 2
_RDBAH = R.RDBAH >> 2
_RDLEN = R.RDLEN >> 2
_RDH = R.RDH >> 2
_RDT = R.RDT >> 2
_TDBAL = R.TDBAL >> 2
_TDBAH = R.TDBAH >> 2
_TDLEN = R.TDLEN >> 2
_TDH = R.TDH >> 2
_TDT = R.TDT >> 2
_RXCSUM = R.RXCSUM >> 2
_MTA = R.MTA >> 2
_RA = R.RA >> 2
_VFTA = R.VFTA >> 2
_RA_LAST = _RA + 2 * R.RA_COUNT - 1

# descriptor layouts (SDM 3.2.3, 3.3.3): precompiled, the per-frame work
_TXD = struct.Struct("<QII")  # buffer address, length/cso/cmd (or DTALEN/DTYP/DCMD), upper dword
_RXD_ADDR = struct.Struct("<Q")
_RXD_WB = struct.Struct("<HHBBH")  # length, packet checksum, status, errors, special
_VLAN_TAG = struct.Struct(">HH")


def parse_mac(text: str) -> bytes:
    """``52:54:00:12:34:56`` (or with dashes) as 6 bytes; ValueError that says what is wrong,
    including for multicast and all-zero addresses, which a NIC cannot own."""
    parts = text.strip().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"bad MAC address {text!r}: expected six hex bytes like 52:54:00:12:34:56")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}: not hexadecimal") from None
    check_mac(mac)
    return mac


def check_mac(mac: bytes) -> None:
    """Refuse what cannot be a station address."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
    if mac[0] & 1:
        raise ValueError(f"MAC address {mac.hex(':')} is a multicast address")
    if not any(mac):
        raise ValueError("MAC address 00:00:00:00:00:00 is not valid")


def mac_for_index(index: int) -> bytes:
    """The n-th default address, QEMU's series 52:54:00:12:34:56, :57, ..."""
    return bytes((0x52, 0x54, 0x00, 0x12, 0x34, (0x56 + index) & 0xFF))


@dataclass
class NicState:
    """Everything guest-visible except the configuration space: registers, PHY, EEPROM and
    its bit-banging state, the TX packet being gathered with its two offload contexts (TSO and
    plain checksum contexts are separate, as the hardware keeps them), the interrupt
    throttling clock, and the cable."""

    regs: list[int] = field(default_factory=R.reset_image)
    phy: list[int] = field(default_factory=P.reset_registers)
    eeprom: list[int] = field(default_factory=lambda: [0xFFFF] * ee.WORDS)
    microwire: ee.MicrowireState = field(default_factory=ee.MicrowireState)
    ioaddr: int = 0
    link_up: bool = True
    tx_data: bytearray = field(default_factory=bytearray)
    tx_started: bool = False  # descriptors of a packet have been taken, EOP not yet
    tx_popts: int = 0
    tx_tse: bool = False
    tx_legacy_csum: tuple[int, int] | None = None  # (CSS, CSO) of a legacy IC packet
    tx_error: bool = False  # part of this packet was lost: it is dropped at EOP
    tx_ctx: TxContext = field(default_factory=TxContext)
    tso_ctx: TxContext = field(default_factory=TxContext)
    irq_delayed: bool = False
    last_irq_ns: int | None = None
    dma_errors: int = 0

    def reset(self) -> None:
        """Device reset: registers and TX state to their reset values, RAL0/RAH0 from the
        EEPROM. The EEPROM, the PHY and the cable are not part of the MAC's reset."""
        self.regs = R.reset_image()
        self.regs[_STATUS] = R.STATUS_LINK_UP if self.link_up else R.STATUS_LINK_UP & ~R.STATUS_LU
        self.microwire = ee.MicrowireState()
        self.ioaddr = 0
        self.tx_data = bytearray()
        self.tx_started = False
        self.tx_popts = 0
        self.tx_tse = False
        self.tx_legacy_csum = None
        self.tx_error = False
        self.tx_ctx = TxContext()
        self.tso_ctx = TxContext()
        self.irq_delayed = False
        self.last_irq_ns = None
        self.load_mac()

    def load_mac(self) -> None:
        """The EEPROM auto-read: RAL0/RAH0 hold the EEPROM's MAC, marked valid."""
        mac = ee.image_mac(self.eeprom)
        self.regs[_RA] = int.from_bytes(mac[:4], "little")
        self.regs[_RA + 1] = R.RAH_AV | int.from_bytes(mac[4:], "little")

    def snapshot(self) -> NicState:
        return copy.deepcopy(self)

    def restore(self, snap: NicState) -> None:
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(getattr(snap, f.name)))


@dataclass
class E1000Snapshot(PciFunctionState):
    """The configuration space plus the NIC's own state."""

    nic: NicState | None = None

    def restore(self, snap: PciFunctionState) -> None:
        super().restore(snap)
        if isinstance(snap, E1000Snapshot):
            self.nic = snap.nic


class E1000Mmio:
    """BAR0: the register window."""

    SIZES = MMIO_ACCESS_SIZES

    def __init__(self, nic: E1000) -> None:
        self.nic = nic

    def read(self, offset: int, size: int) -> int:
        return self.nic.mmio_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.nic.mmio_write(offset, size, value)


class E1000Io:
    """BAR1: IOADDR/IODATA, the indirect way to the same registers (SDM 13.2.1)."""

    SIZES = IO_ACCESS_SIZES

    def __init__(self, nic: E1000) -> None:
        self.nic = nic

    def read(self, offset: int, size: int) -> int:
        return self.nic.io_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.nic.io_write(offset, size, value)


class E1000(PciFunction):
    """The 82540EM; see the module docstring for the contract with the machine."""

    def __init__(
        self,
        mac: bytes | str,
        transmit: Callable[[bytes], None] | None = None,
        *,
        rom: bytes | None = None,
        clock: Callable[[], int] | None = None,
        on_rx_space: Callable[[], None] | None = None,
        on_timer: Callable[[], None] | None = None,
        name: str = "e1000",
    ) -> None:
        """``mac``: the station address (bytes or text). ``transmit(frame)``: where sent
        frames go (None drops them). ``rom``: an option ROM image (iPXE's efi-e1000.rom or
        pxe-e1000.rom) for the expansion ROM BAR. ``clock()``: monotonic nanoseconds for
        interrupt throttling. ``on_rx_space``/``on_timer``: see the module docstring."""
        mac_bytes = parse_mac(mac) if isinstance(mac, str) else bytes(mac)
        check_mac(mac_bytes)
        cfg = PciConfig(
            VENDOR_ID,
            DEVICE_ID,
            CLASS_ETHERNET,
            revision=REVISION,
            subsystem_vendor_id=SUBSYSTEM_VENDOR_ID,
            subsystem_id=SUBSYSTEM_ID,
            interrupt_pin=1,
        )
        self.mmio_window = E1000Mmio(self)
        self.io_window = E1000Io(self)
        cfg.add_bar(0, BarKind.MEM32, R.MMIO_SIZE, self.mmio_window, name="mmio", sizes=MMIO_ACCESS_SIZES)
        cfg.add_bar(1, BarKind.IO, R.IO_SIZE, self.io_window, name="io", sizes=IO_ACCESS_SIZES)
        if rom:
            cfg.set_rom(rom, name="rom")
        super().__init__(cfg, name)
        self.add_msi(vectors=1, addr64=True)
        cfg.on_write(COMMAND, 2, self._command_changed)
        self.transmit = transmit
        self.clock = clock or time.monotonic_ns
        self.on_rx_space = on_rx_space
        self.on_timer = on_timer
        self.state = NicState()
        self.state.eeprom = ee.build_image(
            mac_bytes,
            vendor_id=VENDOR_ID,
            device_id=DEVICE_ID,
            subsystem_vendor_id=SUBSYSTEM_VENDOR_ID,
            subsystem_id=SUBSYSTEM_ID,
        )
        self.state.reset()
        self._tx_busy = False
        self._ra_cache: frozenset[bytes] | None = None
        self._rx_buf_size = 2048
        self._read_ops: dict[int, Callable[[int], int]] = {}
        self._write_ops: dict[int, Callable[[int, int], None]] = {}
        self._wmask: dict[int, int] = {}
        self._build_dispatch()
        self._derive()

    @property
    def mac(self) -> bytes:
        """The station address the EEPROM holds (what the NIC was made with)."""
        return ee.image_mac(self.state.eeprom)

    # -- register dispatch, built from the table -------------------------------------------------
    def _build_dispatch(self) -> None:
        generic_reads = {
            R.Kind.RW: self._rd_plain,
            R.Kind.RO: self._rd_plain,
            R.Kind.WO: self._rd_zero,
            R.Kind.RC: self._rd_clear,
            R.Kind.RC_HI: self._rd_clear_hi,
        }
        for idx, reg in R.REGISTERS.items():
            self._wmask[idx] = reg.wmask
            self._read_ops[idx] = getattr(self, reg.on_read) if reg.on_read else generic_reads[reg.kind]
            if reg.on_write:
                self._write_ops[idx] = getattr(self, reg.on_write)
            elif reg.kind in (R.Kind.RO, R.Kind.RC, R.Kind.RC_HI):
                self._write_ops[idx] = self._wr_ignore
            elif _RA <= idx <= _RA_LAST:
                self._write_ops[idx] = self._write_ra
            else:
                self._write_ops[idx] = self._wr_plain

    def _rd_plain(self, idx: int) -> int:
        return self.state.regs[idx]

    def _rd_zero(self, idx: int) -> int:
        return 0

    def _rd_clear(self, idx: int) -> int:
        regs = self.state.regs
        v = regs[idx]
        regs[idx] = 0
        return v

    def _rd_clear_hi(self, idx: int) -> int:
        regs = self.state.regs
        v = regs[idx]
        regs[idx] = regs[idx - 1] = 0
        return v

    def _wr_plain(self, idx: int, value: int) -> None:
        regs = self.state.regs
        m = self._wmask[idx]
        regs[idx] = (regs[idx] & ~m) | (value & m)

    def _wr_ignore(self, idx: int, value: int) -> None:
        pass

    def reg_read(self, offset: int) -> int:
        """A dword register read with its side effects (what the guest's ``readl`` does)."""
        op = self._read_ops.get(offset >> 2)
        if op is None:
            self._warn_once(f"r{offset:#x}", "%s: read of unknown register %#x (reads 0)", self.name, offset)
            value = 0
        else:
            value = op(offset >> 2)
        self._poll_delayed_irq()
        return value

    def reg_write(self, offset: int, value: int) -> None:
        """A dword register write with its side effects."""
        op = self._write_ops.get(offset >> 2)
        if op is None:
            self._warn_once(f"w{offset:#x}", "%s: write %#x to unknown register %#x ignored",
                            self.name, value, offset)
        else:
            op(offset >> 2, value & 0xFFFF_FFFF)
        self._poll_delayed_irq()

    # -- BAR0 and BAR1 ----------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        if size == 4 and not offset & 3:
            return self.reg_read(offset)
        result = done = 0
        while done < size:  # byte lanes of one or two dwords; side effects apply per dword
            off = offset + done
            lane = off & 3
            n = min(4 - lane, size - done)
            v = (self.reg_read(off & ~3) >> (8 * lane)) & ((1 << (8 * n)) - 1)
            result |= v << (8 * done)
            done += n
        return result

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size == 4 and not offset & 3:
            self.reg_write(offset, value)
            return
        done = 0
        while done < size:
            off = offset + done
            lane = off & 3
            n = min(4 - lane, size - done)
            mask = ((1 << (8 * n)) - 1) << (8 * lane)
            part = ((value >> (8 * done)) << (8 * lane)) & mask
            if n < 4:
                reg = R.REGISTERS.get(off >> 2)
                # untouched lanes keep the stored value, except in command registers
                base = 0 if reg is None or reg.action else self.state.regs[off >> 2]
                part |= base & ~mask
            self.reg_write(off & ~3, part)
            done += n

    def io_read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if offset + size <= 4:
            return (self.state.ioaddr >> (8 * offset)) & mask
        if 4 <= offset and offset + size <= 8:
            return self.mmio_read((self.state.ioaddr & ~3 & IOADDR_MASK) + offset - 4, size)
        return 0  # reserved (SDM: undefined); nothing to see

    def io_write(self, offset: int, size: int, value: int) -> None:
        st = self.state
        if offset + size <= 4:
            mask = ((1 << (8 * size)) - 1) << (8 * offset)
            st.ioaddr = ((st.ioaddr & ~mask) | ((value << (8 * offset)) & mask)) & IOADDR_MASK
        elif 4 <= offset and offset + size <= 8:
            self.mmio_write((st.ioaddr & ~3 & IOADDR_MASK) + offset - 4, size, value)

    # -- registers with side effects ---------------------------------------------------------------
    def _write_ctrl(self, idx: int, value: int) -> None:
        if value & R.CTRL_RST:
            # software reset (SDM 13.4.1): the whole MAC, not the PCI configuration nor the
            # PHY; RST reads back 0 at once (no delay to emulate)
            self._device_reset()
            if value & R.CTRL_PHY_RST:
                self._phy_reset()
            return
        regs = self.state.regs
        old = regs[_CTRL]
        regs[_CTRL] = value
        if value & R.CTRL_PHY_RST and not old & R.CTRL_PHY_RST:
            self._phy_reset()

    def _write_ctrl_ext(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value & ~R.CTRL_EXT_EE_RST
        if value & R.CTRL_EXT_EE_RST:
            self.state.load_mac()  # re-read the EEPROM: what Linux's e1000_reset_hw relies on
            self._ra_cache = None

    def _read_eecd(self, idx: int) -> int:
        return ee.eecd_read(self.state.microwire, self.state.eeprom)

    def _write_eecd(self, idx: int, value: int) -> None:
        st = self.state
        st.regs[idx] = value & R.EECD_WRITABLE
        ee.eecd_write(st.microwire, value)

    def _write_eerd(self, idx: int, value: int) -> None:
        regs = self.state.regs
        if not value & R.EERD_START:
            regs[idx] = (regs[idx] & ~R.EERD_ADDR_MASK) | (value & R.EERD_ADDR_MASK)
            return
        addr = (value & R.EERD_ADDR_MASK) >> R.EERD_ADDR_SHIFT
        words = self.state.eeprom
        data = words[addr] if addr < len(words) else 0
        # the read completes at once: START clears itself, DONE and DATA appear
        regs[idx] = data << R.EERD_DATA_SHIFT | addr << R.EERD_ADDR_SHIFT | R.EERD_DONE

    def _write_mdic(self, idx: int, value: int) -> None:
        st = self.state
        reg = (value & R.MDIC_REG_MASK) >> R.MDIC_REG_SHIFT
        phy_addr = (value & R.MDIC_PHY_MASK) >> R.MDIC_PHY_SHIFT
        result = value & ~(R.MDIC_READY | R.MDIC_ERROR)
        if phy_addr != R.PHY_ADDRESS:
            result |= R.MDIC_ERROR  # nobody answers at that MDIO address
        elif value & R.MDIC_OP_READ:
            if reg in P.READABLE:
                result = (result & ~R.MDIC_DATA_MASK) | st.phy[reg]
            else:
                result |= R.MDIC_ERROR
        elif value & R.MDIC_OP_WRITE:
            if reg in P.WRITABLE:
                P.write(st.phy, reg, value & R.MDIC_DATA_MASK)
            else:
                result |= R.MDIC_ERROR
        # the MDIO transaction completes before the guest can look
        st.regs[idx] = result | R.MDIC_READY
        if value & R.MDIC_INT_EN:
            self._raise(R.ICR_MDAC)

    def _read_icr(self, idx: int) -> int:
        regs = self.state.regs
        value = regs[_ICR]
        if value:
            regs[_ICR] = 0
            self._update_irq()
        return value

    def _read_ics(self, idx: int) -> int:
        # write-only in the SDM; real parts read ICR's value without clearing it (QEMU notes
        # VxWorks relies on that)
        return self.state.regs[_ICR]

    def _write_icr(self, idx: int, value: int) -> None:
        self.state.regs[_ICR] &= ~value
        self._update_irq()

    def _write_ics(self, idx: int, value: int) -> None:
        self._raise(value & R.ICR_VALID)

    def _write_ims(self, idx: int, value: int) -> None:
        self.state.regs[_IMS] |= value & R.ICR_VALID
        self._update_irq()

    def _write_imc(self, idx: int, value: int) -> None:
        self.state.regs[_IMS] &= ~value
        self._update_irq()

    def _write_itr(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value & 0xFFFF
        self._update_irq()

    def _write_rctl(self, idx: int, value: int) -> None:
        regs = self.state.regs
        old = regs[idx]
        self._wr_plain(idx, value)
        self._derive()
        if regs[idx] & R.RCTL_EN and not old & R.RCTL_EN:
            self._rx_space()

    def _write_rdt(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value & 0xFFFF
        self._rx_space()

    def _write_ra(self, idx: int, value: int) -> None:
        self._wr_plain(idx, value)
        self._ra_cache = None

    def _write_tctl(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value
        self._process_tx()

    def _write_tdh(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value & 0xFFFF
        self._tx_discard()  # the ring is being set up again: no packet is half gathered

    def _write_tdt(self, idx: int, value: int) -> None:
        self.state.regs[idx] = value & 0xFFFF
        self._process_tx()

    def _command_changed(self, offset: int, size: int, value: int) -> None:
        if self.config.command & CMD_MASTER:
            self._rx_space()

    def _device_reset(self) -> None:
        self.state.reset()
        self._tx_busy = False
        self._derive()
        self._update_irq()

    def _phy_reset(self) -> None:
        self.state.phy = P.reset_registers(self.state.link_up)

    def _derive(self) -> None:
        """Recompute what is cached from registers (after RCTL writes, reset, restore)."""
        rctl = self.state.regs[_RCTL]
        bsex = 1 if rctl & R.RCTL_BSEX else 0
        self._rx_buf_size = R.RX_BUFFER_SIZES[bsex][(rctl & R.RCTL_BSIZE_MASK) >> R.RCTL_BSIZE_SHIFT]
        self._ra_cache = None

    # -- interrupts ----------------------------------------------------------------------------------
    def _raise(self, cause: int) -> None:
        self.state.regs[_ICR] |= cause
        self._update_irq()

    def _update_irq(self) -> None:
        """Drive the output from ICR & IMS, holding back a new assertion that ITR forbids."""
        st = self.state
        regs = st.regs
        if not regs[_ICR] & regs[_IMS]:
            st.irq_delayed = False
            if self.irq_level:
                self.set_irq(False)
            return
        if self.irq_level:
            return
        itr = regs[_ITR]
        now = self.clock() if itr or st.irq_delayed else 0
        if itr and st.last_irq_ns is not None:
            due = st.last_irq_ns + itr * ITR_UNIT_NS
            if st.last_irq_ns <= now < due:  # (a clock that went backwards never blocks)
                if not st.irq_delayed:
                    st.irq_delayed = True
                    if self.on_timer is not None:
                        self.on_timer()
                return
        st.irq_delayed = False
        st.last_irq_ns = now if itr else None
        self.set_irq(True)

    def _poll_delayed_irq(self) -> None:
        if self.state.irq_delayed:
            self._update_irq()

    def tick(self) -> float | None:
        """Raise an interrupt ITR held back if its time has come; return the seconds until
        the one still waiting is due, or None when nothing waits."""
        st = self.state
        if not st.irq_delayed:
            return None
        self._update_irq()
        if not st.irq_delayed or st.last_irq_ns is None:
            return None
        due = st.last_irq_ns + st.regs[_ITR] * ITR_UNIT_NS
        return max(due - self.clock(), 1) / 1e9

    # -- link ------------------------------------------------------------------------------------------
    def set_link(self, up: bool) -> None:
        """The cable: plugged into a gigabit partner, or not. A change raises LSC."""
        st = self.state
        if st.link_up == up:
            return
        st.link_up = up
        P.set_link(st.phy, up)
        if up:
            st.regs[_STATUS] |= R.STATUS_LU
        else:
            st.regs[_STATUS] &= ~R.STATUS_LU
        self._raise(R.ICR_LSC)
        if up:
            self._rx_space()

    @property
    def link_up(self) -> bool:
        return self.state.link_up

    # -- TX ----------------------------------------------------------------------------------------
    def _process_tx(self) -> None:
        """Walk the TX ring from TDH to TDT (SDM 3.4): a batch of descriptors per DMA read."""
        st = self.state
        regs = st.regs
        if not regs[_TCTL] & R.TCTL_EN or self._tx_busy:
            return
        count = regs[_TDLEN] // R.DESC_SIZE
        head, tail = regs[_TDH], regs[_TDT]
        if count == 0 or head >= count or tail >= count:
            if head != tail:
                self._warn_once("tx-ring", "%s: TX ring head %d / tail %d outside its %d descriptors",
                                self.name, head, tail, count)
            return
        base = regs[_TDBAH] << 32 | regs[_TDBAL]
        self._tx_busy = True
        cause = 0
        try:
            while head != tail:
                n = (tail - head) if tail > head else (count - head)
                first = base + head * R.DESC_SIZE
                try:
                    block = self.dma.read(first, n * R.DESC_SIZE)
                except DmaFault:
                    block = None
                for i in range(n):
                    daddr = first + i * R.DESC_SIZE
                    if block is not None:
                        desc = _TXD.unpack_from(block, i * R.DESC_SIZE)
                    else:  # find out which descriptors fault, one by one
                        try:
                            desc = _TXD.unpack(self.dma.read(daddr, R.DESC_SIZE))
                        except DmaFault as e:
                            # its packet cannot be completed: drop what was gathered
                            self._dma_error("TX descriptor", e)
                            self._tx_discard()
                            continue
                    cause |= self._tx_descriptor(daddr, *desc)
                head = (head + n) % count
                regs[_TDH] = head
            cause |= R.ICR_TXQE
        finally:
            self._tx_busy = False
        self._raise(cause)

    def _tx_descriptor(self, daddr: int, buf: int, lower: int, upper: int) -> int:
        """One descriptor; returns the interrupt causes it produced."""
        st = self.state
        cmd = lower >> 24
        if cmd & R.TXD_CMD_DEXT:
            dtyp = (lower >> 20) & 0xF
            if dtyp == R.TXD_DTYP_CONTEXT:
                ctx = TxContext.parse(_TXD.pack(buf, lower, upper))
                if ctx.tse:
                    st.tso_ctx = ctx
                else:
                    st.tx_ctx = ctx
                return self._tx_writeback(daddr, cmd, upper)
            if dtyp != R.TXD_DTYP_DATA:
                self._warn_once("dtyp", "%s: TX descriptor type %d ignored", self.name, dtyp)
                return self._tx_writeback(daddr, cmd, upper)
            length = lower & 0xFFFFF
            if not st.tx_started:  # the first descriptor of a packet sets its options
                st.tx_started = True
                st.tx_popts = (upper >> 8) & 0xFF
                st.tx_tse = bool(cmd & R.TXD_CMD_TSE)
                st.tx_legacy_csum = None
        else:
            length = lower & 0xFFFF
            if not st.tx_started:
                st.tx_started = True
                st.tx_popts = 0
                st.tx_tse = False
                ic = cmd & R.TXD_CMD_IC
                # CSS is the byte after STA, CSO the one before CMD (SDM 3.3.3)
                st.tx_legacy_csum = ((upper >> 8) & 0xFF, (lower >> 16) & 0xFF) if ic else None
        if length and not st.tx_error:
            limit = MAX_TSO_PACKET if st.tx_tse else MAX_TX_PACKET
            if len(st.tx_data) + length > limit:
                self._warn_once("tx-long", "%s: TX packet longer than %d bytes dropped", self.name, limit)
                st.tx_error = True
            else:
                try:
                    st.tx_data += self.dma.read(buf, length)
                except DmaFault as e:
                    self._dma_error("TX buffer", e)
                    st.tx_error = True
        if cmd & R.TXD_CMD_EOP:
            self._tx_packet(cmd, upper >> 16)
        return self._tx_writeback(daddr, cmd, upper)

    def _tx_writeback(self, daddr: int, cmd: int, upper: int) -> int:
        """Report status (DD) when the descriptor asks for it (RS or RPS)."""
        if not cmd & (R.TXD_CMD_RS | R.TXD_CMD_RPS):
            return 0
        status = ((upper & 0xFF) & ~R.TXD_STAT_ERRBITS) | R.TXD_STAT_DD
        try:
            self.dma.write(daddr + 12, bytes((status,)))
        except DmaFault as e:
            self._dma_error("TX write-back", e)
            return 0
        return R.ICR_TXDW

    def _tx_discard(self) -> None:
        """Forget the packet being gathered."""
        st = self.state
        st.tx_data = bytearray()
        st.tx_started = False
        st.tx_error = False
        st.tx_popts = 0
        st.tx_tse = False
        st.tx_legacy_csum = None

    def _tx_packet(self, cmd: int, special: int) -> None:
        """The EOP descriptor has arrived: offloads, segmentation, VLAN tag, out it goes."""
        st = self.state
        regs = st.regs
        data, failed, tse, popts, legacy = st.tx_data, st.tx_error, st.tx_tse, st.tx_popts, st.tx_legacy_csum
        self._tx_discard()
        if failed:
            self._warn_once("tx-drop", "%s: a TX packet was dropped (DMA fault or too long)", self.name)
            return
        if not data:
            return  # EOP with no bytes: nothing goes on the wire
        frames: list[bytes | bytearray]
        if tse:
            frames = list(offload.segment(bytes(data), st.tso_ctx, popts))
            self._count(R.TSCTC if frames else R.TSCTFC)
            if not frames:
                return
        else:
            if popts & (R.TXD_POPTS_IXSM | R.TXD_POPTS_TXSM):
                offload.apply_checksums(data, st.tx_ctx, popts)
            elif legacy is not None:
                css, cso = legacy
                offload.insert_checksum(data, css, cso, 0)
            frames = [data]
        tag = None
        if cmd & R.TXD_CMD_VLE and regs[_CTRL] & R.CTRL_VME:
            tag = _VLAN_TAG.pack(regs[_VET] & 0xFFFF, special & 0xFFFF)
        pad = regs[_TCTL] & R.TCTL_PSP
        for f in frames:
            if tag is not None:
                f = f[:12] + tag + f[12:]
            if pad and len(f) < ETH_ZLEN:
                f = bytes(f) + bytes(ETH_ZLEN - len(f))
            self._send(bytes(f))

    def _send(self, frame: bytes) -> None:
        size = len(frame) + ETH_FCS_LEN
        self._count(R.TPT)
        self._count(R.GPTC)
        self._count64(R.GOTCL, size)
        self._count64(R.TOTL, size)
        self._count_size(R.PTC_BINS, size)
        if frame[0] & 1:
            self._count(R.BPTC if frame[:6] == BROADCAST else R.MPTC)
        if self._loopback():
            if not self._receive(frame):  # nobody holds a looped frame: it is missed
                self._rx_overrun()
        elif self.state.link_up and self.transmit is not None:
            try:
                self.transmit(frame)
            except OSError as e:  # the backend's trouble must not become the guest's crash
                self._warn_once("tx-backend", "%s: transmit failed: %s", self.name, e)

    def _loopback(self) -> bool:
        st = self.state
        mac_loop = (st.regs[_RCTL] & R.RCTL_LBM_MASK) == R.RCTL_LBM_MAC
        return mac_loop or bool(st.phy[P.PHY_CTRL] & P.CTRL_LOOPBACK)

    # -- RX ----------------------------------------------------------------------------------------
    def can_receive(self) -> bool:
        """Whether a frame arriving now would find a free descriptor (see the module docstring)."""
        st = self.state
        regs = st.regs
        if not regs[_RCTL] & R.RCTL_EN or not st.link_up or not self.config.command & CMD_MASTER:
            return False
        if self._loopback():
            return False
        count = regs[_RDLEN] // R.DESC_SIZE
        head, tail = regs[_RDH], regs[_RDT]
        return head < count and tail < count and head != tail

    def receive(self, frame: bytes) -> bool:
        """A frame from the wire (no FCS); True when the device is done with it, False when
        it was missed for lack of descriptors (see the module docstring)."""
        if not self.state.link_up or self._loopback():
            return True
        try:
            return self._receive(frame)
        finally:
            self._poll_delayed_irq()

    def _rx_space(self) -> None:
        if self.on_rx_space is not None and self.can_receive():
            self.on_rx_space()

    def _accept(self, frame: bytes, rctl: int) -> bool:
        """Receive filtering (SDM 3.2.1): VLAN filter, then broadcast/multicast/unicast."""
        regs = self.state.regs
        if rctl & R.RCTL_VFE and (frame[12] << 8 | frame[13]) == regs[_VET] & 0xFFFF:
            vid = (frame[14] << 8 | frame[15]) & 0x0FFF
            if not regs[_VFTA + (vid >> 5)] >> (vid & 31) & 1:
                return False
        dest = frame[:6]
        if dest[0] & 1:
            if dest == BROADCAST:
                if rctl & R.RCTL_BAM:
                    return True
            elif rctl & R.RCTL_MPE:
                return True
        elif rctl & R.RCTL_UPE:
            return True
        exact = self._ra_cache
        if exact is None:
            exact = self._ra_cache = self._exact_addresses()
        if dest in exact:
            return True
        bit = ((dest[5] << 8 | dest[4]) >> R.MTA_SHIFTS[(rctl & R.RCTL_MO_MASK) >> R.RCTL_MO_SHIFT]) & 0xFFF
        return bool(regs[_MTA + (bit >> 5)] >> (bit & 31) & 1)

    def _exact_addresses(self) -> frozenset[bytes]:
        regs = self.state.regs
        out = set()
        for i in range(R.RA_COUNT):
            low, high = regs[_RA + 2 * i], regs[_RA + 2 * i + 1]
            if high & R.RAH_AV and not high & 0x0003_0000:  # valid, matching the destination
                out.add(low.to_bytes(4, "little") + (high & 0xFFFF).to_bytes(2, "little"))
        return frozenset(out)

    def _receive(self, frame: bytes) -> bool:
        st = self.state
        regs = st.regs
        rctl = regs[_RCTL]
        if not rctl & R.RCTL_EN:
            return True
        if type(frame) is not bytes:
            frame = bytes(frame)
        size = len(frame)
        if size < ETH_ZLEN:  # the wire carries at least 64 bytes: a short frame arrives padded
            frame += bytes(ETH_ZLEN - size)
            size = ETH_ZLEN
        wire = size + ETH_FCS_LEN
        too_long = size > MAX_LONG_FRAME or (size > MAX_STD_FRAME and not rctl & R.RCTL_LPE)
        if too_long and not rctl & R.RCTL_SBP:
            self._seen(wire)
            self._count(R.ROC)
            return True
        if not self._accept(frame, rctl):
            self._seen(wire)
            return True
        vet = regs[_VET] & 0xFFFF
        special = 0
        vlan_status = 0
        if regs[_CTRL] & R.CTRL_VME and (frame[12] << 8 | frame[13]) == vet:
            special = frame[14] << 8 | frame[15]
            frame = frame[:12] + frame[16:]
            vlan_status = R.RXD_STAT_VP
        data = frame if rctl & R.RCTL_SECRC else frame + zlib.crc32(frame).to_bytes(4, "little")
        total = len(data)
        bufsize = self._rx_buf_size
        count = regs[_RDLEN] // R.DESC_SIZE
        head, tail = regs[_RDH], regs[_RDT]
        free = (tail - head) % count if count and head < count and tail < count else 0
        if free * bufsize < total:
            if count and (count - 1) * bufsize < total:
                self._seen(wire)  # would not fit an empty ring either: lost for good
                self._rx_overrun()
                return True
            self._count(R.RNBC)  # no buffers now; the backend keeps the frame (module doc)
            return False
        self._seen(wire)
        csum_status, csum_errors, packet_sum = offload.rx_checksum(data, regs[_RXCSUM], vet)
        base = regs[_RDBAH] << 32 | regs[_RDBAL]
        view = memoryview(data)
        offset = 0
        while offset < total:
            if free == 0:  # null descriptors ate the room this frame needed: it is cut off
                regs[_RDH] = head
                self._rx_overrun()
                return True
            daddr = base + head * R.DESC_SIZE
            try:
                (buf,) = _RXD_ADDR.unpack(self.dma.read(daddr, 8))
            except DmaFault as e:
                self._dma_error("RX descriptor", e)
                regs[_RDH] = head
                self._count(R.MPC)
                return True
            head = (head + 1) % count
            free -= 1
            if buf == 0:  # a null buffer is skipped (SDM 3.2.6), completed with no data
                self._rx_writeback(daddr, 0, 0, R.RXD_STAT_DD, 0, 0)
                continue
            chunk = min(bufsize, total - offset)
            try:
                self.dma.write(buf, view[offset : offset + chunk])
            except DmaFault as e:
                self._dma_error("RX buffer", e)
                self._rx_writeback(daddr, 0, 0, R.RXD_STAT_DD | R.RXD_STAT_EOP, R.RXD_ERR_RXE, 0)
                regs[_RDH] = head
                self._count(R.MPC)
                self._raise(R.ICR_RXT0)  # the driver must come and recycle that descriptor
                return True
            offset += chunk
            if offset >= total:
                status = R.RXD_STAT_DD | R.RXD_STAT_EOP | vlan_status | csum_status
                self._rx_writeback(daddr, chunk, packet_sum, status, csum_errors, special)
            else:
                self._rx_writeback(daddr, chunk, 0, R.RXD_STAT_DD | vlan_status, 0, special)
        regs[_RDH] = head
        self._count(R.GPRC)
        self._count64(R.GORCL, wire)
        self._count_size(R.PRC_BINS, wire)
        if frame[0] & 1:
            self._count(R.BPRC if frame[:6] == BROADCAST else R.MPRC)
        cause = R.ICR_RXT0
        if free <= count >> (((rctl & R.RCTL_RDMTS_MASK) >> R.RCTL_RDMTS_SHIFT) + 1):
            cause |= R.ICR_RXDMT0
        self._raise(cause)
        return True

    def _rx_writeback(
        self, daddr: int, length: int, csum: int, status: int, errors: int, special: int
    ) -> None:
        try:
            self.dma.write(daddr + 8, _RXD_WB.pack(length, csum, status, errors, special))
        except DmaFault as e:
            self._dma_error("RX write-back", e)

    def _rx_overrun(self) -> None:
        """A frame is lost for want of descriptors: missed, and the receiver overran."""
        self._count(R.MPC)
        self._raise(R.ICR_RXO)

    def _seen(self, wire: int) -> None:
        """Every frame the MAC took off the wire, good or not (TPR/TOR)."""
        self._count(R.TPR)
        self._count64(R.TORL, wire)

    # -- statistics ------------------------------------------------------------------------------
    def _count(self, offset: int) -> None:
        regs = self.state.regs
        idx = offset >> 2
        if regs[idx] != 0xFFFF_FFFF:  # statistics saturate (SDM 13.7)
            regs[idx] += 1

    def _count64(self, low_offset: int, amount: int) -> None:
        regs = self.state.regs
        idx = low_offset >> 2
        v = min((regs[idx + 1] << 32 | regs[idx]) + amount, (1 << 64) - 1)
        regs[idx] = v & 0xFFFF_FFFF
        regs[idx + 1] = v >> 32

    def _count_size(self, bins: tuple[int, ...], size: int) -> None:
        if size < 64:
            return
        if size == 64:
            i = 0
        elif size < 128:
            i = 1
        elif size < 256:
            i = 2
        elif size < 512:
            i = 3
        elif size < 1024:
            i = 4
        else:
            i = 5
        self._count(bins[i])

    def _dma_error(self, what: str, e: DmaFault) -> None:
        self.state.dma_errors += 1
        self._warn_once(f"dma-{what}", "%s: %s: %s", self.name, what, e)

    # -- state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """PCI reset (RST#): configuration space and the whole device; the PHY too."""
        super().reset()
        self._phy_reset()
        self._device_reset()

    def snapshot(self) -> E1000Snapshot:
        return E1000Snapshot(self.config.snapshot(), self.irq_level, self.state.snapshot())

    def restore(self, snap: PciFunctionState) -> None:
        if isinstance(snap, E1000Snapshot) and snap.nic is not None:
            self.state.restore(snap.nic)
        self._tx_busy = False
        self._derive()
        super().restore(snap)
