/* The learning handlers of docs/protocol.md: GET_HEAD, SET_HEAD, PUSH_SAMPLES, TRAIN, READ_UPDATE, UPDATE_ACK,
 * EVALUATE, LABEL (the head in RAM, the feature cache and its labels, the pending update). */
#include "ft_learn.h"
#include "ft_dev_internal.h"
#include "ft_dev_util.h"
#include "ft_labels.h"
#include "ft_sha256.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#define UPD_HDR FT_UPDATE_BLOB_HDR_SIZE
#define BLOB_SIZE(C, D) (UPD_HDR + 4u * (uint32_t)(C) * (uint32_t)(D) + 4u * (uint32_t)(C) + FT_TAG_SIZE)

static ft_status read_head(ft_dev *d, uint32_t off, uint8_t *out, size_t n) { return ft_head_patch_read(&d->head, off, out, n); }

uint8_t ft_learn_get_head(ft_ctx *c, const uint8_t *p, size_t n)
{
    return ft_blob_page(c, p, n, ft_head_patch_size(&c->d->head), 0, read_head);
}

uint8_t ft_learn_set_head(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t total, off, dl;
    ft_status r;
    if (n < FT_SET_HEAD_HDR_SIZE) return ft_fail(c, FT_ST_MALFORMED, "SET_HEAD needs total and offset");
    total = ft_rd32(p);
    off = ft_rd32(p + 4);
    dl = (uint32_t)(n - 8);
    /* nothing but this board's C x D patch size can complete: refused before anything is staged */
    if (total != FT_HEAD_PATCH_SIZE(d->C, d->D) || total > sizeof d->staged)
        return ft_fail(c, FT_ST_SHAPE_MISMATCH, "SET_HEAD total is not this board's head patch size");
    if (dl > total || off > total - dl) return ft_fail(c, FT_ST_MALFORMED, "SET_HEAD data beyond total");
    if (off != 0 && off != d->staged_len) return ft_fail(c, FT_ST_BAD_OFFSET, "offset is not the staged length");
    if (off == 0) d->staged_len = 0;
    memcpy(d->staged + off, p + 8, dl);
    d->staged_len += dl;
    if (d->staged_len == total) {
        ft_head *tmp = &ftd_scratch_head;
        d->staged_len = 0;
        r = ft_head_decode_patch(tmp, d->staged, total, d->C, d->D);
        if (r == FT_ERR_UNSUPPORTED) return ft_fail(c, FT_ST_SHAPE_MISMATCH, "head patch shape differs from the model's");
        if (r != FT_OK) return ft_fail(c, FT_ST_MALFORMED, "invalid head patch");
        if (!ftd_head_fits(d, tmp)) return ft_fail(c, FT_ST_SHAPE_MISMATCH, "head input quantization differs from the board's features");
        d->head = *tmp;
    }
    ft_wr32(c->resp, d->staged_len);
    *c->len = 4;
    return FT_ST_OK;
}

/* Every one of cnt u16 labels at p is < C or FT_UNLABELLED (no label: docs/protocol.md PUSH_SAMPLES). */
static int labels_ok(const uint8_t *p, uint32_t cnt, uint16_t C)
{
    uint32_t i;
    for (i = 0; i < cnt; i++) {
        uint16_t y = ft_rd16(p + 2 * i);
        if (y >= C && y != FT_UNLABELLED) return 0;
    }
    return 1;
}

/* PUSH_SAMPLES flag CLEAR: an empty cache, sample ids numbered from pushed_total on ("Sample ids"). */
static void clear_if_asked(ft_dev *d, uint8_t flags)
{
    if (!(flags & FT_SAMPLES_CLEAR)) return;
    ft_cache_clear(&d->cache);
    d->id_base = d->pushed_total;
}

/* Sample / input kinds 3 and 4: the staged raw input (STAGE_INPUT). */
#define IS_STAGED(k) ((k) == FT_SAMPLE_STAGED_INT8 || (k) == FT_SAMPLE_STAGED_F32)

