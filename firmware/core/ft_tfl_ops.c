#include "ft_tfl_ops.h"
#include "ft_head.h" /* ft_quantize_multiplier, ft_mul_by_quantized_multiplier: the golden-tested TFLM helpers */
#include <math.h>
#include <string.h>

#define I32_MIN (-2147483647 - 1)
#define I32_MAX 2147483647

/* int32 arithmetic wraps as on the boards' two's-complement CPUs; doing it in uint32 keeps C (and UBSan)
 * well defined even when a hostile model overflows an accumulator. */
static int32_t wrap(uint32_t u) { return u <= 0x7FFFFFFFu ? (int32_t)u : (int32_t)(u - 0x80000000u) + I32_MIN; }
static int32_t clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }
/* requantized value + output zero point, clamped: in int64 so that a hostile multiplier cannot overflow */
static int8_t out8(int32_t v, int32_t zp, int32_t lo, int32_t hi)
{
    int64_t r = (int64_t)v + zp;
    return (int8_t)(r < lo ? lo : r > hi ? hi : r);
}
static int32_t min_i(int32_t a, int32_t b) { return a < b ? a : b; }
static int32_t max_i(int32_t a, int32_t b) { return a > b ? a : b; }

static float rd_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int32_t rd_i32(const uint8_t *p)
{
    return wrap((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

/* TfLiteRound(x / scale) as int32, saturated: TFLM's static_cast of an out-of-range float is undefined. */
static int32_t round_to_i32(double v)
{
    double r;
    if (v != v) return 0;
    r = ft_round_half_away(v);
    if (r <= -2147483648.0) return I32_MIN;
    if (r >= 2147483647.0) return I32_MAX;
    return (int32_t)r;
}

ft_status ft_tfl_act_range(int act, float out_scale, int32_t out_zp, int32_t *act_min, int32_t *act_max)
{
    /* TFLM's quantize lambda divides in float and rounds the float (roundf), then adds the zero point */
    int32_t q0 = out_zp + round_to_i32((double)roundf(0.0f / out_scale));
    switch (act) {
    case FT_TFL_ACT_NONE:
        *act_min = -128;
        *act_max = 127;
        return FT_OK;
    case FT_TFL_ACT_RELU:
        *act_min = max_i(-128, q0);
        *act_max = 127;
        return FT_OK;
    case FT_TFL_ACT_RELU6:
        *act_min = max_i(-128, q0);
        *act_max = min_i(127, out_zp + round_to_i32((double)roundf(6.0f / out_scale)));
        return FT_OK;
    case FT_TFL_ACT_RELU_N1_TO_1:
        *act_min = max_i(-128, out_zp + round_to_i32((double)roundf(-1.0f / out_scale)));
        *act_max = min_i(127, out_zp + round_to_i32((double)roundf(1.0f / out_scale)));
        return FT_OK;
    default:
        return FT_ERR_UNSUPPORTED;
    }
}

int32_t ft_tfl_padding(int32_t stride, int32_t dilation, int32_t in_size, int32_t filter, int32_t out_size)
{
    int64_t eff = (int64_t)(filter - 1) * dilation + 1;
    int64_t total = (int64_t)(out_size - 1) * stride + eff - in_size;
    return total > 0 ? (int32_t)(total / 2) : 0;
}

int32_t ft_tfl_out_size(int same, int32_t in_size, int32_t filter, int32_t stride, int32_t dilation)
{
    int64_t eff = (int64_t)(filter - 1) * dilation + 1;
    if (stride <= 0) return 0;
    if (same) return (int32_t)(((int64_t)in_size + stride - 1) / stride);
    return (int32_t)(((int64_t)in_size + stride - eff) / stride);
}

/* Output multiplier of channel oc: TFLM widens the float32 scales to double, (in * filter) / out. */
static void channel_multiplier(float in_scale, const uint8_t *scales, uint32_t n, int32_t oc, float out_scale,
                               int32_t *mult, int32_t *shift)
{
    double fs = (double)rd_f32(scales + 4u * (n > 1 ? (uint32_t)oc : 0u));
    ft_quantize_multiplier((double)in_scale * fs / (double)out_scale, mult, shift);
}

void ft_tfl_requant_table(float in_scale, const uint8_t *filter_scales, uint32_t n_scales, int32_t channels,
                          float out_scale, uint8_t *table)
{
    int32_t e, n = ft_tfl_requant_entries(n_scales, channels), mult = 0, shift = 0;
    for (e = 0; e < n; e++) {
        channel_multiplier(in_scale, filter_scales, n_scales, e, out_scale, &mult, &shift);
        memcpy(table + 4u * (uint32_t)e, &mult, 4);
        table[4u * (uint32_t)n + (uint32_t)e] = (uint8_t)(int8_t)shift; /* -31..30 */
    }
}

/* channel oc's multiplier and shift: from the precomputed table, else computed */
static void requant_of(const uint8_t *table, float in_scale, const uint8_t *scales, uint32_t n, int32_t oc,
                       int32_t channels, float out_scale, int32_t *mult, int32_t *shift)
{
    if (table) {
        int32_t entries = ft_tfl_requant_entries(n, channels), e = oc & ft_tfl_requant_mask(entries);
        *mult = ft_tfl_requant_mult(table, e);
        *shift = ft_tfl_requant_shift(table, entries, e);
    } else {
        channel_multiplier(in_scale, scales, n, oc, out_scale, mult, shift);
    }
}

/* Output channel loop outermost: one multiplier per channel, computed once, no scratch buffer. The
 * order of the loops does not change any result (each output is computed independently). */
void ft_tfl_conv2d(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out)
{
    int32_t oc, b, oy, ox, fy, fx, ic;
    int32_t groups_oc = p->out_c / (p->in_c / p->filter_in_c); /* filters per group */
    for (oc = 0; oc < p->out_c; oc++) {
        int32_t mult, shift, ic0 = (oc / groups_oc) * p->filter_in_c;
        int32_t bias = p->bias ? rd_i32(p->bias + 4u * (uint32_t)oc) : 0;
        const int8_t *f = filter + (size_t)oc * p->filter_h * p->filter_w * p->filter_in_c;
        requant_of(p->requant, p->input_scale, p->filter_scales, p->n_scales, oc, p->out_c, p->output_scale, &mult,
                   &shift);
        for (b = 0; b < p->batches; b++)
            for (oy = 0; oy < p->out_h; oy++)
                for (ox = 0; ox < p->out_w; ox++) {
                    int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                    uint32_t acc = 0;
                    int32_t v;
                    for (fy = 0; fy < p->filter_h; fy++) {
                        int32_t iy = y0 + p->dil_h * fy;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (fx = 0; fx < p->filter_w; fx++) {
                            int32_t ix = x0 + p->dil_w * fx;
                            const int8_t *xi, *fi;
                            if (ix < 0 || ix >= p->in_w) continue;
                            xi = in + (((size_t)b * p->in_h + iy) * p->in_w + ix) * p->in_c + ic0;
                            fi = f + ((size_t)fy * p->filter_w + fx) * p->filter_in_c;
                            for (ic = 0; ic < p->filter_in_c; ic++)
                                acc += (uint32_t)((int32_t)fi[ic] * ((int32_t)xi[ic] - p->input_zp));
                        }
                    }
                    acc += (uint32_t)bias;
                    v = ft_mul_by_quantized_multiplier(wrap(acc), mult, shift);
                    out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                        out8(v, p->output_zp, p->act_min, p->act_max);
                }
    }
}

void ft_tfl_depthwise_conv2d(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out)
{
    int32_t oc, b, oy, ox, fy, fx;
    for (oc = 0; oc < p->out_c; oc++) {
        int32_t mult, shift, ic = oc / p->depth_mult;
        int32_t bias = p->bias ? rd_i32(p->bias + 4u * (uint32_t)oc) : 0;
        requant_of(p->requant, p->input_scale, p->filter_scales, p->n_scales, oc, p->out_c, p->output_scale, &mult,
                   &shift);
        for (b = 0; b < p->batches; b++)
            for (oy = 0; oy < p->out_h; oy++)
                for (ox = 0; ox < p->out_w; ox++) {
                    int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                    uint32_t acc = 0;
                    int32_t v;
                    for (fy = 0; fy < p->filter_h; fy++) {
                        int32_t iy = y0 + p->dil_h * fy;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (fx = 0; fx < p->filter_w; fx++) {
                            int32_t ix = x0 + p->dil_w * fx;
                            int32_t xv, fv;
                            if (ix < 0 || ix >= p->in_w) continue;
                            xv = in[(((size_t)b * p->in_h + iy) * p->in_w + ix) * p->in_c + ic];
                            fv = filter[((size_t)fy * p->filter_w + fx) * p->out_c + oc];
                            acc += (uint32_t)(fv * (xv - p->input_zp));
                        }
                    }
                    acc += (uint32_t)bias;
                    v = ft_mul_by_quantized_multiplier(wrap(acc), mult, shift);
                    out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
                        out8(v, p->output_zp, p->act_min, p->act_max);
                }
    }
}

void ft_tfl_fully_connected(const ft_tfl_fc_params *p, const int8_t *in, const int8_t *filter, int8_t *out)
{
    int32_t oc, b, d;
    for (oc = 0; oc < p->out_c; oc++) {
        int32_t mult, shift;
        int32_t bias = p->bias ? rd_i32(p->bias + 4u * (uint32_t)oc) : 0;
        const int8_t *f = filter + (size_t)oc * p->accum_depth;
        requant_of(p->requant, p->input_scale, p->filter_scales, p->n_scales, oc, p->out_c, p->output_scale, &mult,
                   &shift);
        for (b = 0; b < p->batches; b++) {
            const int8_t *x = in + (size_t)b * p->accum_depth;
            uint32_t acc = 0;
            int32_t v;
            for (d = 0; d < p->accum_depth; d++)
                acc += (uint32_t)(((int32_t)f[d] - p->filter_zp) * ((int32_t)x[d] - p->input_zp));
            acc += (uint32_t)bias;
            v = ft_mul_by_quantized_multiplier(wrap(acc), mult, shift);
            out[(size_t)b * p->out_c + oc] = out8(v, p->output_zp, p->act_min, p->act_max);
        }
    }
}

ft_status ft_tfl_avg_pool(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; b++)
        for (oy = 0; oy < p->out_h; oy++)
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                int32_t fy0 = max_i(0, -y0), fy1 = min_i(p->filter_h, p->in_h - y0);
                int32_t fx0 = max_i(0, -x0), fx1 = min_i(p->filter_w, p->in_w - x0);
                int32_t count = (fy1 - fy0) * (fx1 - fx0);
                if (fy1 <= fy0 || fx1 <= fx0) return FT_ERR_FORMAT;
                for (c = 0; c < p->c; c++) {
                    int32_t acc = 0;
                    for (fy = fy0; fy < fy1; fy++)
                        for (fx = fx0; fx < fx1; fx++)
                            acc += in[(((size_t)b * p->in_h + y0 + fy) * p->in_w + x0 + fx) * p->c + c];
                    /* round half away from zero, as TFLM */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->c + c] =
                        (int8_t)clamp(acc, p->act_min, p->act_max);
                }
            }
    return FT_OK;
}

