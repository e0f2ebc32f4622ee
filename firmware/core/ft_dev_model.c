/* The running model of the device (issue 11): a full .tflite image verified and run in place by the int8
 * interpreter (ft_tfl_*), its head found and checked, or the firmware's factory model (a .tflite built into the
 * firmware image, read in place like a slot) whose backbone every head patch runs on. Used by the learning
 * handlers (raw samples), HELLO and the update state machine (VERIFY / ACTIVATE / CONFIRM / boot). */
#include "ft_dev_internal.h"
#include "ft_signed.h"
#include "ft_sha256.h"
#include "port.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#if FT_BACKBONE
/* A full .tflite image (UPLOAD kind 2) runs in the int8 interpreter (ft_tfl_*), read in place from its flash
 * slot: g_model is the verified model of g_model_slot (the image whose SHA-256 was g_model_sha when it was
 * verified). One model struct serves the running slot and VERIFY/ACTIVATE of another: ftd_backbone() re-verifies
 * the running slot whenever g_model holds another image. */
static ft_tfl_model g_model;
static uint8_t g_arena[FT_TFL_ARENA_SIZE];
#define FACTORY_SLOT 0xFEu /* g_model_slot when g_model holds the factory model */
static uint8_t g_model_slot = FT_NO_SLOT;
static uint8_t g_factory_patch[FT_HEAD_PATCH_MAX]; /* the factory model's own head as a HeadPatch */
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
static uint8_t model_head(const ft_dev *d, const ft_tfl_model *m, ft_head *out, uint16_t *op_index, int16_t *feat,
                          int any_shape)
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
    /* any_shape: the factory model at boot, whose head sets the board's C x D (within the build's limits) */
    if ((int32_t)C != w->dims[0] || (int32_t)D != w->dims[1] || x->count != D || b->count != C ||
        (any_shape ? C == 0 || D == 0 || C > FT_MAX_CLASSES || D > FT_MAX_DIM : C != d->C || D != d->D)) {
        snprintf(buf, sizeof buf, "model head is %ldx%ld (input of %lu), the board's is %ux%u", (long)w->dims[0],
                 (long)w->dims[1], (unsigned long)x->count, (unsigned)(any_shape ? FT_MAX_CLASSES : d->C),
                 (unsigned)(any_shape ? FT_MAX_DIM : d->D));
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

/* The board feeds the model one int8 or float32 input (raw_input_len elements, a u16 in HELLO). */
static uint8_t check_input(const ft_tfl_model *m)
{
    const ft_tfl_tensor *in = &m->tensors[m->inputs[0]];
    if (m->n_inputs != 1 || (in->type != FT_TFL_INT8 && in->type != FT_TFL_FLOAT32) || in->count > 0xFFFFu) {
        set_why("model: the board feeds one int8 or float32 input of at most 65535 elements", "");
        return FT_ST_UNSUPPORTED;
    }
    return FT_ST_OK;
}

static void log_model(uint8_t slot)
{
    char buf[80];
    if (slot == FACTORY_SLOT)
        snprintf(buf, sizeof buf, "factory model: %u ops, arena %lu bytes", (unsigned)g_model.n_ops,
                 (unsigned long)g_model.arena_bytes);
    else
        snprintf(buf, sizeof buf, "model in slot %u: %u ops, arena %lu bytes", (unsigned)slot, (unsigned)g_model.n_ops,
                 (unsigned long)g_model.arena_bytes);
    ft_port_log(buf);
}

/* Verify the full image in `slot` in place (SHA-256 of the flash bytes, then ft_tfl_verify) into g_model and take
 * its head (into out, may be NULL). A protocol status; on failure g_why says why. */
uint8_t ftd_load_model(ft_dev *d, uint8_t slot, ft_head *out)
{
    const ft_slot_meta *s = &d->store.m.slots[slot];
    const uint8_t *img;
    uint8_t sha[32], st;
    uint32_t off, len;
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
    if (ft_signed_payload(&d->store, slot, &off, &len) != FT_OK) { /* a signed slot: the model is its payload */
        set_why("signed image: the header does not parse", "");
        return FT_ST_MALFORMED;
    }
    r = ft_tfl_verify(&g_model, img + off, len, (uint32_t)sizeof g_arena);
    if (r != FT_OK) {
        set_why("model: ", g_model.reason);
        return r == FT_ERR_UNSUPPORTED ? FT_ST_UNSUPPORTED : r == FT_ERR_RANGE ? FT_ST_NO_SPACE : FT_ST_MALFORMED;
    }
    st = check_input(&g_model);
    if (st != FT_ST_OK) return st;
    st = model_head(d, &g_model, out, &g_head_op, &g_feat, 0);
    if (st != FT_ST_OK) return st;
    g_model_slot = slot;
    memcpy(g_model_sha, s->sha256, 32);
    log_model(slot);
    return FT_ST_OK;
}

/* Verify the factory model (read in place from the firmware image) into g_model; out (may be NULL) its head. At
 * boot (any_shape) its head sets the board's C x D. */
static uint8_t load_factory(ft_dev *d, ft_head *out, int any_shape)
{
    ft_status r;
    uint8_t st;
    g_model_slot = FT_NO_SLOT;
    r = ft_tfl_verify(&g_model, d->factory_model, d->factory_model_len, (uint32_t)sizeof g_arena);
    if (r != FT_OK) {
        set_why("factory model: ", g_model.reason);
        return r == FT_ERR_UNSUPPORTED ? FT_ST_UNSUPPORTED : r == FT_ERR_RANGE ? FT_ST_NO_SPACE : FT_ST_MALFORMED;
    }
    st = check_input(&g_model);
    if (st != FT_ST_OK) return st;
    st = model_head(d, &g_model, out, &g_head_op, &g_feat, any_shape);
    if (st != FT_ST_OK) return st;
    g_model_slot = FACTORY_SLOT;
    log_model(FACTORY_SLOT);
    return FT_ST_OK;
}

/* Boot with a factory model: verify it and, unless a factory head was given, take its own head as the factory
 * head (the HeadPatch provisioned into slot 0 and run when nothing is confirmed), as the virtual board started
 * with --model does. A model the interpreter refuses stops the boot (the build is wrong, not the flash). */
ft_status ftd_factory_boot(ft_dev *d)
{
    ft_head *h = &ftd_scratch_head;
    uint8_t st = load_factory(d, h, 1);
    if (st != FT_ST_OK) {
        ft_port_log(g_why);
        return FT_ERR_FORMAT;
    }
    if (d->factory_patch) return FT_OK;
    FT_TRY(ft_head_patch_read(h, 0, g_factory_patch, ft_head_patch_size(h)));
    d->factory_patch = g_factory_patch;
    d->factory_len = ft_head_patch_size(h);
    return FT_OK;
}

/* The running model's backbone: the running full image's, else (a head patch or the factory head runs) the
 * factory model's, or NULL on a board built without one. Re-verifies it when g_model holds another image (VERIFY
 * of another slot used it). */
const ft_tfl_model *ftd_backbone(ft_dev *d)
{
    const ft_slot_meta *s = d->active == FT_NO_SLOT ? NULL : &d->store.m.slots[d->active];
    if (!s || s->kind != FT_KIND_TFLITE) {
        if (!d->factory_model) return NULL;
        if (g_model_slot == FACTORY_SLOT) return &g_model;
        return load_factory(d, NULL, 0) == FT_ST_OK ? &g_model : NULL;
    }
    if (g_model_slot == d->active && memcmp(g_model_sha, s->sha256, 32) == 0) return &g_model;
    return ftd_load_model(d, d->active, NULL) == FT_ST_OK ? &g_model : NULL;
}

/* One raw sample (kind 1: int8 model inputs, kind 2: float32, little-endian) through the backbone; *feat = the
 * head's D int8 inputs in the arena. An int8-input model takes kind 2 quantized as fedtiny.ondevice.quantize
 * (float32 x / scale, round half away, + zero point, clamp); a float-input model (QUANTIZE first) takes kind 2 as
 * is and kind 1 dequantized with its QUANTIZE output's scale / zero point, as fedtiny.model.runtime does. */
ft_status ftd_run_backbone(const ft_tfl_model *m, uint8_t kind, const uint8_t *sample, const int8_t **feat)
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

/* The k-th op on the path from the model output back to the head (k = 0: the op that writes output 0), or NULL when
 * the walk reaches the head FULLY_CONNECTED (g_head_op): the ops after the head, walked as model_head walks them. */
static const ft_tfl_op *tail_op(const ft_tfl_model *m, uint16_t k)
{
    int16_t t = m->outputs[0];
    uint16_t steps, i;
    for (steps = 0; steps <= m->n_ops; steps++) {
        const ft_tfl_op *p = NULL;
        for (i = m->n_ops; i > 0 && !p; i--)
            if (m->ops[i - 1].out == t) p = &m->ops[i - 1];
        if (!p || (uint16_t)(p - m->ops) == g_head_op) return NULL;
        if (steps == k) return p;
        t = p->in[0];
    }
    return NULL;
}

/* INFER's model output (docs/protocol.md "InferRequest"): the ops after the head (docs/ondevice.md section 1b) on
 * the running head's int8 logits y[C], each with its own input tensor's quantization, except that the head's output
 * tensor and the RESHAPEs right after it carry the running head's output scale and zero point (TFLite Micro runs
 * the model with the head written in, fedtiny.model.flatbuffer.write_head, which writes them there). *type gets
 * FT_INFER_OUT_INT8 (out: C bytes) or FT_INFER_OUT_FLOAT32 (out: C little-endian float32, a DEQUANTIZE last). With
 * y == NULL only checks that the tail can run (UNSUPPORTED, reason in ftd_model_why()) and sets *type. */
uint8_t ftd_run_tail(const ft_tfl_model *m, const ft_head *h, const int8_t *y, uint8_t *out, uint8_t *type)
{
    int8_t a[FT_MAX_CLASSES], b[FT_MAX_CLASSES];
    uint16_t n = 0, k, C = h->C, j;
    int from_head = 1; /* the op's input is the head's output tensor (or a RESHAPE of it) */
    while (tail_op(m, n)) n++;
    if (y) memcpy(a, y, C);
    *type = FT_INFER_OUT_INT8;
    for (k = n; k > 0; k--) {
        const ft_tfl_op *op = tail_op(m, (uint16_t)(k - 1));
        const ft_tfl_tensor *ti = &m->tensors[op->in[0]], *to = &m->tensors[op->out];
        float si = from_head ? h->output_scale : ti->scale;
        int32_t zi = from_head ? h->output_zero_point : ti->zp;
        if (ti->type != FT_TFL_INT8 || ti->count != C || to->count != C) {
            set_why("the model's ops after the head: each takes the C int8 logits (or their int8 result)", "");
            return FT_ST_UNSUPPORTED;
        }
        if (op->code == OPC_RESHAPE) continue; /* the bytes unchanged, the quantization carried over */
        from_head = 0;
        if (op->code == OPC_QUANTIZE) {
            if (y) ft_tfl_requantize(a, C, si, zi, to->scale, to->zp, b);
        } else if (op->code == OPC_SOFTMAX) {
            ft_tfl_softmax_params sp = op->p.softmax;
            double real = (double)sp.beta * (double)si * 67108864.0; /* fedtiny.ondevice.tail: beta * scale * 2^26 */
            if (!(real > 1.0)) {
                set_why("the model's ops after the head: SOFTMAX beta * input scale is too small", "");
                return FT_ST_UNSUPPORTED;
            }
            sp.input_scale = si;
            if (y) ft_tfl_softmax(&sp, a, b);
        } else { /* DEQUANTIZE: float32, the last op (model_head admits only these four) */
            float f[FT_MAX_CLASSES];
            if (k != 1) {
                set_why("the model's ops after the head: DEQUANTIZE is not the last", "");
                return FT_ST_UNSUPPORTED;
            }
            *type = FT_INFER_OUT_FLOAT32;
            if (!y) return FT_ST_OK;
            ft_tfl_dequantize(a, C, si, zi, (uint8_t *)f);
            for (j = 0; j < C; j++) ft_wrf32(out + 4u * j, f[j]);
            return FT_ST_OK;
        }
        if (y) memcpy(a, b, C);
    }
    if (y) memcpy(out, a, C);
    return FT_ST_OK;
}

const char *ftd_model_why(void)
{
    return g_why;
}
#endif

int ftd_full_image_ok(void)
{
#if FT_BACKBONE
    return ft_port_flash_map(FT_SLOT_BASE(0), (size_t)FT_N_SLOTS * FT_SLOT_SIZE) != NULL;
#else
    return 0;
#endif
}
