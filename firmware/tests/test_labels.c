/* Partial labels, late labels and pseudo-labels (docs/ondevice.md 5a, docs/protocol.md LABEL, PUSH_SAMPLES "Sample
 * ids", TrainRequest flag PSEUDO): the training set and the weighted training bit for bit against the Python
 * reference (golden/golden_labels.h from fedtiny.ondevice.pseudo, train_heads, train_heads_fixed), and the
 * device's answers to everything a peer may send. */
#include "ft_test.h"
#include "ft_cache.h"
#include "ft_dev.h"
#include "ft_dev_util.h"
#include "ft_head.h"
#include "ft_labels.h"
#include "ft_proto.h"
#include "ft_simflash.h"
#include "ft_train.h"
#include "golden/golden_labels.h"
#include "../app/factory_head.h"

/* test_device.c: one device object for every device test (small-RAM boards hold one); the unit tests here borrow
 * its cache, head, float head and work memory (a device test boots it afresh) */
extern ft_dev ft_test_dev;
static ft_cache *const cache = &ft_test_dev.cache;
static ft_head *const head = &ft_test_dev.head;
static ft_float_head *const fh = &ft_test_dev.upd;
static ft_train_work *const work = &ft_test_dev.work;
static uint8_t resp[FT_MAX_PAYLOAD];
static size_t resp_len;

static uint32_t fbits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static void golden_head(const golden_label_case *g)
{
    head->C = g->C;
    head->D = g->D;
    head->input_scale = g->in_s;
    head->input_zero_point = g->in_zp;
    head->output_scale = g->out_s;
    head->output_zero_point = g->out_zp;
    memcpy(head->weight_scales, g->ws, g->C * sizeof(float));
    memcpy(head->bias, g->bias, g->C * sizeof(int32_t));
    memcpy(head->weights, g->w8, (size_t)g->C * g->D);
}

/* The cached training set equals the reference's slots and labels. */
static void check_set(const golden_label_case *g)
{
    uint32_t i;
    CHECK_EQ_INT(ft_train_set_build(&work->set, cache, head, g->pseudo, g->margin, g->weight), g->n);
    for (i = 0; i < g->n && i < work->set.n; i++) {
        CHECK_EQ_INT(work->set.slot[i], g->slots[i]);
        CHECK_EQ_INT(work->set.label[i], g->labels[i]);
    }
}

void test_labels_golden(void)
{
    size_t i, j;
    for (i = 0; i < GOLDEN_LABEL_N; i++) {
        const golden_label_case *g = &golden_labels[i];
        ft_train_cfg cfg;
        float loss = -1.0f;
        uint32_t steps = 99;
        size_t CD = (size_t)g->C * g->D;
        if (g->C > FT_MAX_CLASSES || g->D > FT_MAX_DIM || g->capacity > FT_CACHE_CAPACITY) continue;
        if (g->fixed == 0 && !FT_USE_FLOAT) continue;
        CHECK_OK(ft_cache_init(cache, g->capacity, g->D));
        for (j = 0; j < g->pushed; j++) CHECK_OK(ft_cache_push(cache, g->push_x + j * g->D, g->push_y[j]));
        golden_head(g);
        CHECK_OK(ft_head_prepare(head));
        check_set(g);
        CHECK_OK(ft_head_dequantize(head, fh));
        memset(&cfg, 0, sizeof cfg);
        cfg.epochs = g->epochs;
        cfg.batch_size = g->batch;
        cfg.lr = g->lr;
        cfg.momentum = g->mom;
        cfg.weight_decay = g->wd;
        cfg.prox_mu = g->mu;
        cfg.seed = g->seed;
        cfg.round = g->round;
        cfg.device_id = g->device;
#if FT_USE_FLOAT
        if (!g->fixed)
            CHECK_OK(ft_train_on(fh, cache, &work->set, g->in_s, g->in_zp, &cfg, work, &loss, &steps));
        else
#endif
            CHECK_OK(ft_train_fixed_on(fh, cache, &work->set, g->in_s, g->in_zp, &cfg, work, &loss, &steps));
        CHECK_EQ_INT(steps, g->steps);
        CHECK_MEM(fh->weights, g->w, CD * sizeof(float)); /* bit for bit (docs/ondevice.md 3a, 3b) */
        CHECK_MEM(fh->bias, g->b, g->C * sizeof(float));
        CHECK_EQ_INT(fbits(loss), fbits(g->loss));
        if (ft_test_current_failed) {
            ft_test_outf("    golden label case %u\n", (unsigned)i);
            return;
        }
    }
}

