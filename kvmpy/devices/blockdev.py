"""Disk backends: raw image files that device models (IDE today) read and write by sector.

Why a separate module and not file handling inside the IDE model: the controller should speak
only in sectors and never see a path, an ``OSError`` or a lock; and every storage device that
comes later (virtio-blk, AHCI) needs exactly the same checks, so a bad image is refused once,
with one sentence, before the guest starts.

What a backend promises:

* **Raw images, positional I/O.** ``os.pread``/``os.pwrite`` at byte offsets on one file
  descriptor, so reads and writes never share a file position and need no seek.
* **Checked at open.** A missing file is a :class:`~kvmpy.errors.MissingFileError`; an empty disk
  image, one whose size is not a multiple of its sector size, a directory or a FIFO is an
  :class:`~kvmpy.errors.ImageError`; asking for read-write access to a file we may only read is an
  ``ImageError`` that suggests read-only. Each message is one sentence naming the file.
* **One writer.** A writable image is locked with ``flock(LOCK_EX)`` and a read-only one with
  ``LOCK_SH``, so a second kvmpy (or a second drive in the same VM) cannot open the same writable
  image: two writers would corrupt it. The lock is released by :meth:`BlockBackend.close`.
* **Read-only means read-only.** The file is opened ``O_RDONLY``; :meth:`BlockBackend.write`
  raises :class:`ReadOnlyError` before touching it. Device models check :attr:`readonly` first
  and fail the guest's command with an error status, so a write never reaches the file.
* **Flush means durable.** :meth:`BlockBackend.flush` is ``os.fsync``: the guest's FLUSH CACHE
  completes only after the data is on the image.
* **The medium ends where the file ends.** Reads past the end come back as zeros (a CD image
  whose last sector is short); writes past the end are refused (a device bug, not a guest one:
  devices check LBAs against :attr:`sectors` first).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat

from kvmpy.errors import ImageError, KvmpyError, MissingFileError

__all__ = [
    "BlockBackend",
    "BlockIOError",
    "CDROM_SECTOR_SIZE",
    "DISK_SECTOR_SIZE",
    "ReadOnlyError",
    "is_iso9660",
    "open_cdrom",
    "open_disk",
]

log = logging.getLogger("kvmpy.devices.blockdev")

#: Logical sector sizes: ATA disks address 512-byte sectors, CD/DVD media 2048-byte blocks.
DISK_SECTOR_SIZE = 512
CDROM_SECTOR_SIZE = 2048

#: ISO 9660: the primary volume descriptor at byte 32768 starts with type 1 and "CD001".
_ISO9660_PVD_OFFSET = 16 * CDROM_SECTOR_SIZE
_ISO9660_MAGIC = b"CD001"


class ReadOnlyError(KvmpyError):
    """A write reached a backend opened read-only (device models check ``readonly`` first)."""


class BlockIOError(KvmpyError):
    """The host failed a read or write on an image (EIO, ENOSPC): the device reports an error."""


def is_iso9660(path: str | os.PathLike[str]) -> bool:
    """True when the file carries an ISO 9660 volume descriptor (a CD image, maybe hybrid).

    Lets the command line warn when an ISO is attached as a hard disk; never raises."""
    try:
        with open(path, "rb") as f:
            f.seek(_ISO9660_PVD_OFFSET + 1)
            return f.read(len(_ISO9660_MAGIC)) == _ISO9660_MAGIC
    except OSError:
        return False


class BlockBackend:
    """A raw image file, addressed in sectors of ``sector_size`` bytes.

    Prefer :func:`open_disk` and :func:`open_cdrom`, which pick the sector size and the checks.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        sector_size: int = DISK_SECTOR_SIZE,
        what: str = "disk image",
        lock: bool = True,
        require_whole_sectors: bool = True,
    ) -> None:
        """Open and check ``path``; raise a ``KvmpyError`` with one sentence if it is unusable.

        ``what`` names the image in messages ("disk image", "CD-ROM image"). With
        ``require_whole_sectors`` a size that is not a multiple of ``sector_size`` is refused;
        without it the last partial sector reads as zero-padded.
        """
        self.path = os.fspath(path)
        self.readonly = readonly
        self.sector_size = sector_size
        self.what = what
        self._fd = -1
        self._fd = self._open(lock)
        try:
            self.size = self._size()
            if self.size == 0:
                raise ImageError(f"{what} {self.path} is empty (0 bytes)")
            if require_whole_sectors and self.size % sector_size:
                raise ImageError(
                    f"{what} {self.path} is {self.size} bytes, not a multiple of the "
                    f"{sector_size}-byte sector size; is it really a raw {what}?"
                )
        except BaseException:
            self.close()
            raise
        #: Whole sectors the guest can address (a partial last sector counts when allowed).
        self.sectors = -(-self.size // sector_size)

    # -- opening ------------------------------------------------------------------------------
    def _open(self, lock: bool) -> int:
        flags = (os.O_RDONLY if self.readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise MissingFileError(f"{self.what} {self.path} does not exist") from None
        except IsADirectoryError:
            raise ImageError(f"{self.what} {self.path} is a directory, not an image file") from None
        except PermissionError:
            if not self.readonly and os.access(self.path, os.R_OK):
                raise ImageError(
                    f"{self.what} {self.path} is not writable by this user; attach it read-only "
                    "(readonly=on) or fix its permissions"
                ) from None
            raise MissingFileError(f"{self.what} {self.path} cannot be read (permission denied)") from None
        except OSError as e:
            if e.errno == errno.EROFS and not self.readonly:
                raise ImageError(
                    f"{self.what} {self.path} is on a read-only file system; "
                    "attach it read-only (readonly=on)"
                ) from None
            raise ImageError(f"{self.what} {self.path} cannot be opened: {e.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise ImageError(f"{self.what} {self.path} is not a regular file or block device")
            if lock:
                self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock(self, fd: int) -> None:
        """Exclusive for a writer, shared for readers: two writers would corrupt the image."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            how = "read-only" if self.readonly else "read-write"
            raise ImageError(
                f"{self.what} {self.path} is in use (locked by another kvmpy or by another drive "
                f"of this VM); cannot open it {how}"
            ) from None

    def _size(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_END)

    # -- I/O ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset``; beyond the end of the file reads as zeros."""
        if length <= 0:
            return b""
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as e:
            raise BlockIOError(
                f"reading {length} bytes at {offset:#x} of {self.path} failed: {e.strerror}"
            ) from e
        if len(data) < length:  # pread is short only at the end of the file
            data += bytes(length - len(data))
        return data

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at byte ``offset``, all of it, inside the image."""
        if self.readonly:
            raise ReadOnlyError(f"{self.what} {self.path} is read-only")
        if offset < 0 or offset + len(data) > self.size:
            raise BlockIOError(f"write of {len(data)} bytes at {offset:#x} is outside {self.path}")
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise BlockIOError(
                f"writing {len(data)} bytes at {offset:#x} of {self.path} failed: {e.strerror}"
            ) from e

    def read_sectors(self, lba: int, count: int) -> bytes:
        ss = self.sector_size
        return self.read(lba * ss, count * ss)

    def write_sectors(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        self.write(lba * self.sector_size, data)

    def flush(self) -> None:
        """Make every completed write durable (``fsync``); a no-op for a read-only image."""
        if self.readonly or self.closed:
            return
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise BlockIOError(f"flushing {self.path} failed: {e.strerror}") from e

    def close(self) -> None:
        """Release the lock and the descriptor; safe to call twice."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor drops its flock

    def __enter__(self) -> BlockBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ro = ", readonly" if self.readonly else ""
        return f"BlockBackend({self.path!r}, {self.sectors} x {self.sector_size}{ro})"


def open_disk(path: str | os.PathLike[str], *, readonly: bool = False, lock: bool = True) -> BlockBackend:
    """A hard-disk image: 512-byte sectors, size a non-zero multiple of 512."""
    return BlockBackend(path, readonly=readonly, sector_size=DISK_SECTOR_SIZE, what="disk image", lock=lock)


def open_cdrom(path: str | os.PathLike[str], *, lock: bool = True) -> BlockBackend:
    """A CD/DVD image (ISO): always read-only, 2048-byte blocks. A size that is not a multiple of
    2048 is accepted (some tools write one) and the last block is padded with zeros."""
    return BlockBackend(
        path,
        readonly=True,
        sector_size=CDROM_SECTOR_SIZE,
        what="CD-ROM image",
        lock=lock,
        require_whole_sectors=False,
    )
