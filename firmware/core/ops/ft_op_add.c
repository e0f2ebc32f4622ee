/* ADD (tflite builtin 0): int8 with broadcasting (up to 4-D), fused activation; ft_tfl_add_fast in an
 * FT_TFL_OPTIMIZED build (the same bytes). */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h"
#include <string.h>

static ft_status parse(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    if (opt && opt_type != FT_TFL_OPT_ADD) FT_REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) FT_RD(ft_fb_u8(&v->fb, opt, 0, 0, &o->act));
    return FT_OK;
}

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *a, *b, *out;
    ft_tfl_add_params *p = &op->p.add;
    int k;
    if (n_in != 2 || op->in[1] < 0) FT_REFUSE(FT_ERR_FORMAT, "needs two inputs");
    a = ft_tfl_t(v, op->in[0]);
    b = ft_tfl_t(v, op->in[1]);
    out = ft_tfl_t(v, op->out);
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input 1"));
    FT_TRY(ft_tfl_check_act(v, op->in[1], "input 2"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    memset(p, 0, sizeof *p);
    ft_tfl_dims4(a, p->in1_dims);
    ft_tfl_dims4(b, p->in2_dims);
    ft_tfl_dims4(out, p->out_dims);
    for (k = 0; k < 4; k++) {
        int32_t d = p->in1_dims[k] > p->in2_dims[k] ? p->in1_dims[k] : p->in2_dims[k];
        if ((p->in1_dims[k] != d && p->in1_dims[k] != 1) || (p->in2_dims[k] != d && p->in2_dims[k] != 1) ||
            p->out_dims[k] != d)
            FT_REFUSE(FT_ERR_FORMAT, "shapes do not broadcast to the output");
    }
    p->in1_zp = a->zp;
    p->in2_zp = b->zp;
    p->output_zp = out->zp;
    p->in1_scale = a->scale;
    p->in2_scale = b->scale;
    p->output_scale = out->scale;
    v->m->macs += out->count;
    return ft_tfl_check_act_range(v, o->act, out, &p->act_min, &p->act_max);
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const int8_t *a = (const int8_t *)ft_tfl_op_in(m, op, 0, arena), *b = (const int8_t *)ft_tfl_op_in(m, op, 1, arena);
    int8_t *y = (int8_t *)ft_tfl_op_out(m, op, arena);
#if FT_TFL_OPTIMIZED
    if (m->optimized) {
        ft_tfl_add_fast(&op->p.add, a, b, y);
        return FT_OK;
    }
#endif
    ft_tfl_add(&op->p.add, a, b, y);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_add = {FT_TFL_OP_ADD, 0, parse, verify, NULL, invoke};
