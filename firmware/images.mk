# firmware/images.mk — bootable guest images for the HVM PC, made from Debian's packages.
#
# Included by the top-level Makefile (`include firmware/images.mk`); it also works on its own:
#     make -f firmware/images.mk images-hvm
# Every path is relative to the repository root (run make there, or with -C). It includes
# firmware/debian.mk for the kernel, the initramfs and its fetch helper (deb-fetch).
#
# Outputs (under build/, which git ignores; real files, so make is incremental):
#   build/images/disk.img  32 MiB raw disk, sparse (about 12 MiB used): syslinux's mbr.bin as
#                          MBR code, one active FAT16 partition (type 0x0e) from sector 2048 with
#                          syslinux (ldlinux.sys, ldlinux.c32), syslinux.cfg, /vmlinuz and
#                          /initrd.gz. Layout by firmware/mkdisk.py, file system by mformat,
#                          files by mcopy, boot sector by syslinux's mtools installer — all on the
#                          image file at the partition's offset: no loop device, mount or root.
#   build/images/boot.iso  El Torito (no emulation) ISO 9660 image made by xorriso: isolinux.bin,
#                          ldlinux.c32, isolinux.cfg under /isolinux, /vmlinuz and /initrd.gz.
#   build/images/initrd.gz the guest's initramfs on both: build/initramfs.cpio.gz followed by
#                          build/images/modules.cpio.gz, the disk drivers from the kernel's own
#                          package (ata_piix, sd_mod, sr_mod and their dependencies; Debian
#                          builds them as modules) packed by firmware/images/mkmodules.py. /init
#                          loads them (tests/guest/initramfs/init).
#   build/images/syslinux.cfg, build/images/isolinux.cfg: the configurations put into them.
#   build/images/PROG-hvm.img  one of our multiboot guest programs (build/firmware/PROG.elf, which
#                          firmware/Makefile makes first) on a disk SeaBIOS boots: the same MBR and FAT16
#                          partition with syslinux, whose configuration starts syslinux's own
#                          mboot.c32 (with libcom32.c32, which it needs) on /PROG.elf at once, with
#                          HVM_PROG_APPEND_PROG as its command line. So a program written for
#                          the direct path also runs behind the PC's firmware, finding the ACPI
#                          tables SeaBIOS built: `kvmpy boot --hvm build/images/vtd-hvm.img
#                          --iommu vtd --device edu` is the VT-d check on the HVM path.
# Phony: images-hvm (both images), images-hvm-clean.
#
# Both boot loaders use firmware/images/boot.cfg.in: a visible `boot:` prompt (5 s timeout), a SAY
# banner ("kvmpy syslinux disk" / "kvmpy isolinux cd"), output and input also on COM1 (SERIAL),
# and the labels
#   linux  (default)  console=tty0 console=ttyS0 panic=-1 kvmpy.action=poweroff
#   shell             ... kvmpy.action=shell
#   write             ... kvmpy.write=DATA kvmpy.action=poweroff   (/init writes a pattern to DATA)
#   read              ... kvmpy.read=DATA kvmpy.action=poweroff    (/init prints DATA's hash)
# DATA is the data disk as Linux names it when the image boots with one data disk attached after
# it: /dev/sdb behind disk.img (`--hvm disk.img --drive file=data.img`), /dev/sda behind the ISO
# (`--cdrom boot.iso --drive file=data.img --boot d`: the CD is sr0). console=ttyS0 comes last so
# that /dev/console, where /init prints its KVMPY-* markers, is the serial port.
#
# Host tools (IMAGES_APT_PACKAGES; installed by the top Makefile's set-up step): mtools (mformat,
# mcopy), syslinux (its mtools-based installer; it runs mtools), xorriso. Files only read from
# packages — syslinux-common's mbr.bin and ldlinux.c32, isolinux's isolinux.bin — are fetched with
# `apt-get download` and unpacked with dpkg-deb into build/debian/, never installed.

ifndef KVMPY_IMAGES_MK
KVMPY_IMAGES_MK := 1

IMAGES_APT_PACKAGES := mtools syslinux xorriso

_kvmpy_images_saved_goal := $(.DEFAULT_GOAL)

include firmware/debian.mk

IMAGES_DIR := build/images
DISK_IMG := $(IMAGES_DIR)/disk.img
BOOT_ISO := $(IMAGES_DIR)/boot.iso
IMAGES_CFG_IN := firmware/images/boot.cfg.in
# the disk and CD-ROM drivers (and what they depend on) for the guest's initramfs
HVM_MODULES := ata_piix sd_mod sr_mod
HVM_MODULES_CPIO := $(IMAGES_DIR)/modules.cpio.gz
HVM_INITRD := $(IMAGES_DIR)/initrd.gz
DISK_SIZE_MIB := 32
SYSLINUX_COMMON_DIR := $(DEBIAN_DIR)/syslinux-common
ISOLINUX_DIR := $(DEBIAN_DIR)/isolinux
SYSLINUX_MBR := $(SYSLINUX_COMMON_DIR)/usr/lib/syslinux/mbr/mbr.bin
SYSLINUX_BIOS_MODULES := $(SYSLINUX_COMMON_DIR)/usr/lib/syslinux/modules/bios
SYSLINUX_LDLINUX := $(SYSLINUX_BIOS_MODULES)/ldlinux.c32
SYSLINUX_MBOOT := $(SYSLINUX_BIOS_MODULES)/mboot.c32 $(SYSLINUX_BIOS_MODULES)/libcom32.c32
# the command line each guest program gets on its PROG-hvm.img ("strict": kvmpy's VT-d records
# every blocked DMA, so the program may insist on it; see firmware/tests/vtd.c)
HVM_PROG_APPEND_vtd := strict
ISOLINUX_BIN := $(ISOLINUX_DIR)/usr/lib/ISOLINUX/isolinux.bin
# a fixed FAT volume serial and ISO volume date (else random and "now" on every build)
IMAGES_FAT_SERIAL := 4b564d50
IMAGES_DATE := 2024010100000000

