#include "ft_dev.h"
#include "ft_proto.h"
#include "ft_sha256.h"
#include "ft_crc32.h"
#include "ft_tfl_interp.h"
#include "port.h"
#include <math.h>
#include <stdio.h>
#include <string.h>


/* The firmware's own names for wire values (ft_store.h, fedtiny_config.h) must agree with the generated ft_proto.h:
 * a compile error here means one of them changed. */
typedef char ft_wire_values_agree[((int)FT_SLOT_EMPTY == (int)FT_WIRE_SLOT_EMPTY && (int)FT_SLOT_RECEIVING == (int)FT_WIRE_SLOT_RECEIVING &&
                                   (int)FT_SLOT_VERIFIED == (int)FT_WIRE_SLOT_VERIFIED && (int)FT_SLOT_TESTING == (int)FT_WIRE_SLOT_TESTING &&
                                   (int)FT_SLOT_CONFIRMED == (int)FT_WIRE_SLOT_CONFIRMED &&
                                   (int)FT_KIND_HEAD_PATCH == (int)FT_WIRE_KIND_HEAD_PATCH && (int)FT_KIND_TFLITE == (int)FT_WIRE_KIND_TFLITE &&
                                   FT_NO_SLOT == FT_WIRE_NO_SLOT && FT_MAX_EPOCHS <= FT_TRAIN_MAX_EPOCHS &&
                                   FT_MAX_TRAIN_WORK <= FT_TRAIN_MAX_WORK && FT_MAX_PAYLOAD <= FT_WIRE_MAX_PAYLOAD &&
                                   FT_MAX_PAYLOAD >= FT_WIRE_MIN_MAX_PAYLOAD && FT_HMAC_KEY_LEN == FT_TAG_SIZE)
                                      ? 1
                                      : -1];

#define UPD_HDR FT_UPDATE_BLOB_HDR_SIZE
#define BLOB_SIZE(C, D) (UPD_HDR + 4u * (uint32_t)(C) * (uint32_t)(D) + 4u * (uint32_t)(C) + 32u)

static ft_head scratch_head; /* a head being validated before it replaces the running one */
static uint8_t imgbuf[FT_HEAD_PATCH_MAX]; /* a slot's image read from flash (SET_HEAD staging is kept apart) */

typedef struct {
    ft_dev *d;
    uint8_t *resp;
    size_t cap;
    size_t *len;
} ctx;

static uint8_t fail(ctx *c, uint8_t status, const char *reason)
{
    size_t n = strlen(reason);
    if (n > FT_REASON_MAX) n = FT_REASON_MAX;
    if (n > c->cap) n = c->cap;
    memcpy(c->resp, reason, n);
    *c->len = n;
    return status;
}

static uint8_t failf_flash(ctx *c, ft_status s)
{
    char buf[48];
    snprintf(buf, sizeof buf, "flash: %s", ft_status_str(s));
    return fail(c, FT_ST_FLASH_ERROR, buf);
}

/* ------------------------------------------------------------------------------------------ backbone */
#if FT_BACKBONE
/* A full .tflite image (UPLOAD kind 2) runs in the int8 interpreter (ft_tfl_*), read in place from its flash
 * slot: g_model is the verified model of g_model_slot (the image whose SHA-256 was g_model_sha when it was
 * verified). One model struct serves the running slot and VERIFY/ACTIVATE of another: backbone() re-verifies
 * the running slot whenever g_model holds another image. */
static ft_tfl_model g_model;
static uint8_t g_arena[FT_TFL_ARENA_SIZE];
static uint8_t g_model_slot = FT_NO_SLOT;
static uint8_t g_model_sha[32];
static uint16_t g_head_op;    /* the head FULLY_CONNECTED: the backbone is ops [0, g_head_op) */
static int16_t g_feat;        /* the head's input tensor: the features */
static char g_why[160];       /* why the last load_model refused its image */

/* tflite BuiltinOperator codes the head search needs */
enum { OPC_DEQUANTIZE = 6, OPC_FULLY_CONNECTED = 9, OPC_RESHAPE = 22, OPC_SOFTMAX = 25, OPC_QUANTIZE = 114 };

static void set_why(const char *a, const char *b)
{
    snprintf(g_why, sizeof g_why, "%s%s", a, b);
}

/* The head of a verified model, as fedtiny.model.flatbuffer.read_head: the last FULLY_CONNECTED on the path to
 * output 0, through SOFTMAX / RESHAPE / QUANTIZE / DEQUANTIZE after it. Int8 weights [C][D] (zero point 0),
 * int32 bias, no fused activation; C x D must be the board's. out may be NULL (only the op and features). */
static uint8_t model_head(const ft_dev *d, const ft_tfl_model *m, ft_head *out, uint16_t *op_index, int16_t *feat)
{
    int16_t t = m->outputs[0];
    uint16_t steps, i, C, D, c;
    const ft_tfl_op *op = NULL;
    const ft_tfl_tensor *x, *w, *b, *y;
    char name[24], buf[96];
    for (steps = 0; steps <= m->n_ops && !op; steps++) {
        const ft_tfl_op *p = NULL;
        for (i = m->n_ops; i > 0 && !p; i--)
            if (m->ops[i - 1].out == t) p = &m->ops[i - 1];
        if (!p) {
            set_why("no FULLY_CONNECTED op on the path to the model output: cannot find the head", "");
            return FT_ST_SHAPE_MISMATCH;
        }
        if (p->code == OPC_FULLY_CONNECTED) {
            op = p;
            *op_index = (uint16_t)(p - m->ops);
        } else if (p->code == OPC_SOFTMAX || p->code == OPC_RESHAPE || p->code == OPC_QUANTIZE ||
                   p->code == OPC_DEQUANTIZE) {
            t = p->in[0];
        } else {
            snprintf(buf, sizeof buf, "the model output comes from %s, not from a FULLY_CONNECTED head",
                     ft_tfl_op_name(p->code, name, sizeof name));
            set_why(buf, "");
            return FT_ST_SHAPE_MISMATCH;
        }
    }
    if (!op) {
        set_why("no FULLY_CONNECTED op on the path to the model output: cannot find the head", "");
        return FT_ST_SHAPE_MISMATCH;
    }
    x = &m->tensors[op->in[0]];
    w = &m->tensors[op->in[1]];
    if (op->in[2] < 0) {
        set_why("the head FULLY_CONNECTED has no bias tensor; fedtiny needs an int32 bias to train", "");
        return FT_ST_SHAPE_MISMATCH;
    }
    b = &m->tensors[op->in[2]];
    y = &m->tensors[op->out];
    if (w->type != FT_TFL_INT8 || !w->is_const || w->rank != 2 || x->type != FT_TFL_INT8 || y->type != FT_TFL_INT8 ||
        b->type != FT_TFL_INT32 || !b->is_const || op->p.fc.filter_zp != 0) {
        set_why("the head must be an int8 FULLY_CONNECTED with symmetric int8 weights and an int32 bias", "");
        return FT_ST_SHAPE_MISMATCH;
    }
    if (op->p.fc.act_min != -128 || op->p.fc.act_max != 127) {
        set_why("the head FULLY_CONNECTED has a fused activation (e.g. RELU); fedtiny trains a linear head", "");
        return FT_ST_SHAPE_MISMATCH;
    }
    C = (uint16_t)w->dims[0];
    D = (uint16_t)w->dims[1];
    if ((int32_t)C != w->dims[0] || (int32_t)D != w->dims[1] || C != d->C || D != d->D || x->count != D ||
        b->count != C) {
        snprintf(buf, sizeof buf, "model head is %ldx%ld (input of %lu), the board's is %ux%u", (long)w->dims[0],
                 (long)w->dims[1], (unsigned long)x->count, (unsigned)d->C, (unsigned)d->D);
        set_why(buf, "");
        return FT_ST_SHAPE_MISMATCH;
    }
    *feat = op->in[0];
    if (!out) return FT_ST_OK;
    memset(out, 0, sizeof *out);
    out->C = C;
    out->D = D;
    out->input_scale = x->scale;
    out->input_zero_point = x->zp;
    out->output_scale = y->scale;
    out->output_zero_point = y->zp;
    for (c = 0; c < C; c++) {
        out->weight_scales[c] = ft_rdf32(w->scales + 4u * (w->n_scales == 1 ? 0u : c));
        out->bias[c] = (int32_t)ft_rd32(b->data + 4u * c);
    }
    memcpy(out->weights, w->data, (size_t)C * D);
    if (x->zp < -128 || x->zp > 127 || y->zp < -128 || y->zp > 127 || ft_head_prepare(out) != FT_OK) {
        out->C = out->D = 0;
        set_why("the head's quantization is out of range", "");
        return FT_ST_SHAPE_MISMATCH;
    }
    return FT_ST_OK;
}

