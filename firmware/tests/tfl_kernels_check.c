/* The DSP kernels (core/ft_tfl_ops_dsp.c) against the portable ones (core/ft_tfl_ops.c), byte for byte, on
 * random CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD / MEAN / MAX_POOL_2D / AVERAGE_POOL_2D cases from a seeded PRNG: shapes, strides, SAME/VALID
 * padding, dilations, groups, depth multipliers, zero points, per-channel and per-tensor scales, biases that
 * wrap the int32 accumulator, fused activation ranges. The scratch starts misaligned and full of junk; guard
 * bytes after the output and the scratch must survive (QEMU has no sanitizer).
 *
 *   make test-tfl-kernels      host gcc (ASan+UBSan, the instructions' C stand-ins) and QEMU (the instructions)
 *
 * Prints "kernels: N cases (...), M differ" and "P passed, F failed"; exits non-zero on any difference. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "ft_tfl_ops.h"
#include "ft_tfl_ops_dsp.h"
#include "ft_head.h"
#ifdef FT_TFL_QEMU
#include "port_mps2.h"
#endif

#ifndef FT_KCHECK_CASES /* cases per kernel */
#define FT_KCHECK_CASES 400u
#endif
#ifndef FT_KCHECK_REQUANT /* requantization cases */
#define FT_KCHECK_REQUANT 100000u
#endif
#define BUF 20000
#define GUARD 16

static int8_t in_buf[BUF], filt[BUF], out_ref[BUF], out_dsp[BUF + GUARD];
static uint8_t requant[1u + FT_TFL_REQUANT_BYTES(BUF / 5u)]; /* the multipliers, at an odd address */
static uint8_t scales[4 * 64], bias[4 * 64], scratch[BUF + GUARD + 1];
static int passed, failed;

static void say(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
#ifdef FT_TFL_QEMU
    ft_mps2_puts(buf);
#else
    fputs(buf, stdout);
#endif
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static int32_t rint_in(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }
static float rfloat(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 100000u) / 100000.0f; }

static void put_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    p[0] = (uint8_t)u, p[1] = (uint8_t)(u >> 8), p[2] = (uint8_t)(u >> 16), p[3] = (uint8_t)(u >> 24);
}

static void fill(int8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) p[i] = (int8_t)(rnd() & 0xFF);
}

/* scales (1 or n), a bias (or none: NULL) of small or accumulator-wrapping values, an activation range */
static const uint8_t *quant(uint32_t n, uint32_t *n_scales, float *in_s, float *out_s, int32_t *lo, int32_t *hi)
{
    uint32_t i, per_channel = rnd() & 1u, big = rnd() % 4u == 0;
    *n_scales = per_channel ? n : 1u;
    for (i = 0; i < *n_scales; i++) put_f32(scales + 4u * i, rfloat(0.0005f, 0.03f));
    for (i = 0; i < n; i++) {
        uint32_t b = big ? rnd() ^ (rnd() << 21) : (uint32_t)rint_in(-40000, 40000);
        bias[4 * i] = (uint8_t)b, bias[4 * i + 1] = (uint8_t)(b >> 8), bias[4 * i + 2] = (uint8_t)(b >> 16);
        bias[4 * i + 3] = (uint8_t)(b >> 24);
    }
    *in_s = rfloat(0.002f, 0.1f);
    *out_s = rfloat(0.005f, 0.5f);
    *lo = rnd() % 3u ? -128 : rint_in(-128, 0);
    *hi = rnd() % 3u ? 127 : rint_in(*lo, 127);
    return rnd() % 4u ? bias : NULL;
}

