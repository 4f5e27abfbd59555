# bench/bench.mk — benchmarks: kvmpy against a C loop and QEMU on the same guests, alternating.
#
# Included by the top-level Makefile (`include bench/bench.mk`), or on its own:
#     make -f bench/bench.mk bench
# Paths are relative to the repository root.
#
#   make bench-deps   installs Debian's qemu-system-x86 (apt-get) unless qemu-system-x86_64 is there
#   make bench        builds the baselines and runs bench/run_bench.py, which writes its sections
#                     of docs/performance.md (exit round trip always; boot to init only on a
#                     hardware-assisted host: on a PVM-backed one the report says why it was skipped);
#                     runs bench-net and bench-dma first
#   make bench-net    e1000 frames and bytes per second (bench/net_bench.py): the e1000 driver program
#                     (build/firmware/e1000.elf) under kvmpy and QEMU's e1000, UDP backend on loopback
#                     and, as root, TAP in a namespace it makes and removes; kvmpy's exits per frame
#                     from its tracer; writes its section of docs/performance.md (a few minutes)
#   make bench-dma    the cost of DMA translation (bench/dma_bench.py): our DMA program
#                     (build/firmware/dma_bench.elf: edu copies, IDE READ DMA) under kvmpy and QEMU,
#                     each without an IOMMU, with VT-d (kvmpy --iommu vtd, QEMU q35 -device
#                     intel-iommu) and with an IOTLB flush per transfer; kvmpy's exits per transfer
#                     from its tracer; writes its section of docs/performance.md (a few minutes);
#                     runs bench-dma-linux first
#   make bench-dma-linux
#                     the same under Linux (bench/linux_dma_bench.py): Debian's kernel and the test
#                     initramfs under kvmpy --iommu vtd with intel_iommu=on,strict, intel_iommu=on
#                     (lazy), iommu=pt and without an IOMMU (and QEMU q35 + intel-iommu the same
#                     way), O_DIRECT reads from the IDE data disk and ICMP echoes through the e1000
#                     timed inside the guest; writes its section of docs/performance.md. Needs a
#                     hardware-assisted host: on a PVM-backed one the section says why it was skipped
#   make bench-trace  what tracing costs per exit (bench/trace_overhead.py): the exit-loop guest
#                     under the loop without its tracer test, tracing off, --stats and --events;
#                     writes its section of docs/performance.md
# Knobs: BENCH_RUNS (runs of each, alternating; default 5), BENCH_EXITS (default 100000),
#        BENCH_ARGS (more run_bench.py options, e.g. --no-write),
#        TRACE_BENCH_RUNS (rounds of bench-trace; default 15),
#        NET_BENCH_RUNS (runs of each in bench-net; default 5), NET_BENCH_FRAMES (frame counts
#        besides the frames=2 start-up run; default 64,256), NET_BENCH_ARGS (more net_bench.py
#        options, e.g. --backends udp or --no-write),
#        DMA_BENCH_RUNS (runs of each in bench-dma; default 3), DMA_BENCH_ARGS (more dma_bench.py
#        options, e.g. --devices ide, --ide-count 2000, --no-qemu-pc or --no-write),
#        DMA_LINUX_RUNS (boots of each mode in bench-dma-linux; default 3), DMA_LINUX_ROUNDS (disk
#        and network rounds per boot; default 3), DMA_LINUX_MIB (MiB read per round; default 64),
#        DMA_LINUX_PINGS (echoes per round; default 2000), DMA_LINUX_ARGS (more linux_dma_bench.py
#        options, e.g. --modes strict,lazy, --no-qemu, --size 56 or --no-write).
#
# Outputs: build/bench/exitloop (C VMM), build/bench/exitloop-<N>.elf (multiboot guest making N
# exits; the 1-exit one measures start-up, so the marginal exit rate can be separated from it).

ifndef KVMPY_BENCH_MK
KVMPY_BENCH_MK := 1

_kvmpy_bench_saved_goal := $(.DEFAULT_GOAL)

include firmware/debian.mk

PYTHON ?= python3
BENCH_PYTHON ?= $(PYTHON)
CC ?= gcc
BENCH_DIR := build/bench
BENCH_RUNS ?= 5
BENCH_EXITS ?= 100000
BENCH_ARGS ?=
TRACE_BENCH_RUNS ?= 15
NET_BENCH_RUNS ?= 5
NET_BENCH_FRAMES ?= 64,256
NET_BENCH_ARGS ?=
DMA_BENCH_RUNS ?= 3
DMA_BENCH_ARGS ?=
DMA_LINUX_RUNS ?= 3
DMA_LINUX_ROUNDS ?= 3
DMA_LINUX_MIB ?= 64
DMA_LINUX_PINGS ?= 2000
DMA_LINUX_ARGS ?=
QEMU_SYSTEM ?= qemu-system-x86_64

