/* MEAN (tflite builtin 40): int8 over constant axes; ft_tfl_mean_fast in an FT_TFL_OPTIMIZED build (the same
 * bytes). */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h"
#include <string.h>

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in, *ax, *out;
    ft_tfl_mean_params *p = &op->p.mean;
    uint32_t k, kept = 1;
    (void)o;
    if (n_in != 2) FT_REFUSE(FT_ERR_FORMAT, "needs an axis input");
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    if (op->in[1] < 0) FT_REFUSE(FT_ERR_UNSUPPORTED, "axis is not a constant int32 tensor");
    in = ft_tfl_t(v, op->in[0]);
    ax = ft_tfl_t(v, op->in[1]);
    out = ft_tfl_t(v, op->out);
    if (ax->type != FT_TFL_INT32 || !ax->is_const) FT_REFUSE(FT_ERR_UNSUPPORTED, "axis is not a constant int32 tensor");
    memset(p, 0, sizeof *p);
    ft_tfl_dims4(in, p->in_dims);
    for (k = 0; k < ax->count; k++) {
        int32_t a = ft_fb_rd_i32(&v->fb, (uint32_t)(ax->data - v->fb.buf) + 4u * k);
        if (a < 0) a += in->rank;
        if (a < 0 || a >= in->rank) FT_REFUSE_N(FT_ERR_FORMAT, "axis out of range:", a);
        p->reduce[4 - in->rank + a] = 1;
    }
    for (k = 0; k < 4; k++)
        if (!p->reduce[k]) kept *= (uint32_t)p->in_dims[k];
    if (kept != out->count) FT_REFUSE(FT_ERR_FORMAT, "output size does not match the reduced input");
    p->input_zp = in->zp;
    p->output_zp = out->zp;
    p->input_scale = in->scale;
    p->output_scale = out->scale;
    v->m->macs += in->count;
    return FT_OK;
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const int8_t *x = (const int8_t *)ft_tfl_op_in(m, op, 0, arena);
    int8_t *y = (int8_t *)ft_tfl_op_out(m, op, arena);
#if FT_TFL_OPTIMIZED
    if (m->optimized) {
        ft_tfl_mean_fast(&op->p.mean, x, y);
        return FT_OK;
    }
#endif
    ft_tfl_mean(&op->p.mean, x, y);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_mean = {FT_TFL_OP_MEAN, 0, NULL, verify, NULL, invoke};