/* Runs one case: portable into out_ref, DSP into out_dsp with misaligned junk scratch; returns 1 if equal. */
static int compare(uint32_t n_out, uint32_t need, const char *what)
{
    uint32_t k, diff = 0, first = 0;
    for (k = 0; k < n_out; k++)
        if (out_ref[k] != out_dsp[k] && !diff++) first = k;
    for (k = 0; k < GUARD; k++)
        if (out_dsp[n_out + k] != (int8_t)0x5A || scratch[1 + need + k] != 0xC3) diff++;
    if (diff) say("  %s differs in %u bytes (first at %u: %d vs portable %d) or wrote past its end\n", what,
                  (unsigned)diff, (unsigned)first, (int)out_dsp[first], (int)out_ref[first]);
    return diff == 0;
}

static void prepare_run(uint32_t n_out, uint32_t need)
{
    fill((int8_t *)scratch, (uint32_t)sizeof scratch);
    memset(scratch + 1 + need, 0xC3, GUARD);
    memset(out_dsp, 0x5A, n_out + GUARD);
}

static int conv_case(int depthwise, uint32_t *skipped)
{
    ft_tfl_conv_params p;
    uint32_t need, n_in, n_out, n_filt;
    int32_t groups = depthwise ? 1 : (rnd() % 4u == 0 ? rint_in(2, 3) : 1), same = (int32_t)(rnd() & 1u);
    memset(&p, 0, sizeof p);
    p.batches = rint_in(1, 2);
    p.in_h = rint_in(1, 9);
    p.in_w = rint_in(1, 9);
    p.filter_h = rint_in(1, 4);
    p.filter_w = rint_in(1, 4);
    p.stride_h = rint_in(1, 3);
    p.stride_w = rint_in(1, 3);
    p.dil_h = rnd() % 4u ? 1 : 2;
    p.dil_w = rnd() % 4u ? 1 : 2;
    if (depthwise) {
        p.in_c = rint_in(1, 19);
        p.depth_mult = rnd() % 5u ? 1 : rint_in(2, 3);
        p.out_c = p.in_c * p.depth_mult;
    } else {
        p.filter_in_c = rint_in(1, 13);
        p.in_c = p.filter_in_c * groups;
        p.out_c = groups * rint_in(1, 7);
    }
    p.out_h = ft_tfl_out_size(same, p.in_h, p.filter_h, p.stride_h, p.dil_h);
    p.out_w = ft_tfl_out_size(same, p.in_w, p.filter_w, p.stride_w, p.dil_w);
    if (p.out_h < 1 || p.out_w < 1) return -1; /* VALID with a filter larger than the input */
    p.pad_h = ft_tfl_padding(p.stride_h, p.dil_h, p.in_h, p.filter_h, p.out_h);
    p.pad_w = ft_tfl_padding(p.stride_w, p.dil_w, p.in_w, p.filter_w, p.out_w);
    p.input_zp = rint_in(-128, 127);
    p.output_zp = rint_in(-128, 127);
    p.bias = quant((uint32_t)p.out_c, &p.n_scales, &p.input_scale, &p.output_scale, &p.act_min, &p.act_max);
    p.filter_scales = scales;
    n_in = (uint32_t)(p.batches * p.in_h * p.in_w * p.in_c);
    n_out = (uint32_t)(p.batches * p.out_h * p.out_w * p.out_c);
    n_filt = (uint32_t)(p.filter_h * p.filter_w * p.out_c * (depthwise ? 1 : p.filter_in_c));
    need = depthwise ? ft_tfl_depthwise_dsp_scratch(&p) : ft_tfl_conv2d_dsp_scratch(&p);
    if (need == FT_TFL_DSP_NONE) { /* left to the portable kernels: depth multipliers > 1 with out_c % 4 != 0, < 4 weights per output */
        if (depthwise ? p.depth_mult == 1 || p.out_c % 4 == 0 : p.filter_h * p.filter_w * p.filter_in_c >= 4) return 0;
        (*skipped)++;
        return -1;
    }
    if (n_in > BUF || n_out > BUF || n_filt > BUF || need > BUF) return -1;
    fill(in_buf, n_in);
    fill(filt, n_filt);
    prepare_run(n_out, need);
    /* the portable kernel computes each channel's multiplier, the DSP kernel reads them precomputed */
    ft_tfl_requant_table(p.input_scale, p.filter_scales, p.n_scales, p.out_c, p.output_scale, requant + 1);
    if (depthwise) {
        ft_tfl_depthwise_conv2d(&p, in_buf, filt, out_ref);
        p.requant = requant + 1;
        ft_tfl_depthwise_dsp(&p, in_buf, filt, out_dsp, scratch + 1);
    } else {
        ft_tfl_conv2d(&p, in_buf, filt, out_ref);
        p.requant = requant + 1;
        ft_tfl_conv2d_dsp(&p, in_buf, filt, out_dsp, scratch + 1);
    }
    if (compare(n_out, need, depthwise ? "DEPTHWISE_CONV_2D" : "CONV_2D")) return 1;
    say("  case: b%d %dx%dx%d -> %dx%dx%d filter %dx%d (in_c %d) stride %d,%d dil %d,%d pad %d,%d zp %d\n",
        (int)p.batches, (int)p.in_h, (int)p.in_w, (int)p.in_c, (int)p.out_h, (int)p.out_w, (int)p.out_c,
        (int)p.filter_h, (int)p.filter_w, (int)p.filter_in_c, (int)p.stride_h, (int)p.stride_w, (int)p.dil_h,
        (int)p.dil_w, (int)p.pad_h, (int)p.pad_w, (int)p.input_zp);
    return 0;
}

