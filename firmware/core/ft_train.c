/* The float32 arithmetic of head training is defined exactly (docs/ondevice.md section 3a, the Python spec
 * fedtiny/ondevice/train.py and fmath.py): every operation one IEEE-754 binary32 operation, in the spec's order,
 * never a fused multiply-add, and the spec's own exp and log (ft_expf/ft_logf below), not libm's. The result is
 * then the same bits on the host, on a Cortex-M4F and in the Python spec. The build flags must not change this:
 * contraction (a*b + c as one FMA) is switched off here for this file whatever -ffp-contract says, and a
 * fast-math build (which reorders and drops NaN/signed-zero/rounding semantics) is refused. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__FAST_MATH__)
#error "ft_train.c must not be built with -ffast-math/-Ofast: training is defined bit for bit (docs/ondevice.md 3a)"
#endif
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "ft_train.c must not be built with -ffinite-math-only: training is defined bit for bit (docs/ondevice.md 3a)"
#endif

#include "ft_train.h"
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "ft_head.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "float expressions must be evaluated in float (FLT_EVAL_METHOD 0): x87 excess precision breaks bit-exact training"
#endif

#define GOLDEN 0x9E3779B97F4A7C15ull

uint64_t ft_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ft_stream_key(uint64_t seed, uint32_t round, uint32_t device_id, uint32_t epoch)
{
    uint64_t k = ft_mix64(seed) ^ (uint64_t)round;
    k = ft_mix64(k) ^ (uint64_t)device_id;
    return ft_mix64(ft_mix64(k) ^ (uint64_t)epoch);
}

void ft_sample_order(uint64_t key, uint32_t count, uint64_t *sort_key, uint16_t *order)
{
    uint32_t i, j;
    /* stable insertion sort by mix(key ^ (slot + 1) * GOLDEN) */
    for (i = 0; i < count; i++) {
        uint64_t k = ft_mix64(key ^ ((uint64_t)(i + 1u) * GOLDEN));
        j = i;
        while (j > 0 && sort_key[j - 1] > k) {
            sort_key[j] = sort_key[j - 1];
            order[j] = order[j - 1];
            j--;
        }
        sort_key[j] = k;
        order[j] = (uint16_t)i;
    }
}

/* ---------------------------------------------------------------- exp and log (fedtiny/ondevice/fmath.py) */
#define FT_EXP_LO (-87.0f)
#define FT_LOG2E 1.44269504088896341f
#define FT_LN2_HI 0.693359375f
#define FT_LN2_LO (-2.12194440e-4f)
#define FT_SQRT_HALF 0.707106781186547524f

static float f32_from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

float ft_expf(float v)
{
    float fk, r, p, e;
    int32_t k;
    if (v < FT_EXP_LO) v = FT_EXP_LO; /* a NaN fails the compare and stays NaN */
    fk = floorf(v * FT_LOG2E + 0.5f); /* floorf is exact (an integer or the argument itself) in any libm */
    r = (v - fk * FT_LN2_HI) - fk * FT_LN2_LO;
    /* k >= -126 (2^k normal); only NaN fails the compare. Clamped before the conversion: float -> int of NaN
     * (or of anything out of range) is undefined in C. The upper clamp (k <= 128, 2^128 = +inf) only matters
     * for v > 88.7, outside the domain (v = z - max z <= 0); below it the spec and this agree bit for bit. */
    if (!(fk >= -126.0f)) fk = -126.0f;
    if (fk > 128.0f) fk = 128.0f;
    k = (int32_t)fk;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    e = ((p * r) * r + r) + 1.0f;
    return e * f32_from_bits((uint32_t)(k + 127) << 23);
}

