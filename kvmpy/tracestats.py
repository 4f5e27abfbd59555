"""Exit statistics for ``kvmpy trace --stats``: like ``perf kvm stat``, but per device and port.

Why one table keyed by (vCPU, reason, device, port or MMIO page, direction) instead of several
counters: an exit then costs one dict probe and two additions, well inside the 15% overhead
budget, and every view (by reason, by device, busiest ports, busiest MMIO pages, by vCPU) is a
sum over the same cells, so the views always agree with each other and with ``--events``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .events import ExitEvent
from .kvm_stats import StatsDelta

MMIO_PAGE = 4096
UNOWNED = "(unowned)"

Key = tuple[int, str, str, int | None, bool | None]


@dataclass
class Row:
    """One line of a table: how many exits, and the VMM time spent handling them."""

    label: str
    count: int = 0
    total: float = 0.0  # seconds
    reads: int = 0
    writes: int = 0
    device: str = ""

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class ExitStats:
    """A listener (``fn(event, handling_time)``) that counts exits and their handling time."""

    def __init__(self) -> None:
        self.cells: dict[Key, list] = {}

    def __call__(self, ev: ExitEvent, handling: float) -> None:
        r = ev.reason
        if r == "io":
            key = (ev.vcpu, r, ev.device, ev.port, ev.is_write)  # type: ignore[attr-defined]
        elif r == "mmio":
            key = (ev.vcpu, r, ev.device, ev.addr & ~(MMIO_PAGE - 1), ev.is_write)  # type: ignore[attr-defined]
        else:
            key = (ev.vcpu, r, "", None, None)
        try:
            cell = self.cells[key]
        except KeyError:
            self.cells[key] = [1, handling]
            return
        cell[0] += 1
        cell[1] += handling

    # -- views -----------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return sum(c[0] for c in self.cells.values())

    def _group(self, label: Callable[[Key], str | None], keep: Callable[[Key], bool] = lambda k: True
               ) -> list[Row]:
        rows: dict[str, Row] = {}
        for key, (count, total) in self.cells.items():
            if not keep(key):
                continue
            name = label(key)
            if name is None:
                continue
            row = rows.get(name)
            if row is None:
                row = rows[name] = Row(name, device=key[2] or (UNOWNED if key[3] is not None else ""))
            row.count += count
            row.total += total
            if key[4] is True:
                row.writes += count
            elif key[4] is False:
                row.reads += count
        return sorted(rows.values(), key=lambda r: (-r.count, r.label))

    def by_reason(self) -> list[Row]:
        return self._group(lambda k: k[1])

    def by_device(self) -> list[Row]:
        """Port and MMIO exits by the device that owns the address (``(unowned)`` for none)."""
        return self._group(lambda k: k[2] or UNOWNED, keep=lambda k: k[1] in ("io", "mmio"))

    def by_port(self) -> list[Row]:
        return self._group(lambda k: f"{k[3]:#06x}", keep=lambda k: k[1] == "io")

    def by_mmio_page(self) -> list[Row]:
        return self._group(lambda k: f"{k[3]:#010x}", keep=lambda k: k[1] == "mmio")

    def by_vcpu(self) -> list[Row]:
        return self._group(lambda k: f"vcpu{k[0]}")

    def counts_by_reason(self) -> dict[str, int]:
        return {r.label: r.count for r in self.by_reason()}


# --- rendering ------------------------------------------------------------------------------
def _table(title: str, rows: Iterable[Row], total: int, *, rw: bool = False, device: bool = False,
           top: int | None = None) -> list[str]:
    rows = list(rows)
    shown = rows[:top] if top else rows
    head = f"  {title:<22}{'count':>10}{'%':>7}{'total ms':>11}{'mean µs':>10}"
    if rw:
        head += f"{'in/read':>9}{'out/write':>10}"
    if device:
        head += "  device"
    out = [head]
    for r in shown:
        pct = 100.0 * r.count / total if total else 0.0
        line = f"  {r.label:<22}{r.count:>10,}{pct:>7.1f}{r.total * 1e3:>11.3f}{r.mean * 1e6:>10.2f}"
        if rw:
            line += f"{r.reads:>9,}{r.writes:>10,}"
        if device:
            line += f"  {r.device}"
        out.append(line)
    if len(rows) > len(shown):
        rest = rows[len(shown):]
        out.append(f"  ... and {len(rest)} more ({sum(r.count for r in rest):,} exits)")
    return out


#: the kernel counters worth naming first, with what they mean
KERNEL_NOTES = {
    "exits": "every VM exit, wherever it was handled",
    "io_exits": "port I/O exits (in-kernel PIT/PIC ports included)",
    "mmio_exits": "MMIO exits (in-kernel LAPIC/IOAPIC included)",
    "halt_exits": "HLT exits (the in-kernel LAPIC waits for the wake-up)",
    "irq_exits": "exits for host interrupts",
    "signal_exits": "exits for a pending signal (kicks)",
    "irq_window_exits": "exits to open an interrupt window",
    "insn_emulation": "instructions KVM's emulator ran",
    "irq_injections": "interrupts injected into the guest",
    "hypercalls": "hypercalls",
    "pf_fixed": "page faults KVM fixed (shadow/EPT)",
}


def render(stats: ExitStats, *, wall: float | None = None, kernel: StatsDelta | None = None,
           userspace_exits: int | None = None, top: int = 10, filtered: str = "") -> str:
    """The ``--stats`` report as text."""
    total = stats.total
    lines: list[str] = []
    rate = f" ({total / wall:,.0f}/s)" if wall else ""
    span = f" in {wall:.3f} s" if wall is not None else ""
    what = f" matching {filtered}" if filtered else ""
    nvcpu = len(stats.by_vcpu())
    lines.append(f"kvmpy trace: {total:,} exits to kvmpy{what}{span}{rate}, {nvcpu} vCPU(s)")
    lines.append("")
    lines += _table("exit reason", stats.by_reason(), total)
    dev = stats.by_device()
    if dev:
        lines.append("")
        lines += _table("device", dev, total, rw=True)
    ports = stats.by_port()
    if ports:
        lines.append("")
        lines += _table("busiest ports", ports, total, rw=True, device=True, top=top)
    pages = stats.by_mmio_page()
    if pages:
        lines.append("")
        lines += _table("busiest MMIO pages", pages, total, rw=True, device=True, top=top)
    if nvcpu > 1:
        lines.append("")
        lines += _table("vCPU", stats.by_vcpu(), total)
    if kernel is not None:
        lines.append("")
        lines += render_kernel(kernel, userspace_exits)
    return "\n".join(lines)


def render_kernel(kernel: StatsDelta, userspace_exits: int | None) -> list[str]:
    out = ["  in the kernel (KVM_GET_STATS_FD, this run, all vCPUs)"]
    exits = kernel.get("exits", -1)
    if exits >= 0 and userspace_exits is not None:
        signals = kernel.get("signal_exits")
        inkernel = max(0, int(exits - userspace_exits - signals))
        out.append(f"  {'exits':<28}{int(exits):>12,}  every VM exit")
        out.append(f"  {'  to kvmpy':<28}{userspace_exits:>12,}  came to userspace (all of them, unfiltered)")
        out.append(f"  {'  handled in the kernel':<28}{inkernel:>12,}  never left KVM")
    named = [n for n in KERNEL_NOTES if n != "exits" and kernel.get(n)]
    others = sorted((n for n, v in kernel.values.items()
                     if v and n not in KERNEL_NOTES and kernel.descs[n].cumulative),
                    key=lambda n: -kernel.values[n])
    for n in named + others:
        d = kernel.descs[n]
        v = kernel.values[n]
        if d.unit == "seconds":
            text = f"{d.scaled(int(v)) * 1e3:>12,.3f}  ms"
        else:
            text = f"{int(v):>12,}"
        note = KERNEL_NOTES.get(n, "")
        out.append(f"  {n:<28}{text}  {note}".rstrip())
    return out
