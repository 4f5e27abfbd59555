"""A PCI function: a configuration space plus the three things a bus gives a device — a place
(bus:dev.fn, hence a requester id), legacy INTx wiring, and a DmaSpace.

Device models (IDE, e1000, VGA, ...) subclass ``PciFunction`` or hold one: they declare their
identity and BARs on ``self.config``, raise interrupts with ``set_irq``, and do DMA through
``self.dma``. They never see the bus, the interrupt router or the IOMMU.

Interrupts. ``set_irq(level)`` is the device's interrupt output as a level, recomputed after
every register access (as the 16550 does). With MSI enabled, a rising edge sends vector 0 and
INTx stays deasserted (PCI 3.0, 6.8: a function with MSI enabled must not use INTx); otherwise
the level goes out on the function's INTx pin unless COMMAND.INTX_DISABLE is set. STATUS bit 3
(Interrupt Status) shows the device's level whatever the disable bit says (PCI 3.0, 6.2.3).

DMA. ``self.dma`` refuses (``DmaFault``) while COMMAND.MASTER is clear, as real hardware issues
no memory cycles then and QEMU fails them; a driver that forgets ``pci_set_master`` breaks here
exactly as it would on a PC.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmpy.errors import DmaFault
from kvmpy.hw.dma import DmaSpace
from kvmpy.hw.irq import MsiSender

from .config import CMD_INTX_DISABLE, CMD_MASTER, COMMAND, STS_INTERRUPT, MsiCapability, PciConfig

if TYPE_CHECKING:
    from .bus import PciBus

log = logging.getLogger("kvmpy.pci")


def requester_id(bus: int, dev: int, fn: int) -> int:
    """The 16-bit PCI requester id (bus << 8 | dev << 3 | fn) DMA and the IOMMU key on."""
    return (bus & 0xFF) << 8 | (dev & 0x1F) << 3 | (fn & 7)


def format_bdf(rid: int) -> str:
    return f"{rid >> 8:02x}:{rid >> 3 & 0x1F:02x}.{rid & 7}"


@dataclass
class PciFunctionState:
    """Guest-visible state every function has: its configuration bytes and interrupt level.

    Resetting is the function's job (``PciFunction.reset``): the reset image is part of the
    function's declaration, not of its state."""

    config: bytes = b""
    irq_level: bool = False

    def snapshot(self) -> PciFunctionState:
        return copy.deepcopy(self)

    def restore(self, snap: PciFunctionState) -> None:
        self.config = snap.config
        self.irq_level = snap.irq_level


class _MasterGatedDma:
    """The function's view of its DmaSpace: faults while bus mastering is disabled."""

    __slots__ = ("_fn",)

    def __init__(self, fn: PciFunction) -> None:
        self._fn = fn

    def _space(self, addr: int, length: int, write: bool) -> DmaSpace:
        fn = self._fn
        if not fn.config.command & CMD_MASTER:
            raise DmaFault(addr, length, write, f"bus mastering disabled on {fn.name}")
        if fn.dma_space is None:
            raise DmaFault(addr, length, write, f"{fn.name} has no DMA space")
        return fn.dma_space

    def read(self, addr: int, length: int) -> bytes:
        return self._space(addr, length, False).read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._space(addr, len(data), True).write(addr, data)


@dataclass(eq=False)
class _Attachment:
    bus: PciBus
    dev: int
    fn: int
    rid: int = field(init=False)

    def __post_init__(self) -> None:
        self.rid = requester_id(self.bus.number, self.dev, self.fn)