void test_cache_sample_ids(void)
{
    int8_t x[2] = {0, 0};
    uint32_t slot = 99, i;
    CHECK_OK(ft_cache_init(cache, 8, 2));
    CHECK(!ft_cache_slot_of(cache, 0, 0, 0, &slot)); /* nothing pushed */
    for (i = 0; i < 3; i++) CHECK_OK(ft_cache_push(cache, x, FT_CACHE_UNLABELLED));
    CHECK(ft_cache_slot_of(cache, 0, 3, 2, &slot) && slot == 2);
    CHECK(!ft_cache_slot_of(cache, 0, 3, 3, &slot));           /* not pushed yet */
    CHECK(!ft_cache_slot_of(cache, 0, 3, 0xFFFFFFFFu, &slot));
    CHECK_EQ_INT(ft_cache_labelled(cache), 0);
    /* pushed_total wrapped past 2^32 since the CLEAR at 0xFFFFFFF0: 32 pushed, the newest 8 cached */
    ft_cache_clear(cache);
    for (i = 0; i < 32; i++) CHECK_OK(ft_cache_push(cache, x, (uint16_t)(i % 3)));
    CHECK(ft_cache_slot_of(cache, 0xFFFFFFF0u, 0x10u, 0xFu, &slot) && slot == 7); /* the 32nd: slot 31 % 8 */
    CHECK(ft_cache_slot_of(cache, 0xFFFFFFF0u, 0x10u, 0x8u, &slot) && slot == 0); /* the 25th: slot 24 % 8 */
    CHECK(!ft_cache_slot_of(cache, 0xFFFFFFF0u, 0x10u, 0x7u, &slot));             /* overwritten */
    CHECK(!ft_cache_slot_of(cache, 0xFFFFFFF0u, 0x10u, 0xFFFFFFEFu, &slot));      /* before the CLEAR */
    CHECK_EQ_INT(ft_cache_labelled(cache), 8);
}

/* ------------------------------------------------------------------------------------ on the device */
static uint8_t call(uint8_t type, const uint8_t *p, size_t n)
{
    return ft_dev_handle(&ft_test_dev, type, p, n, resp, sizeof resp, &resp_len);
}

/* test_device.c: a formatted flash and device 9 booted on it (the factory head, the fleet key) */
void ft_test_boot_blank(void);
#define boot_blank ft_test_boot_blank

/* samples of one PUSH_SAMPLES in this build (FT_MAX_PAYLOAD) */
#define CHUNK ((FT_MAX_PAYLOAD - 6u) / 66u < 50u ? (FT_MAX_PAYLOAD - 6u) / 66u : 50u)

/* PUSH_SAMPLES of n 64-dim samples (one request: n <= CHUNK), sample i labelled labels[i % nl]. */
static uint8_t push(uint16_t n, int clear, const uint16_t *labels, uint16_t nl)
{
    static uint8_t p[6 + 66 * CHUNK];
    uint16_t i;
    if (n > CHUNK) return 0xFF;
    p[0] = 0; p[1] = (uint8_t)(clear ? FT_SAMPLES_CLEAR : 0); ft_wr16(p + 2, n); ft_wr16(p + 4, 64);
    for (i = 0; i < n; i++) ft_wr16(p + 6 + 2 * i, labels[i % nl]);
    for (i = 0; i < n * 64u; i++) p[6 + 2 * n + i] = (uint8_t)(i * 29 + 3 + n);
    return call(FT_MSG_PUSH_SAMPLES, p, 6 + 2u * n + 64u * n);
}

