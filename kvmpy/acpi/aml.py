"""A small AML encoder: just the terms kvmpy's DSDTs need, each a function returning bytes.

Why an encoder and not iasl at build time: the tables depend on the machine (CPU count, which
devices exist), so they are built when the VM starts, without a compiler on the host. The
encoding follows ACPI 6.x chapter 20 (AML grammar) and chapter 6.4 (resource descriptors); the
unit tests check it against ACPICA's ``iasl``, byte for byte.

Conventions: every function returns the encoded AML as ``bytes``. Where a *data object* is
expected (``name``, ``package`` elements, ``return_``) a Python ``int`` becomes an Integer, a
``str`` becomes a String, and ``bytes`` are taken as already-encoded AML (a nested package, a
buffer, a name reference from ``name_string``). TermLists (``scope``, ``device``, ``method``
bodies) are sequences of encoded terms.

SeaBIOS parses the DSDT with a tiny parser of its own (src/fw/dsdt_parser.c) to learn which
devices exist (e.g. it skips PS/2 set-up without a PNP0303 device); it understands the objects
this module emits at namespace level (Scope, Device, Name with Byte/Word/DWord integers,
strings, buffers and packages, Method, OperationRegion, Field) but not a QWord integer directly
in a ``Name``; keep statements (If, Store, ...) inside Method bodies, where it skips them whole.

Statements and expressions (``if_``, ``store``, ``and_``, ``lequal``, ``create_dword_field``,
...) take *operands*: an ``int`` is an Integer, ``bytes`` are already-encoded AML -- ``arg(n)``,
``local(n)``, ``name_string(path)`` for a named object, or a nested expression. A ``str`` is a
String, as for data objects; name a variable with ``name_string``. A *target* (where a result
goes) is ``None`` for "nowhere" (NullName) or such encoded bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = [
    "pkg_length",
    "pkg",
    "name_seg",
    "name_string",
    "integer",
    "string",
    "buffer",
    "package",
    "data",
    "scope",
    "device",
    "name",
    "method",
    "return_",
    "eisaid",
    "io",
    "fixed_io",
    "irq_no_flags",
    "irq",
    "memory32_fixed",
    "interrupt",
    "word_bus_number",
    "word_io",
    "dword_memory",
    "qword_memory",
    "end_tag",
    "resource_template",
    "DataObject",
    "arg",
    "local",
    "operation_region",
    "field",
    "call",
    "if_",
    "else_",
    "store",
    "add",
    "subtract",
    "and_",
    "or_",
    "shift_left",
    "shift_right",
    "increment",
    "decrement",
    "find_set_right_bit",
    "land",
    "lor",
    "lnot",
    "lequal",
    "lgreater",
    "lless",
    "create_byte_field",
    "create_word_field",
    "create_dword_field",
    "create_qword_field",
    "REGION_SYSTEM_MEMORY",
    "REGION_SYSTEM_IO",
    "REGION_PCI_CONFIG",
    "ACCESS_ANY",
    "ACCESS_BYTE",
    "ACCESS_WORD",
    "ACCESS_DWORD",
    "ACCESS_QWORD",
    "UPDATE_PRESERVE",
    "UPDATE_WRITE_AS_ONES",
    "UPDATE_WRITE_AS_ZEROS",
]

# --- Opcodes (ACPI 6.x §20.3) ----------------------------------------------------------------
ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
METHOD_OP = 0x14
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
ROOT_CHAR = 0x5C  # '\'
PARENT_PREFIX_CHAR = 0x5E  # '^'
NULL_NAME = 0x00
RETURN_OP = 0xA4
LOCAL0_OP = 0x60  # Local0-Local7: 0x60-0x67
ARG0_OP = 0x68  # Arg0-Arg6: 0x68-0x6E
STORE_OP = 0x70
ADD_OP = 0x72
SUBTRACT_OP = 0x74
INCREMENT_OP = 0x75
DECREMENT_OP = 0x76
SHIFT_LEFT_OP = 0x79
SHIFT_RIGHT_OP = 0x7A
AND_OP = 0x7B
OR_OP = 0x7D
FIND_SET_RIGHT_BIT_OP = 0x82
CREATE_DWORD_FIELD_OP = 0x8A
CREATE_WORD_FIELD_OP = 0x8B
CREATE_BYTE_FIELD_OP = 0x8C
CREATE_QWORD_FIELD_OP = 0x8F
LAND_OP = 0x90
LOR_OP = 0x91
LNOT_OP = 0x92
LEQUAL_OP = 0x93
LGREATER_OP = 0x94
LLESS_OP = 0x95
IF_OP = 0xA0
ELSE_OP = 0xA1
OP_REGION_OP = 0x80  # after EXT_OP_PREFIX
FIELD_OP = 0x81  # after EXT_OP_PREFIX

#: OperationRegion address spaces (ACPI 6.x §19.6.100, RegionSpace keywords).
REGION_SYSTEM_MEMORY = 0x00
REGION_SYSTEM_IO = 0x01
REGION_PCI_CONFIG = 0x02

#: Field flags (§19.6.48): access type in bits 0-3, LockRule in bit 4, UpdateRule in bits 5-6.
ACCESS_ANY = 0
ACCESS_BYTE = 1
ACCESS_WORD = 2
ACCESS_DWORD = 3
ACCESS_QWORD = 4
UPDATE_PRESERVE = 0
UPDATE_WRITE_AS_ONES = 1
UPDATE_WRITE_AS_ZEROS = 2

DataObject = int | str | bytes

_LEAD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _LEAD_CHARS | frozenset(b"0123456789")


# --- Package lengths (§20.2.4) -----------------------------------------------------------------
def pkg_length(value: int) -> bytes:
    """Encode a PkgLength whose value (which counts the encoding's own bytes) is ``value``.

    Up to 63 fits in one byte (bits 0-5). Longer values take 1-3 more bytes: the lead byte holds
    the count of following bytes in bits 6-7 and the low nibble of the value in bits 0-3, the
    following bytes hold the rest of the value, least significant first.
    """
    if value < 0:
        raise ValueError("negative PkgLength")
    if value <= 0x3F:
        return bytes([value])
    for extra in (1, 2, 3):
        if value < 1 << (4 + 8 * extra):
            rest = (value >> 4).to_bytes(extra, "little")
            return bytes([(extra << 6) | (value & 0x0F)]) + rest
    raise ValueError(f"PkgLength {value} exceeds 2^28 - 1")


def pkg(content: bytes) -> bytes:
    """``content`` preceded by the PkgLength that covers it and the PkgLength itself.

    The encoding's size depends on the total it encodes, so pick the smallest encoding whose
    total still fits: 62 content bytes take a 1-byte PkgLength (63), 63 content bytes a 2-byte
    one (65); 4093 take 2 bytes (4095), 4094 take 3 (4097).
    """
    n = len(content)
    for size, limit in ((1, 0x3F), (2, 0xFFF), (3, 0xFFFFF), (4, 0xFFFFFFF)):
        if n + size <= limit:
            enc = pkg_length(n + size)
            assert len(enc) == size
            return enc + content
    raise ValueError(f"AML package of {n} bytes is too large")


# --- Names (§20.2.2) -----------------------------------------------------------------------------
def name_seg(seg: str) -> bytes:
    """One 4-character NameSeg; shorter names are padded with '_' as ASL does."""
    raw = seg.encode("ascii")
    if not 1 <= len(raw) <= 4 or raw[0] not in _LEAD_CHARS or any(c not in _NAME_CHARS for c in raw):
        raise ValueError(f"invalid ACPI name segment {seg!r}")
    return raw.ljust(4, b"_")


def name_string(path: str) -> bytes:
    r"""A NameString: optional '\' or '^'s, then segments joined by '.'.

    One segment is written bare, two with DualNamePrefix, more with MultiNamePrefix and a count;
    a bare '\' (the root itself) ends with NullName.
    """
    i = 0
    prefix = bytearray()
    if path.startswith("\\"):
        prefix.append(ROOT_CHAR)
        i = 1
    else:
        while i < len(path) and path[i] == "^":
            prefix.append(PARENT_PREFIX_CHAR)
            i += 1
    rest = path[i:]
    if not rest:
        if not prefix:
            raise ValueError("empty ACPI name")
        return bytes(prefix) + bytes([NULL_NAME])
    segs = [name_seg(s) for s in rest.split(".")]
    if len(segs) == 1:
        body = segs[0]
    elif len(segs) == 2:
        body = bytes([DUAL_NAME_PREFIX]) + segs[0] + segs[1]
    elif len(segs) <= 255:
        body = bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)
    else:
        raise ValueError("ACPI name path too deep")
    return bytes(prefix) + body


# --- Data objects (§20.2.3) ------------------------------------------------------------------------
def integer(value: int) -> bytes:
    """The shortest Integer encoding: ZeroOp, OneOp, then Byte/Word/DWord/QWord prefixes."""
    if value < 0 or value > 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"AML integer {value} out of range")
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    if value <= 0xFF:
        return bytes([BYTE_PREFIX, value])
    if value <= 0xFFFF:
        return bytes([WORD_PREFIX]) + struct.pack("<H", value)
    if value <= 0xFFFF_FFFF:
        return bytes([DWORD_PREFIX]) + struct.pack("<I", value)
    return bytes([QWORD_PREFIX]) + struct.pack("<Q", value)


def string(text: str) -> bytes:
    """A String: ASCII characters 0x01-0x7F, NUL-terminated."""
    raw = text.encode("ascii")
    if b"\0" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + raw + b"\0"


def data(value: DataObject) -> bytes:
    """Encode a data object: int -> Integer, str -> String, bytes -> already-encoded AML."""
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"cannot encode {type(value).__name__} as an AML data object")


def buffer(content: bytes, size: int | None = None) -> bytes:
    """Buffer(size){content}: BufferOp PkgLength BufferSize ByteList."""
    size = len(content) if size is None else size
    if size < len(content):
        raise ValueError("buffer size smaller than its initialiser")
    return bytes([BUFFER_OP]) + pkg(integer(size) + bytes(content))


def package(*elements: DataObject) -> bytes:
    """Package(){...}: PackageOp PkgLength NumElements PackageElementList (up to 255)."""
    if len(elements) > 255:
        raise ValueError("Package with more than 255 elements needs VarPackage")
    body = bytes([len(elements)]) + b"".join(data(e) for e in elements)
    return bytes([PACKAGE_OP]) + pkg(body)


def eisaid(ident: str) -> bytes:
    """EisaId("PNP0501"): three letters (5 bits each) and four hex digits, as a DWord.

    The compressed ID is stored most significant byte first, so "PNP0501" becomes the bytes
    41 D0 05 01 -- what SeaBIOS's DSDT parser compares against.
    """
    if len(ident) != 7 or not ident[:3].isalpha() or not ident[:3].isupper():
        raise ValueError(f"invalid EISA id {ident!r}")
    product = int(ident[3:], 16)
    vendor = 0
    for c in ident[:3]:
        vendor = (vendor << 5) | (ord(c) - 0x40)
    value = (vendor << 16) | product
    return bytes([DWORD_PREFIX]) + value.to_bytes(4, "big")


# --- Namespace modifiers and named objects (§20.2.5) ------------------------------------------------
def _terms(terms: Iterable[bytes]) -> bytes:
    return b"".join(terms)


def scope(path: str, *terms: bytes) -> bytes:
    """Scope(path){terms}."""
    return bytes([SCOPE_OP]) + pkg(name_string(path) + _terms(terms))


def device(path: str, *terms: bytes) -> bytes:
    """Device(path){terms}."""
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg(name_string(path) + _terms(terms))


def name(path: str, value: DataObject) -> bytes:
    """Name(path, value)."""
    return bytes([NAME_OP]) + name_string(path) + data(value)


def method(path: str, nargs: int, *terms: bytes, serialized: bool = False, sync_level: int = 0) -> bytes:
    """Method(path, nargs, Serialized/NotSerialized, sync_level){terms}."""
    if not 0 <= nargs <= 7 or not 0 <= sync_level <= 15:
        raise ValueError("method takes 0-7 arguments and a sync level 0-15")
    flags = nargs | (0x08 if serialized else 0) | (sync_level << 4)
    return bytes([METHOD_OP]) + pkg(name_string(path) + bytes([flags]) + _terms(terms))


def return_(value: DataObject) -> bytes:
    """Return(value)."""
    return bytes([RETURN_OP]) + data(value)


# --- Resource descriptors (§6.4) -------------------------------------------------------------------
def io(minimum: int, maximum: int, alignment: int, length: int, decode16: bool = True) -> bytes:
    """IO(Decode16, min, max, alignment, length): small item 0x08, 8 bytes."""
    return struct.pack("<BBHHBB", 0x47, int(decode16), minimum, maximum, alignment, length)


def fixed_io(base: int, length: int) -> bytes:
    """FixedIO(base, length): small item 0x09, 4 bytes (10-bit ISA decode)."""
    return struct.pack("<BHB", 0x4B, base, length)


def _irq_mask(irqs: Iterable[int]) -> int:
    mask = 0
    for n in irqs:
        if not 0 <= n <= 15:
            raise ValueError(f"ISA IRQ {n} out of range")
        mask |= 1 << n
    return mask


def irq_no_flags(*irqs: int) -> bytes:
    """IRQNoFlags(){irqs}: small item 0x04 without the flags byte (edge, active high)."""
    return struct.pack("<BH", 0x22, _irq_mask(irqs))


def irq(irqs: Iterable[int], edge: bool = True, active_low: bool = False, shared: bool = False) -> bytes:
    """IRQ(Edge/Level, ActiveHigh/ActiveLow, Exclusive/Shared){irqs}: small item 0x04 with flags."""
    flags = (0x01 if edge else 0) | (0x08 if active_low else 0) | (0x10 if shared else 0)
    return struct.pack("<BHB", 0x23, _irq_mask(irqs), flags)


def memory32_fixed(base: int, length: int, read_write: bool = True) -> bytes:
    """Memory32Fixed(ReadWrite/ReadOnly, base, length): large item 0x06, 12 bytes."""
    return struct.pack("<BHBII", 0x86, 9, int(read_write), base, length)


def interrupt(
    irqs: Iterable[int],
    consumer: bool = True,
    edge: bool = False,
    active_low: bool = True,
    shared: bool = True,
) -> bytes:
    """Interrupt(ResourceConsumer, Level, ActiveLow, Shared){irqs}: large item 0x09.

    The defaults describe a PCI interrupt (level, active low, shared), the usual link-device use.
    """
    nums = list(irqs)
    if not 1 <= len(nums) <= 255:
        raise ValueError("Interrupt needs 1-255 interrupt numbers")
    flags = (
        (0x01 if consumer else 0)
        | (0x02 if edge else 0)
        | (0x04 if active_low else 0)
        | (0x08 if shared else 0)
    )
    body = struct.pack("<BB", flags, len(nums)) + b"".join(struct.pack("<I", n) for n in nums)
    return struct.pack("<BH", 0x89, len(body)) + body


# Address space descriptors: resource type, then general flags (bit 0 consumer, bit 1
# subtractive decode, bit 2 min fixed, bit 3 max fixed), then type-specific flags.
_RES_MEMORY, _RES_IO, _RES_BUS = 0, 1, 2
_MIN_FIXED_MAX_FIXED = 0x0C


def _address_space(tag: int, fmt: str, kind: int, type_flags: int, minimum: int, maximum: int) -> bytes:
    if maximum < minimum:
        raise ValueError("address range ends before it starts")
    length = maximum - minimum + 1
    body = struct.pack(
        "<BBB" + fmt * 5, kind, _MIN_FIXED_MAX_FIXED, type_flags, 0, minimum, maximum, 0, length
    )
    return struct.pack("<BH", tag, len(body)) + body


def word_bus_number(minimum: int, maximum: int) -> bytes:
    """WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)."""
    return _address_space(0x88, "H", _RES_BUS, 0, minimum, maximum)


def word_io(minimum: int, maximum: int) -> bytes:
    """WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)."""
    return _address_space(0x88, "H", _RES_IO, 0x03, minimum, maximum)


def _memory_flags(cacheable: bool, read_write: bool) -> int:
    return (0x01 if read_write else 0) | (0x02 if cacheable else 0)


def dword_memory(minimum: int, maximum: int, cacheable: bool = False, read_write: bool = True) -> bytes:
    """DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable/Cacheable,
    ReadWrite, 0, min, max, 0, len)."""
    return _address_space(0x87, "I", _RES_MEMORY, _memory_flags(cacheable, read_write), minimum, maximum)


def qword_memory(minimum: int, maximum: int, cacheable: bool = False, read_write: bool = True) -> bytes:
    """QWordMemory(...): as ``dword_memory`` with 64-bit fields (windows above 4 GiB)."""
    return _address_space(0x8A, "Q", _RES_MEMORY, _memory_flags(cacheable, read_write), minimum, maximum)


def end_tag(descriptors: bytes, checksum: bool = True) -> bytes:
    """EndTag: small item 0x0F with a checksum making the whole template's bytes sum to 0.

    A checksum of 0 means "not checked" (what iasl emits); computing the real one is equally
    valid and lets a consumer verify the template.
    """
    if not checksum:
        return b"\x79\x00"
    return bytes([0x79, (-(sum(descriptors) + 0x79)) & 0xFF])


def resource_template(*descriptors: bytes, checksum: bool = True) -> bytes:
    """ResourceTemplate(){descriptors}: a Buffer of the descriptors and an EndTag."""
    body = b"".join(descriptors)
    return buffer(body + end_tag(body, checksum))


# --- Method arguments and locals (§20.2.6.1-2) ---------------------------------------------------
def arg(n: int) -> bytes:
    """ArgN (0-6): a method's Nth argument, as an operand or a target."""
    if not 0 <= n <= 6:
        raise ValueError("methods have Arg0-Arg6")
    return bytes([ARG0_OP + n])


