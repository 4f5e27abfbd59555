"""Showing the guest's screen to the user and taking their keyboard and mouse: the VNC server.

``VncServer`` (``vnc.py``) serves the std VGA's picture over RFB to any VNC client and feeds its
key and pointer events to the PS/2 controller; ``keymap.py`` turns X11 keysyms into scan codes.
Both run on the machine's I/O thread, never on a vCPU thread.
"""

from __future__ import annotations

from .vnc import VncServer, parse_address

__all__ = ["VncServer", "parse_address"]
