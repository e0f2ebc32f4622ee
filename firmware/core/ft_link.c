#include "ft_link.h"
#include "ft_crc32.h"
#include "ft_head.h"
#include <string.h>

void ft_link_init(ft_link *l, ft_link_send send)
{
    memset(l, 0, sizeof *l);
    l->send = send;
}

static ft_status respond(ft_link *l, ft_dev *d, const uint8_t *fr, size_t n)
{
    uint8_t version = fr[0], type = fr[1], flags = fr[2], status;
    uint16_t seq = ft_rd16(fr + 4), plen = ft_rd16(fr + 6);
    const uint8_t *payload = fr + FT_HDR_SIZE;
    uint32_t pcrc;
    size_t rlen = 0, enc = 0;
    (void)n;
    if (flags & FT_FLAG_RESPONSE) return FT_OK; /* a device ignores responses */
    pcrc = ft_crc32(payload, plen);
    if (l->have_last && l->last_version == version && l->last_seq == seq && l->last_type == type &&
        l->last_crc == pcrc)
        return l->send(l->tx, l->tx_len); /* a retry: the cached response, not executed again */
    if (version != FT_PROTO_VERSION) {
        static const char why[] = "protocol version not supported";
        memcpy(l->frame + FT_HDR_SIZE, why, sizeof why - 1);
        rlen = sizeof why - 1;
        status = FT_ST_BAD_VERSION;
    } else {
        status = ft_dev_handle(d, type, payload, plen, l->frame + FT_HDR_SIZE, FT_MAX_PAYLOAD, &rlen);
    }
    l->frame[0] = FT_PROTO_VERSION;
    l->frame[1] = type;
    l->frame[2] = FT_FLAG_RESPONSE;
    l->frame[3] = status;
    ft_wr16(l->frame + 4, seq);
    ft_wr16(l->frame + 6, (uint16_t)rlen);
    ft_wr32(l->frame + FT_HDR_SIZE + rlen, ft_crc32(l->frame, FT_HDR_SIZE + rlen));
    /* the retry cache keeps the last *executed* request: refusals that change nothing and UPLOAD_CHUNK
     * (idempotent by offset) neither use nor replace it */
    if ((type == FT_MSG_UPLOAD_CHUNK || status == FT_ST_BAD_VERSION || status == FT_ST_UNKNOWN_TYPE ||
         status == FT_ST_MALFORMED) && rlen <= FT_NC_MAX) {
        FT_TRY(ft_cobs_encode(l->frame, FT_HDR_SIZE + rlen + FT_CRC_SIZE, l->tx_nc, sizeof l->tx_nc - 1, &enc));
        l->tx_nc[enc] = 0;
        return l->send(l->tx_nc, enc + 1);
    }
    FT_TRY(ft_cobs_encode(l->frame, FT_HDR_SIZE + rlen + FT_CRC_SIZE, l->tx, sizeof l->tx - 1, &enc));
    l->tx[enc] = 0;
    l->tx_len = enc + 1;
    l->have_last = 1;
    l->last_version = version;
    l->last_type = type;
    l->last_seq = seq;
    l->last_crc = pcrc;
    return l->send(l->tx, l->tx_len);
}

/* A complete encoded frame is in rx[0..rx_len). Decodes in place. */
static ft_status frame_done(ft_link *l, ft_dev *d)
{
    size_t n = 0;
    uint16_t plen;
    if (l->rx_len == 0) return FT_OK; /* empty frame: ignored */
    if (ft_cobs_decode(l->rx, l->rx_len, l->rx, sizeof l->rx, &n) != FT_OK || n < FT_HDR_SIZE + FT_CRC_SIZE) {
        l->dropped++;
        return FT_OK;
    }
    if (ft_crc32(l->rx, n - FT_CRC_SIZE) != ft_rd32(l->rx + n - FT_CRC_SIZE)) {
        l->dropped++;
        return FT_OK;
    }
    plen = ft_rd16(l->rx + 6);
    if ((size_t)plen != n - FT_HDR_SIZE - FT_CRC_SIZE || plen > FT_MAX_PAYLOAD) {
        l->dropped++;
        return FT_OK;
    }
    return respond(l, d, l->rx, n);
}

ft_status ft_link_feed(ft_link *l, ft_dev *d, const uint8_t *buf, size_t len, size_t *used)
{
    size_t i;
    if (!l || !d || (!buf && len) || !used) return FT_ERR_ARG;
    for (i = 0; i < len; i++) {
        uint8_t b = buf[i];
        if (b == 0) {
            ft_status s = FT_OK;
            if (l->rx_overflow) l->dropped++;
            else s = frame_done(l, d);
            l->rx_len = 0;
            l->rx_overflow = 0;
            if (s != FT_OK) {
                *used = i + 1;
                return s;
            }
            if (d->reset_requested) {
                *used = i + 1;
                return FT_OK;
            }
        } else if (!l->rx_overflow) {
            if (l->rx_len < sizeof l->rx) {
                l->rx[l->rx_len++] = b;
            } else {
                l->rx_overflow = 1; /* too long: discard up to the next 0x00 */
                l->rx_len = 0;
            }
        }
    }
    *used = len;
    return FT_OK;
}
