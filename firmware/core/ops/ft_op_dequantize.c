/* DEQUANTIZE (tflite builtin 6): int8 -> float32. */
#include "ft_tfl_op.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in = ft_tfl_t(v, op->in[0]), *out = ft_tfl_t(v, op->out);
    (void)o;
    (void)n_in;
    if (in->count != out->count) FT_REFUSE(FT_ERR_FORMAT, "output size mismatch");
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    if (out->type != FT_TFL_FLOAT32) FT_REFUSE(FT_ERR_UNSUPPORTED, "output is not float32");
    v->m->macs += in->count;
    return FT_OK;
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const ft_tfl_tensor *ti = &m->tensors[op->in[0]];
    ft_tfl_dequantize((const int8_t *)ft_tfl_op_in(m, op, 0, arena), ti->count, ti->scale, ti->zp,
                      ft_tfl_op_out(m, op, arena));
    return FT_OK;
}

const ft_tfl_op_reg ft_op_dequantize = {FT_TFL_OP_DEQUANTIZE, 0, NULL, verify, NULL, invoke};
