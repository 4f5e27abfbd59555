"""load_kernel: format detection and the errors shared by every loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmpy.boot import load_kernel
from kvmpy.boot.e820 import MemoryMap
from kvmpy.boot.loader import detect_kind
from kvmpy.errors import ImageError, KvmpyError, MissingFileError, UsageError

try:
    from test_boot_support import make_bzimage, make_elf, multiboot_header
except ImportError:  # tests/unit imported as a package
    from .test_boot_support import make_bzimage, make_elf, multiboot_header

MiB = 1 << 20
MM = MemoryMap(64 * MiB)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def pvh_elf() -> bytes:
    return make_elf(
        [{"paddr": 0x1000000, "data": b"\x90" * 32}], notes=[("Xen", 18, (0x1000000).to_bytes(8, "little"))]
    )


def mb_elf() -> bytes:
    return make_elf(
        [{"paddr": 0x100000, "data": multiboot_header(0) + b"\x90" * 32}], elfclass=32, entry=0x100000
    )


def test_detect_kinds():
    assert detect_kind(make_bzimage()) == "bzimage"
    assert detect_kind(pvh_elf()) == "pvh"
    assert detect_kind(mb_elf()) == "multiboot"
    aout = bytearray(0x200)
    aout[0:32] = multiboot_header(1 << 16, 0x100000, 0x100000, 0, 0, 0x100020)
    assert detect_kind(bytes(aout)) == "multiboot"


@pytest.mark.parametrize("builder,kind", [(make_bzimage, "bzimage"), (pvh_elf, "pvh"), (mb_elf, "multiboot")])
def test_load_kernel_dispatches(tmp_path, builder, kind):
    k = write(tmp_path, "k", builder())
    rd = write(tmp_path, "rd", b"initrd")
    plan = load_kernel(k, [rd], "console=ttyS0", MM, 0xE0000)
    assert plan.kind == kind
    assert plan.summary.kernel_path == k
    assert [f.path for f in plan.summary.initrds] == [rd]
    (span,) = [f.span for f in plan.summary.initrds]
    assert plan.read(span.start, span.size) == b"initrd"


def test_path_objects_are_accepted(tmp_path):
    k = tmp_path / "bzImage"
    k.write_bytes(make_bzimage())
    assert load_kernel(k, [], "", MM).summary.kernel_path == str(k)


def test_missing_kernel(tmp_path):
    with pytest.raises(MissingFileError) as e:
        load_kernel(str(tmp_path / "vmlinuz"), [], "", MM)
    assert str(e.value) == f"{tmp_path / 'vmlinuz'}: no such file"
    assert e.value.exit_status == 66


def test_kernel_is_a_directory(tmp_path):
    with pytest.raises(MissingFileError, match="is a directory"):
        load_kernel(str(tmp_path), [], "", MM)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_kernel(tmp_path):
    k = write(tmp_path, "vmlinuz", make_bzimage())
    os.chmod(k, 0)
    with pytest.raises(MissingFileError, match="cannot be read"):
        load_kernel(k, [], "", MM)


@pytest.mark.parametrize("builder", [make_bzimage, pvh_elf, mb_elf])
def test_missing_initrd_for_every_kind(tmp_path, builder):
    k = write(tmp_path, "k", builder())
    with pytest.raises(MissingFileError, match="initrd.gz: no such file"):
        load_kernel(k, [str(tmp_path / "initrd.gz")], "", MM)


def test_empty_file(tmp_path):
    k = write(tmp_path, "vmlinuz", b"")
    with pytest.raises(ImageError, match="vmlinuz: the file is empty"):
        load_kernel(k, [], "", MM)


def test_not_a_kernel(tmp_path):
    k = write(tmp_path, "notes.txt", b"hello world\n" * 100)
    with pytest.raises(ImageError) as e:
        load_kernel(k, [], "", MM)
    assert str(e.value) == f"{k}: not a kernel: no bzImage header, ELF header or multiboot header"
    assert e.value.exit_status == 65


def test_plain_elf_is_not_a_kernel(tmp_path):
    k = write(tmp_path, "prog", make_elf([{"paddr": 0x400000, "data": b"\xc3"}]))
    with pytest.raises(ImageError, match="neither a Xen PVH note nor a multiboot header"):
        load_kernel(k, [], "", MM)


def test_broken_elf(tmp_path):
    k = write(tmp_path, "broken", b"\x7fELF" + bytes(10))
    with pytest.raises(ImageError, match="broken: "):
        load_kernel(k, [], "", MM)


def test_elf_relocatable_object_refused(tmp_path):
    k = write(
        tmp_path,
        "k.o",
        make_elf(
            [{"paddr": 0x1000000, "data": b"\x90"}],
            etype=1,
            notes=[("Xen", 18, (0x1000000).to_bytes(8, "little"))],
        ),
    )
    with pytest.raises(ImageError, match="not an executable"):
        load_kernel(k, [], "", MM)


def test_nul_in_cmdline(tmp_path):
    k = write(tmp_path, "k", make_bzimage())
    with pytest.raises(UsageError, match="NUL"):
        load_kernel(k, [], "a\0b", MM)


@pytest.mark.parametrize("builder", [make_bzimage, pvh_elf, mb_elf])
def test_writes_never_overlap(tmp_path, builder):
    k = write(tmp_path, "k", builder())
    rds = [write(tmp_path, f"rd{i}", bytes([i]) * (1000 * i + 1)) for i in range(3)]
    plan = load_kernel(k, rds, "x", MM, 0xE0000)
    spans = sorted(plan.spans())
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end <= b.start, (a, b)
    for s in spans:
        assert MM.is_ram(s.start, s.end), s


def test_errors_are_kvmpy_errors_with_one_line(tmp_path):
    cases = [
        (str(tmp_path / "missing"), []),
        (write(tmp_path, "junk", b"junk"), []),
        (write(tmp_path, "old", make_bzimage(version=0x0206)), []),
    ]
    for k, rds in cases:
        with pytest.raises(KvmpyError) as e:
            load_kernel(k, rds, "", MM)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(k + ": ")
