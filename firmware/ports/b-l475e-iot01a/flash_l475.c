/* fedtiny's flash region on the STM32L475VG: bank 2 (0x08080000, 512 KB, 256 pages of 2 KB; the code lives in
 * bank 1, so programming never stalls instruction fetches: read-while-write across banks).
 * FT_L475_RAMFLASH (the QEMU build): ft_simflash in SRAM2 instead, because QEMU 10's b-l475e-iot01a maps the
 * flash as ROM and the flash controller (0x40022000) as an unimplemented device: writes would be dropped. */
#include "port.h"
#include "port_l475.h"
#include "fedtiny_config.h"
#include <string.h>

#ifdef FT_L475_RAMFLASH
#include "ft_simflash.h"

/* A cold start (QEMU process) finds SRAM2 all zero: format it; a system reset (RESET) keeps it. */
static uint32_t flash_magic __attribute__((section(".noinit")));
#define FLASH_MAGIC 0xF1A5F1A5u
void ft_l475_flash_init(void)
{
    if (flash_magic != FLASH_MAGIC) {
        ft_simflash_format();
        flash_magic = FLASH_MAGIC;
    }
}
ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len) { return ft_simflash_read(offset, buf, len); }
ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len)
{
    return ft_simflash_write(offset, buf, len);
}
ft_status ft_port_flash_erase(uint32_t offset, size_t len) { return ft_simflash_erase(offset, len); }
const uint8_t *ft_port_flash_map(uint32_t offset, size_t len) { return ft_simflash_map(offset, len); }

#else /* the STM32L4 flash controller (RM0351 section 3) */

#define REG(a) (*(volatile uint32_t *)(a))
#define FLASH_ACR REG(0x40022000u)
#define FLASH_KEYR REG(0x40022008u)
#define FLASH_SR REG(0x40022010u)
#define FLASH_CR REG(0x40022014u)
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xC3FAu /* OPTVERR RDERR FASTERR MISERR PGSERR SIZERR PGAERR WRPERR PROGERR OPERR */
#define SR_EOP 1u
#define CR_PG 1u
#define CR_PER (1u << 1)
#define CR_BKER (1u << 11)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define REGION_BASE 0x08080000u /* bank 2 */
#define BANK_PAGES 256u

typedef char ft_assert_region[FT_FLASH_SIZE <= 512u * 1024u ? 1 : -1];              /* bank 2 */
typedef char ft_assert_l4_page[FT_FLASH_PAGE_SIZE == 2048u ? 1 : -1];               /* STM32L4 page */
typedef char ft_assert_l4_word[FT_FLASH_WRITE_ALIGN == 8u ? 1 : -1];                /* ECC double word */

void ft_l475_flash_init(void) {}

static int wait_idle(void)
{
    uint32_t n;
    for (n = 0; n < 10000000u && (FLASH_SR & SR_BSY); n++) {
    }
    return !(FLASH_SR & SR_BSY) && !(FLASH_SR & SR_ERRORS);
}

static int unlock(void)
{
    if (FLASH_CR & CR_LOCK) {
        FLASH_KEYR = 0x45670123u;
        FLASH_KEYR = 0xCDEF89ABu;
    }
    FLASH_SR = SR_ERRORS | SR_EOP; /* clear stale flags (write 1 to clear) */
    return !(FLASH_CR & CR_LOCK);
}

/* The data cache may hold the old bytes of a page just erased or programmed. */
static void flush_dcache(void)
{
    uint32_t acr = FLASH_ACR;
    FLASH_ACR = acr & ~(1u << 10);
    FLASH_ACR = (acr & ~(1u << 10)) | (1u << 12);
    FLASH_ACR = acr;
}

static int erase_page(uint32_t offset)
{
    uint32_t page = offset / FT_FLASH_PAGE_SIZE;
    int ok;
    if (!unlock() || !wait_idle()) return 0;
    FLASH_CR = (FLASH_CR & ~(0xFFu << 3)) | CR_PER | CR_BKER | ((page % BANK_PAGES) << 3);
    FLASH_CR |= CR_STRT;
    ok = wait_idle();
    FLASH_CR &= ~(CR_PER | CR_BKER);
    FLASH_CR |= CR_LOCK;
    flush_dcache();
    return ok;
}