def local(n: int) -> bytes:
    """LocalN (0-7): one of a method's eight local variables, as an operand or a target."""
    if not 0 <= n <= 7:
        raise ValueError("methods have Local0-Local7")
    return bytes([LOCAL0_OP + n])


def _target(target: bytes | None) -> bytes:
    """A Target: NullName when the result is only returned, else a SuperName."""
    return bytes([NULL_NAME]) if target is None else bytes(target)


# --- Operation regions and fields (§20.2.5.2) -------------------------------------------------------
def operation_region(path: str, space: int, offset: DataObject, length: DataObject) -> bytes:
    """OperationRegion(path, space, offset, length): a window of an address space.

    For ``REGION_PCI_CONFIG`` the function is the one whose ``_ADR`` the enclosing Device
    names (on the bus of the enclosing PCI root bridge), the offset a config-space offset.
    """
    if not 0 <= space <= 0xFF:
        raise ValueError(f"region space {space} is not a byte")
    head = bytes([EXT_OP_PREFIX, OP_REGION_OP]) + name_string(path) + bytes([space])
    return head + data(offset) + data(length)


def field(
    region: str,
    *units: tuple[str | None, int],
    access: int = ACCESS_BYTE,
    lock: bool = False,
    update: int = UPDATE_PRESERVE,
) -> bytes:
    """Field(region, access, Lock/NoLock, update){units}: named bit ranges of a region.

    Each unit is ``(name, bits)``; a name of ``None`` is a reserved gap (what ASL's
    ``Offset()`` and unnamed ``, bits`` entries compile to). The bit widths are written as
    PkgLength encodings of the width itself, which is how the grammar encodes them.
    """
    if not 0 <= access <= 5 or not 0 <= update <= 2:
        raise ValueError("field access type must be 0-5 and update rule 0-2")
    flags = access | (0x10 if lock else 0) | (update << 5)
    body = bytearray(name_string(region) + bytes([flags]))
    for unit_name, bits in units:
        if bits <= 0:
            raise ValueError(f"field unit {unit_name!r} needs a positive width")
        body += (name_seg(unit_name) if unit_name is not None else bytes([NULL_NAME])) + pkg_length(bits)
    return bytes([EXT_OP_PREFIX, FIELD_OP]) + pkg(bytes(body))