/* Verify the full image in `slot` in place (SHA-256 of the flash bytes, then ft_tfl_verify) into g_model and take
 * its head (into out, may be NULL). A protocol status; on failure g_why says why. */
static uint8_t load_model(ft_dev *d, uint8_t slot, ft_head *out)
{
    const ft_slot_meta *s = &d->store.m.slots[slot];
    const uint8_t *img;
    const ft_tfl_tensor *in;
    uint8_t sha[32], st;
    ft_status r;
    g_model_slot = FT_NO_SLOT; /* g_model is overwritten below */
    if (s->total_len == 0 || s->total_len > FT_SLOT_SIZE || s->received != s->total_len) {
        set_why("image not completely received", "");
        return FT_ST_BAD_STATE;
    }
    img = ft_port_flash_map(FT_SLOT_BASE(slot), s->total_len);
    if (!img) {
        set_why("this port cannot read a model in place from flash", "");
        return FT_ST_UNSUPPORTED;
    }
    ft_sha256(img, s->total_len, sha);
    if (!ft_ct_equal(sha, s->sha256, 32)) {
        set_why("sha256 of the image in flash differs from the declared one", "");
        return FT_ST_HASH_MISMATCH;
    }
    r = ft_tfl_verify(&g_model, img, s->total_len, (uint32_t)sizeof g_arena);
    if (r != FT_OK) {
        set_why("model: ", g_model.reason);
        return r == FT_ERR_UNSUPPORTED ? FT_ST_UNSUPPORTED : r == FT_ERR_RANGE ? FT_ST_NO_SPACE : FT_ST_MALFORMED;
    }
    in = &g_model.tensors[g_model.inputs[0]];
    if (g_model.n_inputs != 1 || (in->type != FT_TFL_INT8 && in->type != FT_TFL_FLOAT32) || in->count > 0xFFFFu) {
        set_why("model: the board feeds one int8 or float32 input of at most 65535 elements", "");
        return FT_ST_UNSUPPORTED;
    }
    st = model_head(d, &g_model, out, &g_head_op, &g_feat);
    if (st != FT_ST_OK) return st;
    g_model_slot = slot;
    memcpy(g_model_sha, s->sha256, 32);
    {
        char buf[80];
        snprintf(buf, sizeof buf, "model in slot %u: %u ops, arena %lu bytes", (unsigned)slot, (unsigned)g_model.n_ops,
                 (unsigned long)g_model.arena_bytes);
        ft_port_log(buf);
    }
    return FT_ST_OK;
}

/* The running model's backbone (a full image runs), or NULL (a head patch or the factory head runs: the C
 * firmware has no built-in model). Re-verifies the running slot when g_model holds another image. */
static const ft_tfl_model *backbone(ft_dev *d)
{
    const ft_slot_meta *s;
    if (d->active == FT_NO_SLOT) return NULL;
    s = &d->store.m.slots[d->active];
    if (s->kind != FT_KIND_TFLITE) return NULL;
    if (g_model_slot == d->active && memcmp(g_model_sha, s->sha256, 32) == 0) return &g_model;
    return load_model(d, d->active, NULL) == FT_ST_OK ? &g_model : NULL;
}

/* One raw sample (kind 1: int8 model inputs, kind 2: float32, little-endian) through the backbone; *feat = the
 * head's D int8 inputs in the arena. An int8-input model takes kind 2 quantized as fedtiny.ondevice.quantize
 * (float32 x / scale, round half away, + zero point, clamp); a float-input model (QUANTIZE first) takes kind 2 as
 * is and kind 1 dequantized with its QUANTIZE output's scale / zero point, as fedtiny.model.runtime does. */
static ft_status run_backbone(const ft_tfl_model *m, uint8_t kind, const uint8_t *sample, const int8_t **feat)
{
    const ft_tfl_tensor *in;
    uint32_t bytes, j;
    uint8_t *x = ft_tfl_input(m, 0, g_arena, &bytes, &in);
    if (!x) return FT_ERR_STATE;
    if (in->type == FT_TFL_INT8) {
        if (kind == 1) {
            memcpy(x, sample, in->count);
        } else {
            for (j = 0; j < in->count; j++) {
                double q = ft_round_half_away((double)(ft_rdf32(sample + 4u * j) / in->scale)) + (double)in->zp;
                x[j] = (uint8_t)(int8_t)(q != q ? 0 : q < -128.0 ? -128 : q > 127.0 ? 127 : (int)q);
            }
        }
    } else { /* float32 input: the model's own QUANTIZE (verify made sure only QUANTIZE takes a float32 tensor) */
        const ft_tfl_tensor *q = NULL;
        uint16_t i;
        for (i = 0; i < m->n_ops && !q; i++)
            if (m->ops[i].in[0] == m->inputs[0]) q = &m->tensors[m->ops[i].out];
        if (!q) return FT_ERR_STATE;
        for (j = 0; j < in->count; j++) {
            float v = kind == 2 ? ft_rdf32(sample + 4u * j)
                                : ((float)(int8_t)sample[j] - (float)q->zp) * q->scale;
            memcpy(x + 4u * j, &v, 4);
        }
    }
    FT_TRY(ft_tfl_invoke_until(m, g_arena, (uint32_t)sizeof g_arena, g_head_op, NULL, NULL));
    *feat = (const int8_t *)ft_tfl_tensor_data(m, (unsigned)g_feat, g_arena);
    return *feat ? FT_OK : FT_ERR_STATE;
}
#endif

static int full_image_ok(void)
{
#if FT_BACKBONE
    return ft_port_flash_map(FT_SLOT_BASE(0), (size_t)FT_N_SLOTS * FT_SLOT_SIZE) != NULL;
#else
    return 0;
#endif
}

