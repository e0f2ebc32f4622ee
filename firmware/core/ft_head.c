#include "ft_head.h"
#include <math.h>
#include <string.h>

#define I32_MIN (-2147483647 - 1)
#define I32_MAX 2147483647

float ft_rdf32(const uint8_t *p)
{
    uint32_t u = ft_rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void ft_wrf32(uint8_t *p, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    ft_wr32(p, u);
}

double ft_round_half_away(double x)
{
    double r = floor(fabs(x) + 0.5);
    return x < 0 ? -r : r;
}

void ft_quantize_multiplier(double real, int32_t *mult, int32_t *shift)
{
    int sh = 0;
    double q;
    int64_t qf;
    if (real == 0.0) {
        *mult = 0;
        *shift = 0;
        return;
    }
    q = frexp(real, &sh);
    qf = (int64_t)ft_round_half_away(q * 2147483648.0);
    if (qf == ((int64_t)1 << 31)) {
        qf /= 2;
        sh++;
    }
    if (sh < -31) {
        *mult = 0;
        *shift = 0;
        return;
    }
    if (sh > 30) {
        sh = 30;
        qf = I32_MAX;
    }
    *mult = (int32_t)qf;
    *shift = sh;
}

static int32_t wrap32(int64_t v)
{
    uint32_t u = (uint32_t)(uint64_t)v;
    return u <= 0x7FFFFFFFu ? (int32_t)u : (int32_t)(u - 0x80000000u) - I32_MAX - 1;
}

int32_t ft_mul_by_quantized_multiplier(int32_t x, int32_t mult, int32_t shift)
{
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t a = wrap32((int64_t)((uint64_t)(int64_t)x << left));
    int64_t ab, nudge, num, high, mask, rem, thr;
    if (a == I32_MIN && mult == I32_MIN) {
        high = I32_MAX;
    } else {
        ab = (int64_t)a * (int64_t)mult;
        nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        num = ab + nudge;
        high = num / ((int64_t)1 << 31); /* C division truncates toward zero, as SaturatingRoundingDoublingHighMul */
    }
    mask = ((int64_t)1 << right) - 1;
    rem = high & mask;
    thr = (mask >> 1) + (high < 0 ? 1 : 0);
    return (int32_t)((high >> right) + (rem > thr ? 1 : 0));
}

static int finite_pos(float f) { return isfinite(f) && f > 0.0f; }

ft_status ft_head_prepare(ft_head *h)
{
    uint16_t c;
    if (!h) return FT_ERR_ARG;
    if (h->C == 0 || h->D == 0 || h->C > FT_MAX_CLASSES || h->D > FT_MAX_DIM) return FT_ERR_RANGE;
    if (!finite_pos(h->input_scale) || !finite_pos(h->output_scale)) return FT_ERR_FORMAT;
    if (h->input_zero_point < -128 || h->input_zero_point > 127 || h->output_zero_point < -128 ||
        h->output_zero_point > 127)
        return FT_ERR_FORMAT;
    for (c = 0; c < h->C; c++) {
        if (!finite_pos(h->weight_scales[c])) return FT_ERR_FORMAT;
        /* TFLM widens the float32 scales to double: in * w / out */
        ft_quantize_multiplier((double)h->input_scale * (double)h->weight_scales[c] / (double)h->output_scale,
                               &h->mult[c], &h->shift[c]);
    }
    return FT_OK;
}

static int32_t accumulate(const ft_head *h, const int8_t *x, uint16_t c)
{
    const int8_t *w = h->weights + (size_t)c * h->D;
    uint32_t acc = (uint32_t)h->bias[c]; /* int32 wrap-around as numpy's int32 matmul */
    int32_t zp = h->input_zero_point;
    uint16_t d;
    for (d = 0; d < h->D; d++) acc += (uint32_t)(((int32_t)x[d] - zp) * (int32_t)w[d]);
    return wrap32((int64_t)acc);
}

ft_status ft_head_forward(const ft_head *h, const int8_t *x, int8_t *out)
{
    uint16_t c;
    if (!h || !x || !out) return FT_ERR_ARG;
    if (h->C == 0) return FT_ERR_EMPTY;
    for (c = 0; c < h->C; c++) {
        int64_t v = (int64_t)ft_mul_by_quantized_multiplier(accumulate(h, x, c), h->mult[c], h->shift[c]) +
                    h->output_zero_point;
        out[c] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    return FT_OK;
}

ft_status ft_head_predict(const ft_head *h, const int8_t *x, uint16_t *cls)
{
    int8_t out[FT_MAX_CLASSES];
    uint16_t c, best = 0;
    if (!cls) return FT_ERR_ARG;
    FT_TRY(ft_head_forward(h, x, out));
    for (c = 1; c < h->C; c++)
        if (out[c] > out[best]) best = c;
    *cls = best;
    return FT_OK;
}

uint32_t ft_head_patch_size(const ft_head *h) { return h->C ? FT_HEAD_PATCH_SIZE(h->C, h->D) : 0; }

ft_status ft_head_decode_patch(ft_head *h, const uint8_t *p, size_t len, uint16_t want_c, uint16_t want_d)
{
    uint16_t C, D, c;
    if (!h || !p) return FT_ERR_ARG;
    if (len < 20 || memcmp(p, "FTHP", 4) != 0 || p[4] != 1) return FT_ERR_FORMAT;
    C = ft_rd16(p + 6);
    D = ft_rd16(p + 8);
    if (C == 0 || D == 0 || len != FT_HEAD_PATCH_SIZE(C, D)) return FT_ERR_FORMAT;
    if ((want_c && C != want_c) || (want_d && D != want_d)) return FT_ERR_UNSUPPORTED; /* shape mismatch */
    if (C > FT_MAX_CLASSES || D > FT_MAX_DIM) return FT_ERR_RANGE;
    h->C = C;
    h->D = D;
    h->input_zero_point = (int8_t)p[10];
    h->output_zero_point = (int8_t)p[11];
    h->input_scale = ft_rdf32(p + 12);
    h->output_scale = ft_rdf32(p + 16);
    for (c = 0; c < C; c++) {
        h->weight_scales[c] = ft_rdf32(p + 20 + 4u * c);
        h->bias[c] = (int32_t)ft_rd32(p + 20 + 4u * C + 4u * c);
    }
    memcpy(h->weights, p + 20 + 8u * C, (size_t)C * D);
    {
        ft_status s = ft_head_prepare(h);
        if (s != FT_OK) {
            h->C = h->D = 0;
            return s == FT_ERR_RANGE ? FT_ERR_RANGE : FT_ERR_FORMAT;
        }
    }
    return FT_OK;
}

static uint8_t patch_byte(const ft_head *h, uint32_t i)
{
    uint8_t tmp[4];
    uint32_t C = h->C;
    if (i < 20) {
        uint8_t hd[20];
        memcpy(hd, "FTHP", 4);
        hd[4] = 1;
        hd[5] = 0;
        ft_wr16(hd + 6, h->C);
        ft_wr16(hd + 8, h->D);
        hd[10] = (uint8_t)(int8_t)h->input_zero_point;
        hd[11] = (uint8_t)(int8_t)h->output_zero_point;
        ft_wrf32(hd + 12, h->input_scale);
        ft_wrf32(hd + 16, h->output_scale);
        return hd[i];
    }
    i -= 20;
    if (i < 4 * C) {
        ft_wrf32(tmp, h->weight_scales[i / 4]);
        return tmp[i % 4];
    }
    i -= 4 * C;
    if (i < 4 * C) {
        ft_wr32(tmp, (uint32_t)h->bias[i / 4]);
        return tmp[i % 4];
    }
    i -= 4 * C;
    return (uint8_t)h->weights[i];
}

ft_status ft_head_patch_read(const ft_head *h, uint32_t offset, uint8_t *out, size_t n)
{
    size_t k;
    uint32_t total;
    if (!h || (!out && n)) return FT_ERR_ARG;
    total = ft_head_patch_size(h);
    if (offset > total || n > total - offset) return FT_ERR_RANGE;
    for (k = 0; k < n; k++) out[k] = patch_byte(h, offset + (uint32_t)k);
    return FT_OK;
}

ft_status ft_head_dequantize(const ft_head *h, ft_float_head *fh)
{
    uint16_t c, d;
    if (!h || !fh) return FT_ERR_ARG;
    if (h->C == 0) return FT_ERR_EMPTY;
    fh->C = h->C;
    fh->D = h->D;
    for (c = 0; c < h->C; c++) {
        float ws = h->weight_scales[c];
        float bs = h->input_scale * ws;
        for (d = 0; d < h->D; d++) fh->weights[(size_t)c * h->D + d] = (float)h->weights[(size_t)c * h->D + d] * ws;
        fh->bias[c] = (float)h->bias[c] * bs;
    }
    return FT_OK;
}

ft_status ft_head_quantize(const ft_float_head *fh, float input_scale, int32_t input_zero_point,
                           const int8_t *calib, size_t n, size_t stride, ft_head *out)
{
    uint16_t c, d, C, D;
    size_t i;
    float lo = 0.0f, hi = 0.0f;
    double dlo, dhi, scale, zp;
    int first = 1;
    if (!fh || !out || (!calib && n)) return FT_ERR_ARG;
    C = fh->C;
    D = fh->D;
    if (C == 0 || D == 0 || C > FT_MAX_CLASSES || D > FT_MAX_DIM) return FT_ERR_RANGE;
    if (n == 0) return FT_ERR_EMPTY;
    if (stride < D) return FT_ERR_ARG;
    out->C = C;
    out->D = D;
    out->input_scale = input_scale;
    out->input_zero_point = input_zero_point;
    for (c = 0; c < C; c++) {
        const float *w = fh->weights + (size_t)c * D;
        float absmax = 0.0f, s, bs, bq;
        double r;
        for (d = 0; d < D; d++) {
            if (!isfinite(w[d])) return FT_ERR_FORMAT;
            if (fabsf(w[d]) > absmax) absmax = fabsf(w[d]);
        }
        if (!isfinite(fh->bias[c])) return FT_ERR_FORMAT;
        s = absmax > 0.0f ? absmax / 127.0f : 1.0f;
        out->weight_scales[c] = s;
        for (d = 0; d < D; d++) {
            r = ft_round_half_away((double)(w[d] / s));
            out->weights[(size_t)c * D + d] = (int8_t)(r < -127.0 ? -127 : r > 127.0 ? 127 : (int)r);
        }
        bs = input_scale * s;
        bq = fh->bias[c] / bs;
        r = ft_round_half_away((double)bq);
        out->bias[c] = r <= -2147483648.0 ? I32_MIN : r >= 2147483647.0 ? I32_MAX : (int32_t)r;
    }
    /* logit range from the exact int32 accumulators of the quantized head, times their float32 scale */
    out->output_scale = 1.0f;
    out->output_zero_point = 0;
    for (i = 0; i < n; i++) {
        const int8_t *x = calib + i * stride;
        for (c = 0; c < C; c++) {
            float real = (float)accumulate(out, x, c) * (input_scale * out->weight_scales[c]);
            if (first || real < lo) lo = real;
            if (first || real > hi) hi = real;
            first = 0;
        }
    }
    dlo = (double)lo < 0.0 ? (double)lo : 0.0;
    dhi = (double)hi > 0.0 ? (double)hi : 0.0;
    if (dhi - dlo < 1e-3) dhi = dlo + 1e-3;
    scale = (double)(float)((dhi - dlo) / 255.0);
    zp = ft_round_half_away(-128.0 - dlo / scale);
    out->output_scale = (float)scale;
    out->output_zero_point = zp < -128.0 ? -128 : zp > 127.0 ? 127 : (int32_t)zp;
    return ft_head_prepare(out);
}
