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


def test_hvm_options():
    from kvmpy.options import place_drives

    cfg = parse_boot_args(["--hvm", "disk.img", "--cdrom", "cd.iso",
                           "--drive", "file=data.img,readonly=on", "--boot", "d"])
    assert cfg.hvm and cfg.kernel is None and cfg.boot_order == "d"
    placed = place_drives(cfg.drives)
    assert placed[0].file.name == "disk.img" and not placed[0].readonly
    assert placed[1].file.name == "data.img" and placed[1].readonly
    assert placed[2].file.name == "cd.iso" and placed[2].media == "cdrom" and placed[2].readonly


@pytest.mark.parametrize("argv", [
    ["--hvm", "d.img", "--kernel", "k"],
    ["--bios", "b.bin", "--kernel", "k"],
    ["--drive", "file=a.img,media=tape"],
    ["--drive", "file=a.img,readonly=maybe"],
    ["--drive", "file=a.img,index=7"],
    ["--drive", "file=a.img,format=qcow2"],
    ["--drive", "media=disk"],
    ["--drive", "file=a.img,colour=blue"],
    ["--hvm", "d.img", "--boot", "x"],
    ["--drive", "file=a,index=0", "--drive", "file=b,index=0"],
    ["--hvm", "a", "--drive", "file=b", "--drive", "file=c", "--drive", "file=d", "--drive", "file=e"],
])
def test_hvm_option_errors(argv):
    with pytest.raises(UsageError):
        parse_boot_args(argv)


def test_direct_boot_with_drives():
    cfg = parse_boot_args(["--kernel", "k", "--drive", "file=d.img", "--cdrom", "c.iso"])
    assert not cfg.hvm and len(cfg.drives) == 2


def test_passthrough_addresses_are_canonical_and_checked():
    cfg = parse_boot_args(["--kernel", "k", "--passthrough", "03:00.0", "--passthrough", "0000:04:00.1"])
    assert cfg.passthrough == ["0000:03:00.0", "0000:04:00.1"]
    for bad in (["--passthrough", "3:00"], ["--passthrough", "03:00.0", "--passthrough", "0000:03:00.0"],
                ["--passthrough", "03:00.0", "--iommu", "vtd"],
                ["--passthrough", "03:00.0", "--irqchip", "split"]):
        with pytest.raises(UsageError):
            parse_boot_args(["--kernel", "k", *bad])


def test_irqchip_choice():
    assert not parse_boot_args(["--kernel", "k"]).split_irqchip
    assert parse_boot_args(["--kernel", "k", "--iommu", "vtd"]).split_irqchip
    assert not parse_boot_args(["--kernel", "k", "--iommu", "vtd,intremap=off"]).split_irqchip
    assert parse_boot_args(["--kernel", "k", "--irqchip", "split"]).split_irqchip
    with pytest.raises(UsageError):
        parse_boot_args(["--kernel", "k", "--iommu", "vtd", "--irqchip", "kernel"])
