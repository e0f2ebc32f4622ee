#include "ft_tfl_interp.h"
#include "ft_tfl_reader.h"
#include "ft_tfl_ops_dsp.h"
#include <math.h>
#include <string.h>

/* tflite BuiltinOperator codes */
enum {
    OP_ADD = 0,
    OP_AVERAGE_POOL_2D = 1,
    OP_CONV_2D = 3,
    OP_DEPTHWISE_CONV_2D = 4,
    OP_DEQUANTIZE = 6,
    OP_FULLY_CONNECTED = 9,
    OP_MAX_POOL_2D = 17,
    OP_RESHAPE = 22,
    OP_SOFTMAX = 25,
    OP_PAD = 34,
    OP_MEAN = 40,
    OP_PADV2 = 60,
    OP_QUANTIZE = 114
};

/* tflite BuiltinOptions union types of the options tables read here */
enum { OPT_CONV = 1, OPT_DWCONV = 2, OPT_POOL = 5, OPT_FC = 8, OPT_SOFTMAX = 9, OPT_ADD = 11, OPT_REDUCER = 27 };

static const struct {
    uint8_t code;
    const char *name;
} op_names[] = {
    {0, "ADD"}, {1, "AVERAGE_POOL_2D"}, {2, "CONCATENATION"}, {3, "CONV_2D"}, {4, "DEPTHWISE_CONV_2D"},
    {5, "DEPTH_TO_SPACE"}, {6, "DEQUANTIZE"}, {7, "EMBEDDING_LOOKUP"}, {8, "FLOOR"}, {9, "FULLY_CONNECTED"},
    {11, "L2_NORMALIZATION"}, {12, "L2_POOL_2D"}, {13, "LOCAL_RESPONSE_NORMALIZATION"}, {14, "LOGISTIC"},
    {16, "LSTM"}, {17, "MAX_POOL_2D"}, {18, "MUL"}, {19, "RELU"}, {20, "RELU_N1_TO_1"}, {21, "RELU6"},
    {22, "RESHAPE"}, {23, "RESIZE_BILINEAR"}, {24, "RNN"}, {25, "SOFTMAX"}, {26, "SPACE_TO_DEPTH"},
    {27, "SVDF"}, {28, "TANH"}, {32, "CUSTOM"}, {34, "PAD"}, {36, "GATHER"}, {37, "BATCH_TO_SPACE_ND"},
    {38, "SPACE_TO_BATCH_ND"}, {39, "TRANSPOSE"}, {40, "MEAN"}, {41, "SUB"}, {42, "DIV"}, {43, "SQUEEZE"},
    {44, "UNIDIRECTIONAL_SEQUENCE_LSTM"}, {45, "STRIDED_SLICE"}, {47, "EXP"}, {49, "SPLIT"},
    {50, "LOG_SOFTMAX"}, {53, "CAST"}, {54, "PRELU"}, {55, "MAXIMUM"}, {56, "ARG_MAX"}, {57, "MINIMUM"},
    {60, "PADV2"}, {74, "SUM"}, {75, "SQRT"}, {76, "RSQRT"}, {77, "SHAPE"}, {79, "ARG_MIN"},
    {82, "REDUCE_MAX"}, {83, "PACK"}, {88, "UNPACK"}, {97, "RESIZE_NEAREST_NEIGHBOR"}, {98, "LEAKY_RELU"},
    {102, "SPLIT_V"}, {114, "QUANTIZE"}, {117, "HARD_SWISH"}, {126, "BATCH_MATMUL"},
};

/* ---- the refusal reason, without stdio ------------------------------------------------------------ */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_str(sbuf *b, const char *t)
{
    while (*t && b->n + 1 < b->cap) b->s[b->n++] = *t++;
    b->s[b->n] = 0;
}