/* n samples without a label in as many requests as it takes; 1 if all were accepted. */
static int push_unlabelled(uint32_t n)
{
    static const uint16_t none = FT_UNLABELLED;
    while (n) {
        uint16_t k = (uint16_t)(n < CHUNK ? n : CHUNK);
        if (push(k, 0, &none, 1) != FT_ST_OK) return 0;
        n -= k;
    }
    return 1;
}

/* LABEL with n entries (ids[i], labels[i]); len_delta bytes more or less than 2 + 6n. */
static uint8_t label(uint16_t n, const uint32_t *ids, const uint16_t *labels, int len_delta)
{
    static uint8_t p[FT_MAX_PAYLOAD + 2];
    uint32_t i;
    size_t len = 2u + 6u * n;
    ft_wr16(p, n);
    for (i = 0; i < n && 2u + 6u * i + 6u <= sizeof p; i++) {
        ft_wr32(p + 2 + 6 * i, ids[i]);
        ft_wr16(p + 6 + 6 * i, labels[i]);
    }
    if (len_delta < 0 && (size_t)(-len_delta) > len) return 0xFF;
    len = (size_t)((long)len + len_delta);
    return call(FT_MSG_LABEL, p, len > sizeof p ? sizeof p : len);
}

static void check_label_answer(uint32_t applied, uint32_t labelled)
{
    CHECK_EQ_INT(resp_len, FT_LABEL_RESULT_SIZE);
    CHECK_EQ_INT(ft_rd32(resp), applied);
    CHECK_EQ_INT(ft_rd32(resp + 4), labelled);
}

