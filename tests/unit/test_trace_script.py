"""``kvmpy trace --script``: how a hook script is loaded, and the one-sentence errors for broken
ones (no KVM needed: a fake machine stands in)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvmpy.errors import MissingFileError, ScriptError
from kvmpy.trace import Tracer
from kvmpy.tracecli import compile_script, run_script


def fake_machine():
    m = SimpleNamespace()
    m.tracer = Tracer(m)
    return m


def load(tmp_path, text: str):
    p = tmp_path / "hooks.py"
    p.write_text(text)
    m = fake_machine()
    run_script(compile_script(str(p)), m)
    return m, p


def test_a_script_registers_hooks_through_vm_and_tracer(tmp_path):
    m, p = load(tmp_path, """
@vm.tracer.on("io", port=0x3f8)
def a(event): pass

@tracer.on("mmio", after=True)
def b(event): pass

assert machine is vm and __name__ == "__kvmpy_script__" and __file__.endswith("hooks.py")
""")
    assert [h.name for h in m.tracer.hooks] == ["a", "b"] and m.tracer.active


@pytest.mark.parametrize("text,words", [
    ("def f(:\n", ["hooks.py, line 1: ", "invalid syntax"]),
    ("x = (\n", ["hooks.py, line 1: ", "was never closed"]),
    ("a\x00b\n", ["null bytes"]),  # a SyntaxError or a ValueError, depending on the Python
])
def test_syntax_errors(tmp_path, text, words):
    p = tmp_path / "hooks.py"
    p.write_text(text)
    with pytest.raises(ScriptError) as e:
        compile_script(str(p))
    assert e.value.exit_status == 65
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("text,words", [
    ("import no_such_module_here\n", ["failed while loading at line 1",
                                      "ModuleNotFoundError: No module named 'no_such_module_here'"]),
    ("def f():\n    raise RuntimeError('bad config')\nf()\n", ["at line 2", "RuntimeError: bad config"]),
    ("tracer.on('io', port='0x3g8')\n", ["at line 1", "'0x3g8' is not a number"]),
    ("import sys\nsys.exit(3)\n", ["at line 2", "SystemExit: 3"]),
    ("raise KeyError\n", ["at line 1: KeyError"]),
])
def test_failures_while_loading(tmp_path, text, words):
    with pytest.raises(ScriptError) as e:
        load(tmp_path, text)
    msg = str(e.value)
    assert msg.startswith(f"hook script {tmp_path / 'hooks.py'} failed while loading")
    for w in words:
        assert w in msg


def test_missing_and_unreadable_scripts(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        compile_script(str(tmp_path / "nope.py"))
    with pytest.raises(MissingFileError, match="is a directory"):
        compile_script(str(tmp_path))