/* Kind of the image running now (the factory head is a head patch). */
static uint8_t running_kind(const ft_dev *d)
{
    return d->active == FT_NO_SLOT ? (uint8_t)FT_KIND_HEAD_PATCH : d->store.m.slots[d->active].kind;
}

/* Switching to or from a full image is a reboot into another model: the feature cache (features of another
 * backbone), a pending update and SET_HEAD staging are lost (docs/protocol.md section 5). */
static void clear_ram(ft_dev *d)
{
    ft_cache_clear(&d->cache);
    d->has_pending = 0;
    d->staged_len = 0;
}

/* ---------------------------------------------------------------------------------------------- heads */
/* Load and check (SHA-256 from flash, HeadPatch validity, shape) the head in a slot. */
static ft_status load_slot_head(ft_dev *d, uint8_t slot, ft_head *out, uint8_t *status)
{
    const ft_slot_meta *s = &d->store.m.slots[slot];
    uint8_t sha[32];
    ft_status r;
    *status = FT_ST_MALFORMED;
#if FT_BACKBONE
    if (s->kind == FT_KIND_TFLITE) { /* a full image: verified in place, its head taken from the model */
        *status = load_model(d, slot, out);
        return *status == FT_ST_OK ? FT_OK : FT_ERR_FORMAT;
    }
#endif
    if (s->kind != FT_KIND_HEAD_PATCH) {
        *status = FT_ST_UNSUPPORTED;
        return FT_ERR_UNSUPPORTED;
    }
    if (s->total_len > sizeof imgbuf || s->received != s->total_len) return FT_ERR_RANGE;
    r = ft_store_read(&d->store, slot, 0, imgbuf, s->total_len);
    if (r != FT_OK) {
        *status = FT_ST_FLASH_ERROR;
        return r;
    }
    ft_sha256(imgbuf, s->total_len, sha);
    if (!ft_ct_equal(sha, s->sha256, 32)) {
        *status = FT_ST_HASH_MISMATCH;
        return FT_ERR_AUTH;
    }
    r = ft_head_decode_patch(out, imgbuf, s->total_len, d->C, d->D);
    if (r == FT_ERR_UNSUPPORTED) *status = FT_ST_SHAPE_MISMATCH;
    return r;
}

/* A head patch must read the features the way this firmware quantizes them (SHAPE_MISMATCH otherwise). */
static int head_fits(const ft_dev *d, const ft_head *h)
{
    return h->input_scale == d->feat_scale && h->input_zero_point == d->feat_zp;
}

/* A slot whose image failed (hash, validation): RECEIVING with received = 0 (a re-upload rewrites it). */
static void mark_bad(ft_dev *d, uint8_t slot)
{
    d->store.m.slots[slot].state = FT_SLOT_RECEIVING;
    d->store.m.slots[slot].received = 0;
}

static ft_status image_tag(const ft_dev *d, uint8_t kind, uint32_t total, const uint8_t *sha, uint32_t counter,
                           uint8_t out[32])
{
    uint8_t msg[6 + 1 + 4 + 32 + 4];
    memcpy(msg, "FTIMG2", 6);
    msg[6] = kind;
    ft_wr32(msg + 7, total);
    memcpy(msg + 11, sha, 32);
    ft_wr32(msg + 43, counter);
    ft_hmac_sha256(d->key, sizeof d->key, msg, sizeof msg, out);
    return FT_OK;
}

/* NULL if the image tag (over kind, length, hash and security counter) is valid, else the reason. */
static const char *check_tag(const ft_dev *d, uint8_t kind, uint32_t total, const uint8_t *sha, uint32_t counter,
                             const uint8_t *tag)
{
    static const uint8_t zero[32];
    uint8_t want[32];
    if (!d->has_key) return "no fleet key provisioned";
    if (ft_ct_equal(tag, zero, 32)) return "unsigned image";
    image_tag(d, kind, total, sha, counter, want);
    if (!ft_ct_equal(want, tag, 32)) return "bad image HMAC tag";
    return NULL;
}

/* ------------------------------------------------------------------------------------------- boot */
ft_status ft_dev_boot(ft_dev *d)
{
    ft_status r;
    uint8_t st;
    if (!d || !d->factory_patch) return FT_ERR_ARG;
    /* RAM state of a fresh power-up */
    d->has_pending = 0;
    d->acked_id = 0;
    d->pushed_total = 0;
    d->staged_len = 0;
    d->reset_requested = 0;
    d->boots++;
    FT_TRY(ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0));
    d->C = d->head.C;
    d->D = d->head.D;
    d->feat_scale = d->head.input_scale;
    d->feat_zp = d->head.input_zero_point;
    FT_TRY(ft_store_open(&d->store));
    if (!d->store.have_record) { /* provisioning: the factory head in slot 0, confirmed */
        ft_slot_meta *s = &d->store.m.slots[0];
        if (d->factory_len > FT_SLOT_SIZE) return FT_ERR_RANGE;
        FT_TRY(ft_store_erase(&d->store, 0, d->factory_len));
        FT_TRY(ft_store_write(&d->store, 0, 0, d->factory_patch, d->factory_len));
        memset(&d->store.m, 0, sizeof d->store.m);
        d->store.m.testing = FT_NO_SLOT;
        s->state = FT_SLOT_CONFIRMED;
        s->kind = FT_KIND_HEAD_PATCH;
        s->total_len = s->received = d->factory_len;
        ft_sha256(d->factory_patch, d->factory_len, s->sha256);
        d->store.m.confirmed = 0;
        FT_TRY(ft_store_persist(&d->store));
    }
    if (d->store.m.testing != FT_NO_SLOT) { /* reset while under test: back to the confirmed slot */
        d->store.m.slots[d->store.m.testing].state = FT_SLOT_VERIFIED;
        d->store.m.testing = FT_NO_SLOT;
        d->store.m.reverted |= FT_SS_REVERTED;
        FT_TRY(ft_store_persist(&d->store));
    }
    /* update ids up to uid_reserved may have been issued before this boot: a new block is reserved in flash
     * before the first id of it is issued (h_train), so ids never repeat across resets */
    d->update_counter = d->uid_limit = d->store.m.uid_reserved;
    /* boot hashes what it loads: a corrupt confirmed image is marked bad, the other VERIFIED slot (if intact)
     * becomes the confirmed one (FELL_BACK); with none, the built-in factory head runs (no slot confirmed) */
    d->active = d->store.m.confirmed;
    if (d->active != FT_NO_SLOT && load_slot_head(d, d->active, &d->head, &st) != FT_OK) {
        uint8_t i, bad = d->active;
        ft_port_log("confirmed slot corrupt: falling back");
        mark_bad(d, bad);
        d->store.m.confirmed = d->active = FT_NO_SLOT;
        for (i = 0; i < FT_N_SLOTS; i++) {
            if (i == bad || d->store.m.slots[i].state != FT_SLOT_VERIFIED) continue;
            if (load_slot_head(d, i, &d->head, &st) == FT_OK) {
                d->store.m.slots[i].state = FT_SLOT_CONFIRMED;
                d->store.m.confirmed = d->active = i;
                break;
            }
        }
        d->store.m.reverted |= FT_SS_FELL_BACK;
        FT_TRY(ft_store_persist(&d->store));
    }
    if (d->active == FT_NO_SLOT) FT_TRY(ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0));
    r = ft_cache_init(&d->cache, FT_CACHE_CAPACITY, d->D);
    return r;
}

