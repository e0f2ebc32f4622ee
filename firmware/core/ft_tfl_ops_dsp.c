#include "ft_tfl_ops_dsp.h"
#include "ft_head.h" /* ft_quantize_multiplier: TFLM's QuantizeMultiplier */
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__)
#include <arm_acle.h>
#define FT_DSP_NATIVE 1
#else
#define FT_DSP_NATIVE 0
#endif

/* ---- the DSP instructions: packed words are uint32 (two int16 halves: low = element 0) ------------- */
#if FT_DSP_NATIVE
static inline uint32_t smlad(uint32_t a, uint32_t b, uint32_t acc)
{
    return (uint32_t)__smlad((int16x2_t)a, (int16x2_t)b, (int32_t)acc);
}
static inline uint32_t smlabb(uint32_t a, uint32_t b, uint32_t acc)
{
    return (uint32_t)__smlabb((int32_t)a, (int32_t)b, (int32_t)acc);
}
static inline uint32_t smlatt(uint32_t a, uint32_t b, uint32_t acc)
{
    return (uint32_t)__smlatt((int32_t)a, (int32_t)b, (int32_t)acc);
}
static inline uint32_t sxtb16(uint32_t w) { return (uint32_t)__sxtb16((int8x4_t)w); }
static inline uint32_t sxtab16(uint32_t off, uint32_t w) { return (uint32_t)__sxtab16((int16x2_t)off, (int8x4_t)w); }
/* the rotated forms are one instruction; GCC has no intrinsic for them, so asm as CMSIS does */
static inline uint32_t sxtb16_ror8(uint32_t w)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
}
static inline uint32_t sxtab16_ror8(uint32_t off, uint32_t w)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off), "r"(w));
    return r;
}
/* per byte (signed): a >= b ? a : b and a >= b ? b : a (SSUB8 sets the GE flags SEL reads: one asm, so nothing
 * can come between them) */
static inline uint32_t vmax8(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
}
static inline uint32_t vmin8(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %2, %1" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
}
#else
static uint32_t vsel8(uint32_t a, uint32_t b, int want_max)
{
    uint32_t r = 0, k;
    for (k = 0; k < 32; k += 8) {
        int32_t x = (int8_t)(uint8_t)(a >> k), y = (int8_t)(uint8_t)(b >> k);
        r |= (uint32_t)(uint8_t)(int8_t)((x >= y) == want_max ? x : y) << k;
    }
    return r;
}
static uint32_t vmax8(uint32_t a, uint32_t b) { return vsel8(a, b, 1); }
static uint32_t vmin8(uint32_t a, uint32_t b) { return vsel8(a, b, 0); }
static int32_t s16(uint32_t h) { return (int32_t)(h & 0xFFFFu) - (int32_t)((h & 0x8000u) << 1); }
static int32_t s8(uint32_t b) { return (int32_t)(b & 0xFFu) - (int32_t)((b & 0x80u) << 1); }
static uint32_t pack(int32_t lo, int32_t hi) { return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16); }
static uint32_t smlad(uint32_t a, uint32_t b, uint32_t acc)
{
    return acc + (uint32_t)(s16(a) * s16(b)) + (uint32_t)(s16(a >> 16) * s16(b >> 16));
}
static uint32_t smlabb(uint32_t a, uint32_t b, uint32_t acc) { return acc + (uint32_t)(s16(a) * s16(b)); }
static uint32_t smlatt(uint32_t a, uint32_t b, uint32_t acc) { return acc + (uint32_t)(s16(a >> 16) * s16(b >> 16)); }
static uint32_t sxtb16(uint32_t w) { return pack(s8(w), s8(w >> 16)); }
static uint32_t sxtab16(uint32_t off, uint32_t w) { return pack(s16(off) + s8(w), s16(off >> 16) + s8(w >> 16)); }
static uint32_t sxtb16_ror8(uint32_t w) { return sxtb16((w >> 8) | (w << 24)); }
static uint32_t sxtab16_ror8(uint32_t off, uint32_t w) { return sxtab16(off, (w >> 8) | (w << 24)); }
#endif

/* kept out of line: inlined into their large callers, GCC -Os spills the accumulators inside the hot loops */
#if defined(__GNUC__)
#define FT_NOINLINE __attribute__((noinline))
#define FT_INLINE inline __attribute__((always_inline)) /* the per-output requantization: not a call chain */
#else
#define FT_NOINLINE
#define FT_INLINE inline
#endif