/* Programs one erased double word (two 32-bit writes, RM0351 3.3.7). */
static int program_dword(uint32_t offset, const uint8_t *v)
{
    uint32_t w[2];
    volatile uint32_t *dst = (volatile uint32_t *)(REGION_BASE + offset);
    int ok;
    memcpy(w, v, 8);
    if (!unlock() || !wait_idle()) return 0;
    FLASH_CR |= CR_PG;
    dst[0] = w[0];
    dst[1] = w[1];
    ok = wait_idle();
    FLASH_SR = SR_EOP;
    FLASH_CR &= ~CR_PG;
    FLASH_CR |= CR_LOCK;
    return ok;
}

static int in_range(uint32_t offset, size_t len) { return offset <= FT_FLASH_SIZE && len <= FT_FLASH_SIZE - offset; }

ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len)
{
    if (!buf || !in_range(offset, len)) return FT_ERR_ARG;
    memcpy(buf, (const void *)(REGION_BASE + offset), len);
    return FT_OK;
}

const uint8_t *ft_port_flash_map(uint32_t offset, size_t len)
{
    if (!in_range(offset, len)) return NULL;
    return (const uint8_t *)(REGION_BASE + offset);
}

ft_status ft_port_flash_erase(uint32_t offset, size_t len)
{
    uint32_t p;
    if (!in_range(offset, len) || offset % FT_FLASH_PAGE_SIZE || len % FT_FLASH_PAGE_SIZE) return FT_ERR_ARG;
    for (p = 0; p < len; p += FT_FLASH_PAGE_SIZE) {
        const uint32_t *w = (const uint32_t *)(REGION_BASE + offset + p);
        uint32_t i;
        if (!erase_page(offset + p)) return FT_ERR_FLASH;
        for (i = 0; i < FT_FLASH_PAGE_SIZE / 4u; i++)
            if (w[i] != 0xFFFFFFFFu) return FT_ERR_FLASH; /* verify: an erase that did not land is an error */
    }
    return FT_OK;
}

/* NOR semantics over ECC double words. A double word can be programmed once after an erase, so clearing more
 * bits of one already programmed (the store merges a chunk that ends mid-word with the next chunk) rewrites its
 * page: copy, erase, program back. Only slot pages of an upload in progress are rewritten (metadata records are
 * whole double words written once); a power cut there can lose earlier bytes of that upload, which VERIFY's
 * SHA-256 then refuses: the old image keeps running. */
static uint8_t page_buf[FT_FLASH_PAGE_SIZE] __attribute__((aligned(8)));

static ft_status rewrite_page(uint32_t page_off, uint32_t offset, const uint8_t *p, size_t len)
{
    uint32_t i;
    memcpy(page_buf, (const void *)(REGION_BASE + page_off), FT_FLASH_PAGE_SIZE);
    for (i = 0; i < len; i++) page_buf[offset - page_off + i] &= p[i];
    if (!erase_page(page_off)) return FT_ERR_FLASH;
    for (i = 0; i < FT_FLASH_PAGE_SIZE; i += 8u) {
        static const uint8_t erased[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
        if (memcmp(page_buf + i, erased, 8) != 0 && !program_dword(page_off + i, page_buf + i)) return FT_ERR_FLASH;
    }
    flush_dcache();
    return memcmp((const void *)(REGION_BASE + page_off), page_buf, FT_FLASH_PAGE_SIZE) == 0 ? FT_OK : FT_ERR_FLASH;
}

ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)buf;
    size_t i;
    if (!buf || !in_range(offset, len) || offset % 8u || len % 8u) return FT_ERR_ARG;
    for (i = 0; i < len; i += 8u) {
        const uint8_t *cur = (const uint8_t *)(REGION_BASE + offset + i);
        uint8_t want[8];
        int erased = 1, same = 1, k;
        for (k = 0; k < 8; k++) {
            want[k] = (uint8_t)(cur[k] & p[i + (size_t)k]);
            erased &= cur[k] == 0xFFu;
            same &= want[k] == cur[k];
        }
        if (same) continue;
        if (erased) {
            if (!program_dword(offset + (uint32_t)i, want)) return FT_ERR_FLASH;
            flush_dcache();
            if (memcmp(cur, want, 8) != 0) return FT_ERR_FLASH;
        } else {
            uint32_t page_off = (offset + (uint32_t)i) - (offset + (uint32_t)i) % FT_FLASH_PAGE_SIZE;
            size_t in_page = page_off + FT_FLASH_PAGE_SIZE - (offset + i);
            size_t n = len - i < in_page ? len - i : in_page;
            FT_TRY(rewrite_page(page_off, offset + (uint32_t)i, p + i, n));
            i += n - 8u; /* the rest of this page is done */
        }
    }
    return FT_OK;
}
#endif
