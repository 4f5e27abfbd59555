/* C start-up: called by entry.S on the BSP's stack with the multiboot registers. */
#include "fw.h"

void fw_start(u32 magic, struct mb_info *info) __attribute__((noreturn));

void fw_start(u32 magic, struct mb_info *info)
{
    mb_magic = magic;
    mbi = magic == MB_BOOTLOADER_MAGIC ? info : NULL;
    serial_init();
    idt_init();
    if (!mbi)
        printf("warning: entered with EAX=0x%08x, not the multiboot magic\n", magic);
    exit(main(mbi));
}
