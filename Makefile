# kvmpy: set-up, guest programs, images, tests and benchmarks.
#
#   make run     set everything up and boot a guest on this terminal
#   make test    set everything up and run the test suite
#   make bench   benchmarks against a C loop and QEMU (writes docs/performance.md)
#   make lint    ruff
#
# Everything kvmpy needs is installed from here: Debian packages through apt-get (as root, or
# through sudo), Python packages into .venv from PyPI, firmware and kernels unpacked from
# Debian's packages into build/ (never committed).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES = gcc binutils make acpica-tools $(IMAGES_APT_PACKAGES)
# Debian's SeaBIOS and VGA BIOS: small, and the firmware tier needs them on every host
FIRMWARE_BLOBS := build/debian/bios-256k.bin build/debian/vgabios-stdvga.bin build/debian/pxe-e1000.rom

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := all
.PHONY: all setup deps venv firmware images run test test-fast lint clean

all: setup firmware

setup: deps venv
	@# byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile kvmpy again
	@$(VPY) -m compileall -q kvmpy

# Debian packages: installed only when one is missing.
deps: build/.deps-stamp
build/.deps-stamp: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@mkdir -p build && touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml setup.py kvmpy/_ffi_build.py kvmpy/_vfio_ffi_build.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $@

firmware: deps
	$(MAKE) -C firmware

images: debian-images

include firmware/debian.mk
include firmware/images.mk
# benchmarks run kvmpy from the project's virtual environment
BENCH_PYTHON := $(VPY)
BENCH_SETUP := setup firmware
include bench/bench.mk

run: setup firmware $(FIRMWARE_BLOBS)
	@if [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; then \
	  $(MAKE) --no-print-directory debian-images; fi
	$(VENV)/bin/kvmpy run

test: setup firmware $(FIRMWARE_BLOBS)
	@if [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; then \
	  $(MAKE) --no-print-directory debian-images; fi
	$(VPY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(VPY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check kvmpy tests firmware bench examples

clean:
	rm -rf build $(VENV) kvmpy/*.so kvmpy/_kvm_ffi.c kvmpy/_vfio_ffi.c
	$(MAKE) -C firmware clean
