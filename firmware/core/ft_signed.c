/* Signed slots: see ft_signed.h. */
#include "ft_signed.h"
#include "ft_image.h"
#include "ft_proto.h"
#include <stdio.h>

static ft_image_info im; /* static: the verifier's stack stays small on a board (one request at a time) */

typedef struct {
    const ft_store *st;
    uint8_t slot;
} slot_reader;

static ft_status read_slot(void *ctx, uint32_t off, uint8_t *buf, size_t n)
{
    const slot_reader *r = (const slot_reader *)ctx;
    return ft_store_read(r->st, r->slot, off, buf, n);
}

const char *ft_signed_mode(const ft_keys *k, int is_signed, int at_verify, int *check_tag)
{
    *check_tag = 0;
    if (k->n && !is_signed)
        return at_verify ? "this board accepts only Ed25519-signed images (MCUboot format, UploadBegin flag SIGNED)"
                         : "this board accepts only Ed25519-signed images (MCUboot format, UploadBegin flag SIGNED); "
                           "HMAC-tagged images are refused";
    if (!k->n && is_signed) return "no public key provisioned: this board accepts only HMAC-tagged images";
    *check_tag = !is_signed;
    return NULL;
}

uint8_t ft_signed_verify(const ft_store *st, uint8_t slot, const ft_keys *k, char *why, size_t cap)
{
    const ft_slot_meta *s = &st->m.slots[slot];
    slot_reader r;
    ft_status e;
    r.st = st;
    r.slot = slot;
    e = ft_image_parse(&im, read_slot, &r, s->total_len);
    if (e == FT_OK) e = ft_image_verify(&im, read_slot, &r, (const uint8_t(*)[32])k->keys, k->n);
    if (e == FT_ERR_FORMAT || e == FT_ERR_AUTH) {
        snprintf(why, cap, "%s", im.why);
        return FT_ST_AUTH_FAILED;
    }
    if (e != FT_OK) {
        snprintf(why, cap, "flash: %s", ft_status_str(e));
        return FT_ST_FLASH_ERROR;
    }
    if (im.security_counter != s->security_counter) {
        snprintf(why, cap, "declared security counter %lu differs from the signed %lu", (unsigned long)s->security_counter,
                 (unsigned long)im.security_counter);
        return FT_ST_AUTH_FAILED;
    }
    return FT_ST_OK;
}

ft_status ft_signed_payload(const ft_store *st, uint8_t slot, uint32_t *off, uint32_t *len)
{
    const ft_slot_meta *s = &st->m.slots[slot];
    slot_reader r;
    *off = 0;
    *len = s->total_len;
    if (!(s->flags & FT_SLOT_FLAG_SIGNED)) return FT_OK;
    r.st = st;
    r.slot = slot;
    FT_TRY(ft_image_parse(&im, read_slot, &r, s->total_len));
    *off = im.hdr_size;
    *len = im.img_size;
    return FT_OK;
}
