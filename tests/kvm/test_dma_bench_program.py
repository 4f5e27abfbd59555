"""The DMA benchmark's guest program (firmware/tests/dma_bench.c) as a correctness test: every
transfer of the edu and IDE loops is checked by the guest, with and without VT-d translation
(and with an IOTLB flush after each transfer), so the benchmark can only report figures for
DMA that landed."""

import pytest
from test_ide_program import MAGIC_DISK, patterned


@pytest.mark.parametrize("iommu,append", [
    (None, "vtd=off"),
    ("vtd", "vtd=on"),
    ("vtd", "vtd=on flush"),
])
def test_edu_copies(kvmpy_boot, iommu, append):
    args = ["--device", "edu", "--memory", "64M", "--append", f"mode=edu count=50 {append}"]
    if iommu:
        args += ["--iommu", iommu]
    r = kvmpy_boot("dma_bench", *args)
    assert r.status == 1, r.out + r.err
    want = "vtd=on" if iommu else "vtd=off"
    assert "DMA_BENCH OK mode=edu count=50" in r.out and want in r.out.split("DMA_BENCH OK")[1]


@pytest.mark.parametrize("iommu,append", [(None, "vtd=off"), ("vtd", "vtd=on flush")])
def test_ide_reads(kvmpy_boot, tmp_path, iommu, append):
    disk = tmp_path / "disk.img"
    patterned(disk, 4096, 512, MAGIC_DISK, 13)
    args = ["--drive", f"file={disk}", "--memory", "64M", "--append", f"mode=ide count=20 {append}"]
    if iommu:
        args += ["--iommu", iommu]
    r = kvmpy_boot("dma_bench", *args)
    assert r.status == 1, r.out + r.err
    assert "DMA_BENCH OK mode=ide count=20" in r.out
    assert ("vtd=on flush=1" if iommu else "vtd=off") in r.out.split("DMA_BENCH OK")[1]
