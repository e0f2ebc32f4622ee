/* MAX_POOL_2D (tflite builtin 17): int8, VALID/SAME padding. */
#include "ft_tfl_op.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    (void)n_in;
    return ft_tfl_verify_pool(v, op, o, 0);
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    ft_tfl_max_pool(&op->p.pool, (const int8_t *)ft_tfl_op_in(m, op, 0, arena), (int8_t *)ft_tfl_op_out(m, op, arena));
    return FT_OK;
}

const ft_tfl_op_reg ft_op_max_pool_2d = {FT_TFL_OP_MAX_POOL_2D, 0, ft_tfl_parse_pool, verify, NULL, invoke};
