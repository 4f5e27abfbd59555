"""Shared pieces of the Linux guest tier (tests marked `hwvirt`).

- hwvirt_skip_reason(): why this host cannot run Linux guests usefully (None when it can). Tests
  marked `hwvirt` in this directory are skipped with that reason before any image is built.
- guest_images: session fixture; builds Debian's kernel and the busybox initramfs through make
  (firmware/debian.mk) and returns their paths and the host-side SHA-256 of /data/sample.bin,
  read out of the very archive the guest gets.
- GuestProcess: `python -m kvmpy boot ...` as a subprocess: collects the guest console (kvmpy's
  stdout), waits for markers, types lines on its stdin (the serial port), enforces a timeout.

Environment:
  KVMPY_GUEST_TIMEOUT   seconds a single guest run may take (default 180)
  KVMPY_GUEST_APPEND    extra kernel command-line words, e.g. "noxsave clearcpuid=ssse3"
  KVMPY_HWVIRT_FORCE=1  run the tier even on a PVM-backed host (an experiment: expect timeouts)
  KVMPY_GUEST_VMM       command to run in place of `python -m kvmpy` (it gets `boot --kernel ...`):
                        another interpreter, a profiler, or a stand-in VMM to check the harness
"""

import hashlib

import pytest
from guestlib import (  # noqa: F401  (the tests import them from here too)
    INITRD,
    KERNEL,
    GuestImages,
    GuestProcess,
    _load_mkinitramfs,
    hwvirt_skip_reason,
    is_hardware_assisted_kvm,
    kernel_cmdline,
    make_targets,
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # tryfirst: skip before fixtures run, so a PVM host never downloads the kernel for nothing.
    if item.get_closest_marker("hwvirt") is not None:
        reason = hwvirt_skip_reason()
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def hwvirt_kvm():
    """Depend on this to skip (with the reason) where Linux guests cannot run."""
    reason = hwvirt_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_images(hwvirt_kvm) -> GuestImages:
    make_targets("build/debian/vmlinuz", "build/initramfs.cpio.gz")
    mk = _load_mkinitramfs()
    entries = {e.name: e for e in mk.read_archive(INITRD)}
    sample = entries["data/sample.bin"].data
    assert len(sample) == mk.SAMPLE_SIZE
    return GuestImages(KERNEL, INITRD, hashlib.sha256(sample).hexdigest())


@pytest.fixture
def boot_guest(guest_images):
    """Factory: boot_guest(action, **kw) -> GuestProcess; every process is killed at teardown."""
    started: list[GuestProcess] = []

    def boot(action: str, *, memory: str = "512M", cpus: int = 2, interactive: bool = False,
             extra_append: tuple[str, ...] = ()) -> GuestProcess:
        g = GuestProcess(guest_images, kernel_cmdline(action, *extra_append), memory=memory, cpus=cpus,
                         interactive=interactive)
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()
