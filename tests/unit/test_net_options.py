"""--net values: the syntax users write, default and checked MACs, and one clear sentence for
every malformed value (UsageError, exit status 64)."""

from __future__ import annotations

import pytest

from kvmpy.errors import UsageError
from kvmpy.net import NetSpec, default_mac, format_mac, parse_mac, parse_net, parse_nets
from kvmpy.net.errors import NetworkError, NetworkPermissionError


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def test_tap_with_default_mac():
    spec = parse_net("tap,ifname=tap0")
    assert spec == NetSpec("tap", mac("52:54:00:12:34:56"), 0, ifname="tap0")
    assert spec.mac_text == "52:54:00:12:34:56"


def test_tap_with_mac_any_case_and_dashes():
    assert parse_net("tap,ifname=tap0,mac=52:54:00:AB:cd:01").mac_text == "52:54:00:ab:cd:01"
    assert parse_net("tap,mac=02-00-00-00-00-01,ifname=t").mac_text == "02:00:00:00:00:01"


def test_socket_forms():
    assert parse_net("socket,listen=/tmp/a.sock").listen == "/tmp/a.sock"
    assert parse_net("socket,connect=/tmp/a.sock").connect == "/tmp/a.sock"
    spec = parse_net("socket,udp=5555:5556,mac=52:54:00:00:00:01")
    assert spec.udp == (5555, 5556) and spec.kind == "socket"
    assert spec.mac_text == "52:54:00:00:00:01"


def test_none():
    assert parse_net("none") is None
    assert parse_nets(["none"]) == []
    assert parse_nets([]) == []


def test_default_macs_count_up_per_nic():
    specs = parse_nets(["socket,udp=1000:1001", "tap,ifname=t0", "socket,listen=/tmp/x"])
    assert [s.mac_text for s in specs] == ["52:54:00:12:34:56", "52:54:00:12:34:57",
                                           "52:54:00:12:34:58"]
    assert [s.index for s in specs] == [0, 1, 2]


def test_default_mac_carries_into_the_next_octet():
    assert format_mac(default_mac(0)) == "52:54:00:12:34:56"
    assert format_mac(default_mac(0xAA)) == "52:54:00:12:35:00"
    assert not default_mac(0x1234)[0] & 1  # still unicast


def test_an_explicit_mac_does_not_shift_the_defaults():
    specs = parse_nets(["tap,ifname=a,mac=52:54:00:00:00:09", "tap,ifname=b"])
    assert specs[1].mac_text == "52:54:00:12:34:57"


@pytest.mark.parametrize("text", ["tap,ifname=tap0,mac=52:54:00:12:34:56", "socket,listen=/tmp/s",
                                  "socket,connect=/run/x y", "socket,udp=1:65535,mac=02:00:00:00:00:02"])
def test_describe_round_trips(text):
    spec = parse_net(text)
    assert parse_net(spec.describe(), spec.index) == spec


@pytest.mark.parametrize("text, words", [
    ("52:54:00:12:34", "not valid"),
    ("52:54:00:12:34:5g", "not valid"),
    ("52:54:00:12:34:567", "not valid"),
    ("525400123456", "not valid"),
    ("52:54-00:12:34:56", "not valid"),
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"),
    ("53:54:00:12:34:56", "multicast"),
    ("00:00:00:00:00:00", "all zeros"),
])
def test_bad_macs(text, words):
    with pytest.raises(UsageError) as e:
        parse_mac(text)
    assert words in str(e.value)
    with pytest.raises(UsageError):
        parse_net(f"tap,ifname=tap0,mac={text}")


@pytest.mark.parametrize("text, words", [
    ("", "unknown kind"),
    ("user", "unknown kind"),
    ("tap", "ifname=NAME"),
    ("tap,tap0", "not KEY=VALUE"),
    ("tap,ifname=tap0,ifname=tap1", "given twice"),
    ("tap,ifname=tap0,listen=/x", "unknown key 'listen' for tap"),
    ("tap,ifname=", "cannot be empty"),
    ("tap,ifname=a-very-long-name0", "at most 15"),
    ("tap,ifname=tap/0", "without '/'"),
    ("tap,ifname=tap 0", "spaces"),
    ("tap,ifname=tap%d", "'%'"),
    ("tap,ifname=..", "not interface names"),
    ("socket", "exactly one of"),
    ("socket,mac=52:54:00:12:34:56", "exactly one of"),
    ("socket,listen=/a,connect=/b", "exactly one of"),
    ("socket,listen=", "empty"),
    ("socket,connect=/" + "x" * 120, "at most 107 bytes"),
    ("socket,udp=5555", "LOCAL_PORT:REMOTE_PORT"),
    ("socket,udp=0:5556", "local port '0'"),
    ("socket,udp=5555:70000", "remote port '70000'"),
    ("socket,udp=a:b", "local port 'a'"),
    ("socket,udp=5555:5555", "must differ"),
    ("socket,host=x,udp=1:2", "unknown key 'host'"),
    ("none,x=1", "takes no options"),
])
def test_malformed_values(text, words):
    with pytest.raises(UsageError) as e:
        parse_net(text)
    msg = str(e.value)
    assert words in msg
    assert "\n" not in msg and msg.startswith("--net")
    assert e.value.exit_status == 64


@pytest.mark.parametrize("values, words", [
    (["none", "tap,ifname=t"], "cannot be combined"),
    (["tap,ifname=a,mac=52:54:00:00:00:01", "tap,ifname=b,mac=52:54:00:00:00:01"], "same MAC address"),
    (["tap,ifname=a", "tap,ifname=b,mac=52:54:00:12:34:56"], "same MAC address"),
    (["tap,ifname=a", "tap,ifname=a"], "same TAP device"),
    (["socket,listen=/tmp/s", "socket,listen=/tmp/s"], "same listen path"),
    (["socket,connect=/tmp/s", "socket,connect=/tmp/s"], "same connect path"),
    (["socket,udp=5000:5001", "socket,udp=5000:5002"], "same local UDP port"),
])
def test_combinations_that_cannot_work(values, words):
    with pytest.raises(UsageError) as e:
        parse_nets(values)
    assert words in str(e.value)


def test_one_nic_may_connect_where_another_listens():
    specs = parse_nets(["socket,connect=/tmp/link", "socket,listen=/tmp/link"])
    assert [s.connect for s in specs] == ["/tmp/link", None]


def test_network_error_statuses_are_their_own():
    assert NetworkError.exit_status == 74
    assert NetworkPermissionError.exit_status == 77
    assert issubclass(NetworkPermissionError, NetworkError)
    assert NetworkError.exit_status != UsageError.exit_status