const uint8_t *ftd_staged_input(const ft_dev *d, uint32_t bytes)
{
#if FT_MAX_STAGED_INPUT > 0
    if (d->input_total == bytes && d->input_len == bytes && bytes > 0) return d->input;
#else
    (void)d;
    (void)bytes;
#endif
    return NULL;
}

/* Every one of cnt float32 values at x is finite. */
static int all_finite(const uint8_t *x, uint32_t cnt, uint32_t *bad)
{
    uint32_t j;
    for (j = 0; j < cnt; j++)
        if (!isfinite(ft_rdf32(x + 4u * j))) {
            *bad = j;
            return 0;
        }
    return 1;
}

/* PUSH_SAMPLES kinds 1 and 2 (length already checked), 3 and 4 (the staged input, n <= 1): each sample through the
 * backbone, its features cached. */
static uint8_t push_raw(ft_ctx *c, const uint8_t *p, uint32_t cnt, uint32_t dim)
{
#if FT_BACKBONE
    ft_dev *d = c->d;
    const ft_tfl_model *m;
    const uint8_t *data = p + 6 + 2 * cnt;
    uint8_t kind = p[0], run_kind = kind == FT_SAMPLE_STAGED_INT8 ? 1u : kind == FT_SAMPLE_STAGED_F32 ? 2u : kind;
    uint32_t esize = run_kind == 2 ? 4u : 1u, i, bad;
    if (IS_STAGED(kind) && FT_MAX_STAGED_INPUT == 0)
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board stages no raw input (FT_MAX_STAGED_INPUT 0)");
    m = ftd_backbone(d);
    if (!m) return ft_fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: push int8 features (kind 0)");
    if (dim != m->tensors[m->inputs[0]].count)
        return ft_fail(c, FT_ST_SHAPE_MISMATCH, "raw sample length differs from the model input (raw_input_len)");
    if (!labels_ok(p + 6, cnt, d->C)) return ft_fail(c, FT_ST_MALFORMED, "label >= classes (and not 0xFFFF, none)");
    if (IS_STAGED(kind) && cnt) {
        data = ftd_staged_input(d, dim * esize);
        if (!data) return ft_fail(c, FT_ST_BAD_STATE, "no staged input of this kind's size (STAGE_INPUT)");
    }
    if (esize == 4 && !all_finite(data, cnt * dim, &bad)) { /* refused whole (nothing cached), naming the first bad sample */
        char why[64];
        snprintf(why, sizeof why, "raw float32 sample %lu holds a NaN or an infinity", (unsigned long)(bad / dim));
        return ft_fail(c, FT_ST_MALFORMED, why);
    }
    clear_if_asked(d, p[1]);
    for (i = 0; i < cnt; i++) {
        const int8_t *feat;
        if (ftd_run_backbone(m, run_kind, data + i * dim * esize, &feat) != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "backbone");
        if (ft_cache_push(&d->cache, feat, ft_rd16(p + 6 + 2 * i)) != FT_OK)
            return ft_fail(c, FT_ST_INTERNAL, "cache push");
        d->pushed_total++; /* per sample: a cached sample always has its id, even if a later one fails */
    }
    ft_wr32(c->resp, d->cache.count);
    ft_wr32(c->resp + 4, d->pushed_total);
    *c->len = FT_PUSH_RESULT_SIZE;
    return FT_ST_OK;
#else
    (void)p;
    (void)cnt;
    (void)dim;
    if (IS_STAGED(p[0]) && FT_MAX_STAGED_INPUT == 0)
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board stages no raw input (FT_MAX_STAGED_INPUT 0)");
    return ft_fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: push int8 features (kind 0)");
#endif
}