static int fc_case(void)
{
    ft_tfl_fc_params p;
    uint32_t need, n_out;
    memset(&p, 0, sizeof p);
    p.batches = rint_in(1, 3);
    p.accum_depth = rint_in(1, 300);
    p.out_c = rint_in(1, 11);
    p.input_zp = rint_in(-128, 127);
    p.output_zp = rint_in(-128, 127);
    p.bias = quant((uint32_t)p.out_c, &p.n_scales, &p.input_scale, &p.output_scale, &p.act_min, &p.act_max);
    p.filter_zp = p.n_scales == 1 && (rnd() & 1u) ? rint_in(-128, 127) : 0; /* per-tensor weights may have one */
    p.filter_scales = scales;
    n_out = (uint32_t)(p.batches * p.out_c);
    need = ft_tfl_fc_dsp_scratch(&p);
    if (need == FT_TFL_DSP_NONE) return p.accum_depth < 4 ? -1 : 0;
    fill(in_buf, (uint32_t)(p.batches * p.accum_depth));
    fill(filt, (uint32_t)(p.out_c * p.accum_depth));
    prepare_run(n_out, need);
    ft_tfl_requant_table(p.input_scale, p.filter_scales, p.n_scales, p.out_c, p.output_scale, requant + 1);
    ft_tfl_fully_connected(&p, in_buf, filt, out_ref);
    p.requant = requant + 1;
    ft_tfl_fc_dsp(&p, in_buf, filt, out_dsp, scratch + 1);
    if (compare(n_out, need, "FULLY_CONNECTED")) return 1;
    say("  case: batches %d depth %d out %d zp %d filter zp %d\n", (int)p.batches, (int)p.accum_depth, (int)p.out_c,
        (int)p.input_zp, (int)p.filter_zp);
    return 0;
}

/* The DSP kernels' requantization against ft_mul_by_quantized_multiplier (TFLM's): every multiplier and shift
 * ft_quantize_multiplier can give (edges included), accumulators over the whole int32 range. */
