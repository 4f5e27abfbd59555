"""Translation through tables a driver built: 3- and 4-level walks, large pages, permissions,
pass-through, and every legacy fault reason the walk can produce."""

from __future__ import annotations

import pytest
from test_vtd_support import GIB, MIB, TE, VtdGuest, sid

from kvmpy.errors import DmaFault
from kvmpy.iommu import VtdDmaFault

DEV = sid(0, 3, 0)


def setup(levels: int = 3, **options: object) -> tuple[VtdGuest, int]:
    g = VtdGuest(**options)
    pgd = g.alloc()
    g.set_context(DEV, pgd, did=1, aw=levels - 2)
    g.linux_init()
    return g, pgd


def fault_reason(exc: pytest.ExceptionInfo[DmaFault]) -> int:
    assert isinstance(exc.value, VtdDmaFault)
    return exc.value.fault_reason


def test_translation_off_is_identity() -> None:
    g = VtdGuest()
    g.poke(0x5000, b"hello")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x5000, 5) == b"hello"
    space.write(0x6000, b"xyz")
    assert g.peek(0x6000, 3) == b"xyz"
    assert not g.iommu.translation_enabled


def test_three_level_4k_read_and_write() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x4000_0000, 0x90_0000)
    g.poke(0x90_0010, b"data!")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x4000_0010, 5) == b"data!"
    space.write(0x4000_0100, b"out")
    assert g.peek(0x90_0100, 3) == b"out"
    assert g.iommu.translate(DEV, 0x4000_0FFF, False) == 0x90_0FFF


def test_four_level_walk_with_48_bit_width() -> None:
    g, pgd = setup(levels=4, aw_bits=48)
    iova = 0x7F12_3456_7000  # needs the level-4 index
    g.map(pgd, 4, iova, 0xA0_0000)
    g.poke(0xA0_0123, b"\x42")
    assert g.iommu.dma_space(DEV).read(iova + 0x123, 1) == b"\x42"


def test_access_spanning_pages_is_split_and_each_page_translated() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0xB0_0000)
    g.map(pgd, 3, 0x2000, 0xA0_0000)  # next IOVA page maps *below* the first
    g.poke(0xB0_0FFC, b"abcd")
    g.poke(0xA0_0000, b"efgh")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x1FFC, 8) == b"abcdefgh"
    space.write(0x1FFE, b"WXYZ")
    assert g.peek(0xB0_0FFE, 2) == b"WX" and g.peek(0xA0_0000, 2) == b"YZ"


def test_2m_page() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x20_0000, 0x40_0000, size=2 * MIB)
    g.poke(0x40_0000 + 0x12_3456, b"big")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x20_0000 + 0x12_3456, 3) == b"big"
    # one walk serves the whole 2 MiB page
    walks = g.iommu.stats.walks
    space.read(0x20_0000 + 0x1F_F000, 16)
    assert g.iommu.stats.walks == walks


def test_1g_page() -> None:
    g, pgd = setup(mem_size=64 * MIB)
    g.map(pgd, 3, 0x4000_0000, 0, size=GIB)
    g.poke(0x321_0000, b"gig")
    assert g.iommu.dma_space(DEV).read(0x4321_0000, 3) == b"gig"


def test_read_only_page_blocks_write_with_reason_5() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x8000, 0xC0_0000, write=False)
    g.poke(0xC0_0000, b"keep")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x8000, 4) == b"keep"
    with pytest.raises(DmaFault) as exc:
        space.write(0x8000, b"smash")
    assert fault_reason(exc) == 5
    assert exc.value.addr == 0x8000 and exc.value.length == 5 and exc.value.write
    assert g.peek(0xC0_0000, 4) == b"keep"


def test_write_only_page_blocks_read_with_reason_6() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x8000, 0xC0_0000, read=False)
    space = g.iommu.dma_space(DEV)
    space.write(0x8000, b"in")
    with pytest.raises(DmaFault) as exc:
        space.read(0x8000, 2)
    assert fault_reason(exc) == 6


def test_not_present_pte_is_a_permission_fault() -> None:
    """R = W = 0 is "not present": reason 6 for a read, 5 for a write (never 7)."""
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0xC0_0000)  # builds the tables; 0x5000 stays unmapped
    space = g.iommu.dma_space(DEV)
    with pytest.raises(DmaFault) as exc:
        space.read(0x5000, 4)
    assert fault_reason(exc) == 6
    with pytest.raises(DmaFault) as exc:
        space.write(0x5000, b"x")
    assert fault_reason(exc) == 5
    with pytest.raises(DmaFault) as exc:  # not present at the top level too
        space.read(0x4000_0000, 1)
    assert fault_reason(exc) == 6