uint8_t ft_learn_push_samples(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t cnt, dim, i;
    if (n < FT_SAMPLES_HDR_SIZE) return ft_fail(c, FT_ST_MALFORMED, "Samples header is 6 bytes");
    cnt = ft_rd16(p + 2);
    dim = ft_rd16(p + 4);
    /* kind 2 carries float32 samples (4 bytes each), kinds 3 and 4 none (the staged input), the others int8 */
    if (n != FT_SAMPLES_HDR_SIZE + 2u * cnt + cnt * dim * (p[0] == 2 ? 4u : IS_STAGED(p[0]) ? 0u : 1u))
        return ft_fail(c, FT_ST_MALFORMED, "Samples payload length");
    if (p[0] > FT_SAMPLE_STAGED_F32) return ft_fail(c, FT_ST_MALFORMED, "sample kind");
    if (IS_STAGED(p[0]) && cnt > 1) return ft_fail(c, FT_ST_MALFORMED, "the staged input is one sample (n <= 1)");
    /* raw samples (kind 1 int8, kind 2 float32, 3 and 4 staged) run through the running full image's backbone */
    if (p[0] != FT_SAMPLE_FEATURES) return push_raw(c, p, cnt, dim);
    if (dim != d->D) return ft_fail(c, FT_ST_SHAPE_MISMATCH, "feature length differs from the head input");
    if (!labels_ok(p + 6, cnt, d->C)) return ft_fail(c, FT_ST_MALFORMED, "label >= classes (and not 0xFFFF, none)");
    clear_if_asked(d, p[1]);
    for (i = 0; i < cnt; i++) {
        ft_status r = ft_cache_push(&d->cache, (const int8_t *)(p + 6 + 2 * cnt + i * dim), ft_rd16(p + 6 + 2 * i));
        if (r != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "cache push");
        d->pushed_total++;
    }
    ft_wr32(c->resp, d->cache.count);
    ft_wr32(c->resp + 4, d->pushed_total);
    *c->len = FT_PUSH_RESULT_SIZE;
    return FT_ST_OK;
}

/* INFER (docs/protocol.md "InferRequest"): one input through the running head (kind 0: int8 features) or the running
 * model (kind 1: int8 model input, kind 2: float32, quantized as PUSH_SAMPLES kind 2), answered with the head's int8
 * logits and the model's output (the ops after the head, ftd_run_tail). Changes nothing. */
