"""Builds ``kvmpy._vfio_ffi``: cffi API-mode bindings compiled against the kernel's <linux/vfio.h>.

Why a second module and not more of ``_kvm_ffi``: VFIO is optional (most hosts have no usable
IOMMU), and kvmpy must import and detect host support without it; keeping the VFIO header out of
the KVM module also keeps a host whose <linux/vfio.h> is missing able to build kvmpy's core.

As for ``_ffi_build.py``: every ioctl number and struct layout comes from the installed header,
evaluated by the C compiler. Structs whose every field kvmpy relies on are declared in full (no
``...;``), so the compiler also checks that the declared layout is the header's; the variable
parts (``data[]``, capability chains) are reached through ``ffi.offsetof``.

Build it without setup.py (from the repository root)::

    .venv/bin/python kvmpy/_vfio_ffi_build.py

which leaves ``kvmpy/_vfio_ffi.*.so`` next to ``_kvm_ffi``; ``setup.py`` builds it at install time.
"""

from cffi import FFI

ffibuilder = FFI()

_IOCTLS = """
VFIO_GET_API_VERSION VFIO_CHECK_EXTENSION VFIO_SET_IOMMU
VFIO_GROUP_GET_STATUS VFIO_GROUP_SET_CONTAINER VFIO_GROUP_UNSET_CONTAINER VFIO_GROUP_GET_DEVICE_FD
VFIO_DEVICE_GET_INFO VFIO_DEVICE_GET_REGION_INFO VFIO_DEVICE_GET_IRQ_INFO VFIO_DEVICE_SET_IRQS
VFIO_DEVICE_RESET
VFIO_IOMMU_GET_INFO VFIO_IOMMU_MAP_DMA VFIO_IOMMU_UNMAP_DMA
""".split()

_CONSTANTS = """
VFIO_API_VERSION VFIO_TYPE1_IOMMU VFIO_TYPE1v2_IOMMU VFIO_NOIOMMU_IOMMU
VFIO_GROUP_FLAGS_VIABLE VFIO_GROUP_FLAGS_CONTAINER_SET
VFIO_DEVICE_FLAGS_RESET VFIO_DEVICE_FLAGS_PCI VFIO_DEVICE_FLAGS_CAPS
VFIO_REGION_INFO_FLAG_READ VFIO_REGION_INFO_FLAG_WRITE VFIO_REGION_INFO_FLAG_MMAP
VFIO_REGION_INFO_FLAG_CAPS
VFIO_REGION_INFO_CAP_SPARSE_MMAP VFIO_REGION_INFO_CAP_TYPE VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
VFIO_IRQ_INFO_EVENTFD VFIO_IRQ_INFO_MASKABLE VFIO_IRQ_INFO_AUTOMASKED VFIO_IRQ_INFO_NORESIZE
VFIO_IRQ_SET_DATA_NONE VFIO_IRQ_SET_DATA_BOOL VFIO_IRQ_SET_DATA_EVENTFD
VFIO_IRQ_SET_ACTION_MASK VFIO_IRQ_SET_ACTION_UNMASK VFIO_IRQ_SET_ACTION_TRIGGER
VFIO_PCI_BAR0_REGION_INDEX VFIO_PCI_BAR5_REGION_INDEX VFIO_PCI_ROM_REGION_INDEX
VFIO_PCI_CONFIG_REGION_INDEX VFIO_PCI_VGA_REGION_INDEX VFIO_PCI_NUM_REGIONS
VFIO_PCI_INTX_IRQ_INDEX VFIO_PCI_MSI_IRQ_INDEX VFIO_PCI_MSIX_IRQ_INDEX VFIO_PCI_ERR_IRQ_INDEX
VFIO_PCI_REQ_IRQ_INDEX VFIO_PCI_NUM_IRQS
VFIO_IOMMU_INFO_PGSIZES VFIO_IOMMU_INFO_CAPS VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
VFIO_DMA_MAP_FLAG_READ VFIO_DMA_MAP_FLAG_WRITE
""".split()

_CDEF = (
    "\n".join(f"#define {name} ..." for name in _IOCTLS + _CONSTANTS)
    + """
struct vfio_info_cap_header { uint16_t id; uint16_t version; uint32_t next; };
struct vfio_group_status { uint32_t argsz; uint32_t flags; };
struct vfio_device_info {
    uint32_t argsz; uint32_t flags; uint32_t num_regions; uint32_t num_irqs; uint32_t cap_offset; ...;
};
struct vfio_region_info {
    uint32_t argsz; uint32_t flags; uint32_t index; uint32_t cap_offset; uint64_t size; uint64_t offset;
};
struct vfio_region_sparse_mmap_area { uint64_t offset; uint64_t size; };
struct vfio_region_info_cap_sparse_mmap {
    struct vfio_info_cap_header header; uint32_t nr_areas; uint32_t reserved;
    struct vfio_region_sparse_mmap_area areas[];
};
struct vfio_irq_info { uint32_t argsz; uint32_t flags; uint32_t index; uint32_t count; };
struct vfio_irq_set {
    uint32_t argsz; uint32_t flags; uint32_t index; uint32_t start; uint32_t count; uint8_t data[];
};
struct vfio_iommu_type1_info {
    uint32_t argsz; uint32_t flags; uint64_t iova_pgsizes; uint32_t cap_offset; ...;
};
struct vfio_iova_range { uint64_t start; uint64_t end; };
struct vfio_iommu_type1_info_cap_iova_range {
    struct vfio_info_cap_header header; uint32_t nr_iovas; uint32_t reserved;
    struct vfio_iova_range iova_ranges[];
};
struct vfio_iommu_type1_dma_map {
    uint32_t argsz; uint32_t flags; uint64_t vaddr; uint64_t iova; uint64_t size;
};
struct vfio_iommu_type1_dma_unmap { uint32_t argsz; uint32_t flags; uint64_t iova; uint64_t size; ...; };

int kvmpy_vfio_ioctl(int fd, unsigned long request, void *arg);
int kvmpy_vfio_ioctl_int(int fd, unsigned long request, unsigned long arg);
uintptr_t kvmpy_vfio_mmap(int fd, size_t length, uint64_t offset, int prot, int *err);
int kvmpy_vfio_munmap(uintptr_t addr, size_t length);
"""
)

ffibuilder.cdef(_CDEF)
ffibuilder.set_source(
    "kvmpy._vfio_ffi",
    r"""
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/vfio.h>

/* Returns the ioctl's result, or -errno: errno itself is thread-local and easy to lose. */
static int kvmpy_vfio_ioctl(int fd, unsigned long request, void *arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

static int kvmpy_vfio_ioctl_int(int fd, unsigned long request, unsigned long arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

/* A shared mapping of a device region (a BAR) at the fd offset VFIO reported for it. Python's
   mmap object would do, but its buffer export pins it and the address is what KVM needs. */
static uintptr_t kvmpy_vfio_mmap(int fd, size_t length, uint64_t offset, int prot, int *err)
{
    void *p = mmap(NULL, length, prot, MAP_SHARED, fd, (off_t)offset);
    if (p == MAP_FAILED) {
        *err = errno;
        return 0;
    }
    *err = 0;
    return (uintptr_t)p;
}

static int kvmpy_vfio_munmap(uintptr_t addr, size_t length)
{
    return munmap((void *)addr, length) < 0 ? -errno : 0;
}
""",
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
