/* Signed images in MCUboot's format (docs/protocol.md section 7), as `imgtool sign` / `fedtiny sign` write them:
 * a header (magic 0x96F3B83D, hdr_size, protect_tlv_size, img_size, flags 0, version), the payload, an optional
 * protected TLV area (0x6908: SEC_CNT 0x50) and the TLV area (0x6907: SHA256 0x10, KEYHASH 0x01, ED25519 0x24).
 *
 * The parser reads the image through a callback (a slot in flash, or a buffer), so it needs no copy of the image
 * and works on ports that cannot map their flash. Every offset and length is checked against the image length
 * (64-bit sums, no wrap) before anything at it is read: a hostile image is refused with a reason, never read out
 * of bounds. The reasons are the virtual board's (fedtiny/link/signing.py). */
#ifndef FT_IMAGE_H
#define FT_IMAGE_H
#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

#define FT_IMAGE_MAGIC 0x96F3B83Du
#define FT_IMAGE_HDR_MIN 32u
#define FT_IMAGE_HDR_MAX 4096u
#define FT_TLV_INFO_MAGIC 0x6907u
#define FT_TLV_PROT_INFO_MAGIC 0x6908u
#define FT_TLV_KEYHASH 0x01u
#define FT_TLV_SHA256 0x10u
#define FT_TLV_ED25519 0x24u
#define FT_TLV_SIG_PURE 0x25u
#define FT_TLV_SEC_CNT 0x50u
#define FT_IMAGE_WHY_LEN 96u

/* Reads n bytes at off of the image into buf (the parser never asks beyond the length it was given). */
typedef ft_status (*ft_image_reader)(void *ctx, uint32_t off, uint8_t *buf, size_t n);

typedef struct {
    uint32_t len;              /* the whole image */
    uint32_t hdr_size, img_size, prot_size;
    uint32_t hashed_len;       /* header + payload + protected TLVs: what the SHA256 TLV covers */
    uint32_t security_counter; /* 0 without a SEC_CNT TLV */
    uint8_t major, minor;      /* version (informative) */
    uint16_t revision;
    uint32_t build;
    uint8_t sha256[32], keyhash[32], sig[64];
    char why[FT_IMAGE_WHY_LEN]; /* the reason of the last refusal */
} ft_image_info;

/* Parse the layout strictly. FT_OK, FT_ERR_FORMAT (im->why says what is wrong) or the reader's error. */
ft_status ft_image_parse(ft_image_info *im, ft_image_reader rd, void *ctx, uint32_t len);
ft_status ft_image_parse_mem(ft_image_info *im, const uint8_t *img, uint32_t len);

/* MCUboot's KEYHASH of a raw Ed25519 public key: SHA-256 of its DER SubjectPublicKeyInfo. */
void ft_image_key_hash(const uint8_t pub[32], uint8_t out[32]);

/* After ft_image_parse: the SHA256 TLV against the image, the KEYHASH among the n trusted raw public keys, the
 * Ed25519 signature of the digest with that key. FT_OK, FT_ERR_AUTH (im->why says which), or the reader's error.
 * Needs a build with FT_WITH_ED25519; without it every image is refused. */
ft_status ft_image_verify(ft_image_info *im, ft_image_reader rd, void *ctx, const uint8_t (*keys)[32], unsigned n);

/* Ed25519 over msg with the trusted key whose KEYHASH is `keyhash`: 0 verified, 1 no such key, 2 bad signature. */
int ft_image_check_sig(const uint8_t keyhash[32], const uint8_t sig[64], const uint8_t *msg, size_t n,
                       const uint8_t (*keys)[32], unsigned nkeys);

#endif