uint8_t ft_learn_infer(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t dim, esize, want, out_bytes, bad;
    uint8_t kind, run_kind, type = FT_INFER_OUT_NONE, *o = c->resp;
    const int8_t *x = (const int8_t *)(p + FT_INFER_HDR_SIZE);
    const uint8_t *in = p + FT_INFER_HDR_SIZE;
#if FT_BACKBONE
    const ft_tfl_model *m;
#endif
    if (n < FT_INFER_HDR_SIZE) return ft_fail(c, FT_ST_MALFORMED, "InferRequest header is 4 bytes");
    kind = p[0];
    dim = ft_rd16(p + 2);
    run_kind = kind == FT_SAMPLE_STAGED_INT8 ? 1u : kind == FT_SAMPLE_STAGED_F32 ? 2u : kind;
    esize = run_kind == FT_SAMPLE_RAW_F32 ? 4u : 1u;
    if (n != FT_INFER_HDR_SIZE + dim * (IS_STAGED(kind) ? 0u : esize))
        return ft_fail(c, FT_ST_MALFORMED, "InferRequest payload length");
    if (kind > FT_SAMPLE_STAGED_F32) return ft_fail(c, FT_ST_MALFORMED, "input kind");
    if (IS_STAGED(kind) && FT_MAX_STAGED_INPUT == 0)
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board stages no raw input (FT_MAX_STAGED_INPUT 0)");
#if FT_BACKBONE
    m = ftd_backbone(d);
    if (kind != FT_SAMPLE_FEATURES && !m)
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: send int8 features (kind 0)");
    want = kind == FT_SAMPLE_FEATURES ? d->D : m->tensors[m->inputs[0]].count;
#else
    if (kind != FT_SAMPLE_FEATURES)
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: send int8 features (kind 0)");
    want = d->D;
#endif
    if (dim != want)
        return ft_fail(c, FT_ST_SHAPE_MISMATCH,
                       kind == FT_SAMPLE_FEATURES ? "feature length differs from the head input"
                                                  : "raw input length differs from the model input (raw_input_len)");
#if FT_BACKBONE
    if (m) {
        uint8_t st = ftd_run_tail(m, &d->head, NULL, NULL, &type);
        if (st != FT_ST_OK) return ft_fail(c, st, ftd_model_why());
    }
#endif
    out_bytes = type == FT_INFER_OUT_NONE ? 0u : type == FT_INFER_OUT_FLOAT32 ? 4u * d->C : d->C;
    if (FT_INFER_RESULT_HDR_SIZE + d->C + out_bytes > FT_MAX_PAYLOAD)
        return ft_fail(c, FT_ST_NO_SPACE, "the answer exceeds max_payload");
    if (IS_STAGED(kind)) {
        in = ftd_staged_input(d, dim * esize);
        if (!in) return ft_fail(c, FT_ST_BAD_STATE, "no staged input of this kind's size (STAGE_INPUT)");
    }
    if (run_kind == FT_SAMPLE_RAW_F32 && !all_finite(in, dim, &bad))
        return ft_fail(c, FT_ST_MALFORMED, "raw float32 input holds a NaN or an infinity");
#if FT_BACKBONE
    if (kind != FT_SAMPLE_FEATURES && ftd_run_backbone(m, run_kind, in, &x) != FT_OK)
        return ft_fail(c, FT_ST_INTERNAL, "backbone");
#endif
    ft_wr16(o, d->C);
    o[2] = type;
    o[3] = 0;
    ft_wr16(o + 4, (uint16_t)(type == FT_INFER_OUT_NONE ? 0u : d->C));
    if (ft_head_forward(&d->head, x, (int8_t *)(o + FT_INFER_RESULT_HDR_SIZE)) != FT_OK)
        return ft_fail(c, FT_ST_INTERNAL, "head");
#if FT_BACKBONE
    if (m && ftd_run_tail(m, &d->head, (const int8_t *)(o + FT_INFER_RESULT_HDR_SIZE),
                          o + FT_INFER_RESULT_HDR_SIZE + d->C, &type) != FT_ST_OK)
        return ft_fail(c, FT_ST_INTERNAL, "tail");
#endif
    *c->len = FT_INFER_RESULT_HDR_SIZE + d->C + out_bytes;
    return FT_ST_OK;
}

/* UpdateBlob bytes, generated on the fly from the trained float head. */
static ft_status read_blob(ft_dev *d, uint32_t off, uint8_t *out, size_t n)
{
    uint32_t C = d->upd.C, D = d->upd.D, CD = C * D, total = BLOB_SIZE(C, D);
    uint8_t tmp[UPD_HDR];
    size_t k;
    if (off > total || n > total - off) return FT_ERR_RANGE;
    memcpy(tmp, "FTUP", 4);
    tmp[4] = 1;
    tmp[5] = 0;
    ft_wr16(tmp + 6, (uint16_t)C);
    ft_wr16(tmp + 8, (uint16_t)D);
    ft_wr16(tmp + 10, 0);
    ft_wr32(tmp + 12, d->device_id);
    ft_wr32(tmp + 16, d->pending_id);
    ft_wr32(tmp + 20, d->upd_round);
    ft_wr32(tmp + 24, d->upd_n);
    ft_wrf32(tmp + 28, d->upd_loss);
    for (k = 0; k < n; k++) {
        uint32_t i = off + (uint32_t)k;
        uint8_t f[4];
        if (i < UPD_HDR) {
            out[k] = tmp[i];
        } else if (i < UPD_HDR + 4 * CD) {
            ft_wrf32(f, d->upd.weights[(i - UPD_HDR) / 4]);
            out[k] = f[(i - UPD_HDR) % 4];
        } else if (i < UPD_HDR + 4 * CD + 4 * C) {
            ft_wrf32(f, d->upd.bias[(i - UPD_HDR - 4 * CD) / 4]);
            out[k] = f[(i - UPD_HDR - 4 * CD) % 4];
        } else {
            out[k] = d->upd_tag[i - UPD_HDR - 4 * CD - 4 * C];
        }
    }
    return FT_OK;
}

