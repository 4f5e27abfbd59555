"""The legacy devices every kvmpy machine has at the same ISA addresses: COM1, the i8042, the
CMOS RTC, port 0x92, QEMU's debug-exit port and fw_cfg (with DMA)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import layout
from ..devices.debug_exit import DebugExit
from ..devices.fw_cfg import FwCfg
from ..devices.i8042 import I8042
from ..devices.port92 import Port92
from ..devices.rtc import CmosRtc
from ..devices.serial import Serial16550
from ..events import GuestStop, StopRequester

if TYPE_CHECKING:
    from ..machine import Machine


class MachineStop(StopRequester):
    """Adapts the machine to the StopRequester interface devices use."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def request_stop(self, stop: GuestStop) -> None:
        self.machine.request_stop(stop)


def place_legacy_devices(m: Machine, stop: StopRequester) -> dict[str, Any]:
    """Create the legacy devices, place them on the port bus, return them by name."""
    serial = Serial16550(m.irq_line(layout.IRQ_COM1), m.console_out.write)
    m.pio.register(layout.COM1_PORT, 8, serial, "serial", sizes=(1,))
    i8042 = I8042(m.irq_line(layout.IRQ_KEYBOARD), m.irq_line(layout.IRQ_MOUSE), stop)
    m.pio.register(layout.I8042_DATA_PORT, 1, i8042.data_port, "i8042", sizes=(1,))
    m.pio.register(layout.I8042_CMD_PORT, 1, i8042.command_port, "i8042", sizes=(1,))
    rtc = CmosRtc(m.irq_line(layout.IRQ_RTC))
    rtc.set_memory_info(m.memory.lowmem_size, m.memory.highmem_size, m.config.cpus)
    m.pio.register(layout.RTC_PORT, 2, rtc, "rtc", sizes=(1,))
    port92 = Port92(stop)
    m.pio.register(layout.PORT92, Port92.LENGTH, port92, "port92", sizes=Port92.SIZES)
    debug_exit = DebugExit(stop)
    m.pio.register(layout.DEBUG_EXIT_PORT, 4, debug_exit, "debug-exit", sizes=(1, 2, 4))
    fw_cfg = FwCfg(m.memory)
    fw_cfg.set_cpus(m.config.cpus)
    fw_cfg.set_ram_size(m.config.memory)
    m.pio.register(layout.FW_CFG_PORT, FwCfg.LENGTH, fw_cfg, "fw_cfg", sizes=FwCfg.SIZES)
    m.pio.register(layout.FW_CFG_DMA_PORT, fw_cfg.dma_port.LENGTH, fw_cfg.dma_port, "fw_cfg-dma",
                   sizes=fw_cfg.dma_port.SIZES)
    return {"serial": serial, "i8042": i8042, "rtc": rtc, "port92": port92,
            "debug_exit": debug_exit, "fw_cfg": fw_cfg}