void ft_tfl_max_pool(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; b++)
        for (oy = 0; oy < p->out_h; oy++)
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                int32_t fy0 = max_i(0, -y0), fy1 = min_i(p->filter_h, p->in_h - y0);
                int32_t fx0 = max_i(0, -x0), fx1 = min_i(p->filter_w, p->in_w - x0);
                for (c = 0; c < p->c; c++) {
                    int32_t m = -128;
                    for (fy = fy0; fy < fy1; fy++)
                        for (fx = fx0; fx < fx1; fx++)
                            m = max_i(m, in[(((size_t)b * p->in_h + y0 + fy) * p->in_w + x0 + fx) * p->c + c]);
                    out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->c + c] =
                        (int8_t)clamp(m, p->act_min, p->act_max);
                }
            }
}

void ft_tfl_add(const ft_tfl_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    /* TFLM add.cc: both inputs to a common scale at 2^20 resolution, summed, rescaled to the output */
    const int left_shift = 20;
    double twice_max = 2.0 * (double)(p->in1_scale > p->in2_scale ? p->in1_scale : p->in2_scale);
    int32_t m1, s1, m2, s2, mo, so;
    int32_t st1[FT_TFL_BCAST_DIMS], st2[FT_TFL_BCAST_DIMS], i[FT_TFL_BCAST_DIMS];
    int k;
    size_t o = 0;
    ft_quantize_multiplier((double)p->in1_scale / twice_max, &m1, &s1);
    ft_quantize_multiplier((double)p->in2_scale / twice_max, &m2, &s2);
    ft_quantize_multiplier(twice_max / ((double)(1 << left_shift) * (double)p->output_scale), &mo, &so);
    /* row-major strides of the inputs; a broadcast dimension (size 1) has stride 0 */
    st1[FT_TFL_BCAST_DIMS - 1] = 1;
    st2[FT_TFL_BCAST_DIMS - 1] = 1;
    for (k = FT_TFL_BCAST_DIMS - 2; k >= 0; k--) {
        st1[k] = st1[k + 1] * p->in1_dims[k + 1];
        st2[k] = st2[k + 1] * p->in2_dims[k + 1];
    }
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
        if (p->in1_dims[k] == 1) st1[k] = 0;
        if (p->in2_dims[k] == 1) st2[k] = 0;
    }
    for (i[0] = 0; i[0] < p->out_dims[0]; i[0]++)
        for (i[1] = 0; i[1] < p->out_dims[1]; i[1]++)
            for (i[2] = 0; i[2] < p->out_dims[2]; i[2]++)
                for (i[3] = 0; i[3] < p->out_dims[3]; i[3]++) {
                    size_t a = 0, c = 0;
                    int32_t x1, x2, sum, v;
                    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
                        a += (size_t)i[k] * (size_t)st1[k];
                        c += (size_t)i[k] * (size_t)st2[k];
                    }
                    x1 = ((int32_t)in1[a] - p->in1_zp) * (1 << left_shift);
                    x2 = ((int32_t)in2[c] - p->in2_zp) * (1 << left_shift);
                    sum = wrap((uint32_t)ft_mul_by_quantized_multiplier(x1, m1, s1) +
                               (uint32_t)ft_mul_by_quantized_multiplier(x2, m2, s2));
                    v = ft_mul_by_quantized_multiplier(sum, mo, so);
                    out[o++] = out8(v, p->output_zp, p->act_min, p->act_max);
                }
}