/* TrainRequest length: 28 (flags 0), 32 without flag PSEUDO, 40 with it; *flags read. 0: MALFORMED. */
static int train_length_ok(const uint8_t *p, size_t n, uint32_t *flags)
{
    *flags = 0;
    if (n == FT_TRAIN_REQUEST_LEGACY_SIZE) return 1;
    if (n != FT_TRAIN_REQUEST_SIZE && n != FT_TRAIN_REQUEST_PSEUDO_SIZE) return 0;
    *flags = ft_rd32(p + FT_TRAIN_REQUEST_LEGACY_SIZE);
    return (n == FT_TRAIN_REQUEST_PSEUDO_SIZE) == ((*flags & FT_TRAIN_PSEUDO) != 0);
}

/* The training set of this TRAIN into d->work.set (docs/ondevice.md 5a); its size. */
static uint32_t train_set(ft_dev *d, const uint8_t *p, uint32_t flags)
{
    int pseudo = (flags & FT_TRAIN_PSEUDO) != 0;
    float margin = pseudo ? ft_rdf32(p + FT_TRAIN_REQUEST_SIZE) : 0.0f;
    float weight = pseudo ? ft_rdf32(p + FT_TRAIN_REQUEST_SIZE + 4) : 1.0f;
    return ft_train_set_build(&d->work.set, &d->cache, &d->head, pseudo, margin, weight);
}

