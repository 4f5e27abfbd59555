"""kvmpy: a virtual machine monitor in Python over Linux KVM."""

__version__ = "0.1.0"
