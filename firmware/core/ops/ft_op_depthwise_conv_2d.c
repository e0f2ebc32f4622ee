/* DEPTHWISE_CONV_2D (tflite builtin 4): int8, per-channel weights, any depth multiplier; the DSP kernel
 * (depth multiplier 1) where its scratch fits the arena, else the portable one (the same bytes either way). */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    return ft_tfl_verify_conv(v, op, o, n_in, 1);
}

#if FT_TFL_OPTIMIZED
static uint32_t scratch(const ft_tfl_op *op) { return ft_tfl_depthwise_dsp_scratch(&op->p.conv); }
#endif

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const int8_t *x = (const int8_t *)ft_tfl_op_in(m, op, 0, arena), *w = (const int8_t *)m->tensors[op->in[1]].data;
    int8_t *y = (int8_t *)ft_tfl_op_out(m, op, arena);
    ft_tfl_conv_params p = op->p.conv;
    p.requant = arena + op->requant_off; /* the multipliers, computed once (ft_tfl_interp.c) */
#if FT_TFL_OPTIMIZED
    if (m->optimized && op->dsp) {
        ft_tfl_depthwise_dsp(&p, x, w, y, arena + op->scratch_off);
        return FT_OK;
    }
#endif
    ft_tfl_depthwise_conv2d(&p, x, w, y);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_depthwise_conv_2d = {FT_TFL_OP_DEPTHWISE_CONV_2D, 0, ft_tfl_parse_dwconv, verify,
                                               FT_TFL_SCRATCH(scratch), invoke};