uint8_t ft_learn_train(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    ft_train_cfg cfg;
    float loss = 0.0f;
    uint32_t steps = 0, body, off;
    const uint8_t *ukey;
    ft_status r;
    uint32_t flags;
    if (!train_length_ok(p, n, &flags))
        return ft_fail(c, FT_ST_MALFORMED, "TrainRequest is 32 bytes (28 without flags), 40 with flag PSEUDO and only then");
    if (d->has_pending) return ft_fail(c, FT_ST_UPDATE_PENDING, "update not acknowledged");
    if (d->cache.count == 0) return ft_fail(c, FT_ST_CACHE_EMPTY, "no cached samples");
    cfg.epochs = ft_rd16(p);
    cfg.batch_size = ft_rd16(p + 2);
    cfg.lr = ft_rdf32(p + 4);
    cfg.momentum = ft_rdf32(p + 8);
    cfg.weight_decay = ft_rdf32(p + 12);
    cfg.prox_mu = ft_rdf32(p + 16);
    cfg.seed = ft_rd32(p + 20);
    cfg.round = ft_rd32(p + 24);
    cfg.device_id = d->device_id;
    if (cfg.epochs < 1 || cfg.epochs > FT_MAX_EPOCHS || cfg.batch_size < 1)
        return ft_fail(c, FT_ST_MALFORMED, "epochs must be 1..1000 and batch_size >= 1");
    if ((uint32_t)cfg.epochs * d->cache.count > FT_MAX_TRAIN_WORK)
        return ft_fail(c, FT_ST_MALFORMED, "epochs x cached samples above the work bound of one TRAIN");
    if (!isfinite(cfg.lr) || !isfinite(cfg.momentum) || !isfinite(cfg.weight_decay) || !isfinite(cfg.prox_mu))
        return ft_fail(c, FT_ST_MALFORMED, "lr, momentum, weight_decay and prox_mu must be finite");
    if (!(cfg.lr > 0.0f && cfg.lr <= FT_TRAIN_MAX_LR && cfg.momentum >= 0.0f && cfg.momentum < 1.0f &&
          cfg.weight_decay >= 0.0f && cfg.weight_decay <= FT_TRAIN_MAX_DECAY && cfg.prox_mu >= 0.0f &&
          cfg.prox_mu <= FT_TRAIN_MAX_DECAY))
        return ft_fail(c, FT_ST_MALFORMED, "lr must be in (0, 100], momentum in [0, 1), weight_decay and prox_mu in [0, 100]");
    if ((flags & FT_TRAIN_PSEUDO) && (!isfinite(ft_rdf32(p + FT_TRAIN_REQUEST_SIZE)) ||
                                      !(ft_rdf32(p + FT_TRAIN_REQUEST_SIZE + 4) > 0.0f &&
                                        ft_rdf32(p + FT_TRAIN_REQUEST_SIZE + 4) <= 1.0f)))
        return ft_fail(c, FT_ST_MALFORMED, "pseudo_margin must be finite and pseudo_weight in (0, 1]");
    if (flags & ~(FT_TRAIN_FIXED | FT_TRAIN_PSEUDO)) return ft_fail(c, FT_ST_UNSUPPORTED, "TRAIN flags: unknown bits");
    if (flags & FT_TRAIN_FIXED) {
        if (cfg.momentum != 0.0f || cfg.weight_decay != 0.0f || cfg.prox_mu != 0.0f)
            return ft_fail(c, FT_ST_UNSUPPORTED, "fixed-point training is plain SGD: momentum, weight_decay and prox_mu must be 0");
    } else if (!FT_USE_FLOAT) {
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board trains fixed-point only (CAP_FIXED_TRAIN): set TRAIN flag FIXED");
    }
    if (train_set(d, p, flags) == 0)
        return ft_fail(c, FT_ST_CACHE_EMPTY, "no labelled sample (none cached has a label, none pseudo-labelled)");
    if (ft_head_dequantize(&d->head, &d->upd) != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "dequantize");
#if FT_USE_FLOAT
    if (!(flags & FT_TRAIN_FIXED))
        r = ft_train_on(&d->upd, &d->cache, &d->work.set, d->head.input_scale, d->head.input_zero_point, &cfg,
                        &d->work, &loss, &steps);
    else
#endif
        r = ft_train_fixed_on(&d->upd, &d->cache, &d->work.set, d->head.input_scale, d->head.input_zero_point, &cfg,
                              &d->work, &loss, &steps);
    if (r != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "train");
    {
        uint32_t i, cd = (uint32_t)d->upd.C * d->upd.D;
        int ok = isfinite(loss);
        for (i = 0; i < cd && ok; i++) ok = isfinite(d->upd.weights[i]);
        for (i = 0; i < d->upd.C && ok; i++) ok = isfinite(d->upd.bias[i]);
        if (!ok) return ft_fail(c, FT_ST_MALFORMED, "training diverged (non-finite weights or loss): lower lr / weight_decay / prox_mu");
    }
    if (d->update_counter >= d->uid_limit) { /* reserve the next block of ids in flash before issuing one */
        if (d->uid_limit > 0xFFFFFFFFu - FT_UPDATE_ID_BLOCK) return ft_fail(c, FT_ST_INTERNAL, "update ids exhausted");
        d->store.m.uid_reserved = d->uid_limit + FT_UPDATE_ID_BLOCK;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
        d->uid_limit = d->store.m.uid_reserved;
    }
    d->update_counter++;
    d->pending_id = d->update_counter;
    d->upd_round = cfg.round;
    d->upd_n = d->work.set.n;
    d->upd_loss = loss;
    d->has_pending = 1;
    /* tag = HMAC(key, body); a board without a key sends a zero tag */
    memset(d->upd_tag, 0, 32);
    /* the board's own update key if provisioned (DEVICE_KEY), else the fleet key (docs/protocol.md section 7) */
    ukey = ft_keys_update_key() ? ft_keys_update_key() : d->has_key ? d->key : NULL;
    if (ukey) {
        ft_hmac_ctx h;
        uint8_t buf[64], tag[32];
        body = BLOB_SIZE(d->upd.C, d->upd.D) - 32u;
        ft_hmac_init(&h, ukey, FT_HMAC_KEY_LEN);
        for (off = 0; off < body; off += (uint32_t)sizeof buf) {
            uint32_t k = body - off < sizeof buf ? body - off : (uint32_t)sizeof buf;
            if (read_blob(d, off, buf, k) != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "blob");
            ft_hmac_update(&h, buf, k);
        }
        ft_hmac_final(&h, tag);
        memcpy(d->upd_tag, tag, 32);
    }
    ft_wr32(c->resp, d->pending_id);
    ft_wr32(c->resp + 4, d->upd_n);
    ft_wrf32(c->resp + 8, loss);
    *c->len = FT_TRAIN_RESULT_SIZE;
    return FT_ST_OK;
}

