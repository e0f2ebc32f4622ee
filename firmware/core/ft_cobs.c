#include "ft_cobs.h"

ft_status ft_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t r = 0, w = 1, code_at = 0;
    uint8_t code = 1;
    if ((!in && len) || !out || !out_len) return FT_ERR_ARG;
    if (cap < FT_COBS_MAX_ENCODED(len)) return FT_ERR_NOSPACE;
    while (r < len) {
        if (in[r] == 0) {
            out[code_at] = code;
            code_at = w++;
            code = 1;
        } else {
            out[w++] = in[r];
            code++;
            if (code == 0xFF) {
                out[code_at] = code;
                code_at = w++;
                code = 1;
            }
        }
        r++;
    }
    out[code_at] = code;
    *out_len = w;
    return FT_OK;
}

ft_status ft_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t r = 0, w = 0;
    if ((!in && len) || !out || !out_len) return FT_ERR_ARG;
    while (r < len) {
        uint8_t code = in[r++];
        uint8_t i;
        if (code == 0) return FT_ERR_FORMAT;
        for (i = 1; i < code; i++) {
            if (r >= len) return FT_ERR_FORMAT;
            if (in[r] == 0) return FT_ERR_FORMAT;
            if (w >= cap) return FT_ERR_NOSPACE;
            out[w++] = in[r++];
        }
        if (code != 0xFF && r < len) {
            if (w >= cap) return FT_ERR_NOSPACE;
            out[w++] = 0;
        }
    }
    *out_len = w;
    return FT_OK;
}