# --- Statements and expressions (§20.2.5.3-4) -----------------------------------------------------
def call(path: str, *args: DataObject) -> bytes:
    """Invoke method ``path`` with ``args``: in AML just its NameString and the arguments.

    The parser learns how many arguments follow from the method's declaration, so the method
    must exist in the namespace (or, for a table compiled separately, be declared External).
    """
    if len(args) > 7:
        raise ValueError("a method takes at most 7 arguments")
    return name_string(path) + b"".join(data(a) for a in args)


def if_(predicate: DataObject, *terms: bytes) -> bytes:
    """If(predicate){terms}: runs ``terms`` when the predicate is non-zero."""
    return bytes([IF_OP]) + pkg(data(predicate) + _terms(terms))


def else_(*terms: bytes) -> bytes:
    """Else{terms}: must directly follow an ``if_`` in the same TermList."""
    return bytes([ELSE_OP]) + pkg(_terms(terms))


def store(source: DataObject, target: bytes) -> bytes:
    """Store(source, target): converts to the target's type (e.g. truncates into a field)."""
    return bytes([STORE_OP]) + data(source) + bytes(target)


def _binary(op: int, a: DataObject, b: DataObject, target: bytes | None) -> bytes:
    return bytes([op]) + data(a) + data(b) + _target(target)


