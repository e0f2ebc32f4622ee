#include "ft_test.h"
#include "ft_head.h"
#include "ft_train.h"
#include "ft_cache.h"
#include "ft_dev.h"
#include "golden/golden_head.h"
#include "golden/golden_train.h"
#include <math.h>

static ft_head head, head2;
static ft_float_head fh;
/* the cache and the training work memory are the test device's (test_device.c): a small-RAM board (STM32L475)
 * holds one of each; a device test boots the device afresh */
extern ft_dev ft_test_dev;
#define cache (ft_test_dev.cache)
#define work (ft_test_dev.work)

void test_quantize_multiplier(void)
{
    size_t i;
    for (i = 0; i < GOLDEN_QM_N; i++) {
        int32_t m, s;
        ft_quantize_multiplier(golden_qm_real[i], &m, &s);
        CHECK_EQ_INT(m, golden_qm_mult[i]);
        CHECK_EQ_INT(s, golden_qm_shift[i]);
    }
}

static void load_head(ft_head *h, uint16_t C, uint16_t D, float in_s, int32_t in_zp, float out_s, int32_t out_zp,
                      const float *ws, const int32_t *bias, const int8_t *w)
{
    h->C = C;
    h->D = D;
    h->input_scale = in_s;
    h->input_zero_point = in_zp;
    h->output_scale = out_s;
    h->output_zero_point = out_zp;
    memcpy(h->weight_scales, ws, C * sizeof(float));
    memcpy(h->bias, bias, C * sizeof(int32_t));
    memcpy(h->weights, w, (size_t)C * D);
}

void test_head_forward_golden(void)
{
    size_t i, j;
    int8_t out[FT_MAX_CLASSES];
    for (i = 0; i < GOLDEN_FC_N; i++) {
        const golden_fc_case *g = &golden_fc[i];
        if (g->C > FT_MAX_CLASSES || g->D > FT_MAX_DIM) continue; /* config too small for this case */
        load_head(&head, g->C, g->D, g->in_s, g->in_zp, g->out_s, g->out_zp, g->ws, g->bias, g->w);
        CHECK_OK(ft_head_prepare(&head));
        CHECK_MEM(head.mult, g->mult, g->C * sizeof(int32_t));
        CHECK_MEM(head.shift, g->shift, g->C * sizeof(int32_t));
        for (j = 0; j < g->n; j++) {
            CHECK_OK(ft_head_forward(&head, g->x + j * g->D, out));
            CHECK_MEM(out, g->y + j * g->C, g->C);
        }
        CHECK_OK(ft_head_dequantize(&head, &fh));
        CHECK_MEM(fh.weights, g->fw, (size_t)g->C * g->D * sizeof(float));
        CHECK_MEM(fh.bias, g->fb, g->C * sizeof(float));
    }
}

void test_head_patch_roundtrip(void)
{
    static uint8_t patch[FT_HEAD_PATCH_MAX];
    const golden_fc_case *g = &golden_fc[0];
    uint32_t n;
    load_head(&head, g->C, g->D, g->in_s, g->in_zp, g->out_s, g->out_zp, g->ws, g->bias, g->w);
    CHECK_OK(ft_head_prepare(&head));
    n = ft_head_patch_size(&head);
    CHECK_EQ_INT(n, 20 + 8 * g->C + g->C * g->D);
    CHECK_OK(ft_head_patch_read(&head, 0, patch, n));
    CHECK(ft_head_patch_read(&head, 1, patch, n) == FT_ERR_RANGE);
    memset(&head2, 0, sizeof head2);
    CHECK_OK(ft_head_decode_patch(&head2, patch, n, 0, 0));
    CHECK_EQ_INT(head2.C, g->C);
    CHECK_MEM(head2.weights, head.weights, (size_t)g->C * g->D);
    CHECK_MEM(head2.mult, head.mult, sizeof head.mult[0] * g->C);
    CHECK(ft_head_decode_patch(&head2, patch, n, (uint16_t)(g->C + 1), 0) == FT_ERR_UNSUPPORTED);
    CHECK(ft_head_decode_patch(&head2, patch, n - 1, 0, 0) == FT_ERR_FORMAT);
    patch[12] = 0; patch[13] = 0; patch[14] = 0xC0; patch[15] = 0x7F; /* NaN input scale */
    CHECK(ft_head_decode_patch(&head2, patch, n, 0, 0) == FT_ERR_FORMAT);
    patch[0] = 'X';
    CHECK(ft_head_decode_patch(&head2, patch, n, 0, 0) == FT_ERR_FORMAT);
}

