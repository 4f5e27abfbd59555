"""kvmpy's BIOS-level guest programs: real-mode boot sectors (see README.md and build.py)."""