/* ----------------------------------------------------------------------------------------- handlers */
static uint8_t slot_status(ctx *c)
{
    ft_dev *d = c->d;
    uint8_t *p = c->resp;
    unsigned i;
    if (c->cap < 4 + 44u * FT_N_SLOTS) return fail(c, FT_ST_INTERNAL, "response buffer");
    p[0] = FT_N_SLOTS;
    p[1] = d->active;
    p[2] = d->store.m.confirmed;
    p[3] = d->store.m.reverted & (FT_SS_REVERTED | FT_SS_FELL_BACK);
    for (i = 0; i < FT_N_SLOTS; i++) {
        const ft_slot_meta *s = &d->store.m.slots[i];
        uint8_t *q = p + 4 + 44u * i;
        q[0] = s->state;
        q[1] = s->kind;
        q[2] = q[3] = 0;
        ft_wr32(q + 4, s->total_len);
        ft_wr32(q + 8, s->received);
        memcpy(q + 12, s->sha256, 32);
    }
    *c->len = 4 + 44u * FT_N_SLOTS;
    return FT_ST_OK;
}

static uint8_t h_hello(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t *o = c->resp;
    const char *name = d->board_name ? d->board_name : ft_port_board_name();
    size_t nl = strlen(name), fl = strlen(FT_FW_VERSION);
    /* every build has the integer trainer; FT_USE_FLOAT=0 (no FPU) builds have only that one */
    uint32_t caps = FT_CAP_TRAIN | FT_CAP_EVALUATE | FT_CAP_HEAD_PATCH | FT_CAP_SET_HEAD | FT_CAP_FIXED_TRAIN |
                    (FT_USE_FLOAT ? FT_CAP_FLOAT_TRAIN : 0u);
    (void)p;
    if (n) return fail(c, FT_ST_MALFORMED, "HELLO takes no payload");
    if (nl > 64) nl = 64;
    uint16_t raw_len = 0;
    if (d->has_key) caps |= FT_CAP_FLEET_KEY;
    if (full_image_ok()) caps |= FT_CAP_FULL_IMAGE;
#if FT_BACKBONE
    {
        const ft_tfl_model *m = backbone(d);
        if (m) {
            caps |= FT_CAP_RAW_SAMPLES;
            raw_len = (uint16_t)m->tensors[m->inputs[0]].count;
        }
    }
#endif
    o[0] = FT_PROTO_VERSION;
    o[1] = FT_N_SLOTS;
    ft_wr16(o + 2, (uint16_t)FT_MAX_PAYLOAD);
    ft_wr32(o + 4, d->device_id);
    ft_wr32(o + 8, caps);
    ft_wr16(o + 12, d->C);
    ft_wr16(o + 14, d->D);
    ft_wr32(o + 16, d->cache.capacity);
    ft_wr32(o + 20, d->cache.count);
    ft_wr32(o + 24, FT_SLOT_SIZE);
    ft_wr16(o + 28, raw_len); /* raw_input_len: elements of the running model's input (0: no backbone) */
    o[30] = FT_RX_WINDOW;
    o[31] = d->active;
    o[32] = (uint8_t)nl;
    memcpy(o + 33, name, nl);
    o[33 + nl] = (uint8_t)fl;
    memcpy(o + 34 + nl, FT_FW_VERSION, fl);
    *c->len = 34 + nl + fl;
    return FT_ST_OK;
}

static uint8_t h_status(ctx *c, const uint8_t *p, size_t n)
{
    uint8_t s;
    (void)p;
    if (n) return fail(c, FT_ST_MALFORMED, "STATUS takes no payload");
    s = slot_status(c);
    c->d->store.m.reverted = 0; /* reported once (persisted with the next metadata write) */
    return s;
}

static uint8_t h_reset(ctx *c, const uint8_t *p, size_t n)
{
    if (n != 1 || p[0] != 0) return fail(c, FT_ST_MALFORMED, "RESET mode must be 0");
    c->d->reset_requested = 1;
    *c->len = 0;
    return FT_ST_OK;
}

/* BlobRead -> page of an object of `total` bytes produced by `read`. hdr: bytes before total_len. */
typedef ft_status (*blob_reader)(ft_dev *d, uint32_t off, uint8_t *out, size_t n);

static uint8_t page(ctx *c, const uint8_t *p, size_t n, uint32_t total, size_t hdr, blob_reader rd)
{
    uint32_t off, want, room;
    if (n != 6) return fail(c, FT_ST_MALFORMED, "BlobRead is 6 bytes");
    off = ft_rd32(p);
    want = ft_rd16(p + 4);
    if (off > total) return fail(c, FT_ST_MALFORMED, "offset beyond object");
    room = (uint32_t)(FT_MAX_PAYLOAD - hdr - 4u);
    if (want > total - off) want = total - off;
    if (want > room) want = room;
    ft_wr32(c->resp + hdr, total);
    if (rd(c->d, off, c->resp + hdr + 4, want) != FT_OK) return fail(c, FT_ST_INTERNAL, "blob read");
    *c->len = hdr + 4 + want;
    return FT_ST_OK;
}

static ft_status read_head(ft_dev *d, uint32_t off, uint8_t *out, size_t n) { return ft_head_patch_read(&d->head, off, out, n); }

static uint8_t h_get_head(ctx *c, const uint8_t *p, size_t n)
{
    return page(c, p, n, ft_head_patch_size(&c->d->head), 0, read_head);
}

static uint8_t h_set_head(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t total, off, dl;
    ft_status r;
    if (n < 8) return fail(c, FT_ST_MALFORMED, "SET_HEAD needs total and offset");
    total = ft_rd32(p);
    off = ft_rd32(p + 4);
    dl = (uint32_t)(n - 8);
    /* nothing but this board's C x D patch size can complete: refused before anything is staged */
    if (total != FT_HEAD_PATCH_SIZE(d->C, d->D) || total > sizeof d->staged)
        return fail(c, FT_ST_SHAPE_MISMATCH, "SET_HEAD total is not this board's head patch size");
    if (dl > total || off > total - dl) return fail(c, FT_ST_MALFORMED, "SET_HEAD data beyond total");
    if (off != 0 && off != d->staged_len) return fail(c, FT_ST_BAD_OFFSET, "offset is not the staged length");
    if (off == 0) d->staged_len = 0;
    memcpy(d->staged + off, p + 8, dl);
    d->staged_len += dl;
    if (d->staged_len == total) {
        ft_head *tmp = &scratch_head;
        d->staged_len = 0;
        r = ft_head_decode_patch(tmp, d->staged, total, d->C, d->D);
        if (r == FT_ERR_UNSUPPORTED) return fail(c, FT_ST_SHAPE_MISMATCH, "head patch shape differs from the model's");
        if (r != FT_OK) return fail(c, FT_ST_MALFORMED, "invalid head patch");
        if (!head_fits(d, tmp)) return fail(c, FT_ST_SHAPE_MISMATCH, "head input quantization differs from the board's features");
        d->head = *tmp;
    }
    ft_wr32(c->resp, d->staged_len);
    *c->len = 4;
    return FT_ST_OK;
}

