"""Primitives every device model stands on: buses, interrupt lines, DMA spaces, registers."""
