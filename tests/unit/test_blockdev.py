"""Disk backends: checks at open, positional I/O, read-only enforcement, fsync, locking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmpy.devices import blockdev
from kvmpy.devices.blockdev import (
    BlockBackend,
    BlockIOError,
    ReadOnlyError,
    is_iso9660,
    open_cdrom,
    open_disk,
)
from kvmpy.errors import ImageError, KvmpyError, MissingFileError


def make(path: Path, size: int, fill: bytes = b"") -> Path:
    with open(path, "wb") as f:
        if fill:
            f.write((fill * (size // len(fill) + 1))[:size])
        else:
            f.truncate(size)
    return path


def test_open_disk_reports_geometry(tmp_path: Path) -> None:
    with open_disk(make(tmp_path / "d.img", 64 * 512)) as d:
        assert (d.sectors, d.sector_size, d.size, d.readonly) == (64, 512, 64 * 512, False)
        assert "64 x 512" in repr(d)


def test_read_write_sectors_round_trip(tmp_path: Path) -> None:
    path = make(tmp_path / "d.img", 16 * 512)
    with open_disk(path) as d:
        d.write_sectors(3, bytes(range(256)) * 4)
        assert d.read_sectors(3, 2) == bytes(range(256)) * 4
        assert d.read(3 * 512 + 10, 4) == bytes((10, 11, 12, 13))
    assert path.read_bytes()[3 * 512 : 5 * 512] == bytes(range(256)) * 4


def test_missing_file_is_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"does not exist"):
        open_disk(tmp_path / "nope.img")


def test_empty_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"is empty"):
        open_disk(make(tmp_path / "e.img", 0))


def test_size_not_multiple_of_512_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"not a multiple of the 512-byte sector size"):
        open_disk(make(tmp_path / "odd.img", 1000))


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"directory"):
        open_disk(tmp_path)


def test_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # so that opening it does not block
    try:
        with pytest.raises(ImageError, match=r"not a regular file"):
            open_disk(fifo)
    finally:
        os.close(fd)


def test_unwritable_file_suggests_readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "ro.img", 512)
    path.chmod(0o444)
    real_open = os.open

    def no_write(p: str, flags: int, *a: int) -> int:  # as for a non-root user, even under root
        if flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied")
        return real_open(p, flags, *a)

    monkeypatch.setattr(blockdev.os, "open", no_write)
    with pytest.raises(ImageError, match=r"not writable.*read-only \(readonly=on\)"):
        open_disk(path)
    with open_disk(path, readonly=True) as d:  # and read-only works
        assert d.readonly


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file")
def test_unreadable_file_is_missing_file_error(tmp_path: Path) -> None:
    path = make(tmp_path / "secret.img", 512)
    path.chmod(0o000)
    with pytest.raises(MissingFileError, match=r"cannot be read"):
        open_disk(path, readonly=True)


def test_errors_are_one_sentence_naming_the_file(tmp_path: Path) -> None:
    for bad in (tmp_path / "nope.img", make(tmp_path / "odd.img", 7)):
        with pytest.raises(KvmpyError) as info:
            open_disk(bad)
        msg = str(info.value)
        assert str(bad) in msg and "\n" not in msg


def test_readonly_backend_rejects_writes_and_leaves_file_alone(tmp_path: Path) -> None:
    path = make(tmp_path / "d.img", 4 * 512, b"\xaa")
    before = path.read_bytes()
    with open_disk(path, readonly=True) as d:
        with pytest.raises(ReadOnlyError):
            d.write_sectors(0, bytes(512))
        d.flush()  # a no-op, not an error
    assert path.read_bytes() == before


def test_write_outside_image_is_refused(tmp_path: Path) -> None:
    with open_disk(make(tmp_path / "d.img", 2 * 512)) as d:
        with pytest.raises(BlockIOError):
            d.write_sectors(2, bytes(512))
        with pytest.raises(BlockIOError):
            d.write(1000, bytes(100))


def test_flush_is_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(blockdev.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    with open_disk(make(tmp_path / "d.img", 512)) as d:
        d.write_sectors(0, b"x" * 512)
        d.flush()
        assert calls == [d._fd]


def test_flush_error_is_block_io_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blockdev.os, "fsync", broken)
    with open_disk(make(tmp_path / "d.img", 512)) as d:
        with pytest.raises(BlockIOError, match="Input/output error"):
            d.flush()


def test_writable_image_is_locked_against_a_second_open(tmp_path: Path) -> None:
    path = make(tmp_path / "d.img", 512)
    first = open_disk(path)
    try:
        with pytest.raises(ImageError, match=r"in use"):
            open_disk(path)
        with pytest.raises(ImageError, match=r"in use"):
            open_disk(path, readonly=True)
    finally:
        first.close()
    open_disk(path).close()  # the lock went with the first backend


def test_readonly_images_can_be_shared(tmp_path: Path) -> None:
    path = make(tmp_path / "cd.iso", 4 * 2048)
    a, b = open_cdrom(path), open_cdrom(path)
    try:
        with pytest.raises(ImageError, match=r"in use"):
            open_disk(path)  # but not with a writer
    finally:
        a.close()
        b.close()


def test_cdrom_uses_2048_byte_blocks_and_pads_a_short_last_block(tmp_path: Path) -> None:
    path = make(tmp_path / "cd.iso", 2 * 2048 + 100, b"\x5a")
    with open_cdrom(path) as cd:
        assert cd.readonly and cd.sector_size == 2048 and cd.sectors == 3
        last = cd.read_sectors(2, 1)
        assert last[:100] == b"\x5a" * 100 and last[100:] == bytes(1948)


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    d = BlockBackend(make(tmp_path / "d.img", 512))
    d.close()
    d.close()
    assert d.closed


def test_is_iso9660(tmp_path: Path) -> None:
    iso = make(tmp_path / "cd.iso", 20 * 2048)
    with open(iso, "r+b") as f:
        f.seek(16 * 2048)
        f.write(b"\x01CD001\x01")
    assert is_iso9660(iso)
    assert not is_iso9660(make(tmp_path / "d.img", 20 * 2048))
    assert not is_iso9660(tmp_path / "missing.iso")
