"""Test tiers and the CI rule that a skipped ``kvm`` or ``firmware`` test is a failure.

Tests marked ``kvm`` need /dev/kvm, ``firmware`` need Debian's firmware files, ``hwvirt`` need a
hardware-assisted KVM (they boot Linux). Without the resource they skip with the reason; but
with ``KVMPY_REQUIRE_KVM=1`` (CI sets it wherever /dev/kvm exists) a skip of a ``kvm`` or
``firmware`` test is turned into a failure, so a broken set-up can never pass as green. Only
``hwvirt`` tests may skip then, and only on PVM hosts, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("KVMPY_REQUIRE_KVM") == "1"


def kvm_skip_reason() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "needs /dev/kvm (KVM is not available on this host)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "needs read/write access to /dev/kvm (add the user to the 'kvm' group)"
    return None


_TIER_BY_DIR = {"kvm": "kvm", "firmware": "firmware", "guest": "hwvirt"}


def pytest_collection_modifyitems(config, items):
    reason = kvm_skip_reason()
    for item in items:
        tier = _TIER_BY_DIR.get(Path(str(item.fspath)).parent.name)
        if tier and tier not in item.keywords:
            item.add_marker(getattr(pytest.mark, tier))
        if tier in ("firmware", "hwvirt") and "kvm" not in item.keywords:
            item.add_marker(pytest.mark.kvm)
        if reason and ("kvm" in item.keywords or "firmware" in item.keywords):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE and rep.skipped and ("kvm" in item.keywords or "firmware" in item.keywords) \
            and "hwvirt" not in item.keywords and "vfio" not in item.keywords:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"KVMPY_REQUIRE_KVM=1 but this kvm/firmware test was skipped: {reason}"