/* 4 int8 at any alignment (one LDR on the M4/M7, which load unaligned words) */
static inline uint32_t rd32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void wr32(int8_t *p, uint32_t v) { memcpy(p, &v, 4); } /* one STR */
static int32_t wrap(uint32_t u) { return u <= 0x7FFFFFFFu ? (int32_t)u : (int32_t)(u - 0x80000000u) - 2147483647 - 1; }
static int32_t rd_i32le(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t u; /* one LDR */
    memcpy(&u, p, 4);
    return wrap(u);
#else
    return wrap((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
#endif
}
/* TFLM's MultiplyByQuantizedMultiplier (ft_mul_by_quantized_multiplier) in 32-bit pieces, as CMSIS-NN's
 * arm_nn_requantize: for 0 <= mult < 2^31 (all ft_quantize_multiplier gives) the product cannot be the one
 * saturating case, and the high half's truncating division of a*mult + nudge by 2^31 equals
 * floor((a*mult + 2^30) / 2^31) (for a*mult = -y < 0: -floor((y - 1 + 2^30) / 2^31) = floor((2^30 - y) / 2^31)),
 * one SMLAL and a shift; then gemmlowp's RoundingDivideByPOT. tests/tfl_kernels_check.c compares the two. */
static FT_INLINE int32_t requant(int32_t x, int32_t mult, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t high = (int32_t)(((int64_t)wrap((uint32_t)x << left) * mult + ((int64_t)1 << 30)) >> 31);
    int32_t mask = (int32_t)((1u << right) - 1u), rem = high & mask, thr = (mask >> 1) + (high < 0 ? 1 : 0);
    return (high >> right) + (rem > thr ? 1 : 0);
}

int32_t ft_tfl_dsp_requant(int32_t x, int32_t mult, int32_t shift) { return requant(x, mult, shift); }

/* the portable kernels' requantized, offset, clamped output: clamp(r + zp, act_min, act_max) computed as
 * clamp(r, lo, hi) + zp with lo = act_min - zp, hi = act_max - zp (all within +-255: no overflow whatever r) */
static FT_INLINE int8_t out8(uint32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t r = requant(wrap(acc), mult, shift);
    r = r < lo ? lo : r > hi ? hi : r;
    return (int8_t)(r + zp);
}
/* -zp in both halves: SXTAB16 then widens and subtracts the zero point in one instruction */
static uint32_t neg_pair(int32_t zp) { return (((uint32_t)-zp) & 0xFFFFu) * 0x10001u; }

static uint32_t *align_words(uint8_t *scratch)
{
    return (uint32_t *)(void *)(scratch + ((4u - ((uintptr_t)scratch & 3u)) & 3u));
}

static uint32_t saturate(uint64_t bytes) { return bytes > 0x7FFFFFFFu ? 0x7FFFFFFFu : (uint32_t)bytes; }

/* ---- CONV_2D: im2col of 2 pixels into pair words, 2 channels x 2 pixels per pass over the weights -- */
static uint64_t conv_k(const ft_tfl_conv_params *p)
{
    return (uint64_t)p->filter_h * (uint64_t)p->filter_w * (uint64_t)p->filter_in_c;
}

uint32_t ft_tfl_conv2d_dsp_scratch(const ft_tfl_conv_params *p)
{
    uint64_t k = conv_k(p), words = (k / 4u) * 2u + k % 4u;
    if (k < 4u) return FT_TFL_DSP_NONE; /* no group of 4 weights for SMLAD: the portable kernel is faster */
    /* alignment slack, 2 patches of pair words, 2 int8 staging patches (the multipliers: p->requant) */
    return saturate(3u + 8u * words + ((2u * k + 3u) & ~(uint64_t)3u));
}

/* The receptive field of output pixel `pix` (flat over batch, y, x), channels [ic0, ic0 + filter_in_c), as
 * K int8: the input itself where that is contiguous (1-row filters), else gathered into `stage`, the input zero
 * point standing for the padding (it contributes 0 once the zero point is subtracted, as skipping it does). */
static const int8_t *patch(const ft_tfl_conv_params *p, const int8_t *in, int32_t pix, int32_t ic0, int8_t *stage)
{
    int32_t ox = pix % p->out_w, oy = (pix / p->out_w) % p->out_h, b = pix / (p->out_w * p->out_h);
    int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w, fy, fx;
    int32_t fic = p->filter_in_c, row = p->filter_w * fic;
    int whole_row = fic == p->in_c && (p->dil_w == 1 || p->filter_w == 1) && x0 >= 0 && x0 + p->filter_w <= p->in_w;
    int8_t *d = stage;
    if (whole_row && p->filter_h == 1 && y0 >= 0 && y0 < p->in_h)
        return in + (((size_t)b * p->in_h + y0) * p->in_w + x0) * p->in_c;
    for (fy = 0; fy < p->filter_h; fy++) {
        int32_t iy = y0 + p->dil_h * fy;
        const int8_t *src;
        if (iy < 0 || iy >= p->in_h) {
            memset(d, (int)(int8_t)p->input_zp, (size_t)row);
            d += row;
            continue;
        }
        src = in + ((size_t)b * p->in_h + iy) * p->in_w * p->in_c + ic0;
        if (whole_row) {
            memcpy(d, src + (size_t)x0 * p->in_c, (size_t)row);
        } else {
            for (fx = 0; fx < p->filter_w; fx++) {
                int32_t ix = x0 + p->dil_w * fx;
                if (ix < 0 || ix >= p->in_w)
                    memset(d + fx * fic, (int)(int8_t)p->input_zp, (size_t)fic);
                else
                    memcpy(d + fx * fic, src + (size_t)ix * p->in_c, (size_t)fic);
            }
        }
        d += row;
    }
    return stage;
}

/* The receptive fields a and b of 2 pixels (K int8 each) as interleaved pair words: per group of 4, a's
 * (x0-zp, x2-zp), (x1-zp, x3-zp), then b's; the K % 4 left over as int32 pairs a, b. 2 * words written. */
static void to_pairs2(const int8_t *a, const int8_t *b, int32_t k, int32_t zp, uint32_t *dst)
{
    uint32_t off = neg_pair(zp), *d = dst;
    int32_t g, t;
    for (g = k >> 2; g > 0; g--) {
        uint32_t wa = rd32(a), wb = rd32(b);
        d[0] = sxtab16(off, wa);
        d[1] = sxtab16_ror8(off, wa);
        d[2] = sxtab16(off, wb);
        d[3] = sxtab16_ror8(off, wb);
        d += 4;
        a += 4;
        b += 4;
    }
    for (t = 0; t < (k & 3); t++) {
        d[0] = (uint32_t)((int32_t)a[t] - zp);
        d[1] = (uint32_t)((int32_t)b[t] - zp);
        d += 2;
    }
}

/* acc[ch][px] = weights of 2 channels (w0, w1) . the 2 pixels' interleaved pair words x (to_pairs2): g groups of
 * 4 (4 words of x, one word of each channel's weights, 8 SMLAD), then t single values. Out of line, so that GCC
 * keeps the accumulators and pointers in registers. */
static FT_NOINLINE void dot_2x2(const int8_t *w0, const int8_t *w1, const uint32_t *x, int32_t g, int32_t t,
                                uint32_t acc[4])
{
    uint32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
    const int8_t *wend = w0 + 4 * (size_t)g;
    int32_t i;
#if FT_DSP_NATIVE && defined(__thumb2__) && defined(__OPTIMIZE__)
    /* the loop below in 13 registers (GCC reloads its end pointer from the stack): 19 instructions per 16 MACs */
    if (w0 < wend) {
        uint32_t p02, p13, q02, q13, wa, e;
        __asm__ volatile("1:\n\t"
                         "ldrd %[p02], %[p13], [%[x]], #8\n\t"
                         "ldrd %[q02], %[q13], [%[x]], #8\n\t"
                         "ldr %[wa], [%[w0]], #4\n\t"
                         "sxtb16 %[e], %[wa]\n\t"
                         "smlad %[a00], %[e], %[p02], %[a00]\n\t"
                         "smlad %[a01], %[e], %[q02], %[a01]\n\t"
                         "sxtb16 %[wa], %[wa], ror #8\n\t"
                         "smlad %[a00], %[wa], %[p13], %[a00]\n\t"
                         "smlad %[a01], %[wa], %[q13], %[a01]\n\t"
                         "ldr %[wa], [%[w1]], #4\n\t"
                         "sxtb16 %[e], %[wa]\n\t"
                         "smlad %[a10], %[e], %[p02], %[a10]\n\t"
                         "smlad %[a11], %[e], %[q02], %[a11]\n\t"
                         "sxtb16 %[wa], %[wa], ror #8\n\t"
                         "smlad %[a10], %[wa], %[p13], %[a10]\n\t"
                         "smlad %[a11], %[wa], %[q13], %[a11]\n\t"
                         "ldr %[e], %[wend]\n\t"
                         "cmp %[w0], %[e]\n\t"
                         "bne 1b\n\t"
                         : [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1), [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10),
                           [a11] "+r"(a11), [p02] "=&r"(p02), [p13] "=&r"(p13), [q02] "=&r"(q02), [q13] "=&r"(q13),
                           [wa] "=&r"(wa), [e] "=&r"(e)
                         : [wend] "m"(wend)
                         : "cc", "memory");
    }
#endif
    while (w0 < wend) {
        uint32_t p02 = x[0], p13 = x[1], q02 = x[2], q13 = x[3], wa = rd32(w0), w02 = sxtb16(wa), w13 = sxtb16_ror8(wa);
        a00 = smlad(w02, p02, a00);
        a00 = smlad(w13, p13, a00);
        a01 = smlad(w02, q02, a01);
        a01 = smlad(w13, q13, a01);
        wa = rd32(w1);
        w02 = sxtb16(wa);
        w13 = sxtb16_ror8(wa);
        a10 = smlad(w02, p02, a10);
        a10 = smlad(w13, p13, a10);
        a11 = smlad(w02, q02, a11);
        a11 = smlad(w13, q13, a11);
        w0 += 4;
        w1 += 4;
        x += 4;
    }
    for (i = 0; i < t; i++) {
        int32_t wv0 = w0[i], wv1 = w1[i], xv0 = wrap(x[2 * i]), xv1 = wrap(x[2 * i + 1]);
        a00 += (uint32_t)(wv0 * xv0);
        a01 += (uint32_t)(wv0 * xv1);
        a10 += (uint32_t)(wv1 * xv0);
        a11 += (uint32_t)(wv1 * xv1);
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

void ft_tfl_conv2d_dsp(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out,
                       uint8_t *scratch)
{
    const int32_t ozp = p->output_zp, olo = p->act_min - ozp, ohi = p->act_max - ozp; /* out8 */
    int32_t k = (int32_t)conv_k(p), g4 = k >> 2, t = k & 3, words = g4 * 2 + t;
    int32_t groups = p->in_c / p->filter_in_c, per_group = p->out_c / groups;
    int32_t npix = p->batches * p->out_h * p->out_w, pix, grp, oc;
    const uint8_t *q = p->requant, *bias = p->bias;
    int32_t qn = ft_tfl_requant_entries(p->n_scales, p->out_c), qm = ft_tfl_requant_mask(qn), out_c = p->out_c;
    uint32_t *cols = align_words(scratch);
    int8_t *stage = (int8_t *)(void *)(cols + 2 * words), *stage1 = stage + k;
    for (pix = 0; pix < npix; pix += 2) {
        int two = pix + 1 < npix; /* an odd last pixel is computed twice, written once */
        int8_t *o0 = out + (size_t)pix * out_c, *o1 = two ? o0 + out_c : o0;
        for (grp = 0; grp < groups; grp++) {
            int32_t ic0 = grp * p->filter_in_c, oc_end = (grp + 1) * per_group;
            to_pairs2(patch(p, in, pix, ic0, stage), patch(p, in, two ? pix + 1 : pix, ic0, stage1), k, p->input_zp,
                      cols);
            for (oc = grp * per_group; oc < oc_end; oc += 2) {
                int32_t oc1 = oc + 1 < oc_end ? oc + 1 : oc; /* an odd last channel likewise */
                uint32_t acc[4], b0 = 0, b1 = 0;
                int32_t m0 = ft_tfl_requant_mult(q, oc & qm), s0 = ft_tfl_requant_shift(q, qn, oc & qm);
                int32_t m1 = ft_tfl_requant_mult(q, oc1 & qm), s1 = ft_tfl_requant_shift(q, qn, oc1 & qm);
                const int8_t *w0 = filter + (size_t)oc * (size_t)k;
                dot_2x2(w0, w0 + (size_t)(oc1 - oc) * (size_t)k, cols, g4, t, acc);
                if (bias) {
                    b0 = (uint32_t)rd_i32le(bias + 4u * (uint32_t)oc);
                    b1 = (uint32_t)rd_i32le(bias + 4u * (uint32_t)oc1);
                }
                o0[oc] = out8(acc[0] + b0, m0, s0, ozp, olo, ohi);
                o1[oc] = out8(acc[1] + b0, m0, s0, ozp, olo, ohi);
                o0[oc1] = out8(acc[2] + b1, m1, s1, ozp, olo, ohi);
                o1[oc1] = out8(acc[3] + b1, m1, s1, ozp, olo, ohi);
            }
        }
    }
}

/* ---- DEPTHWISE_CONV_2D (depth multiplier 1): 4 channels per word, SMLABB / SMLATT per channel ------- */
uint32_t ft_tfl_depthwise_dsp_scratch(const ft_tfl_conv_params *p)
{
    /* no scratch (the multipliers: p->requant); depth multipliers above 1 when the channels come in 4s */
    return p->depth_mult == 1 || p->out_c % 4 == 0 ? 0u : FT_TFL_DSP_NONE;
}

/* first and end (exclusive) filter taps of one axis that land inside the input: 0 <= o + d * f < n */
static void tap_range(int32_t o, int32_t d, int32_t n, int32_t taps, int32_t *f0, int32_t *f1)
{
    /* ceil(a / d) = (a - 1) / d + 1 for a >= 1, in uint32 (one UDIV; a < 2^32 as n, -o < 2^31) */
    uint32_t lo = o < 0 ? ((uint32_t)(-(int64_t)o) - 1u) / (uint32_t)d + 1u : 0u;
    uint32_t hi = (int64_t)n - o <= 0 ? 0u : ((uint32_t)((int64_t)n - o) - 1u) / (uint32_t)d + 1u;
    *f0 = lo < (uint32_t)taps ? (int32_t)lo : taps;
    *f1 = hi < (uint32_t)taps ? (int32_t)hi : taps;
}

/* 4 channels' sums over `rows` x `taps` taps: x and w point at the first tap's 4 channels */
static FT_NOINLINE void dw_taps4(const int8_t *x, const int8_t *w, int32_t rows, int32_t taps, size_t x_tap, size_t x_row,
                     size_t w_row, uint32_t off, int32_t c_n, uint32_t a[4])
{
    uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (; rows > 0; rows--) {
        const int8_t *xp = x, *wp = w, *wend = w + (size_t)taps * (size_t)c_n;
        while (wp < wend) {
            uint32_t xw = rd32(xp), ww = rd32(wp);
            uint32_t x02 = sxtab16(off, xw), x13 = sxtab16_ror8(off, xw), w02 = sxtb16(ww), w13 = sxtb16_ror8(ww);
            a0 = smlabb(w02, x02, a0);
            a2 = smlatt(w02, x02, a2);
            a1 = smlabb(w13, x13, a1);
            a3 = smlatt(w13, x13, a3);
            xp += x_tap;
            wp += c_n;
        }
        x += x_row;
        w += w_row;
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* one tap of 4 channels: x and w at the tap's channel 0 */
#define FT_DW_TAP(xp, wp)                                                                                              \
    do {                                                                                                               \
        uint32_t xw_ = rd32(xp), ww_ = rd32(wp);                                                                       \
        uint32_t x02_ = sxtab16(off, xw_), x13_ = sxtab16_ror8(off, xw_), w02_ = sxtb16(ww_), w13_ = sxtb16_ror8(ww_); \
        a0 = smlabb(w02_, x02_, a0);                                                                                   \
        a2 = smlatt(w02_, x02_, a2);                                                                                   \
        a1 = smlabb(w13_, x13_, a1);                                                                                   \
        a3 = smlatt(w13_, x13_, a3);                                                                                   \
    } while (0)

/* what dw_store4 (and the 3x3 pixel kernel) read per group of 4 channels, set once per kernel call */
typedef struct {
    const uint8_t *q, *bias;
    int32_t qn, qm, ozp, olo, ohi, c_n;
    uint32_t off;
    size_t rs; /* the next input row */
} dw_ctx;

/* 4 channels' sums from channel c on: bias, requantized, stored as one word at o */
static FT_INLINE void dw_store4(const dw_ctx *k, int32_t c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, int8_t *o)
{
    const uint8_t *q = k->q;
    int32_t qn = k->qn, qm = k->qm, zp = k->ozp, lo = k->olo, hi = k->ohi;
    uint32_t r;
    if (k->bias) {
        const uint8_t *bp = k->bias + 4u * (uint32_t)c;
        a0 += (uint32_t)rd_i32le(bp);
        a1 += (uint32_t)rd_i32le(bp + 4);
        a2 += (uint32_t)rd_i32le(bp + 8);
        a3 += (uint32_t)rd_i32le(bp + 12);
    }
    r = (uint32_t)(uint8_t)out8(a0, ft_tfl_requant_mult(q, c & qm), ft_tfl_requant_shift(q, qn, c & qm), zp, lo, hi);
    r |= (uint32_t)(uint8_t)out8(a1, ft_tfl_requant_mult(q, (c + 1) & qm), ft_tfl_requant_shift(q, qn, (c + 1) & qm), zp,
                                 lo, hi)
         << 8;
    r |= (uint32_t)(uint8_t)out8(a2, ft_tfl_requant_mult(q, (c + 2) & qm), ft_tfl_requant_shift(q, qn, (c + 2) & qm), zp,
                                 lo, hi)
         << 16;
    r |= (uint32_t)(uint8_t)out8(a3, ft_tfl_requant_mult(q, (c + 3) & qm), ft_tfl_requant_shift(q, qn, (c + 3) & qm), zp,
                                 lo, hi)
         << 24;
    wr32(o, r);
}

/* One output pixel whose 3x3 window (dilation 1) lies wholly inside the input, every channel (c_n % 4 == 0): per 4
 * channels the 9 taps unrolled (no bounds, no loop counters), requantized and stored as one word. x, w at the
 * window's top-left tap, channel 0. */
static FT_NOINLINE void dw3x3_pixel(const dw_ctx *k, const int8_t *x, const int8_t *w, int8_t *o)
{
    size_t cs = (size_t)k->c_n, rs = k->rs;
    uint32_t off = k->off;
    int32_t c;
    for (c = 0; c < k->c_n; c += 4) {
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int8_t *xr = x + c, *wr = w + c;
#if FT_DSP_NATIVE && defined(__thumb2__) && defined(__OPTIMIZE__)
        /* the 9 taps in 13 registers (GCC spills the accumulators here): 10 instructions per tap */
        {
            uint32_t t0, t1, t2, t3;
            __asm__("\n\t"
                         "ldr %[t0], [%[x]]\n\t"
                         "ldr %[t1], [%[w]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs]]\n\t"
                         "ldr %[t1], [%[w], %[cs]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs], lsl #1]\n\t"
                         "ldr %[t1], [%[w], %[cs], lsl #1]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "add %[x], %[x], %[rs]\n\t"
                         "add %[w], %[w], %[cs], lsl #1\n\t"
                         "add %[w], %[w], %[cs]\n\t"
                         "ldr %[t0], [%[x]]\n\t"
                         "ldr %[t1], [%[w]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs]]\n\t"
                         "ldr %[t1], [%[w], %[cs]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs], lsl #1]\n\t"
                         "ldr %[t1], [%[w], %[cs], lsl #1]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "add %[x], %[x], %[rs]\n\t"
                         "add %[w], %[w], %[cs], lsl #1\n\t"
                         "add %[w], %[w], %[cs]\n\t"
                         "ldr %[t0], [%[x]]\n\t"
                         "ldr %[t1], [%[w]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs]]\n\t"
                         "ldr %[t1], [%[w], %[cs]]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                         "ldr %[t0], [%[x], %[cs], lsl #1]\n\t"
                         "ldr %[t1], [%[w], %[cs], lsl #1]\n\t"
                         "sxtab16 %[t2], %[off], %[t0]\n\t"
                         "sxtb16 %[t3], %[t1]\n\t"
                         "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                         "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                         "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                         "sxtb16 %[t1], %[t1], ror #8\n\t"
                         "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                         "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                    : [x] "+r"(xr), [w] "+r"(wr), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
                      [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
                    : [cs] "r"(cs), [rs] "r"(rs), [off] "r"(off)
                    : "memory");
        }
#else
        int32_t row;
        for (row = 0; row < 3; row++) {
            FT_DW_TAP(xr, wr);
            FT_DW_TAP(xr + cs, wr + cs);
            FT_DW_TAP(xr + 2 * cs, wr + 2 * cs);
            xr += rs;
            wr += 3 * cs;
        }
#endif
        dw_store4(k, c, a0, a1, a2, a3, o + c);
    }
}

/* Any other pixel (c_n % 4 == 0): rows x cols taps from x, w (the first tap inside the input), x_tap / x_row the
 * input's next tap / row, w_row the filter's next row */
static FT_NOINLINE void dw_pixel(const dw_ctx *k, const int8_t *x, const int8_t *w, int32_t rows, int32_t cols,
                                 size_t x_tap, size_t w_row, int8_t *o)
{
    size_t cs = (size_t)k->c_n, x_row = k->rs;
    uint32_t off = k->off;
    int32_t c;
    for (c = 0; c < k->c_n; c += 4) {
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int8_t *xr = x + c, *wr = w + c;
        int32_t row;
#if FT_DSP_NATIVE && defined(__thumb2__) && defined(__OPTIMIZE__)
        if (x_tap == cs && (cols == 3 || cols == 2)) { /* a 3x3 (dilation 1) window clipped by the edge: rows of 2 or 3
                                                          taps in registers, as dw3x3_pixel */
            for (row = 0; row < rows; row++) {
                uint32_t t0, t1, t2, t3;
                if (cols == 3)
                    __asm__("\n\t"
                     "ldr %[t0], [%[x]]\n\t"
                     "ldr %[t1], [%[w]]\n\t"
                     "sxtab16 %[t2], %[off], %[t0]\n\t"
                     "sxtb16 %[t3], %[t1]\n\t"
                     "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                     "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                     "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                     "sxtb16 %[t1], %[t1], ror #8\n\t"
                     "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                     "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                     "ldr %[t0], [%[x], %[cs]]\n\t"
                     "ldr %[t1], [%[w], %[cs]]\n\t"
                     "sxtab16 %[t2], %[off], %[t0]\n\t"
                     "sxtb16 %[t3], %[t1]\n\t"
                     "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                     "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                     "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                     "sxtb16 %[t1], %[t1], ror #8\n\t"
                     "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                     "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                     "ldr %[t0], [%[x], %[cs], lsl #1]\n\t"
                     "ldr %[t1], [%[w], %[cs], lsl #1]\n\t"
                     "sxtab16 %[t2], %[off], %[t0]\n\t"
                     "sxtb16 %[t3], %[t1]\n\t"
                     "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                     "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                     "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                     "sxtb16 %[t1], %[t1], ror #8\n\t"
                     "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                     "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [t0] "=&r"(t0), [t1] "=&r"(t1),
                       [t2] "=&r"(t2), [t3] "=&r"(t3)
                     : [x] "r"(xr), [w] "r"(wr), [cs] "r"(cs), [off] "r"(off)
                     : "memory");
                else
                    __asm__("\n\t"
                     "ldr %[t0], [%[x]]\n\t"
                     "ldr %[t1], [%[w]]\n\t"
                     "sxtab16 %[t2], %[off], %[t0]\n\t"
                     "sxtb16 %[t3], %[t1]\n\t"
                     "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                     "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                     "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                     "sxtb16 %[t1], %[t1], ror #8\n\t"
                     "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                     "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                     "ldr %[t0], [%[x], %[cs]]\n\t"
                     "ldr %[t1], [%[w], %[cs]]\n\t"
                     "sxtab16 %[t2], %[off], %[t0]\n\t"
                     "sxtb16 %[t3], %[t1]\n\t"
                     "smlabb %[a0], %[t3], %[t2], %[a0]\n\t"
                     "smlatt %[a2], %[t3], %[t2], %[a2]\n\t"
                     "sxtab16 %[t0], %[off], %[t0], ror #8\n\t"
                     "sxtb16 %[t1], %[t1], ror #8\n\t"
                     "smlabb %[a1], %[t1], %[t0], %[a1]\n\t"
                     "smlatt %[a3], %[t1], %[t0], %[a3]\n\t"
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [t0] "=&r"(t0), [t1] "=&r"(t1),
                       [t2] "=&r"(t2), [t3] "=&r"(t3)
                     : [x] "r"(xr), [w] "r"(wr), [cs] "r"(cs), [off] "r"(off)
                     : "memory");
                xr += x_row;
                wr += w_row;
            }
            dw_store4(k, c, a0, a1, a2, a3, o + c);
            continue;
        }
#endif
        for (row = 0; row < rows; row++) {
            const int8_t *xp = xr, *wp = wr, *wend = wr + (size_t)cols * cs;
            for (; wp < wend; xp += x_tap, wp += cs) FT_DW_TAP(xp, wp);
            xr += x_row;
            wr += w_row;
        }
        dw_store4(k, c, a0, a1, a2, a3, o + c);
    }
}

/* A depth multiplier dm > 1 (c_n % 4 == 0): output channel c reads input channel c / dm; per 4 output channels
 * the taps clipped once per pixel, no bounds per tap, requantized and stored as one word (dw_store4). x at the first
 * tap inside the input, input channel 0; w at that tap's output channel 0. */
static FT_NOINLINE void dw_mult_pixel(const dw_ctx *k, const int8_t *x, const int8_t *w, int32_t rows, int32_t cols,
                                      size_t x_tap, size_t w_row, int32_t dm, int32_t izp, int8_t *o)
{
    size_t cs = (size_t)k->c_n, x_row = k->rs;
    int32_t c;
    for (c = 0; c < k->c_n; c += 4) {
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        size_t i0 = (size_t)(c / dm), i1 = (size_t)((c + 1) / dm), i2 = (size_t)((c + 2) / dm), i3 = (size_t)((c + 3) / dm);
        const int8_t *xr = x, *wr = w + c;
        int32_t row;
        for (row = 0; row < rows; row++) {
            const int8_t *xp = xr, *wp = wr, *wend = wr + (size_t)cols * cs;
            for (; wp < wend; xp += x_tap, wp += cs) {
                a0 += (uint32_t)((int32_t)wp[0] * ((int32_t)xp[i0] - izp));
                a1 += (uint32_t)((int32_t)wp[1] * ((int32_t)xp[i1] - izp));
                a2 += (uint32_t)((int32_t)wp[2] * ((int32_t)xp[i2] - izp));
                a3 += (uint32_t)((int32_t)wp[3] * ((int32_t)xp[i3] - izp));
            }
            xr += x_row;
            wr += w_row;
        }
        dw_store4(k, c, a0, a1, a2, a3, o + c);
    }
}

void ft_tfl_depthwise_dsp(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out,
                          uint8_t *scratch)
{
    const int32_t ozp = p->output_zp, olo = p->act_min - ozp, ohi = p->act_max - ozp; /* out8 */
    int32_t c_n = p->out_c, b, oy, ox, c;
    const uint8_t *q = p->requant;
    int32_t qn = ft_tfl_requant_entries(p->n_scales, c_n), qm = ft_tfl_requant_mask(qn);
    uint32_t off = neg_pair(p->input_zp);
    int32_t ic_n = p->in_c, dm = p->depth_mult; /* input channels: c_n / dm */
    size_t x_tap = (size_t)p->dil_w * (size_t)ic_n, x_row = (size_t)p->dil_h * (size_t)p->in_w * (size_t)ic_n;
    size_t w_row = (size_t)p->filter_w * (size_t)c_n;
    int full3x3 = p->filter_h == 3 && p->filter_w == 3 && p->dil_h == 1 && p->dil_w == 1 && c_n % 4 == 0 && dm == 1;
    dw_ctx k;
    k.q = q;
    k.bias = p->bias;
    k.qn = qn;
    k.qm = qm;
    k.ozp = ozp;
    k.olo = olo;
    k.ohi = ohi;
    k.c_n = c_n;
    k.off = off;
    k.rs = x_row;
    (void)scratch;
    for (b = 0; b < p->batches; b++)
        for (oy = 0; oy < p->out_h; oy++)
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w, fy0, fy1, fx0, fx1;
                int8_t *o = out + (((size_t)b * p->out_h + oy) * p->out_w + ox) * c_n;
                const int8_t *x, *w;
                tap_range(y0, p->dil_h, p->in_h, p->filter_h, &fy0, &fy1);
                tap_range(x0, p->dil_w, p->in_w, p->filter_w, &fx0, &fx1);
                if (fy1 < fy0) fy1 = fy0;
                if (fx1 < fx0) fx1 = fx0;
                /* the first tap inside the input, channel 0 (not dereferenced when no tap is inside) */
                x = in + (((size_t)b * p->in_h + (size_t)(y0 + p->dil_h * fy0)) * p->in_w + (size_t)(x0 + p->dil_w * fx0)) * ic_n;
                w = filter + ((size_t)fy0 * p->filter_w + (size_t)fx0) * c_n;
                if (dm != 1) { /* c_n % 4 == 0 (ft_tfl_depthwise_dsp_scratch) */
                    dw_mult_pixel(&k, x, w, fy1 - fy0, fx1 - fx0, x_tap, w_row, dm, p->input_zp, o);
                    continue;
                }
                if (full3x3 && fy0 == 0 && fy1 == 3 && fx0 == 0 && fx1 == 3) {
                    dw3x3_pixel(&k, x, w, o);
                    continue;
                }
                if (c_n % 4 == 0) {
                    dw_pixel(&k, x, w, fy1 - fy0, fx1 - fx0, x_tap, w_row, o);
                    continue;
                }
                for (c = 0; c < c_n; c += 4) {
                    uint32_t a[4] = {0, 0, 0, 0};
                    int32_t j, n = c_n - c < 4 ? c_n - c : 4;
                    if (n == 4) {
                        dw_taps4(x + c, w + c, fy1 - fy0, fx1 - fx0, x_tap, x_row, w_row, off, c_n, a);
                    } else { /* the last 1-3 channels: no word past the tensors' end is read */
                        int32_t fy, fx;
                        for (fy = 0; fy < fy1 - fy0; fy++)
                            for (fx = 0; fx < fx1 - fx0; fx++)
                                for (j = 0; j < n; j++) {
                                    const int8_t *xv = x + (size_t)fy * x_row + (size_t)fx * x_tap + c + j;
                                    a[j] += (uint32_t)((int32_t)w[(size_t)fy * w_row + (size_t)fx * c_n + c + j] *
                                                       ((int32_t)*xv - p->input_zp));
                                }
                    }
                    for (j = 0; j < n; j++) {
                        uint32_t bias = p->bias ? (uint32_t)rd_i32le(p->bias + 4u * (uint32_t)(c + j)) : 0u;
                        o[c + j] = out8(a[j] + bias, ft_tfl_requant_mult(q, (c + j) & qm), ft_tfl_requant_shift(q, qn, (c + j) & qm),
                                        ozp, olo, ohi);
                    }
                }
            }
}

/* ---- FULLY_CONNECTED: no scratch; 2 output channels per pass over the input, read in place --------- */
uint32_t ft_tfl_fc_dsp_scratch(const ft_tfl_fc_params *p)
{
    return p->accum_depth < 4 ? FT_TFL_DSP_NONE : 0u; /* as for CONV_2D */
}

/* acc[r] = sum over d of (w_r[d] - filter zp) * (x[d] - input zp) for the rows w0, w1 = w0 + wstep: 4 inputs per
 * step, widened in registers (SXTAB16 with the zero points, as CMSIS-NN's arm_nn_vec_mat_mult_t_s8), then the
 * d % 4 left over one by one */
static FT_NOINLINE void fc_rows2(const int8_t *x, const int8_t *w0, size_t wstep, int32_t d, uint32_t xoff,
                                 uint32_t woff, int32_t xzp, int32_t wzp, uint32_t acc[2])
{
    uint32_t a0 = 0, a1 = 0;
    const int8_t *w1 = w0 + wstep, *xend = x + (d & ~3);
    int32_t i, t = d & 3;
    while (x < xend) {
        uint32_t xw = rd32(x), x02 = sxtab16(xoff, xw), x13 = sxtab16_ror8(xoff, xw);
        uint32_t wa = rd32(w0), wb = rd32(w1);
        a0 = smlad(sxtab16(woff, wa), x02, a0);
        a0 = smlad(sxtab16_ror8(woff, wa), x13, a0);
        a1 = smlad(sxtab16(woff, wb), x02, a1);
        a1 = smlad(sxtab16_ror8(woff, wb), x13, a1);
        x += 4;
        w0 += 4;
        w1 += 4;
    }
    for (i = 0; i < t; i++) {
        int32_t xv = (int32_t)x[i] - xzp;
        a0 += (uint32_t)(((int32_t)w0[i] - wzp) * xv);
        a1 += (uint32_t)(((int32_t)w1[i] - wzp) * xv);
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* the same for 4 rows w0 + k * d (k < 4) of weights with zero point 0 (every per-channel FULLY_CONNECTED, most
 * per-tensor ones): each input word widened once for 4 rows; the rows addressed as w0, w0 + d, w2, w2 + d */
static FT_NOINLINE void fc_rows4(const int8_t *x, const int8_t *w0, int32_t d, uint32_t xoff, int32_t xzp,
                                 uint32_t acc[4])
{
    uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int8_t *w2 = w0 + 2 * (size_t)d, *xend = x + (d & ~3);
    int32_t i, t = d & 3;
#if FT_DSP_NATIVE && defined(__thumb2__) && defined(__OPTIMIZE__)
    /* the loop below in 13 registers (GCC spills 3 of its 14 live values at -O2): 28 instructions per 16 MACs */
    if (x < xend) {
        uint32_t x02, x13, t0, t1;
        __asm__ volatile("1:\n\t"
                         "ldr %[t0], [%[x]], #4\n\t"
                         "sxtab16 %[x02], %[xoff], %[t0]\n\t"
                         "sxtab16 %[x13], %[xoff], %[t0], ror #8\n\t"
                         "ldr %[t0], [%[w0], %[d]]\n\t"
                         "sxtb16 %[t1], %[t0]\n\t"
                         "smlad %[a1], %[t1], %[x02], %[a1]\n\t"
                         "sxtb16 %[t0], %[t0], ror #8\n\t"
                         "smlad %[a1], %[t0], %[x13], %[a1]\n\t"
                         "ldr %[t0], [%[w0]], #4\n\t"
                         "sxtb16 %[t1], %[t0]\n\t"
                         "smlad %[a0], %[t1], %[x02], %[a0]\n\t"
                         "sxtb16 %[t0], %[t0], ror #8\n\t"
                         "smlad %[a0], %[t0], %[x13], %[a0]\n\t"
                         "ldr %[t0], [%[w2], %[d]]\n\t"
                         "sxtb16 %[t1], %[t0]\n\t"
                         "smlad %[a3], %[t1], %[x02], %[a3]\n\t"
                         "sxtb16 %[t0], %[t0], ror #8\n\t"
                         "smlad %[a3], %[t0], %[x13], %[a3]\n\t"
                         "ldr %[t0], [%[w2]], #4\n\t"
                         "sxtb16 %[t1], %[t0]\n\t"
                         "smlad %[a2], %[t1], %[x02], %[a2]\n\t"
                         "sxtb16 %[t0], %[t0], ror #8\n\t"
                         "smlad %[a2], %[t0], %[x13], %[a2]\n\t"
                         "ldr %[t0], %[xend]\n\t"
                         "cmp %[x], %[t0]\n\t"
                         "bne 1b\n\t"
                         : [x] "+r"(x), [w0] "+r"(w0), [w2] "+r"(w2), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2),
                           [a3] "+r"(a3), [t0] "=&r"(t0), [t1] "=&r"(t1), [x02] "=&r"(x02), [x13] "=&r"(x13)
                         : [xoff] "r"(xoff), [d] "r"(d), [xend] "m"(xend)
                         : "cc", "memory");
    }
#endif
    while (x < xend) {
        uint32_t xw = rd32(x), x02 = sxtab16(xoff, xw), x13 = sxtab16_ror8(xoff, xw), w;
        w = rd32(w0);
        a0 = smlad(sxtb16(w), x02, a0);
        a0 = smlad(sxtb16_ror8(w), x13, a0);
        w = rd32(w0 + d);
        a1 = smlad(sxtb16(w), x02, a1);
        a1 = smlad(sxtb16_ror8(w), x13, a1);
        w = rd32(w2);
        a2 = smlad(sxtb16(w), x02, a2);
        a2 = smlad(sxtb16_ror8(w), x13, a2);
        w = rd32(w2 + d);
        a3 = smlad(sxtb16(w), x02, a3);
        a3 = smlad(sxtb16_ror8(w), x13, a3);
        x += 4;
        w0 += 4;
        w2 += 4;
    }
    for (i = 0; i < t; i++) {
        int32_t xv = (int32_t)x[i] - xzp;
        a0 += (uint32_t)((int32_t)w0[i] * xv);
        a1 += (uint32_t)((int32_t)w0[d + i] * xv);
        a2 += (uint32_t)((int32_t)w2[i] * xv);
        a3 += (uint32_t)((int32_t)w2[d + i] * xv);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

void ft_tfl_fc_dsp(const ft_tfl_fc_params *p, const int8_t *in, const int8_t *filter, int8_t *out, uint8_t *scratch)
{
    const int32_t ozp = p->output_zp, olo = p->act_min - ozp, ohi = p->act_max - ozp; /* out8 */
    int32_t d = p->accum_depth, b, oc;
    const uint8_t *q = p->requant;
    int32_t qn = ft_tfl_requant_entries(p->n_scales, p->out_c), qm = ft_tfl_requant_mask(qn);
    uint32_t xoff = neg_pair(p->input_zp), woff = neg_pair(p->filter_zp);
    (void)scratch;
    oc = 0;
    if (p->filter_zp == 0) {
        dw_ctx k; /* the requantization of 4 channels at once (dw_store4) */
        int32_t out_c = p->out_c, batches = p->batches, izp = p->input_zp;
        k.q = q;
        k.bias = p->bias;
        k.qn = qn;
        k.qm = qm;
        k.ozp = ozp;
        k.olo = olo;
        k.ohi = ohi;
        for (; oc + 4 <= out_c; oc += 4)
            for (b = 0; b < batches; b++) {
                uint32_t acc[4];
                fc_rows4(in + (size_t)b * d, filter + (size_t)oc * d, d, xoff, izp, acc);
                dw_store4(&k, oc, acc[0], acc[1], acc[2], acc[3], out + (size_t)b * out_c + oc);
            }
    }
    for (; oc < p->out_c; oc += 2) {
        int32_t oc1 = oc + 1 < p->out_c ? oc + 1 : oc; /* an odd last channel is computed twice, written once */
        int32_t m0 = ft_tfl_requant_mult(q, oc & qm), s0 = ft_tfl_requant_shift(q, qn, oc & qm);
        int32_t m1 = ft_tfl_requant_mult(q, oc1 & qm), s1 = ft_tfl_requant_shift(q, qn, oc1 & qm);
        uint32_t b0 = p->bias ? (uint32_t)rd_i32le(p->bias + 4u * (uint32_t)oc) : 0u;
        uint32_t b1 = p->bias ? (uint32_t)rd_i32le(p->bias + 4u * (uint32_t)oc1) : 0u;
        for (b = 0; b < p->batches; b++) {
            uint32_t acc[2];
            fc_rows2(in + (size_t)b * d, filter + (size_t)oc * d, (size_t)(oc1 - oc) * (size_t)d, d, xoff, woff,
                     p->input_zp, p->filter_zp, acc);
            out[(size_t)b * p->out_c + oc1] = out8(acc[1] + b1, m1, s1, ozp, olo, ohi);
            out[(size_t)b * p->out_c + oc] = out8(acc[0] + b0, m0, s0, ozp, olo, ohi);
        }
    }
}

/* ---- MAX_POOL_2D / AVERAGE_POOL_2D: 4 channels per word ---------------------------------------------------- */
static inline int32_t half16(uint32_t h) { return (int32_t)(h & 0xFFFFu) - (int32_t)((h & 0x8000u) << 1); }

/* the window of output pixel (oy, ox) clipped to the input: rows [*fy0, *fy1), columns [*fx0, *fx1) */
static void pool_window(const ft_tfl_pool_params *p, int32_t oy, int32_t ox, int32_t *fy0, int32_t *fy1, int32_t *fx0,
                        int32_t *fx1)
{
    int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
    *fy0 = y0 < 0 ? -y0 : 0;
    *fy1 = p->in_h - y0 < p->filter_h ? p->in_h - y0 : p->filter_h;
    *fx0 = x0 < 0 ? -x0 : 0;
    *fx1 = p->in_w - x0 < p->filter_w ? p->in_w - x0 : p->filter_w;
}

/* per byte max over the taps of a window: x at its first tap, rows x cols taps, then clamped */
static FT_NOINLINE uint32_t max_taps4(const int8_t *x, int32_t rows, int32_t cols, size_t x_tap, size_t x_row)
{
    uint32_t m = 0x80808080u; /* -128 in each byte */
    for (; rows > 0; rows--) {
        const int8_t *xp = x, *xend = x + (size_t)cols * x_tap;
        for (; xp < xend; xp += x_tap) m = vmax8(m, rd32(xp));
        x += x_row;
    }
    return m;
}

void ft_tfl_max_pool_dsp(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t b, oy, ox, c, c_n = p->c, c4 = c_n & ~3;
    size_t x_tap = (size_t)c_n, x_row = (size_t)p->in_w * (size_t)c_n;
    uint32_t lo = (uint32_t)(uint8_t)(int8_t)p->act_min * 0x01010101u, hi = (uint32_t)(uint8_t)(int8_t)p->act_max * 0x01010101u;
    int clamp = p->act_min > -128 || p->act_max < 127;
    for (b = 0; b < p->batches; b++)
        for (oy = 0; oy < p->out_h; oy++)
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t fy0, fy1, fx0, fx1, rows, cols;
                const int8_t *x;
                int8_t *o = out + (((size_t)b * p->out_h + oy) * p->out_w + ox) * c_n;
                pool_window(p, oy, ox, &fy0, &fy1, &fx0, &fx1);
                rows = fy1 > fy0 ? fy1 - fy0 : 0;
                cols = fx1 > fx0 ? fx1 - fx0 : 0;
                x = in + (((size_t)b * p->in_h + (size_t)(oy * p->stride_h - p->pad_h + fy0)) * p->in_w +
                          (size_t)(ox * p->stride_w - p->pad_w + fx0)) * c_n;
                for (c = 0; c < c4; c += 4) {
                    uint32_t m = max_taps4(x + c, rows, cols, x_tap, x_row);
                    if (clamp) m = vmin8(vmax8(m, lo), hi);
                    wr32(o + c, m);
                }
                for (; c < c_n; c++) { /* the last 1-3 channels */
                    int32_t m = -128, fy, fx;
                    for (fy = 0; fy < rows; fy++)
                        for (fx = 0; fx < cols; fx++) {
                            int32_t v = x[(size_t)fy * x_row + (size_t)fx * x_tap + (size_t)c];
                            if (v > m) m = v;
                        }
                    o[c] = (int8_t)(m < p->act_min ? p->act_min : m > p->act_max ? p->act_max : m);
                }
            }
}

/* sums of 4 channels over the taps as two int16 pairs (channels 0, 2 and 1, 3): exact below 257 taps */
static FT_NOINLINE void sum_taps4(const int8_t *x, int32_t rows, int32_t cols, size_t x_tap, size_t x_row, uint32_t s[2])
{
    uint32_t s02 = 0, s13 = 0;
    for (; rows > 0; rows--) {
        const int8_t *xp = x, *xend = x + (size_t)cols * x_tap;
        for (; xp < xend; xp += x_tap) {
            uint32_t w = rd32(xp);
            s02 = sxtab16(s02, w);
            s13 = sxtab16_ror8(s13, w);
        }
        x += x_row;
    }
    s[0] = s02;
    s[1] = s13;
}

static int8_t avg_out(int32_t acc, int32_t count, int32_t lo, int32_t hi)
{
    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count; /* half away from zero, as TFLM */
    return (int8_t)(acc < lo ? lo : acc > hi ? hi : acc);
}

ft_status ft_tfl_avg_pool_dsp(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t b, oy, ox, c, c_n = p->c, c4 = c_n & ~3;
    size_t x_tap = (size_t)c_n, x_row = (size_t)p->in_w * (size_t)c_n;
    if ((int64_t)p->filter_h * p->filter_w > 256) return ft_tfl_avg_pool(p, in, out); /* int16 sums could wrap */
    for (b = 0; b < p->batches; b++)
        for (oy = 0; oy < p->out_h; oy++)
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t fy0, fy1, fx0, fx1, rows, cols, count;
                const int8_t *x;
                int8_t *o = out + (((size_t)b * p->out_h + oy) * p->out_w + ox) * c_n;
                pool_window(p, oy, ox, &fy0, &fy1, &fx0, &fx1);
                if (fy1 <= fy0 || fx1 <= fx0) return FT_ERR_FORMAT; /* as ft_tfl_avg_pool (verify refuses it) */
                rows = fy1 - fy0;
                cols = fx1 - fx0;
                count = rows * cols;
                x = in + (((size_t)b * p->in_h + (size_t)(oy * p->stride_h - p->pad_h + fy0)) * p->in_w +
                          (size_t)(ox * p->stride_w - p->pad_w + fx0)) * c_n;
                for (c = 0; c < c4; c += 4) {
                    uint32_t sum[2];
                    sum_taps4(x + c, rows, cols, x_tap, x_row, sum);
                    o[c] = avg_out(half16(sum[0]), count, p->act_min, p->act_max);
                    o[c + 1] = avg_out(half16(sum[1]), count, p->act_min, p->act_max);
                    o[c + 2] = avg_out(half16(sum[0] >> 16), count, p->act_min, p->act_max);
                    o[c + 3] = avg_out(half16(sum[1] >> 16), count, p->act_min, p->act_max);
                }
                for (; c < c_n; c++) { /* the last 1-3 channels */
                    int32_t acc = 0, fy, fx;
                    for (fy = 0; fy < rows; fy++)
                        for (fx = 0; fx < cols; fx++) acc += x[(size_t)fy * x_row + (size_t)fx * x_tap + (size_t)c];
                    o[c] = avg_out(acc, count, p->act_min, p->act_max);
                }
            }
    return FT_OK;
}

/* ---- ADD: the common case of equal shapes as one flat loop, requantized as above (a ResNet's hot op) -- */
void ft_tfl_add_fast(const ft_tfl_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const int32_t ozp = p->output_zp, olo = p->act_min - ozp, ohi = p->act_max - ozp; /* out8 */
    /* the multipliers exactly as ft_tfl_add (TFLM add.cc): inputs to 2^20 resolution at twice the larger scale */
    double twice_max = 2.0 * (double)(p->in1_scale > p->in2_scale ? p->in1_scale : p->in2_scale);
    int32_t m1, s1, m2, s2, mo, so, k;
    size_t n = 1, i;
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
        if (p->in1_dims[k] != p->out_dims[k] || p->in2_dims[k] != p->out_dims[k]) {
            ft_tfl_add(p, in1, in2, out); /* broadcasting: the portable kernel */
            return;
        }
        n *= (size_t)p->out_dims[k];
    }
    ft_quantize_multiplier((double)p->in1_scale / twice_max, &m1, &s1);
    ft_quantize_multiplier((double)p->in2_scale / twice_max, &m2, &s2);
    ft_quantize_multiplier(twice_max / ((double)(1 << 20) * (double)p->output_scale), &mo, &so);
    for (i = 0; i < n; i++) {
        int32_t x1 = ((int32_t)in1[i] - p->in1_zp) * (1 << 20), x2 = ((int32_t)in2[i] - p->in2_zp) * (1 << 20);
        uint32_t sum = (uint32_t)requant(x1, m1, s1) + (uint32_t)requant(x2, m2, s2);
        out[i] = out8(sum, mo, so, ozp, olo, ohi);
    }
}

/* ---- MEAN over H and W of NHWC (global average pooling): one strided sum per channel ----------------- */
void ft_tfl_mean_fast(const ft_tfl_mean_params *p, const int8_t *in, int8_t *out)
{
    ft_tfl_mean_q q;
    int32_t b, c, c_n = p->in_dims[3];
    size_t hw = (size_t)p->in_dims[1] * (size_t)p->in_dims[2], i;
    if (p->reduce[0] || !p->reduce[1] || !p->reduce[2] || p->reduce[3]) {
        ft_tfl_mean(p, in, out); /* other axes: the portable kernel */
        return;
    }
    ft_tfl_mean_quant(p, &q);
    for (b = 0; b < p->in_dims[0]; b++)
        for (c = 0; c < c_n; c++) {
            const int8_t *x = in + (size_t)b * hw * (size_t)c_n + (size_t)c;
            uint32_t sum = 0;
            for (i = 0; i < hw; i++, x += c_n) sum += (uint32_t)(int32_t)*x;
            out[(size_t)b * (size_t)c_n + (size_t)c] = ft_tfl_mean_out(p, &q, sum);
        }
}