static uint32_t requant_check(uint32_t n)
{
    static const int32_t xs[] = {0, 1, -1, 2147483647, -2147483647 - 1, 1073741824, -1073741824, 12345, -12345};
    static const int32_t ms[] = {0, 1073741824, 2147483647, 1073741825, 2147483646};
    uint32_t i, bad = 0;
    for (i = 0; i < n; i++) {
        int32_t x, mult, shift;
        if (i < 9u * 5u * 62u) { /* every edge accumulator x edge multiplier x shift */
            x = xs[i % 9u];
            mult = ms[(i / 9u) % 5u];
            shift = (int32_t)(i / 45u) - 31;
        } else {
            x = rnd() % 4u ? (int32_t)(rnd() % 2000001u) - 1000000 : (int32_t)(rnd() ^ (rnd() << 21));
            /* a real multiplier from 2^-40 to 2^32: log-uniform over the exponent */
            ft_quantize_multiplier(ldexp((double)rfloat(0.5f, 1.0f), (int)(rnd() % 73u) - 40), &mult, &shift);
        }
        if (ft_tfl_dsp_requant(x, mult, shift) != ft_mul_by_quantized_multiplier(x, mult, shift)) {
            if (!bad) say("  requant(%ld, %ld, %d) differs\n", (long)x, (long)mult, (int)shift);
            bad++;
        }
    }
    say("requantization: %u cases, %u differ\n", (unsigned)n, (unsigned)bad);
    return bad;
}

/* ADD: equal shapes (the flat loop) and broadcasts (handed to the portable kernel), any scales and zero points */
static int add_case(void)
{
    ft_tfl_add_params p;
    uint32_t n = 1, k, ignore;
    float dummy;
    const int8_t *in2 = filt;
    memset(&p, 0, sizeof p);
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
        p.out_dims[k] = p.in1_dims[k] = p.in2_dims[k] = k == 0 ? 1 : rint_in(1, 9);
        n *= (uint32_t)p.out_dims[k];
    }
    if (rnd() % 4u == 0) p.in2_dims[1 + rnd() % 3u] = 1; /* a broadcast */
    p.in1_zp = rint_in(-128, 127);
    p.in2_zp = rint_in(-128, 127);
    p.output_zp = rint_in(-128, 127);
    p.in1_scale = rfloat(0.001f, 0.2f);
    p.in2_scale = rnd() & 1u ? p.in1_scale : rfloat(0.001f, 0.2f);
    (void)quant(1, &ignore, &dummy, &p.output_scale, &p.act_min, &p.act_max);
    fill(in_buf, n);
    fill(filt, n);
    prepare_run(n, 0);
    ft_tfl_add(&p, in_buf, in2, out_ref);
    ft_tfl_add_fast(&p, in_buf, in2, out_dsp);
    return compare(n, 0, "ADD");
}

/* MEAN: over H and W (the strided sums) and other axes (handed to the portable kernel), equal or other
 * quantization in and out */
static int mean_case(void)
{
    ft_tfl_mean_params p;
    uint32_t n_in = 1, n_out = 1, k;
    memset(&p, 0, sizeof p);
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
        p.in_dims[k] = k == 0 ? rint_in(1, 2) : k == 3 ? rint_in(1, 20) : rint_in(1, 12);
        p.reduce[k] = (uint8_t)(rnd() % 5u ? k == 1 || k == 2 : rnd() & 1u);
        n_in *= (uint32_t)p.in_dims[k];
        if (!p.reduce[k]) n_out *= (uint32_t)p.in_dims[k];
    }
    p.input_zp = rint_in(-128, 127);
    p.input_scale = rfloat(0.001f, 0.2f);
    if (rnd() % 3u == 0) {
        p.output_zp = p.input_zp;
        p.output_scale = p.input_scale;
    } else {
        p.output_zp = rint_in(-128, 127);
        p.output_scale = rfloat(0.001f, 0.2f);
    }
    fill(in_buf, n_in);
    prepare_run(n_out, 0);
    ft_tfl_mean(&p, in_buf, out_ref);
    ft_tfl_mean_fast(&p, in_buf, out_dsp);
    return compare(n_out, 0, "MEAN");
}

/* MAX_POOL_2D / AVERAGE_POOL_2D: windows, strides, SAME/VALID padding, channels not a multiple of 4, activation
 * ranges, windows above 256 taps (the average handed to the portable kernel) */
