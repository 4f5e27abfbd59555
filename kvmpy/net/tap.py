"""TAP backend: the guest's NIC bridged to a host TAP interface (``--net tap,ifname=tap0``).

The frames the guest sends come out of the host's ``tap0`` as if received from a wire, and what
the host sends to ``tap0`` reaches the guest. One descriptor on ``/dev/net/tun`` carries both
directions, one whole Ethernet frame per ``read``/``write`` (``IFF_NO_PI``: no packet-info
header; no ``IFF_VNET_HDR``: the NIC model does its own checksums and segmentation).

**Existing or created.** Like QEMU's ``-netdev tap``, kvmpy attaches to a TAP interface of that
name if one exists, and otherwise asks the kernel to create it, which needs ``CAP_NET_ADMIN``.
A TAP kvmpy created is transient (it disappears when kvmpy exits) and is brought up (``IFF_UP``)
but given no address and no bridge: QEMU leaves that to its ``/etc/qemu-ifup`` script, kvmpy to
the user. The unprivileged way is a persistent TAP that root created once for the user::

    ip tuntap add tap0 mode tap user $USER && ip link set tap0 up

**The ioctl.** ``TUNSETIFF`` is ``_IOW('T', 202, int)`` in ``<linux/if_tun.h>``: direction
write (1) in bits 31:30, the size of ``int`` (4) in bits 29:16, the type ``'T'`` (0x54) in bits
15:8 and the number 202 (0xCA) in bits 7:0, so ``0x400454CA``. (The size says ``int`` although
the kernel reads a ``struct ifreq``: a historical quirk that every user of the ioctl repeats.)
``struct ifreq`` is the interface name in 16 bytes (``IFNAMSIZ``) followed by a 24-byte union
of which ``TUNSETIFF`` uses the ``short ifr_flags`` at offset 16: 40 bytes on 64-bit Linux.
``tests/unit/test_net_tap.py`` compiles a one-line C program against the kernel's header to
check every one of these numbers on the host that runs the tests.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import socket
import struct

from .base import MAX_FRAME, Backend
from .errors import NetworkError, NetworkPermissionError

log = logging.getLogger("kvmpy.net.tap")

TUN_DEVICE = "/dev/net/tun"

_IOC_WRITE = 1


def _iow(kind: str, nr: int, size: int) -> int:
    """The kernel's ``_IOW(type, nr, size)`` (asm-generic/ioctl.h layout, used on x86)."""
    return (_IOC_WRITE << 30) | (size << 16) | (ord(kind) << 8) | nr


#: ``_IOW('T', 202, int)`` from <linux/if_tun.h>
TUNSETIFF = _iow("T", 202, 4)
IFF_TAP = 0x0002  # <linux/if_tun.h>
IFF_NO_PI = 0x1000  # <linux/if_tun.h>: no 4-byte packet-information header
IFNAMSIZ = 16  # <linux/if.h>, including the terminating NUL
IFREQ_SIZE = 40  # sizeof(struct ifreq) on LP64: name[16] + the union (struct ifmap, 24 bytes)
_IFREQ_FLAGS = struct.Struct("16sH22x")  # ifr_name, ifr_flags (short), rest of the union

# <linux/sockios.h> and <linux/if.h>: bring an interface kvmpy created up
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