def add(a: DataObject, b: DataObject, target: bytes | None = None) -> bytes:
    """Add(a, b, target)."""
    return _binary(ADD_OP, a, b, target)


def subtract(a: DataObject, b: DataObject, target: bytes | None = None) -> bytes:
    """Subtract(a, b, target)."""
    return _binary(SUBTRACT_OP, a, b, target)


def and_(a: DataObject, b: DataObject, target: bytes | None = None) -> bytes:
    """And(a, b, target): bitwise and."""
    return _binary(AND_OP, a, b, target)


def or_(a: DataObject, b: DataObject, target: bytes | None = None) -> bytes:
    """Or(a, b, target): bitwise or."""
    return _binary(OR_OP, a, b, target)


def shift_left(a: DataObject, count: DataObject, target: bytes | None = None) -> bytes:
    """ShiftLeft(a, count, target)."""
    return _binary(SHIFT_LEFT_OP, a, count, target)


def shift_right(a: DataObject, count: DataObject, target: bytes | None = None) -> bytes:
    """ShiftRight(a, count, target)."""
    return _binary(SHIFT_RIGHT_OP, a, count, target)


def increment(target: bytes) -> bytes:
    """Increment(target)."""
    return bytes([INCREMENT_OP]) + bytes(target)


def decrement(target: bytes) -> bytes:
    """Decrement(target)."""
    return bytes([DECREMENT_OP]) + bytes(target)


