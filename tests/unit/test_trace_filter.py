"""The filter language: what each term selects, exactly, and the errors for what it cannot mean."""

from __future__ import annotations

import pytest

from kvmpy.errors import UsageError
from kvmpy.events import HltExit, IoExit, MmioExit, ShutdownExit
from kvmpy.tracefilter import (
    AnyFilter,
    ExitFilter,
    FilterError,
    Span,
    filter_from_kwargs,
    parse_filter,
    parse_filters,
)


def io(port, out=True, size=1, vcpu=0, device="serial", value=0x41):
    return IoExit(vcpu, 0.0, port, size, out, 1, value.to_bytes(size, "little"), device)


def mmio(addr, write=False, size=4, vcpu=0, device=""):
    return MmioExit(vcpu, 0.0, addr, size, write, 0, device)


EVENTS = [
    io(0x3F8), io(0x3F9), io(0x3FD, out=False), io(0x3FF), io(0x400, device=""), io(0x60, device="i8042"),
    io(0x64, out=False, device="i8042"), io(0x510, size=2, device="fw_cfg", vcpu=1),
    mmio(0xFEE00000, device="lapic"), mmio(0xFEE00FFF, write=True, size=1, device="lapic"),
    mmio(0xD0000000), HltExit(0, 0.0), ShutdownExit(1, 0.0),
]


def selected(f):
    return [e for e in EVENTS if f.matches(e)]


def test_port_range_is_inclusive_and_direction_narrows():
    f = parse_filter("port=0x3f8-0x3ff,direction=out")
    assert selected(f) == [EVENTS[0], EVENTS[1], EVENTS[3]]


def test_base_plus_count_and_alternatives():
    assert selected(parse_filter("port=0x3f8+8")) == EVENTS[0:4]
    assert selected(parse_filter("port=0x60|0x64")) == EVENTS[5:7]
    assert selected(parse_filter("port=96|0x64,dir=in")) == [EVENTS[6]]


def test_in_and_out_mean_read_and_write_for_mmio_too():
    assert selected(parse_filter("reason=mmio,direction=write")) == [EVENTS[9]]
    assert selected(parse_filter("reason=mmio,direction=in")) == [EVENTS[8], EVENTS[10]]
    assert selected(parse_filter("dir=read")) == selected(parse_filter("dir=in"))


def test_addr_ranges_match_the_first_byte():
    assert selected(parse_filter("addr=0xfee00000-0xfee00fff")) == EVENTS[8:10]
    assert selected(parse_filter("address=0xfee00fff")) == [EVENTS[9]]


def test_device_names_and_unowned():
    assert selected(parse_filter("device=i8042")) == EVENTS[5:7]
    assert selected(parse_filter("dev=unowned")) == [EVENTS[4], EVENTS[10]]
    assert selected(parse_filter("device=serial|fw_cfg")) == EVENTS[0:4] + [EVENTS[7]]


def test_negation_and_fields_an_exit_does_not_have():
    # a hlt has no device: no term on device matches it, negated or not
    f = parse_filter("device!=serial")
    assert HltExit(0, 0.0) not in selected(f)
    assert selected(f) == EVENTS[4:11]
    assert selected(parse_filter("port!=0x3f8")) == [e for e in EVENTS[:8] if e.port != 0x3F8]


def test_reason_vcpu_and_size():
    assert selected(parse_filter("reason=hlt|shutdown")) == EVENTS[11:13]
    assert selected(parse_filter("vcpu=1")) == [EVENTS[7], EVENTS[12]]
    assert selected(parse_filter("cpu=0,size=2-4")) == [EVENTS[8], EVENTS[10]]
    assert selected(parse_filter("kind=io,size=2")) == [EVENTS[7]]


def test_repeated_filters_are_ored():
    f = parse_filters(["port=0x60", "reason=shutdown"])
    assert isinstance(f, AnyFilter)
    assert selected(f) == [EVENTS[5], EVENTS[12]]
    assert parse_filters([]) is None


def test_terms_are_anded_and_print_back_as_they_parse():
    f = parse_filter("port=0x3f8-0x3ff, direction=out ,device!=unowned")
    assert parse_filter(str(f)) == f
    assert str(parse_filter("port=0x3f8")) == "port=0x3f8"
    assert ExitFilter().matches(EVENTS[0]) and str(ExitFilter()) == "(every exit)"


@pytest.mark.parametrize("text,words", [
    ("", ["empty filter"]),
    ("port", ["not key=value"]),
    ("colour=red", ["unknown key", "colour"]),
    ("port=0x3g8", ["'0x3g8' is not a number"]),
    ("port=0x3ff-0x3f8", ["ends before it starts"]),
    ("port=0x3f8+0", ["empty range"]),
    ("direction=sideways", ["in, out, read or write"]),
    ("reason=vmcall", ["unknown exit reason", "io, mmio"]),
    ("port=", ["empty value"]),
    ("port=0x3f8,", ["not key=value"]),
])
def test_errors_say_what_is_wrong(text, words):
    with pytest.raises(FilterError) as e:
        parse_filter(text)
    assert isinstance(e.value, UsageError)  # the CLI prints it as one sentence, status 64
    for w in words:
        assert w in str(e.value)


def test_python_keywords_build_the_same_filter():
    want = parse_filter("reason=io,port=0x3f8,direction=out")
    assert filter_from_kwargs("io", port=0x3F8, direction="out") == want
    assert filter_from_kwargs("exit", port=range(0x3F8, 0x400)) == parse_filter("port=0x3f8-0x3ff")
    assert filter_from_kwargs(None, port="0x3f8-0x3ff") == parse_filter("port=0x3f8-0x3ff")
    f = filter_from_kwargs(port=[0x60, range(0x70, 0x72)])
    assert f.terms[0].values == (Span(0x60, 0x60), Span(0x70, 0x71))
    assert selected(filter_from_kwargs("io", device_not="serial", vcpu=0)) == EVENTS[4:7]
    assert filter_from_kwargs("any") == ExitFilter()
    assert selected(filter_from_kwargs("mmio", direction=True)) == [EVENTS[9]]


@pytest.mark.parametrize("kwargs,words", [
    ({"kind": "vmexit"}, ["unknown exit kind"]),
    ({"port": -1}, ["negative"]),
    ({"device": 3}, ["takes a name"]),
    ({"port": range(10, 0, -1)}, ["range(lo, hi)"]),
    ({"port": 1.5}, ["cannot use a float"]),
    ({"port": []}, ["no values"]),
    ({"colour": "red"}, ["unknown key"]),
])
def test_python_keyword_errors(kwargs, words):
    kind = kwargs.pop("kind", "io")
    with pytest.raises(FilterError) as e:
        filter_from_kwargs(kind, **kwargs)
    for w in words:
        assert w in str(e.value)
