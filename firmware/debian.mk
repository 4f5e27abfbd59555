# firmware/debian.mk — real parts taken from Debian's packages, and the test initramfs.
#
# Included by the top-level Makefile (`include firmware/debian.mk`); it also works on its own:
#     make -f firmware/debian.mk debian-images
# Every path is relative to the repository root (run make there, or with -C).
#
# Outputs (all under build/, which git ignores; each is a real file, so make is incremental):
#   build/debian/vmlinuz             Debian's kernel (bzImage) from the versioned package that
#                                    linux-image-amd64 depends on (linux-image-6.x-amd64); only the
#                                    bzImage is unpacked, not the ~400 MB of modules.
#                                    build/debian/vmlinuz.pkg names the package and version.
#   build/debian/busybox             static busybox (busybox-static)
#   build/debian/bios.bin            SeaBIOS 128 KiB image        (seabios)
#   build/debian/bios-256k.bin       SeaBIOS 256 KiB image        (seabios)
#   build/debian/vgabios-stdvga.bin  SeaBIOS's VGA BIOS for the Bochs/stdvga adapter (seabios)
#   build/debian/sample.bin          1 MiB of deterministic bytes, packed as /data/sample.bin
#   build/initramfs.cpio.gz          newc cpio: busybox + applet links, /dev, /proc, /sys,
#                                    /data/sample.bin and tests/guest/initramfs/init as /init
# Phony: debian-images (all of the above), debian-clean.
#
# Needs: apt lists (`apt-get update` once), apt-get, dpkg-deb, tar, python3. Nothing is installed
# on the host: packages are fetched with `apt-get download` and unpacked with dpkg-deb. The cpio
# archive is written by Python (tests/guest/initramfs/mkinitramfs.py), so the `cpio` tool is not
# needed.
#
# What /init prints on the console, one marker a line:
#   KVMPY-INIT-START
#   KVMPY-CPUS <processors in /proc/cpuinfo>
#   KVMPY-MEM <MemTotal in kB>
#   KVMPY-CMDLINE <contents of /proc/cmdline>
#   KVMPY-SHA256 <sha256 of /data/sample.bin>
#   KVMPY-BOOT-OK
#   KVMPY-ACTION <poweroff|reboot|shell>
# then, by `kvmpy.action=` on the kernel command line (default poweroff):
#   poweroff  -> `poweroff -f`
#   reboot    -> `reboot -f`
#   shell     -> prints KVMPY-SHELL-READY, runs `setsid cttyhack sh` on the console; when that
#                shell exits, `poweroff -f`.
#
# Kernel command lines for this kernel and initramfs:
#   hardware-assisted host (VT-x/AMD-V):
#       console=ttyS0 panic=-1 kvmpy.action=poweroff
#     (add `quiet` for a short log; `reboot=k` makes a reboot go straight through the i8042 reset.)
#   PVM-backed host (kvm_pvm loaded; see shared/reference/pvm-host.md): also
#       noxsave clearcpuid=ssse3
#     because userspace cannot mask CPUID leaf 1 there (XSAVE stays visible and xrstor is not
#     emulated) and the in-kernel SSSE3 paths hit instructions the emulator cannot run. Optional
#     there, untested: `nosmap clearcpuid=popcnt` to avoid tens of thousands of clac/popcnt
#     completion exits. Even so the kernel did not reach init within 10 minutes on that host.

ifndef KVMPY_DEBIAN_MK
KVMPY_DEBIAN_MK := 1

# Including this file must not change the includer's default goal.
_kvmpy_debian_saved_goal := $(.DEFAULT_GOAL)

PYTHON ?= python3
DEBIAN_DIR := build/debian
INITRAMFS := build/initramfs.cpio.gz
INITRAMFS_SRC := tests/guest/initramfs
SEABIOS_FILES := bios.bin bios-256k.bin vgabios-stdvga.bin

DEBIAN_IMAGES := $(DEBIAN_DIR)/vmlinuz $(DEBIAN_DIR)/busybox \
                 $(addprefix $(DEBIAN_DIR)/,$(SEABIOS_FILES)) $(INITRAMFS)

.PHONY: debian-images debian-clean
debian-images: $(DEBIAN_IMAGES)

debian-clean:
	rm -rf $(DEBIAN_DIR) $(INITRAMFS)

# $(call deb-fetch,PACKAGE,DIR): download PACKAGE's .deb into the empty directory DIR.
# `apt-get download` runs as root unsandboxed (its notice about user _apt is harmless).
deb-fetch = rm -rf $(2) && mkdir -p $(2) && \
  { (cd $(2) && apt-get download -q $(1)) >$(2).log 2>&1 || \
    { cat $(2).log >&2; echo "debian.mk: 'apt-get download $(1)' failed (run apt-get update?)" >&2; \
      exit 1; }; } && rm -f $(2).log

