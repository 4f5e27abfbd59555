/* debug_exit: leave through the debug-exit port with the code from the command line.
 *
 * cmdline: code=N (decimal or 0x hex; default 0x2a).  The VMM's exit status is then
 * (N << 1) | 1, e.g. 85 for the default. */
#include "fw.h"

int main(struct mb_info *info)
{
    (void)info;
    u32 code = cmdline_get_u32("code", 0x2a);
    printf("debug_exit: cmdline '%s'\n", mb_cmdline());
    printf("debug_exit: exiting with code %u (0x%x)\n", code, code);
    exit((int)code);
}
