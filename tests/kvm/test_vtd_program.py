"""VT-d, shown by a guest program of ours (firmware/tests/vtd.c): it builds root, context and
page tables itself, enables translation, has the edu device DMA through a mapped page (works)
and into read-only and unmapped pages (blocked: memory unchanged, a fault record with the right
reason, source-id and address), checks register-based and queued invalidation, and takes the
fault-event interrupt. ``strict`` makes it require a fault record for every blocked DMA."""

import re

import pytest

MARKERS = ("VTD FOUND", "MAP OK", "DMA OK", "BLOCK RO OK", "BLOCK UNMAPPED OK", "INVAL REG OK",
           "INVAL QI OK", "FAULT IRQ OK", "VTD OK")
#: interrupt remapping (on by default with --iommu vtd: kvmpy's split irqchip)
IR_MARKERS = ("IR MSI OK", "IR BLOCK OK", "IR IEC OK", "IR IOAPIC OK", "INTREMAP OK")


@pytest.mark.parametrize("iommu,append", [
    ("vtd", "strict"),
    ("vtd,aw=48", "strict levels=4"),
    ("vtd,caching-mode=on", "strict"),
])
def test_vtd_protects_memory_from_dma(kvmpy_boot, iommu, append):
    r = kvmpy_boot("vtd", "--device", "edu", "--iommu", iommu, "--append", append, "--memory", "64M")
    assert r.status == 1, r.out + r.err
    for marker in MARKERS + IR_MARKERS:
        assert marker in r.out, marker
    # the fault records the guest read back: a write to a read-only page (reason 5) from the
    # edu device at 00:04.0
    assert re.search(r"reason 0x05 sid 00:04\.0", r.out)


def test_interrupt_remapping_blocks_and_translates(kvmpy_boot):
    """The guest's own IRT: an edu MSI in remappable format arrives with the IRTE's vector;
    compatibility format (no CFI), a not-present IRTE, a source-id the IRTE refuses and a handle
    beyond the table are blocked with their fault reasons (0x25, 0x22, 0x26, 0x21) and the
    interrupt index; an IEC invalidation makes a changed IRTE count; the IOAPIC's remappable
    entry delivers a level interrupt twice (the LAPIC EOI reached kvmpy's IOAPIC)."""
    r = kvmpy_boot("vtd", "--device", "edu", "--iommu", "vtd", "--append", "strict", "--memory", "64M")
    assert r.status == 1, r.out + r.err
    for marker in IR_MARKERS:
        assert marker in r.out, marker
    for what, reason, index in (("compatibility-format MSI", "0x25", None),
                                ("not-present IRTE", "0x22", "0x6"),
                                ("source-id mismatch", "0x26", "0x7"),
                                ("handle beyond the table", "0x21", "0x8005")):
        m = re.search(rf"ir fault: {what}: reason {reason} sid 00:04\.0 index (0x[0-9a-f]+)", r.out)
        assert m, what
        if index is not None:
            assert m.group(1) == index
    assert "after index-selective IEC invalidation: vector 0x74" in r.out


def test_without_interrupt_remapping_the_kernel_irqchip_stays(kvmpy_boot):
    """intremap=off: no ECAP.IR, KVM's in-kernel irqchip, DMA remapping as before."""
    r = kvmpy_boot("vtd", "--device", "edu", "--iommu", "vtd,intremap=off", "--append", "strict",
                   "--memory", "64M")
    assert r.status == 1, r.out + r.err
    assert "ECAP.IR = 0" in r.out and "VTD OK" in r.out


def test_vtd_register_invalidation_only(kvmpy_boot):
    r = kvmpy_boot("vtd", "--device", "edu", "--iommu", "vtd,qi=off", "--append", "strict noqi",
                   "--memory", "64M")
    assert r.status == 1, r.out + r.err
    assert "INVAL REG OK" in r.out and "VTD OK" in r.out


def test_without_an_iommu_the_program_says_so(kvmpy_boot):
    r = kvmpy_boot("vtd", "--device", "edu", "--memory", "64M")
    assert r.status == 5  # debug-exit 2: the machine lacks a VT-d unit
    assert "no VT-d unit" in r.out


def test_trace_shows_faults_and_invalidations(guest_program, tmp_path):
    """`kvmpy trace --events` carries the IOMMU's translation faults and invalidations."""
    import json
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    p = subprocess.run([sys.executable, "-m", "kvmpy", "trace", "--events", str(events), "--kernel",
                        str(guest_program("vtd")), "--device", "edu", "--iommu", "vtd", "--append",
                        "strict", "--memory", "64M", "--console", "none"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    iommu = [e for e in map(json.loads, events.read_text().splitlines()) if e["reason"] == "iommu"]
    faults = [e for e in iommu if e["event"] == "vtd.fault"]
    invals = [e for e in iommu if e["event"] == "vtd.invalidate"]
    assert faults and all(e["fields"]["sid"] == 0x20 for e in faults)  # edu at 00:04.0
    assert {e["fields"]["via"] for e in invals} == {"register", "queue"}
    ir_faults = [e for e in iommu if e["event"] == "vtd.ir-fault"]
    assert {e["fields"]["reason"] for e in ir_faults} >= {0x21, 0x22, 0x25, 0x26}
