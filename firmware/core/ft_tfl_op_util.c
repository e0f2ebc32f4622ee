/* Verification helpers shared by the interpreter's ops (ft_tfl_op.h): the refusal reason, activation / weight /
 * bias checks, and the options and checks of the op families that share them (conv + depthwise, the pools, the
 * pads). */
#include "ft_tfl_op.h"
#include <math.h>
#include <string.h>

/* ---- the refusal reason, without stdio ------------------------------------------------------------ */
void ft_tfl_sb_str(ft_tfl_sbuf *b, const char *t)
{
    while (*t && b->n + 1 < b->cap) b->s[b->n++] = *t++;
    b->s[b->n] = 0;
}

void ft_tfl_sb_num(ft_tfl_sbuf *b, int64_t v)
{
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
    if (v < 0) ft_tfl_sb_str(b, "-");
    do {
        tmp[k++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u && k < 23);
    while (k > 0 && b->n + 1 < b->cap) b->s[b->n++] = tmp[--k];
    b->s[b->n] = 0;
}

ft_status ft_tfl_refuse(ft_tfl_vctx *v, ft_status st, const char *what, int64_t num, int with_num)
{
    char nb[24];
    v->why.n = 0;
    v->why.s[0] = 0;
    if (v->code != 0xFFFFFFFFu) {
        ft_tfl_sb_str(&v->why, "op ");
        ft_tfl_sb_num(&v->why, v->op_index);
        ft_tfl_sb_str(&v->why, " ");
        ft_tfl_sb_str(&v->why, ft_tfl_op_name(v->code, nb, sizeof nb));
        ft_tfl_sb_str(&v->why, ": ");
    }
    ft_tfl_sb_str(&v->why, what);
    if (with_num) {
        ft_tfl_sb_str(&v->why, " ");
        ft_tfl_sb_num(&v->why, num);
    }
    return st;
}

/* ---- tensors ---------------------------------------------------------------------------------------- */
int ft_tfl_finite_pos(float f) { return isfinite(f) && f > 0.0f; }

uint32_t ft_tfl_type_size(uint8_t type)
{
    switch (type) {
    case FT_TFL_FLOAT32: return 4;
    case FT_TFL_INT32: return 4;
    case FT_TFL_INT64: return 8;
    case FT_TFL_INT8: return 1;
    default: return 0;
    }
}

ft_status ft_tfl_check_act(ft_tfl_vctx *v, int16_t i, const char *role)
{
    ft_tfl_tensor *t = ft_tfl_t(v, i);
    if (t->type != FT_TFL_INT8) {
        v->why.n = 0;
        ft_tfl_refuse(v, FT_ERR_UNSUPPORTED, role, 0, 0);
        ft_tfl_sb_str(&v->why, " is not int8 (type ");
        ft_tfl_sb_num(&v->why, t->type);
        ft_tfl_sb_str(&v->why, ")");
        return FT_ERR_UNSUPPORTED;
    }
    if (!t->n_scales || !ft_tfl_finite_pos(t->scale) || t->zp < -128 || t->zp > 127) {
        ft_tfl_refuse(v, FT_ERR_UNSUPPORTED, role, 0, 0);
        ft_tfl_sb_str(&v->why, " lacks int8 quantization");
        return FT_ERR_UNSUPPORTED;
    }
    return FT_OK;
}

ft_status ft_tfl_check_filter_quant(ft_tfl_vctx *v, int16_t fi, uint32_t channels, int32_t qdim, int32_t *filter_zp)
{
    ft_tfl_tensor *f = ft_tfl_t(v, fi);
    uint32_t k;
    if (f->type != FT_TFL_INT8) FT_REFUSE(FT_ERR_UNSUPPORTED, "weights are not int8 (float or hybrid model)");
    if (!f->is_const) FT_REFUSE(FT_ERR_UNSUPPORTED, "weights are not constant");
    if (f->n_scales != 1 && f->n_scales != channels) FT_REFUSE(FT_ERR_FORMAT, "weight scales do not match the channels");
    if (f->n_scales > 1 && f->qdim != qdim) FT_REFUSE(FT_ERR_UNSUPPORTED, "per-channel quantization on another axis");
    if (f->n_zps != 0 && f->n_zps != f->n_scales) FT_REFUSE(FT_ERR_FORMAT, "weight zero points do not match the scales");
    for (k = 0; k < f->n_scales; k++)
        if (!ft_tfl_finite_pos(ft_fb_rd_f32(&v->fb, (uint32_t)(f->scales - v->fb.buf) + 4u * k)))
            FT_REFUSE(FT_ERR_FORMAT, "weight scale not finite and positive");
    /* conv and depthwise (filter_zp NULL) and per-channel weights need zero points 0, as TFLM checks */
    if (filter_zp) *filter_zp = 0;
    for (k = 0; k < f->n_zps; k++) {
        int64_t z = ft_fb_rd_i64(&v->fb, (uint32_t)(f->zps - v->fb.buf) + 8u * k);
        if (z != 0 && (f->n_scales > 1 || !filter_zp || z < -128 || z > 127))
            FT_REFUSE(FT_ERR_UNSUPPORTED, "nonzero weight zero point");
        if (filter_zp) *filter_zp = (int32_t)z;
    }
    return FT_OK;
}

ft_status ft_tfl_check_bias(ft_tfl_vctx *v, int16_t bi, uint32_t channels, const uint8_t **bias)
{
    ft_tfl_tensor *b;
    *bias = NULL;
    if (bi < 0) return FT_OK;
    b = ft_tfl_t(v, bi);
    if (b->type != FT_TFL_INT32 || !b->is_const) FT_REFUSE(FT_ERR_UNSUPPORTED, "bias is not a constant int32 tensor");
    if (b->count != channels) FT_REFUSE(FT_ERR_FORMAT, "bias size does not match the channels");
    *bias = b->data;
    return FT_OK;
}

ft_status ft_tfl_check_act_range(ft_tfl_vctx *v, uint8_t act, const ft_tfl_tensor *out, int32_t *lo, int32_t *hi)
{
    if (ft_tfl_act_range(act, out->scale, out->zp, lo, hi) != FT_OK)
        FT_REFUSE_N(FT_ERR_UNSUPPORTED, "fused activation", act);
    return FT_OK;
}

void ft_tfl_dims4(const ft_tfl_tensor *t, int32_t d[4])
{
    int k;
    for (k = 0; k < 4; k++) d[k] = 1;
    for (k = 0; k < t->rank; k++) d[4 - t->rank + k] = t->dims[k];
}

/* ---- conv / depthwise / pool options ---------------------------------------------------------------- */
/* padding/strides/dilations/activation of a conv, depthwise or pool options table */
static ft_status parse_spatial(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, uint8_t want, ft_tfl_opts *o)
{
    o->dil_w = o->dil_h = 1;
    if (opt && opt_type != want) FT_REFUSE(FT_ERR_FORMAT, "options of another op");
    if (!opt) return FT_OK;
    FT_RD(ft_fb_u8(&v->fb, opt, 0, 0, &o->padding));
    FT_RD(ft_fb_i32(&v->fb, opt, 1, 0, &o->stride_w));
    FT_RD(ft_fb_i32(&v->fb, opt, 2, 0, &o->stride_h));
    if (want == FT_TFL_OPT_CONV) {
        FT_RD(ft_fb_u8(&v->fb, opt, 3, 0, &o->act));
        FT_RD(ft_fb_i32(&v->fb, opt, 4, 1, &o->dil_w));
        FT_RD(ft_fb_i32(&v->fb, opt, 5, 1, &o->dil_h));
    } else if (want == FT_TFL_OPT_DWCONV) {
        FT_RD(ft_fb_i32(&v->fb, opt, 3, 0, &o->depth_mult));
        FT_RD(ft_fb_u8(&v->fb, opt, 4, 0, &o->act));
        FT_RD(ft_fb_i32(&v->fb, opt, 5, 1, &o->dil_w));
        FT_RD(ft_fb_i32(&v->fb, opt, 6, 1, &o->dil_h));
    } else {
        FT_RD(ft_fb_i32(&v->fb, opt, 3, 0, &o->filter_w));
        FT_RD(ft_fb_i32(&v->fb, opt, 4, 0, &o->filter_h));
        FT_RD(ft_fb_u8(&v->fb, opt, 5, 0, &o->act));
    }
    return FT_OK;
}

ft_status ft_tfl_parse_conv(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    return parse_spatial(v, opt, opt_type, FT_TFL_OPT_CONV, o);
}

ft_status ft_tfl_parse_dwconv(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    return parse_spatial(v, opt, opt_type, FT_TFL_OPT_DWCONV, o);
}

ft_status ft_tfl_parse_pool(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    return parse_spatial(v, opt, opt_type, FT_TFL_OPT_POOL, o);
}

static ft_status check_geometry(ft_tfl_vctx *v, const ft_tfl_opts *o, const ft_tfl_tensor *in, const ft_tfl_tensor *out,
                                int32_t fh, int32_t fw, int32_t *pad_h, int32_t *pad_w)
{
    int32_t oh, ow;
    if (o->padding > 1) FT_REFUSE_N(FT_ERR_UNSUPPORTED, "padding type", o->padding);
    if (o->stride_w < 1 || o->stride_h < 1 || o->dil_w < 1 || o->dil_h < 1 || fh < 1 || fw < 1)
        FT_REFUSE(FT_ERR_FORMAT, "stride, dilation or filter size below 1");
    if (o->stride_w > 0xFFFF || o->stride_h > 0xFFFF || o->dil_w > 0xFFFF || o->dil_h > 0xFFFF || fh > 0xFFFF ||
        fw > 0xFFFF)
        FT_REFUSE(FT_ERR_RANGE, "stride, dilation or filter size above 65535");
    if (in->rank != 4 || out->rank != 4) FT_REFUSE(FT_ERR_UNSUPPORTED, "input and output must be 4-D (NHWC)");
    oh = ft_tfl_out_size(o->padding == 0, in->dims[1], fh, o->stride_h, o->dil_h);
    ow = ft_tfl_out_size(o->padding == 0, in->dims[2], fw, o->stride_w, o->dil_w);
    if (oh != out->dims[1] || ow != out->dims[2] || in->dims[0] != out->dims[0])
        FT_REFUSE(FT_ERR_FORMAT, "output shape does not match the input, filter, stride and padding");
    *pad_h = ft_tfl_padding(o->stride_h, o->dil_h, in->dims[1], fh, oh);
    *pad_w = ft_tfl_padding(o->stride_w, o->dil_w, in->dims[2], fw, ow);
    return FT_OK;
}

/* ---- the conv / depthwise family ------------------------------------------------------------------- */
ft_status ft_tfl_verify_conv(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in, int depthwise)
{
    ft_tfl_tensor *in, *f, *out;
    ft_tfl_conv_params *p = &op->p.conv;
    if (n_in < 2 || op->in[1] < 0) FT_REFUSE(FT_ERR_FORMAT, "missing filter");
    in = ft_tfl_t(v, op->in[0]);
    f = ft_tfl_t(v, op->in[1]);
    out = ft_tfl_t(v, op->out);
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    if (f->rank != 4) FT_REFUSE(FT_ERR_FORMAT, "filter must be 4-D");
    memset(p, 0, sizeof *p);
    FT_TRY(check_geometry(v, o, in, out, f->dims[1], f->dims[2], &p->pad_h, &p->pad_w));
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
        if (f->dims[0] != 1 || f->dims[3] != p->out_c) FT_REFUSE(FT_ERR_FORMAT, "filter shape does not match the output");
        if (p->out_c % p->in_c != 0) FT_REFUSE(FT_ERR_FORMAT, "output channels not a multiple of the input channels");
        p->depth_mult = p->out_c / p->in_c;
        if (o->depth_mult != 0 && o->depth_mult != p->depth_mult) FT_REFUSE(FT_ERR_FORMAT, "depth_multiplier mismatch");
        FT_TRY(ft_tfl_check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 3, NULL));
        v->m->macs += (uint64_t)out->count * (uint64_t)p->filter_h * (uint64_t)p->filter_w;
    } else {
        p->filter_in_c = f->dims[3];
        if (f->dims[0] != p->out_c) FT_REFUSE(FT_ERR_FORMAT, "filter shape does not match the output");
        if (p->in_c % p->filter_in_c != 0 || p->out_c % (p->in_c / p->filter_in_c) != 0)
            FT_REFUSE(FT_ERR_FORMAT, "channels do not split into groups");
        FT_TRY(ft_tfl_check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 0, NULL));
        v->m->macs += (uint64_t)out->count * (uint64_t)p->filter_h * (uint64_t)p->filter_w * (uint64_t)p->filter_in_c;
    }
    FT_TRY(ft_tfl_check_bias(v, op->in[2], (uint32_t)p->out_c, &p->bias));
    p->stride_h = o->stride_h;
    p->stride_w = o->stride_w;
    p->dil_h = o->dil_h;
    p->dil_w = o->dil_w;
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    p->filter_scales = f->scales;
    p->n_scales = f->n_scales;
    op->requant_n = ft_tfl_requant_entries(p->n_scales, p->out_c); /* one entry for per-tensor weights */
    op->tflm_persist = 8u * (uint32_t)p->out_c; /* TFLM: per_channel_output_multiplier and _shift, always */
    return ft_tfl_check_act_range(v, o->act, out, &p->act_min, &p->act_max);
}

