/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), streaming, no allocation. */
#ifndef FT_SHA256_H
#define FT_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

#define FT_SHA256_LEN 32u
#define FT_SHA256_BLOCK 64u

typedef struct {
    uint32_t h[8];
    uint64_t total;            /* bytes hashed so far */
    uint8_t block[FT_SHA256_BLOCK];
    uint32_t fill;             /* bytes in block */
} ft_sha256_ctx;

void ft_sha256_init(ft_sha256_ctx *c);
void ft_sha256_update(ft_sha256_ctx *c, const void *data, size_t len);
void ft_sha256_final(ft_sha256_ctx *c, uint8_t out[FT_SHA256_LEN]);
void ft_sha256(const void *data, size_t len, uint8_t out[FT_SHA256_LEN]);

typedef struct {
    ft_sha256_ctx inner;
    uint8_t okey[FT_SHA256_BLOCK];
} ft_hmac_ctx;

void ft_hmac_init(ft_hmac_ctx *c, const uint8_t *key, size_t key_len);
void ft_hmac_update(ft_hmac_ctx *c, const void *data, size_t len);
void ft_hmac_final(ft_hmac_ctx *c, uint8_t out[FT_SHA256_LEN]);
void ft_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[FT_SHA256_LEN]);

/* Constant-time comparison: 1 when equal. */
int ft_ct_equal(const uint8_t *a, const uint8_t *b, size_t len);

#endif