static void sb_num(sbuf *b, int64_t v)
{
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
    if (v < 0) sb_str(b, "-");
    do {
        tmp[k++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u && k < 23);
    while (k > 0 && b->n + 1 < b->cap) b->s[b->n++] = tmp[--k];
    b->s[b->n] = 0;
}

const char *ft_tfl_op_name(uint32_t code, char *buf, size_t size)
{
    size_t i;
    sbuf b;
    for (i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (op_names[i].code == code) return op_names[i].name;
    b.s = buf;
    b.n = 0;
    b.cap = size;
    if (size) buf[0] = 0;
    sb_str(&b, "BUILTIN_");
    sb_num(&b, code);
    return buf;
}

/* Verification context: the reader plus the reason being written. */
typedef struct {
    ft_tfl_model *m;
    ft_fb fb;
    sbuf why;
    uint32_t op_index;
    uint32_t code;
} vctx;

/* Sets the reason "<prefix>: <what>[ <num>]" and returns st. */
static ft_status refuse(vctx *v, ft_status st, const char *what, int64_t num, int with_num)
{
    char nb[24];
    v->why.n = 0;
    v->why.s[0] = 0;
    if (v->code != 0xFFFFFFFFu) {
        sb_str(&v->why, "op ");
        sb_num(&v->why, v->op_index);
        sb_str(&v->why, " ");
        sb_str(&v->why, ft_tfl_op_name(v->code, nb, sizeof nb));
        sb_str(&v->why, ": ");
    }
    sb_str(&v->why, what);
    if (with_num) {
        sb_str(&v->why, " ");
        sb_num(&v->why, num);
    }
    return st;
}

#define REFUSE(st, what) return refuse(v, (st), (what), 0, 0)
#define REFUSE_N(st, what, num) return refuse(v, (st), (what), (int64_t)(num), 1)
/* A reader error is a malformed image. */
#define RD(expr) do { if ((expr) != FT_OK) REFUSE(FT_ERR_FORMAT, "malformed flatbuffer"); } while (0)

static int finite_pos(float f) { return isfinite(f) && f > 0.0f; }

static uint32_t type_size(uint8_t type)
{
    switch (type) {
    case FT_TFL_FLOAT32: return 4;
    case FT_TFL_INT32: return 4;
    case FT_TFL_INT64: return 8;
    case FT_TFL_INT8: return 1;
    default: return 0;
    }
}

static ft_status read_tensor(vctx *v, uint32_t tt, const ft_fb_vec *buffers, uint16_t idx)
{
    ft_tfl_tensor *t = &v->m->tensors[idx];
    ft_fb_vec shape, data, vscale, vzp;
    uint32_t buffer, q, bt, k, esize;
    uint64_t count = 1;
    uint8_t is_var;
    memset(t, 0, sizeof *t);
    t->first = t->last = -1;
    t->buf = (int16_t)idx;
    RD(ft_fb_vector(&v->fb, tt, 0, 4, &shape));
    RD(ft_fb_u8(&v->fb, tt, 1, 0, &t->type));
    RD(ft_fb_u32(&v->fb, tt, 2, 0, &buffer));
    RD(ft_fb_u8(&v->fb, tt, 5, 0, &is_var));
    if (is_var) REFUSE_N(FT_ERR_UNSUPPORTED, "variable tensor", idx);
    if (shape.n > FT_TFL_MAX_DIMS) REFUSE_N(FT_ERR_UNSUPPORTED, "tensor rank above 4: tensor", idx);
    t->rank = (uint8_t)shape.n;
    for (k = 0; k < shape.n; k++) {
        int32_t d = ft_fb_rd_i32(&v->fb, shape.pos + 4u * k);
        if (d < 1) REFUSE_N(FT_ERR_UNSUPPORTED, "dynamic or empty dimension in tensor", idx);
        t->dims[k] = d;
        count *= (uint64_t)d;
        if (count > 0x7FFFFFFFu) REFUSE_N(FT_ERR_RANGE, "tensor too large:", idx);
    }
    esize = type_size(t->type);
    if (esize == 0) {
        t->bytes = 0; /* a type no supported op takes: refused where an op uses it */
    } else if (count * esize > 0x7FFFFFFFu) {
        REFUSE_N(FT_ERR_RANGE, "tensor too large:", idx);
    } else {
        t->bytes = (uint32_t)(count * esize);
    }
    t->count = (uint32_t)count;
    if (buffer >= buffers->n) REFUSE_N(FT_ERR_FORMAT, "buffer index out of range in tensor", idx);
    RD(ft_fb_vec_table(&v->fb, buffers, buffer, &bt));
    RD(ft_fb_vector(&v->fb, bt, 0, 1, &data));
    {
        uint64_t off, size;
        RD(ft_fb_u64(&v->fb, bt, 1, 0, &off));
        RD(ft_fb_u64(&v->fb, bt, 2, 0, &size));
        if (off > 1 || size > 0) REFUSE(FT_ERR_UNSUPPORTED, "buffer stored outside the flatbuffer (>2 GB layout)");
    }
    if (data.n > 0) {
        if (esize == 0 || data.n != t->bytes) REFUSE_N(FT_ERR_FORMAT, "constant buffer size mismatch in tensor", idx);
        t->is_const = 1;
        t->ready = 1;
        t->data = v->fb.buf + data.pos;
    }
    RD(ft_fb_table(&v->fb, tt, 4, &q));
    t->scale = 0.0f;
    t->zp = 0;
    if (q) {
        RD(ft_fb_vector(&v->fb, q, 2, 4, &vscale));
        RD(ft_fb_vector(&v->fb, q, 3, 8, &vzp));
        RD(ft_fb_i32(&v->fb, q, 6, 0, &t->qdim));
        if (vscale.n) {
            t->scales = v->fb.buf + vscale.pos;
            t->n_scales = vscale.n;
            t->scale = ft_fb_rd_f32(&v->fb, vscale.pos);
        }
        if (vzp.n) {
            int64_t z = ft_fb_rd_i64(&v->fb, vzp.pos);
            t->zps = v->fb.buf + vzp.pos;
            t->n_zps = vzp.n;
            t->zp = (z < -0x7FFFFFFF || z > 0x7FFFFFFF) ? 0x7FFFFFFF : (int32_t)z; /* refused where used */
        }
    }
    return FT_OK;
}

/* ---- per-op checks -------------------------------------------------------------------------------- */
static ft_tfl_tensor *T(vctx *v, int16_t i) { return &v->m->tensors[i]; }

/* An int8 activation with one scale > 0 and a zero point in range. */
static ft_status check_act(vctx *v, int16_t i, const char *role)
{
    ft_tfl_tensor *t = T(v, i);
    if (t->type != FT_TFL_INT8) {
        v->why.n = 0;
        refuse(v, FT_ERR_UNSUPPORTED, role, 0, 0);
        sb_str(&v->why, " is not int8 (type ");
        sb_num(&v->why, t->type);
        sb_str(&v->why, ")");
        return FT_ERR_UNSUPPORTED;
    }
    if (!t->n_scales || !finite_pos(t->scale) || t->zp < -128 || t->zp > 127) {
        refuse(v, FT_ERR_UNSUPPORTED, role, 0, 0);
        sb_str(&v->why, " lacks int8 quantization");
        return FT_ERR_UNSUPPORTED;
    }
    return FT_OK;
}

/* Filter quantization: n scales (1 or per channel along qdim), all > 0, zero points 0 when per channel. */
static ft_status check_filter_quant(vctx *v, int16_t fi, uint32_t channels, int32_t qdim, int32_t *filter_zp)
{
    ft_tfl_tensor *f = T(v, fi);
    uint32_t k;
    if (f->type != FT_TFL_INT8) REFUSE(FT_ERR_UNSUPPORTED, "weights are not int8 (float or hybrid model)");
    if (!f->is_const) REFUSE(FT_ERR_UNSUPPORTED, "weights are not constant");
    if (f->n_scales != 1 && f->n_scales != channels) REFUSE(FT_ERR_FORMAT, "weight scales do not match the channels");
    if (f->n_scales > 1 && f->qdim != qdim) REFUSE(FT_ERR_UNSUPPORTED, "per-channel quantization on another axis");
    if (f->n_zps != 0 && f->n_zps != f->n_scales) REFUSE(FT_ERR_FORMAT, "weight zero points do not match the scales");
    for (k = 0; k < f->n_scales; k++)
        if (!finite_pos(ft_fb_rd_f32(&v->fb, (uint32_t)(f->scales - v->fb.buf) + 4u * k)))
            REFUSE(FT_ERR_FORMAT, "weight scale not finite and positive");
    /* conv and depthwise (filter_zp NULL) and per-channel weights need zero points 0, as TFLM checks */
    if (filter_zp) *filter_zp = 0;
    for (k = 0; k < f->n_zps; k++) {
        int64_t z = ft_fb_rd_i64(&v->fb, (uint32_t)(f->zps - v->fb.buf) + 8u * k);
        if (z != 0 && (f->n_scales > 1 || !filter_zp || z < -128 || z > 127))
            REFUSE(FT_ERR_UNSUPPORTED, "nonzero weight zero point");
        if (filter_zp) *filter_zp = (int32_t)z;
    }
    return FT_OK;
}

static ft_status check_bias(vctx *v, int16_t bi, uint32_t channels, const uint8_t **bias)
{
    ft_tfl_tensor *b;
    *bias = NULL;
    if (bi < 0) return FT_OK;
    b = T(v, bi);
    if (b->type != FT_TFL_INT32 || !b->is_const) REFUSE(FT_ERR_UNSUPPORTED, "bias is not a constant int32 tensor");
    if (b->count != channels) REFUSE(FT_ERR_FORMAT, "bias size does not match the channels");
    *bias = b->data;
    return FT_OK;
}

static ft_status act_range(vctx *v, uint8_t act, const ft_tfl_tensor *out, int32_t *lo, int32_t *hi)
{
    if (ft_tfl_act_range(act, out->scale, out->zp, lo, hi) != FT_OK)
        REFUSE_N(FT_ERR_UNSUPPORTED, "fused activation", act);
    return FT_OK;
}

/* Reads padding/strides/dilations/activation of a conv, depthwise or pool options table. */
typedef struct {
    uint8_t padding, act;
    int32_t stride_w, stride_h, dil_w, dil_h, filter_w, filter_h, depth_mult;
} conv_opts;

static ft_status read_options(vctx *v, uint32_t opt, uint8_t opt_type, uint8_t want, conv_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dil_w = o->dil_h = 1;
    if (opt && opt_type != want) REFUSE(FT_ERR_FORMAT, "options of another op");
    if (!opt) return FT_OK;
    RD(ft_fb_u8(&v->fb, opt, 0, 0, &o->padding));
    RD(ft_fb_i32(&v->fb, opt, 1, 0, &o->stride_w));
    RD(ft_fb_i32(&v->fb, opt, 2, 0, &o->stride_h));
    if (want == OPT_CONV) {
        RD(ft_fb_u8(&v->fb, opt, 3, 0, &o->act));
        RD(ft_fb_i32(&v->fb, opt, 4, 1, &o->dil_w));
        RD(ft_fb_i32(&v->fb, opt, 5, 1, &o->dil_h));
    } else if (want == OPT_DWCONV) {
        RD(ft_fb_i32(&v->fb, opt, 3, 0, &o->depth_mult));
        RD(ft_fb_u8(&v->fb, opt, 4, 0, &o->act));
        RD(ft_fb_i32(&v->fb, opt, 5, 1, &o->dil_w));
        RD(ft_fb_i32(&v->fb, opt, 6, 1, &o->dil_h));
    } else {
        RD(ft_fb_i32(&v->fb, opt, 3, 0, &o->filter_w));
        RD(ft_fb_i32(&v->fb, opt, 4, 0, &o->filter_h));
        RD(ft_fb_u8(&v->fb, opt, 5, 0, &o->act));
    }
    return FT_OK;
}

static ft_status check_geometry(vctx *v, const conv_opts *o, const ft_tfl_tensor *in, const ft_tfl_tensor *out,
                                int32_t fh, int32_t fw, int32_t *pad_h, int32_t *pad_w)
{
    int32_t oh, ow;
    if (o->padding > 1) REFUSE_N(FT_ERR_UNSUPPORTED, "padding type", o->padding);
    if (o->stride_w < 1 || o->stride_h < 1 || o->dil_w < 1 || o->dil_h < 1 || fh < 1 || fw < 1)
        REFUSE(FT_ERR_FORMAT, "stride, dilation or filter size below 1");
    if (o->stride_w > 0xFFFF || o->stride_h > 0xFFFF || o->dil_w > 0xFFFF || o->dil_h > 0xFFFF || fh > 0xFFFF ||
        fw > 0xFFFF)
        REFUSE(FT_ERR_RANGE, "stride, dilation or filter size above 65535");
    if (in->rank != 4 || out->rank != 4) REFUSE(FT_ERR_UNSUPPORTED, "input and output must be 4-D (NHWC)");
    oh = ft_tfl_out_size(o->padding == 0, in->dims[1], fh, o->stride_h, o->dil_h);
    ow = ft_tfl_out_size(o->padding == 0, in->dims[2], fw, o->stride_w, o->dil_w);
    if (oh != out->dims[1] || ow != out->dims[2] || in->dims[0] != out->dims[0])
        REFUSE(FT_ERR_FORMAT, "output shape does not match the input, filter, stride and padding");
    *pad_h = ft_tfl_padding(o->stride_h, o->dil_h, in->dims[1], fh, oh);
    *pad_w = ft_tfl_padding(o->stride_w, o->dil_w, in->dims[2], fw, ow);
    return FT_OK;
}

static ft_status verify_conv(vctx *v, ft_tfl_op *op, uint32_t opt, uint8_t opt_type, int depthwise)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *f = T(v, op->in[1]), *out = T(v, op->out);
    ft_tfl_conv_params *p = &op->p.conv;
    conv_opts o;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    FT_TRY(read_options(v, opt, opt_type, depthwise ? OPT_DWCONV : OPT_CONV, &o));
    if (f->rank != 4) REFUSE(FT_ERR_FORMAT, "filter must be 4-D");
    memset(p, 0, sizeof *p);
    FT_TRY(check_geometry(v, &o, in, out, f->dims[1], f->dims[2], &p->pad_h, &p->pad_w));
    p->batches = in->dims[0];
    p->in_h = in->dims[1];
    p->in_w = in->dims[2];
    p->in_c = in->dims[3];
    p->out_h = out->dims[1];
    p->out_w = out->dims[2];
    p->out_c = out->dims[3];
    p->filter_h = f->dims[1];
    p->filter_w = f->dims[2];
    if (depthwise) {
        if (f->dims[0] != 1 || f->dims[3] != p->out_c) REFUSE(FT_ERR_FORMAT, "filter shape does not match the output");
        if (p->out_c % p->in_c != 0) REFUSE(FT_ERR_FORMAT, "output channels not a multiple of the input channels");
        p->depth_mult = p->out_c / p->in_c;
        if (o.depth_mult != 0 && o.depth_mult != p->depth_mult) REFUSE(FT_ERR_FORMAT, "depth_multiplier mismatch");
        FT_TRY(check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 3, NULL));
        v->m->macs += (uint64_t)out->count * (uint64_t)p->filter_h * (uint64_t)p->filter_w;
    } else {
        p->filter_in_c = f->dims[3];
        if (f->dims[0] != p->out_c) REFUSE(FT_ERR_FORMAT, "filter shape does not match the output");
        if (p->in_c % p->filter_in_c != 0 || p->out_c % (p->in_c / p->filter_in_c) != 0)
            REFUSE(FT_ERR_FORMAT, "channels do not split into groups");
        FT_TRY(check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 0, NULL));
        v->m->macs += (uint64_t)out->count * (uint64_t)p->filter_h * (uint64_t)p->filter_w * (uint64_t)p->filter_in_c;
    }
    FT_TRY(check_bias(v, op->in[2], (uint32_t)p->out_c, &p->bias));
    p->stride_h = o.stride_h;
    p->stride_w = o.stride_w;
    p->dil_h = o.dil_h;
    p->dil_w = o.dil_w;
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    p->filter_scales = f->scales;
    p->n_scales = f->n_scales;
    return act_range(v, o.act, out, &p->act_min, &p->act_max);
}