# The kernel: resolve linux-image-amd64's versioned dependency at build time.
$(DEBIAN_DIR)/vmlinuz:
	@set -e; \
	pkg=$$(apt-cache depends linux-image-amd64 2>/dev/null | \
	       awk '$$1 == "Depends:" && $$2 ~ /^linux-image-[0-9].*-amd64$$/ { print $$2; exit }'); \
	if [ -z "$$pkg" ]; then \
	  echo "debian.mk: cannot resolve linux-image-amd64's kernel package (run apt-get update?)" >&2; \
	  exit 1; fi; \
	echo "debian.mk: fetching $$pkg"; \
	$(call deb-fetch,$$pkg,$(DEBIAN_DIR)/tmp-kernel); \
	deb=$$(ls $(DEBIAN_DIR)/tmp-kernel/*.deb); \
	dpkg-deb --fsys-tarfile $$deb | tar -x -C $(DEBIAN_DIR)/tmp-kernel --wildcards './boot/vmlinuz-*'; \
	cp $(DEBIAN_DIR)/tmp-kernel/boot/vmlinuz-* $@.tmp; \
	dpkg-deb -f $$deb Package Version > $@.pkg; \
	rm -rf $(DEBIAN_DIR)/tmp-kernel; \
	mv $@.tmp $@

$(DEBIAN_DIR)/busybox:
	@set -e; \
	echo "debian.mk: fetching busybox-static"; \
	$(call deb-fetch,busybox-static,$(DEBIAN_DIR)/tmp-busybox); \
	dpkg-deb -x $(DEBIAN_DIR)/tmp-busybox/*.deb $(DEBIAN_DIR)/tmp-busybox/root; \
	cp $(DEBIAN_DIR)/tmp-busybox/root/bin/busybox $@.tmp; \
	chmod 755 $@.tmp; \
	rm -rf $(DEBIAN_DIR)/tmp-busybox; \
	mv $@.tmp $@

# One download and unpack of seabios serves its three files.
$(DEBIAN_DIR)/seabios/.unpacked:
	@set -e; \
	echo "debian.mk: fetching seabios"; \
	$(call deb-fetch,seabios,$(DEBIAN_DIR)/tmp-seabios); \
	rm -rf $(DEBIAN_DIR)/seabios; \
	dpkg-deb -x $(DEBIAN_DIR)/tmp-seabios/*.deb $(DEBIAN_DIR)/seabios; \
	rm -rf $(DEBIAN_DIR)/tmp-seabios; \
	touch $@

$(addprefix $(DEBIAN_DIR)/,$(SEABIOS_FILES)): $(DEBIAN_DIR)/seabios/.unpacked
	cp $(DEBIAN_DIR)/seabios/usr/share/seabios/$(notdir $@) $@

# iPXE's e1000 option ROM (ipxe-qemu), the NIC's expansion ROM for network boot (--boot n).
$(DEBIAN_DIR)/pxe-e1000.rom:
	@mkdir -p $(DEBIAN_DIR)
	@set -e; \
	echo "debian.mk: fetching ipxe-qemu"; \
	$(call deb-fetch,ipxe-qemu,$(DEBIAN_DIR)/tmp-ipxe); \
	rm -rf $(DEBIAN_DIR)/ipxe; \
	dpkg-deb -x $(DEBIAN_DIR)/tmp-ipxe/*.deb $(DEBIAN_DIR)/ipxe; \
	rm -rf $(DEBIAN_DIR)/tmp-ipxe; \
	cp $(DEBIAN_DIR)/ipxe/usr/lib/ipxe/qemu/pxe-e1000.rom $@

$(DEBIAN_DIR)/sample.bin: $(INITRAMFS_SRC)/mkinitramfs.py
	@mkdir -p $(DEBIAN_DIR)
	$(PYTHON) $(INITRAMFS_SRC)/mkinitramfs.py sample $@

$(INITRAMFS): $(DEBIAN_DIR)/busybox $(DEBIAN_DIR)/sample.bin $(INITRAMFS_SRC)/init \
              $(INITRAMFS_SRC)/mkinitramfs.py
	$(PYTHON) $(INITRAMFS_SRC)/mkinitramfs.py cpio $@ --busybox $(DEBIAN_DIR)/busybox \
	    --init $(INITRAMFS_SRC)/init --sample $(DEBIAN_DIR)/sample.bin

ifeq ($(words $(MAKEFILE_LIST)),1)
# Used on its own (make -f firmware/debian.mk): build everything by default.
.DEFAULT_GOAL := debian-images
else
.DEFAULT_GOAL := $(_kvmpy_debian_saved_goal)
endif

endif # KVMPY_DEBIAN_MK
