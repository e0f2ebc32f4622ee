/* MAX_POOL_2D (tflite builtin 17): int8, VALID/SAME padding. */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    (void)n_in;
    return ft_tfl_verify_pool(v, op, o, 0);
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const int8_t *x = (const int8_t *)ft_tfl_op_in(m, op, 0, arena);
    int8_t *y = (int8_t *)ft_tfl_op_out(m, op, arena);
#if FT_TFL_OPTIMIZED
    if (m->optimized) {
        ft_tfl_max_pool_dsp(&op->p.pool, x, y); /* 4 channels per word, the same bytes */
        return FT_OK;
    }
#endif
    ft_tfl_max_pool(&op->p.pool, x, y);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_max_pool_2d = {FT_TFL_OP_MAX_POOL_2D, 0, ft_tfl_parse_pool, verify, NULL, invoke};
