"""The cffi extension is built at install time from the kernel's own <linux/kvm.h>."""

from setuptools import setup

setup(cffi_modules=["kvmpy/_ffi_build.py:ffibuilder"])
