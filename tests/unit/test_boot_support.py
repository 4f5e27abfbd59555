"""Builders for synthetic kernels used by the test_boot_* modules (no tests of its own).

- ``make_elf``: a minimal ELF32/ELF64 writer (program headers only, optional PT_NOTE);
- ``make_bzimage``: a fake bzImage with a valid setup header and a payload;
- ``multiboot_header``: a multiboot v1 header with a correct checksum;
- ``toolchain_build``: assemble and link a tiny program with the system ``as``/``ld``.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

from kvmpy.boot.linux import BOOT_PARAMS, LOADED_HIGH, XLF_KERNEL_64
from kvmpy.boot.multiboot import MULTIBOOT_HEADER, MULTIBOOT_HEADER_MAGIC

PT_LOAD = 1
PT_NOTE = 4
EM_386 = 3
EM_X86_64 = 62


def elf_note(owner: str, ntype: int, desc: bytes) -> bytes:
    name = owner.encode() + b"\0"
    out = struct.pack("<III", len(name), len(desc), ntype)
    out += name + bytes(-len(name) % 4) + desc + bytes(-len(desc) % 4)
    return out


def make_elf(
    segments: list[dict],
    *,
    elfclass: int = 64,
    machine: int | None = None,
    entry: int = 0,
    notes: list[tuple[str, int, bytes]] = (),
    etype: int = 2,
) -> bytes:
    """An ELF executable. Each segment: ``paddr``, ``data``, optional ``vaddr`` (default paddr),
    ``memsz`` (default len(data)), ``flags`` (default R+X = 5), ``offset`` (default: packed)."""
    if machine is None:
        machine = EM_X86_64 if elfclass == 64 else EM_386
    is64 = elfclass == 64
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    note_blob = b"".join(elf_note(*n) for n in notes)
    phnum = len(segments) + (1 if note_blob else 0)
    pos = ehsize + phentsize * phnum
    placed = []
    body = bytearray()
    for seg in segments:
        off = seg.get("offset")
        if off is None:
            pos = (pos + 15) & ~15
            off = pos
        placed.append((seg, off))
        pos = max(pos, off + len(seg["data"]))
    note_off = (pos + 15) & ~15
    size = note_off + len(note_blob)
    body = bytearray(size)
    for seg, off in placed:
        body[off : off + len(seg["data"])] = seg["data"]
    body[note_off : note_off + len(note_blob)] = note_blob

    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + bytes(8)
    fmt = "<16sHHIQQQIHHHHHH" if is64 else "<16sHHIIIIIHHHHHH"
    ehdr = struct.pack(fmt, ident, etype, machine, 1, entry, ehsize, 0, 0, ehsize, phentsize, phnum, 0, 0, 0)
    phdrs = b""
    rows = [
        (
            PT_LOAD,
            off,
            s.get("vaddr", s["paddr"]),
            s["paddr"],
            len(s["data"]),
            s.get("memsz", len(s["data"])),
            s.get("flags", 5),
            0x1000,
        )
        for s, off in placed
    ]
    if note_blob:
        rows.append((PT_NOTE, note_off, 0, 0, len(note_blob), len(note_blob), 4, 4))
    for ptype, off, vaddr, paddr, filesz, memsz, flags, align in rows:
        if is64:
            phdrs += struct.pack("<IIQQQQQQ", ptype, flags, off, vaddr, paddr, filesz, memsz, align)
        else:
            phdrs += struct.pack("<IIIIIIII", ptype, off, vaddr, paddr, filesz, memsz, flags, align)
    body[: len(ehdr)] = ehdr
    body[ehsize : ehsize + len(phdrs)] = phdrs
    return bytes(body)


def make_bzimage(
    payload: bytes = b"\x90" * 4096,
    *,
    setup_sects: int = 4,
    version: int = 0x020F,
    xloadflags: int = XLF_KERNEL_64 | 0x2,
    loadflags: int = LOADED_HIGH,
    initrd_addr_max: int = 0x7FFF_FFFF,
    cmdline_size: int = 2047,
    init_size: int = 0,
    pref_address: int = 0x100000,
    kernel_alignment: int = 0x200000,
    relocatable: int = 1,
    syssize: int | None = None,
    header_jump: int = 0x6A,
    extra: dict | None = None,
    version_string: bytes = b"6.99.0-test (kvmpy) #1",
) -> bytes:
    """A file laid out like a bzImage: boot sector + setup sectors, then the payload."""
    sects = setup_sects or 4
    setup = bytearray((sects + 1) * 512)
    fields = {
        "setup_sects": setup_sects,
        "syssize": (len(payload) + 15) // 16 if syssize is None else syssize,
        "boot_flag": 0xAA55,
        "jump": 0xEB | (header_jump << 8),
        "header": b"HdrS",
        "version": version,
        "loadflags": loadflags,
        "code32_start": 0x100000,
        "initrd_addr_max": initrd_addr_max,
        "kernel_alignment": kernel_alignment,
        "relocatable_kernel": relocatable,
        "xloadflags": xloadflags,
        "cmdline_size": cmdline_size,
        "pref_address": pref_address,
        "init_size": init_size,
        "root_dev": 0x0301,
        "vid_mode": 0xFFFD,
        "kernel_version": 0x400 - 0x200,
    }
    fields.update(extra or {})
    for name, value in fields.items():
        BOOT_PARAMS.put(setup, name, value)
    setup[0x400 : 0x400 + len(version_string) + 1] = version_string + b"\0"
    return bytes(setup) + payload


def multiboot_header(flags: int = 0, *addr_fields: int, checksum: int | None = None) -> bytes:
    """magic, flags, checksum, then any address/video fields given, in header order."""
    if checksum is None:
        checksum = -(MULTIBOOT_HEADER_MAGIC + flags) & 0xFFFF_FFFF
    names = [f for f in MULTIBOOT_HEADER.fields][3 : 3 + len(addr_fields)]
    values = {"magic": MULTIBOOT_HEADER_MAGIC, "flags": flags, "checksum": checksum}
    values.update(zip(names, addr_fields, strict=True))
    return MULTIBOOT_HEADER.pack(values)[: 12 + 4 * len(addr_fields)]


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in ("as", "ld"))


def toolchain_build(tmp: Path, source: str, *, bits: int, ldflags: list[str]) -> bytes:
    """Assemble ``source`` (GNU as syntax) and link it with ``ld``; returns the ELF file."""
    asm = tmp / "k.S"
    obj = tmp / "k.o"
    out = tmp / "k.elf"
    asm.write_text(source)
    subprocess.run(["as", f"--{bits}", "-o", str(obj), str(asm)], check=True, capture_output=True)
    emu = "elf_i386" if bits == 32 else "elf_x86_64"
    subprocess.run(["ld", "-m", emu, *ldflags, "-o", str(out), str(obj)], check=True, capture_output=True)
    return out.read_bytes()
