/* COBS (Consistent Overhead Byte Stuffing): encoded data contains no 0x00, which then delimits frames.
 * Overhead: 1 byte per 254, plus 1. */
#ifndef FT_COBS_H
#define FT_COBS_H
#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

#define FT_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* Encode len bytes of in into out (cap bytes); *out_len = encoded length (no trailing 0x00). */
ft_status ft_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);
/* Decode len bytes (no 0x00 inside, no delimiter) into out; in == out allowed (decodes in place). */
ft_status ft_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

#endif