static int clz64(uint64_t x)
{
    int n = 0;
    if (!x) return 64;
    while (!(x & 0x8000000000000000ull)) {
        x <<= 1;
        n++;
    }
    return n;
}

void ft_tfl_mean_quant(const ft_tfl_mean_params *p, ft_tfl_mean_q *q)
{
    /* TFLM EvalIntegerMean: the same quantization in and out takes reference_ops::Mean (integer sum
     * divided with C truncation); otherwise QuantizedMeanOrSum folds 1/n into the multiplier. */
    int k;
    q->n = 1;
    q->mult = q->shift = 0;
    q->same = p->input_zp == p->output_zp && p->input_scale == p->output_scale;
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++)
        if (p->reduce[k]) q->n *= p->in_dims[k];
    if (!q->same) {
        int sh;
        ft_quantize_multiplier((double)p->input_scale / (double)p->output_scale, &q->mult, &q->shift);
        sh = 63 - clz64((uint64_t)q->n);
        if (sh > 32) sh = 32;
        if (sh > 31 + q->shift) sh = 31 + q->shift;
        q->mult = (int32_t)(((int64_t)q->mult * ((int64_t)1 << sh)) / q->n);
        q->shift -= sh;
    }
}

int8_t ft_tfl_mean_out(const ft_tfl_mean_params *p, const ft_tfl_mean_q *q, uint32_t sum)
{
    int32_t shifted;
    if (q->same) return (int8_t)(wrap(sum) / (int32_t)q->n);
    shifted = wrap(sum - (uint32_t)(int32_t)((int64_t)p->input_zp * q->n));
    return out8(ft_mul_by_quantized_multiplier(shifted, q->mult, q->shift), p->output_zp, -128, 127);
}

