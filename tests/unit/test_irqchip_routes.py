"""GsiRouter: KVM's GSI routing table kept whole (KVM_SET_GSI_ROUTING replaces all of it)."""

from kvmpy.irqchip import GsiRouter, pc_irqchip_routes
from kvmpy.kvm import lib


class RecordingVm:
    def __init__(self):
        self.tables = []

    def set_gsi_routing(self, routes):
        self.tables.append(list(routes))


def test_pc_routes_put_the_pit_on_ioapic_pin_2():
    """GSI 0 (the in-kernel PIT, ISA IRQ 0) on PIC pin 0 and IOAPIC pin 2, as the MADT's
    override says; GSI 2 (the cascade) nowhere; the rest on the pins of their number."""
    routes = pc_irqchip_routes()
    assert [r for r in routes if r[0] == 0] == [(0, "irqchip", lib.KVM_IRQCHIP_PIC_MASTER, 0),
                                                 (0, "irqchip", lib.KVM_IRQCHIP_IOAPIC, 2)]
    assert not [r for r in routes if r[0] == 2]
    assert (9, "irqchip", lib.KVM_IRQCHIP_PIC_SLAVE, 1) in routes
    assert (9, "irqchip", lib.KVM_IRQCHIP_IOAPIC, 9) in routes
    assert (20, "irqchip", lib.KVM_IRQCHIP_IOAPIC, 20) in routes
    assert not [r for r in routes if r[0] >= 16 and r[2] != lib.KVM_IRQCHIP_IOAPIC]
    assert len(routes) == 15 * 2 + 8


def test_msi_routes_are_added_on_top_and_gsis_reused():
    vm = RecordingVm()
    router = GsiRouter(vm, pc_irqchip_routes(), first_free_gsi=24)
    a = router.add_msi_route(0xFEE0_0000, 0x41)
    b = router.add_msi_route(0xFEE0_1000, 0x42)
    assert (a, b) == (24, 25)
    last = vm.tables[-1]
    assert last[:38] == pc_irqchip_routes()
    assert (24, "msi", 0xFEE0_0000, 0x41) in last and (25, "msi", 0xFEE0_1000, 0x42) in last
    router.update_msi_route(a, 0xFEE0_0000, 0x51)
    assert (24, "msi", 0xFEE0_0000, 0x51) in vm.tables[-1]
    n = len(vm.tables)
    router.update_msi_route(a, 0xFEE0_0000, 0x51)  # unchanged: no ioctl
    assert len(vm.tables) == n
    router.remove_route(a)
    assert not [r for r in vm.tables[-1] if r[0] == 24]
    assert router.add_msi_route(0xFEE0_0000, 0x61) == 24


def test_pinned_routes_for_the_split_ioapic():
    vm = RecordingVm()
    router = GsiRouter(vm, [], first_free_gsi=24)
    router.set_pinned({2: (0xFEE0_0000, 0x30), 4: (0xFEE0_0000, 0x8034)})
    assert vm.tables[-1] == [(2, "msi", 0xFEE0_0000, 0x30), (4, "msi", 0xFEE0_0000, 0x8034)]
    n = len(vm.tables)
    router.set_pinned({2: (0xFEE0_0000, 0x30), 4: (0xFEE0_0000, 0x8034)})
    assert len(vm.tables) == n
    assert router.add_msi_route(0xFEE0_0000, 0x99) == 24
    assert vm.tables[-1][-1] == (24, "msi", 0xFEE0_0000, 0x99)