.PHONY: images-hvm images-hvm-clean
images-hvm: $(DISK_IMG) $(BOOT_ISO)

images-hvm-clean:
	rm -rf $(IMAGES_DIR) $(SYSLINUX_COMMON_DIR) $(ISOLINUX_DIR)

# $(call images-need-tools,TOOL...): fail with the package to install when a host tool is missing.
images-need-tools = for t in $(1); do command -v $$t >/dev/null 2>&1 || { \
  echo "images.mk: '$$t' not found: install the Debian packages $(IMAGES_APT_PACKAGES)" \
       "(the top Makefile's 'make deps' does)" >&2; exit 1; }; done

# $(call images-unpack,PACKAGE,DIR): apt-get download PACKAGE and unpack it into DIR.
images-unpack = echo "images.mk: fetching $(1)"; \
  $(call deb-fetch,$(1),$(2).tmp); \
  rm -rf $(2); dpkg-deb -x $(2).tmp/*.deb $(2); rm -rf $(2).tmp

$(SYSLINUX_COMMON_DIR)/.unpacked:
	@set -e; $(call images-unpack,syslinux-common,$(SYSLINUX_COMMON_DIR)); touch $@

$(ISOLINUX_DIR)/.unpacked:
	@set -e; $(call images-unpack,isolinux,$(ISOLINUX_DIR)); touch $@

# dpkg-deb keeps the package's file times: touch them, or they would look older than .unpacked
# forever and every make would run these recipes again.
$(SYSLINUX_MBR) $(SYSLINUX_LDLINUX) $(SYSLINUX_MBOOT): $(SYSLINUX_COMMON_DIR)/.unpacked
	@test -f $@ || { echo "images.mk: syslinux-common has no $@" >&2; exit 1; }; touch $@
$(ISOLINUX_BIN): $(ISOLINUX_DIR)/.unpacked
	@test -f $@ || { echo "images.mk: isolinux has no $@" >&2; exit 1; }; touch $@

# The modules come from the very package build/debian/vmlinuz was taken from (vmlinuz.pkg names
# it): modules of any other build would not load. The 70 MB package is streamed, not kept.
$(HVM_MODULES_CPIO): $(DEBIAN_DIR)/vmlinuz firmware/images/mkmodules.py $(INITRAMFS_SRC)/mkinitramfs.py
	@set -e; mkdir -p $(IMAGES_DIR); \
	pkg=$$(sed -n 's/^Package: //p' $(DEBIAN_DIR)/vmlinuz.pkg); \
	ver=$$(sed -n 's/^Version: //p' $(DEBIAN_DIR)/vmlinuz.pkg); \
	if [ -z "$$pkg" ] || [ -z "$$ver" ]; then \
	  echo "images.mk: $(DEBIAN_DIR)/vmlinuz.pkg does not name the kernel's package" >&2; exit 1; fi; \
	apt-cache show "$$pkg=$$ver" >/dev/null 2>&1 || { \
	  echo "images.mk: $$pkg $$ver (the kernel in $(DEBIAN_DIR)) is not in the apt lists: run" \
	       "apt-get update, or 'make debian-clean' to take the current kernel" >&2; exit 1; }; \
	echo "images.mk: fetching $$pkg $$ver for its modules"; \
	$(call deb-fetch,$$pkg=$$ver,$(IMAGES_DIR)/tmp-kernel); \
	$(PYTHON) firmware/images/mkmodules.py $(IMAGES_DIR)/tmp-kernel/*.deb $@ $(HVM_MODULES); \
	rm -rf $(IMAGES_DIR)/tmp-kernel

# Linux unpacks concatenated compressed cpio archives one after the other.
$(HVM_INITRD): $(INITRAMFS) $(HVM_MODULES_CPIO)
	cat $(INITRAMFS) $(HVM_MODULES_CPIO) > $@.tmp && mv $@.tmp $@

$(IMAGES_DIR)/syslinux.cfg: $(IMAGES_CFG_IN)
	@mkdir -p $(IMAGES_DIR)
	sed -e 's|@BANNER@|kvmpy syslinux disk|' -e 's|@DATA@|/dev/sdb|g' $< > $@.tmp && mv $@.tmp $@

$(IMAGES_DIR)/isolinux.cfg: $(IMAGES_CFG_IN)
	@mkdir -p $(IMAGES_DIR)
	sed -e 's|@BANNER@|kvmpy isolinux cd|' -e 's|@DATA@|/dev/sda|g' $< > $@.tmp && mv $@.tmp $@

# $(call images-syslinux-disk,SRC=NAME ...): $@.tmp, a DISK_SIZE_MIB disk from firmware/mkdisk.py
# (syslinux's MBR, one active FAT16 partition) holding each SRC as /NAME, made bootable by
# syslinux. mformat: FAT over the whole partition with the MBR's geometry, hidden sectors = the
# partition's start (the FAT boot sector finds ldlinux.sys relative to it). syslinux then writes
# its boot sector, ldlinux.sys and ldlinux.c32 through mtools at the same offset.
images-syslinux-disk = $(call images-need-tools,mformat mcopy syslinux); \
	mkdir -p $(IMAGES_DIR); rm -f $@.tmp; \
	layout=$$($(PYTHON) firmware/mkdisk.py $@.tmp --size-mib $(DISK_SIZE_MIB) --mbr $(SYSLINUX_MBR)); \
	offset=$${layout% *}; sectors=$${layout\#* }; \
	img="$@.tmp@@$$offset"; \
	export MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null; \
	echo "images.mk: $@: FAT16 at byte $$offset, $$sectors sectors"; \
	mformat -i "$$img" -T $$sectors -h 64 -s 32 -H $$((offset / 512)) -N $(IMAGES_FAT_SERIAL) \
	    -v KVMPY ::; \
	for f in $(1); do mcopy -m -i "$$img" "$${f%%=*}" "::/$${f\#*=}"; done; \
	syslinux --offset $$offset --install $@.tmp

$(DISK_IMG): $(DEBIAN_DIR)/vmlinuz $(HVM_INITRD) $(IMAGES_DIR)/syslinux.cfg $(SYSLINUX_MBR) \
             firmware/mkdisk.py
	@set -e; $(call images-syslinux-disk,$(IMAGES_DIR)/syslinux.cfg=syslinux.cfg \
	    $(DEBIAN_DIR)/vmlinuz=vmlinuz $(HVM_INITRD)=initrd.gz); \
	mv $@.tmp $@

# The guest programs are firmware/Makefile's: ask it every time (it is incremental), then the
# image is remade when the ELF it made is newer.
.PHONY: images-firmware-force
build/firmware/%.elf: images-firmware-force
	@$(MAKE) --no-print-directory -s -C firmware list | grep -qx '$*' || { echo "images.mk:" \
	  "'$*' is not one of our guest programs ('make -C firmware list' names them)" >&2; exit 1; }; \
	$(MAKE) --no-print-directory -C firmware $*

# The same steps as the disk above, with a guest program and syslinux's multiboot loader in place
# of Linux.
$(IMAGES_DIR)/%-hvm.img: build/firmware/%.elf $(SYSLINUX_MBR) $(SYSLINUX_MBOOT) firmware/mkdisk.py
	@set -e; mkdir -p $(IMAGES_DIR); \
	printf 'DEFAULT run\nPROMPT 0\nTIMEOUT 0\nLABEL run\n  KERNEL mboot.c32\n  APPEND /%s.elf %s\n' \
	    '$*' '$(HVM_PROG_APPEND_$*)' > $@.cfg; \
	$(call images-syslinux-disk,$@.cfg=syslinux.cfg $(foreach f,$(SYSLINUX_MBOOT),$(f)=$(notdir $(f))) \
	    $<=$*.elf); \
	rm -f $@.cfg; mv $@.tmp $@

$(BOOT_ISO): $(DEBIAN_DIR)/vmlinuz $(HVM_INITRD) $(IMAGES_DIR)/isolinux.cfg $(ISOLINUX_BIN) \
             $(SYSLINUX_LDLINUX)
	@set -e; $(call images-need-tools,xorriso); \
	root=$(IMAGES_DIR)/iso-root; rm -rf $$root $@.tmp; mkdir -p $$root/isolinux; \
	cp $(ISOLINUX_BIN) $(SYSLINUX_LDLINUX) $(IMAGES_DIR)/isolinux.cfg $$root/isolinux/; \
	cp $(DEBIAN_DIR)/vmlinuz $$root/vmlinuz; cp $(HVM_INITRD) $$root/initrd.gz; \
	echo "images.mk: $@: xorriso"; \
	xorriso -as mkisofs -quiet -o $@.tmp -R -J -V KVMPY_CD \
	    --modification-date=$(IMAGES_DATE) \
	    -b isolinux/isolinux.bin -c isolinux/boot.cat \
	    -no-emul-boot -boot-load-size 4 -boot-info-table $$root; \
	rm -rf $$root; \
	mv $@.tmp $@

ifeq ($(words $(MAKEFILE_LIST)),2)
# Used on its own (make -f firmware/images.mk; debian.mk is the second makefile read): build both.
.DEFAULT_GOAL := images-hvm
else
.DEFAULT_GOAL := $(_kvmpy_images_saved_goal)
endif

endif # KVMPY_IMAGES_MK