void ft_tfl_mean(const ft_tfl_mean_params *p, const int8_t *in, int8_t *out)
{
    int32_t st[FT_TFL_BCAST_DIMS], lim[FT_TFL_BCAST_DIMS], o[FT_TFL_BCAST_DIMS], r[FT_TFL_BCAST_DIMS];
    ft_tfl_mean_q q;
    int k;
    size_t oi = 0;
    ft_tfl_mean_quant(p, &q);
    st[FT_TFL_BCAST_DIMS - 1] = 1;
    for (k = FT_TFL_BCAST_DIMS - 2; k >= 0; k--) st[k] = st[k + 1] * p->in_dims[k + 1];
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) lim[k] = p->reduce[k] ? 1 : p->in_dims[k];
    for (o[0] = 0; o[0] < lim[0]; o[0]++)
        for (o[1] = 0; o[1] < lim[1]; o[1]++)
            for (o[2] = 0; o[2] < lim[2]; o[2]++)
                for (o[3] = 0; o[3] < lim[3]; o[3]++) {
                    uint32_t sum = 0;
                    for (r[0] = 0; r[0] < (p->reduce[0] ? p->in_dims[0] : 1); r[0]++)
                        for (r[1] = 0; r[1] < (p->reduce[1] ? p->in_dims[1] : 1); r[1]++)
                            for (r[2] = 0; r[2] < (p->reduce[2] ? p->in_dims[2] : 1); r[2]++)
                                for (r[3] = 0; r[3] < (p->reduce[3] ? p->in_dims[3] : 1); r[3]++) {
                                    size_t a = 0;
                                    for (k = 0; k < FT_TFL_BCAST_DIMS; k++)
                                        a += (size_t)(o[k] + r[k]) * (size_t)st[k];
                                    sum += (uint32_t)(int32_t)in[a];
                                }
                    out[oi++] = ft_tfl_mean_out(p, &q, sum);
                }
}