void test_requantize_golden(void)
{
    size_t i;
    for (i = 0; i < GOLDEN_RQ_N; i++) {
        const golden_rq_case *g = &golden_rq[i];
        if (g->C > FT_MAX_CLASSES || g->D > FT_MAX_DIM) continue;
        fh.C = g->C;
        fh.D = g->D;
        memcpy(fh.weights, g->fw, (size_t)g->C * g->D * sizeof(float));
        memcpy(fh.bias, g->fb, g->C * sizeof(float));
        CHECK_OK(ft_head_quantize(&fh, g->in_s, g->in_zp, g->calib, g->n, g->D, &head));
        CHECK_MEM(head.weights, g->w, (size_t)g->C * g->D);
        CHECK_MEM(head.weight_scales, g->ws, g->C * sizeof(float));
        CHECK_MEM(head.bias, g->bias, g->C * sizeof(int32_t));
        CHECK(memcmp(&head.output_scale, &g->out_s, 4) == 0);
        CHECK_EQ_INT(head.output_zero_point, g->out_zp);
    }
    CHECK(ft_head_quantize(&fh, 0.1f, 0, golden_rq[0].calib, 0, 1, &head) != FT_OK);
}

void test_sample_order_golden(void)
{
    size_t i, j;
    for (i = 0; i < GOLDEN_ORDER_N; i++) {
        const golden_order_case *g = &golden_order[i];
        uint64_t k = ft_stream_key(g->seed, g->round, g->device, g->epoch);
        CHECK(k == g->key);
        if (g->n > FT_CACHE_CAPACITY) continue;
        ft_sample_order(k, g->n, work.sort_key, work.order);
        for (j = 0; j < g->n; j++) CHECK_EQ_INT(work.order[j], g->order[j]);
    }
}

static uint32_t fbits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* a[0..n) and b[0..n) the same float32 bit patterns (+0 and -0 differ); the first difference is printed */
static int same_bits(const char *what, const float *a, const float *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (fbits(a[i]) != fbits(b[i])) {
            ft_test_outf("    %s[%u] 0x%08lx (%.9g) vs spec 0x%08lx (%.9g)\n", what, (unsigned)i,
                         (unsigned long)fbits(a[i]), (double)a[i], (unsigned long)fbits(b[i]), (double)b[i]);
            return 0;
        }
    return 1;
}

void test_train_golden(void)
{
    size_t i, j;
    for (i = 0; i < GOLDEN_TRAIN_N; i++) {
        const golden_train_case *g = &golden_train[i];
        ft_train_cfg cfg;
        float loss = 0.0f;
        uint32_t steps = 0;
        size_t CD = (size_t)g->C * g->D;
        if (g->C > FT_MAX_CLASSES || g->D > FT_MAX_DIM || g->capacity > FT_CACHE_CAPACITY) continue;
        CHECK_OK(ft_cache_init(&cache, g->capacity, g->D));
        for (j = 0; j < g->pushed; j++) CHECK_OK(ft_cache_push(&cache, g->push_x + j * g->D, g->push_y[j]));
        fh.C = g->C;
        fh.D = g->D;
        memcpy(fh.weights, g->w0, CD * sizeof(float));
        memcpy(fh.bias, g->b0, g->C * sizeof(float));
        cfg.epochs = g->epochs;
        cfg.batch_size = g->batch;
        cfg.lr = g->lr;
        cfg.momentum = g->mom;
        cfg.weight_decay = g->wd;
        cfg.prox_mu = g->mu;
        cfg.seed = g->seed;
        cfg.round = g->round;
        cfg.device_id = g->device;
        CHECK_OK(ft_train(&fh, &cache, g->in_s, g->in_zp, &cfg, &work, &loss, &steps));
        CHECK_EQ_INT(steps, g->steps);
        /* bit for bit what the Python spec computes (docs/ondevice.md 3a: one float32 arithmetic) */
        CHECK(same_bits("w", fh.weights, g->w, CD));
        CHECK(same_bits("b", fh.bias, g->b, g->C));
        CHECK(same_bits("loss", &loss, &g->loss, 1));
    }
}

