#include "ft_store.h"
#include "port.h"
#include "ft_crc32.h"
#include "ft_sha256.h"
#include "ft_head.h"
#include <string.h>

#define META_SECTOR_BYTES FT_FLASH_PAGE_SIZE
#define RECS_PER_SECTOR (META_SECTOR_BYTES / FT_META_REC_SIZE)
#define SWITCH 0xFFFFFFFFu

typedef char ft_assert_rec_align[(FT_META_REC_SIZE % FT_FLASH_WRITE_ALIGN) == 0 ? 1 : -1];
typedef char ft_assert_meta_pages[FT_META_PAGES == 2 ? 1 : -1];
typedef char ft_assert_slot_pages[(FT_SLOT_SIZE % FT_FLASH_PAGE_SIZE) == 0 ? 1 : -1];

/* record: "FTM2" u32 counter, u8 confirmed, testing, flags, n_slots, u32 uid_reserved, u32 sec_floor,
 * per slot 80 B (state, kind, flags, pad, total, received, sha256, tag, security_counter), u32 crc; 0xFF pad */
#define SLOT_REC 80u
#define HDR_REC 20u
typedef char ft_assert_rec_size[HDR_REC + SLOT_REC * FT_N_SLOTS + 4u <= FT_META_REC_SIZE ? 1 : -1];
static void encode(const ft_meta *m, uint8_t *r)
{
    unsigned i;
    uint8_t *p;
    memset(r, 0xFF, FT_META_REC_SIZE);
    memcpy(r, "FTM2", 4);
    ft_wr32(r + 4, m->counter);
    r[8] = m->confirmed;
    r[9] = m->testing;
    r[10] = m->reverted;
    r[11] = FT_N_SLOTS;
    ft_wr32(r + 12, m->uid_reserved);
    ft_wr32(r + 16, m->sec_floor);
    p = r + HDR_REC;
    for (i = 0; i < FT_N_SLOTS; i++, p += SLOT_REC) {
        const ft_slot_meta *s = &m->slots[i];
        p[0] = s->state;
        p[1] = s->kind;
        p[2] = s->flags;
        p[3] = 0;
        ft_wr32(p + 4, s->total_len);
        ft_wr32(p + 8, s->received);
        memcpy(p + 12, s->sha256, 32);
        memcpy(p + 44, s->tag, 32);
        ft_wr32(p + 76, s->security_counter);
    }
    ft_wr32(p, ft_crc32(r, (size_t)(p - r)));
}

static int decode(const uint8_t *r, ft_meta *m)
{
    unsigned i;
    const uint8_t *p = r + HDR_REC + SLOT_REC * FT_N_SLOTS;
    if (memcmp(r, "FTM2", 4) != 0 || r[11] != FT_N_SLOTS) return 0;
    if (ft_rd32(p) != ft_crc32(r, (size_t)(p - r))) return 0;
    m->counter = ft_rd32(r + 4);
    m->confirmed = r[8];
    m->testing = r[9];
    m->reverted = r[10];
    m->uid_reserved = ft_rd32(r + 12);
    m->sec_floor = ft_rd32(r + 16);
    p = r + HDR_REC;
    for (i = 0; i < FT_N_SLOTS; i++, p += SLOT_REC) {
        ft_slot_meta *s = &m->slots[i];
        s->state = p[0];
        s->kind = p[1];
        s->flags = p[2]; /* 0 in records written before signed images */
        s->total_len = ft_rd32(p + 4);
        s->received = ft_rd32(p + 8);
        memcpy(s->sha256, p + 12, 32);
        memcpy(s->tag, p + 44, 32);
        s->security_counter = ft_rd32(p + 76);
        if (s->state > FT_SLOT_CONFIRMED || s->total_len > FT_SLOT_SIZE || s->received > s->total_len) return 0;
    }
    if ((m->confirmed != FT_NO_SLOT && m->confirmed >= FT_N_SLOTS) ||
        (m->testing != FT_NO_SLOT && m->testing >= FT_N_SLOTS))
        return 0;
    return 1;
}

static int blank(const uint8_t *r)
{
    unsigned i;
    for (i = 0; i < FT_META_REC_SIZE; i++)
        if (r[i] != 0xFF) return 0;
    return 1;
}

ft_status ft_store_open(ft_store *st)
{
    uint8_t rec[FT_META_REC_SIZE];
    ft_meta m;
    uint32_t sec, i, best_pos = 0;
    if (!st) return FT_ERR_ARG;
    memset(st, 0, sizeof *st);
    st->m.confirmed = st->m.testing = FT_NO_SLOT;
    for (sec = 0; sec < 2; sec++) {
        for (i = 0; i < RECS_PER_SECTOR; i++) {
            uint32_t off = sec * META_SECTOR_BYTES + i * FT_META_REC_SIZE;
            FT_TRY(ft_port_flash_read(off, rec, sizeof rec));
            if (!decode(rec, &m)) continue;
            if (!st->have_record || m.counter > st->m.counter) {
                st->m = m;
                st->have_record = 1;
                st->cur_sector = sec;
                best_pos = i;
            }
        }
    }
    st->next_rec = SWITCH;
    if (st->have_record) {
        /* the next blank record position after the newest one, in the same sector */
        for (i = best_pos + 1; i < RECS_PER_SECTOR; i++) {
            uint32_t off = st->cur_sector * META_SECTOR_BYTES + i * FT_META_REC_SIZE;
            FT_TRY(ft_port_flash_read(off, rec, sizeof rec));
            if (blank(rec)) {
                st->next_rec = off;
                break;
            }
        }
    }
    return FT_OK;
}

