"""The 82540EM's EEPROM: a 64-word Microwire part (a 93C46), its contents, and the bit-banged
interface software drives through EECD.

Contents (8254x SDM section 5.6, table 5-2): words 0-2 hold the MAC address (byte 0 in the low
byte of word 0), 0x0A/0x0F the initialization control words, 0x0B-0x0E the PCI subsystem id,
subsystem vendor, device and vendor ids the hardware loads at power-up, 0x24 the port's third
control word (APM wake-up enable), 0x30-0x32 the PXE option-ROM configuration, and word 0x3F a
checksum chosen so that the 16-bit sum of words 0x00-0x3F is 0xBABA. Drivers refuse a NIC
whose checksum is wrong (Linux's ``e1000_validate_eeprom_checksum``), so the image is always
completed here. The values not about identity are those QEMU's e1000 ships, which every driver
in use today has been seen to accept.

The bit-banged protocol (SDM 5.3.1; Linux ``e1000_shift_out_ee_bits``/``e1000_shift_in_ee_bits``):
software raises CS, then clocks (SK rising edges) the READ opcode ``110`` and a 6-bit word
address out on DI, then clocks the word's 16 bits in from DO, most significant first; reading
on keeps going into the following words. Each bit of DO changes after a falling SK edge. The
state machine below is QEMU's (``set_eecd``/``get_eecd``), which Linux's timing is known to
match. Writes and erases are not supported: the part is read-only to the guest.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import regs as R

WORDS = 64
CHECKSUM_WORD = 0x3F
CHECKSUM_SUM = 0xBABA
#: Microwire READ: start bit 1 followed by opcode 10 (Linux sends the three as one 3-bit opcode).
READ_OPCODE = 0b110
ADDRESS_BITS = 6
#: Clock edges before data comes out: 3 opcode bits + 6 address bits.
COMMAND_BITS = 3 + ADDRESS_BITS

WORD_ICW1 = 0x0A
WORD_SUBSYSTEM_ID = 0x0B
WORD_SUBSYSTEM_VENDOR = 0x0C
WORD_DEVICE_ID = 0x0D
WORD_VENDOR_ID = 0x0E
WORD_ICW2 = 0x0F
WORD_ICW3_PORT_A = 0x24

#: Words 0x03-0x3E that are not 0xFFFF (erased), by word: SDM table 5-2 defaults as QEMU's
#: template has them (LED/PHY/software configuration, PXE words).
_TEMPLATE = {
    0x03: 0x0000, 0x05: 0x0000, 0x06: 0x0000, 0x07: 0x0000,
    0x08: 0x3000, 0x09: 0x1000,  # PBA number
    WORD_ICW1: 0x6403,
    WORD_ICW2: 0x3040,
    0x10: 0x0008, 0x11: 0x2000, 0x12: 0x7E14, 0x13: 0x0048, 0x14: 0x1000, 0x15: 0x00D8,
    0x16: 0x0000, 0x17: 0x2700, 0x18: 0x6CC9, 0x19: 0x3150, 0x1A: 0x0722, 0x1B: 0x040B,
    0x1C: 0x0984, 0x1D: 0x0000, 0x1E: 0xC000, 0x1F: 0x0706, 0x20: 0x1008, 0x21: 0x0000,
    0x22: 0x0F04, 0x23: 0x7FFF, WORD_ICW3_PORT_A: 0x4D01,
    0x30: 0x0100, 0x31: 0x4000, 0x32: 0x121C,  # PXE boot agent configuration
}


def build_image(
    mac: bytes, *, vendor_id: int, device_id: int, subsystem_vendor_id: int, subsystem_id: int
) -> list[int]:
    """The 64 words for a NIC with this MAC and PCI identity, checksum included."""
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    words = [0xFFFF] * WORDS
    for w, v in _TEMPLATE.items():
        words[w] = v
    for i in range(3):
        words[i] = mac[2 * i] | mac[2 * i + 1] << 8
    words[WORD_SUBSYSTEM_ID] = subsystem_id
    words[WORD_SUBSYSTEM_VENDOR] = subsystem_vendor_id
    words[WORD_DEVICE_ID] = device_id
    words[WORD_VENDOR_ID] = vendor_id
    words[CHECKSUM_WORD] = (CHECKSUM_SUM - sum(words[:CHECKSUM_WORD])) & 0xFFFF
    return words


def image_mac(words: list[int]) -> bytes:
    """The MAC address words 0-2 hold."""
    return b"".join(bytes((w & 0xFF, w >> 8)) for w in words[:3])


@dataclass
class MicrowireState:
    """Where the bit-banged conversation is: the EECD bits software last wrote, the bits
    shifted in so far and the position of the next bit out."""

    eecd: int = 0  # SK, CS, DI, FWE, REQ as last written
    val_in: int = 0
    bits_in: int = 0
    bit_out: int = 0
    reading: bool = False


def eecd_read(st: MicrowireState, words: list[int]) -> int:
    """EECD as software reads it: its own bits, EEPROM present, the grant following the
    request, and DO (high when idle, the current data bit while reading)."""
    value = st.eecd | R.EECD_PRES
    if st.eecd & R.EECD_REQ:
        value |= R.EECD_GNT
    if not st.reading:
        return value | R.EECD_DO
    pos = st.bit_out
    word = words[(pos >> 4) & (WORDS - 1)]
    if word >> (15 - (pos & 15)) & 1:
        value |= R.EECD_DO
    return value


def eecd_write(st: MicrowireState, value: int) -> None:
    """Software drove EECD: act on CS and SK edges."""
    old = st.eecd
    st.eecd = value & R.EECD_WRITABLE
    if not value & R.EECD_CS:
        return  # deselected: the part ignores the clock
    if (value ^ old) & R.EECD_CS:  # chip select rose: a new command starts
        st.val_in = st.bits_in = st.bit_out = 0
        st.reading = False
    if not (value ^ old) & R.EECD_SK:
        return
    if not value & R.EECD_SK:  # falling edge: the next data bit goes out
        st.bit_out += 1
        return
    st.val_in = (st.val_in << 1 | (1 if value & R.EECD_DI else 0)) & 0xFFFF
    st.bits_in += 1
    if st.bits_in == COMMAND_BITS and not st.reading:
        address = st.val_in & ((1 << ADDRESS_BITS) - 1)
        # one before the word's first bit: the falling edge that ends this clock advances it
        st.bit_out = address * 16 - 1
        st.reading = (st.val_in >> ADDRESS_BITS) & 7 == READ_OPCODE
