/* e1000: the Intel 82540EM (8086:100E) driven the way a driver drives it.
 *
 * Needs an e1000 on PCI bus 0 and, for INTx, the PIIX3 PCI-to-ISA bridge at 00:01.0 (its PIRQ
 * router).  Works whether firmware assigned BARs and PIRQ routes (SeaBIOS under QEMU) or not
 * (kvmpy's direct boot): what is unassigned, it assigns itself as a BIOS would.
 *
 * Steps and markers:
 *   PCI: find the function, size and program BAR0 (MMIO) and the I/O BAR when unassigned,
 *        enable memory, I/O and bus mastering; the I/O window (IOADDR/IODATA) reads STATUS
 *        like MMIO does -> "PCI OK"
 *   Reset (CTRL.RST).  EEPROM: all 64 words through EERD and again bit-banged through EECD
 *        (Microwire, as Linux's e1000 does on the 82540), checksum (sum of words 0-0x3F ==
 *        0xBABA), MAC in words 0-2 == RAL0/RAH0 (AV set) [== mac=] -> "EEPROM OK"
 *   PHY (MDIC, PHY address 1): ID 0x01410C2x (M88E1011, what Linux requires for an 82540),
 *        autonegotiation restarted, wait for "complete" and link in BMSR, CTRL.SLU, STATUS.LU
 *        -> "PHY OK"
 *   INTx: INTA# -> PIRQ (slot-1 + pin-1) mod 4 -> the PIIX3's PIRQ route (programmed to IRQ
 *        10/10/11/11 like SeaBIOS when unrouted, ELCR level) -> IOAPIC pin (MADT overrides),
 *        level-triggered active-high -> vector 0x60; an ICS-raised cause arrives, a masked one
 *        does not -> "IRQ OK (ioapic ...)"
 *   Rings: 8 legacy TX and 8 legacy RX descriptors in this program's memory, 2 KiB buffers.
 *   With a peer: a broadcast ARP request for 10.0.2.2 from 10.0.2.15 (the ARP reply is
 *        checked), then `frames` UDP datagrams to 10.0.2.2:7 from port 40000 with a payload
 *        pattern and sizes from 18 to 1472 bytes, up to 4 in flight; each echo is checked
 *        (addresses, ports swapped, IP and UDP checksums, payload).  ARP requests for our
 *        address are answered.  The first half travels with INTx interrupts, the second with
 *        MSI (with INTx too when the function has no MSI capability and msi=auto).
 *   MSI: the capability (ID 5) programmed with address 0xFEE00000 | apic_id << 12 and data =
 *        vector 0x61, INTx disabled in COMMAND; an ICS-raised cause arrives as MSI and not
 *        through the IOAPIC -> "IRQ OK (msi ...)"
 *   Then (with a peer) "TX OK (...)" and "RX OK (...)": every descriptor written back, both
 *        rings wrapped (frames >= 8), TDH == TDT, interrupts seen on the path in use.
 *   Loopback: RCTL.LBM = MAC loopback (or the PHY's BMCR loopback bit with loopback=phy): a
 *        frame of EtherType 0x88B5 to our own MAC comes back through the RX ring unchanged
 *        (up to three tries: QEMU drops looped frames for a second after an RCTL write) ->
 *        "LOOPBACK OK (...)"; it must not reach the peer (the host side checks that).
 *   "E1000 OK", exit 0.
 *
 * role=echo (guest <-> guest): the program is 10.0.2.2 instead; after PHY and INTx it prints
 * "ECHO READY", answers ARP and echoes UDP port 7 until `frames` datagrams were echoed
 * ("ECHO OK (...)"), then MSI and loopback as above.  Give the two guests different MACs.
 *
 * cmdline:
 *   peer=none          no peer: EEPROM, PHY, interrupts (ICS) and loopback only
 *   frames=N           UDP frames to exchange (16; at least 2, at most 256)
 *   role=echo          see above
 *   msi=auto|on|off    auto (default): test MSI when the function has the capability
 *   loopback=mac|phy|none   mac (default): RCTL.LBM; phy: BMCR bit 14 (what QEMU implements)
 *   iobar=on|off       check the I/O BAR's IOADDR/IODATA window (on; QEMU's is a stub: off)
 *   mac=XX:XX:XX:XX:XX:XX   the MAC the EEPROM must hold
 *   nic=N              the N-th e1000 on bus 0 (0)
 *   bar0=ADDR          where to put an unassigned BAR0 (0xE0000000)
 *   fresh              first clear what firmware assigned (BARs, COMMAND, PIRQ route,
 *                      INTERRUPT_LINE): the direct-boot path under SeaBIOS too
 *   timeout_ms=N       per wait (5000); wait_ms=N: how long the echo role serves (60000)
 *
 * Under QEMU (SeaBIOS assigns BARs and PIRQs; its e1000 has no MSI capability, no MAC
 * loopback and a stub I/O window): `-append "loopback=phy iobar=off"`, e.g. with
 *   qemu-system-x86_64 -accel kvm -M pc -nographic -no-reboot -kernel build/firmware/e1000.elf
 *     -netdev socket,id=n,udp=127.0.0.1:5556,localaddr=127.0.0.1:5555
 *     -device e1000,netdev=n,mac=52:54:00:12:34:56 -device isa-debug-exit,iobase=0xf4,iosize=4
 * and `python3 tests/netpeer.py udp 5556 5555` as the peer.
 *
 * Failures: "FAIL: <reason>", exit 1; no e1000, no PIRQ router or no PIT tick: exit 2. */
#include "fw.h"

#define E1000_ID            0x100E8086u
#define PIIX3_ISA_ID        0x70008086u
#define PCI_COMMAND         0x04
#define PCI_STATUS          0x06
#define PCI_CMD_IO          0x0001
#define PCI_CMD_MEM         0x0002
#define PCI_CMD_MASTER      0x0004
#define PCI_CMD_INTX_OFF    0x0400
#define PCI_STATUS_CAPS     0x0010
#define PCI_STATUS_INTX     0x0008
#define PCI_BAR0            0x10
#define PCI_CAP_PTR         0x34
#define PCI_INT_LINE        0x3C
#define PCI_INT_PIN         0x3D
#define PCI_CAP_MSI         0x05
#define PIIX_PIRQRC         0x60
#define PIRQ_DISABLED       0x80
#define ELCR_PORT           0x4D0
#define IOBAR_DEFAULT       0xC100u

/* registers (8254x SDM, chapter 13) */
#define CTRL     0x0000
#define STATUS   0x0008
#define EECD     0x0010
#define EERD     0x0014
#define MDIC     0x0020
#define ICR      0x00C0
#define ITR      0x00C4
#define ICS      0x00C8
#define IMS      0x00D0
#define IMC      0x00D8
#define RCTL     0x0100
#define TCTL     0x0400
#define TIPG     0x0410
#define RDBAL    0x2800
#define RDBAH    0x2804
#define RDLEN    0x2808
#define RDH      0x2810
#define RDT      0x2818
#define RDTR     0x2820
#define RADV     0x282C
#define TDBAL    0x3800
#define TDBAH    0x3804
#define TDLEN    0x3808
#define TDH      0x3810
#define TDT      0x3818
#define TIDV     0x3820
#define TADV     0x382C
#define GPRC     0x4074
#define GPTC     0x4080
#define TPR      0x40D0
#define TPT      0x40D4
#define MTA      0x5200
#define RAL0     0x5400
#define RAH0     0x5404