#: Characters an interface name may not contain (the kernel's dev_valid_name, plus '%', which
#: would ask the kernel to pick the number and so make the name unpredictable).
_BAD_NAME_CHARS = frozenset("/:% \t\n\r\v\f")


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None when it can."""
    raw = name.encode("utf-8", "replace")
    if not raw:
        return "an interface name cannot be empty"
    if len(raw) >= IFNAMSIZ:
        return f"interface names have at most {IFNAMSIZ - 1} characters"
    if name in (".", ".."):
        return "'.' and '..' are not interface names"
    if any(c in _BAD_NAME_CHARS or not c.isprintable() or not c.isascii() for c in name):
        return "interface names are printable ASCII without '/', ':', '%' or spaces"
    return None


def _interface_exists(name: str) -> bool:
    """Whether this network namespace has an interface called ``name`` (of any kind)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _open_tun() -> int:
    """A new descriptor on the TUN/TAP clone device (a seam for tests that need one opened
    with privileges the process under test lacks)."""
    return os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class TapBackend(Backend):
    """One TAP interface; the descriptor is opened (and the TAP created if need be) here."""

    kind = "tap"

    def __init__(self, ifname: str) -> None:
        problem = ifname_problem(ifname)
        if problem:
            raise NetworkError(f"TAP name {ifname!r} is not valid: {problem}")
        super().__init__(f"tap {ifname}")
        existed = _interface_exists(ifname)
        try:
            fd = _open_tun()
        except FileNotFoundError:
            raise NetworkError(f"{TUN_DEVICE} does not exist: load the tun module (modprobe tun) "
                               "to use --net tap") from None
        except PermissionError:
            raise NetworkPermissionError(
                f"no permission to open {TUN_DEVICE}, which --net tap needs (it is usually mode "
                "0666; check its permissions)") from None
        except OSError as exc:
            raise NetworkError(f"cannot open {TUN_DEVICE}: {exc.strerror}") from None
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ_FLAGS.pack(ifname.encode(), IFF_TAP | IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise self._explain(exc, ifname, existed) from None
        self.fd = fd
        self.ifname = _IFREQ_FLAGS.unpack(ifr[:_IFREQ_FLAGS.size])[0].split(b"\0")[0].decode()
        self.created = not existed
        if self.created:
            self._bring_up()
            log.info("created TAP device %s (transient, no address)", self.ifname)

    @staticmethod
    def _explain(exc: OSError, name: str, existed: bool) -> NetworkError:
        """One sentence that says what is wrong and how to fix it."""
        user = _user()
        recipe = f"ip tuntap add {name} mode tap user {user}"
        if exc.errno == errno.EPERM:
            if existed:
                return NetworkPermissionError(
                    f"TAP device {name} belongs to another user: attaching to it needs "
                    f"CAP_NET_ADMIN or a pre-created TAP owned by you: {recipe}")
            return NetworkPermissionError(
                f"there is no TAP device {name}, and creating one needs CAP_NET_ADMIN or a "
                f"pre-created TAP owned by you: {recipe}")
        if exc.errno == errno.EBUSY:
            return NetworkError(f"TAP device {name} is already in use by another process "
                                "(a single-queue TAP takes one user at a time)")
        if exc.errno == errno.EINVAL:
            return NetworkError(f"{name} exists but is not a single-queue TAP device (a TUN "
                                "device, a multi-queue TAP or another kind of interface)")
        return NetworkError(f"cannot attach to TAP device {name}: {exc.strerror or exc}")

    def _bring_up(self) -> None:
        """A TAP we created is ours: set it up so frames flow, as qemu-ifup would."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16sH22x", self.ifname.encode(), 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", self.ifname.encode(),
                                                         flags | IFF_UP))
        except OSError as exc:
            log.warning("TAP device %s: could not bring it up: %s", self.ifname, exc.strerror)

    # -- Backend ------------------------------------------------------------------------------
    def _attached(self) -> None:
        self._watch(self.fd, self._on_readable)

    def _write_some(self, data: bytes | memoryview) -> int:
        return os.write(self.fd, data)  # one frame per write: all of it, or an error

    def _on_readable(self) -> None:
        for _ in range(self.READ_BATCH):
            if not self._reading_allowed():
                return
            try:
                frame = os.read(self.fd, MAX_FRAME + 1)  # +1: oversized frames show
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EIO/EBADFD when the interface went away under us: stop reading, say so once
                self._warn_once("rx", "TAP device %s: read failed: %s", self.ifname, exc.strerror)
                self._unwatch(self.fd)
                return
            if not frame:
                return
            if not self._receive(frame):
                return

    def _close_resources(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