def test_no_partial_write_when_a_later_page_is_blocked() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0xB0_0000)
    g.map(pgd, 3, 0x2000, 0xB0_1000, write=False)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).write(0x1F00, b"\xee" * 0x200)
    assert fault_reason(exc) == 5
    assert exc.value.fault_addr == 0x2000  # type: ignore[attr-defined]
    assert g.peek(0xB0_0F00, 0x100) == bytes(0x100)


def test_permissions_are_anded_down_the_walk() -> None:
    g, pgd = setup()
    leaf = g.map(pgd, 3, 0x1000, 0xB0_0000)
    pde = g.pte_addr(pgd, 3, 0x1000, 2)
    g.put_q(pde, g.q(pde) & ~2)  # the level-2 entry allows reads only
    space = g.iommu.dma_space(DEV)
    assert g.q(leaf) & 3 == 3
    space.read(0x1000, 1)
    with pytest.raises(DmaFault) as exc:
        space.write(0x1000, b"x")
    assert fault_reason(exc) == 5


def test_cached_permissions_still_checked() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0xB0_0000, write=False)
    space = g.iommu.dma_space(DEV)
    space.read(0x1000, 1)  # now in the IOTLB
    with pytest.raises(DmaFault) as exc:
        space.write(0x1000, b"x")
    assert fault_reason(exc) == 5


def test_pass_through_context() -> None:
    g = VtdGuest()
    g.set_context(DEV, 0, did=2, aw=1, tt=2)
    g.linux_init()
    g.poke(0x7_7000, b"pt")
    space = g.iommu.dma_space(DEV)
    assert space.read(0x7_7000, 2) == b"pt"
    space.write(0x7_8000, b"ok")
    assert g.peek(0x7_8000, 2) == b"ok"


def test_pass_through_without_ecap_pt_is_an_invalid_context() -> None:
    g = VtdGuest(pass_through=False)
    assert not g.r64(0x10) & (1 << 6)
    g.set_context(DEV, 0, did=2, aw=1, tt=2)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 3


@pytest.mark.parametrize("tt", [1, 3])
def test_reserved_translation_types_are_invalid(tt: int) -> None:
    g = VtdGuest()
    g.set_context(DEV, g.alloc(), aw=1, tt=tt)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 3


def test_unsupported_address_width_is_an_invalid_context() -> None:
    g = VtdGuest(aw_bits=39)
    g.set_context(DEV, g.alloc(), aw=2)  # 4-level, but SAGAW only offers 3-level
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 3


def test_address_beyond_mgaw() -> None:
    g, pgd = setup()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(1 << 39, 1)
    assert fault_reason(exc) == 4
    # a 3-level context on a 48-bit unit is limited by its own AGAW (39 bits)
    g48, pgd48 = setup(aw_bits=48)
    with pytest.raises(DmaFault) as exc:
        g48.iommu.dma_space(DEV).read(1 << 40, 1)
    assert fault_reason(exc) == 4


def test_root_entry_not_present() -> None:
    g = VtdGuest()
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(sid(5, 0, 0)).read(0, 1)
    assert fault_reason(exc) == 1


def test_context_entry_not_present() -> None:
    g, pgd = setup()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(sid(0, 4, 0)).read(0, 1)
    assert fault_reason(exc) == 2


@pytest.mark.parametrize("hi,lo_bits", [(1, 0), (0, 1 << 5), (0, 1 << 45)])
def test_reserved_bits_in_root_entry(hi: int, lo_bits: int) -> None:
    g = VtdGuest()
    ctp = g.set_root(0)
    g.set_context(DEV, g.alloc())
    g.put_q(g.root, ctp | 1 | lo_bits)
    g.put_q(g.root + 8, hi)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 0xA


@pytest.mark.parametrize(
    "lo_extra,hi_extra", [(1 << 4, 0), (1 << 11, 0), (1 << 40, 0), (0, 1 << 7), (0, 1 << 24), (0, 1 << 63)]
)
def test_reserved_bits_in_context_entry(lo_extra: int, hi_extra: int) -> None:
    g = VtdGuest()
    g.set_context(DEV, g.alloc(), lo_extra=lo_extra, hi_extra=hi_extra)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 0xB


def test_context_ignored_bits_are_ignored() -> None:
    g = VtdGuest()
    pgd = g.alloc()
    g.set_context(DEV, pgd, hi_extra=0b1111 << 3)  # hi bits 6:3 are available to software
    g.map(pgd, 3, 0, 0x9_0000)
    g.linux_init()
    g.iommu.dma_space(DEV).read(0, 1)