static ft_status verify_fc(vctx *v, ft_tfl_op *op, uint32_t opt, uint8_t opt_type)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *f = T(v, op->in[1]), *out = T(v, op->out);
    ft_tfl_fc_params *p = &op->p.fc;
    uint8_t act = 0, fmt = 0;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    if (opt && opt_type != OPT_FC) REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) {
        RD(ft_fb_u8(&v->fb, opt, 0, 0, &act));
        RD(ft_fb_u8(&v->fb, opt, 1, 0, &fmt));
    }
    if (fmt != 0) REFUSE(FT_ERR_UNSUPPORTED, "shuffled weights format");
    if (f->rank != 2) REFUSE(FT_ERR_FORMAT, "weights must be 2-D");
    memset(p, 0, sizeof *p);
    p->out_c = f->dims[0];
    p->accum_depth = f->dims[1];
    if (in->count % (uint32_t)p->accum_depth != 0) REFUSE(FT_ERR_FORMAT, "input size not a multiple of the weights' depth");
    p->batches = (int32_t)(in->count / (uint32_t)p->accum_depth);
    if ((uint64_t)p->batches * (uint64_t)p->out_c != out->count) REFUSE(FT_ERR_FORMAT, "output size mismatch");
    FT_TRY(check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 0, &p->filter_zp));
    FT_TRY(check_bias(v, op->in[2], (uint32_t)p->out_c, &p->bias));
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    p->filter_scales = f->scales;
    p->n_scales = f->n_scales;
    v->m->macs += (uint64_t)out->count * (uint64_t)p->accum_depth;
    return act_range(v, act, out, &p->act_min, &p->act_max);
}