#define CTRL_FD       (1u << 0)
#define CTRL_LRST     (1u << 3)
#define CTRL_ASDE     (1u << 5)
#define CTRL_SLU      (1u << 6)
#define CTRL_ILOS     (1u << 7)
#define CTRL_RST      (1u << 26)
#define CTRL_PHY_RST  (1u << 31)
#define STATUS_FD     (1u << 0)
#define STATUS_LU     (1u << 1)
#define EECD_SK       (1u << 0)
#define EECD_CS       (1u << 1)
#define EECD_DI       (1u << 2)
#define EECD_DO       (1u << 3)
#define EECD_REQ      (1u << 6)
#define EECD_GNT      (1u << 7)
#define EECD_PRES     (1u << 8)
#define EERD_START    (1u << 0)
#define EERD_DONE     (1u << 4)
#define MDIC_OP_WRITE (1u << 26)
#define MDIC_OP_READ  (2u << 26)
#define MDIC_READY    (1u << 28)
#define MDIC_ERROR    (1u << 30)
#define ICR_TXDW      (1u << 0)
#define ICR_TXQE      (1u << 1)
#define ICR_LSC       (1u << 2)
#define ICR_RXSEQ     (1u << 3)
#define ICR_RXDMT0    (1u << 4)
#define ICR_RXO       (1u << 6)
#define ICR_RXT0      (1u << 7)
#define RCTL_EN       (1u << 1)
#define RCTL_LBM_MAC  (1u << 6)
#define RCTL_LBM_MASK (3u << 6)
#define RCTL_BAM      (1u << 15)
#define RCTL_SECRC    (1u << 26)
#define TCTL_EN       (1u << 1)
#define TCTL_PSP      (1u << 3)
#define TCTL_CT       (0x0Fu << 4)
#define TCTL_COLD     (0x40u << 12)
#define RAH_AV        (1u << 31)

#define PHY_ADDR      1
#define MII_BMCR      0
#define MII_BMSR      1
#define MII_PHYID1    2
#define MII_PHYID2    3
#define BMCR_SPEED1000 0x0040
#define BMCR_FD       0x0100
#define BMCR_ANRESTART 0x0200
#define BMCR_ANENABLE 0x1000
#define BMCR_LOOPBACK 0x4000
#define BMSR_LINK     0x0004
#define BMSR_ANCOMP   0x0020
#define M88E1011_ID   0x01410C20u

#define TXD_EOP       0x01
#define TXD_IFCS      0x02
#define TXD_RS        0x08
#define TXD_DD        0x01
#define RXD_DD        0x01
#define RXD_EOP       0x02

#define NDESC         8
#define BUF_SIZE      2048
#define VEC_INTX      0x60
#define VEC_MSI       0x61
#define TEST_CAUSE    ICR_RXSEQ         /* raised through ICS for the interrupt tests */
#define DATA_CAUSES   (ICR_TXDW | ICR_RXT0 | ICR_RXO | ICR_RXDMT0 | ICR_LSC)
#define WINDOW        4                 /* UDP frames in flight */
#define MAX_FRAMES    256
#define ETH_ARP       0x0806
#define ETH_IP        0x0800
#define ETH_LOOPTEST  0x88B5            /* IEEE local experimental EtherType */
#define CLIENT_PORT   40000
#define ECHO_PORT     7
#define PAYLOAD_MAX   1472
#define LOOP_LEN      128

struct tx_desc {
    u64 addr;
    u16 length;
    u8 cso, cmd, status, css;
    u16 special;
} __attribute__((packed));

struct rx_desc {
    u64 addr;
    u16 length, csum;
    u8 status, errors;
    u16 special;
} __attribute__((packed));

static volatile struct tx_desc tx_ring[NDESC] __attribute__((aligned(128)));
static volatile struct rx_desc rx_ring[NDESC] __attribute__((aligned(128)));
static u8 tx_buf[NDESC][BUF_SIZE] __attribute__((aligned(16)));
static u8 rx_buf[NDESC][BUF_SIZE] __attribute__((aligned(16)));
static u32 tx_tail, tx_clean, rx_next;          /* free-running counters */
static u32 tx_frames, rx_frames;

static u8 pci_dev, pci_fn;
static u32 mmio;
static u16 iobase;
static u8 my_mac[6], peer_mac[6];
static const u8 bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
static u8 my_ip[4] = { 10, 0, 2, 15 }, peer_ip[4] = { 10, 0, 2, 2 };
static u32 timeout_ms;
static bool echo_role;

static volatile u32 irq_intx, irq_msi, icr_seen;
static u32 ioapic_pin;
static bool have_ioapic_pin;

/* state of the exchange, updated by rx_dispatch */
static bool arp_answered;
static u32 echoes, echo_bad, arp_requests_answered, udp_echoed_for_peer, other_frames;
static u32 echo_seen[MAX_FRAMES / 32];
static bool loop_active;
static u32 loop_sent, loop_received;
static u8 loop_frame[LOOP_LEN];

