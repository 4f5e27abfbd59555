"""Which exits a hook or a recording sees: one small filter language for the CLI and Python.

Why one language for both: ``kvmpy trace --filter port=0x3f8-0x3ff,direction=out`` and
``tracer.on("io", port=range(0x3f8, 0x400), direction="out")`` must mean exactly the same
thing, so both build the same ``ExitFilter``, and its unit tests pin the meaning once.

The language (``--filter`` on the command line; ``parse_filter`` here)::

    filter := term ("," term)*            every term must hold (AND)
    term   := key ("=" | "!=") alt ("|" alt)*   any alternative may match (OR); "!=" negates
    alt    := number | number "-" number  (inclusive range) | number "+" count | word
    key    := reason | port | addr | direction | device | vcpu | size
              (aliases: kind=reason, address=addr, dir=direction, dev=device, cpu=vcpu)

Numbers are decimal or 0x-hexadecimal. Repeating ``--filter`` ORs whole filters. Examples:
``reason=io|mmio``, ``port=0x3f8+8,direction=out``, ``addr=0xfee00000-0xfee00fff``,
``device!=serial``, ``device=unowned`` (accesses nobody owns), ``vcpu=1``.

What a term means, precisely: ``port`` and ``addr`` test the first port or address of the
access; ``direction`` is ``in``/``read`` or ``out``/``write`` (the same thing for port and MMIO
accesses); an exit that has no such field (a ``shutdown`` has no port) never matches a term on
that field, negated or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import UsageError
from .events import ExitEvent

REASONS = ("io", "mmio", "hlt", "shutdown", "system_event", "internal_error", "fail_entry", "other")
#: kinds that mean "every exit" in ``tracer.on(kind)``
ANY_KINDS = ("exit", "any", "*", "all")
KEYS = ("reason", "port", "addr", "direction", "device", "vcpu", "size")
ALIASES = {"kind": "reason", "address": "addr", "dir": "direction", "dev": "device", "cpu": "vcpu"}
_NUMERIC = {"port", "addr", "vcpu", "size"}
_DIRECTIONS = {"in": False, "read": False, "out": True, "write": True}
#: the device names that select accesses nobody owns (events carry "" for them)
UNOWNED_NAMES = ("unowned", "none", "-")
_MISSING = object()


class FilterError(UsageError):
    """A filter that cannot be parsed or means nothing; the message says which part."""


@dataclass(frozen=True)
class Span:
    """An inclusive range of numbers (a single port is a span of one)."""

    lo: int
    hi: int

    def __contains__(self, n: object) -> bool:
        return isinstance(n, int) and self.lo <= n <= self.hi

    def __str__(self) -> str:
        return f"{self.lo:#x}" if self.lo == self.hi else f"{self.lo:#x}-{self.hi:#x}"


Value = Span | str | bool


@dataclass(frozen=True)
class Term:
    """One ``key=alt|alt`` condition."""

    key: str
    values: tuple[Value, ...]
    negate: bool = False

    def matches(self, event: ExitEvent) -> bool:
        if self.key == "direction":
            got = getattr(event, "is_write", _MISSING)
        else:
            got = getattr(event, self.key, _MISSING)
        if got is _MISSING or got is None:
            return False
        hit = any((got in v) if isinstance(v, Span) else got == v for v in self.values)
        return hit != self.negate

    def __str__(self) -> str:
        def show(v: Value) -> str:
            if isinstance(v, bool):
                return "out" if v else "in"
            if v == "" and self.key == "device":
                return "unowned"
            return str(v)

        return f"{self.key}{'!=' if self.negate else '='}{'|'.join(show(v) for v in self.values)}"


@dataclass(frozen=True)
class ExitFilter:
    """All terms must hold. The empty filter matches every exit."""

    terms: tuple[Term, ...] = ()

    def matches(self, event: ExitEvent) -> bool:
        for t in self.terms:
            if not t.matches(event):
                return False
        return True

    __call__ = matches

    def __and__(self, other: ExitFilter) -> ExitFilter:
        return ExitFilter(self.terms + other.terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms) or "(every exit)"


@dataclass(frozen=True)
class AnyFilter:
    """Any of several filters (repeated ``--filter`` options)."""

    filters: tuple[ExitFilter, ...]

    def matches(self, event: ExitEvent) -> bool:
        for f in self.filters:
            if f.matches(event):
                return True
        return False

    __call__ = matches

    def __str__(self) -> str:
        return " or ".join(f"({f})" for f in self.filters)


Predicate = Callable[[ExitEvent], bool]


# --- parsing ------------------------------------------------------------------------------
def _number(text: str, where: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise FilterError(f"filter {where!r}: {text!r} is not a number (use decimal or 0x...)") from None
    if n < 0:
        raise FilterError(f"filter {where!r}: {text!r} is negative")
    return n


def _parse_alt(key: str, text: str, where: str) -> Value:
    text = text.strip()
    if not text:
        raise FilterError(f"filter {where!r}: an empty value for {key!r}")
    if key in _NUMERIC:
        if "+" in text:
            base, _, count = text.partition("+")
            lo, n = _number(base, where), _number(count, where)
            if n == 0:
                raise FilterError(f"filter {where!r}: {text!r} is an empty range")
            return Span(lo, lo + n - 1)
        if "-" in text:
            a, _, b = text.partition("-")
            lo, hi = _number(a, where), _number(b, where)
            if hi < lo:
                raise FilterError(f"filter {where!r}: range {text!r} ends before it starts")
            return Span(lo, hi)
        n = _number(text, where)
        return Span(n, n)
    if key == "direction":
        d = text.lower()
        if d not in _DIRECTIONS:
            raise FilterError(f"filter {where!r}: direction must be in, out, read or write, not {text!r}")
        return _DIRECTIONS[d]
    if key == "reason":
        r = text.lower()
        if r not in REASONS:
            raise FilterError(f"filter {where!r}: unknown exit reason {text!r} "
                              f"(known: {', '.join(REASONS)})")
        return r
    # device: any name; "unowned" selects accesses nobody owns
    return "" if text.lower() in UNOWNED_NAMES else text


def canonical_key(key: str, where: str = "") -> str:
    k = key.strip().lower()
    k = ALIASES.get(k, k)
    if k not in KEYS:
        raise FilterError(f"filter {where or key!r}: unknown key {key.strip()!r} "
                          f"(known: {', '.join(KEYS)})")
    return k


def parse_term(text: str, where: str | None = None) -> Term:
    where = where if where is not None else text
    if "!=" in text:
        key, _, rest = text.partition("!=")
        negate = True
    elif "=" in text:
        key, _, rest = text.partition("=")
        negate = False
    else:
        raise FilterError(f"filter {where!r}: {text.strip()!r} is not key=value")
    k = canonical_key(key, where)
    values = tuple(_parse_alt(k, alt, where) for alt in rest.split("|"))
    return Term(k, values, negate)


def parse_filter(text: str) -> ExitFilter:
    """``"port=0x3f8-0x3ff,direction=out"`` -> an ExitFilter (raises FilterError)."""
    if not text.strip():
        raise FilterError("an empty filter: use key=value terms such as port=0x3f8,direction=out")
    return ExitFilter(tuple(parse_term(part, text) for part in text.split(",")))


def parse_filters(texts: Iterable[str]) -> ExitFilter | AnyFilter | None:
    """Several ``--filter`` options, ORed; None when there are none (record every exit)."""
    fs = tuple(parse_filter(t) for t in texts)
    if not fs:
        return None
    return fs[0] if len(fs) == 1 else AnyFilter(fs)


# --- from Python keyword arguments ----------------------------------------------------------
def _values_from_python(key: str, value: object) -> tuple[Value, ...]:
    where = f"{key}={value!r}"
    if isinstance(value, str):
        return tuple(_parse_alt(key, alt, where) for alt in value.split("|"))
    if isinstance(value, bool):
        if key == "direction":
            return (value,)
        raise FilterError(f"filter {where}: a boolean means nothing for {key!r}")
    if isinstance(value, int):
        if key not in _NUMERIC:
            raise FilterError(f"filter {where}: {key!r} takes a name, not a number")
        if value < 0:
            raise FilterError(f"filter {where}: {value} is negative")
        return (Span(value, value),)
    if isinstance(value, range):
        if key not in _NUMERIC or value.step != 1 or len(value) == 0:
            raise FilterError(f"filter {where}: only a non-empty range(lo, hi) of step 1 is allowed "
                              f"for port, addr, vcpu or size")
        return (Span(value.start, value.stop - 1),)
    if isinstance(value, Iterable):
        out: list[Value] = []
        for v in value:
            out.extend(_values_from_python(key, v))
        if not out:
            raise FilterError(f"filter {where}: no values given")
        return tuple(out)
    raise FilterError(f"filter {where}: cannot use a {type(value).__name__} as a value")


def filter_from_kwargs(kind: str | None = None, **kwargs: object) -> ExitFilter:
    """``tracer.on("io", port=0x3f8, direction="out")``: the kind and keyword filters as one
    ExitFilter. Values are an int, a ``range``, a string in the filter language (``"0x3f8-0x3ff"``,
    ``"serial|i8042"``, ``"out"``) or a list of those (any may match). A key ending in ``_not``
    (``device_not="serial"``) negates."""
    terms: list[Term] = []
    if kind is not None and kind.lower() not in ANY_KINDS:
        k = kind.lower()
        if k not in REASONS:
            raise FilterError(f"unknown exit kind {kind!r} (known: {', '.join(REASONS + ANY_KINDS)})")
        terms.append(Term("reason", (k,)))
    for key, value in kwargs.items():
        negate = key.endswith("_not")
        k = canonical_key(key[:-4] if negate else key, f"{key}={value!r}")
        terms.append(Term(k, _values_from_python(k, value), negate))
    return ExitFilter(tuple(terms))