/* ---- the pools -------------------------------------------------------------------------------------- */
ft_status ft_tfl_verify_pool(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, int average)
{
    ft_tfl_tensor *in = ft_tfl_t(v, op->in[0]), *out = ft_tfl_t(v, op->out);
    ft_tfl_pool_params *p = &op->p.pool;
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    memset(p, 0, sizeof *p);
    FT_TRY(check_geometry(v, o, in, out, o->filter_h, o->filter_w, &p->pad_h, &p->pad_w));
    if (in->dims[3] != out->dims[3]) FT_REFUSE(FT_ERR_FORMAT, "channels differ");
    if (average && (p->pad_h >= o->filter_h || p->pad_w >= o->filter_w))
        FT_REFUSE(FT_ERR_FORMAT, "a window lies entirely in the padding");
    p->batches = in->dims[0];
    p->in_h = in->dims[1];
    p->in_w = in->dims[2];
    p->c = in->dims[3];
    p->out_h = out->dims[1];
    p->out_w = out->dims[2];
    p->filter_h = o->filter_h;
    p->filter_w = o->filter_w;
    p->stride_h = o->stride_h;
    p->stride_w = o->stride_w;
    v->m->macs += (uint64_t)out->count * (uint64_t)o->filter_h * (uint64_t)o->filter_w;
    return ft_tfl_check_act_range(v, o->act, out, &p->act_min, &p->act_max);
}