class PciFunction:
    """Base class of every PCI function model; see the module docstring."""

    def __init__(self, config: PciConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.attachment: _Attachment | None = None
        #: The requester's DMA space, given by the bus (guest RAM, or an IOMMU's view).
        self.dma_space: DmaSpace | None = None
        self.dma: DmaSpace = _MasterGatedDma(self)
        #: Where MSI messages go; the machine supplies one (the in-kernel irqchip's KVM_SIGNAL_MSI).
        self.msi_sender: MsiSender | None = None
        self.irq_level = False
        self._intx_out = False
        self._warned: set[str] = set()
        config.decode_listeners.append(self._decode_changed)
        config.on_write(COMMAND, 2, self._command_written)

    # -- placement ---------------------------------------------------------------------------
    @property
    def bus(self) -> PciBus | None:
        return self.attachment.bus if self.attachment else None

    @property
    def requester_id(self) -> int | None:
        return self.attachment.rid if self.attachment else None

    @property
    def bdf(self) -> str:
        rid = self.requester_id
        return format_bdf(rid) if rid is not None else "unplaced"

    def attached(self) -> None:
        """Called by the bus once the function has its place; subclasses may map fixed windows."""

    # -- configuration space (the bus calls these; subclasses may wrap them) -----------------------
    def config_read(self, offset: int, size: int) -> int:
        return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.config.write(offset, size, value)

    # -- interrupts --------------------------------------------------------------------------------
    def set_irq(self, level: bool) -> None:
        """The device's interrupt output (a level); see the module docstring for MSI/INTx."""
        level = bool(level)
        rising = level and not self.irq_level
        self.irq_level = level
        self.config.set_status_bits(STS_INTERRUPT, level)
        msi = self.config.msi
        if msi is not None and msi.enabled:
            if rising:
                msi.notify(0)
        self._update_intx()

    def add_msi(
        self,
        *,
        vectors: int = 1,
        addr64: bool = True,
        per_vector_mask: bool = False,
        offset: int | None = None,
    ) -> MsiCapability:
        """Give the function an MSI capability wired to ``send_msi``; enabling MSI takes the
        function off its INTx pin."""
        msi = self.config.add_msi(
            self.send_msi, vectors=vectors, addr64=addr64, per_vector_mask=per_vector_mask, offset=offset
        )
        self.config.on_write(msi.ctrl_off, 2, self._command_written)
        return msi

    def msi_notify(self, vector: int = 0) -> bool:
        """Send MSI ``vector`` (for multi-vector devices); False when MSI is not enabled."""
        msi = self.config.msi
        return msi.notify(vector) if msi is not None else False

    def send_msi(self, address: int, data: int) -> None:
        """The capability's way out: hand the message to the machine's MsiSender."""
        if self.msi_sender is None:
            self._warn_once("msi", "%s: MSI %#x/%#x dropped: no MsiSender wired", self.name, address, data)
            return
        self.msi_sender.send(address, data)

    def intx_asserted(self) -> bool:
        """What this function drives on its INTx pin now."""
        cfg = self.config
        msi = cfg.msi
        return (
            self.irq_level
            and cfg.interrupt_pin != 0
            and not cfg.command & CMD_INTX_DISABLE
            and not (msi is not None and msi.enabled)
        )

    def _update_intx(self) -> None:
        out = self.intx_asserted()
        if out != self._intx_out:
            self._intx_out = out
            bus = self.bus
            if bus is not None:
                bus.intx_changed(self)

    def _command_written(self, offset: int, size: int, value: int) -> None:
        self._update_intx()

    # -- decoding ----------------------------------------------------------------------------------
    def _decode_changed(self) -> None:
        bus = self.bus
        if bus is not None:
            bus.remap(self)

    # -- state -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Configuration back to its reset image: BARs unmapped, interrupt deasserted."""
        self.config.reset()
        self.irq_level = False
        self._after_state_change()

    def snapshot(self) -> PciFunctionState:
        return PciFunctionState(self.config.snapshot(), self.irq_level)

    def restore(self, snap: PciFunctionState) -> None:
        self.config.restore(snap.config)
        self.irq_level = snap.irq_level
        self._after_state_change()

    def _after_state_change(self) -> None:
        """Re-derive what follows from the configuration bytes: BAR mappings and INTx."""
        self.config.notify_decode()
        self._update_intx()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.info(msg, *args)