float ft_logf(float x)
{
    uint32_t bits = f32_bits(x);
    int32_t e = (int32_t)((bits >> 23) & 0xFFu) - 126;
    float m = f32_from_bits((bits & 0x007FFFFFu) | 0x3F000000u), fe, t, z, y;
    if (x != x || x == f32_from_bits(0x7F800000u)) return x; /* NaN and +inf return themselves */
    if (!(x >= 1.17549435e-38f)) return f32_from_bits(0x7FC00000u); /* not a positive normal number: NaN */
    if (m < FT_SQRT_HALF) {
        e -= 1;
        t = (m + m) - 1.0f;
    } else {
        t = m - 1.0f;
    }
    fe = (float)e;
    z = t * t;
    y = 7.0376836292e-2f;
    y = y * t + -1.1514610310e-1f;
    y = y * t + 1.1676998740e-1f;
    y = y * t + -1.2420140846e-1f;
    y = y * t + 1.4249322787e-1f;
    y = y * t + -1.6668057665e-1f;
    y = y * t + 2.0000714765e-1f;
    y = y * t + -2.4999993993e-1f;
    y = y * t + 3.3333331174e-1f;
    y = (y * t) * z;
    y = y + fe * FT_LN2_LO;
    y = y - 0.5f * z;
    return (t + y) + fe * FT_LN2_HI;
}

float ft_softmax_xent(const float *logits, uint16_t C, uint16_t label, float *p)
{
    float mx = logits[0], s = 0.0f;
    uint16_t c;
    for (c = 1; c < C; c++)
        if (logits[c] > mx) mx = logits[c];
    for (c = 0; c < C; c++) {
        p[c] = ft_expf(logits[c] - mx);
        s = s + p[c];
    }
    for (c = 0; c < C; c++) p[c] = p[c] / s;
    return ft_logf(s) - (logits[label] - mx);
}

/* Training-set entry i: its cache slot, its label and whether it is pseudo-labelled (set NULL: slot i as cached). */
static uint16_t set_entry(const ft_cache *cache, const ft_train_set *set, uint32_t i, uint16_t *y, int *pseudo)
{
    uint16_t slot = set ? set->slot[i] : (uint16_t)i;
    *y = set ? set->label[i] : cache->labels[slot];
    *pseudo = set != NULL && cache->labels[slot] == FT_CACHE_UNLABELLED;
    return slot;
}

/* n of a training set (set NULL: every valid slot); FT_ERR_ARG for entries outside the cache or a weight
 * outside [0, 1] (NaN too). */
static ft_status set_size(const ft_cache *cache, const ft_train_set *set, uint32_t *n)
{
    uint32_t i;
    *n = cache->count;
    if (!set) return FT_OK;
    if (set->n > cache->count || !(set->weight >= 0.0f && set->weight <= 1.0f)) return FT_ERR_ARG;
    for (i = 0; i < set->n; i++)
        if (set->slot[i] >= cache->count) return FT_ERR_ARG;
    *n = set->n;
    return FT_OK;
}

ft_status ft_train(ft_float_head *fh, const ft_cache *cache, float input_scale, int32_t input_zero_point,
                   const ft_train_cfg *cfg, ft_train_work *wk, float *loss, uint32_t *steps)
{
    return ft_train_on(fh, cache, NULL, input_scale, input_zero_point, cfg, wk, loss, steps);
}

