/* Message codec of the device: error responses with a reason, BlobRead paging, SlotStatus encoding. */
#include "ft_codec.h"
#include "ft_proto.h"
#include <stdio.h>
#include <string.h>

uint8_t ft_fail(ft_ctx *c, uint8_t status, const char *reason)
{
    size_t n = strlen(reason);
    if (n > FT_REASON_MAX) n = FT_REASON_MAX;
    if (n > c->cap) n = c->cap;
    memcpy(c->resp, reason, n);
    *c->len = n;
    return status;
}

uint8_t ft_fail_flash(ft_ctx *c, ft_status s)
{
    char buf[48];
    snprintf(buf, sizeof buf, "flash: %s", ft_status_str(s));
    return ft_fail(c, FT_ST_FLASH_ERROR, buf);
}

uint8_t ft_put_slot_status(ft_ctx *c)
{
    ft_dev *d = c->d;
    uint8_t *p = c->resp;
    unsigned i;
    if (c->cap < FT_SLOT_STATUS_HDR_SIZE + FT_SLOT_INFO_SIZE * FT_N_SLOTS) return ft_fail(c, FT_ST_INTERNAL, "response buffer");
    p[0] = FT_N_SLOTS;
    p[1] = d->active;
    p[2] = d->store.m.confirmed;
    p[3] = d->store.m.reverted & (FT_SS_REVERTED | FT_SS_FELL_BACK);
    for (i = 0; i < FT_N_SLOTS; i++) {
        const ft_slot_meta *s = &d->store.m.slots[i];
        uint8_t *q = p + FT_SLOT_STATUS_HDR_SIZE + FT_SLOT_INFO_SIZE * i;
        q[0] = s->state;
        q[1] = s->kind;
        q[2] = q[3] = 0;
        ft_wr32(q + 4, s->total_len);
        ft_wr32(q + 8, s->received);
        memcpy(q + 12, s->sha256, 32);
    }
    *c->len = FT_SLOT_STATUS_HDR_SIZE + FT_SLOT_INFO_SIZE * FT_N_SLOTS;
    return FT_ST_OK;
}

/* BlobRead -> page of an object of `total` bytes produced by `read`. hdr: bytes before total_len. */

uint8_t ft_blob_page(ft_ctx *c, const uint8_t *p, size_t n, uint32_t total, size_t hdr, ft_blob_reader rd)
{
    uint32_t off, want, room;
    if (n != FT_BLOB_READ_SIZE) return ft_fail(c, FT_ST_MALFORMED, "BlobRead is 6 bytes");
    off = ft_rd32(p);
    want = ft_rd16(p + 4);
    if (off > total) return ft_fail(c, FT_ST_MALFORMED, "offset beyond object");
    room = (uint32_t)(FT_MAX_PAYLOAD - hdr - FT_BLOB_PAGE_HDR_SIZE);
    if (want > total - off) want = total - off;
    if (want > room) want = room;
    ft_wr32(c->resp + hdr, total);
    if (rd(c->d, off, c->resp + hdr + FT_BLOB_PAGE_HDR_SIZE, want) != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "blob read");
    *c->len = hdr + FT_BLOB_PAGE_HDR_SIZE + want;
    return FT_ST_OK;
}
