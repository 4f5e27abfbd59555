"""Builds ``kvmpy._kvm_ffi``: cffi API-mode bindings compiled against the kernel's <linux/kvm.h>.

Why API mode: the C compiler lays out every struct and evaluates every ioctl number from the
installed header, so no offset or request code in kvmpy is counted by hand. Structs are declared
partially (``...;``) where kvmpy only needs some fields; cffi fills in the rest from the header.
"""

from cffi import FFI

ffibuilder = FFI()

_IOCTLS = """
KVM_GET_API_VERSION KVM_CREATE_VM KVM_CHECK_EXTENSION KVM_GET_VCPU_MMAP_SIZE
KVM_GET_SUPPORTED_CPUID KVM_GET_MSR_INDEX_LIST KVM_CREATE_VCPU KVM_SET_USER_MEMORY_REGION
KVM_SET_TSS_ADDR KVM_SET_IDENTITY_MAP_ADDR KVM_CREATE_IRQCHIP KVM_CREATE_PIT2 KVM_IRQ_LINE
KVM_SIGNAL_MSI KVM_RUN KVM_GET_REGS KVM_SET_REGS KVM_GET_SREGS KVM_SET_SREGS KVM_SET_CPUID2
KVM_GET_LAPIC KVM_SET_LAPIC KVM_GET_FPU KVM_SET_FPU KVM_GET_MSRS KVM_SET_MSRS
KVM_GET_VCPU_EVENTS KVM_SET_VCPU_EVENTS KVM_GET_MP_STATE KVM_SET_MP_STATE KVM_ENABLE_CAP
KVM_IOEVENTFD KVM_IRQFD KVM_GET_DIRTY_LOG KVM_TRANSLATE KVM_GET_STATS_FD
KVM_REGISTER_COALESCED_MMIO KVM_UNREGISTER_COALESCED_MMIO KVM_SET_GSI_ROUTING KVM_GET_TSC_KHZ
KVM_SET_GUEST_DEBUG KVM_GET_XSAVE KVM_SET_XSAVE KVM_INTERRUPT KVM_CREATE_DEVICE KVM_SET_DEVICE_ATTR
""".split()