ft_status ft_train_on(ft_float_head *fh, const ft_cache *cache, const ft_train_set *set, float input_scale,
                      int32_t input_zero_point, const ft_train_cfg *cfg, ft_train_work *wk, float *loss,
                      uint32_t *steps)
{
    uint16_t C, D, c, d;
    uint32_t n, bsz, epoch, t, n_steps, j, total_steps = 0;
    size_t CD;
    double loss_sum = 0.0;
    float logits[FT_MAX_CLASSES];
    if (!fh || !cache || !cfg || !wk || !loss || !steps) return FT_ERR_ARG;
    C = fh->C;
    D = fh->D;
    if (C == 0 || D == 0) return FT_ERR_EMPTY;
    if (cache->dim != D || set_size(cache, set, &n) != FT_OK) return FT_ERR_ARG;
    if (cfg->epochs < 1 || cfg->batch_size < 1) return FT_ERR_ARG;
    if (!(cfg->lr > 0.0f) || !(cfg->momentum >= 0.0f) || !(cfg->weight_decay >= 0.0f) || !(cfg->prox_mu >= 0.0f))
        return FT_ERR_ARG;
    if (!isfinite(cfg->lr) || !isfinite(cfg->momentum) || !isfinite(cfg->weight_decay) || !isfinite(cfg->prox_mu))
        return FT_ERR_ARG;
    CD = (size_t)C * D;
    wk->u.f.grad.C = wk->u.f.vel.C = wk->u.f.anchor.C = C;
    wk->u.f.grad.D = wk->u.f.vel.D = wk->u.f.anchor.D = D;
    memcpy(wk->u.f.anchor.weights, fh->weights, CD * sizeof(float));
    memcpy(wk->u.f.anchor.bias, fh->bias, C * sizeof(float));
    memset(wk->u.f.vel.weights, 0, CD * sizeof(float));
    memset(wk->u.f.vel.bias, 0, C * sizeof(float));
    bsz = cfg->batch_size;
    n_steps = (n + bsz - 1) / bsz;
    for (epoch = 0; epoch < cfg->epochs; epoch++) {
        ft_sample_order(ft_stream_key(cfg->seed, cfg->round, cfg->device_id, epoch), n, wk->sort_key, wk->order);
        for (t = 0; t < n_steps; t++) {
            uint32_t first = t * bsz, m = n - first < bsz ? n - first : bsz;
            float inv_m = 1.0f / (float)m;
            memset(wk->u.f.grad.weights, 0, CD * sizeof(float));
            memset(wk->u.f.grad.bias, 0, C * sizeof(float));
            for (j = 0; j < m; j++) {
                uint16_t y;
                int pseudo;
                const int8_t *q = ft_cache_row(cache, set_entry(cache, set, wk->order[first + j], &y, &pseudo));
                if (y >= C) return FT_ERR_FORMAT;
                for (d = 0; d < D; d++) wk->x[d] = ((float)q[d] - (float)input_zero_point) * input_scale;
                for (c = 0; c < C; c++) {
                    const float *w = fh->weights + (size_t)c * D;
                    float acc = 0.0f;
                    for (d = 0; d < D; d++) acc = acc + w[d] * wk->x[d];
                    logits[c] = acc + fh->bias[c];
                }
                loss_sum += (double)ft_softmax_xent(logits, C, y, wk->p);
                wk->p[y] -= 1.0f;
                for (c = 0; c < C; c++) {
                    float g = wk->p[c] * inv_m;
                    float *gw = wk->u.f.grad.weights + (size_t)c * D;
                    if (pseudo) g = g * set->weight; /* a pseudo-labelled sample (docs/ondevice.md 3, 5a) */
                    for (d = 0; d < D; d++) gw[d] = gw[d] + g * wk->x[d];
                    wk->u.f.grad.bias[c] = wk->u.f.grad.bias[c] + g;
                }
            }
            if (cfg->weight_decay != 0.0f)
                for (j = 0; j < CD; j++) wk->u.f.grad.weights[j] += cfg->weight_decay * fh->weights[j];
            if (cfg->prox_mu != 0.0f) {
                for (j = 0; j < CD; j++) wk->u.f.grad.weights[j] += cfg->prox_mu * (fh->weights[j] - wk->u.f.anchor.weights[j]);
                for (c = 0; c < C; c++) wk->u.f.grad.bias[c] += cfg->prox_mu * (fh->bias[c] - wk->u.f.anchor.bias[c]);
            }
            if (cfg->momentum != 0.0f) {
                for (j = 0; j < CD; j++) wk->u.f.grad.weights[j] = wk->u.f.vel.weights[j] = cfg->momentum * wk->u.f.vel.weights[j] + wk->u.f.grad.weights[j];
                for (c = 0; c < C; c++) wk->u.f.grad.bias[c] = wk->u.f.vel.bias[c] = cfg->momentum * wk->u.f.vel.bias[c] + wk->u.f.grad.bias[c];
            }
            for (j = 0; j < CD; j++) fh->weights[j] -= cfg->lr * wk->u.f.grad.weights[j];
            for (c = 0; c < C; c++) fh->bias[c] -= cfg->lr * wk->u.f.grad.bias[c];
            total_steps++;
        }
    }
    {
        double seen = (double)n * cfg->epochs;
        *loss = (float)(loss_sum / (seen > 0 ? seen : 1.0));
    }
    *steps = total_steps;
    return FT_OK;
}