/* --- small helpers ------------------------------------------------------------------------ */
static u32 rd(u32 reg) { return readl(mmio + reg); }
static void wr(u32 reg, u32 v) { writel(mmio + reg, v); }
static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static void put_be16(u8 *p, u16 v) { p[0] = v >> 8; p[1] = (u8)v; }
static u32 le32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static void put_le32(u8 *p, u32 v) { p[0] = (u8)v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static u32 ms_now(void) { return pit_ticks * 1000 / pit_hz; }

static const char *fmt_mac(const u8 *m)
{
    static char bufs[2][18];
    static int which;
    char *b = bufs[which ^= 1];
    snprintf(b, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return b;
}

/* Wait with hlt (woken by the NIC's interrupts or the PIT tick) until cond() holds.  cond()
 * runs with interrupts off, so no wake-up slips between the check and the hlt. */
static bool wait_until(bool (*cond)(void), u32 ms)
{
    u32 start = pit_ticks, n = pit_ms_to_ticks(ms);
    for (;;) {
        cli();
        if (cond()) {
            sti();
            return true;
        }
        if (pit_ticks - start >= n) {
            sti();
            return false;
        }
        sti_hlt();
    }
}

static u32 csum_add(u32 sum, const u8 *p, u32 n)
{
    for (; n > 1; p += 2, n -= 2)
        sum += (u32)(p[0] << 8 | p[1]);
    if (n)
        sum += (u32)p[0] << 8;
    return sum;
}

static u16 csum_fold(u32 sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (u16)~sum;
}

/* --- PCI ------------------------------------------------------------------------------------ */
static u32 bar_size(u8 reg, u32 mask)
{
    u32 old = pci_read32(0, pci_dev, pci_fn, reg);
    pci_write32(0, pci_dev, pci_fn, reg, 0xFFFFFFFFu);
    u32 v = pci_read32(0, pci_dev, pci_fn, reg) & mask;
    pci_write32(0, pci_dev, pci_fn, reg, old);
    return v ? ~v + 1 : 0;
}

/* `fresh`: undo what firmware assigned (BARs, COMMAND, the PIRQ route, INTERRUPT_LINE), so
 * that under SeaBIOS the program takes the same path as on kvmpy's direct boot. */
static void unassign(void)
{
    pci_write16(0, pci_dev, pci_fn, PCI_COMMAND, 0);
    for (u8 reg = PCI_BAR0; reg <= 0x24; reg += 4)
        pci_write32(0, pci_dev, pci_fn, reg, 0);
    pci_write8(0, pci_dev, pci_fn, PCI_INT_LINE, 0xFF);
    u8 pin = pci_read8(0, pci_dev, pci_fn, PCI_INT_PIN);
    if (pin >= 1 && pin <= 4 && pci_read32(0, 1, 0, 0) == PIIX3_ISA_ID)
        pci_write8(0, 1, 0, PIIX_PIRQRC + ((pci_dev - 1u + pin - 1u) & 3), PIRQ_DISABLED);
    puts("pci: fresh: BARs, COMMAND, INTERRUPT_LINE and the PIRQ route cleared");
}

static void pci_setup(u32 nic, u32 bar0_default, bool check_io, bool fresh)
{
    u32 found = 0;
    bool ok = false;
    for (u8 dev = 0; dev < 32 && !ok; dev++)
        for (u8 fn = 0; fn < 8 && !ok; fn++) {
            u32 id = pci_read32(0, dev, fn, 0);
            if (id == 0xFFFFFFFFu) {
                if (fn == 0)
                    break;
                continue;
            }
            if (id == E1000_ID && found++ == nic) {
                pci_dev = dev;
                pci_fn = fn;
                ok = true;
            }
            if (fn == 0 && !(pci_read8(0, dev, 0, 0x0E) & 0x80))
                break;                  /* not multi-function */
        }
    if (!ok) {
        printf("FAIL: no e1000 (8086:100E) number %u on PCI bus 0 (found %u)\n", nic, found);
        exit(EXIT_BAD_SETUP);
    }
    if (fresh)
        unassign();
    u32 class = pci_read32(0, pci_dev, pci_fn, 0x08);
    printf("pci: 8086:100E at 00:%02x.%u class 0x%06x rev %u, INTx pin %u line %u\n", pci_dev,
           pci_fn, class >> 8, class & 0xFF, pci_read8(0, pci_dev, pci_fn, PCI_INT_PIN),
           pci_read8(0, pci_dev, pci_fn, PCI_INT_LINE));
    if (class >> 8 != 0x020000)
        fail("class 0x%06x, expected 0x020000 (Ethernet controller)", class >> 8);

    /* BAR0: the register window (128 KiB of memory space) */
    u32 bar0 = pci_read32(0, pci_dev, pci_fn, PCI_BAR0);
    if (bar0 & 1)
        fail("BAR0 0x%08x is an I/O BAR; expected memory", bar0);
    bool bar64 = ((bar0 >> 1) & 3) == 2;
    u32 size = bar_size(PCI_BAR0, 0xFFFFFFF0u);
    if (size < 0x20000)
        fail("BAR0 decodes %u bytes; the register window is 128 KiB", size);
    if ((bar0 & ~0xFu) == 0) {
        printf("pci: BAR0 unassigned (%u KiB%s); programming 0x%08x\n", size >> 10,
               bar64 ? ", 64-bit" : "", bar0_default);
        pci_write32(0, pci_dev, pci_fn, PCI_BAR0, bar0_default);
        if (bar64)
            pci_write32(0, pci_dev, pci_fn, PCI_BAR0 + 4, 0);
        bar0 = pci_read32(0, pci_dev, pci_fn, PCI_BAR0);
        if ((bar0 & ~0xFu) != bar0_default)
            fail("BAR0 reads 0x%08x after programming 0x%08x", bar0, bar0_default);
    } else if (bar64 && pci_read32(0, pci_dev, pci_fn, PCI_BAR0 + 4)) {
        fail("BAR0 was placed above 4 GiB; this 32-bit program cannot reach it");
    }
    mmio = bar0 & ~0xFu;

    /* the I/O BAR (IOADDR at +0, IODATA at +4): the first I/O BAR after BAR0 */
    u8 ioreg = 0;
    for (u8 reg = PCI_BAR0 + (bar64 ? 8 : 4); reg <= 0x24; reg += 4)
        if (pci_read32(0, pci_dev, pci_fn, reg) & 1) {
            ioreg = reg;
            break;
        }
    if (ioreg) {
        u32 iobar = pci_read32(0, pci_dev, pci_fn, ioreg);
        if ((iobar & ~3u & 0xFFFF) == 0) {
            u32 iosize = bar_size(ioreg, 0xFFFCu) & 0xFFFF;
            printf("pci: I/O BAR at 0x%02x unassigned (%u ports); programming 0x%x\n", ioreg,
                   iosize, IOBAR_DEFAULT);
            pci_write32(0, pci_dev, pci_fn, ioreg, IOBAR_DEFAULT);
            iobar = pci_read32(0, pci_dev, pci_fn, ioreg);
        }
        iobase = iobar & 0xFFFC;
    } else if (check_io) {
        fail("no I/O BAR (IOADDR/IODATA)");
    }
    u16 cmd = pci_read16(0, pci_dev, pci_fn, PCI_COMMAND);
    cmd = (cmd | PCI_CMD_MEM | PCI_CMD_MASTER | (iobase ? PCI_CMD_IO : 0)) & ~PCI_CMD_INTX_OFF;
    pci_write16(0, pci_dev, pci_fn, PCI_COMMAND, cmd);
    printf("pci: registers at 0x%08x, I/O at 0x%x, command 0x%04x\n", mmio, iobase,
           pci_read16(0, pci_dev, pci_fn, PCI_COMMAND));

    u32 st = rd(STATUS);
    if (st == 0xFFFFFFFFu || st == 0)
        fail("STATUS reads 0x%08x: nothing answers at BAR0", st);
    if (check_io && iobase) {
        outl(iobase, STATUS);                   /* IOADDR */
        u32 v = inl(iobase + 4);                /* IODATA */
        if (v != st)
            fail("STATUS through IOADDR/IODATA reads 0x%08x, through MMIO 0x%08x", v, st);
        printf("pci: IOADDR/IODATA window reads STATUS 0x%08x like MMIO\n", v);
    }
    puts("PCI OK");
}

static u8 find_cap(u8 id)
{
    if (!(pci_read16(0, pci_dev, pci_fn, PCI_STATUS) & PCI_STATUS_CAPS))
        return 0;
    u8 p = pci_read8(0, pci_dev, pci_fn, PCI_CAP_PTR) & 0xFC;
    for (int n = 0; p && n < 48; n++) {
        if (pci_read8(0, pci_dev, pci_fn, p) == id)
            return p;
        p = pci_read8(0, pci_dev, pci_fn, p + 1) & 0xFC;
    }
    return 0;
}

/* --- reset, EEPROM, PHY ----------------------------------------------------------------- */
static void nic_reset(void)
{
    wr(IMC, 0xFFFFFFFFu);
    wr(CTRL, rd(CTRL) | CTRL_RST);
    u32 i;
    for (i = 0; i < 1000 && (rd(CTRL) & CTRL_RST); i++)
        pit_sleep_ms(1);
    if (i == 1000)
        fail("CTRL.RST did not clear");
    wr(IMC, 0xFFFFFFFFu);
    (void)rd(ICR);
}

static u16 eerd_read(u32 word)
{
    wr(EERD, EERD_START | word << 8);
    for (u32 i = 0; i < 10000; i++) {
        u32 v = rd(EERD);
        if (v & EERD_DONE)
            return v >> 16;
    }
    fail("EERD: word %u never completed", word);
}

/* Microwire bit-banging through EECD, as Linux's e1000_read_eeprom does for the 82540. */
static u32 eecd;
static void ee_clock(bool high)
{
    eecd = high ? eecd | EECD_SK : eecd & ~EECD_SK;
    wr(EECD, eecd);
}

static void ee_shift_out(u32 data, u32 bits)
{
    for (u32 mask = 1u << (bits - 1); mask; mask >>= 1) {
        eecd = (data & mask) ? eecd | EECD_DI : eecd & ~EECD_DI;
        wr(EECD, eecd);
        ee_clock(true);
        ee_clock(false);
    }
    eecd &= ~EECD_DI;
    wr(EECD, eecd);
}

static u16 ee_shift_in(void)
{
    u16 data = 0;
    eecd &= ~(EECD_DO | EECD_DI);
    for (int i = 0; i < 16; i++) {
        ee_clock(true);
        data = (u16)(data << 1) | ((rd(EECD) & EECD_DO) ? 1 : 0);
        ee_clock(false);
    }
    return data;
}

static void eecd_read_all(u16 *out, u32 words)
{
    eecd = rd(EECD);
    if (!(eecd & EECD_PRES))
        fail("EECD 0x%08x: no EEPROM present (EE_PRES clear)", eecd);
    eecd |= EECD_REQ;
    wr(EECD, eecd);
    u32 i;
    for (i = 0; i < 1000 && !(rd(EECD) & EECD_GNT); i++)
        ;
    if (i == 1000)
        fail("EECD: EE_REQ never granted (EE_GNT)");
    eecd = rd(EECD) & ~(EECD_DO | EECD_GNT | EECD_PRES);
    for (u32 w = 0; w < words; w++) {
        eecd &= ~(EECD_DI | EECD_SK);           /* select: CS up with SK low */
        wr(EECD, eecd);
        eecd |= EECD_CS;
        wr(EECD, eecd);
        ee_shift_out(0x6, 3);                   /* READ opcode (1, 10) */
        ee_shift_out(w, 6);                     /* 64-word part: 6 address bits */
        out[w] = ee_shift_in();
        eecd &= ~(EECD_CS | EECD_SK);           /* standby: deselect */
        wr(EECD, eecd);
    }
    eecd &= ~(EECD_CS | EECD_DI | EECD_SK | EECD_REQ);
    wr(EECD, eecd);
}

static void eeprom_step(const char *want_mac)
{
    static u16 ee[64], ee2[64];
    u16 sum = 0;
    for (u32 i = 0; i < 64; i++) {
        ee[i] = eerd_read(i);
        sum += ee[i];
    }
    for (u32 i = 0; i < 6; i++)
        my_mac[i] = (u8)(ee[i / 2] >> ((i & 1) * 8));
    printf("eeprom: MAC %s, words 0x0a-0x0f %04x %04x %04x %04x %04x %04x, checksum word 0x%04x\n",
           fmt_mac(my_mac), ee[10], ee[11], ee[12], ee[13], ee[14], ee[15], ee[63]);
    if (sum != 0xBABA)
        fail("EEPROM words 0-0x3F sum to 0x%04x, not 0xBABA", sum);
    if (ee[0x0D] != 0x100E && ee[0x0B] != 0x100E)
        printf("eeprom: note: device ID words 0x0b/0x0d are 0x%04x/0x%04x\n", ee[0x0B], ee[0x0D]);
    eecd_read_all(ee2, 64);
    for (u32 i = 0; i < 64; i++)
        if (ee2[i] != ee[i])
            fail("EEPROM word 0x%02x: EECD bit-banging reads 0x%04x, EERD 0x%04x", i, ee2[i], ee[i]);
    if (my_mac[0] & 1)
        fail("EEPROM MAC %s is multicast", fmt_mac(my_mac));
    u32 ral = rd(RAL0), rah = rd(RAH0);
    u8 ra[6] = { (u8)ral, (u8)(ral >> 8), (u8)(ral >> 16), (u8)(ral >> 24), (u8)rah, (u8)(rah >> 8) };
    if (memcmp(ra, my_mac, 6) || !(rah & RAH_AV))
        fail("RAL0/RAH0 0x%08x/0x%08x do not hold the EEPROM's MAC %s with AV set", ral, rah,
             fmt_mac(my_mac));
    if (want_mac[0] && strcmp(want_mac, fmt_mac(my_mac)))
        fail("EEPROM MAC %s, expected %s", fmt_mac(my_mac), want_mac);
    printf("eeprom: 64 words agree through EERD and EECD; sum 0xBABA; RAL0/RAH0 match\n");
    puts("EEPROM OK");
}

static u32 mdic(u32 op, u32 reg, u16 data)
{
    wr(MDIC, op | PHY_ADDR << 21 | reg << 16 | data);
    for (u32 i = 0; i < 10000; i++) {
        u32 v = rd(MDIC);
        if (v & MDIC_READY) {
            if (v & MDIC_ERROR)
                fail("MDIC: PHY register %u %s: error (0x%08x)", reg,
                     op == MDIC_OP_READ ? "read" : "write", v);
            return v & 0xFFFF;
        }
    }
    fail("MDIC: PHY register %u: never ready", reg);
}
static u16 phy_read(u32 reg) { return (u16)mdic(MDIC_OP_READ, reg, 0); }
static void phy_write(u32 reg, u16 v) { mdic(MDIC_OP_WRITE, reg, v); }

static void phy_step(void)
{
    u16 id1 = phy_read(MII_PHYID1), id2 = phy_read(MII_PHYID2);
    u32 id = (u32)id1 << 16 | id2;
    printf("phy: ID 0x%08x, BMCR 0x%04x, BMSR 0x%04x\n", id, phy_read(MII_BMCR), phy_read(MII_BMSR));
    if ((id & ~0xFu) != M88E1011_ID)
        fail("PHY ID 0x%08x is not an M88E1011 (0x%08x): Linux's e1000 refuses an 82540 with it",
             id, M88E1011_ID);
    wr(CTRL, (rd(CTRL) | CTRL_SLU | CTRL_ASDE) & ~(CTRL_LRST | CTRL_ILOS | CTRL_PHY_RST));
    phy_write(MII_BMCR, BMCR_ANENABLE | BMCR_ANRESTART | BMCR_FD | BMCR_SPEED1000);
    u32 start = ms_now();
    u16 bmsr = 0;
    for (;;) {
        (void)phy_read(MII_BMSR);               /* link status latches low: read twice */
        bmsr = phy_read(MII_BMSR);
        if ((bmsr & (BMSR_ANCOMP | BMSR_LINK)) == (BMSR_ANCOMP | BMSR_LINK))
            break;
        if (ms_now() - start > timeout_ms)
            fail("autonegotiation did not complete with link up (BMSR 0x%04x)", bmsr);
        pit_sleep_ms(20);
    }
    u32 st = 0;
    while (!((st = rd(STATUS)) & STATUS_LU)) {
        if (ms_now() - start > timeout_ms)
            fail("STATUS 0x%08x: no link up (LU) after autonegotiation", st);
        pit_sleep_ms(20);
    }
    static const char *const speeds[] = { "10", "100", "1000", "1000" };
    printf("phy: autonegotiation complete after %u ms, BMSR 0x%04x; STATUS 0x%08x: link up, %s Mb/s %s duplex\n",
           ms_now() - start, bmsr, st, speeds[(st >> 6) & 3], st & STATUS_FD ? "full" : "half");
    puts("PHY OK");
}

/* --- interrupts ----------------------------------------------------------------------------- */
static void nic_irq(struct intr_frame *f)
{
    u32 icr = rd(ICR);                          /* reading clears the causes: INTx deasserts */
    icr_seen |= icr;
    if (f->vector == VEC_MSI)
        irq_msi++;
    else
        irq_intx++;
    lapic_eoi();
}

static bool intx_seen(void) { return irq_intx > 0; }
static bool msi_seen(void) { return irq_msi > 0; }

/* The INTx route a BIOS sets up: PIRQ from slot and pin, the PIIX3's route, the IOAPIC pin. */
static void intx_setup(u8 bsp)
{
    u8 pin = pci_read8(0, pci_dev, pci_fn, PCI_INT_PIN);
    if (pin < 1 || pin > 4)
        fail("INTERRUPT_PIN is %u: the function has no INTx", pin);
    if (pci_read32(0, 1, 0, 0) != PIIX3_ISA_ID) {
        printf("FAIL: no PIIX3 ISA bridge (8086:7000) at 00:01.0 to route PCI interrupts\n");
        exit(EXIT_BAD_SETUP);
    }
    u8 pirq = (u8)((pci_dev - 1u + pin - 1u) & 3);
    u8 route = pci_read8(0, 1, 0, PIIX_PIRQRC + pirq);
    u8 irq;
    if (route & PIRQ_DISABLED) {
        static const u8 bios_irqs[4] = { 10, 10, 11, 11 };     /* SeaBIOS's choice */
        irq = bios_irqs[pirq];
        pci_write8(0, 1, 0, PIIX_PIRQRC + pirq, irq);
        if (pci_read8(0, 1, 0, PIIX_PIRQRC + pirq) != irq)
            fail("PIRQ%c route register does not keep IRQ %u", 'A' + pirq, irq);
        outb(ELCR_PORT + (irq >> 3), inb(ELCR_PORT + (irq >> 3)) | (u8)(1u << (irq & 7)));
        pci_write8(0, pci_dev, pci_fn, PCI_INT_LINE, irq);
        printf("irq: PIRQ%c was unrouted; routed to IRQ %u (ELCR level), INTERRUPT_LINE set\n",
               'A' + pirq, irq);
    } else {
        irq = route & 0x0F;
        u8 line = pci_read8(0, pci_dev, pci_fn, PCI_INT_LINE);
        printf("irq: PIRQ%c already routed to IRQ %u (INTERRUPT_LINE %u)\n", 'A' + pirq, irq, line);
        if (line != irq && line != 0xFF && line != 0)
            fail("INTERRUPT_LINE %u disagrees with the PIRQ%c route (IRQ %u)", line, 'A' + pirq, irq);
    }
    u32 gsi = irq;
    for (u32 i = 0; i < madt.niso; i++)
        if (madt.iso[i].irq == irq)
            gsi = madt.iso[i].gsi;
    ioapic_pin = gsi - madt.ioapic_gsi_base;
    if (ioapic_pin >= ioapic_pins())
        fail("IRQ %u -> GSI %u is not on the IOAPIC (%u pins)", irq, gsi, ioapic_pins());
    /* level-triggered, active high: the router's output is a level, as KVM's GSI input is */
    ioapic_set_redir(ioapic_pin, VEC_INTX, IOREDTBL_LEVEL, bsp);
    have_ioapic_pin = true;

    /* an ICS-raised cause arrives; a masked one does not */
    wr(IMC, 0xFFFFFFFFu);
    (void)rd(ICR);
    irq_intx = irq_msi = 0;
    icr_seen = 0;
    wr(IMS, TEST_CAUSE);
    wr(ICS, TEST_CAUSE);
    if (!wait_until(intx_seen, timeout_ms))
        fail("no interrupt through IOAPIC pin %u after ICS (IMS 0x%08x, PCI status 0x%04x)",
             ioapic_pin, rd(IMS), pci_read16(0, pci_dev, pci_fn, PCI_STATUS));
    if (!(icr_seen & TEST_CAUSE))
        fail("the interrupt came with ICR 0x%08x, without the cause set through ICS", icr_seen);
    if (pci_read16(0, pci_dev, pci_fn, PCI_STATUS) & PCI_STATUS_INTX)
        fail("PCI status still shows an interrupt pending after ICR was read");
    u32 before = irq_intx;
    wr(IMC, TEST_CAUSE);
    wr(ICS, TEST_CAUSE);
    pit_sleep_ms(50);
    u32 icr = rd(ICR);
    if (irq_intx != before)
        fail("a masked cause (IMC) still interrupted");
    if (!(icr & TEST_CAUSE))
        fail("a masked cause was not latched in ICR (0x%08x)", icr);
    if (irq_msi)
        fail("%u MSI interrupts arrived while MSI was off", irq_msi);
    printf("IRQ OK (ioapic: INTA# -> PIRQ%c -> IRQ %u -> GSI %u, pin %u, vector 0x%x, level, active high)\n",
           'A' + pirq, irq, gsi, ioapic_pin, VEC_INTX);
}

/* Returns false when the function has no MSI capability (and msi=auto). */
static bool msi_setup(u8 bsp, bool required)
{
    u8 cap = find_cap(PCI_CAP_MSI);
    if (!cap) {
        if (required)
            fail("no MSI capability (ID 5) in the capability list");
        puts("msi: no MSI capability; skipped (msi=auto)");
        return false;
    }
    u16 ctl = pci_read16(0, pci_dev, pci_fn, cap + 2);
    bool is64 = ctl & 0x80;
    u32 addr = LAPIC_DEFAULT_BASE | (u32)bsp << 12;
    pci_write32(0, pci_dev, pci_fn, cap + 4, addr);
    if (is64) {
        pci_write32(0, pci_dev, pci_fn, cap + 8, 0);
        pci_write16(0, pci_dev, pci_fn, cap + 12, VEC_MSI);
    } else {
        pci_write16(0, pci_dev, pci_fn, cap + 8, VEC_MSI);
    }
    pci_write16(0, pci_dev, pci_fn, cap + 2, (u16)((ctl & ~0x70) | 1));  /* one vector, enabled */
    pci_write16(0, pci_dev, pci_fn, PCI_COMMAND,
                pci_read16(0, pci_dev, pci_fn, PCI_COMMAND) | PCI_CMD_INTX_OFF);
    if (!(pci_read16(0, pci_dev, pci_fn, cap + 2) & 1))
        fail("MSI enable bit does not stick (control 0x%04x)", pci_read16(0, pci_dev, pci_fn, cap + 2));

    wr(IMC, 0xFFFFFFFFu);
    (void)rd(ICR);
    u32 intx_before = irq_intx;
    irq_msi = 0;
    icr_seen = 0;
    wr(IMS, TEST_CAUSE);
    wr(ICS, TEST_CAUSE);
    if (!wait_until(msi_seen, timeout_ms))
        fail("no MSI (vector 0x%x) after ICS; MSI control 0x%04x", VEC_MSI,
             pci_read16(0, pci_dev, pci_fn, cap + 2));
    if (!(icr_seen & TEST_CAUSE))
        fail("the MSI came with ICR 0x%08x, without the cause set through ICS", icr_seen);
    pit_sleep_ms(20);
    if (irq_intx != intx_before)
        fail("%u interrupts arrived through the IOAPIC with MSI enabled and INTx disabled",
             irq_intx - intx_before);
    wr(IMC, TEST_CAUSE);
    printf("IRQ OK (msi: capability at 0x%02x, %s, address 0x%08x data 0x%04x)\n", cap,
           is64 ? "64-bit" : "32-bit", addr, VEC_MSI);
    return true;
}

/* --- rings ---------------------------------------------------------------------------------- */
static void rings_setup(bool mac_loopback)
{
    for (u32 i = 0; i < NDESC; i++) {
        memset((void *)&tx_ring[i], 0, sizeof(tx_ring[i]));
        rx_ring[i].addr = (u32)rx_buf[i];
        rx_ring[i].length = 0;
        rx_ring[i].status = 0;
        rx_ring[i].errors = 0;
    }
    tx_tail = tx_clean = rx_next = 0;
    wr(TDBAL, (u32)tx_ring);
    wr(TDBAH, 0);
    wr(TDLEN, sizeof(tx_ring));
    wr(TDH, 0);
    wr(TDT, 0);
    wr(TIDV, 0);
    wr(TADV, 0);
    wr(TIPG, 10 | 8 << 10 | 6 << 20);
    wr(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);

    for (u32 i = 0; i < 128; i++)
        wr(MTA + 4 * i, 0);
    wr(RDBAL, (u32)rx_ring);
    wr(RDBAH, 0);
    wr(RDLEN, sizeof(rx_ring));
    wr(RDH, 0);
    wr(RDT, NDESC - 1);                         /* hardware owns all but one descriptor */
    wr(RDTR, 0);
    wr(RADV, 0);
    wr(ITR, 0);
    wr(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | (mac_loopback ? RCTL_LBM_MAC : 0));
    (void)rd(ICR);
    wr(IMS, DATA_CAUSES);
}

static void tx_reap(void)
{
    while (tx_clean != tx_tail && (tx_ring[tx_clean % NDESC].status & TXD_DD))
        tx_clean++;
}

static bool tx_slot_free(void)
{
    tx_reap();
    return tx_tail - tx_clean < NDESC - 1;
}

static u8 *tx_begin(void)
{
    if (!tx_slot_free() && !wait_until(tx_slot_free, timeout_ms))
        fail("TX ring full: descriptors %u-%u not written back (TDH %u TDT %u)", tx_clean % NDESC,
             (tx_tail - 1) % NDESC, rd(TDH), rd(TDT));
    return tx_buf[tx_tail % NDESC];
}

static void tx_commit(u32 len)
{
    volatile struct tx_desc *d = &tx_ring[tx_tail % NDESC];
    d->addr = (u32)tx_buf[tx_tail % NDESC];
    d->length = (u16)len;
    d->cso = d->css = 0;
    d->special = 0;
    d->status = 0;
    d->cmd = TXD_EOP | TXD_IFCS | TXD_RS;
    barrier();
    tx_tail++;
    tx_frames++;
    wr(TDT, tx_tail % NDESC);
}

/* --- frames --------------------------------------------------------------------------------- */
static u32 eth_header(u8 *f, const u8 *dst, u16 type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, my_mac, 6);
    put_be16(f + 12, type);
    return 14;
}

static void send_arp(u16 op, const u8 *tha, const u8 *tpa)
{
    u8 *f = tx_begin();
    u32 n = eth_header(f, op == 1 ? bcast : tha, ETH_ARP);
    static const u8 hdr[6] = { 0, 1, 8, 0, 6, 4 };
    memcpy(f + n, hdr, 6);
    put_be16(f + n + 6, op);
    memcpy(f + n + 8, my_mac, 6);
    memcpy(f + n + 14, my_ip, 4);
    if (op == 1)
        memset(f + n + 18, 0, 6);
    else
        memcpy(f + n + 18, tha, 6);
    memcpy(f + n + 24, tpa, 4);
    memset(f + n + 28, 0, 60 - (n + 28));       /* pad to Ethernet's 60-byte minimum */
    tx_commit(60);
}

static u32 payload_len(u32 seq) { return 18 + (seq * 233) % (PAYLOAD_MAX - 17); }

static void fill_payload(u8 *p, u32 seq, u32 len)
{
    p[0] = 'K'; p[1] = 'V'; p[2] = 'M'; p[3] = 'P';
    put_le32(p + 4, seq);
    put_le32(p + 8, len);
    for (u32 j = 12; j < len; j++)
        p[j] = (u8)(seq * 7 + j);
}

static bool check_payload(const u8 *p, u32 len, u32 *seq_out)
{
    if (len < 12 || memcmp(p, "KVMP", 4) || le32(p + 8) != len)
        return false;
    u32 seq = le32(p + 4);
    for (u32 j = 12; j < len; j++)
        if (p[j] != (u8)(seq * 7 + j))
            return false;
    *seq_out = seq;
    return true;
}

/* An IPv4/UDP frame to `dst_mac`/`dst_ip`; the payload is already at f + 42. */
static void send_udp(u8 *f, const u8 *dst_mac, const u8 *dst_ip, u16 sport, u16 dport, u32 plen,
                     u16 ident)
{
    u32 n = eth_header(f, dst_mac, ETH_IP);
    u8 *ip = f + n, *udp = ip + 20;
    ip[0] = 0x45;
    ip[1] = 0;
    put_be16(ip + 2, (u16)(20 + 8 + plen));
    put_be16(ip + 4, ident);
    put_be16(ip + 6, 0x4000);                   /* don't fragment */
    ip[8] = 64;
    ip[9] = 17;
    put_be16(ip + 10, 0);
    memcpy(ip + 12, my_ip, 4);
    memcpy(ip + 16, dst_ip, 4);
    put_be16(ip + 10, csum_fold(csum_add(0, ip, 20)));
    put_be16(udp, sport);
    put_be16(udp + 2, dport);
    put_be16(udp + 4, (u16)(8 + plen));
    put_be16(udp + 6, 0);
    u32 sum = csum_add(0, ip + 12, 8) + 17 + 8 + plen;
    u16 c = csum_fold(csum_add(sum, udp, 8 + plen));
    put_be16(udp + 6, c ? c : 0xFFFF);
    tx_commit(n + 28 + plen < 60 ? 60 : n + 28 + plen);
}

/* Checks the IPv4 and UDP headers of a received frame; returns the UDP header or NULL. */
static const u8 *parse_udp(const u8 *f, u32 len, u32 *plen)
{
    if (len < 42 || be16(f + 12) != ETH_IP)
        return NULL;
    const u8 *ip = f + 14;
    u32 ihl = (ip[0] & 0xF) * 4u, total = be16(ip + 2);
    if (ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 17 || total > len - 14 || total < ihl + 8)
        return NULL;
    if (csum_fold(csum_add(0, ip, ihl)))
        fail("received an IPv4 header with a bad checksum");
    const u8 *udp = ip + ihl;
    u32 ulen = be16(udp + 4);
    if (ulen != total - ihl)
        fail("UDP length %u disagrees with the IP length %u", ulen, total - ihl);
    if (be16(udp + 6)) {
        u32 sum = csum_add(0, ip + 12, 8) + 17 + ulen;
        if (csum_fold(csum_add(sum, udp, ulen)))
            fail("received a UDP datagram with a bad checksum");
    }
    *plen = ulen - 8;
    return udp;
}

static void rx_dispatch(const u8 *f, u32 len)
{
    u16 type = be16(f + 12);
    if (loop_active && type == ETH_LOOPTEST) {
        if (len < LOOP_LEN || memcmp(f, loop_frame, LOOP_LEN))
            fail("the loopback frame came back changed (%u bytes)", len);
        if (++loop_received > loop_sent)
            fail("%u loopback frames came back for %u sent", loop_received, loop_sent);
        return;
    }
    if (type == ETH_LOOPTEST)
        fail("a loopback test frame arrived outside the loopback test");
    if (type == ETH_ARP && len >= 42 && be16(f + 14) == 1 && be16(f + 16) == ETH_IP) {
        u16 op = be16(f + 20);
        const u8 *sha = f + 22, *spa = f + 28, *tpa = f + 38;
        if (memcmp(tpa, my_ip, 4)) {
            other_frames++;
            return;
        }
        if (op == 1) {                          /* who has my_ip? */
            send_arp(2, sha, spa);
            arp_requests_answered++;
            return;
        }
        if (op == 2 && !memcmp(spa, peer_ip, 4)) {
            if (memcmp(f, my_mac, 6))
                fail("ARP reply sent to %s, not to us", fmt_mac(f));
            if (sha[0] & 1)
                fail("ARP reply names a multicast MAC %s", fmt_mac(sha));
            memcpy(peer_mac, sha, 6);
            arp_answered = true;
            return;
        }
    }
    u32 plen;
    const u8 *udp = parse_udp(f, len, &plen);
    if (udp && !memcmp(f + 14 + 16, my_ip, 4)) {
        const u8 *ip = f + 14;
        u16 sport = be16(udp), dport = be16(udp + 2);
        if (dport == ECHO_PORT) {               /* someone asks us to echo */
            u8 *t = tx_begin();
            u8 src_mac[6], src_ip[4];
            memcpy(src_mac, f + 6, 6);
            memcpy(src_ip, ip + 12, 4);
            memcpy(t + 42, udp + 8, plen);
            send_udp(t, src_mac, src_ip, ECHO_PORT, sport, plen, be16(ip + 4) ^ 0x8000);
            udp_echoed_for_peer++;
            return;
        }
        if (sport == ECHO_PORT && dport == CLIENT_PORT && !memcmp(ip + 12, peer_ip, 4)) {
            u32 seq;
            if (memcmp(f, my_mac, 6))
                fail("echo sent to %s, not to us", fmt_mac(f));
            if (!check_payload(udp + 8, plen, &seq) || seq >= MAX_FRAMES || plen != payload_len(seq))
                fail("echo of %u bytes does not carry a payload we sent", plen);
            if (echo_seen[seq / 32] & (1u << (seq % 32)))
                echo_bad++;                     /* a duplicate: counted, not fatal */
            else
                echoes++;
            echo_seen[seq / 32] |= 1u << (seq % 32);
            return;
        }
    }
    other_frames++;
}

/* Process every received descriptor; give each back to the hardware (RDT). */
static void rx_poll(void)
{
    for (;;) {
        volatile struct rx_desc *d = &rx_ring[rx_next % NDESC];
        if (!(d->status & RXD_DD))
            return;
        barrier();
        u32 len = d->length;
        if (!(d->status & RXD_EOP))
            fail("RX descriptor %u: a frame spans buffers (status 0x%02x, %u bytes)",
                 rx_next % NDESC, d->status, len);
        if (d->errors)
            fail("RX descriptor %u: errors 0x%02x", rx_next % NDESC, d->errors);
        if (len < 14 || len > BUF_SIZE)
            fail("RX descriptor %u: length %u", rx_next % NDESC, len);
        rx_frames++;
        rx_dispatch(rx_buf[rx_next % NDESC], len);
        d->status = 0;
        d->errors = 0;
        barrier();
        wr(RDT, rx_next % NDESC);               /* this descriptor is the hardware's again */
        rx_next++;
    }
}

static bool arp_done(void) { rx_poll(); return arp_answered; }
static u32 sent_udp, echo_target;
static bool echo_progress(void)
{
    u32 before = echoes;
    rx_poll();
    return echoes != before || echoes >= echo_target;
}
static bool loop_done(void) { rx_poll(); return loop_received > 0; }
static bool peer_echo_done(void) { rx_poll(); return udp_echoed_for_peer >= echo_target; }

static void resolve_peer(void)
{
    for (int attempt = 0; attempt < 3 && !arp_answered; attempt++) {
        send_arp(1, bcast, peer_ip);
        wait_until(arp_done, timeout_ms);
    }
    if (!arp_answered)
        fail("no ARP reply for %u.%u.%u.%u (TDH %u TDT %u, RDH %u RDT %u, %u frames received)",
             peer_ip[0], peer_ip[1], peer_ip[2], peer_ip[3], rd(TDH), rd(TDT), rd(RDH), rd(RDT),
             rx_frames);
    printf("arp: %u.%u.%u.%u is at %s\n", peer_ip[0], peer_ip[1], peer_ip[2], peer_ip[3],
           fmt_mac(peer_mac));
}

/* Send UDP frames [sent_udp, upto) with up to WINDOW in flight; wait for all their echoes. */
static void exchange(u32 upto)
{
    echo_target = upto;
    while (echoes < upto) {
        while (sent_udp < upto && sent_udp - echoes < WINDOW) {
            u32 seq = sent_udp++, plen = payload_len(seq);
            u8 *f = tx_begin();
            fill_payload(f + 42, seq, plen);
            send_udp(f, peer_mac, peer_ip, CLIENT_PORT, ECHO_PORT, plen, (u16)seq);
        }
        if (!wait_until(echo_progress, timeout_ms))
            fail("no UDP echo for %u s: %u of %u echoed (TDH %u TDT %u, RDH %u RDT %u, ICR seen 0x%x)",
                 timeout_ms / 1000, echoes, sent_udp, rd(TDH), rd(TDT), rd(RDH), rd(RDT), icr_seen);
    }
}

static void check_tx_ring(void)
{
    if (!wait_until(tx_slot_free, timeout_ms))
        fail("TX descriptors not written back");
    tx_reap();
    if (tx_clean != tx_tail)
        fail("%u TX descriptors never written back", tx_tail - tx_clean);
    u32 tdh = rd(TDH), tdt = rd(TDT);
    if (tdh != tdt || tdt != tx_tail % NDESC)
        fail("after transmitting: TDH %u TDT %u, expected both %u", tdh, tdt, tx_tail % NDESC);
}

/* --- loopback ------------------------------------------------------------------------------ */
static void loopback_step(const char *mode)
{
    bool phy = !strcmp(mode, "phy");
    u16 bmcr = 0;
    u32 rctl = rd(RCTL);
    if (phy) {
        bmcr = phy_read(MII_BMCR);
        phy_write(MII_BMCR, BMCR_LOOPBACK | BMCR_SPEED1000 | BMCR_FD);
    } else if ((rctl & RCTL_LBM_MASK) != RCTL_LBM_MAC) {
        wr(RCTL, (rctl & ~RCTL_LBM_MASK) | RCTL_LBM_MAC);
    }
    u8 *f = tx_begin();
    eth_header(loop_frame, my_mac, ETH_LOOPTEST);
    memcpy(loop_frame + 14, "kvmpy e1000 loopback ", 21);
    for (u32 j = 35; j < LOOP_LEN; j++)
        loop_frame[j] = (u8)(j * 13 + 5);
    loop_active = true;                         /* from now on such frames are compared */
    u32 rx_before = rx_frames;
    /* up to three tries: a frame may be lost (QEMU drops looped frames for a second after an
     * RCTL write); a late copy of an earlier try is accepted, a frame never sent is not */
    for (int attempt = 0; attempt < 3 && !loop_received; attempt++) {
        if (attempt)
            f = tx_begin();
        memcpy(f, loop_frame, LOOP_LEN);
        loop_sent++;
        tx_commit(LOOP_LEN);
        wait_until(loop_done, timeout_ms / 2 + 1);
    }
    if (!loop_received)
        fail("%s loopback: the frame did not come back in 3 tries (RDH %u RDT %u, %u other frames)",
             mode, rd(RDH), rd(RDT), rx_frames - rx_before);
    check_tx_ring();
    if (phy)
        phy_write(MII_BMCR, (u16)(bmcr & ~BMCR_LOOPBACK));
    else
        wr(RCTL, rctl & ~RCTL_LBM_MASK);
    printf("LOOPBACK OK (%s: %u bytes to %s came back through RX descriptor %u; %u sent)\n",
           mode, LOOP_LEN, fmt_mac(my_mac), (rx_next - 1) % NDESC, loop_sent);
}

/* --- main ----------------------------------------------------------------------------------- */
int main(struct mb_info *info)
{
    (void)info;
    char peer[8] = "yes", msi[8] = "auto", loop[8] = "mac", iobar[8] = "on", role[8] = "client";
    char want_mac[24] = "";
    cmdline_get("peer", peer, sizeof(peer));
    cmdline_get("msi", msi, sizeof(msi));
    cmdline_get("loopback", loop, sizeof(loop));
    cmdline_get("iobar", iobar, sizeof(iobar));
    cmdline_get("role", role, sizeof(role));
    cmdline_get("mac", want_mac, sizeof(want_mac));
    for (char *p = want_mac; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p + 32);
    u32 frames = cmdline_get_u32("frames", 16);
    u32 nic = cmdline_get_u32("nic", 0);
    u32 bar0_default = cmdline_get_u32("bar0", 0xE0000000u);
    timeout_ms = cmdline_get_u32("timeout_ms", 5000);
    u32 wait_ms = cmdline_get_u32("wait_ms", 60000);
    bool with_peer = strcmp(peer, "none") != 0;
    echo_role = !strcmp(role, "echo");
    if (strcmp(msi, "auto") && strcmp(msi, "on") && strcmp(msi, "off"))
        fail("msi=%s: expected auto, on or off", msi);
    if (strcmp(loop, "mac") && strcmp(loop, "phy") && strcmp(loop, "none"))
        fail("loopback=%s: expected mac, phy or none", loop);
    if (strcmp(role, "client") && !echo_role)
        fail("role=%s: expected client or echo", role);
    if (frames < 2 || frames > MAX_FRAMES)
        fail("frames=%u: expected 2 to %u", frames, MAX_FRAMES);
    if (echo_role) {
        memcpy(my_ip, (const u8[4]){ 10, 0, 2, 2 }, 4);
        memcpy(peer_ip, (const u8[4]){ 10, 0, 2, 15 }, 4);
    }
    printf("e1000: role %s, peer %s, frames %u, msi %s, loopback %s, iobar %s\n", role, peer,
           frames, msi, loop, iobar);

    if (!acpi_parse_madt(&madt))
        puts("e1000: no MADT; IOAPIC at its default address, no overrides");
    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);
    lapic_enable(true);
    u8 bsp = (u8)lapic_id();
    ioapic_mask_all();
    intr_register(VEC_INTX, nic_irq);
    intr_register(VEC_MSI, nic_irq);
    pit_start(100);
    if (!pit_verify(2000)) {
        printf("FAIL: the PIT does not tick (no time base for timeouts)\n");
        exit(EXIT_BAD_SETUP);
    }

    pci_setup(nic, bar0_default, !strcmp(iobar, "on"), cmdline_has("fresh"));
    nic_reset();
    eeprom_step(want_mac);
    phy_step();
    intx_setup(bsp);
    rings_setup(false);

    bool msi_done = false;
    if (echo_role) {
        /* serve until `frames` datagrams were echoed; the other guest may start later */
        puts("ECHO READY");
        echo_target = frames;
        if (!wait_until(peer_echo_done, wait_ms))
            fail("echoed %u of %u datagrams (%u ARP requests answered, %u other frames)",
                 udp_echoed_for_peer, frames, arp_requests_answered, other_frames);
        check_tx_ring();
        printf("ECHO OK (%u datagrams echoed, %u ARP requests answered, %u interrupts)\n",
               udp_echoed_for_peer, arp_requests_answered, irq_intx);
        if (strcmp(msi, "off"))
            msi_setup(bsp, !strcmp(msi, "on"));
    } else if (with_peer) {
        u32 intx0 = irq_intx;
        resolve_peer();
        exchange(frames / 2);
        u32 intx_data = irq_intx - intx0;
        if (!intx_data)
            fail("the first %u frames completed without one INTx interrupt", frames / 2);
        if (strcmp(msi, "off"))
            msi_done = msi_setup(bsp, !strcmp(msi, "on"));
        if (msi_done)
            wr(IMS, DATA_CAUSES);
        u32 intx1 = irq_intx, msi1 = irq_msi;
        exchange(frames);
        if (msi_done && irq_msi == msi1)
            fail("the MSI half of the exchange completed without one MSI");
        if (msi_done && irq_intx != intx1)
            fail("%u INTx interrupts with MSI enabled", irq_intx - intx1);
        if (!msi_done && irq_intx == intx1)
            fail("the second half completed without one INTx interrupt");
        check_tx_ring();
        printf("TX OK (%u frames: ARP + %u UDP; the 8-descriptor ring wrapped %u times; TDH == TDT == %u)\n",
               tx_frames, frames, tx_tail / NDESC, tx_tail % NDESC);
        if (frames >= NDESC && (rx_next <= NDESC || tx_tail <= NDESC))
            fail("%u frames sent, %u received: a ring did not wrap", tx_tail, rx_next);
        printf("RX OK (%u frames: ARP reply + %u echoes checked, %u duplicates, %u ARP requests answered, "
               "%u other; ring wrapped %u times; interrupts %u INTx, %u MSI)\n", rx_frames, echoes,
               echo_bad, arp_requests_answered, other_frames, rx_next / NDESC, irq_intx, irq_msi);
    } else if (strcmp(msi, "off")) {
        msi_done = msi_setup(bsp, !strcmp(msi, "on"));
        if (msi_done)
            wr(IMS, DATA_CAUSES);
    }

    if (strcmp(loop, "none")) {
        wr(IMS, DATA_CAUSES);
        loopback_step(loop);
    }

    printf("e1000: statistics GPTC %u GPRC %u TPT %u TPR %u; interrupts %u INTx, %u MSI\n",
           rd(GPTC), rd(GPRC), rd(TPT), rd(TPR), irq_intx, irq_msi);
    cli();
    wr(IMC, 0xFFFFFFFFu);
    wr(RCTL, 0);
    wr(TCTL, 0);
    (void)rd(ICR);
    if (have_ioapic_pin)
        ioapic_mask(ioapic_pin);
    puts("E1000 OK");
    return EXIT_PASS;
}
