/* MCUboot image parser and verifier: see ft_image.h. */
#include "ft_image.h"
#include "ft_ed25519.h"
#include "ft_sha256.h"
#include <stdio.h>
#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static ft_status refuse(ft_image_info *im, const char *why)
{
    snprintf(im->why, sizeof im->why, "signed image: %s", why);
    return FT_ERR_FORMAT;
}

typedef struct {
    ft_image_info *im;
    ft_image_reader rd;
    void *ctx;
    int seen_sha, seen_kh, seen_sig, seen_cnt;
    uint16_t len_sha, len_kh, len_sig;
} walker;

/* One TLV area [off, end): TLVs must tile it exactly; `prot` selects the protected area's rules. */
static ft_status walk(walker *w, uint32_t off, uint32_t end, int prot)
{
    const char *area = prot ? "protected" : "TLV";
    char buf[64];
    while (off < end) {
        uint8_t h[4];
        uint16_t t, n;
        if (end - off < 4) {
            snprintf(buf, sizeof buf, "truncated TLV in the %s area", area);
            return refuse(w->im, buf);
        }
        FT_TRY(w->rd(w->ctx, off, h, 4));
        t = rd16(h);
        n = rd16(h + 2);
        if ((uint64_t)off + 4u + n > end) {
            snprintf(buf, sizeof buf, "TLV 0x%02x runs past the %s area", (unsigned)t, area);
            return refuse(w->im, buf);
        }
        if (prot) {
            if (t == FT_TLV_SEC_CNT) {
                uint8_t v[4];
                if (n != 4 || w->seen_cnt) return refuse(w->im, "security counter TLV must be one u32");
                FT_TRY(w->rd(w->ctx, off + 4, v, 4));
                w->im->security_counter = rd32(v);
                w->seen_cnt = 1;
            }
        } else if (t == FT_TLV_SIG_PURE) {
            return refuse(w->im, "pure signatures (imgtool --pure) are not supported");
        } else if (t == FT_TLV_SHA256 || t == FT_TLV_KEYHASH || t == FT_TLV_ED25519) {
            int *seen = t == FT_TLV_SHA256 ? &w->seen_sha : t == FT_TLV_KEYHASH ? &w->seen_kh : &w->seen_sig;
            uint16_t *len = t == FT_TLV_SHA256 ? &w->len_sha : t == FT_TLV_KEYHASH ? &w->len_kh : &w->len_sig;
            uint8_t *dst = t == FT_TLV_SHA256 ? w->im->sha256 : t == FT_TLV_KEYHASH ? w->im->keyhash : w->im->sig;
            size_t cap = t == FT_TLV_ED25519 ? 64u : 32u;
            if (*seen) {
                snprintf(buf, sizeof buf, "TLV 0x%02x twice", (unsigned)t);
                return refuse(w->im, buf);
            }
            *seen = 1;
            *len = n;
            if (n == cap) FT_TRY(w->rd(w->ctx, off + 4, dst, cap)); /* other sizes are refused below */
        } /* other types: ignored */
        off += 4u + n;
    }
    return FT_OK;
}

