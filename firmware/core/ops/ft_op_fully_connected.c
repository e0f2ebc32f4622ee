/* FULLY_CONNECTED (tflite builtin 9): int8 2-D weights (per-tensor or per-channel), optional int32 bias; the DSP
 * kernel where its scratch fits the arena, else the portable one (the same bytes either way). */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h"
#include <string.h>

static ft_status parse(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    if (opt && opt_type != FT_TFL_OPT_FC) FT_REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) {
        FT_RD(ft_fb_u8(&v->fb, opt, 0, 0, &o->act));
        FT_RD(ft_fb_u8(&v->fb, opt, 1, 0, &o->weights_format));
    }
    return FT_OK;
}

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in, *f, *out;
    ft_tfl_fc_params *p = &op->p.fc;
    if (n_in < 2 || op->in[1] < 0) FT_REFUSE(FT_ERR_FORMAT, "missing weights");
    in = ft_tfl_t(v, op->in[0]);
    f = ft_tfl_t(v, op->in[1]);
    out = ft_tfl_t(v, op->out);
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    if (o->weights_format != 0) FT_REFUSE(FT_ERR_UNSUPPORTED, "shuffled weights format");
    if (f->rank != 2) FT_REFUSE(FT_ERR_FORMAT, "weights must be 2-D");
    memset(p, 0, sizeof *p);
    p->out_c = f->dims[0];
    p->accum_depth = f->dims[1];
    if (in->count % (uint32_t)p->accum_depth != 0) FT_REFUSE(FT_ERR_FORMAT, "input size not a multiple of the weights' depth");
    p->batches = (int32_t)(in->count / (uint32_t)p->accum_depth);
    if ((uint64_t)p->batches * (uint64_t)p->out_c != out->count) FT_REFUSE(FT_ERR_FORMAT, "output size mismatch");
    FT_TRY(ft_tfl_check_filter_quant(v, op->in[1], (uint32_t)p->out_c, 0, &p->filter_zp));
    FT_TRY(ft_tfl_check_bias(v, op->in[2], (uint32_t)p->out_c, &p->bias));
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    p->filter_scales = f->scales;
    p->n_scales = f->n_scales;
    op->requant_n = ft_tfl_requant_entries(p->n_scales, p->out_c); /* one entry for per-tensor weights */
    op->tflm_persist = p->n_scales > 1 ? 8u * (uint32_t)p->out_c : 0u; /* TFLM: per-channel multipliers, shifts */
    v->m->macs += (uint64_t)out->count * (uint64_t)p->accum_depth;
    return ft_tfl_check_act_range(v, o->act, out, &p->act_min, &p->act_max);
}

#if FT_TFL_OPTIMIZED
static uint32_t scratch(const ft_tfl_op *op) { return ft_tfl_fc_dsp_scratch(&op->p.fc); }
#endif

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const int8_t *x = (const int8_t *)ft_tfl_op_in(m, op, 0, arena), *w = (const int8_t *)m->tensors[op->in[1]].data;
    int8_t *y = (int8_t *)ft_tfl_op_out(m, op, arena);
    ft_tfl_fc_params p = op->p.fc;
    p.requant = arena + op->requant_off; /* the multipliers, computed once (ft_tfl_interp.c) */
#if FT_TFL_OPTIMIZED
    if (m->optimized && op->dsp) {
        ft_tfl_fc_dsp(&p, x, w, y, arena + op->scratch_off);
        return FT_OK;
    }
#endif
    ft_tfl_fully_connected(&p, x, w, y);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_fully_connected = {FT_TFL_OP_FULLY_CONNECTED, 0, parse, verify, FT_TFL_SCRATCH(scratch), invoke};