void test_label_message(void)
{
    static const uint16_t y5[5] = {0, FT_UNLABELLED, 2, FT_UNLABELLED, FT_UNLABELLED};
    static const uint16_t bad[2] = {10, 0xFFFEu}, none = FT_UNLABELLED, seven = 7;
    static uint32_t ids[(FT_MAX_PAYLOAD - 2) / 6 + 8];
    static uint16_t ys[(FT_MAX_PAYLOAD - 2) / 6 + 8];
    uint32_t i;
    boot_blank();
    CHECK_EQ_INT(call(FT_MSG_HELLO, NULL, 0), FT_ST_OK);
    CHECK(ft_rd32(resp + 8) & FT_CAP_LABELS);
    CHECK_EQ_INT(push(5, 1, y5, 5), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 5);
    CHECK_EQ_INT(ft_rd32(resp + 4), 5); /* ids 0 .. 4 */
    CHECK_EQ_INT(push(3, 0, bad, 1), FT_ST_MALFORMED);     /* label >= C */
    CHECK_EQ_INT(push(3, 0, bad + 1, 1), FT_ST_MALFORMED); /* 0xFFFE is a label >= C, not "none" */
    CHECK_EQ_INT(ft_test_dev.pushed_total, 5);             /* a refused push numbers nothing */
    /* malformed LABELs change nothing: lengths, a count far above the payload, labels >= C */
    CHECK_EQ_INT(call(FT_MSG_LABEL, NULL, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(call(FT_MSG_LABEL, (const uint8_t *)"\x01", 1), FT_ST_MALFORMED);
    ids[0] = 1; ys[0] = 3; ids[1] = 3; ys[1] = 10;
    CHECK_EQ_INT(label(1, ids, ys, 1), FT_ST_MALFORMED);
    CHECK_EQ_INT(label(1, ids, ys, -1), FT_ST_MALFORMED);
    CHECK_EQ_INT(label(65535, ids, ys, -(int)(6u * 65535u - 12u)), FT_ST_MALFORMED); /* n = 65535, 2 entries sent */
    CHECK_EQ_INT(label(2, ids, ys, 0), FT_ST_MALFORMED);  /* the second label >= C: the first not applied either */
    ys[1] = 0xFFFEu;
    CHECK_EQ_INT(label(2, ids, ys, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(ft_test_dev.cache.labels[1], FT_UNLABELLED);
    CHECK_EQ_INT(ft_cache_labelled(&ft_test_dev.cache), 2);
    /* n = 0; then entries in order (a later one for the same id wins), ids not cached skipped */
    CHECK_EQ_INT(label(0, ids, ys, 0), FT_ST_OK);
    check_label_answer(0, 2);
    ids[0] = 1; ys[0] = 3; ids[1] = 3; ys[1] = 4; ids[2] = 99; ys[2] = 1; ids[3] = 0xFFFFFFFFu; ys[3] = 1;
    ids[4] = 5; ys[4] = 1; ids[5] = 1; ys[5] = 9;
    CHECK_EQ_INT(label(6, ids, ys, 0), FT_ST_OK);
    check_label_answer(3, 4);
    CHECK_EQ_INT(ft_test_dev.cache.labels[1], 9);
    CHECK_EQ_INT(ft_test_dev.cache.labels[3], 4);
    ids[0] = 0;
    CHECK_EQ_INT(label(1, ids, &none, 0), FT_ST_OK); /* a label taken back */
    check_label_answer(1, 3);
    /* the most entries one payload holds, none cached */
    for (i = 0; i < (FT_MAX_PAYLOAD - 2) / 6; i++) { ids[i] = 1000 + i; ys[i] = FT_UNLABELLED; }
    CHECK_EQ_INT(label((uint16_t)i, ids, ys, 0), FT_ST_OK);
    check_label_answer(0, 3);
    /* the ring: capacity more samples (ids 5 .. cap + 4) overwrite ids 0 .. 4; id cap + 4 is in slot 4 */
    CHECK(push_unlabelled(FT_CACHE_CAPACITY));
    ids[0] = 4; ids[1] = 5; ids[2] = FT_CACHE_CAPACITY + 4; ids[3] = FT_CACHE_CAPACITY + 5;
    ys[0] = ys[1] = ys[2] = ys[3] = 6;
    CHECK_EQ_INT(label(4, ids, ys, 0), FT_ST_OK);
    check_label_answer(2, 2);
    CHECK_EQ_INT(ft_test_dev.cache.labels[5], 6);
    CHECK_EQ_INT(ft_test_dev.cache.labels[4], 6);
    /* CLEAR: ids restart in slot 0 at pushed_total (cap + 5) */
    CHECK_EQ_INT(push(3, 1, &none, 1), FT_ST_OK);
    ids[0] = FT_CACHE_CAPACITY + 4; ids[1] = FT_CACHE_CAPACITY + 6;
    CHECK_EQ_INT(label(2, ids, ys, 0), FT_ST_OK);
    check_label_answer(1, 1);
    CHECK_EQ_INT(ft_test_dev.cache.labels[1], 6);
    /* RESET: ids restart at 0 with an empty cache */
    boot_blank();
    ids[0] = 0;
    CHECK_EQ_INT(label(1, ids, &seven, 0), FT_ST_OK);
    check_label_answer(0, 0);
}

/* TRAIN of 28, 32 or 40 bytes; pseudo fields at 32 and 36. */
static uint8_t train(size_t len, uint32_t flags, float margin, float weight)
{
    uint8_t p[48];
    memset(p, 0, sizeof p);
    ft_wr16(p, 2); ft_wr16(p + 2, 4); ft_wrf32(p + 4, 0.05f);
    ft_wr32(p + 20, 42); ft_wr32(p + 24, 1); ft_wr32(p + 28, flags | (FT_USE_FLOAT ? 0u : FT_TRAIN_FIXED));
    ft_wrf32(p + 32, margin); ft_wrf32(p + 36, weight);
    return call(FT_MSG_TRAIN, p, len);
}

static uint8_t ack_pending(void)
{
    uint8_t p[4];
    ft_wr32(p, ft_test_dev.pending_id);
    return call(FT_MSG_UPDATE_ACK, p, 4);
}

void test_train_pseudo_checks(void)
{
    static const uint16_t y3[3] = {1, FT_UNLABELLED, 2};
    const float inf = 1.0f / 0.0f;
    boot_blank();
    CHECK(push_unlabelled(10));
    /* lengths: 40 only with PSEUDO, 32 only without */
    CHECK_EQ_INT(train(40, 0, 0.0f, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(32, FT_TRAIN_PSEUDO, 0.0f, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(36, FT_TRAIN_PSEUDO, 0.0f, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(28 + 20, FT_TRAIN_PSEUDO, 0.0f, 1.0f), FT_ST_MALFORMED);
    /* no label anywhere: CACHE_EMPTY after every other check */
    CHECK_EQ_INT(train(32, 0, 0.0f, 1.0f), FT_ST_CACHE_EMPTY);
    CHECK(memcmp(resp, "no labelled sample", 18) == 0);
    /* 28 bytes: flags 0, float32 training, which a board without FLOAT_TRAIN refuses first */
    CHECK_EQ_INT(train(28, 0, 0.0f, 1.0f), FT_USE_FLOAT ? FT_ST_CACHE_EMPTY : FT_ST_UNSUPPORTED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, 1e30f, 1.0f), FT_ST_CACHE_EMPTY); /* nothing confident enough */
    CHECK_EQ_INT(train(32, 0x10u, 0.0f, 1.0f), FT_ST_UNSUPPORTED);            /* flags before it */
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO | 0x10u, 0.0f, 1.0f), FT_ST_UNSUPPORTED);
    /* pseudo fields: margin finite (any sign), weight in (0, 1] */
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, inf, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, -inf, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, inf - inf, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, 0.0f, 0.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, 0.0f, -0.5f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, 0.0f, 1.5f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, 0.0f, inf - inf), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO | 0x10u, inf, 1.0f), FT_ST_MALFORMED); /* fields before flags */
    CHECK_EQ_INT(ft_test_dev.has_pending, 0);
    /* every slot pseudo-labelled (a margin below any): trains on all 10 */
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, -1.0f, 0.5f), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp + 4), 10);
    /* pending: the length still first, then UPDATE_PENDING before the pseudo fields */
    CHECK_EQ_INT(train(40, 0, 0.0f, 1.0f), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(40, FT_TRAIN_PSEUDO, inf, 1.0f), FT_ST_UPDATE_PENDING);
    CHECK_EQ_INT(ack_pending(), FT_ST_OK);
    /* EVALUATE: none labelled answers n = 0, accuracy and loss 0; an empty cache stays CACHE_EMPTY */
    {
        uint8_t p[4] = {0, 0, 0, 0};
        CHECK_EQ_INT(call(FT_MSG_EVALUATE, p, 4), FT_ST_OK);
        CHECK_EQ_INT(ft_rd32(resp), 0);
        CHECK_EQ_INT(ft_rd32(resp + 4), 0);
        CHECK_EQ_INT(ft_rd32(resp + 8), 0);
        CHECK_EQ_INT(push(3, 1, y3, 3), FT_ST_OK);
        CHECK_EQ_INT(call(FT_MSG_EVALUATE, p, 4), FT_ST_OK);
        CHECK_EQ_INT(ft_rd32(resp), 2);
        p[0] = 2; /* the first two slots: one labelled */
        CHECK_EQ_INT(call(FT_MSG_EVALUATE, p, 4), FT_ST_OK);
        CHECK_EQ_INT(ft_rd32(resp), 1);
        /* labelled slots only: num_examples 2 without PSEUDO */
        CHECK_EQ_INT(train(32, 0, 0.0f, 1.0f), FT_ST_OK);
        CHECK_EQ_INT(ft_rd32(resp + 4), 2);
        CHECK_EQ_INT(ack_pending(), FT_ST_OK);
        boot_blank();
        p[0] = 0;
        CHECK_EQ_INT(call(FT_MSG_EVALUATE, p, 4), FT_ST_CACHE_EMPTY);
    }
    /* the work bound counts cached samples, labelled or not */
    CHECK_EQ_INT(push(3, 1, y3, 3), FT_ST_OK);
    CHECK(push_unlabelled(FT_CACHE_CAPACITY));
    {
        uint8_t p[32];
        memset(p, 0, sizeof p);
        ft_wr16(p, FT_MAX_TRAIN_WORK / FT_CACHE_CAPACITY + 1); ft_wr16(p + 2, 1); ft_wrf32(p + 4, 0.05f);
        ft_wr32(p + 28, FT_USE_FLOAT ? 0u : FT_TRAIN_FIXED);
        CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 32), FT_ST_MALFORMED);
    }
}