uint8_t ft_learn_read_update(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    if (!d->has_pending) {
        if (n != FT_BLOB_READ_SIZE) return ft_fail(c, FT_ST_MALFORMED, "BlobRead is 6 bytes");
        return ft_fail(c, FT_ST_NO_UPDATE, "no pending update");
    }
    ft_wr32(c->resp, d->pending_id);
    return ft_blob_page(c, p, n, BLOB_SIZE(d->upd.C, d->upd.D), 4, read_blob);
}

uint8_t ft_learn_update_ack(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t uid;
    if (n != 4) return ft_fail(c, FT_ST_MALFORMED, "UPDATE_ACK is 4 bytes");
    uid = ft_rd32(p);
    *c->len = 0;
    if (d->has_pending && d->pending_id == uid) {
        d->has_pending = 0;
        d->acked_id = uid;
        return FT_ST_OK;
    }
    if (uid == d->acked_id && uid != 0) return FT_ST_OK;
    return ft_fail(c, FT_ST_NO_UPDATE, "update is not pending");
}

uint8_t ft_learn_evaluate(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t max_n, cnt, i, correct = 0, used = 0;
    double loss_sum = 0.0;
    int8_t q[FT_MAX_CLASSES];
    float logits[FT_MAX_CLASSES], prob[FT_MAX_CLASSES];
    if (n != 4) return ft_fail(c, FT_ST_MALFORMED, "EVALUATE is 4 bytes");
    max_n = ft_rd32(p);
    cnt = d->cache.count;
    if (max_n && max_n < cnt) cnt = max_n;
    if (cnt == 0) return ft_fail(c, FT_ST_CACHE_EMPTY, "no cached samples");
    for (i = 0; i < cnt; i++) {
        uint16_t k, best = 0, y = d->cache.labels[i];
        if (y == FT_UNLABELLED) continue; /* only labelled slots are evaluated */
        used++;
        if (ft_head_forward(&d->head, ft_cache_row(&d->cache, i), q) != FT_OK) return ft_fail(c, FT_ST_INTERNAL, "forward");
        for (k = 0; k < d->head.C; k++) {
            if (q[k] > q[best]) best = k;
            logits[k] = ((float)q[k] - (float)d->head.output_zero_point) * d->head.output_scale;
        }
        correct += best == y;
        loss_sum += (double)ft_softmax_xent(logits, d->head.C, y, prob);
    }
    ft_wr32(c->resp, used); /* none labelled: n = 0, accuracy and loss 0 */
    ft_wrf32(c->resp + 4, used ? (float)((double)correct / used) : 0.0f);
    ft_wrf32(c->resp + 8, used ? (float)(loss_sum / used) : 0.0f);
    *c->len = FT_EVAL_RESULT_SIZE;
    return FT_ST_OK;
}

