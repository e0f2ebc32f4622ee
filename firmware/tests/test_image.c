/* Signed MCUboot images (core/ft_image.c) against images made by fedtiny.link.signing (golden/golden_signing.h,
 * scripts/gen_signing_golden.py): accepted as the virtual board accepts them, every tampered variant refused with
 * the virtual board's reason, no read outside the image (ASan, and a reader that checks every access). */
#include "ft_test.h"
#include "ft_image.h"
#include "ft_sha256.h"
#include "golden/golden_signing.h"
#include "../app/factory_head.h"
#include <string.h>

static uint8_t buf[1024];

typedef struct {
    const uint8_t *p;
    uint32_t n;
    int oob; /* the parser asked for bytes outside the image */
} strict_mem;

static ft_status strict_read(void *ctx, uint32_t off, uint8_t *out, size_t n)
{
    strict_mem *m = (strict_mem *)ctx;
    if (off > m->n || n > m->n - off) {
        m->oob = 1;
        return FT_ERR_RANGE;
    }
    memcpy(out, m->p + off, n);
    return FT_OK;
}

static const uint8_t (*trusted1)[32] = (const uint8_t(*)[32])gs_pub1;

/* parse + verify with key 1 trusted: the ft_status; im->why on refusal */
static ft_status check(ft_image_info *im, const uint8_t *img, uint32_t n)
{
    strict_mem m;
    ft_status r;
    m.p = img;
    m.n = n;
    m.oob = 0;
    r = ft_image_parse(im, strict_read, &m, n);
    if (r == FT_OK) r = ft_image_verify(im, strict_read, &m, trusted1, 1);
    CHECK(!m.oob);
    return r;
}

static int why_is(const ft_image_info *im, const char *want)
{
    if (strcmp(im->why, want) == 0) return 1;
    ft_test_outf("    why: '%s', expected '%s'\n", im->why, want);
    return 0;
}

static void resign_sha(uint8_t *img, uint32_t hashed, uint32_t sha_tlv_value)
{
    ft_sha256(img, hashed, img + sha_tlv_value); /* a consistent SHA256 TLV: only the signature can catch it */
}

void test_image_signed_golden(void)
{
    ft_image_info im;
    uint8_t two[2][32];
    CHECK_OK(check(&im, gs_img_ok, GS_IMG_OK_LEN));
    CHECK_EQ_INT(im.security_counter, 3);
    CHECK_EQ_INT(im.hdr_size, 32);
    CHECK_EQ_INT(im.img_size, 16);
    CHECK_EQ_INT(im.major, 1);
    CHECK_EQ_INT(im.minor, 2);
    CHECK_EQ_INT(im.revision, 3);
    CHECK_EQ_INT(im.build, 4);
    CHECK_MEM(gs_img_ok + im.hdr_size, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 16);
    CHECK_MEM(im.keyhash, gs_keyhash1, 32);
    {
        uint8_t kh[32];
        ft_image_key_hash(gs_pub1, kh);
        CHECK_MEM(kh, gs_keyhash1, 32);
    }
    /* the factory head signed: its payload is app/factory_head.h byte for byte */
    CHECK_OK(check(&im, gs_img_head, GS_IMG_HEAD_LEN));
    CHECK_EQ_INT(im.img_size, FT_FACTORY_HEAD_LEN);
    CHECK_MEM(gs_img_head + im.hdr_size, ft_factory_head, FT_FACTORY_HEAD_LEN);
    CHECK_EQ_INT(im.security_counter, 1);
    /* imgtool's padded header, no protected area (counter 0), an unknown TLV skipped */
    CHECK_OK(check(&im, gs_img_padded, GS_IMG_PADDED_LEN));
    CHECK_EQ_INT(im.hdr_size, 0x200);
    CHECK_EQ_INT(im.security_counter, 0);
    CHECK_EQ_INT(im.prot_size, 0);
    /* another key: unknown to a board trusting key 1, accepted once key 2 is trusted too */
    CHECK(check(&im, gs_img_key2, GS_IMG_KEY2_LEN) == FT_ERR_AUTH);
    CHECK(why_is(&im, "signed image: signed by a key this board does not trust"));
    memcpy(two[0], gs_pub3, 32);
    memcpy(two[1], gs_pub2, 32);
    CHECK_OK(ft_image_parse_mem(&im, gs_img_key2, GS_IMG_KEY2_LEN));
    {
        strict_mem m = {gs_img_key2, GS_IMG_KEY2_LEN, 0};
        CHECK_OK(ft_image_verify(&im, strict_read, &m, (const uint8_t(*)[32])two, 2));
        CHECK(ft_image_verify(&im, strict_read, &m, (const uint8_t(*)[32])two, 1) == FT_ERR_AUTH);
    }
    CHECK(check(&im, gs_img_key3, GS_IMG_KEY3_LEN) == FT_ERR_AUTH);
    /* a pure signature and a second security counter are refused */
    CHECK(check(&im, gs_img_pure, GS_IMG_PURE_LEN) == FT_ERR_FORMAT);
    CHECK(why_is(&im, "signed image: pure signatures (imgtool --pure) are not supported"));
    CHECK(check(&im, gs_img_two_cnt, GS_IMG_TWO_CNT_LEN) == FT_ERR_FORMAT);
    CHECK(why_is(&im, "signed image: security counter TLV must be one u32"));
}

/* Offsets in gs_img_ok: header 32, payload 16 at 32, protected area at 48 (4 + SEC_CNT 8 = 12), TLV info at 60,
 * SHA256 TLV at 64 (value 68), KEYHASH at 100 (value 104), ED25519 at 136 (value 140), end 204. */
