"""The PCI bus of a PC: configuration mechanism #1, BAR mapping, INTx routing, DMA spaces.

**Configuration mechanism #1** (PCI 3.0, 3.2.2.3.2). ``CONFIG_ADDRESS`` at 0xCF8 is a 32-bit
register — enable (bit 31), bus (23:16), device (15:11), function (10:8), dword register (7:2);
bits 30:24 and 1:0 are reserved and read zero. Only a dword access at 0xCF8 reaches it. The
data window 0xCFC-0xCFF then reads or writes that dword of the selected function, a 1/2-byte
access at 0xCFC+n hitting byte n of it (SeaBIOS's ``pci_config_readb`` does
``outl(addr & ~3, 0xCF8); inb(0xCFC + (addr & 3))``). With the enable bit clear, or for a
function nobody placed, reads return all-ones — what a master abort returns, and what tells
an enumerating guest there is nothing there — and writes vanish.

**0xCF9** sits inside CONFIG_ADDRESS: on PIIX it is the reset control register, reached by
byte accesses. So ``ConfigAddressPort`` owns 0xCF8-0xCFB and passes 1-byte accesses at offset 1
to the ``reset_control`` device (``kvmpy.devices.acpi_pm.ResetControl``); other non-dword
accesses find nothing (reads all-ones). Linux's ``pci_check_type1`` pokes ``outb(0x01, 0xCFB)``
before testing the dword; that byte goes nowhere, as on a PIIX.

**BAR mapping.** When a function's BARs, ROM BAR, COMMAND decode bits or power state change,
the bus computes what it decodes (``PciConfig.mapped_address``) and registers the BAR's handler
on the PioBus or MmioBus at that address, unregistering the old range. A guest may program
nonsense: two BARs on top of each other, a BAR over a fixed device. The bus refuses overlaps,
so the later mapping is left out (logged once) and kept *pending*; whenever anything is
unmapped, pending windows are tried again, so once the guest resolves the conflict both
ranges work. Nothing a guest writes raises. The expansion ROM, when enabled, appears as
read-only MMIO content (``RomWindow``). A BAR or ROM with an ``on_map`` callback is told its new
address (or None) after every change — the way a memslot-backed BAR (a framebuffer) follows it.

**INTx.** A function's INTx pin reaches a PIRQ line through the board's wiring, ``map_irq``
(for the PC: PIRQ = (pin - 1 + slot - 1) mod 4, QEMU's ``pc_pci_slot_get_pirq`` and
SeaBIOS's ``piix_pci_slot_get_irq``; the DSDT's _PRT must say the same). PIRQ lines are
wired-OR: the bus gives the router (the PIIX3, ``set_intx_router``) the OR of every function
on that PIRQ. The router turns PIRQs into ISA IRQs through its 0x60-0x63 registers.

**DMA.** Each placed function gets ``dma_provider(requester_id)`` as its DmaSpace: guest RAM
today, an IOMMU's translated view of that requester later (``set_dma_provider`` re-hands them).

Functions are placed explicitly (``place(dev, fn, function)``) by the machine builder; placing
a second function in a slot sets the multifunction bit of function 0, since that bit tells a
guest to look for functions 1-7 and is a property of how the slot is populated.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from kvmpy import layout
from kvmpy.hw.bus import Bus, Device, Mapping, MmioBus, OverlapError, PioBus
from kvmpy.hw.dma import DmaSpace

from .config import ROM_SLOT, BarKind
from .function import PciFunction, _Attachment, format_bdf, requester_id

log = logging.getLogger("kvmpy.pci")

CONFIG_ADDRESS_LEN = 4
CONFIG_DATA_LEN = 4
CONFIG_PORT_SIZES = (1, 2, 4)
CONFIG_ENABLE = 0x8000_0000
#: The bits of CONFIG_ADDRESS that are stored: enable, bus, device, function, register.
CONFIG_ADDRESS_MASK = 0x80FF_FFFC
MAX_DEVICES = 32
MAX_FUNCTIONS = 8
PIRQ_COUNT = 4

DmaProvider = Callable[[int], DmaSpace]
MapIrq = Callable[[int, int], int]


def piix_slot_to_pirq(dev: int, pin: int) -> int:
    """PC (i440FX/PIIX) wiring of slot ``dev``'s INTx pin (1 = INTA#) to PIRQ A-D (0-3)."""
    return (pin - 1 + dev - 1) & 3