/* ------------------------------------------------------------------------------- fixed-point path */
#define W_FRAC 24
#define Z_FRAC 16
#define LOG2E_Q16 94548

/* arithmetic shift right (floor division by 2^k) without relying on implementation-defined >> */
static int64_t asr64(int64_t v, unsigned k) { return v >= 0 ? v >> k : -((-(v + 1)) >> k) - 1; }

static int64_t exp2_q16(int64_t y)
{
    int64_t n = asr64(y, 16), f = y & 0xFFFF, p = 5071;
    p = asr64(p * f, 16) + 14873;
    p = asr64(p * f, 16) + 45576;
    p = asr64(p * f, 16) + 65536;
    if (-n >= 31) return 0;
    return asr64(p, (unsigned)(-n));
}

static int64_t rescale(int64_t x, int32_t mult, int32_t shift)
{
    int k = 31 - shift;
    int64_t prod = x * (int64_t)mult;
    if (k <= 0) return (int64_t)((uint64_t)prod << (unsigned)(-k));
    return asr64(prod + ((int64_t)1 << (k - 1)), (unsigned)k);
}

static int32_t sat32(int64_t v) { return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v; }

static int32_t fix_round(double v)
{
    double r = ft_round_half_away(v);
    return r <= -2147483648.0 ? INT32_MIN : r >= 2147483647.0 ? INT32_MAX : (int32_t)r;
}

ft_status ft_train_fixed(ft_float_head *fh, const ft_cache *cache, float input_scale, int32_t input_zero_point,
                         const ft_train_cfg *cfg, ft_train_work *wk, float *loss, uint32_t *steps)
{
    return ft_train_fixed_on(fh, cache, NULL, input_scale, input_zero_point, cfg, wk, loss, steps);
}

/* The Q16 gradient weight of a pseudo-labelled sample (docs/ondevice.md 3b; fedtiny.ondevice.pseudo.fixed_weight). */
static int64_t weight_q16(const ft_train_set *set)
{
    return set ? (int64_t)floor((double)set->weight * 65536.0 + 0.5) : 65536;
}

