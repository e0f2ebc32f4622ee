/* Ed25519 signature verification (RFC 8032, cofactorless, S < L enforced) for signed MCUboot images
 * (docs/protocol.md section 7). The curve arithmetic is Monocypher 4's check equation (fetched at build time
 * from the pymonocypher sdist on PyPI, pinned by version and SHA-256: see the Makefile, target ed25519);
 * SHA-512 (FIPS 180-4) is here. Built with -DFT_WITH_ED25519 (every board build of firmware/Makefile); without
 * it ft_image refuses every signed image. Used by ft_image (signed images) and ft_keys (KEY_CHANGE). */
#ifndef FT_ED25519_H
#define FT_ED25519_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t h[8];
    uint64_t len;      /* bytes hashed so far (messages < 2^61 bytes) */
    uint8_t buf[128];
    size_t n;          /* bytes in buf */
} ft_sha512_ctx;

void ft_sha512_init(ft_sha512_ctx *c);
void ft_sha512_update(ft_sha512_ctx *c, const uint8_t *p, size_t n);
void ft_sha512_final(ft_sha512_ctx *c, uint8_t out[64]);
void ft_sha512(const uint8_t *p, size_t n, uint8_t out[64]);

/* 0 if `sig` is a valid Ed25519 signature of msg[0..n) under the 32-byte public key `pub`, else -1. */
int ft_ed25519_verify(const uint8_t sig[64], const uint8_t pub[32], const uint8_t *msg, size_t n);

#endif
