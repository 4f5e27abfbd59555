import pytest

from kvmpy.errors import ResourceError, UsageError
from kvmpy.options import check_memory, parse_boot_args, parse_memory


@pytest.mark.parametrize(
    "text,value",
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("256", 256 << 20),
        ("1.5G", 3 << 29),
        ("65536k", 64 << 20),
        ("1GiB", 1 << 30),
    ],
)
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12Q", "-5M", "1..5G"])
def test_parse_memory_rejects_malformed(text):
    with pytest.raises(UsageError):
        parse_memory(text)


def test_memory_too_small_and_too_large():
    with pytest.raises(ResourceError, match="too small"):
        check_memory(1 << 20)
    with pytest.raises(ResourceError, match="more than this host has"):
        check_memory(1 << 50)


def test_boot_args():
    cfg = parse_boot_args(
        [
            "--kernel",
            "k",
            "--initrd",
            "a",
            "--initrd",
            "b",
            "--append",
            "x y",
            "--memory",
            "64M",
            "--cpus",
            "2",
        ]
    )
    assert [str(p) for p in cfg.initrds] == ["a", "b"]
    assert cfg.append == "x y" and cfg.memory == 64 << 20 and cfg.cpus == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--kernel", "k", "--cpus", "0"],
        ["--kernel", "k", "--cpus", "two"],
        ["--kernel", "k", "--bogus"],
        ["--kernel", "k", "--timeout", "soon"],
    ],
)
def test_boot_args_errors(argv):
    with pytest.raises(UsageError):
        parse_boot_args(argv)
