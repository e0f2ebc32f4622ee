/* PAD (tflite builtin 34): int8, constant int32/int64 paddings, padded with the output's zero point. */
#include "ft_tfl_op.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    (void)o;
    return ft_tfl_verify_pad(v, op, n_in, 0);
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    ft_tfl_pad(&op->p.pad, (const int8_t *)ft_tfl_op_in(m, op, 0, arena), (int8_t *)ft_tfl_op_out(m, op, arena));
    return FT_OK;
}

const ft_tfl_op_reg ft_op_pad = {FT_TFL_OP_PAD, 0, NULL, verify, NULL, invoke};
