/* Multiboot v1 information: command line, memory map, modules. */
#include "fw.h"

struct mb_info *mbi;
u32 mb_magic;

const char *mb_cmdline(void)
{
    if (!mbi || !(mbi->flags & MBI_FLAG_CMDLINE) || !mbi->cmdline)
        return "";
    return (const char *)mbi->cmdline;
}

struct mb_mmap_entry *mb_mmap_next(struct mb_mmap_entry *prev)
{
    if (!mbi || !(mbi->flags & MBI_FLAG_MMAP))
        return NULL;
    u32 start = mbi->mmap_addr, end = start + mbi->mmap_length;
    u32 next = prev ? (u32)prev + prev->size + 4 : start;
    if (next + sizeof(struct mb_mmap_entry) > end)
        return NULL;
    return (struct mb_mmap_entry *)next;
}

u32 mb_module_count(void)
{
    if (!mbi || !(mbi->flags & MBI_FLAG_MODS))
        return 0;
    return mbi->mods_count;
}

struct mb_module *mb_module(u32 i)
{
    return (struct mb_module *)(mbi->mods_addr + i * sizeof(struct mb_module));
}

const char *mmap_type_name(u32 type)
{
    switch (type) {
    case 1: return "available";
    case 2: return "reserved";
    case 3: return "ACPI reclaimable";
    case 4: return "ACPI NVS";
    case 5: return "bad";
    default: return "unknown";
    }
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Find word `key` on the command line (as "key" or "key=..."); returns a pointer just past
 * the key, or NULL. */
static const char *find_word(const char *key)
{
    const char *s = mb_cmdline();
    size_t n = strlen(key);
    while (*s) {
        while (is_space(*s))
            s++;
        if (!*s)
            break;
        if (!strncmp(s, key, n) && (s[n] == '\0' || s[n] == '=' || is_space(s[n])))
            return s + n;
        while (*s && !is_space(*s))
            s++;
    }
    return NULL;
}

bool cmdline_has(const char *word)
{
    return find_word(word) != NULL;
}

bool cmdline_get(const char *key, char *buf, size_t size)
{
    const char *p = find_word(key);
    if (!p || *p != '=')
        return false;
    p++;
    size_t n = 0;
    while (p[n] && !is_space(p[n]))
        n++;
    if (size) {
        if (n >= size)
            n = size - 1;
        memcpy(buf, p, n);
        buf[n] = '\0';
    }
    return true;
}

u32 cmdline_get_u32(const char *key, u32 dflt)
{
    char buf[16];
    if (!cmdline_get(key, buf, sizeof(buf)) || !isdigit(buf[0]))
        return dflt;
    return strtou32(buf, NULL);
}
