"""The few exception types kvmpy raises, each with the process exit status it maps to.

Why statuses live here: the CLI turns any ``KvmpyError`` into one sentence on stderr and its
``exit_status``, so every class of bad input gets a distinct, documented status without the CLI
knowing each case. Guest-requested stops use the even statuses below 64 (``StopReason``), and the
debug-exit port gives odd ones, so the three families never collide.
"""

from __future__ import annotations


class KvmpyError(Exception):
    """Base of every error kvmpy reports to a user; ``str()`` is the one sentence shown."""

    exit_status = 70  # EX_SOFTWARE: something inside the VMM went wrong


class UsageError(KvmpyError):
    """An option or value on the command line is invalid."""

    exit_status = 64  # EX_USAGE


class ImageError(KvmpyError):
    """A kernel, initrd or disk image exists but is not usable (wrong format, truncated)."""

    exit_status = 65  # EX_DATAERR


class MissingFileError(KvmpyError):
    """A file named on the command line does not exist or cannot be read."""

    exit_status = 66  # EX_NOINPUT


class ResourceError(KvmpyError):
    """The guest asked for more than the host or KVM can give (memory, vCPUs, room for an initrd)."""

    exit_status = 67


class KvmUnavailableError(KvmpyError):
    """``/dev/kvm`` is missing or not usable (no module, no permission)."""

    exit_status = 69  # EX_UNAVAILABLE


class KvmPermissionError(KvmUnavailableError):
    """``/dev/kvm`` exists but this user may not open it."""

    exit_status = 77  # EX_NOPERM


class GuestError(KvmpyError):
    """The guest hit something the VMM cannot continue from (failed entry, emulation failure)."""

    exit_status = 71


class KernelCallError(KvmpyError):
    """A call into a kernel interface failed; carries its name and the errno so reports are
    actionable."""

    exit_status = 70
    #: what the call goes to, at the start of the message
    interface = "kernel"

    def __init__(self, call: str, errno: int, detail: str = "") -> None:
        import os

        self.call = call
        self.errno = errno
        msg = f"{self.interface} {call} failed: {os.strerror(errno)} (errno {errno})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class KvmError(KernelCallError):
    """A KVM ioctl failed (``ioctl`` is its name)."""

    interface = "KVM ioctl"

    @property
    def ioctl(self) -> str:
        return self.call


class VfioError(KernelCallError):
    """A VFIO operation failed (``op`` is its name)."""

    interface = "VFIO"

    @property
    def op(self) -> str:
        return self.call


class VfioUnavailableError(KvmpyError):
    """The host cannot pass this device through (no IOMMU, no vfio-pci, wrong driver...)."""

    exit_status = 69  # EX_UNAVAILABLE, like a missing /dev/kvm


class DmaFault(KvmpyError):
    """A device's DMA touched memory it may not (outside RAM, or blocked by the IOMMU).

    Devices catch it and end the transfer with an error status, as hardware does; it never
    escapes to the vCPU loop.
    """

    def __init__(self, addr: int, length: int, write: bool, reason: str = "outside guest memory"):
        self.addr = addr
        self.length = length
        self.write = write
        self.reason = reason
        kind = "write" if write else "read"
        super().__init__(f"DMA {kind} of {length} bytes at {addr:#x} blocked: {reason}")


class ScriptError(KvmpyError):
    """A ``kvmpy trace --script`` file cannot be used: a syntax error, or it raised while loading."""

    exit_status = 65  # EX_DATAERR: the file given is not usable, like a corrupt kernel image