_CONSTANTS = """
KVM_API_VERSION
KVM_EXIT_UNKNOWN KVM_EXIT_EXCEPTION KVM_EXIT_IO KVM_EXIT_HYPERCALL KVM_EXIT_DEBUG KVM_EXIT_HLT
KVM_EXIT_MMIO KVM_EXIT_IRQ_WINDOW_OPEN KVM_EXIT_SHUTDOWN KVM_EXIT_FAIL_ENTRY KVM_EXIT_INTR
KVM_EXIT_SET_TPR KVM_EXIT_TPR_ACCESS KVM_EXIT_NMI KVM_EXIT_INTERNAL_ERROR KVM_EXIT_SYSTEM_EVENT
KVM_EXIT_IOAPIC_EOI KVM_EXIT_X86_RDMSR KVM_EXIT_X86_WRMSR KVM_EXIT_DIRTY_RING_FULL
KVM_EXIT_X86_BUS_LOCK KVM_EXIT_NOTIFY
KVM_EXIT_IO_IN KVM_EXIT_IO_OUT
KVM_INTERNAL_ERROR_EMULATION KVM_INTERNAL_ERROR_SIMUL_EX KVM_INTERNAL_ERROR_DELIVERY_EV
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
KVM_SYSTEM_EVENT_SHUTDOWN KVM_SYSTEM_EVENT_RESET KVM_SYSTEM_EVENT_CRASH
KVM_CAP_IRQCHIP KVM_CAP_HLT KVM_CAP_USER_MEMORY KVM_CAP_SET_TSS_ADDR KVM_CAP_EXT_CPUID
KVM_CAP_NR_VCPUS KVM_CAP_MAX_VCPUS KVM_CAP_MAX_VCPU_ID KVM_CAP_PIT2 KVM_CAP_IOEVENTFD
KVM_CAP_IRQFD KVM_CAP_SPLIT_IRQCHIP KVM_CAP_IMMEDIATE_EXIT KVM_CAP_SIGNAL_MSI
KVM_CAP_COALESCED_MMIO KVM_CAP_BINARY_STATS_FD KVM_CAP_SET_IDENTITY_MAP_ADDR
KVM_CAP_VCPU_EVENTS KVM_CAP_ADJUST_CLOCK KVM_CAP_READONLY_MEM KVM_CAP_MP_STATE
KVM_CAP_IRQ_ROUTING KVM_CAP_X2APIC_API KVM_CAP_TSC_DEADLINE_TIMER KVM_CAP_GET_TSC_KHZ
KVM_CAP_SYNC_MMU KVM_CAP_EXIT_ON_EMULATION_FAILURE KVM_CAP_INTERNAL_ERROR_DATA
KVM_CAP_EXCEPTION_PAYLOAD KVM_CAP_PIT_STATE2 KVM_CAP_XSAVE KVM_CAP_IOMMU
KVM_PIT_SPEAKER_DUMMY KVM_MEM_LOG_DIRTY_PAGES KVM_MEM_READONLY
KVM_VCPUEVENT_VALID_NMI_PENDING KVM_VCPUEVENT_VALID_SIPI_VECTOR KVM_VCPUEVENT_VALID_SHADOW
KVM_VCPUEVENT_VALID_SMM KVM_VCPUEVENT_VALID_PAYLOAD
KVM_MP_STATE_RUNNABLE KVM_MP_STATE_UNINITIALIZED KVM_MP_STATE_INIT_RECEIVED
KVM_MP_STATE_HALTED KVM_MP_STATE_SIPI_RECEIVED
KVM_IOEVENTFD_FLAG_PIO KVM_IOEVENTFD_FLAG_DATAMATCH KVM_IRQFD_FLAG_DEASSIGN
KVM_STATS_TYPE_MASK KVM_STATS_TYPE_CUMULATIVE KVM_STATS_TYPE_INSTANT KVM_STATS_TYPE_PEAK
KVM_STATS_TYPE_LINEAR_HIST KVM_STATS_TYPE_LOG_HIST KVM_STATS_UNIT_MASK KVM_STATS_UNIT_NONE
KVM_STATS_UNIT_BYTES KVM_STATS_UNIT_SECONDS KVM_STATS_UNIT_CYCLES KVM_STATS_BASE_MASK
KVM_STATS_BASE_POW10 KVM_STATS_BASE_POW2
KVM_GUESTDBG_ENABLE KVM_GUESTDBG_SINGLESTEP
KVM_IRQ_ROUTING_IRQCHIP KVM_IRQ_ROUTING_MSI KVM_IRQCHIP_PIC_MASTER KVM_IRQCHIP_PIC_SLAVE
KVM_IRQCHIP_IOAPIC KVM_IRQFD_FLAG_RESAMPLE
KVM_DEV_TYPE_VFIO KVM_DEV_VFIO_GROUP KVM_DEV_VFIO_GROUP_ADD KVM_DEV_VFIO_GROUP_DEL KVM_CAP_IRQFD_RESAMPLE
""".split()