ft_status ft_train_fixed_on(ft_float_head *fh, const ft_cache *cache, const ft_train_set *set, float input_scale,
                            int32_t input_zero_point, const ft_train_cfg *cfg, ft_train_work *wk, float *loss,
                            uint32_t *steps)
{
    uint16_t C, D, c, d;
    uint32_t n, bsz, epoch, t, n_steps, j, total_steps = 0;
    size_t CD, i;
    double s, loss_sum = 0.0;
    int32_t mw, shw, mb, shb;
    int64_t z[FT_MAX_CLASSES], e[FT_MAX_CLASSES], xi[FT_MAX_DIM], wq;
    if (!fh || !cache || !cfg || !wk || !loss || !steps) return FT_ERR_ARG;
    C = fh->C;
    D = fh->D;
    if (C == 0 || D == 0) return FT_ERR_EMPTY;
    if (set_size(cache, set, &n) != FT_OK) return FT_ERR_ARG;
    wq = weight_q16(set);
    if (cache->dim != D || cfg->epochs < 1 || cfg->batch_size < 1) return FT_ERR_ARG;
    if (!(cfg->lr > 0.0f) || !isfinite(cfg->lr)) return FT_ERR_ARG;
    if (cfg->momentum != 0.0f || cfg->weight_decay != 0.0f || cfg->prox_mu != 0.0f) return FT_ERR_ARG;
    CD = (size_t)C * D;
    s = (double)input_scale;
    for (i = 0; i < CD; i++) wk->u.q.V[i] = fix_round((double)fh->weights[i] * s * 16777216.0);
    for (c = 0; c < C; c++) wk->u.q.bq[c] = fix_round((double)fh->bias[c] * 16777216.0);
    ft_quantize_multiplier((double)cfg->lr * s * s * 256.0, &mw, &shw);
    ft_quantize_multiplier((double)cfg->lr * 256.0, &mb, &shb);
    bsz = cfg->batch_size;
    n_steps = (n + bsz - 1) / bsz;
    for (epoch = 0; epoch < cfg->epochs; epoch++) {
        ft_sample_order(ft_stream_key(cfg->seed, cfg->round, cfg->device_id, epoch), n, wk->sort_key, wk->order);
        for (t = 0; t < n_steps; t++) {
            uint32_t first = t * bsz, m = n - first < bsz ? n - first : bsz;
            memset(wk->u.q.GW, 0, CD * sizeof(int64_t));
            memset(wk->u.q.GB, 0, C * sizeof(int64_t));
            for (j = 0; j < m; j++) {
                uint16_t y;
                int pseudo;
                const int8_t *q = ft_cache_row(cache, set_entry(cache, set, wk->order[first + j], &y, &pseudo));
                int64_t zmax, tot = 0;
                if (y >= C) return FT_ERR_FORMAT;
                for (d = 0; d < D; d++) xi[d] = (int64_t)q[d] - input_zero_point;
                for (c = 0; c < C; c++) {
                    const int32_t *v = wk->u.q.V + (size_t)c * D;
                    int64_t acc = 0;
                    for (d = 0; d < D; d++) acc += xi[d] * (int64_t)v[d];
                    z[c] = asr64(acc + wk->u.q.bq[c], W_FRAC - Z_FRAC);
                }
                zmax = z[0];
                for (c = 1; c < C; c++)
                    if (z[c] > zmax) zmax = z[c];
                for (c = 0; c < C; c++) {
                    z[c] -= zmax; /* x = z - max z <= 0 */
                    e[c] = exp2_q16(asr64(z[c] * LOG2E_Q16, 16));
                    tot += e[c];
                }
                /* float32 per sample (docs/ondevice.md 3b): no libm log, whose last bits differ between libraries */
                loss_sum += (double)(ft_logf((float)tot / 65536.0f) - (float)z[y] / 65536.0f);
                for (c = 0; c < C; c++) {
                    int64_t g = (e[c] * 65536) / tot - (c == y ? 65536 : 0);
                    int64_t *gw = wk->u.q.GW + (size_t)c * D;
                    g /= (int64_t)m; /* C division truncates toward zero, as the spec's sign * (|g| // m) */
                    if (pseudo) g = asr64(g * wq, 16); /* |g| <= 65536, wq <= 65536: no overflow */
                    for (d = 0; d < D; d++) gw[d] += g * xi[d];
                    wk->u.q.GB[c] += g;
                }
            }
            for (i = 0; i < CD; i++) wk->u.q.V[i] = sat32((int64_t)wk->u.q.V[i] - rescale(wk->u.q.GW[i], mw, shw));
            for (c = 0; c < C; c++) wk->u.q.bq[c] = sat32((int64_t)wk->u.q.bq[c] - rescale(wk->u.q.GB[c], mb, shb));
            total_steps++;
        }
    }
    for (i = 0; i < CD; i++) fh->weights[i] = (float)((double)wk->u.q.V[i] / (s * 16777216.0));
    for (c = 0; c < C; c++) fh->bias[c] = (float)((double)wk->u.q.bq[c] / 16777216.0);
    {
        double seen = (double)n * cfg->epochs;
        *loss = (float)(loss_sum / (seen > 0 ? seen : 1.0));
    }
    *steps = total_steps;
    return FT_OK;
}