.PHONY: bench bench-deps bench-build bench-trace bench-net bench-dma bench-dma-linux

bench-deps:
	@command -v $(QEMU_SYSTEM) >/dev/null 2>&1 || { \
	  echo "bench.mk: installing Debian's qemu-system-x86"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86; }

$(BENCH_DIR)/exitloop: bench/exitloop.c
	@mkdir -p $(BENCH_DIR)
	$(CC) -O2 -Wall -Wextra -o $@ $<

# -N: one RWX segment at 1 MiB, no ELF headers loaded below it (into the BIOS area).
$(BENCH_DIR)/exitloop-%.elf: bench/exitloop_guest.S
	@mkdir -p $(BENCH_DIR)
	$(CC) -m32 -c -DEXITS=$* -o $(BENCH_DIR)/exitloop-$*.o $<
	ld -m elf_i386 -N --no-warn-rwx-segments --build-id=none -Ttext=0x100000 -e _start \
	    -o $@ $(BENCH_DIR)/exitloop-$*.o

bench-build: $(BENCH_DIR)/exitloop $(BENCH_DIR)/exitloop-$(BENCH_EXITS).elf $(BENCH_DIR)/exitloop-1.elf

bench: bench-deps bench-build $(BENCH_SETUP) bench-net bench-dma
	$(BENCH_PYTHON) bench/run_bench.py --runs $(BENCH_RUNS) --exits $(BENCH_EXITS) \
	    --exitloop $(BENCH_DIR)/exitloop --guest $(BENCH_DIR)/exitloop-$(BENCH_EXITS).elf \
	    --guest-startup $(BENCH_DIR)/exitloop-1.elf --qemu $(QEMU_SYSTEM) $(BENCH_ARGS)

# Tracing overhead needs no QEMU: only the 100k-exit guest (and kvmpy itself).
bench-trace: $(BENCH_DIR)/exitloop-$(BENCH_EXITS).elf $(BENCH_SETUP)
	$(BENCH_PYTHON) bench/trace_overhead.py --guest $(BENCH_DIR)/exitloop-$(BENCH_EXITS).elf \
	    --runs $(TRACE_BENCH_RUNS) --write

# The e1000 driver program against QEMU's e1000 (firmware/tests/e1000.c; `make -C firmware e1000`
# brings build/firmware/e1000.elf up to date).
bench-net: bench-deps $(BENCH_SETUP)
	$(MAKE) -C firmware e1000
	$(BENCH_PYTHON) bench/net_bench.py --runs $(NET_BENCH_RUNS) --frames $(NET_BENCH_FRAMES) \
	    --elf build/firmware/e1000.elf --qemu $(QEMU_SYSTEM) $(NET_BENCH_ARGS)

# The DMA program against QEMU's edu and IDE, with and without VT-d (firmware/tests/dma_bench.c;
# `make -C firmware dma_bench` brings build/firmware/dma_bench.elf up to date).
bench-dma: bench-deps $(BENCH_SETUP) bench-dma-linux
	$(MAKE) -C firmware dma_bench
	$(BENCH_PYTHON) bench/dma_bench.py --runs $(DMA_BENCH_RUNS) --elf build/firmware/dma_bench.elf \
	    --qemu $(QEMU_SYSTEM) $(DMA_BENCH_ARGS)

# Linux under VT-d, strict / lazy / passthrough / none (tests/guest/test_linux_vtd.py's guest and
# peer). The script builds the kernel and build/images/initrd.gz itself, and only where it runs:
# on a PVM-backed host it writes the skipped section and builds nothing.
bench-dma-linux: bench-deps $(BENCH_SETUP)
	$(BENCH_PYTHON) bench/linux_dma_bench.py --runs $(DMA_LINUX_RUNS) --rounds $(DMA_LINUX_ROUNDS) \
	    --mib $(DMA_LINUX_MIB) --pings $(DMA_LINUX_PINGS) --qemu $(QEMU_SYSTEM) $(DMA_LINUX_ARGS)

ifeq ($(words $(MAKEFILE_LIST)),2)
# Used on its own (make -f bench/bench.mk): `make -f bench/bench.mk` runs the benchmarks.
.DEFAULT_GOAL := bench
else
.DEFAULT_GOAL := $(_kvmpy_bench_saved_goal)
endif

endif # KVMPY_BENCH_MK