/* PUSH_SAMPLES kinds 1 and 2 (length already checked): each sample through the backbone, its features cached. */
static uint8_t push_raw(ctx *c, const uint8_t *p, uint32_t cnt, uint32_t dim)
{
#if FT_BACKBONE
    ft_dev *d = c->d;
    const ft_tfl_model *m = backbone(d);
    const uint8_t *data = p + 6 + 2 * cnt;
    uint32_t esize = p[0] == 2 ? 4u : 1u, i, j;
    if (!m) return fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: push int8 features (kind 0)");
    if (dim != m->tensors[m->inputs[0]].count)
        return fail(c, FT_ST_SHAPE_MISMATCH, "raw sample length differs from the model input (raw_input_len)");
    for (i = 0; i < cnt; i++)
        if (ft_rd16(p + 6 + 2 * i) >= d->C) return fail(c, FT_ST_MALFORMED, "label >= classes");
    if (esize == 4)
        for (j = 0; j < cnt * dim; j++)
            if (!isfinite(ft_rdf32(data + 4u * j))) return fail(c, FT_ST_MALFORMED, "raw float32 samples must be finite");
    if (p[1] & 1u) ft_cache_clear(&d->cache);
    for (i = 0; i < cnt; i++) {
        const int8_t *feat;
        if (run_backbone(m, p[0], data + i * dim * esize, &feat) != FT_OK) return fail(c, FT_ST_INTERNAL, "backbone");
        if (ft_cache_push(&d->cache, feat, (uint8_t)ft_rd16(p + 6 + 2 * i)) != FT_OK)
            return fail(c, FT_ST_INTERNAL, "cache push");
    }
    d->pushed_total += cnt;
    ft_wr32(c->resp, d->cache.count);
    ft_wr32(c->resp + 4, d->pushed_total);
    *c->len = 8;
    return FT_ST_OK;
#else
    (void)p;
    (void)cnt;
    (void)dim;
    return fail(c, FT_ST_UNSUPPORTED, "this board has no backbone: push int8 features (kind 0)");
#endif
}