void ft_tfl_pad(const ft_tfl_pad_params *p, const int8_t *in, int8_t *out)
{
    int32_t od[FT_TFL_BCAST_DIMS], i[FT_TFL_BCAST_DIMS];
    int k;
    size_t o = 0, a = 0;
    for (k = 0; k < FT_TFL_BCAST_DIMS; k++) od[k] = p->before[k] + p->in_dims[k] + p->after[k];
    for (i[0] = 0; i[0] < od[0]; i[0]++)
        for (i[1] = 0; i[1] < od[1]; i[1]++)
            for (i[2] = 0; i[2] < od[2]; i[2]++)
                for (i[3] = 0; i[3] < od[3]; i[3]++) {
                    int inside = 1;
                    for (k = 0; k < FT_TFL_BCAST_DIMS; k++)
                        if (i[k] < p->before[k] || i[k] >= p->before[k] + p->in_dims[k]) inside = 0;
                    /* the input is visited in row-major order exactly when inside */
                    out[o++] = inside ? in[a++] : p->pad_value;
                }
}

/* ---- gemmlowp fixed point (SOFTMAX) ---------------------------------------------------------------- */
int32_t ft_tfl_srdhm(int32_t a, int32_t b)
{
    int64_t ab, nudge;
    if (a == b && a == I32_MIN) return I32_MAX;
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t ft_tfl_rounding_divide_by_pot(int32_t x, int exponent)
{
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t rem = x & mask;
    int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (rem > thr ? 1 : 0);
}

/* SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0 (a saturating left shift). */
static int32_t sat_shl(int32_t x, int exponent)
{
    int32_t thr = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > thr) return I32_MAX;
    if (x < -thr) return I32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out. */
static int32_t exp_on_interval(int32_t a)
{
    const int32_t constant_term = 1895147668, one_third = 715827883;
    int32_t x = a + (1 << 28), x2, x3, x4, x4_over_4, poly;
    x2 = ft_tfl_srdhm(x, x);
    x3 = ft_tfl_srdhm(x2, x);
    x4 = ft_tfl_srdhm(x2, x2);
    x4_over_4 = ft_tfl_rounding_divide_by_pot(x4, 2);
    poly = ft_tfl_rounding_divide_by_pot(ft_tfl_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return constant_term + ft_tfl_srdhm(constant_term, x + poly);
}

/* gemmlowp exp_on_negative_values for a Q5.26 input (5 integer bits), Q0.31 result. */
static int32_t exp_on_negative_values_q5(int32_t a)
{
    static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int frac = 26;
    const int32_t quarter = 1 << (frac - 2);
    int32_t a_mod = (a & (quarter - 1)) - quarter;
    int32_t result = exp_on_interval(sat_shl(a_mod, 5)); /* Rescale<0> from 5 integer bits */
    int32_t remainder = a_mod - a;
    int k;
    for (k = 0; k < 7; k++) /* exponents -2..4: bit frac + exponent of the remainder */
        if (remainder & (1 << (frac - 2 + k))) result = ft_tfl_srdhm(result, mults[k]);
    if (a == 0) result = I32_MAX;
    return result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out). */
static int32_t one_over_one_plus_x(int32_t a)
{
    int64_t sum = (int64_t)a + I32_MAX;
    int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2); /* RoundingHalfSum(a, One) */
    int32_t x = 1515870810 + ft_tfl_srdhm(half_den, -1010580540); /* 48/17 - 32/17 * d, Q2.29 */
    int i;
    for (i = 0; i < 3; i++) {
        int32_t hdx = ft_tfl_srdhm(half_den, x);            /* Q2.29 */
        int32_t one_minus = (1 << 29) - hdx;                /* F2::One() - ... */
        x = x + sat_shl(ft_tfl_srdhm(x, one_minus), 2);     /* Q4.27 -> Rescale<2> */
    }
    return sat_shl(x, 1); /* ExactMulByPot<-1> (Q1.30 view) then Rescale<0> */
}

static int count_leading_zeros32(uint32_t x)
{
    int n = 0;
    if (!x) return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

/* TFLM softmax_common.cc CalculateSoftmaxParams: the input multiplier and shift, diff_min */
static void softmax_params(float beta, float input_scale, int32_t *in_mult, int32_t *in_shift, int32_t *diff_min)
{
    const int scaled_diff_int_bits = 5;
    double real = (double)beta * (double)input_scale * (double)(1 << (31 - scaled_diff_int_bits)), max_rescaled;
    if (real > 2147483647.0) real = 2147483647.0;
    ft_quantize_multiplier(real, in_mult, in_shift);
    max_rescaled = 1.0 * (double)((1 << scaled_diff_int_bits) - 1) *
                   (double)((int64_t)1 << (31 - scaled_diff_int_bits)) / (double)((int64_t)1 << *in_shift);
    *diff_min = -(int32_t)floor(max_rescaled);
}

void ft_tfl_softmax_prepare(ft_tfl_softmax_params *p)
{
    softmax_params(p->beta, p->input_scale, &p->in_mult, &p->in_shift, &p->diff_min);
    p->prep_beta = p->beta;
    p->prep_scale = p->input_scale;
    p->prepared = 1;
}

void ft_tfl_softmax(const ft_tfl_softmax_params *p, const int8_t *in, int8_t *out)
{
    /* TFLM reference_ops::Softmax (int8 in, int8 out), its parameters from Prepare where they still apply */
    const int accum_int_bits = 12;
    int32_t in_mult, in_shift, diff_min;
    int32_t i, c;
    if (p->prepared && memcmp(&p->prep_beta, &p->beta, sizeof p->beta) == 0 &&
        memcmp(&p->prep_scale, &p->input_scale, sizeof p->input_scale) == 0) {
        in_mult = p->in_mult;
        in_shift = p->in_shift;
        diff_min = p->diff_min;
    } else {
        softmax_params(p->beta, p->input_scale, &in_mult, &in_shift, &diff_min);
    }
    for (i = 0; i < p->outer; i++) {
        const int8_t *x = in + (size_t)i * p->depth;
        int8_t *y = out + (size_t)i * p->depth;
        int32_t maxv = -128, sum = 0, shifted_scale, bits_over_unit, headroom;
        for (c = 0; c < p->depth; c++) maxv = max_i(maxv, x[c]);
        for (c = 0; c < p->depth; c++) {
            int32_t diff = (int32_t)x[c] - maxv;
            if (diff >= diff_min) {
                int32_t e = exp_on_negative_values_q5(ft_tfl_srdhm(diff * (1 << in_shift), in_mult));
                sum += ft_tfl_rounding_divide_by_pot(e, accum_int_bits); /* Rescale<12> */
            }
        }
        /* GetReciprocal(sum, 12) */
        headroom = count_leading_zeros32((uint32_t)sum);
        bits_over_unit = accum_int_bits - headroom;
        shifted_scale = one_over_one_plus_x(wrap(((uint32_t)sum << headroom) - 0x80000000u));
        for (c = 0; c < p->depth; c++) {
            int32_t diff = (int32_t)x[c] - maxv;
            if (diff >= diff_min) {
                int32_t e = exp_on_negative_values_q5(ft_tfl_srdhm(diff * (1 << in_shift), in_mult));
                int32_t v = ft_tfl_rounding_divide_by_pot(ft_tfl_srdhm(shifted_scale, e), bits_over_unit + 31 - 8);
                y[c] = (int8_t)clamp(v - 128, -128, 127);
            } else {
                y[c] = -128;
            }
        }
    }
}

void ft_tfl_quantize_f32(const uint8_t *in, uint32_t n, float scale, int32_t zp, int8_t *out)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        float v;
        memcpy(&v, in + 4u * i, 4);
        /* AffineQuantize: val / (double)scale, TfLiteRound, + zero point, clamp */
        out[i] = out8(round_to_i32((double)v / (double)scale), zp, -128, 127);
    }
}

void ft_tfl_requantize(const int8_t *in, uint32_t n, float in_scale, int32_t in_zp, float out_scale, int32_t out_zp,
                       int8_t *out)
{
    int32_t mult, shift;
    uint32_t i;
    ft_quantize_multiplier((double)in_scale / (double)out_scale, &mult, &shift);
    for (i = 0; i < n; i++)
        out[i] = out8(ft_mul_by_quantized_multiplier((int32_t)in[i] - in_zp, mult, shift), out_zp, -128, 127);
}

void ft_tfl_dequantize(const int8_t *in, uint32_t n, float scale, int32_t zp, uint8_t *out)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        float v = (float)((double)scale * (double)((int32_t)in[i] - zp));
        memcpy(out + 4u * i, &v, 4);
    }
}
