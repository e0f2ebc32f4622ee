#include "ft_test.h"
#include "ft_sha256.h"
#include "ft_crc32.h"
#include "ft_cobs.h"
#include "golden/golden_crypto.h"
#include <string.h>

static uint8_t msgbuf[GOLDEN_CRYPTO_MAX_MSG];

void test_sha256_vectors(void)
{
    size_t i;
    uint8_t out[32];
    for (i = 0; i < GOLDEN_CRYPTO_N; i++) {
        const golden_crypto_case *c = &golden_crypto[i];
        ft_sha256(c->msg, c->msg_len, out);
        CHECK_MEM(out, c->sha256, 32);
    }
}

void test_sha256_streaming(void)
{
    size_t i, step;
    uint8_t out[32];
    for (i = 0; i < GOLDEN_CRYPTO_N; i++) {
        const golden_crypto_case *c = &golden_crypto[i];
        for (step = 1; step < 130; step += 37) {
            ft_sha256_ctx ctx;
            size_t off = 0;
            ft_sha256_init(&ctx);
            while (off < c->msg_len) {
                size_t n = c->msg_len - off < step ? c->msg_len - off : step;
                ft_sha256_update(&ctx, c->msg + off, n);
                off += n;
            }
            ft_sha256_final(&ctx, out);
            CHECK_MEM(out, c->sha256, 32);
        }
    }
}

void test_hmac_vectors(void)
{
    size_t i;
    uint8_t out[32];
    for (i = 0; i < GOLDEN_CRYPTO_N; i++) {
        const golden_crypto_case *c = &golden_crypto[i];
        ft_hmac_sha256(c->key, c->key_len, c->msg, c->msg_len, out);
        CHECK_MEM(out, c->hmac, 32);
    }
    /* constant-time compare */
    CHECK(ft_ct_equal(golden_crypto[0].hmac, golden_crypto[0].hmac, 32));
    memcpy(msgbuf, golden_crypto[0].hmac, 32);
    msgbuf[31] ^= 1;
    CHECK(!ft_ct_equal(golden_crypto[0].hmac, msgbuf, 32));
}

void test_crc32_vectors(void)
{
    size_t i;
    CHECK_EQ_INT(ft_crc32("123456789", 9), 0xCBF43926u);
    for (i = 0; i < GOLDEN_CRYPTO_N; i++) {
        const golden_crypto_case *c = &golden_crypto[i];
        uint32_t crc = ft_crc32(c->msg, c->msg_len);
        uint32_t half = ft_crc32_update(ft_crc32(c->msg, c->msg_len / 2), c->msg + c->msg_len / 2,
                                        c->msg_len - c->msg_len / 2);
        CHECK_EQ_INT(crc, c->crc32);
        CHECK_EQ_INT(half, c->crc32);
    }
}

void test_cobs_vectors(void)
{
    size_t i;
    static uint8_t enc[FT_COBS_MAX_ENCODED(GOLDEN_CRYPTO_MAX_MSG)];
    static uint8_t dec[GOLDEN_CRYPTO_MAX_MSG];
    for (i = 0; i < GOLDEN_COBS_N; i++) {
        const golden_cobs_case *c = &golden_cobs[i];
        size_t n = 0;
        CHECK_OK(ft_cobs_encode(c->raw, c->raw_len, enc, sizeof enc, &n));
        CHECK_EQ_INT(n, c->enc_len);
        CHECK_MEM(enc, c->enc, c->enc_len);
        CHECK_OK(ft_cobs_decode(c->enc, c->enc_len, dec, sizeof dec, &n));
        CHECK_EQ_INT(n, c->raw_len);
        CHECK_MEM(dec, c->raw, c->raw_len);
    }
}

void test_cobs_roundtrip(void)
{
    static uint8_t raw[700], enc[FT_COBS_MAX_ENCODED(700)], dec[700];
    size_t len, i, n, m;
    uint32_t x = 12345;
    for (len = 0; len < sizeof raw; len += 13) {
        for (i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            raw[i] = (uint8_t)((x >> 16) % 3u == 0 ? 0 : (x >> 8));
        }
        CHECK_OK(ft_cobs_encode(raw, len, enc, sizeof enc, &n));
        CHECK(n <= FT_COBS_MAX_ENCODED(len));
        CHECK(memchr(enc, 0, n) == NULL);
        CHECK_OK(ft_cobs_decode(enc, n, dec, sizeof dec, &m));
        CHECK_EQ_INT(m, len);
        CHECK_MEM(dec, raw, len);
        /* in place */
        CHECK_OK(ft_cobs_decode(enc, n, enc, n, &m));
        CHECK_EQ_INT(m, len);
        CHECK_MEM(enc, raw, len);
    }
}

void test_cobs_malformed(void)
{
    uint8_t out[8];
    size_t n;
    const uint8_t zero_code[] = {0x00, 0x01};
    const uint8_t short_block[] = {0x05, 0x01, 0x02};
    const uint8_t inner_zero[] = {0x03, 0x00, 0x01};
    const uint8_t too_long[] = {0x0A, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK(ft_cobs_decode(zero_code, sizeof zero_code, out, sizeof out, &n) == FT_ERR_FORMAT);
    CHECK(ft_cobs_decode(short_block, sizeof short_block, out, sizeof out, &n) == FT_ERR_FORMAT);
    CHECK(ft_cobs_decode(inner_zero, sizeof inner_zero, out, sizeof out, &n) == FT_ERR_FORMAT);
    CHECK(ft_cobs_decode(too_long, sizeof too_long, out, sizeof out, &n) == FT_ERR_NOSPACE);
    CHECK(ft_cobs_encode(too_long, sizeof too_long, out, sizeof out, &n) == FT_ERR_NOSPACE);
}