static ft_status verify_pool(vctx *v, ft_tfl_op *op, uint32_t opt, uint8_t opt_type)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *out = T(v, op->out);
    ft_tfl_pool_params *p = &op->p.pool;
    conv_opts o;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    FT_TRY(read_options(v, opt, opt_type, OPT_POOL, &o));
    memset(p, 0, sizeof *p);
    FT_TRY(check_geometry(v, &o, in, out, o.filter_h, o.filter_w, &p->pad_h, &p->pad_w));
    if (in->dims[3] != out->dims[3]) REFUSE(FT_ERR_FORMAT, "channels differ");
    if (op->code == OP_AVERAGE_POOL_2D && (p->pad_h >= o.filter_h || p->pad_w >= o.filter_w))
        REFUSE(FT_ERR_FORMAT, "a window lies entirely in the padding");
    p->batches = in->dims[0];
    p->in_h = in->dims[1];
    p->in_w = in->dims[2];
    p->c = in->dims[3];
    p->out_h = out->dims[1];
    p->out_w = out->dims[2];
    p->filter_h = o.filter_h;
    p->filter_w = o.filter_w;
    p->stride_h = o.stride_h;
    p->stride_w = o.stride_w;
    v->m->macs += (uint64_t)out->count * (uint64_t)o.filter_h * (uint64_t)o.filter_w;
    return act_range(v, o.act, out, &p->act_min, &p->act_max);
}

/* Right-aligns a tensor's dims to 4 (leading 1s). */
static void dims4(const ft_tfl_tensor *t, int32_t d[4])
{
    int k;
    for (k = 0; k < 4; k++) d[k] = 1;
    for (k = 0; k < t->rank; k++) d[4 - t->rank + k] = t->dims[k];
}

static ft_status verify_add(vctx *v, ft_tfl_op *op, uint32_t opt, uint8_t opt_type)
{
    ft_tfl_tensor *a = T(v, op->in[0]), *b = T(v, op->in[1]), *out = T(v, op->out);
    ft_tfl_add_params *p = &op->p.add;
    uint8_t act = 0;
    int k;
    FT_TRY(check_act(v, op->in[0], "input 1"));
    FT_TRY(check_act(v, op->in[1], "input 2"));
    FT_TRY(check_act(v, op->out, "output"));
    if (opt && opt_type != OPT_ADD) REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) RD(ft_fb_u8(&v->fb, opt, 0, 0, &act));
    memset(p, 0, sizeof *p);
    dims4(a, p->in1_dims);
    dims4(b, p->in2_dims);
    dims4(out, p->out_dims);
    for (k = 0; k < 4; k++) {
        int32_t d = p->in1_dims[k] > p->in2_dims[k] ? p->in1_dims[k] : p->in2_dims[k];
        if ((p->in1_dims[k] != d && p->in1_dims[k] != 1) || (p->in2_dims[k] != d && p->in2_dims[k] != 1) ||
            p->out_dims[k] != d)
            REFUSE(FT_ERR_FORMAT, "shapes do not broadcast to the output");
    }
    p->in1_zp = a->zp;
    p->in2_zp = b->zp;
    p->output_zp = out->zp;
    p->in1_scale = a->scale;
    p->in2_scale = b->scale;
    p->output_scale = out->scale;
    v->m->macs += out->count;
    return act_range(v, act, out, &p->act_min, &p->act_max);
}

static ft_status verify_mean(vctx *v, ft_tfl_op *op)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *ax = T(v, op->in[1]), *out = T(v, op->out);
    ft_tfl_mean_params *p = &op->p.mean;
    uint32_t k, kept = 1;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    if (op->in[1] < 0 || ax->type != FT_TFL_INT32 || !ax->is_const) REFUSE(FT_ERR_UNSUPPORTED, "axis is not a constant int32 tensor");
    memset(p, 0, sizeof *p);
    dims4(in, p->in_dims);
    for (k = 0; k < ax->count; k++) {
        int32_t a = ft_fb_rd_i32(&v->fb, (uint32_t)(ax->data - v->fb.buf) + 4u * k);
        if (a < 0) a += in->rank;
        if (a < 0 || a >= in->rank) REFUSE_N(FT_ERR_FORMAT, "axis out of range:", a);
        p->reduce[4 - in->rank + a] = 1;
    }
    for (k = 0; k < 4; k++)
        if (!p->reduce[k]) kept *= (uint32_t)p->in_dims[k];
    if (kept != out->count) REFUSE(FT_ERR_FORMAT, "output size does not match the reduced input");
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    v->m->macs += in->count;
    return FT_OK;
}