_CDEF = (
    "\n".join(f"#define {name} ..." for name in _IOCTLS + _CONSTANTS)
    + """
struct kvm_userspace_memory_region {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr; uint64_t memory_size;
    uint64_t userspace_addr; ...;
};
struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags; ...;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector; uint8_t type; uint8_t present, dpl, db, s, l,
    g, avl; uint8_t unusable; ...;
};
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss; struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt; uint64_t cr0, cr2, cr3, cr4, cr8; uint64_t efer; uint64_t apic_base;
    uint64_t interrupt_bitmap[...]; ...;
};
struct kvm_fpu {
    uint8_t fpr[8][16]; uint16_t fcw; uint16_t fsw; uint8_t ftwx; uint16_t last_opcode;
    uint64_t last_ip; uint64_t last_dp; uint8_t xmm[16][16]; uint32_t mxcsr; ...;
};
struct kvm_msr_entry { uint32_t index; uint32_t reserved; uint64_t data; };
struct kvm_msrs { uint32_t nmsrs; uint32_t pad; struct kvm_msr_entry entries[]; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; };
struct kvm_cpuid_entry2 {
    uint32_t function; uint32_t index; uint32_t flags; uint32_t eax; uint32_t ebx; uint32_t ecx;
    uint32_t edx; ...;
};
struct kvm_cpuid2 { uint32_t nent; uint32_t padding; struct kvm_cpuid_entry2 entries[]; };
struct kvm_lapic_state { char regs[...]; };
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_pit_config { uint32_t flags; ...; };
struct kvm_msi { uint32_t address_lo; uint32_t address_hi; uint32_t data; uint32_t flags; ...; };
struct kvm_enable_cap { uint32_t cap; uint32_t flags; uint64_t args[4]; ...; };
struct kvm_mp_state { uint32_t mp_state; };
struct kvm_translation {
    uint64_t linear_address; uint64_t physical_address; uint8_t valid; uint8_t writeable;
    uint8_t usermode; ...;
};
struct kvm_ioeventfd {
    uint64_t datamatch; uint64_t addr; uint32_t len; int32_t fd; uint32_t flags; ...;
};
struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_interrupt { uint32_t irq; };
struct kvm_create_device { uint32_t type; uint32_t fd; uint32_t flags; };
struct kvm_device_attr { uint32_t flags; uint32_t group; uint64_t attr; uint64_t addr; };
struct kvm_irq_routing_irqchip { uint32_t irqchip; uint32_t pin; };
struct kvm_irq_routing_msi { uint32_t address_lo; uint32_t address_hi; uint32_t data; uint32_t pad; };
struct kvm_irq_routing_entry {
    uint32_t gsi; uint32_t type; uint32_t flags;
    union { struct kvm_irq_routing_irqchip irqchip; struct kvm_irq_routing_msi msi;
            uint32_t pad[8]; } u;
    ...;
};
struct kvm_irq_routing { uint32_t nr; uint32_t flags; struct kvm_irq_routing_entry entries[]; };
struct kvm_dirty_log { uint32_t slot; void *dirty_bitmap; ...; };
struct kvm_coalesced_mmio_zone { uint64_t addr; uint32_t size; ...; };
struct kvm_guest_debug { uint32_t control; ...; };
struct kvm_xsave { uint32_t region[1024]; ...; };
struct kvm_vcpu_events {
    struct { uint8_t injected; uint8_t nr; uint8_t has_error_code; uint8_t pending;
             uint32_t error_code; } exception;
    struct { uint8_t injected; uint8_t nr; uint8_t soft; uint8_t shadow; } interrupt;
    struct { uint8_t injected; uint8_t pending; uint8_t masked; uint8_t pad; } nmi;
    uint32_t sipi_vector; uint32_t flags;
    uint8_t exception_has_payload; uint64_t exception_payload; ...;
};
struct kvm_stats_header {
    uint32_t flags; uint32_t name_size; uint32_t num_desc; uint32_t id_offset;
    uint32_t desc_offset; uint32_t data_offset;
};
struct kvm_stats_desc {
    uint32_t flags; int16_t exponent; uint16_t size; uint32_t offset; uint32_t bucket_size;
    char name[];
};
struct kvm_run {
    uint8_t request_interrupt_window; uint8_t immediate_exit;
    uint32_t exit_reason; uint8_t ready_for_interrupt_injection; uint8_t if_flag; uint16_t flags;
    uint64_t cr8; uint64_t apic_base;
    union {
        struct { uint64_t hardware_exit_reason; } hw;
        struct { uint64_t hardware_entry_failure_reason; uint32_t cpu; } fail_entry;
        struct { uint32_t exception; uint32_t error_code; } ex;
        struct { uint8_t direction; uint8_t size; uint16_t port; uint32_t count;
                 uint64_t data_offset; } io;
        struct { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; } mmio;
        struct { uint32_t suberror; uint32_t ndata; uint64_t data[16]; } internal;
        struct { uint32_t suberror; uint32_t ndata; uint64_t flags; uint8_t insn_size;
                 uint8_t insn_bytes[15]; } emulation_failure;
        struct { uint32_t type; uint32_t ndata; uint64_t data[16]; } system_event;
        struct { uint8_t vector; } eoi;
        ...;
    };
    ...;
};

int kvmpy_ioctl(int fd, unsigned long request, void *arg);
int kvmpy_ioctl_int(int fd, unsigned long request, unsigned long arg);
"""
)

ffibuilder.cdef(_CDEF)
ffibuilder.set_source(
    "kvmpy._kvm_ffi",
    r"""
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

/* Returns the ioctl's result, or -errno: errno itself is thread-local and easy to lose. */
static int kvmpy_ioctl(int fd, unsigned long request, void *arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

static int kvmpy_ioctl_int(int fd, unsigned long request, unsigned long arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}
""",
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