static uint8_t h_push_samples(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t cnt, dim, i;
    if (n < 6) return fail(c, FT_ST_MALFORMED, "Samples header is 6 bytes");
    cnt = ft_rd16(p + 2);
    dim = ft_rd16(p + 4);
    /* kind 2 carries float32 samples (4 bytes each), kinds 0 and 1 int8 */
    if (n != 6u + 2u * cnt + cnt * dim * (p[0] == 2 ? 4u : 1u)) return fail(c, FT_ST_MALFORMED, "Samples payload length");
    if (p[0] > 2) return fail(c, FT_ST_MALFORMED, "sample kind");
    /* raw samples (kind 1 int8, kind 2 float32) run through the running full image's backbone */
    if (p[0] == 1 || p[0] == 2) return push_raw(c, p, cnt, dim);
    if (dim != d->D) return fail(c, FT_ST_SHAPE_MISMATCH, "feature length differs from the head input");
    for (i = 0; i < cnt; i++)
        if (ft_rd16(p + 6 + 2 * i) >= d->C) return fail(c, FT_ST_MALFORMED, "label >= classes");
    if (p[1] & 1u) ft_cache_clear(&d->cache);
    for (i = 0; i < cnt; i++) {
        ft_status r = ft_cache_push(&d->cache, (const int8_t *)(p + 6 + 2 * cnt + i * dim), (uint8_t)ft_rd16(p + 6 + 2 * i));
        if (r != FT_OK) return fail(c, FT_ST_INTERNAL, "cache push");
    }
    d->pushed_total += cnt;
    ft_wr32(c->resp, d->cache.count);
    ft_wr32(c->resp + 4, d->pushed_total);
    *c->len = 8;
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

static uint8_t h_train(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    ft_train_cfg cfg;
    float loss = 0.0f;
    uint32_t steps = 0, body, off;
    ft_status r;
    uint32_t flags;
    if (n != 32 && n != 28) return fail(c, FT_ST_MALFORMED, "TrainRequest is 32 bytes (28 without flags)");
    if (d->has_pending) return fail(c, FT_ST_UPDATE_PENDING, "update not acknowledged");
    if (d->cache.count == 0) return fail(c, FT_ST_CACHE_EMPTY, "no cached samples");
    cfg.epochs = ft_rd16(p);
    cfg.batch_size = ft_rd16(p + 2);
    cfg.lr = ft_rdf32(p + 4);
    cfg.momentum = ft_rdf32(p + 8);
    cfg.weight_decay = ft_rdf32(p + 12);
    cfg.prox_mu = ft_rdf32(p + 16);
    cfg.seed = ft_rd32(p + 20);
    cfg.round = ft_rd32(p + 24);
    cfg.device_id = d->device_id;
    flags = n == 32 ? ft_rd32(p + 28) : 0u;
    if (cfg.epochs < 1 || cfg.epochs > FT_MAX_EPOCHS || cfg.batch_size < 1)
        return fail(c, FT_ST_MALFORMED, "epochs must be 1..1000 and batch_size >= 1");
    if ((uint32_t)cfg.epochs * d->cache.count > FT_MAX_TRAIN_WORK)
        return fail(c, FT_ST_MALFORMED, "epochs x cached samples above the work bound of one TRAIN");
    if (!isfinite(cfg.lr) || !isfinite(cfg.momentum) || !isfinite(cfg.weight_decay) || !isfinite(cfg.prox_mu))
        return fail(c, FT_ST_MALFORMED, "lr, momentum, weight_decay and prox_mu must be finite");
    if (!(cfg.lr > 0.0f && cfg.lr <= FT_TRAIN_MAX_LR && cfg.momentum >= 0.0f && cfg.momentum < 1.0f &&
          cfg.weight_decay >= 0.0f && cfg.weight_decay <= FT_TRAIN_MAX_DECAY && cfg.prox_mu >= 0.0f &&
          cfg.prox_mu <= FT_TRAIN_MAX_DECAY))
        return fail(c, FT_ST_MALFORMED, "lr must be in (0, 100], momentum in [0, 1), weight_decay and prox_mu in [0, 100]");
    if (flags & ~FT_TRAIN_FIXED) return fail(c, FT_ST_UNSUPPORTED, "TRAIN flags: unknown bits");
    if (flags & FT_TRAIN_FIXED) {
        if (cfg.momentum != 0.0f || cfg.weight_decay != 0.0f || cfg.prox_mu != 0.0f)
            return fail(c, FT_ST_UNSUPPORTED, "fixed-point training is plain SGD: momentum, weight_decay and prox_mu must be 0");
    } else if (!FT_USE_FLOAT) {
        return fail(c, FT_ST_UNSUPPORTED, "this board trains fixed-point only (CAP_FIXED_TRAIN): set TRAIN flag FIXED");
    }
    if (ft_head_dequantize(&d->head, &d->upd) != FT_OK) return fail(c, FT_ST_INTERNAL, "dequantize");
#if FT_USE_FLOAT
    if (!(flags & FT_TRAIN_FIXED))
        r = ft_train(&d->upd, &d->cache, d->head.input_scale, d->head.input_zero_point, &cfg, &d->work, &loss, &steps);
    else
#endif
        r = ft_train_fixed(&d->upd, &d->cache, d->head.input_scale, d->head.input_zero_point, &cfg, &d->work, &loss,
                           &steps);
    if (r != FT_OK) return fail(c, FT_ST_INTERNAL, "train");
    {
        uint32_t i, cd = (uint32_t)d->upd.C * d->upd.D;
        int ok = isfinite(loss);
        for (i = 0; i < cd && ok; i++) ok = isfinite(d->upd.weights[i]);
        for (i = 0; i < d->upd.C && ok; i++) ok = isfinite(d->upd.bias[i]);
        if (!ok) return fail(c, FT_ST_MALFORMED, "training diverged (non-finite weights or loss): lower lr / weight_decay / prox_mu");
    }
    if (d->update_counter >= d->uid_limit) { /* reserve the next block of ids in flash before issuing one */
        if (d->uid_limit > 0xFFFFFFFFu - FT_UPDATE_ID_BLOCK) return fail(c, FT_ST_INTERNAL, "update ids exhausted");
        d->store.m.uid_reserved = d->uid_limit + FT_UPDATE_ID_BLOCK;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
        d->uid_limit = d->store.m.uid_reserved;
    }
    d->update_counter++;
    d->pending_id = d->update_counter;
    d->upd_round = cfg.round;
    d->upd_n = d->cache.count;
    d->upd_loss = loss;
    d->has_pending = 1;
    /* tag = HMAC(key, body); a board without a key sends a zero tag */
    memset(d->upd_tag, 0, 32);
    if (d->has_key) {
        ft_hmac_ctx h;
        uint8_t buf[64], tag[32];
        body = BLOB_SIZE(d->upd.C, d->upd.D) - 32u;
        ft_hmac_init(&h, d->key, sizeof d->key);
        for (off = 0; off < body; off += (uint32_t)sizeof buf) {
            uint32_t k = body - off < sizeof buf ? body - off : (uint32_t)sizeof buf;
            if (read_blob(d, off, buf, k) != FT_OK) return fail(c, FT_ST_INTERNAL, "blob");
            ft_hmac_update(&h, buf, k);
        }
        ft_hmac_final(&h, tag);
        memcpy(d->upd_tag, tag, 32);
    }
    ft_wr32(c->resp, d->pending_id);
    ft_wr32(c->resp + 4, d->upd_n);
    ft_wrf32(c->resp + 8, loss);
    *c->len = 12;
    return FT_ST_OK;
}

static uint8_t h_read_update(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    if (!d->has_pending) {
        if (n != 6) return fail(c, FT_ST_MALFORMED, "BlobRead is 6 bytes");
        return fail(c, FT_ST_NO_UPDATE, "no pending update");
    }
    ft_wr32(c->resp, d->pending_id);
    return page(c, p, n, BLOB_SIZE(d->upd.C, d->upd.D), 4, read_blob);
}

static uint8_t h_update_ack(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t uid;
    if (n != 4) return fail(c, FT_ST_MALFORMED, "UPDATE_ACK is 4 bytes");
    uid = ft_rd32(p);
    *c->len = 0;
    if (d->has_pending && d->pending_id == uid) {
        d->has_pending = 0;
        d->acked_id = uid;
        return FT_ST_OK;
    }
    if (uid == d->acked_id && uid != 0) return FT_ST_OK;
    return fail(c, FT_ST_NO_UPDATE, "update is not pending");
}

static uint8_t h_evaluate(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t max_n, cnt, i, correct = 0;
    double loss_sum = 0.0;
    int8_t q[FT_MAX_CLASSES];
    float logits[FT_MAX_CLASSES], prob[FT_MAX_CLASSES];
    if (n != 4) return fail(c, FT_ST_MALFORMED, "EVALUATE is 4 bytes");
    max_n = ft_rd32(p);
    cnt = d->cache.count;
    if (max_n && max_n < cnt) cnt = max_n;
    if (cnt == 0) return fail(c, FT_ST_CACHE_EMPTY, "no cached samples");
    for (i = 0; i < cnt; i++) {
        uint16_t k, best = 0, y = d->cache.labels[i];
        if (ft_head_forward(&d->head, ft_cache_row(&d->cache, i), q) != FT_OK) return fail(c, FT_ST_INTERNAL, "forward");
        for (k = 0; k < d->head.C; k++) {
            if (q[k] > q[best]) best = k;
            logits[k] = ((float)q[k] - (float)d->head.output_zero_point) * d->head.output_scale;
        }
        correct += best == y;
        loss_sum += (double)ft_softmax_xent(logits, d->head.C, y, prob);
    }
    ft_wr32(c->resp, cnt);
    ft_wrf32(c->resp + 4, (float)((double)correct / cnt));
    ft_wrf32(c->resp + 8, (float)(loss_sum / cnt));
    *c->len = 12;
    return FT_ST_OK;
}

/* ------------------------------------------------------------------------------------------ uploads */
static uint8_t upload_slot(const ft_dev *d)
{
    uint8_t i;
    for (i = 0; i < FT_N_SLOTS; i++)
        if (i != d->store.m.confirmed) return i;
    return 0;
}

static uint8_t upload_state(ctx *c, uint8_t slot, uint8_t resumed)
{
    const ft_slot_meta *s = &c->d->store.m.slots[slot];
    uint32_t crc = 0;
    ft_status r = ft_store_crc32(&c->d->store, slot, s->received, &crc);
    if (r != FT_OK) return failf_flash(c, r);
    c->resp[0] = slot;
    c->resp[1] = s->state;
    c->resp[2] = resumed;
    c->resp[3] = 0;
    ft_wr32(c->resp + 4, s->total_len);
    ft_wr32(c->resp + 8, s->received);
    ft_wr32(c->resp + 12, crc);
    *c->len = 16;
    return FT_ST_OK;
}

static uint8_t h_upload_begin(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t kind, slot, flags, target;
    uint32_t total, counter;
    const char *why;
    ft_slot_meta *s;
    ft_status r;
    if (n != FT_UPLOAD_BEGIN_SIZE) return fail(c, FT_ST_MALFORMED, "UploadBegin is 76 bytes");
    kind = p[0];
    slot = p[1];
    flags = p[2];
    total = ft_rd32(p + 4);
    counter = ft_rd32(p + 72);
    if (kind != FT_KIND_HEAD_PATCH && kind != FT_KIND_TFLITE) return fail(c, FT_ST_MALFORMED, "image kind");
    if (kind == FT_KIND_TFLITE && !full_image_ok())
        return fail(c, FT_ST_UNSUPPORTED, "this board cannot run full images (no interpreter or no flash mapping): head patches only");
    target = upload_slot(d);
    if (slot != 0xFF && slot != target) return fail(c, FT_ST_BAD_STATE, "slot is not the upload slot");
    s = &d->store.m.slots[target];
    if (s->state == FT_SLOT_TESTING) return fail(c, FT_ST_BAD_STATE, "upload slot is under test: CONFIRM or ROLLBACK first");
    if (total == 0 || total > FT_SLOT_SIZE) return fail(c, FT_ST_NO_SPACE, "image larger than a slot");
    why = check_tag(d, kind, total, p + 8, counter, p + 40);
    if (why) return fail(c, FT_ST_AUTH_FAILED, why);
    if (counter < d->store.m.sec_floor) return fail(c, FT_ST_DOWNGRADE, "security counter below the board's (anti-rollback)");
    if (s->kind == kind && s->total_len == total && memcmp(s->sha256, p + 8, 32) == 0 && s->security_counter == counter &&
        (s->state == FT_SLOT_RECEIVING || s->state == FT_SLOT_VERIFIED) && !(flags & 1u))
        return upload_state(c, target, 1);
    {
        uint32_t old_len = s->total_len > total ? s->total_len : total;
        memset(s, 0, sizeof *s);
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r); /* invalidate, then erase */
        if ((r = ft_store_erase(&d->store, target, old_len)) != FT_OK) return failf_flash(c, r);
    }
    s->state = FT_SLOT_RECEIVING;
    s->kind = kind;
    s->total_len = total;
    s->received = 0;
    memcpy(s->sha256, p + 8, 32);
    memcpy(s->tag, p + 40, 32);
    s->security_counter = counter;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
    return upload_state(c, target, 0);
}

