/* Trusted keys, KEYS / KEY_CHANGE, update key: see ft_keys.h. */
#include "ft_keys.h"
#include "ft_crc32.h"
#include "ft_image.h"
#include "ft_proto.h"
#include "ft_sha256.h"
#include "port.h"
#include <stdio.h>
#include <string.h>

#define SECTOR FT_FLASH_PAGE_SIZE
#define RECS (SECTOR / FT_KEY_REC_SIZE)
#define SWITCH 0xFFFFFFFFu
#define REC_BODY (16u + 32u * FT_MAX_KEYS) /* bytes covered by the CRC */

typedef char ft_assert_key_rec[(FT_KEY_REC_SIZE % FT_FLASH_WRITE_ALIGN) == 0 && REC_BODY + 4u <= FT_KEY_REC_SIZE ? 1 : -1];
typedef char ft_assert_key_pages[FT_KEY_PAGES == 2 ? 1 : -1];

static uint8_t cfg_keys[FT_MAX_KEYS][32];
static unsigned cfg_n;
static uint8_t cfg_update_key[32];
static int cfg_has_update_key;

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static int index_of(const uint8_t (*keys)[32], unsigned n, const uint8_t *key)
{
    unsigned i;
    for (i = 0; i < n; i++)
        if (memcmp(keys[i], key, 32) == 0) return (int)i;
    return -1;
}

ft_status ft_keys_config(const uint8_t (*trust)[32], unsigned n, const uint8_t *update_key)
{
    unsigned i;
    if (n > FT_MAX_KEYS || (n && !trust)) return FT_ERR_ARG;
    cfg_n = 0;
    for (i = 0; i < n; i++)
        if (index_of((const uint8_t(*)[32])cfg_keys, cfg_n, trust[i]) < 0) memcpy(cfg_keys[cfg_n++], trust[i], 32);
    cfg_has_update_key = update_key != NULL;
    if (update_key) memcpy(cfg_update_key, update_key, 32);
    return FT_OK;
}

const uint8_t *ft_keys_update_key(void) { return cfg_has_update_key ? cfg_update_key : NULL; }

/* record: "FTKY", u32 seq, u32 key counter, u8 n, 3 zero, keys[4][32] (unused: 0), u32 crc; 0xFF pad */
static void encode(uint32_t seq, uint32_t counter, uint8_t n, const uint8_t (*keys)[32], uint8_t *r)
{
    memset(r, 0xFF, FT_KEY_REC_SIZE);
    memcpy(r, "FTKY", 4);
    wr32(r + 4, seq);
    wr32(r + 8, counter);
    r[12] = n;
    r[13] = r[14] = r[15] = 0;
    memset(r + 16, 0, 32u * FT_MAX_KEYS);
    memcpy(r + 16, keys, 32u * n);
    wr32(r + REC_BODY, ft_crc32(r, REC_BODY));
}

static int decode(const uint8_t *r, ft_keys *k)
{
    if (memcmp(r, "FTKY", 4) != 0 || rd32(r + REC_BODY) != ft_crc32(r, REC_BODY) || r[12] > FT_MAX_KEYS) return 0;
    k->seq = rd32(r + 4);
    k->key_counter = rd32(r + 8);
    k->n = r[12];
    memcpy(k->keys, r + 16, 32u * FT_MAX_KEYS);
    return 1;
}

static int blank(const uint8_t *r)
{
    unsigned i;
    for (i = 0; i < FT_KEY_REC_SIZE; i++)
        if (r[i] != 0xFF) return 0;
    return 1;
}

/* Append one record (seq + 1). k is updated only once the record is in flash. */
static ft_status persist(ft_keys *k, uint32_t counter, uint8_t n, const uint8_t (*keys)[32])
{
    uint8_t rec[FT_KEY_REC_SIZE];
    uint32_t off, end;
    encode(k->seq + 1u, counter, n, keys, rec);
    if (k->next_rec == SWITCH) {
        uint32_t other = k->have_record ? 1u - k->cur_sector : 0u;
        FT_TRY(ft_port_flash_erase(FT_KEY_BASE + other * SECTOR, SECTOR));
        k->cur_sector = other;
        k->next_rec = FT_KEY_BASE + other * SECTOR;
    }
    off = k->next_rec;
    end = FT_KEY_BASE + (k->cur_sector + 1u) * SECTOR;
    /* the position is used even if the write fails: a torn record is never written over */
    k->next_rec = off + 2u * FT_KEY_REC_SIZE <= end ? off + FT_KEY_REC_SIZE : SWITCH;
    FT_TRY(ft_port_flash_write(off, rec, sizeof rec));
    k->seq++;
    k->key_counter = counter;
    if (keys != (const uint8_t(*)[32])k->keys) memcpy(k->keys, keys, 32u * n);
    memset(k->keys[n], 0, 32u * (FT_MAX_KEYS - n));
    k->n = n;
    k->have_record = 1;
    return FT_OK;
}