static ft_status verify_pad(vctx *v, ft_tfl_op *op)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *pd = T(v, op->in[1]), *out = T(v, op->out);
    ft_tfl_pad_params *p = &op->p.pad;
    int32_t od[4];
    int k;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    if (op->in[1] < 0 || !pd->is_const || (pd->type != FT_TFL_INT32 && pd->type != FT_TFL_INT64))
        REFUSE(FT_ERR_UNSUPPORTED, "paddings are not a constant int32/int64 tensor");
    if (pd->rank != 2 || pd->dims[0] != in->rank || pd->dims[1] != 2) REFUSE(FT_ERR_FORMAT, "paddings shape");
    memset(p, 0, sizeof *p);
    dims4(in, p->in_dims);
    for (k = 0; k < in->rank; k++) {
        uint32_t pos = (uint32_t)(pd->data - v->fb.buf);
        int64_t lo, hi;
        if (pd->type == FT_TFL_INT32) {
            lo = ft_fb_rd_i32(&v->fb, pos + 8u * (uint32_t)k);
            hi = ft_fb_rd_i32(&v->fb, pos + 8u * (uint32_t)k + 4u);
        } else {
            lo = ft_fb_rd_i64(&v->fb, pos + 16u * (uint32_t)k);
            hi = ft_fb_rd_i64(&v->fb, pos + 16u * (uint32_t)k + 8u);
        }
        if (lo < 0 || hi < 0 || lo > 0xFFFF || hi > 0xFFFF) REFUSE(FT_ERR_UNSUPPORTED, "negative or huge padding");
        p->before[4 - in->rank + k] = (int32_t)lo;
        p->after[4 - in->rank + k] = (int32_t)hi;
    }
    dims4(out, od);
    for (k = 0; k < 4; k++)
        if ((int64_t)p->before[k] + p->in_dims[k] + p->after[k] != od[k] || (out->rank != in->rank))
            REFUSE(FT_ERR_FORMAT, "output shape does not match the paddings");
    p->pad_value = (int8_t)out->zp;
    if (op->code == OP_PADV2 && op->in[2] >= 0) {
        ft_tfl_tensor *cv = T(v, op->in[2]);
        if (!cv->is_const || cv->type != FT_TFL_INT8 || cv->count != 1) REFUSE(FT_ERR_UNSUPPORTED, "constant value");
        p->pad_value = (int8_t)cv->data[0];
    }
    v->m->macs += out->count;
    return FT_OK;
}

static ft_status verify_softmax(vctx *v, ft_tfl_op *op, uint32_t opt, uint8_t opt_type)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *out = T(v, op->out);
    ft_tfl_softmax_params *p = &op->p.softmax;
    float beta = 0.0f;
    double real;
    FT_TRY(check_act(v, op->in[0], "input"));
    FT_TRY(check_act(v, op->out, "output"));
    if (opt && opt_type != OPT_SOFTMAX) REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) RD(ft_fb_f32(&v->fb, opt, 0, 0.0f, &beta));
    /* TFLM's int8 softmax writes a fixed output quantization: scale 1/256, zero point -128 */
    if (out->zp != -128 || fabs((double)out->scale - 1.0 / 256.0) > 0.001 / 256.0)
        REFUSE(FT_ERR_UNSUPPORTED, "output quantization is not 1/256, -128");
    if (in->rank < 1 || in->count != out->count) REFUSE(FT_ERR_FORMAT, "output shape mismatch");
    /* the exp() input must be representable: beta * scale * 2^26 >= 0.5 (left shift >= 0) or 0 */
    real = (double)beta * (double)in->scale * 67108864.0;
    if (!isfinite(beta) || beta < 0.0f || (real != 0.0 && real < 0.5)) REFUSE(FT_ERR_UNSUPPORTED, "beta out of range");
    memset(p, 0, sizeof *p);
    p->depth = in->dims[in->rank - 1];
    /* the Q12.19 sum of exps overflows past 4095 classes */
    if (p->depth > 4095) REFUSE_N(FT_ERR_RANGE, "classes above 4095:", p->depth);
    p->outer = (int32_t)(in->count / (uint32_t)p->depth);
    p->beta = beta;
    p->input_scale = in->scale;
    v->m->macs += 2u * (uint64_t)in->count;
    return FT_OK;
}

static ft_status verify_quant(vctx *v, ft_tfl_op *op)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *out = T(v, op->out);
    if (in->count != out->count) REFUSE(FT_ERR_FORMAT, "output size mismatch");
    if (op->code == OP_DEQUANTIZE) {
        FT_TRY(check_act(v, op->in[0], "input"));
        if (out->type != FT_TFL_FLOAT32) REFUSE(FT_ERR_UNSUPPORTED, "output is not float32");
    } else {
        FT_TRY(check_act(v, op->out, "output"));
        if (in->type == FT_TFL_INT8)
            FT_TRY(check_act(v, op->in[0], "input"));
        else if (in->type != FT_TFL_FLOAT32)
            REFUSE(FT_ERR_UNSUPPORTED, "input is not float32 or int8");
    }
    v->m->macs += in->count;
    return FT_OK;
}

static ft_status verify_reshape(vctx *v, ft_tfl_op *op)
{
    ft_tfl_tensor *in = T(v, op->in[0]), *out = T(v, op->out);
    if (in->type != out->type || type_size(in->type) == 0) REFUSE(FT_ERR_UNSUPPORTED, "type change or unknown type");
    if (in->count != out->count) REFUSE(FT_ERR_FORMAT, "element counts differ");
    return FT_OK;
}