static uint8_t h_upload_chunk(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t target = upload_slot(d);
    ft_slot_meta *s = &d->store.m.slots[target];
    uint32_t off, dl;
    ft_status r;
    if (n < 4) return fail(c, FT_ST_MALFORMED, "UPLOAD_CHUNK needs an offset");
    off = ft_rd32(p);
    dl = (uint32_t)(n - 4);
    if (s->state == FT_SLOT_VERIFIED) {
        ft_wr32(c->resp, s->total_len);
        *c->len = 4;
        return FT_ST_OK;
    }
    if (s->state != FT_SLOT_RECEIVING) return fail(c, FT_ST_BAD_STATE, "slot is not receiving (UPLOAD_BEGIN first)");
    if (off > s->total_len || dl > s->total_len - off) return fail(c, FT_ST_MALFORMED, "chunk beyond the image");
    if (off == s->received && dl) {
        /* data first, then the persisted `received` */
        if ((r = ft_store_write(&d->store, target, off, p + 4, dl)) != FT_OK) return failf_flash(c, r);
        s->received += dl;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
    }
    ft_wr32(c->resp, s->received);
    *c->len = 4;
    return FT_ST_OK;
}

static uint8_t h_upload_status(ctx *c, const uint8_t *p, size_t n)
{
    uint8_t slot;
    if (n != 1) return fail(c, FT_ST_MALFORMED, "UPLOAD_STATUS is 1 byte");
    slot = p[0] == 0xFF ? upload_slot(c->d) : p[0];
    if (slot >= FT_N_SLOTS) return fail(c, FT_ST_MALFORMED, "no such slot");
    return upload_state(c, slot, 0);
}

static int slot_arg(const uint8_t *p, size_t n) { return (n == 1 && p[0] < FT_N_SLOTS) ? p[0] : -1; }

/* A completed upload that fails VERIFY (hash, tag, security counter, content), or a corrupt VERIFIED slot, is
 * marked bad (RECEIVING, received 0); a corrupt CONFIRMED/TESTING slot keeps its state (its copy in RAM runs,
 * the next boot falls back). */
static uint8_t verify_failed(ctx *c, uint8_t slot, uint8_t status, const char *why)
{
    ft_slot_meta *s = &c->d->store.m.slots[slot];
    ft_status r;
    if (s->state == FT_SLOT_RECEIVING || s->state == FT_SLOT_VERIFIED) {
        mark_bad(c->d, slot);
        if ((r = ft_store_persist(&c->d->store)) != FT_OK) return failf_flash(c, r);
    }
    return fail(c, status, why);
}

static uint8_t h_verify(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    int slot = slot_arg(p, n);
    ft_slot_meta *s;
    ft_status r;
    uint8_t sha[32];
    if (slot < 0) return fail(c, FT_ST_MALFORMED, "VERIFY takes a slot number");
    s = &d->store.m.slots[slot];
    if (s->state == FT_SLOT_EMPTY) return fail(c, FT_ST_BAD_STATE, "slot is empty");
    if (s->state == FT_SLOT_RECEIVING && s->received != s->total_len)
        return fail(c, FT_ST_BAD_STATE, "image not completely received");
    /* every VERIFY hashes the slot in flash, whatever its state */
    if ((r = ft_store_sha256(&d->store, (uint8_t)slot, s->total_len, sha)) != FT_OK) return failf_flash(c, r);
    if (!ft_ct_equal(sha, s->sha256, 32))
        return verify_failed(c, (uint8_t)slot, FT_ST_HASH_MISMATCH, "sha256 of the image in flash differs from the declared one");
    if (s->state == FT_SLOT_RECEIVING) {
        const char *why;
        uint8_t st;
        why = check_tag(d, s->kind, s->total_len, s->sha256, s->security_counter, s->tag);
        if (why) return verify_failed(c, (uint8_t)slot, FT_ST_AUTH_FAILED, why);
        if (s->security_counter < d->store.m.sec_floor)
            return verify_failed(c, (uint8_t)slot, FT_ST_DOWNGRADE, "security counter below the board's (anti-rollback)");
        r = load_slot_head(d, (uint8_t)slot, &scratch_head, &st);
#if FT_BACKBONE
        if (r != FT_OK && s->kind == FT_KIND_TFLITE) return verify_failed(c, (uint8_t)slot, st, g_why);
#endif
        if (r != FT_OK)
            return verify_failed(c, (uint8_t)slot, st, st == FT_ST_SHAPE_MISMATCH ? "head shape differs from the model's"
                                                                                   : "image does not parse as a head patch");
        if (s->kind == FT_KIND_HEAD_PATCH && !head_fits(d, &scratch_head))
            return verify_failed(c, (uint8_t)slot, FT_ST_SHAPE_MISMATCH, "head input quantization differs from the board's features");
        s->state = FT_SLOT_VERIFIED;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
    }
    c->resp[0] = (uint8_t)slot;
    c->resp[1] = s->state;
    memcpy(c->resp + 2, s->sha256, 32);
    *c->len = 34;
    return FT_ST_OK;
}

static uint8_t h_activate(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    int slot = slot_arg(p, n);
    ft_head *tmp = &scratch_head;
    uint8_t st;
    int full;
    ft_status r;
    if (slot < 0) return fail(c, FT_ST_MALFORMED, "ACTIVATE takes a slot number");
    if (d->store.m.testing == slot) return slot_status(c);
    if (d->store.m.slots[slot].state != FT_SLOT_VERIFIED || d->store.m.testing != FT_NO_SLOT)
        return fail(c, FT_ST_BAD_STATE, "slot is not VERIFIED, or another is under test");
    if (d->store.m.slots[slot].security_counter < d->store.m.sec_floor)
        return fail(c, FT_ST_DOWNGRADE, "security counter below the board's (anti-rollback)");
    if (load_slot_head(d, (uint8_t)slot, tmp, &st) != FT_OK) {
        mark_bad(d, (uint8_t)slot);
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
        return fail(c, st, "slot image unusable");
    }
    full = d->store.m.slots[slot].kind == FT_KIND_TFLITE || running_kind(d) == FT_KIND_TFLITE;
    d->store.m.slots[slot].state = FT_SLOT_TESTING;
    d->store.m.testing = (uint8_t)slot;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
    d->active = (uint8_t)slot;
    d->head = *tmp;
    if (full) clear_ram(d); /* into or out of a full image: another model runs */
    return slot_status(c);
}

/* One golden vector: D int8 features into the running head, or int8 model inputs through the backbone (the
 * loaded image under test) and the head: the whole model up to its int8 logits. */