@pytest.mark.parametrize(
    "level,bits",
    [
        (1, 1 << 11),  # SNP without ECAP.SC
        (1, 1 << 62),  # TM without ECAP.DT
        (1, 1 << 45),  # above the 39-bit host address width
        (2, 1 << 11),
        (3, 1 << 50),
    ],
)
def test_reserved_bits_in_paging_entry(level: int, bits: int) -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0xB0_0000)
    addr = g.pte_addr(pgd, 3, 0x1000, level)
    g.put_q(addr, g.q(addr) | bits)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0x1000, 1)
    assert fault_reason(exc) == 0xC


def test_paging_entry_ignored_bits_are_ignored() -> None:
    g, pgd = setup()
    leaf = g.map(pgd, 3, 0x1000, 0xB0_0000)
    g.put_q(leaf, g.q(leaf) | 1 << 63 | 0x3FF << 52 | 0x7 << 8)
    g.iommu.dma_space(DEV).read(0x1000, 1)


def test_ps_at_level_4_is_reserved() -> None:
    g, pgd = setup(levels=4, aw_bits=48)
    g.map(pgd, 4, 0x1000, 0xB0_0000)
    g.put_q(pgd, g.q(pgd) | 0x80)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0x1000, 1)
    assert fault_reason(exc) == 0xC


@pytest.mark.parametrize("size,low", [(2 * MIB, 0x1000), (GIB, 0x20_0000)])
def test_large_page_address_bits_below_its_size_are_reserved(size: int, low: int) -> None:
    g, pgd = setup(mem_size=64 * MIB)
    g.map(pgd, 3, 0, 0, size=size, extra=low)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 0xC


def test_unreadable_tables_give_the_spec_reasons() -> None:
    outside = 0x40_0000_0000  # inside the 39-bit width, far outside our 16 MiB of RAM
    # root table outside RAM: 8
    g = VtdGuest()
    g.root = outside
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 8
    # context table pointer outside RAM: 9
    g = VtdGuest()
    g.set_root(0, outside)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 9
    # SLPTPTR outside RAM: the context entry is invalid (3)
    g = VtdGuest()
    g.set_context(DEV, outside)
    g.linux_init()
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 3
    # a next-level pointer outside RAM: 7
    g, pgd = setup()
    g.put_q(pgd, outside | 3)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 7


def test_translated_page_outside_ram_is_a_plain_dma_fault() -> None:
    g, pgd = setup()
    g.map(pgd, 3, 0x1000, 0x40_0000_0000)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0x1000, 4)
    assert not isinstance(exc.value, VtdDmaFault)


def test_scalable_mode_root_is_refused_with_a_fault() -> None:
    g = VtdGuest()
    g.set_context(DEV, g.alloc())
    g.set_root_pointer(ttm=1)
    g.gcmd_set(TE)
    with pytest.raises(DmaFault) as exc:
        g.iommu.dma_space(DEV).read(0, 1)
    assert fault_reason(exc) == 0x30
    rec = [r for r in g.fault_records() if r[1] >> 63]
    assert len(rec) == 1 and (rec[0][1] >> 32) & 0xFF == 0x30


def test_zero_length_accesses_translate_nothing() -> None:
    g, pgd = setup()
    space = g.iommu.dma_space(DEV)
    assert space.read(0x9999_0000, 0) == b""
    space.write(0x9999_0000, b"")
    assert g.iommu.stats.faults == 0


def test_dma_space_is_one_object_per_requester() -> None:
    g = VtdGuest()
    assert g.iommu.dma_space(DEV) is g.iommu.dma_space(DEV)
    assert g.iommu.dma_space(DEV) is not g.iommu.dma_space(sid(0, 3, 1))
    assert "00:03.0" in repr(g.iommu.dma_space(DEV))


def test_pci_bus_hands_functions_the_translated_space() -> None:
    from kvmpy.devices.pci import PciBus, PciConfig, PciFunction
    from kvmpy.hw.bus import MmioBus, PioBus

    g, pgd = setup()
    pci = PciBus(PioBus(), MmioBus(), dma_provider=lambda rid: g.mem)
    fn = PciFunction(PciConfig(0x1234, 0x11E8, 0x00FF), "edu")
    pci.place(3, 0, fn)
    assert fn.dma_space is g.mem
    pci.set_dma_provider(g.iommu.dma_space)
    assert fn.dma_space is g.iommu.dma_space(DEV)
    with pytest.raises(DmaFault):
        fn.dma_space.read(0x1000, 4)
