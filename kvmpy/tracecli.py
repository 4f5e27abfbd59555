"""``kvmpy trace``: boot a kernel like ``kvmpy boot`` and trace its VM exits.

    kvmpy trace [--stats] [--events out.jsonl] [--timeline out.json] [--filter EXPR]...
                [--limit N] [--duration S] [--keep-running] [--script hooks.py]... [--decode]
                [--print] [--top N]  <kvmpy boot options>

Outputs go to stderr or files; stdout stays the guest's console. With none of ``--stats``,
``--events``, ``--timeline`` or ``--script`` (or with ``--print``), each exit is printed as a
line. Filters (``tracefilter``) and limits apply to everything recorded (the statistics, both
files, the printed lines), never to the hooks, which have their own filters.

A ``--script`` file is plain Python run once before the guest starts, with ``vm`` (the
``Machine``; ``machine`` is the same), and ``tracer`` (``vm.tracer``) defined: it registers hooks
with ``@vm.tracer.on(...)`` and may register ``@tracer.at_end`` functions, called with the
run's ``GuestStop``. A script that does not exist, does not compile or raises while loading is
one sentence on stderr (status 66 or 65), before the guest runs.

Statuses are ``kvmpy boot``'s, plus 10 when a hook called ``stop()`` or a limit ran out and 12
when a hook raised (its traceback is printed).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from types import CodeType

from .errors import KvmError, MissingFileError, ScriptError, UsageError
from .events import GuestStop, StopReason
from .options import add_boot_options, config_from_namespace
from .tracefilter import parse_filters


def add_trace_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracing")
    g.add_argument("--stats", action="store_true",
                   help="when the guest stops (or on Ctrl-C), print exit statistics per reason, device, "
                        "port and MMIO page, with KVM's in-kernel counters")
    g.add_argument("--events", metavar="FILE", help="write one JSON object per exit (JSON lines)")
    g.add_argument("--timeline", metavar="FILE",
                   help="write a Chrome trace-event JSON timeline (Perfetto, chrome://tracing), "
                        "one track per vCPU")
    g.add_argument("--filter", metavar="EXPR", action="append", default=[],
                   help="record only matching exits, e.g. port=0x3f8-0x3ff,direction=out; keys: reason, "
                        "port, addr, direction, device, vcpu, size; 'a|b' alternatives, '!=' negates, "
                        "terms ANDed, repeated --filter ORed")
    g.add_argument("--limit", metavar="N", help="stop after recording N exits (exit status 10)")
    g.add_argument("--duration", metavar="SECONDS", help="stop after tracing this long (exit status 10)")
    g.add_argument("--keep-running", action="store_true",
                   help="when --limit or --duration runs out, stop tracing but let the guest run on")
    g.add_argument("--script", metavar="FILE", action="append", default=[],
                   help="Python file that registers hooks on `vm.tracer` (repeatable)")
    g.add_argument("--decode", action="store_true",
                   help="disassemble the guest instruction behind each recorded exit (iced-x86)")
    g.add_argument("--print", dest="print_events", action="store_true",
                   help="print every recorded exit on stderr (the default without other outputs)")
    g.add_argument("--top", metavar="N", default="10", help="busiest ports and MMIO pages shown (10)")
    add_boot_options(p)


def _positive_int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        n = int(text, 0)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a whole number") from None
    if n < 1:
        raise UsageError(f"{option} must be at least 1, not {n}")
    return n


def _positive_float(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        x = float(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a number of seconds") from None
    if not x > 0:
        raise UsageError(f"{option} must be more than 0 seconds, not {text}")
    return x


# --- hook scripts -------------------------------------------------------------------------------
def compile_script(path: str) -> CodeType:
    """Read and compile a hook script, so a broken one is reported before KVM is touched."""
    try:
        source = Path(path).read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"hook script {path} does not exist") from None
    except IsADirectoryError:
        raise MissingFileError(f"hook script {path} is a directory, not a Python file") from None
    except OSError as e:
        raise MissingFileError(f"cannot read hook script {path}: {e.strerror}") from None
    try:
        return compile(source, path, "exec")
    except SyntaxError as e:
        where = f", line {e.lineno}" if e.lineno else ""
        raise ScriptError(f"hook script {path}{where}: {e.msg}") from None
    except ValueError as e:  # e.g. NUL bytes in the source
        raise ScriptError(f"hook script {path} is not Python source: {e}") from None


def run_script(code: CodeType, machine) -> None:
    """Run a compiled hook script with ``vm``/``machine``/``tracer`` defined."""
    path = code.co_filename
    namespace = {"__name__": "__kvmpy_script__", "__file__": path, "__builtins__": __builtins__,
                 "vm": machine, "machine": machine, "tracer": machine.tracer}
    try:
        exec(code, namespace)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the user's code: any failure is one sentence, no traceback
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f" at line {lines[-1]}" if lines else ""
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ScriptError(f"hook script {path} failed while loading{where}: {detail}") from None


# --- the command ----------------------------------------------------------------------------------
def cmd_trace(ns: argparse.Namespace) -> int:
    from .cli import _print_stop
    from .machine import Machine
    from .tracerecord import Recorder
    from .tracestats import ExitStats, render
    from .tracewriters import ChromeTraceWriter, JsonLinesWriter, TextWriter

    filt = parse_filters(ns.filter)
    limit = _positive_int(ns.limit, "--limit")
    duration = _positive_float(ns.duration, "--duration")
    top = _positive_int(ns.top, "--top") or 10
    if ns.keep_running and limit is None and duration is None:
        raise UsageError("--keep-running needs --limit or --duration")
    scripts = [compile_script(p) for p in ns.script]
    config = config_from_namespace(ns)
    if ns.decode:
        from .disasm import _iced

        _iced()  # a missing decoder is a usage error now, not a failure in the middle of the run

    with Machine(config) as m:
        for code in scripts:
            run_script(code, m)
        origin = time.perf_counter()
        sinks: list = []
        stats = ExitStats() if ns.stats else None
        if stats is not None:
            sinks.append(stats)
        if ns.events:
            sinks.append(JsonLinesWriter(ns.events, origin))
        if ns.timeline:
            sinks.append(ChromeTraceWriter(ns.timeline, origin))
        if ns.print_events or not (ns.stats or ns.events or ns.timeline or ns.script):
            sinks.append(TextWriter(sys.stderr, origin))
        kernel = _open_kernel_stats(m) if ns.stats else None
        recorder = Recorder(m, sinks, filter=filt, limit=limit, duration=duration,
                            keep_running=ns.keep_running,
                            decoder=m.tracer.disassembler if ns.decode else None)
        if kernel is not None:
            kernel.start()
        recorder.start()
        try:
            stop = m.run()
        finally:
            recorder.close()
        end_status = _finish(m, stop)
        if stats is not None:
            delta = kernel.delta() if kernel is not None else None
            userspace = sum(lp.exits for lp in m.loops)
            print(render(stats, wall=recorder.wall, kernel=delta, userspace_exits=userspace, top=top,
                         filtered=str(filt) if filt is not None else ""), file=sys.stderr)
            if kernel is not None:
                kernel.close()
            else:
                print("  (KVM on this host offers no binary statistics: in-kernel exits not shown)",
                      file=sys.stderr)
    if stop.reason is not StopReason.POWEROFF or ns.verbose:
        _print_stop(stop)
    return end_status if end_status is not None else stop.status


def _open_kernel_stats(m):
    from .kvm_stats import KernelStats, StatsFormatError

    try:
        return KernelStats.open(m.vm, m.vcpus)
    except (KvmError, StatsFormatError, OSError):
        return None


def _finish(m, stop: GuestStop) -> int | None:
    """Run the scripts' ``at_end`` functions; a failure is reported like a hook's."""
    from .trace import user_traceback

    try:
        m.tracer.finish(stop)
    except Exception as e:  # the user's code
        print(f"kvmpy: an at_end function of the hook script raised {type(e).__name__}: {e} "
              f"(exit status {StopReason.HOOK_ERROR.value})", file=sys.stderr)
        print(user_traceback(e), file=sys.stderr)
        return StopReason.HOOK_ERROR.value
    return None