void test_image_tampered(void)
{
    const uint32_t n = GS_IMG_OK_LEN;
    ft_image_info im;
    uint32_t i, cut;
    CHECK_EQ_INT(n, 204);
    /* every single byte flipped: refused, never accepted (the padding byte 28..31 is hashed too) */
    for (i = 0; i < n; i++) {
        memcpy(buf, gs_img_ok, n);
        buf[i] ^= 0x01;
        if (check(&im, buf, n) == FT_OK) ft_test_outf("    byte %u flipped: accepted\n", (unsigned)i);
        CHECK(check(&im, buf, n) != FT_OK);
        CHECK(im.why[0] != 0);
    }
    /* every truncation and every extension: refused */
    for (cut = 0; cut < n; cut++) CHECK(check(&im, gs_img_ok, cut) == FT_ERR_FORMAT);
    memcpy(buf, gs_img_ok, n);
    buf[n] = 0;
    CHECK(check(&im, buf, n + 1) == FT_ERR_FORMAT);
    CHECK(why_is(&im, "signed image: the TLV area ends at 204, the image at 205"));
    CHECK(check(&im, gs_img_ok, 10) == FT_ERR_FORMAT);
    CHECK(why_is(&im, "signed image of 10 bytes is shorter than its 32-byte header"));
    /* header fields */
    memcpy(buf, gs_img_ok, n);
    buf[0] ^= 0xFF;
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: bad magic (not an MCUboot image)"));
    memcpy(buf, gs_img_ok, n);
    buf[8] = 31;
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: header size 31 outside 32..4096"));
    memcpy(buf, gs_img_ok, n);
    buf[8] = 0x01; buf[9] = 0x10; /* 4097 */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT);
    memcpy(buf, gs_img_ok, n);
    buf[16] = 0x04; /* encrypted */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT &&
          why_is(&im, "signed image: header flags 0x4 (encrypted/compressed images are refused)"));
    memcpy(buf, gs_img_ok, n);
    buf[12] = 0xF0; buf[13] = 0xFF; buf[14] = 0xFF; buf[15] = 0xFF; /* img_size near 2^32: no wrap */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: payload runs past the image"));
    memcpy(buf, gs_img_ok, n);
    buf[10] = 16; /* protect_tlv_size disagrees with the area */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT &&
          why_is(&im, "signed image: protected TLV area does not match the header"));
    memcpy(buf, gs_img_ok, n);
    buf[10] = 0; /* no protected area declared: its bytes are where the TLV area should start */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: no TLV area after the payload"));
    /* TLVs: a length running past its area, a wrong size, a duplicate, a missing one */
    memcpy(buf, gs_img_ok, n);
    buf[54] = 9; /* SEC_CNT len 9 */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: TLV 0x50 runs past the protected area"));
    memcpy(buf, gs_img_ok, n);
    buf[138] = 65; /* ED25519 len 65 */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: TLV 0x24 runs past the TLV area"));
    memcpy(buf, gs_img_ok, n);
    buf[100] = 0x10; /* KEYHASH becomes a second SHA256 */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: TLV 0x10 twice"));
    memcpy(buf, gs_img_ok, n);
    buf[100] = 0x02; /* KEYHASH becomes an unknown type: missing */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: needs one KEYHASH TLV (0x01) of 32 bytes"));
    memcpy(buf, gs_img_ok, n);
    buf[136] = 0x23; /* no ED25519 */
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: needs one ED25519 TLV (0x24) of 64 bytes"));
    memcpy(buf, gs_img_ok, n);
    buf[64] = 0x11;
    CHECK(check(&im, buf, n) == FT_ERR_FORMAT && why_is(&im, "signed image: needs one SHA256 TLV (0x10) of 32 bytes"));
    /* content: the payload changed (SHA256 TLV stale), then with a recomputed SHA256 (signature fails) */
    memcpy(buf, gs_img_ok, n);
    buf[40] ^= 0x80;
    CHECK(check(&im, buf, n) == FT_ERR_AUTH && why_is(&im, "signed image: SHA-256 TLV does not match the image"));
    resign_sha(buf, 60, 68);
    CHECK(check(&im, buf, n) == FT_ERR_AUTH && why_is(&im, "signed image: bad Ed25519 signature"));
    /* the security counter raised by a host: hashed, so refused */
    memcpy(buf, gs_img_ok, n);
    buf[56] = 9;
    CHECK(check(&im, buf, n) == FT_ERR_AUTH);
    resign_sha(buf, 60, 68);
    CHECK(check(&im, buf, n) == FT_ERR_AUTH && why_is(&im, "signed image: bad Ed25519 signature"));
    /* the signature itself, and a KEYHASH of another key */
    memcpy(buf, gs_img_ok, n);
    buf[140 + 63] ^= 0x10;
    CHECK(check(&im, buf, n) == FT_ERR_AUTH && why_is(&im, "signed image: bad Ed25519 signature"));
    memcpy(buf, gs_img_ok, n);
    buf[104] ^= 1;
    CHECK(check(&im, buf, n) == FT_ERR_AUTH &&
          why_is(&im, "signed image: signed by a key this board does not trust"));
    /* no trusted key at all */
    {
        strict_mem m = {gs_img_ok, n, 0};
        CHECK_OK(ft_image_parse(&im, strict_read, &m, n));
        CHECK(ft_image_verify(&im, strict_read, &m, NULL, 0) == FT_ERR_AUTH);
    }
}
