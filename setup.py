"""The cffi extensions are built at install time from the kernel's own <linux/kvm.h> and
<linux/vfio.h>."""

from setuptools import setup

setup(cffi_modules=["kvmpy/_ffi_build.py:ffibuilder", "kvmpy/_vfio_ffi_build.py:ffibuilder"])