ft_status ft_keys_open(ft_keys *k)
{
    uint8_t rec[FT_KEY_REC_SIZE];
    ft_keys t;
    uint32_t sec, i, best = 0;
    if (!k) return FT_ERR_ARG;
    memset(k, 0, sizeof *k);
    for (sec = 0; sec < 2; sec++)
        for (i = 0; i < RECS; i++) {
            FT_TRY(ft_port_flash_read(FT_KEY_BASE + sec * SECTOR + i * FT_KEY_REC_SIZE, rec, sizeof rec));
            if (!decode(rec, &t)) continue;
            if (!k->have_record || t.seq > k->seq) {
                k->seq = t.seq;
                k->key_counter = t.key_counter;
                k->n = t.n;
                memcpy(k->keys, t.keys, sizeof k->keys);
                k->have_record = 1;
                k->cur_sector = sec;
                best = i;
            }
        }
    k->next_rec = SWITCH;
    if (k->have_record)
        for (i = best + 1; i < RECS; i++) {
            uint32_t off = FT_KEY_BASE + k->cur_sector * SECTOR + i * FT_KEY_REC_SIZE;
            FT_TRY(ft_port_flash_read(off, rec, sizeof rec));
            if (blank(rec)) {
                k->next_rec = off;
                break;
            }
        }
    if (k->n == 0 && cfg_n) /* provisioning: the keys given to a board that holds none */
        FT_TRY(persist(k, k->key_counter, (uint8_t)cfg_n, (const uint8_t(*)[32])cfg_keys));
    return FT_OK;
}

size_t ft_keys_set(const ft_keys *k, uint8_t *out, size_t cap)
{
    unsigned i;
    size_t len = 8u + 32u * k->n;
    if (cap < len) return 0;
    out[0] = k->n;
    out[1] = FT_MAX_KEYS;
    out[2] = out[3] = 0;
    wr32(out + 4, k->key_counter);
    for (i = 0; i < k->n; i++) ft_image_key_hash(k->keys[i], out + 8 + 32u * i);
    return len;
}

uint8_t ft_keys_change(ft_keys *k, uint32_t device_id, const uint8_t *p, size_t n, char *why, size_t cap)
{
    uint8_t op, keys[FT_MAX_KEYS][32], cnt;
    uint32_t dev, counter;
    int at, done, sig;
    ft_status r;
    if (n != FT_KEY_CHANGE_SIZE || memcmp(p, "FTKC", 4) != 0) {
        snprintf(why, cap, "KeyChange is 144 bytes starting with 'FTKC'");
        return FT_ST_MALFORMED;
    }
    op = p[4];
    dev = rd32(p + 8);
    counter = rd32(p + 12);
    if (op != FT_KEY_CHANGE_ADD && op != FT_KEY_CHANGE_RETIRE) {
        snprintf(why, cap, "KeyChange: op %u (1 = add, 2 = retire)", (unsigned)op);
        return FT_ST_MALFORMED;
    }
    if (k->n == 0) {
        snprintf(why, cap, "no public key provisioned: this board uses the HMAC fleet key");
        return FT_ST_UNSUPPORTED;
    }
    if (dev != 0 && dev != device_id) {
        snprintf(why, cap, "key change for device %lu, this is device %lu", (unsigned long)dev, (unsigned long)device_id);
        return FT_ST_AUTH_FAILED;
    }
    { /* the signed message is bytes [0, 80) with the reserved bytes 5..7 as 0: they are ignored on receipt */
        uint8_t body[FT_KEY_CHANGE_SIGNED];
        memcpy(body, p, sizeof body);
        body[5] = body[6] = body[7] = 0;
        sig = ft_image_check_sig(p + 48, p + FT_KEY_CHANGE_SIGNED, body, sizeof body, (const uint8_t(*)[32])k->keys,
                                 k->n);
    }
    if (sig) {
        snprintf(why, cap, sig == 1 ? "key change signed by a key this board does not trust"
                                    : "key change: bad Ed25519 signature");
        return FT_ST_AUTH_FAILED;
    }
    at = index_of((const uint8_t(*)[32])k->keys, k->n, p + 16);
    done = op == FT_KEY_CHANGE_ADD ? at >= 0 : at < 0;
    if (counter < k->key_counter || (counter == k->key_counter && !done)) {
        snprintf(why, cap, "key counter %lu <= the board's %lu (replayed change)", (unsigned long)counter,
                 (unsigned long)k->key_counter);
        return FT_ST_DOWNGRADE;
    }
    if (counter == k->key_counter) return FT_ST_OK; /* this very change, applied before (a retry after a reset) */
    memcpy(keys, k->keys, sizeof keys);
    cnt = k->n;
    if (op == FT_KEY_CHANGE_ADD && at < 0) {
        if (cnt >= FT_MAX_KEYS) {
            snprintf(why, cap, "the board holds %u keys: retire one first", (unsigned)FT_MAX_KEYS);
            return FT_ST_NO_SPACE;
        }
        memcpy(keys[cnt++], p + 16, 32);
    } else if (op == FT_KEY_CHANGE_RETIRE && at >= 0) {
        if (cnt == 1) {
            snprintf(why, cap, "cannot retire the last trusted key (add its successor first)");
            return FT_ST_BAD_STATE;
        }
        memmove(keys[at], keys[at + 1], 32u * (unsigned)(cnt - 1 - at)); /* the order added is kept */
        cnt--;
    }
    r = persist(k, counter, cnt, (const uint8_t(*)[32])keys);
    if (r != FT_OK) {
        snprintf(why, cap, "flash: %s", ft_status_str(r));
        return FT_ST_FLASH_ERROR;
    }
    return FT_ST_OK;
}