def find_set_right_bit(operand: DataObject, target: bytes | None = None) -> bytes:
    """FindSetRightBit(operand, target): 1 + the index of the lowest set bit, 0 if none.

    What decodes an IRQ() descriptor's mask back into an IRQ number.
    """
    return bytes([FIND_SET_RIGHT_BIT_OP]) + data(operand) + _target(target)


def land(a: DataObject, b: DataObject) -> bytes:
    """LAnd(a, b): logical and (Ones or Zero)."""
    return bytes([LAND_OP]) + data(a) + data(b)


def lor(a: DataObject, b: DataObject) -> bytes:
    """LOr(a, b): logical or."""
    return bytes([LOR_OP]) + data(a) + data(b)


def lnot(a: DataObject) -> bytes:
    """LNot(a): logical not."""
    return bytes([LNOT_OP]) + data(a)


def lequal(a: DataObject, b: DataObject) -> bytes:
    """LEqual(a, b)."""
    return bytes([LEQUAL_OP]) + data(a) + data(b)


def lgreater(a: DataObject, b: DataObject) -> bytes:
    """LGreater(a, b)."""
    return bytes([LGREATER_OP]) + data(a) + data(b)


def lless(a: DataObject, b: DataObject) -> bytes:
    """LLess(a, b)."""
    return bytes([LLESS_OP]) + data(a) + data(b)


def _create_field(op: int, source: DataObject, byte_index: DataObject, path: str) -> bytes:
    return bytes([op]) + data(source) + data(byte_index) + name_string(path)


def create_byte_field(source: DataObject, byte_index: DataObject, path: str) -> bytes:
    """CreateByteField(source buffer, byte index, name)."""
    return _create_field(CREATE_BYTE_FIELD_OP, source, byte_index, path)


def create_word_field(source: DataObject, byte_index: DataObject, path: str) -> bytes:
    """CreateWordField(source buffer, byte index, name): e.g. an IRQ() descriptor's mask at 1."""
    return _create_field(CREATE_WORD_FIELD_OP, source, byte_index, path)


def create_dword_field(source: DataObject, byte_index: DataObject, path: str) -> bytes:
    """CreateDWordField(source buffer, byte index, name): e.g. an Interrupt() number at 5."""
    return _create_field(CREATE_DWORD_FIELD_OP, source, byte_index, path)


def create_qword_field(source: DataObject, byte_index: DataObject, path: str) -> bytes:
    """CreateQWordField(source buffer, byte index, name)."""
    return _create_field(CREATE_QWORD_FIELD_OP, source, byte_index, path)