#include "golden/golden_fmath.h"

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* same bits, or both NaN (a NaN's sign and payload are the CPU's: x86 and Arm make different default NaNs) */
static int fmath_same(const char *what, float (*fn)(float), const uint32_t *in, const uint32_t *out, size_t n)
{
    size_t i;
    int ok = 1;
    for (i = 0; i < n; i++) {
        float x = from_bits(in[i]), y = fn(x), want = from_bits(out[i]);
        if (fbits(y) == out[i] || (y != y && want != want)) continue;
        ft_test_outf("    %s(0x%08lx = %.9g) = 0x%08lx (%.9g), spec 0x%08lx (%.9g)\n", what, (unsigned long)in[i],
                     (double)x, (unsigned long)fbits(y), (double)y, (unsigned long)out[i], (double)want);
        ok = 0;
    }
    return ok;
}

void test_fmath_golden(void)
{
    CHECK(fmath_same("ft_expf", ft_expf, golden_expf_in, golden_expf_out, GOLDEN_EXPF_N));
    CHECK(fmath_same("ft_logf", ft_logf, golden_logf_in, golden_logf_out, GOLDEN_LOGF_N));
}

void test_cache_ring(void)
{
    int8_t x[4] = {1, 2, 3, 4};
    uint32_t i;
    CHECK(ft_cache_init(&cache, 0, 4) == FT_ERR_RANGE);
    CHECK(ft_cache_init(&cache, FT_CACHE_CAPACITY + 1, 4) == FT_ERR_RANGE);
    CHECK_OK(ft_cache_init(&cache, 3, 4));
    for (i = 0; i < 7; i++) {
        x[0] = (int8_t)i;
        CHECK_OK(ft_cache_push(&cache, x, (uint8_t)i));
    }
    CHECK_EQ_INT(cache.count, 3);
    CHECK_EQ_INT(ft_cache_row(&cache, 0)[0], 6); /* slot 7 % 3 ... newest overwrote slot 0 */
    CHECK_EQ_INT(ft_cache_row(&cache, 1)[0], 4);
    CHECK_EQ_INT(cache.labels[2], 5);
    ft_cache_clear(&cache);
    CHECK_EQ_INT(cache.count, 0);
}

#include "golden/golden_fixed.h"

void test_train_fixed_golden(void)
{
    size_t i, j;
    ft_train_cfg cfg;
    float loss = 0.0f;
    uint32_t steps = 0;
    for (i = 0; i < GOLDEN_FIXED_N; i++) {
        const golden_fixed_case *g = &golden_fixed[i];
        size_t CD = (size_t)g->C * g->D;
        if (g->C > FT_MAX_CLASSES || g->D > FT_MAX_DIM || g->capacity > FT_CACHE_CAPACITY) continue;
        CHECK_OK(ft_cache_init(&cache, g->capacity, g->D));
        for (j = 0; j < g->pushed; j++) CHECK_OK(ft_cache_push(&cache, g->push_x + j * g->D, g->push_y[j]));
        fh.C = g->C;
        fh.D = g->D;
        memcpy(fh.weights, g->w0, CD * sizeof(float));
        memcpy(fh.bias, g->b0, g->C * sizeof(float));
        memset(&cfg, 0, sizeof cfg);
        cfg.epochs = g->epochs;
        cfg.batch_size = g->batch;
        cfg.lr = g->lr;
        cfg.seed = g->seed;
        cfg.round = g->round;
        cfg.device_id = g->device;
        CHECK_OK(ft_train_fixed(&fh, &cache, g->in_s, g->in_zp, &cfg, &work, &loss, &steps));
        CHECK_EQ_INT(steps, g->steps);
        CHECK_MEM(fh.weights, g->w, CD * sizeof(float)); /* integer arithmetic: bit-exact */
        CHECK_MEM(fh.bias, g->b, g->C * sizeof(float));
        CHECK_MEM(&loss, &g->loss, sizeof(float)); /* the loss too: ft_logf, a double sum in visit order */
    }
    cfg.momentum = 0.9f; /* plain SGD only */
    CHECK(ft_train_fixed(&fh, &cache, 0.1f, 0, &cfg, &work, &loss, &steps) == FT_ERR_ARG);
}