class IntxRouter(Protocol):
    """What receives PIRQ levels: the PIIX3 ISA bridge's interrupt router."""

    def set_pirq_level(self, pirq: int, level: bool) -> None: ...


class RomWindow:
    """An expansion ROM as MMIO: reads return the image (0xFF past its end, like erased flash);
    writes are ignored."""

    SIZES = (1, 2, 4, 8)

    def __init__(self, content: bytes, size: int) -> None:
        self.image = bytes(content[:size]).ljust(size, b"\xff")

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.image[offset : offset + size].ljust(size, b"\xff"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        pass


@dataclass(eq=False)
class Window:
    """One address range the bus maps for a function: a BAR, the ROM, or a fixed-function block
    (PIIX4's PM I/O). ``want`` is what the guest programmed, ``active`` what is mapped."""

    owner: PciFunction
    key: str
    space: str  # "io" or "mem"
    length: int
    device: Device | None
    name: str
    sizes: tuple[int, ...]
    on_map: Callable[[int | None], None] | None = None
    want: int | None = None
    active: int | None = None
    mapping: Mapping | None = None

    @property
    def pending(self) -> bool:
        """Programmed but not mapped, because the range is taken."""
        return self.want is not None and self.active != self.want


@dataclass
class PciBusState:
    """The host bridge's own guest-visible state: the CONFIG_ADDRESS register."""

    config_address: int = 0

    def reset(self) -> None:
        self.config_address = 0

    def snapshot(self) -> PciBusState:
        return copy.deepcopy(self)

    def restore(self, snap: PciBusState) -> None:
        self.config_address = snap.config_address


class ConfigAddressPort:
    """Ports 0xCF8-0xCFB: CONFIG_ADDRESS (dword at 0xCF8) and, for bytes at 0xCF9, the reset
    control register."""

    LENGTH = CONFIG_ADDRESS_LEN
    SIZES = CONFIG_PORT_SIZES

    def __init__(self, bus: PciBus, reset_control: Device | None) -> None:
        self.bus = bus
        self.reset_control = reset_control

    def read(self, offset: int, size: int) -> int:
        if size == 4 and offset == 0:
            return self.bus.state.config_address
        if size == 1 and offset == 1 and self.reset_control is not None:
            return self.reset_control.read(0, 1) & 0xFF
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 4 and offset == 0:
            self.bus.state.config_address = value & CONFIG_ADDRESS_MASK
        elif size == 1 and offset == 1 and self.reset_control is not None:
            self.reset_control.write(0, 1, value & 0xFF)


class ConfigDataPort:
    """Ports 0xCFC-0xCFF: the configuration dword CONFIG_ADDRESS selects."""

    LENGTH = CONFIG_DATA_LEN
    SIZES = CONFIG_PORT_SIZES

    def __init__(self, bus: PciBus) -> None:
        self.bus = bus

    def _target(self) -> tuple[PciFunction, int] | None:
        addr = self.bus.state.config_address
        if not addr & CONFIG_ENABLE or (addr >> 16) & 0xFF != self.bus.number:
            return None
        f = self.bus.function((addr >> 11) & 0x1F, (addr >> 8) & 7)
        return None if f is None else (f, addr & 0xFC)

    def read(self, offset: int, size: int) -> int:
        t = self._target()
        if t is None or offset + size > CONFIG_DATA_LEN:
            return (1 << (8 * size)) - 1
        fn, reg = t
        return fn.config_read(reg + offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        t = self._target()
        if t is None or offset + size > CONFIG_DATA_LEN:
            return
        fn, reg = t
        fn.config_write(reg + offset, size, value)


class PciBus:
    """PCI bus ``number`` (0: the root bus behind the host bridge); see the module docstring."""

    def __init__(
        self,
        pio: PioBus,
        mmio: MmioBus,
        *,
        number: int = 0,
        reset_control: Device | None = None,
        map_irq: MapIrq = piix_slot_to_pirq,
        dma_provider: DmaProvider | None = None,
    ) -> None:
        self.pio = pio
        self.mmio = mmio
        self.number = number
        self.map_irq = map_irq
        self.state = PciBusState()
        self.config_address_port = ConfigAddressPort(self, reset_control)
        self.config_data_port = ConfigDataPort(self)
        self._functions: dict[tuple[int, int], PciFunction] = {}
        self._dma_provider = dma_provider
        self._router: IntxRouter | None = None
        self._windows: dict[tuple[int, str], Window] = {}
        self._roms: dict[int, RomWindow] = {}
        self._warned: set[tuple[int, str, int]] = set()
        self._port_maps: list[Mapping] = []

    # -- wiring (machine builder) -------------------------------------------------------------
    def register_ports(
        self, address_port: int = layout.PCI_CONFIG_ADDR_PORT, data_port: int = layout.PCI_CONFIG_DATA_PORT
    ) -> None:
        """Put CONFIG_ADDRESS (with 0xCF9 inside) and CONFIG_DATA on the PioBus."""
        self._port_maps.append(
            self.pio.register(
                address_port,
                CONFIG_ADDRESS_LEN,
                self.config_address_port,
                "pci-config-address",
                sizes=CONFIG_PORT_SIZES,
            )
        )
        self._port_maps.append(
            self.pio.register(
                data_port, CONFIG_DATA_LEN, self.config_data_port, "pci-config-data", sizes=CONFIG_PORT_SIZES
            )
        )

    def place(self, dev: int, fn: int, function: PciFunction) -> None:
        """Put ``function`` at ``number:dev.fn``: it gets its requester id, DMA space and INTx
        wiring, and its BARs are mapped whenever the guest enables them."""
        if not (0 <= dev < MAX_DEVICES and 0 <= fn < MAX_FUNCTIONS):
            raise ValueError(f"no PCI slot {dev:#x}.{fn}")
        if (dev, fn) in self._functions:
            raise ValueError(
                f"PCI {self.number:02x}:{dev:02x}.{fn} is taken by {self._functions[dev, fn].name}"
            )
        if function.attachment is not None:
            raise ValueError(f"{function.name} is already placed at {function.bdf}")
        self._functions[dev, fn] = function
        function.attachment = _Attachment(self, dev, fn)
        self._update_multifunction(dev)
        if self._dma_provider is not None:
            function.dma_space = self._dma_provider(requester_id(self.number, dev, fn))
        function.attached()
        self.remap(function)
        self.intx_changed(function)

    def _update_multifunction(self, dev: int) -> None:
        f0 = self._functions.get((dev, 0))
        if f0 is not None and any(d == dev and f != 0 for d, f in self._functions):
            f0.config.set_multifunction(True)

    def set_intx_router(self, router: IntxRouter | None) -> None:
        """Where PIRQ levels go (the PIIX3 ISA bridge)."""
        self._router = router
        self.refresh_intx()

    def set_dma_provider(self, provider: DmaProvider | None) -> None:
        """(Re)hand every function its DmaSpace, e.g. when an IOMMU takes over."""
        self._dma_provider = provider
        for (dev, fn), f in self._functions.items():
            f.dma_space = provider(requester_id(self.number, dev, fn)) if provider else None

    # -- lookup ---------------------------------------------------------------------------------
    def function(self, dev: int, fn: int) -> PciFunction | None:
        return self._functions.get((dev, fn))

    def functions(self) -> Iterator[tuple[int, int, PciFunction]]:
        for (dev, fn), f in sorted(self._functions.items()):
            yield dev, fn, f

    def windows(self) -> list[Window]:
        return list(self._windows.values())

    # -- host-side configuration access (also the core of the data port) ----------------------
    def config_read(self, dev: int, fn: int, offset: int, size: int) -> int:
        f = self.function(dev, fn)
        return (1 << (8 * size)) - 1 if f is None else f.config_read(offset, size)

    def config_write(self, dev: int, fn: int, offset: int, size: int, value: int) -> None:
        f = self.function(dev, fn)
        if f is not None:
            f.config_write(offset, size, value)

    # -- address windows ----------------------------------------------------------------------------
    def remap(self, function: PciFunction) -> None:
        """Bring the bus mappings of ``function``'s BARs and ROM in line with its configuration."""
        if function.bus is not self:
            return
        cfg = function.config
        for index, bar in cfg.bars.items():
            self.map_window(
                function,
                f"bar{index}",
                "io" if bar.kind is BarKind.IO else "mem",
                cfg.mapped_address(index),
                bar.size,
                bar.handler,
                name=f"{function.name}.{bar.name}",
                sizes=bar.sizes,
                on_map=bar.on_map,
            )
        rom = cfg.rom
        if rom is not None:
            dev = self._roms.get(id(function))
            if dev is None:
                dev = self._roms[id(function)] = RomWindow(rom.content, rom.size)
            self.map_window(
                function,
                "rom",
                "mem",
                cfg.mapped_address(ROM_SLOT),
                rom.size,
                dev,
                name=f"{function.name}.{rom.name}",
                sizes=RomWindow.SIZES,
                on_map=rom.on_map,
            )

    def map_window(
        self,
        owner: PciFunction,
        key: str,
        space: str,
        base: int | None,
        length: int,
        device: Device | None,
        *,
        name: str,
        sizes: tuple[int, ...] = (1, 2, 4),
        on_map: Callable[[int | None], None] | None = None,
    ) -> bool:
        """Map (``base``) or unmap (None) one of ``owner``'s ranges, refusing overlaps gracefully.

        Returns whether the range is now where it was asked to be."""
        if space not in ("io", "mem"):
            raise ValueError(f"address space {space!r} is 'io' or 'mem'")
        k = (id(owner), key)
        w = self._windows.get(k)
        if w is None:
            w = self._windows[k] = Window(owner, key, space, length, device, name, tuple(sizes), on_map)
        w.want = base
        if w.active == base:
            return True
        before = w.active
        if w.active is not None:
            if w.mapping is not None:
                self._bus(w).unregister(w.mapping)
                w.mapping = None
            w.active = None
        if base is not None:
            self._try_map(w)
        if w.on_map is not None and w.active != before:
            w.on_map(w.active)
        if before is not None:
            self._retry_pending()
        return w.active == base

    def _bus(self, w: Window) -> Bus:
        return self.pio if w.space == "io" else self.mmio

    def _try_map(self, w: Window) -> bool:
        assert w.want is not None
        if w.device is None:  # the owner maps it itself (on_map), e.g. as a memslot
            w.active = w.want
            return True
        try:
            w.mapping = self._bus(w).register(w.want, w.length, w.device, w.name, sizes=w.sizes)
        except (OverlapError, ValueError) as e:
            tag = (id(w), w.key, w.want)
            if tag not in self._warned and len(self._warned) < 4096:
                self._warned.add(tag)
                log.warning("pci %s: %s at %#x left unmapped: %s", w.owner.bdf, w.name, w.want, e)
            return False
        w.active = w.want
        return True

    def _retry_pending(self) -> None:
        for w in list(self._windows.values()):
            if w.pending and w.active is None and self._try_map(w) and w.on_map is not None:
                w.on_map(w.active)

    # -- INTx -------------------------------------------------------------------------------------
    def pirq_of(self, function: PciFunction) -> int | None:
        """The PIRQ line ``function``'s INTx pin is wired to (None: no pin, or not placed here)."""
        att = function.attachment
        pin = function.config.interrupt_pin
        if att is None or att.bus is not self or pin == 0:
            return None
        return self.map_irq(att.dev, pin) & (PIRQ_COUNT - 1)

    def pirq_level(self, pirq: int) -> bool:
        """The wired-OR of every function driving ``pirq``."""
        return any(self.pirq_of(f) == pirq and f.intx_asserted() for f in self._functions.values())

    def intx_changed(self, function: PciFunction) -> None:
        """A function's INTx output changed: recompute its PIRQ line for the router."""
        pirq = self.pirq_of(function)
        if pirq is not None and self._router is not None:
            self._router.set_pirq_level(pirq, self.pirq_level(pirq))

    def refresh_intx(self) -> None:
        """Push every PIRQ level to the router (after a restore or a router change)."""
        if self._router is None:
            return
        for pirq in range(PIRQ_COUNT):
            self._router.set_pirq_level(pirq, self.pirq_level(pirq))

    def refresh(self) -> None:
        """Re-derive all mappings and INTx levels from the functions' configuration (for the
        machine to call after restoring a whole machine, in any order)."""
        for f in self._functions.values():
            self.remap(f)
        self.refresh_intx()

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """The bridge's own state; each function is reset by its owner like any device."""
        self.state.reset()

    def snapshot(self) -> PciBusState:
        return self.state.snapshot()

    def restore(self, snap: PciBusState) -> None:
        self.state.restore(snap)
        self.refresh()

    def describe(self) -> list[str]:
        """One line per function, lspci-style, for logs and ``kvmpy info``."""
        out = []
        for dev, fn, f in self.functions():
            cfg = f.config
            out.append(
                f"{format_bdf(requester_id(self.number, dev, fn))} "
                f"{cfg.get(0x0A, 2):04x}: {cfg.get(0, 2):04x}:{cfg.get(2, 2):04x} {f.name}"
            )
        return out