ft_status ft_image_parse(ft_image_info *im, ft_image_reader rd, void *ctx, uint32_t n)
{
    uint8_t h[32], info[4];
    uint32_t magic, flags;
    uint64_t off;
    walker w;
    if (!im || !rd) return FT_ERR_ARG;
    memset(im, 0, sizeof *im);
    im->len = n;
    if (n < FT_IMAGE_HDR_MIN) {
        snprintf(im->why, sizeof im->why, "signed image of %lu bytes is shorter than its 32-byte header",
                 (unsigned long)n);
        return FT_ERR_FORMAT;
    }
    FT_TRY(rd(ctx, 0, h, sizeof h));
    magic = rd32(h);
    im->hdr_size = rd16(h + 8);
    im->prot_size = rd16(h + 10);
    im->img_size = rd32(h + 12);
    flags = rd32(h + 16);
    im->major = h[20];
    im->minor = h[21];
    im->revision = rd16(h + 22);
    im->build = rd32(h + 24);
    if (magic != FT_IMAGE_MAGIC) return refuse(im, "bad magic (not an MCUboot image)");
    if (im->hdr_size < FT_IMAGE_HDR_MIN || im->hdr_size > FT_IMAGE_HDR_MAX) {
        char buf[64];
        snprintf(buf, sizeof buf, "header size %u outside 32..4096", (unsigned)im->hdr_size);
        return refuse(im, buf);
    }
    if (flags != 0) {
        char buf[80];
        snprintf(buf, sizeof buf, "header flags 0x%lx (encrypted/compressed images are refused)", (unsigned long)flags);
        return refuse(im, buf);
    }
    off = (uint64_t)im->hdr_size + im->img_size;
    if (off + 4u > n) return refuse(im, "payload runs past the image");
    memset(&w, 0, sizeof w);
    w.im = im;
    w.rd = rd;
    w.ctx = ctx;
    if (im->prot_size) {
        uint16_t pm, plen;
        FT_TRY(rd(ctx, (uint32_t)off, info, 4));
        pm = rd16(info);
        plen = rd16(info + 2);
        if (pm != FT_TLV_PROT_INFO_MAGIC || plen != im->prot_size || plen < 4 || off + plen + 4u > n)
            return refuse(im, "protected TLV area does not match the header");
        FT_TRY(walk(&w, (uint32_t)off + 4u, (uint32_t)(off + plen), 1));
        off += plen;
    }
    im->hashed_len = (uint32_t)off;
    FT_TRY(rd(ctx, (uint32_t)off, info, 4)); /* off + 4 <= n: checked above for both cases */
    if (rd16(info) != FT_TLV_INFO_MAGIC) return refuse(im, "no TLV area after the payload");
    if (off + rd16(info + 2) != n) {
        char buf[80];
        snprintf(buf, sizeof buf, "the TLV area ends at %lu, the image at %lu", (unsigned long)(off + rd16(info + 2)),
                 (unsigned long)n);
        return refuse(im, buf);
    }
    FT_TRY(walk(&w, (uint32_t)off + 4u, n, 0));
    if (!w.seen_sha || w.len_sha != 32) return refuse(im, "needs one SHA256 TLV (0x10) of 32 bytes");
    if (!w.seen_kh || w.len_kh != 32) return refuse(im, "needs one KEYHASH TLV (0x01) of 32 bytes");
    if (!w.seen_sig || w.len_sig != 64) return refuse(im, "needs one ED25519 TLV (0x24) of 64 bytes");
    return FT_OK;
}

typedef struct {
    const uint8_t *p;
    uint32_t n;
} membuf;

static ft_status mem_read(void *ctx, uint32_t off, uint8_t *buf, size_t n)
{
    const membuf *m = (const membuf *)ctx;
    if (off > m->n || n > m->n - off) return FT_ERR_RANGE;
    memcpy(buf, m->p + off, n);
    return FT_OK;
}

ft_status ft_image_parse_mem(ft_image_info *im, const uint8_t *img, uint32_t len)
{
    membuf m;
    m.p = img;
    m.n = img ? len : 0;
    return ft_image_parse(im, mem_read, &m, m.n);
}

void ft_image_key_hash(const uint8_t pub[32], uint8_t out[32])
{
    static const uint8_t spki[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    ft_sha256_ctx c;
    ft_sha256_init(&c);
    ft_sha256_update(&c, spki, sizeof spki);
    ft_sha256_update(&c, pub, 32);
    ft_sha256_final(&c, out);
}

int ft_image_check_sig(const uint8_t keyhash[32], const uint8_t sig[64], const uint8_t *msg, size_t n,
                       const uint8_t (*keys)[32], unsigned nkeys)
{
    unsigned i;
    for (i = 0; i < nkeys; i++) {
        uint8_t kh[32];
        ft_image_key_hash(keys[i], kh);
        if (!ft_ct_equal(kh, keyhash, 32)) continue;
#ifdef FT_WITH_ED25519
        return ft_ed25519_verify(sig, keys[i], msg, n) == 0 ? 0 : 2;
#else
        (void)sig;
        (void)msg;
        (void)n;
        return 2; /* a build without the verifier accepts nothing */
#endif
    }
    return 1;
}

ft_status ft_image_verify(ft_image_info *im, ft_image_reader rd, void *ctx, const uint8_t (*keys)[32], unsigned n)
{
    uint8_t buf[64], sha[32];
    uint32_t off = 0;
    ft_sha256_ctx c;
    if (!im || !rd || (!keys && n)) return FT_ERR_ARG;
    ft_sha256_init(&c);
    while (off < im->hashed_len) {
        uint32_t k = im->hashed_len - off < sizeof buf ? im->hashed_len - off : (uint32_t)sizeof buf;
        FT_TRY(rd(ctx, off, buf, k));
        ft_sha256_update(&c, buf, k);
        off += k;
    }
    ft_sha256_final(&c, sha);
    if (!ft_ct_equal(sha, im->sha256, 32)) {
        snprintf(im->why, sizeof im->why, "signed image: SHA-256 TLV does not match the image");
        return FT_ERR_AUTH;
    }
    switch (ft_image_check_sig(im->keyhash, im->sig, im->sha256, 32, keys, n)) {
    case 0: return FT_OK;
    case 1: snprintf(im->why, sizeof im->why, "signed image: signed by a key this board does not trust"); break;
    default: snprintf(im->why, sizeof im->why, "signed image: bad Ed25519 signature"); break;
    }
    return FT_ERR_AUTH;
}