ft_status ft_store_persist(ft_store *st)
{
    uint8_t rec[FT_META_REC_SIZE];
    if (!st) return FT_ERR_ARG;
    st->m.counter++;
    encode(&st->m, rec);
    if (st->next_rec == SWITCH) {
        uint32_t other = st->have_record ? 1u - st->cur_sector : 0u;
        FT_TRY(ft_port_flash_erase(other * META_SECTOR_BYTES, META_SECTOR_BYTES));
        st->cur_sector = other;
        st->next_rec = other * META_SECTOR_BYTES;
    }
    {
        uint32_t off = st->next_rec;
        uint32_t end = (st->cur_sector + 1u) * META_SECTOR_BYTES;
        /* consume the position even if the write fails (a torn record is never rewritten) */
        st->next_rec = off + 2u * FT_META_REC_SIZE <= end ? off + FT_META_REC_SIZE : SWITCH;
        FT_TRY(ft_port_flash_write(off, rec, sizeof rec));
    }
    st->have_record = 1;
    return FT_OK;
}

static ft_status check(uint8_t slot, uint32_t offset, size_t len)
{
    if (slot >= FT_N_SLOTS) return FT_ERR_ARG;
    if (offset > FT_SLOT_SIZE || len > FT_SLOT_SIZE - offset) return FT_ERR_RANGE;
    return FT_OK;
}

ft_status ft_store_erase(ft_store *st, uint8_t slot, uint32_t len)
{
    uint32_t pages, i;
    if (!st) return FT_ERR_ARG;
    FT_TRY(check(slot, 0, len));
    pages = (len + FT_FLASH_PAGE_SIZE - 1u) / FT_FLASH_PAGE_SIZE;
    for (i = 0; i < pages; i++)
        FT_TRY(ft_port_flash_erase(FT_SLOT_BASE(slot) + i * FT_FLASH_PAGE_SIZE, FT_FLASH_PAGE_SIZE));
    return FT_OK;
}

ft_status ft_store_write(ft_store *st, uint8_t slot, uint32_t offset, const uint8_t *data, size_t len)
{
    const uint32_t A = FT_FLASH_WRITE_ALIGN;
    uint8_t word[FT_FLASH_WRITE_ALIGN];
    uint32_t base, pos;
    if (!st || (!data && len)) return FT_ERR_ARG;
    FT_TRY(check(slot, offset, len));
    base = FT_SLOT_BASE(slot);
    pos = offset;
    while (len) {
        uint32_t w0 = pos - pos % A, in_word = pos - w0;
        if (in_word || len < A) {
            /* partial word: merge with what is in flash (erased bytes read 0xFF, so NOR programming of the
             * same word again only clears the new bytes' bits) */
            size_t n = A - in_word < len ? A - in_word : len;
            memset(word, 0xFF, A);
            memcpy(word + in_word, data, n);
            FT_TRY(ft_port_flash_write(base + w0, word, A));
            pos += (uint32_t)n;
            data += n;
            len -= n;
        } else {
            size_t n = len - len % A;
            FT_TRY(ft_port_flash_write(base + pos, data, n));
            pos += (uint32_t)n;
            data += n;
            len -= n;
        }
    }
    return FT_OK;
}

ft_status ft_store_read(const ft_store *st, uint8_t slot, uint32_t offset, uint8_t *buf, size_t len)
{
    if (!st || (!buf && len)) return FT_ERR_ARG;
    FT_TRY(check(slot, offset, len));
    return ft_port_flash_read(FT_SLOT_BASE(slot) + offset, buf, len);
}

ft_status ft_store_crc32(const ft_store *st, uint8_t slot, uint32_t len, uint32_t *crc)
{
    uint8_t buf[64];
    uint32_t off = 0, c = 0;
    if (!crc) return FT_ERR_ARG;
    while (off < len) {
        uint32_t n = len - off < sizeof buf ? len - off : (uint32_t)sizeof buf;
        FT_TRY(ft_store_read(st, slot, off, buf, n));
        c = ft_crc32_update(c, buf, n);
        off += n;
    }
    *crc = c;
    return FT_OK;
}

ft_status ft_store_sha256(const ft_store *st, uint8_t slot, uint32_t len, uint8_t out[32])
{
    uint8_t buf[64];
    uint32_t off = 0;
    ft_sha256_ctx c;
    if (!out) return FT_ERR_ARG;
    ft_sha256_init(&c);
    while (off < len) {
        uint32_t n = len - off < sizeof buf ? len - off : (uint32_t)sizeof buf;
        FT_TRY(ft_store_read(st, slot, off, buf, n));
        ft_sha256_update(&c, buf, n);
        off += n;
    }
    ft_sha256_final(&c, out);
    return FT_OK;
}

ft_status ft_store_blank(const ft_store *st, uint8_t slot, uint32_t len, int *blank)
{
    uint8_t buf[64];
    uint32_t off = 0, i;
    if (!blank) return FT_ERR_ARG;
    *blank = 1;
    while (off < len) {
        uint32_t n = len - off < sizeof buf ? len - off : (uint32_t)sizeof buf;
        FT_TRY(ft_store_read(st, slot, off, buf, n));
        for (i = 0; i < n; i++)
            if (buf[i] != 0xFFu) {
                *blank = 0;
                return FT_OK;
            }
        off += n;
    }
    return FT_OK;
}