/* LABEL (docs/protocol.md LabelRequest): checked whole (length, labels) before any entry is applied; entries in
 * order, an id no longer (or never) cached skipped. Answers applied, labelled. */
uint8_t ft_learn_label(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t cnt, i, slot, applied = 0;
    if (n < 2) return ft_fail(c, FT_ST_MALFORMED, "LabelRequest needs its u16 count");
    cnt = ft_rd16(p);
    if (n != 2u + (size_t)FT_LABEL_ENTRY_SIZE * cnt) return ft_fail(c, FT_ST_MALFORMED, "LabelRequest is 2 + 6n bytes");
    for (i = 0; i < cnt; i++) {
        uint16_t y = ft_rd16(p + 2 + FT_LABEL_ENTRY_SIZE * i + 4);
        if (y >= d->C && y != FT_UNLABELLED) return ft_fail(c, FT_ST_MALFORMED, "label >= classes (and not 0xFFFF, none)");
    }
    for (i = 0; i < cnt; i++) {
        const uint8_t *e = p + 2 + FT_LABEL_ENTRY_SIZE * i;
        if (!ft_cache_slot_of(&d->cache, d->id_base, d->pushed_total, ft_rd32(e), &slot)) continue;
        d->cache.labels[slot] = ft_rd16(e + 4);
        applied++;
    }
    ft_wr32(c->resp, applied);
    ft_wr32(c->resp + 4, ft_cache_labelled(&d->cache));
    *c->len = FT_LABEL_RESULT_SIZE;
    return FT_ST_OK;
}

/* STAGE_INPUT (docs/protocol.md "STAGE_INPUT"): u32 total, u32 offset, data. Checks in order: length (MALFORMED), a
 * staging buffer (UNSUPPORTED), 1 <= total <= FT_MAX_STAGED_INPUT (NO_SPACE), offset + len <= total (MALFORMED), offset
 * 0 or the staged length for this total (BAD_OFFSET, reason "staged N"). Offset 0 restarts the staging with this
 * total; the answer is the staged length. A complete input stays staged (for any number of uses) until the next
 * offset-0 piece or a reset. */
uint8_t ft_learn_stage_input(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t total, off, dl, have;
    if (n < FT_STAGE_INPUT_HDR_SIZE) return ft_fail(c, FT_ST_MALFORMED, "STAGE_INPUT needs total and offset");
    total = ft_rd32(p);
    off = ft_rd32(p + 4);
    dl = (uint32_t)(n - FT_STAGE_INPUT_HDR_SIZE);
#if FT_MAX_STAGED_INPUT == 0
    (void)d;
    (void)total;
    (void)off;
    (void)dl;
    (void)have;
    return ft_fail(c, FT_ST_UNSUPPORTED, "this board stages no raw input (FT_MAX_STAGED_INPUT 0)");
#else
    if (total == 0 || total > FT_MAX_STAGED_INPUT) {
        char why[80];
        snprintf(why, sizeof why, "staged input of %lu bytes: this board stages 1 to %lu", (unsigned long)total,
                 (unsigned long)FT_MAX_STAGED_INPUT);
        return ft_fail(c, FT_ST_NO_SPACE, why);
    }
    if (dl > total || off > total - dl) return ft_fail(c, FT_ST_MALFORMED, "STAGE_INPUT data beyond total");
    have = total == d->input_total ? d->input_len : 0u; /* the staged length for this total */
    if (off != 0 && off != have) {
        char why[32];
        snprintf(why, sizeof why, "staged %lu", (unsigned long)have);
        return ft_fail(c, FT_ST_BAD_OFFSET, why);
    }
    if (off == 0) {
        d->input_total = total;
        d->input_len = 0;
    }
    memcpy(d->input + off, p + FT_STAGE_INPUT_HDR_SIZE, dl);
    d->input_len = off + dl;
    ft_wr32(c->resp, d->input_len);
    *c->len = 4;
    return FT_ST_OK;
#endif
}
