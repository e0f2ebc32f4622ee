#include "ft_simflash.h"
#include "fedtiny_config.h"
#include <string.h>

#ifdef FT_SIMFLASH_NOINIT /* the QEMU port keeps its "flash" across a system reset */
uint8_t ft_simflash_mem[FT_FLASH_SIZE] __attribute__((aligned(8), section(".noinit")));
#else
uint8_t ft_simflash_mem[FT_FLASH_SIZE] __attribute__((aligned(8)));
#endif

static uint32_t cut_at_op;
static uint32_t ops;
static int cut;
static int cut_complete;
static void (*on_cut)(void);
static void (*on_change)(uint32_t, size_t);

void ft_simflash_format(void) { memset(ft_simflash_mem, 0xFF, sizeof ft_simflash_mem); }
void ft_simflash_cut_at(uint32_t n)
{
    cut_at_op = n;
    ops = 0;
    cut = 0;
}
int ft_simflash_is_cut(void) { return cut; }
void ft_simflash_cut_complete(int complete) { cut_complete = complete; }
uint32_t ft_simflash_ops(void) { return ops; }
void ft_simflash_on_cut(void (*fn)(void)) { on_cut = fn; }
void ft_simflash_on_change(void (*fn)(uint32_t, size_t)) { on_change = fn; }

static int in_range(uint32_t offset, size_t len) { return offset <= FT_FLASH_SIZE && len <= FT_FLASH_SIZE - offset; }

/* Returns 1 when this operation is the one the power dies in. */
static int count_op(void)
{
    ops++;
    if (cut_at_op && ops == cut_at_op) {
        cut = 1;
        return 1;
    }
    return 0;
}

ft_status ft_simflash_read(uint32_t offset, void *buf, size_t len)
{
    if (!buf || !in_range(offset, len)) return FT_ERR_ARG;
    if (cut) return FT_ERR_FLASH;
    memcpy(buf, ft_simflash_mem + offset, len);
    return FT_OK;
}

const uint8_t *ft_simflash_map(uint32_t offset, size_t len)
{
    if (!in_range(offset, len) || cut) return NULL;
    return ft_simflash_mem + offset;
}

ft_status ft_simflash_write(uint32_t offset, const void *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)buf;
    size_t i, n = len;
    int dying;
    if (!buf || !in_range(offset, len)) return FT_ERR_ARG;
    if (offset % FT_FLASH_WRITE_ALIGN || len % FT_FLASH_WRITE_ALIGN) return FT_ERR_ARG;
    if (cut) return FT_ERR_FLASH;
    dying = count_op();
    if (dying && !cut_complete) n = (len / 2u) & ~(size_t)(FT_FLASH_WRITE_ALIGN - 1u); /* half the words made it */
    for (i = 0; i < n; i++) ft_simflash_mem[offset + i] &= p[i];           /* NOR: bits only clear */
    if (on_change && n) on_change(offset, n);
    if (dying) {
        if (on_cut) on_cut();
        return FT_ERR_FLASH;
    }
    return FT_OK;
}

ft_status ft_simflash_erase(uint32_t offset, size_t len)
{
    size_t n = len;
    int dying;
    if (!in_range(offset, len)) return FT_ERR_ARG;
    if (offset % FT_FLASH_PAGE_SIZE || len % FT_FLASH_PAGE_SIZE) return FT_ERR_ARG;
    if (cut) return FT_ERR_FLASH;
    dying = count_op();
    if (dying && !cut_complete) n = len / 3u; /* an interrupted erase leaves part of the range erased */
    memset(ft_simflash_mem + offset, 0xFF, n);
    if (on_change && n) on_change(offset, n);
    if (dying) {
        if (on_cut) on_cut();
        return FT_ERR_FLASH;
    }
    return FT_OK;
}