/* ---- operators ----------------------------------------------------------------------------------- */
static ft_status read_op(vctx *v, uint32_t ot, const ft_fb_vec *opcodes, uint16_t oi)
{
    ft_tfl_model *m = v->m;
    ft_tfl_op *op = &m->ops[oi];
    ft_fb_vec ins, outs;
    uint32_t opcode_index, oc, opt, k;
    uint8_t dep, opt_type;
    int32_t code;
    memset(op, 0, sizeof *op);
    op->in[0] = op->in[1] = op->in[2] = -1;
    v->op_index = oi;
    v->code = 0xFFFFFFFFu;
    RD(ft_fb_u32(&v->fb, ot, 0, 0, &opcode_index));
    if (opcode_index >= opcodes->n) REFUSE_N(FT_ERR_FORMAT, "opcode index out of range in op", oi);
    RD(ft_fb_vec_table(&v->fb, opcodes, opcode_index, &oc));
    RD(ft_fb_u8(&v->fb, oc, 0, 0, &dep));
    RD(ft_fb_i32(&v->fb, oc, 3, 0, &code));
    /* schema >= 3a: the real code is the larger of the deprecated int8 field and the int32 one */
    if ((int32_t)(int8_t)dep > code) code = (int8_t)dep;
    if (code < 0 || code > 255) REFUSE_N(FT_ERR_UNSUPPORTED, "unknown builtin operator", code);
    v->code = (uint32_t)code;
    op->code = (uint8_t)code;
    switch (code) {
    case OP_ADD: case OP_AVERAGE_POOL_2D: case OP_CONV_2D: case OP_DEPTHWISE_CONV_2D: case OP_DEQUANTIZE:
    case OP_FULLY_CONNECTED: case OP_MAX_POOL_2D: case OP_RESHAPE: case OP_SOFTMAX: case OP_PAD: case OP_MEAN:
    case OP_PADV2: case OP_QUANTIZE:
        break;
    default:
        REFUSE(FT_ERR_UNSUPPORTED, "operator not supported by this firmware");
    }
    RD(ft_fb_vector(&v->fb, ot, 1, 4, &ins));
    RD(ft_fb_vector(&v->fb, ot, 2, 4, &outs));
    RD(ft_fb_u8(&v->fb, ot, 3, 0, &opt_type));
    RD(ft_fb_table(&v->fb, ot, 4, &opt));
    if (outs.n != 1) REFUSE_N(FT_ERR_UNSUPPORTED, "outputs:", outs.n);
    if (ins.n < 1 || ins.n > 3) REFUSE_N(FT_ERR_UNSUPPORTED, "inputs:", ins.n);
    for (k = 0; k < ins.n; k++) {
        int32_t t = ft_fb_rd_i32(&v->fb, ins.pos + 4u * k);
        if (t < -1 || t >= m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "tensor index out of range:", t);
        if (t >= 0 && !m->tensors[t].ready) REFUSE_N(FT_ERR_FORMAT, "input computed later or never: tensor", t);
        op->in[k] = (int16_t)t;
    }
    if (op->in[0] < 0) REFUSE(FT_ERR_FORMAT, "missing input");
    {
        int32_t t = ft_fb_rd_i32(&v->fb, outs.pos);
        if (t < 0 || t >= m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "tensor index out of range:", t);
        if (m->tensors[t].ready) REFUSE_N(FT_ERR_FORMAT, "output is a constant, an input or computed twice: tensor", t);
        if (type_size(m->tensors[t].type) == 0) REFUSE_N(FT_ERR_UNSUPPORTED, "output type", m->tensors[t].type);
        op->out = (int16_t)t;
    }
    switch (code) {
    case OP_CONV_2D:
    case OP_DEPTHWISE_CONV_2D:
        if (ins.n < 2) REFUSE(FT_ERR_FORMAT, "missing filter");
        FT_TRY(verify_conv(v, op, opt, opt_type, code == OP_DEPTHWISE_CONV_2D));
        break;
    case OP_FULLY_CONNECTED:
        if (ins.n < 2 || op->in[1] < 0) REFUSE(FT_ERR_FORMAT, "missing weights");
        FT_TRY(verify_fc(v, op, opt, opt_type));
        break;
    case OP_AVERAGE_POOL_2D:
    case OP_MAX_POOL_2D:
        FT_TRY(verify_pool(v, op, opt, opt_type));
        break;
    case OP_ADD:
        if (ins.n != 2 || op->in[1] < 0) REFUSE(FT_ERR_FORMAT, "needs two inputs");
        FT_TRY(verify_add(v, op, opt, opt_type));
        break;
    case OP_MEAN:
        if (ins.n != 2) REFUSE(FT_ERR_FORMAT, "needs an axis input");
        FT_TRY(verify_mean(v, op));
        break;
    case OP_PAD:
    case OP_PADV2:
        if (ins.n < 2) REFUSE(FT_ERR_FORMAT, "needs a paddings input");
        FT_TRY(verify_pad(v, op));
        break;
    case OP_SOFTMAX:
        FT_TRY(verify_softmax(v, op, opt, opt_type));
        break;
    case OP_QUANTIZE:
    case OP_DEQUANTIZE:
        FT_TRY(verify_quant(v, op));
        break;
    default: /* OP_RESHAPE */
        FT_TRY(verify_reshape(v, op));
        break;
    }
    m->tensors[op->out].ready = 1;
    return FT_OK;
}

/* ---- arena planning -------------------------------------------------------------------------------- */
static uint32_t align4(uint32_t x) { return (x + 3u) & ~3u; }

#if FT_TFL_OPTIMIZED
/* The DSP kernels' scratch (ft_tfl_ops_dsp.h): each op's own area, alive only while that op runs, placed after
 * the tensors at the lowest offset clear of every buffer alive at that op (its inputs and output included).
 * An op whose scratch would push the arena past `capacity` keeps the portable kernel. Returns the new top. */
static uint64_t plan_scratch(ft_tfl_model *m, uint64_t top, uint32_t capacity)
{
    uint16_t i, j;
    for (i = 0; i < m->n_ops; i++) {
        ft_tfl_op *op = &m->ops[i];
        uint64_t len = 0, off = 0;
        int moved = 1;
        if (op->code == OP_CONV_2D) len = ft_tfl_conv2d_dsp_scratch(&op->p.conv);
        else if (op->code == OP_DEPTHWISE_CONV_2D) len = ft_tfl_depthwise_dsp_scratch(&op->p.conv);
        else if (op->code == OP_FULLY_CONNECTED) len = ft_tfl_fc_dsp_scratch(&op->p.fc);
        if (len == 0) continue;
        len = (len + 3u) & ~(uint64_t)3u;
        while (moved) {
            moved = 0;
            for (j = 0; j < m->n_tensors; j++) {
                const ft_tfl_tensor *u = &m->tensors[j];
                uint64_t end = (uint64_t)u->offset + align4(u->bytes);
                if (u->is_const || u->buf != (int16_t)j || u->first < 0 || u->first > (int16_t)i || u->last < (int16_t)i)
                    continue; /* not an arena buffer alive at op i */
                if (off < end && u->offset < off + len) {
                    off = end;
                    moved = 1;
                }
            }
        }
        if (off + len > capacity) continue;
        op->scratch_off = (uint32_t)off;
        op->scratch_len = (uint32_t)len;
        if (off + len > top) top = off + len;
    }
    return top;
}
#endif

/* Lifetimes per buffer, then greedy placement (largest first, lowest offset that does not overlap a
 * placed buffer alive at the same time): TFLite Micro's GreedyMemoryPlanner strategy, over activations
 * only (TFLM's arena also holds its tensor/node structs and per-channel multipliers; here those live in
 * ft_tfl_model, and multipliers are computed per channel as each op runs). */