static ft_status confirm_forward(ft_dev *d, const uint8_t *v, uint32_t il, int8_t *out)
{
#if FT_BACKBONE
    if (il != d->D) {
        const ft_tfl_model *m = backbone(d);
        const int8_t *feat;
        if (!m) return FT_ERR_STATE;
        FT_TRY(run_backbone(m, 1, v, &feat));
        return ft_head_forward(&d->head, feat, out);
    }
#else
    (void)il;
#endif
    return ft_head_forward(&d->head, (const int8_t *)v, out);
}

/* The golden vectors run on the image under test as it is in flash (not on a head SET_HEAD put in RAM since
 * ACTIVATE); on success that image runs. */
static uint8_t h_confirm(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t nv, il, ol, i, k;
    uint8_t slot, tol, st;
    int worst = -1;
    uint32_t wi = 0, wk = 0;
    int8_t out[FT_MAX_CLASSES];
    ft_head *h = &scratch_head;
    ft_status r;
    if (n < 8) return fail(c, FT_ST_MALFORMED, "Confirm header is 8 bytes");
    slot = p[0];
    tol = p[1];
    nv = ft_rd16(p + 2);
    il = ft_rd16(p + 4);
    ol = ft_rd16(p + 6);
    if (n != 8u + nv * (il + ol)) return fail(c, FT_ST_MALFORMED, "Confirm payload length");
    if (slot >= FT_N_SLOTS) return fail(c, FT_ST_MALFORMED, "no such slot");
    if (nv == 0) return fail(c, FT_ST_MALFORMED, "CONFIRM needs at least one golden vector");
    if (slot == d->store.m.confirmed && d->store.m.testing == FT_NO_SLOT) return slot_status(c);
    if (d->store.m.testing != slot) return fail(c, FT_ST_BAD_STATE, "slot is not under test");
    {
        /* in_len D: int8 features into the head; raw_input_len: int8 model inputs, the whole model runs */
        uint32_t raw = 0;
#if FT_BACKBONE
        const ft_tfl_model *m = backbone(d); /* the TESTING slot is the running one */
        if (m) raw = m->tensors[m->inputs[0]].count;
#endif
        if (ol != d->C || (il != d->D && (raw == 0 || il != raw)))
            return fail(c, FT_ST_UNSUPPORTED, "golden vectors must be D int8 features (or raw_input_len int8 model inputs) -> C int8 logits");
    }
    if (load_slot_head(d, slot, h, &st) != FT_OK) return fail(c, st, "the image under test is unusable");
    d->head = *h; /* the image under test runs (a SET_HEAD since ACTIVATE is dropped) */
    for (i = 0; i < nv; i++) {
        const uint8_t *v = p + 8 + i * (il + ol);
        if (confirm_forward(d, v, il, out) != FT_OK) return fail(c, FT_ST_INTERNAL, "forward");
        for (k = 0; k < ol; k++) {
            int diff = (int)out[k] - (int)(int8_t)v[il + k];
            if (diff < 0) diff = -diff;
            if (diff > worst) {
                worst = diff;
                wi = i;
                wk = k;
            }
        }
    }
    if (worst > (int)tol) {
        char buf[96];
        const uint8_t *v = p + 8 + wi * (il + ol);
        if (confirm_forward(d, v, il, out) != FT_OK) return fail(c, FT_ST_INTERNAL, "forward");
        snprintf(buf, sizeof buf, "vector %u channel %u: got %d, expected %d", (unsigned)wi, (unsigned)wk,
                 (int)out[wk], (int)(int8_t)v[il + wk]);
        return fail(c, FT_ST_SELFTEST_FAILED, buf);
    }
    if (d->store.m.confirmed != FT_NO_SLOT) d->store.m.slots[d->store.m.confirmed].state = FT_SLOT_VERIFIED;
    d->store.m.slots[slot].state = FT_SLOT_CONFIRMED;
    d->store.m.confirmed = slot;
    d->store.m.testing = FT_NO_SLOT;
    if (d->store.m.slots[slot].security_counter > d->store.m.sec_floor) /* anti-rollback floor, in the commit */
        d->store.m.sec_floor = d->store.m.slots[slot].security_counter;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r); /* the commit: one record */
    return slot_status(c);
}

static uint8_t h_rollback(ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    ft_status r;
    uint8_t st;
    (void)p;
    if (n) return fail(c, FT_ST_MALFORMED, "ROLLBACK takes no payload");
    if (d->store.m.testing != FT_NO_SLOT) {
        int was_full = running_kind(d) == FT_KIND_TFLITE;
        d->store.m.slots[d->store.m.testing].state = FT_SLOT_VERIFIED;
        d->store.m.testing = FT_NO_SLOT;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return failf_flash(c, r);
        d->active = d->store.m.confirmed;
        if (d->active == FT_NO_SLOT || load_slot_head(d, d->active, &d->head, &st) != FT_OK) {
            d->active = FT_NO_SLOT; /* nothing usable confirmed: the firmware's factory head */
            if (ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0) != FT_OK)
                return fail(c, FT_ST_INTERNAL, "no usable head");
        }
        if (was_full || running_kind(d) == FT_KIND_TFLITE) clear_ram(d);
    }
    return slot_status(c);
}

uint8_t ft_dev_handle(ft_dev *d, uint8_t type, const uint8_t *req, size_t len, uint8_t *resp, size_t cap,
                      size_t *resp_len)
{
    ctx c;
    c.d = d;
    c.resp = resp;
    c.cap = cap;
    c.len = resp_len;
    *resp_len = 0;
    if (!d || (!req && len) || !resp || cap < FT_MAX_PAYLOAD) return FT_ST_INTERNAL;
    switch (type) {
    case FT_MSG_HELLO: return h_hello(&c, req, len);
    case FT_MSG_STATUS: return h_status(&c, req, len);
    case FT_MSG_RESET: return h_reset(&c, req, len);
    case FT_MSG_GET_HEAD: return h_get_head(&c, req, len);
    case FT_MSG_SET_HEAD: return h_set_head(&c, req, len);
    case FT_MSG_PUSH_SAMPLES: return h_push_samples(&c, req, len);
    case FT_MSG_TRAIN: return h_train(&c, req, len);
    case FT_MSG_READ_UPDATE: return h_read_update(&c, req, len);
    case FT_MSG_UPDATE_ACK: return h_update_ack(&c, req, len);
    case FT_MSG_EVALUATE: return h_evaluate(&c, req, len);
    case FT_MSG_UPLOAD_BEGIN: return h_upload_begin(&c, req, len);
    case FT_MSG_UPLOAD_CHUNK: return h_upload_chunk(&c, req, len);
    case FT_MSG_UPLOAD_STATUS: return h_upload_status(&c, req, len);
    case FT_MSG_VERIFY: return h_verify(&c, req, len);
    case FT_MSG_ACTIVATE: return h_activate(&c, req, len);
    case FT_MSG_CONFIRM: return h_confirm(&c, req, len);
    case FT_MSG_ROLLBACK: return h_rollback(&c, req, len);
    default: {
        char buf[24];
        snprintf(buf, sizeof buf, "type 0x%02x", (unsigned)type);
        return fail(&c, FT_ST_UNKNOWN_TYPE, buf);
    }
    }
}