static int pool_case(int average)
{
    ft_tfl_pool_params p;
    uint32_t n_in, n_out;
    int32_t same = (int32_t)(rnd() & 1u), big = rnd() % 8u == 0;
    memset(&p, 0, sizeof p);
    p.batches = rint_in(1, 2);
    p.in_h = big ? rint_in(16, 20) : rint_in(1, 12);
    p.in_w = big ? rint_in(16, 20) : rint_in(1, 12);
    p.c = rint_in(1, 20);
    p.filter_h = big ? p.in_h : rint_in(1, 4);
    p.filter_w = big ? p.in_w : rint_in(1, 4);
    p.stride_h = rint_in(1, 3);
    p.stride_w = rint_in(1, 3);
    p.out_h = ft_tfl_out_size(same, p.in_h, p.filter_h, p.stride_h, 1);
    p.out_w = ft_tfl_out_size(same, p.in_w, p.filter_w, p.stride_w, 1);
    if (p.out_h < 1 || p.out_w < 1) return -1;
    p.pad_h = ft_tfl_padding(p.stride_h, 1, p.in_h, p.filter_h, p.out_h);
    p.pad_w = ft_tfl_padding(p.stride_w, 1, p.in_w, p.filter_w, p.out_w);
    if (average && (p.pad_h >= p.filter_h || p.pad_w >= p.filter_w)) return -1; /* refused at verify */
    p.act_min = rnd() % 3u ? -128 : rint_in(-128, 0);
    p.act_max = rnd() % 3u ? 127 : rint_in(p.act_min, 127);
    n_in = (uint32_t)(p.batches * p.in_h * p.in_w * p.c);
    n_out = (uint32_t)(p.batches * p.out_h * p.out_w * p.c);
    if (n_in > BUF || n_out > BUF) return -1;
    fill(in_buf, n_in);
    prepare_run(n_out, 0);
    if (average) {
        if (ft_tfl_avg_pool(&p, in_buf, out_ref) != FT_OK || ft_tfl_avg_pool_dsp(&p, in_buf, out_dsp) != FT_OK) return 0;
    } else {
        ft_tfl_max_pool(&p, in_buf, out_ref);
        ft_tfl_max_pool_dsp(&p, in_buf, out_dsp);
    }
    return compare(n_out, 0, average ? "AVERAGE_POOL_2D" : "MAX_POOL_2D");
}

static int run(void)
{
    uint32_t counts[7] = {0, 0, 0, 0, 0, 0, 0}, dw_portable = 0, bad = 0, kind;
    for (kind = 0; kind < 7; kind++)
        while (counts[kind] < FT_KCHECK_CASES) {
            int r = kind >= 5   ? pool_case(kind == 6)
                    : kind == 4 ? mean_case()
                    : kind == 3 ? add_case()
                    : kind == 2 ? fc_case()
                                : conv_case((int)kind, &dw_portable);
            if (r < 0) continue;
            counts[kind]++;
            if (r == 0) bad++;
        }
    say("kernels: %u cases (CONV_2D %u, DEPTHWISE_CONV_2D %u, FULLY_CONNECTED %u, ADD %u, MEAN %u, MAX_POOL_2D %u, "
        "AVERAGE_POOL_2D %u; %u convolutions left to the portable kernels), %u differ\n",
        (unsigned)(counts[0] + counts[1] + counts[2] + counts[3] + counts[4] + counts[5] + counts[6]),
        (unsigned)counts[0], (unsigned)counts[1], (unsigned)counts[2], (unsigned)counts[3], (unsigned)counts[4],
        (unsigned)counts[5], (unsigned)counts[6], (unsigned)dw_portable, (unsigned)bad);
    if (bad) failed++;
    else passed++;
    if (dw_portable == 0) failed++; /* the generator must also reach the portable-only case */
    if (requant_check(FT_KCHECK_REQUANT)) failed++;
    else passed++;
    say("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#ifdef FT_TFL_QEMU
int main(void)
{
    int rc;
    ft_mps2_init();
    rc = run();
    ft_mps2_semihost_exit(rc);
    return rc;
}
#else
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run();
}
#endif