static ft_status plan(vctx *v, uint32_t capacity)
{
    ft_tfl_model *m = v->m;
    uint16_t i, j, n = 0, k;
    uint64_t top = 0;
    for (i = 0; i < m->n_ops; i++) {
        const ft_tfl_op *op = &m->ops[i];
        ft_tfl_tensor *o = &m->tensors[op->out];
        /* RESHAPE writes nothing new: its output is the input's buffer (in place) */
        if (op->code == OP_RESHAPE && !m->tensors[op->in[0]].is_const) o->buf = m->tensors[op->in[0]].buf;
        for (k = 0; k < 3; k++) {
            int16_t t = op->in[k];
            if (t >= 0 && !m->tensors[t].is_const) {
                ft_tfl_tensor *b = &m->tensors[m->tensors[t].buf];
                if (b->first < 0) b->first = 0; /* a graph input */
                if (b->last < (int16_t)i) b->last = (int16_t)i;
            }
        }
        {
            ft_tfl_tensor *b = &m->tensors[o->buf];
            if (b->first < 0 || b->first > (int16_t)i) b->first = (int16_t)i;
            if (b->last < (int16_t)i) b->last = (int16_t)i;
        }
    }
    for (i = 0; i < m->n_inputs; i++) {
        ft_tfl_tensor *b = &m->tensors[m->tensors[m->inputs[i]].buf];
        if (b->first < 0) b->first = 0;
        if (b->last < 0) b->last = 0;
    }
    for (i = 0; i < m->n_outputs; i++) {
        ft_tfl_tensor *b = &m->tensors[m->tensors[m->outputs[i]].buf];
        if (m->tensors[m->outputs[i]].is_const) continue;
        b->last = (int16_t)m->n_ops; /* the caller reads it after the last op */
        if (b->first < 0) b->first = 0;
    }
    /* a buffer's size: the largest tensor it holds (aliases have the same bytes) */
    for (i = 0; i < m->n_tensors; i++) {
        ft_tfl_tensor *t = &m->tensors[i];
        if (!t->is_const && t->buf == (int16_t)i && t->first >= 0) {
            /* insertion sort by size, descending; ties by index keep the plan deterministic */
            for (j = n; j > 0 && m->tensors[m->order[j - 1]].bytes < t->bytes; j--) m->order[j] = m->order[j - 1];
            m->order[j] = (int16_t)i;
            n++;
        }
    }
    for (i = 0; i < n; i++) {
        ft_tfl_tensor *t = &m->tensors[m->order[i]];
        uint32_t size = align4(t->bytes), off = 0;
        int moved = 1;
        /* raise the candidate past every conflicting placed buffer until none overlaps */
        while (moved) {
            moved = 0;
            for (j = 0; j < i; j++) {
                const ft_tfl_tensor *u = &m->tensors[m->order[j]];
                if (u->last < t->first || t->last < u->first) continue; /* not alive together */
                if (off < u->offset + align4(u->bytes) && u->offset < off + size) {
                    off = u->offset + align4(u->bytes);
                    moved = 1;
                }
            }
        }
        t->offset = off;
        if ((uint64_t)off + size > top) top = (uint64_t)off + size;
    }
    for (i = 0; i < m->n_tensors; i++) {
        ft_tfl_tensor *t = &m->tensors[i];
        if (!t->is_const) t->offset = m->tensors[t->buf].offset;
    }
#if FT_TFL_OPTIMIZED
    top = plan_scratch(m, top, capacity);
#endif
    m->arena_bytes = (uint32_t)top;
    v->code = 0xFFFFFFFFu;
    if (top > capacity) {
        refuse(v, FT_ERR_RANGE, "arena needs", (int64_t)top, 1);
        sb_str(&v->why, " bytes > ");
        sb_num(&v->why, capacity);
        return FT_ERR_RANGE;
    }
    return FT_OK;
}

static ft_status read_io(vctx *v, uint32_t sg, unsigned id, int16_t *list, uint16_t *n, int is_input)
{
    ft_fb_vec vec;
    uint32_t k;
    RD(ft_fb_vector(&v->fb, sg, id, 4, &vec));
    if (vec.n < 1 || vec.n > FT_TFL_MAX_IO) REFUSE_N(FT_ERR_UNSUPPORTED, is_input ? "graph inputs:" : "graph outputs:", vec.n);
    for (k = 0; k < vec.n; k++) {
        int32_t t = ft_fb_rd_i32(&v->fb, vec.pos + 4u * k);
        if (t < 0 || t >= v->m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "graph input/output index out of range:", t);
        if (type_size(v->m->tensors[t].type) == 0) REFUSE_N(FT_ERR_UNSUPPORTED, "graph input/output type", v->m->tensors[t].type);
        list[k] = (int16_t)t;
    }
    *n = (uint16_t)vec.n;
    return FT_OK;
}

ft_status ft_tfl_verify(ft_tfl_model *m, const uint8_t *image, uint32_t len, uint32_t arena_capacity)
{
    vctx vc, *v = &vc;
    uint32_t root, sg, version, k;
    ft_fb_vec opcodes, subgraphs, buffers, tensors, ops;
    ft_status st;
    if (!m || !image) return FT_ERR_ARG;
    memset(m, 0, sizeof *m);
    m->optimized = FT_TFL_OPTIMIZED;
    v->m = m;
    v->fb.buf = image;
    v->fb.len = len;
    v->why.s = m->reason;
    v->why.n = 0;
    v->why.cap = sizeof m->reason;
    v->code = 0xFFFFFFFFu;
    v->op_index = 0;
    if (ft_fb_root(&v->fb, &root) != FT_OK || !ft_fb_has_ident(&v->fb, "TFL3"))
        return refuse(v, FT_ERR_FORMAT, "not a .tflite flatbuffer", 0, 0);
    RD(ft_fb_u32(&v->fb, root, 0, 0, &version));
    if (version != 3) REFUSE_N(FT_ERR_UNSUPPORTED, "schema version", version);
    RD(ft_fb_vector(&v->fb, root, 1, 4, &opcodes));
    RD(ft_fb_vector(&v->fb, root, 2, 4, &subgraphs));
    RD(ft_fb_vector(&v->fb, root, 4, 4, &buffers));
    if (subgraphs.n != 1) REFUSE_N(FT_ERR_UNSUPPORTED, "subgraphs (control flow):", subgraphs.n);
    RD(ft_fb_vec_table(&v->fb, &subgraphs, 0, &sg));
    RD(ft_fb_vector(&v->fb, sg, 0, 4, &tensors));
    RD(ft_fb_vector(&v->fb, sg, 3, 4, &ops));
    if (tensors.n > FT_TFL_MAX_TENSORS) {
        refuse(v, FT_ERR_RANGE, "tensors", tensors.n, 1);
        sb_str(&v->why, " > FT_TFL_MAX_TENSORS ");
        sb_num(&v->why, FT_TFL_MAX_TENSORS);
        return FT_ERR_RANGE;
    }
    if (ops.n > FT_TFL_MAX_OPS) {
        refuse(v, FT_ERR_RANGE, "operators", ops.n, 1);
        sb_str(&v->why, " > FT_TFL_MAX_OPS ");
        sb_num(&v->why, FT_TFL_MAX_OPS);
        return FT_ERR_RANGE;
    }
    if (ops.n == 0) REFUSE(FT_ERR_FORMAT, "no operators");
    m->n_tensors = (uint16_t)tensors.n;
    m->n_ops = (uint16_t)ops.n;
    for (k = 0; k < tensors.n; k++) {
        uint32_t tt;
        RD(ft_fb_vec_table(&v->fb, &tensors, k, &tt));
        FT_TRY(read_tensor(v, tt, &buffers, (uint16_t)k));
    }
    FT_TRY(read_io(v, sg, 1, m->inputs, &m->n_inputs, 1));
    FT_TRY(read_io(v, sg, 2, m->outputs, &m->n_outputs, 0));
    for (k = 0; k < m->n_inputs; k++) {
        ft_tfl_tensor *t = &m->tensors[m->inputs[k]];
        if (t->is_const) REFUSE(FT_ERR_FORMAT, "a graph input is a constant");
        t->ready = 1;
    }
    for (k = 0; k < ops.n; k++) {
        uint32_t ot;
        RD(ft_fb_vec_table(&v->fb, &ops, k, &ot));
        FT_TRY(read_op(v, ot, &opcodes, (uint16_t)k));
    }
    v->code = 0xFFFFFFFFu;
    for (k = 0; k < m->n_outputs; k++)
        if (!m->tensors[m->outputs[k]].ready) REFUSE_N(FT_ERR_FORMAT, "graph output never computed: tensor", m->outputs[k]);
    if (m->macs > FT_TFL_MAX_MACS) {
        refuse(v, FT_ERR_RANGE, "multiply-accumulates", (int64_t)m->macs, 1);
        sb_str(&v->why, " > FT_TFL_MAX_MACS ");
        sb_num(&v->why, FT_TFL_MAX_MACS);
        return FT_ERR_RANGE;
    }
    st = plan(v, arena_capacity);
    if (st != FT_OK) return st;
    m->image = image;
    m->image_len = len;
    m->reason[0] = 0;
    return FT_OK;
}

