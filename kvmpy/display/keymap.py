"""X11 keysyms (what RFB's KeyEvent carries) to PS/2 scan code set 2 (what ``I8042.key_event``
takes), for a US keyboard layout.

Why a keysym is mapped to a *key* and not to a character: an RFB client sends the keysym of the
symbol its own layout produced (Shift then ``A``, Shift then ``!``), and it also sends the Shift
press itself. A PS/2 keyboard reports keys, and the guest applies Shift. So ``A`` and ``a`` are
the same key (1C), ``!`` is the key ``1`` (16), and the Shift state the guest sees comes from
the client's own Shift events. That is right for a guest with a US layout, which is what
firmware, boot loaders and a default console use.

Set 2 encoding (the PS/2 keyboard's power-on set; the 8042 translates it to set 1 for the
guest when its command byte asks): a make code is one byte, its break code is ``F0`` and the
same byte; an *extended* key (the grey cursor block, right Ctrl/Alt, keypad Enter and /) is
prefixed by ``E0`` in both, the ``F0`` after the prefix: ``E0 6B`` / ``E0 F0 6B`` for Left.
Print Screen and Pause are multi-byte sequences of their own, and Pause sends no break code.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The prefixes of scan code set 2.
EXTENDED = 0xE0
BREAK = 0xF0

# X11 keysyms (X11/keysymdef.h) named where the table below or a caller needs them.
XK_BackSpace = 0xFF08
XK_Tab = 0xFF09
XK_Return = 0xFF0D
XK_Pause = 0xFF13
XK_Scroll_Lock = 0xFF14
XK_Sys_Req = 0xFF15
XK_Escape = 0xFF1B
XK_Home = 0xFF50
XK_Left = 0xFF51
XK_Up = 0xFF52
XK_Right = 0xFF53
XK_Down = 0xFF54
XK_Page_Up = 0xFF55  # XK_Prior
XK_Page_Down = 0xFF56  # XK_Next
XK_End = 0xFF57
XK_Print = 0xFF61
XK_Insert = 0xFF63
XK_Menu = 0xFF67
XK_Num_Lock = 0xFF7F
XK_KP_Enter = 0xFF8D
XK_KP_Home = 0xFF95
XK_KP_Multiply = 0xFFAA
XK_KP_Add = 0xFFAB
XK_KP_Separator = 0xFFAC
XK_KP_Subtract = 0xFFAD
XK_KP_Decimal = 0xFFAE
XK_KP_Divide = 0xFFAF
XK_KP_0 = 0xFFB0
XK_F1 = 0xFFBE
XK_F12 = 0xFFC9
XK_Shift_L = 0xFFE1
XK_Shift_R = 0xFFE2
XK_Control_L = 0xFFE3
XK_Control_R = 0xFFE4
XK_Caps_Lock = 0xFFE5
XK_Meta_L = 0xFFE7
XK_Meta_R = 0xFFE8
XK_Alt_L = 0xFFE9
XK_Alt_R = 0xFFEA
XK_Super_L = 0xFFEB
XK_Super_R = 0xFFEC
XK_Delete = 0xFFFF
XK_ISO_Level3_Shift = 0xFE03  # AltGr on many X layouts: the right Alt key
XK_ISO_Left_Tab = 0xFE20  # what Shift+Tab sends on X
#: Keysyms 0x01000000 + U+xxxx stand for a Unicode character (keysymdef.h's rule).
UNICODE_KEYSYM = 0x0100_0000


@dataclass(frozen=True)
class Key:
    """The set-2 bytes one key sends when pressed and when released (``brk`` empty: none)."""

    make: bytes
    brk: bytes


def _key(code: int, extended: bool = False) -> Key:
    if extended:
        return Key(bytes((EXTENDED, code)), bytes((EXTENDED, BREAK, code)))
    return Key(bytes((code,)), bytes((BREAK, code)))


# --- the main block: unshifted and shifted symbol of each key on a US keyboard ----------------
_LETTERS = {
    "a": 0x1C, "b": 0x32, "c": 0x21, "d": 0x23, "e": 0x24, "f": 0x2B, "g": 0x34, "h": 0x33,
    "i": 0x43, "j": 0x3B, "k": 0x42, "l": 0x4B, "m": 0x3A, "n": 0x31, "o": 0x44, "p": 0x4D,
    "q": 0x15, "r": 0x2D, "s": 0x1B, "t": 0x2C, "u": 0x3C, "v": 0x2A, "w": 0x1D, "x": 0x22,
    "y": 0x35, "z": 0x1A,
}  # fmt: skip
#: (unshifted, shifted, set-2 code) for the digit row and the punctuation keys.
_SYMBOL_KEYS = (
    ("1", "!", 0x16), ("2", "@", 0x1E), ("3", "#", 0x26), ("4", "$", 0x25), ("5", "%", 0x2E),
    ("6", "^", 0x36), ("7", "&", 0x3D), ("8", "*", 0x3E), ("9", "(", 0x46), ("0", ")", 0x45),
    ("`", "~", 0x0E), ("-", "_", 0x4E), ("=", "+", 0x55), ("[", "{", 0x54), ("]", "}", 0x5B),
    ("\\", "|", 0x5D), (";", ":", 0x4C), ("'", '"', 0x52), (",", "<", 0x41), (".", ">", 0x49),
    ("/", "?", 0x4A),
)  # fmt: skip

#: F1-F12 in order (set 2 numbers them irregularly: F7 is 0x83).
_FUNCTION_KEYS = (0x05, 0x06, 0x04, 0x0C, 0x03, 0x0B, 0x83, 0x0A, 0x01, 0x09, 0x78, 0x07)

#: Non-character keys: keysym -> (code, extended).
_SPECIAL: dict[int, tuple[int, bool]] = {
    XK_Return: (0x5A, False),
    XK_Escape: (0x76, False),
    XK_BackSpace: (0x66, False),
    XK_Tab: (0x0D, False),
    XK_ISO_Left_Tab: (0x0D, False),
    XK_Caps_Lock: (0x58, False),
    XK_Num_Lock: (0x77, False),
    XK_Scroll_Lock: (0x7E, False),
    XK_Shift_L: (0x12, False),
    XK_Shift_R: (0x59, False),
    XK_Control_L: (0x14, False),
    XK_Control_R: (0x14, True),
    XK_Alt_L: (0x11, False),
    XK_Meta_L: (0x11, False),  # some clients send Meta for the Alt keys
    XK_Alt_R: (0x11, True),
    XK_Meta_R: (0x11, True),
    XK_ISO_Level3_Shift: (0x11, True),
    XK_Super_L: (0x1F, True),
    XK_Super_R: (0x27, True),
    XK_Menu: (0x2F, True),
    # the cursor and editing block
    XK_Left: (0x6B, True),
    XK_Up: (0x75, True),
    XK_Right: (0x74, True),
    XK_Down: (0x72, True),
    XK_Home: (0x6C, True),
    XK_End: (0x69, True),
    XK_Page_Up: (0x7D, True),
    XK_Page_Down: (0x7A, True),
    XK_Insert: (0x70, True),
    XK_Delete: (0x71, True),
    XK_Sys_Req: (0x84, False),  # Alt+Print Screen, which a keyboard sends as its own code
    # the numeric keypad
    XK_KP_Enter: (0x5A, True),
    XK_KP_Divide: (0x4A, True),
    XK_KP_Multiply: (0x7C, False),
    XK_KP_Subtract: (0x7B, False),
    XK_KP_Add: (0x79, False),
    XK_KP_Decimal: (0x71, False),
    XK_KP_Separator: (0x71, False),
}
#: Keypad digits 0-9 (XK_KP_0..XK_KP_9) and, for Num Lock off, their cursor meanings
#: (XK_KP_Home .. XK_KP_Delete, in keysymdef.h's order: Home Left Up Right Down Prior Next End
#: Begin Insert Delete).
_KEYPAD_DIGITS = (0x70, 0x69, 0x72, 0x7A, 0x6B, 0x73, 0x74, 0x6C, 0x75, 0x7D)
_KEYPAD_CURSOR = (0x6C, 0x6B, 0x75, 0x74, 0x72, 0x7D, 0x7A, 0x69, 0x73, 0x70, 0x71)

#: The two keys whose sequences are not "prefix + code": Print Screen sends a fake left Shift
#: press around its own code, Pause sends Ctrl+NumLock with an E1 prefix and no break at all.
_SEQUENCES = {
    XK_Print: Key(bytes.fromhex("E0 12 E0 7C"), bytes.fromhex("E0 F0 7C E0 F0 12")),
    XK_Pause: Key(bytes.fromhex("E1 14 77 E1 F0 14 F0 77"), b""),
}


def _build() -> dict[int, Key]:
    table: dict[int, Key] = {}
    for ch, code in _LETTERS.items():
        table[ord(ch)] = table[ord(ch.upper())] = _key(code)
    for plain, shifted, code in _SYMBOL_KEYS:
        table[ord(plain)] = table[ord(shifted)] = _key(code)
    table[ord(" ")] = _key(0x29)
    for i, code in enumerate(_FUNCTION_KEYS):
        table[XK_F1 + i] = _key(code)
    for keysym, (code, extended) in _SPECIAL.items():
        table[keysym] = _key(code, extended)
    for i, code in enumerate(_KEYPAD_DIGITS):
        table[XK_KP_0 + i] = _key(code)
    for i, code in enumerate(_KEYPAD_CURSOR):
        table[XK_KP_Home + i] = _key(code)
    table.update(_SEQUENCES)
    return table


#: keysym -> Key for every key this module knows.
KEYMAP: dict[int, Key] = _build()


def lookup(keysym: int) -> Key | None:
    """The key for an X11 keysym, or None for one a US keyboard has no key for.

    Unicode keysyms (0x01000000 + code point), which some clients send for plain ASCII
    characters, are looked up as the Latin-1 keysym of the same character."""
    if UNICODE_KEYSYM + 0x20 <= keysym < UNICODE_KEYSYM + 0x7F:
        keysym -= UNICODE_KEYSYM
    return KEYMAP.get(keysym)


def scancodes(keysym: int, down: bool) -> bytes | None:
    """The set-2 bytes for pressing (``down``) or releasing a key; None if it is not mapped.

    A release of a key without a break code (Pause) gives ``b""``."""
    key = lookup(keysym)
    if key is None:
        return None
    return key.make if down else key.brk
