"""kvmpy's own guest programs (tests/ and demo/) and how to build them: see build.py."""