/* ---- invoke -------------------------------------------------------------------------------------- */
const uint8_t *ft_tfl_tensor_data(const ft_tfl_model *m, unsigned idx, const uint8_t *arena)
{
    const ft_tfl_tensor *t;
    if (!m || idx >= m->n_tensors) return NULL;
    t = &m->tensors[idx];
    return t->is_const ? t->data : arena + t->offset;
}

uint8_t *ft_tfl_input(const ft_tfl_model *m, unsigned i, uint8_t *arena, uint32_t *bytes, const ft_tfl_tensor **t)
{
    const ft_tfl_tensor *x;
    if (!m || !arena || i >= m->n_inputs) return NULL;
    x = &m->tensors[m->inputs[i]];
    if (bytes) *bytes = x->bytes;
    if (t) *t = x;
    return arena + x->offset;
}

const uint8_t *ft_tfl_output(const ft_tfl_model *m, unsigned i, const uint8_t *arena, uint32_t *bytes,
                             const ft_tfl_tensor **t)
{
    const ft_tfl_tensor *x;
    if (!m || !arena || i >= m->n_outputs) return NULL;
    x = &m->tensors[m->outputs[i]];
    if (bytes) *bytes = x->bytes;
    if (t) *t = x;
    return ft_tfl_tensor_data(m, (unsigned)m->outputs[i], arena);
}

ft_status ft_tfl_invoke(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, ft_tfl_op_cb cb, void *ctx)
{
    return ft_tfl_invoke_until(m, arena, arena_size, m ? m->n_ops : 0u, cb, ctx);
}

/* CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: the DSP kernel where verify planned its scratch, else the
 * portable one (the same bytes either way). */
static void run_mac_op(const ft_tfl_model *m, const ft_tfl_op *op, const uint8_t *in, uint8_t *out, uint8_t *arena)
{
    const int8_t *x = (const int8_t *)in, *w = (const int8_t *)m->tensors[op->in[1]].data;
    int8_t *y = (int8_t *)out;
#if FT_TFL_OPTIMIZED
    if (m->optimized && op->scratch_len) {
        uint8_t *s = arena + op->scratch_off;
        if (op->code == OP_CONV_2D)
            ft_tfl_conv2d_dsp(&op->p.conv, x, w, y, s);
        else if (op->code == OP_DEPTHWISE_CONV_2D)
            ft_tfl_depthwise_dsp(&op->p.conv, x, w, y, s);
        else
            ft_tfl_fc_dsp(&op->p.fc, x, w, y, s);
        return;
    }
#else
    (void)arena;
#endif
    if (op->code == OP_CONV_2D)
        ft_tfl_conv2d(&op->p.conv, x, w, y);
    else if (op->code == OP_DEPTHWISE_CONV_2D)
        ft_tfl_depthwise_conv2d(&op->p.conv, x, w, y);
    else
        ft_tfl_fully_connected(&op->p.fc, x, w, y);
}

ft_status ft_tfl_invoke_until(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, uint16_t end, ft_tfl_op_cb cb,
                              void *ctx)
{
    uint16_t i;
    if (!m || !arena || !m->image || end > m->n_ops) return FT_ERR_ARG;
    if (arena_size < m->arena_bytes) return FT_ERR_NOSPACE;
    for (i = 0; i < end; i++) {
        const ft_tfl_op *op = &m->ops[i];
        const ft_tfl_tensor *ti = &m->tensors[op->in[0]], *to = &m->tensors[op->out];
        const uint8_t *in = ft_tfl_tensor_data(m, (unsigned)op->in[0], arena);
        uint8_t *out = arena + to->offset;
        switch (op->code) {
        case OP_CONV_2D:
        case OP_DEPTHWISE_CONV_2D:
        case OP_FULLY_CONNECTED:
            run_mac_op(m, op, in, out, arena);
            break;
        case OP_AVERAGE_POOL_2D:
            FT_TRY(ft_tfl_avg_pool(&op->p.pool, (const int8_t *)in, (int8_t *)out));
            break;
        case OP_MAX_POOL_2D:
            ft_tfl_max_pool(&op->p.pool, (const int8_t *)in, (int8_t *)out);
            break;
        case OP_ADD:
#if FT_TFL_OPTIMIZED
            if (m->optimized) {
                ft_tfl_add_fast(&op->p.add, (const int8_t *)in,
                                (const int8_t *)ft_tfl_tensor_data(m, (unsigned)op->in[1], arena), (int8_t *)out);
                break;
            }
#endif
            ft_tfl_add(&op->p.add, (const int8_t *)in, (const int8_t *)ft_tfl_tensor_data(m, (unsigned)op->in[1], arena),
                       (int8_t *)out);
            break;
        case OP_MEAN:
#if FT_TFL_OPTIMIZED
            if (m->optimized) {
                ft_tfl_mean_fast(&op->p.mean, (const int8_t *)in, (int8_t *)out);
                break;
            }
#endif
            ft_tfl_mean(&op->p.mean, (const int8_t *)in, (int8_t *)out);
            break;
        case OP_PAD:
        case OP_PADV2:
            ft_tfl_pad(&op->p.pad, (const int8_t *)in, (int8_t *)out);
            break;
        case OP_SOFTMAX:
            ft_tfl_softmax(&op->p.softmax, (const int8_t *)in, (int8_t *)out);
            break;
        case OP_QUANTIZE:
            if (ti->type == FT_TFL_FLOAT32)
                ft_tfl_quantize_f32(in, ti->count, to->scale, to->zp, (int8_t *)out);
            else
                ft_tfl_requantize((const int8_t *)in, ti->count, ti->scale, ti->zp, to->scale, to->zp, (int8_t *)out);
            break;
        case OP_DEQUANTIZE:
            ft_tfl_dequantize((const int8_t *)in, ti->count, ti->scale, ti->zp, out);
            break;
        case OP_RESHAPE:
            if (in != out) memmove(out, in, to->bytes); /* in place unless the input is a constant */
            break;
        default:
            return FT_ERR_STATE; /* verify admits only the ops above */
        }
        if (cb) cb(ctx, m, i, arena);
    }
    return FT_OK;
}
