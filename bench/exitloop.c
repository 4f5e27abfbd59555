/*
 * bench/exitloop.c — the exit round trip driven from a few lines of C: the baseline kvmpy and
 * QEMU are measured against (bench/run_bench.py).
 *
 * One VM, one 64 KiB memslot, one vCPU in flat 32-bit protected mode running the same loop as
 * bench/exitloop_guest.S:
 *
 *         mov  dx, 0x7f0
 *         mov  ecx, N
 *     l:  out  dx, al        ; one KVM_EXIT_IO each
 *         dec  ecx
 *         jnz  l
 *         hlt                ; KVM_EXIT_HLT (no in-kernel irqchip): done
 *
 * usage: exitloop [N]   (default 100000)
 * Prints the exits counted and the rate over the whole run (VM set-up included) and over the
 * KVM_RUN loop alone; the last line is machine-readable: `exits=N total_s=T loop_s=L`.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x10000
#define CODE_GPA 0x1000
#define PORT 0x7f0

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = selector;
	s->type = type;		/* 11: code, execute/read, accessed; 3: data, read/write, accessed */
	s->present = 1;
	s->s = 1;
	s->db = 1;
	s->g = 1;
}

int main(int argc, char **argv)
{
	double t0 = now();
	char *end;
	unsigned long n = argc > 1 ? strtoul(argv[1], &end, 0) : 100000;
	if (argc > 1 && (*end || n < 1 || n > 0xffffffffUL))
		errx(2, "usage: %s [N], 1 <= N < 2^32", argv[0]);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		err(1, "/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		err(1, "KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)	/* Intel wants it before KVM_RUN */
		err(1, "KVM_SET_TSS_ADDR");

	uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		err(1, "mmap guest memory");
	uint8_t code[] = {
		0x66, 0xba, PORT & 0xff, PORT >> 8,	/* mov dx, PORT */
		0xb9, n, n >> 8, n >> 16, n >> 24,	/* mov ecx, N */
		0xee,					/* l: out dx, al */
		0x49,					/* dec ecx */
		0x75, 0xfc,				/* jnz l */
		0xf4,					/* hlt */
	};
	memcpy(mem + CODE_GPA, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		err(1, "KVM_SET_USER_MEMORY_REGION");

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		err(1, "KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < (int)sizeof(struct kvm_run))
		err(1, "KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		err(1, "mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		err(1, "KVM_GET_SREGS");
	flat_segment(&sregs.cs, 0x08, 11);
	flat_segment(&sregs.ds, 0x10, 3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 |= 1;		/* PE, no paging */
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		err(1, "KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		err(1, "KVM_SET_REGS");

	unsigned long exits = 0;
	double t1 = now();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err(1, "KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT &&
		    run->io.direction == KVM_EXIT_IO_OUT) {
			exits++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
			errx(1, "KVM_EXIT_INTERNAL_ERROR, suberror %u, after %lu exits",
			     run->internal.suberror, exits);
		errx(1, "unexpected exit reason %u after %lu exits", run->exit_reason, exits);
	}
	double t2 = now();
	if (exits != n)
		errx(1, "counted %lu exits, expected %lu", exits, n);
	printf("exitloop: %lu exits in %.3f s (KVM_RUN loop %.3f s): %.0f exits/s overall, "
	       "%.0f exits/s in the loop\n", exits, t2 - t0, t2 - t1, exits / (t2 - t0),
	       exits / (t2 - t1));
	printf("exits=%lu total_s=%.6f loop_s=%.6f\n", exits, t2 - t0, t2 - t1);
	return 0;
}