/* ---- PAD / PADV2 ------------------------------------------------------------------------------------ */
ft_status ft_tfl_verify_pad(ft_tfl_vctx *v, ft_tfl_op *op, uint32_t n_in, int v2)
{
    ft_tfl_tensor *in, *pd, *out;
    ft_tfl_pad_params *p = &op->p.pad;
    int32_t od[4];
    int k;
    if (n_in < 2) FT_REFUSE(FT_ERR_FORMAT, "needs a paddings input");
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    if (op->in[1] < 0) FT_REFUSE(FT_ERR_UNSUPPORTED, "paddings are not a constant int32/int64 tensor");
    in = ft_tfl_t(v, op->in[0]);
    pd = ft_tfl_t(v, op->in[1]);
    out = ft_tfl_t(v, op->out);
    if (!pd->is_const || (pd->type != FT_TFL_INT32 && pd->type != FT_TFL_INT64))
        FT_REFUSE(FT_ERR_UNSUPPORTED, "paddings are not a constant int32/int64 tensor");
    if (pd->rank != 2 || pd->dims[0] != in->rank || pd->dims[1] != 2) FT_REFUSE(FT_ERR_FORMAT, "paddings shape");
    memset(p, 0, sizeof *p);
    ft_tfl_dims4(in, p->in_dims);
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
        if (lo < 0 || hi < 0 || lo > 0xFFFF || hi > 0xFFFF) FT_REFUSE(FT_ERR_UNSUPPORTED, "negative or huge padding");
        p->before[4 - in->rank + k] = (int32_t)lo;
        p->after[4 - in->rank + k] = (int32_t)hi;
    }
    ft_tfl_dims4(out, od);
    for (k = 0; k < 4; k++)
        if ((int64_t)p->before[k] + p->in_dims[k] + p->after[k] != od[k] || (out->rank != in->rank))
            FT_REFUSE(FT_ERR_FORMAT, "output shape does not match the paddings");
    p->pad_value = (int8_t)out->zp;
    if (v2 && op->in[2] >= 0) {
        ft_tfl_tensor *cv = ft_tfl_t(v, op->in[2]);
        if (!cv->is_const || cv->type != FT_TFL_INT8 || cv->count != 1) FT_REFUSE(FT_ERR_UNSUPPORTED, "constant value");
        p->pad_value = (int8_t)cv->data[0];
    }
    v->m->macs += out->count;
    return FT_OK;
}
