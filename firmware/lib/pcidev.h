/* Register-level names shared by the guest programs that drive PCI devices: the configuration
 * header (PCI Local Bus 3.0, 6.2), QEMU's edu DMA test device (docs/specs/edu.rst, with kvmpy's
 * error extension), the Intel VT-d registers (VT-d spec 3.x, chapter 11; second-level entries
 * 9.8) and PIIX3 IDE with ATA and bus-master IDE (82371SB datasheet 2.4, ATA/ATAPI-6 7.x and 8.x,
 * SFF-8038i 1.0).  Names only: each program keeps its own memory layout and logic. */
#ifndef PCIDEV_H
#define PCIDEV_H

/* --- PCI configuration header */
#define PCI_COMMAND         0x04
#define PCI_BAR0            0x10
#define PCI_BAR4            0x20
#define PCI_CMD_IO          0x0001
#define PCI_CMD_MEMORY      0x0002
#define PCI_CMD_MASTER      0x0004

/* --- edu */
#define EDU_ID              0x11E81234u
#define EDU_REG_ID          0x00
#define EDU_REG_LIVENESS    0x04
#define EDU_REG_DMA_SRC     0x80
#define EDU_REG_DMA_DST     0x88
#define EDU_REG_DMA_COUNT   0x90
#define EDU_REG_DMA_CMD     0x98
#define EDU_REG_DMA_ERRORS  0xA0        /* kvmpy extension; all-ones on QEMU */
#define EDU_DMA_RUN         0x1u
#define EDU_DMA_TO_RAM      0x2u
#define EDU_DMA_ERROR       0x80000000u /* kvmpy extension */
#define EDU_BUF             0x40000u
#define EDU_BAR_DEFAULT     0xE0000000u

/* --- VT-d (offsets from the unit's base; CCMD and IOTLB_REG bits as seen in their high dwords) */
#define VER_REG     0x000
#define CAP_REG     0x008
#define ECAP_REG    0x010
#define GCMD_REG    0x018
#define GSTS_REG    0x01C
#define RTADDR_REG  0x020
#define CCMD_REG    0x028
#define FSTS_REG    0x034
#define FECTL_REG   0x038
#define FEDATA_REG  0x03C
#define FEADDR_REG  0x040
#define FEUADDR_REG 0x044
#define IQH_REG     0x080
#define IQT_REG     0x088
#define IQA_REG     0x090
#define GCMD_TE     (1u << 31)
#define GCMD_SRTP   (1u << 30)
#define GCMD_QIE    (1u << 26)
#define GSTS_TES    (1u << 31)
#define GSTS_RTPS   (1u << 30)
#define GSTS_QIES   (1u << 26)
#define CCMD_HI_ICC         (1u << 31)                  /* bit 63 */
#define CCMD_HI_CIRG_GLOBAL (1u << 29)                  /* bits 62:61 = 1 */
#define CCMD_HI_CAIG(h)     (((h) >> 27) & 3)           /* bits 60:59 */
#define IOTLB_HI_IVT        (1u << 31)                  /* bit 63 */
#define IOTLB_HI_IIRG(g)    ((u32)(g) << 28)            /* bits 61:60: 1 global, 2 domain, 3 page */
#define IOTLB_HI_IAIG(h)    (((h) >> 25) & 3)           /* bits 58:57 */
#define IOTLB_HI_DID(d)     ((u32)(d) & 0xFFFF)         /* bits 47:32 */
#define FSTS_PFO    (1u << 0)
#define FSTS_PPF    (1u << 1)
#define FSTS_IQE    (1u << 4)
#define FSTS_FRI(f) (((f) >> 8) & 0xFF)
#define FECTL_IM    (1u << 31)
#define FECTL_IP    (1u << 30)
#define FRCD_F      (1u << 31)                          /* in the top dword (bits 127:96) */
#define FRCD_T      (1u << 30)                          /* 1 = read request */
#define PTE_R       1ull
#define PTE_W       2ull

/* --- PIIX3 IDE, ATA task file, bus-master IDE */
#define PIIX3_IDE_ID        0x70108086u
#define PIIX_IDETIM_PRI     0x40
#define IDETIM_DECODE       0x8000
#define BAR4_DEFAULT        0xC040
#define REG_ERR             1
#define REG_NSECT           2
#define REG_LBAL            3
#define REG_LBAM            4
#define REG_LBAH            5
#define REG_DEV             6
#define REG_STAT            7
#define ST_ERR              0x01
#define ST_DRQ              0x08
#define ST_DF               0x20
#define ST_DRDY             0x40
#define ST_BSY              0x80
#define DC_NIEN             0x02
#define DC_SRST             0x04
#define DEV_LBA             0x40
#define ATA_READ_DMA        0xC8
#define ATA_IDENTIFY        0xEC
#define BM_CMD              0
#define BM_STATUS           2
#define BM_PRD              4
#define BM_START            0x01
#define BM_TO_MEM           0x08
#define BM_ACTIVE           0x01
#define BM_ERROR            0x02
#define BM_INTR             0x04
#define PRD_EOT             0x80000000u

#endif /* PCIDEV_H */
