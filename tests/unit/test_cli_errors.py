"""Bad input: one plain sentence on stderr, a distinct non-zero status, never a traceback.

These run the real command line; none of them needs /dev/kvm, because kvmpy checks its options
and files before it opens KVM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def kvmpy(*args: str, env: dict | None = None, prefix: list[str] | None = None):
    cmd = (prefix or []) + [sys.executable, "-m", "kvmpy", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def assert_one_sentence(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("kvmpy: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def elf_kernel(tmp_path) -> Path:
    """A real multiboot ELF, assembled here, so the tests do not depend on firmware builds."""
    src = tmp_path / "k.S"
    src.write_text(".text\n.code32\n.balign 4\n.long 0x1badb002, 0, -0x1badb002\n"
                   ".globl _start\n_start: hlt\n.fill 16384, 1, 0x90\n")
    obj, elf = tmp_path / "k.o", tmp_path / "k.elf"
    subprocess.run(["as", "--32", "-o", obj, src], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-N", "-Ttext=0x100000", "-e", "_start", "-o", elf, obj],
                   check=True)
    return elf


def test_unknown_option():
    rc, _, err = kvmpy("boot", "--kernel", "x", "--frobnicate")
    assert rc == 64
    assert_one_sentence(err, "--frobnicate")


def test_unknown_command():
    rc, _, err = kvmpy("launch")
    assert rc == 64
    assert_one_sentence(err, "launch")


def test_no_kernel():
    rc, _, err = kvmpy("boot")
    assert rc == 64
    assert_one_sentence(err, "--kernel")


def test_missing_kernel(tmp_path):
    rc, _, err = kvmpy("boot", "--kernel", str(tmp_path / "nope"))
    assert rc == 66
    assert_one_sentence(err, "nope")


def test_not_a_kernel(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"just some text, not a kernel\n" * 100)
    rc, _, err = kvmpy("boot", "--kernel", str(f))
    assert rc == 65
    assert_one_sentence(err, "notes.txt")


def test_truncated_kernel(tmp_path, elf_kernel):
    data = elf_kernel.read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[: len(data) // 2])  # inside the 16 KiB segment
    rc, _, err = kvmpy("boot", "--kernel", str(cut))
    assert rc == 65
    assert_one_sentence(err, "cut.elf")


def test_truncated_bzimage(tmp_path):
    # a setup header that promises 30 setup sectors, in a file of 4 KiB
    data = bytearray(4096)
    data[0x1F1] = 30
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    data[0x206:0x208] = (0x020F).to_bytes(2, "little")
    f = tmp_path / "bzImage"
    f.write_bytes(bytes(data))
    rc, _, err = kvmpy("boot", "--kernel", str(f))
    assert rc == 65
    assert_one_sentence(err, "bzImage", "truncated")


def test_missing_initrd(elf_kernel, tmp_path):
    rc, _, err = kvmpy("boot", "--kernel", str(elf_kernel), "--initrd", str(tmp_path / "gone.img"))
    assert rc == 66
    assert_one_sentence(err, "gone.img")


def test_initrd_too_big_for_memory(elf_kernel, tmp_path):
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # sparse: costs no disk
    rc, _, err = kvmpy("boot", "--kernel", str(elf_kernel), "--initrd", str(big), "--memory", "32M")
    assert rc == 67
    assert_one_sentence(err, "big.img")


@pytest.mark.parametrize("value,status,word", [("lots", 64, "not valid"), ("12Q", 64, "not valid"),
                                               ("1M", 67, "too small"), ("64T", 67, "more than")])
def test_bad_memory(elf_kernel, value, status, word):
    rc, _, err = kvmpy("boot", "--kernel", str(elf_kernel), "--memory", value)
    assert rc == status
    assert_one_sentence(err, word)


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_cpus(elf_kernel, value):
    rc, _, err = kvmpy("boot", "--kernel", str(elf_kernel), "--cpus", value)
    assert rc == 64
    assert_one_sentence(err, "--cpus")


def test_no_dev_kvm(elf_kernel):
    rc, _, err = kvmpy("boot", "--kernel", str(elf_kernel), env={"KVMPY_KVM_DEVICE": "/nonexistent/kvm"})
    assert rc == 69
    assert_one_sentence(err, "/nonexistent/kvm", "does not exist")


def test_no_permission_on_dev_kvm(elf_kernel, tmp_path):
    node = tmp_path / "kvm"
    node.write_bytes(b"")
    prefix: list[str] = []
    if os.geteuid() == 0:
        # root would open anything: give the node to another user and drop root's override
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv (util-linux) to test a permission error as root")
        os.chown(node, 12345, 12345)
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    node.chmod(0o600 if os.geteuid() == 0 else 0)
    rc, _, err = kvmpy("info", env={"KVMPY_KVM_DEVICE": str(node)}, prefix=prefix)
    assert rc == 77
    assert_one_sentence(err, "no permission", "kvm' group")
