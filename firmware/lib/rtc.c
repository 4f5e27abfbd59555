/* CMOS RTC: date and time, BCD or binary, 12- or 24-hour. */
#include "fw.h"

u8 cmos_read(u8 reg)
{
    outb(CMOS_INDEX, reg);          /* bit 7 clear: NMI stays enabled */
    return inb(CMOS_DATA);
}

static u32 bcd(u8 v) { return (v >> 4) * 10 + (v & 15); }

bool rtc_read(struct rtc_time *t)
{
    int i;
    for (i = 0; i < 1000 && (cmos_read(0x0A) & 0x80); i++)     /* update in progress */
        cpu_relax();
    if (i == 1000)
        return false;
    u8 sec = cmos_read(0x00), min = cmos_read(0x02), hour = cmos_read(0x04);
    u8 day = cmos_read(0x07), mon = cmos_read(0x08), year = cmos_read(0x09);
    u8 cent = cmos_read(0x32), regb = cmos_read(0x0B);
    bool pm = hour & 0x80;
    hour &= 0x7F;
    if (!(regb & 0x04)) {           /* BCD */
        sec = bcd(sec), min = bcd(min), hour = bcd(hour);
        day = bcd(day), mon = bcd(mon), year = bcd(year), cent = bcd(cent);
    }
    if (!(regb & 0x02)) {           /* 12-hour */
        hour %= 12;
        if (pm)
            hour += 12;
    }
    t->second = sec, t->minute = min, t->hour = hour;
    t->day = day, t->month = mon;
    t->year = (cent >= 19 && cent <= 21 ? cent : 20) * 100 + year;
    return true;
}
