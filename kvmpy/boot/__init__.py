"""Loaders that turn a kernel file into memory contents and a CPU entry state."""
