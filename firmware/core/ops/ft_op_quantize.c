/* QUANTIZE (tflite builtin 114): float32 -> int8, or int8 -> int8 requantization. */
#include "ft_tfl_op.h"

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in = ft_tfl_t(v, op->in[0]), *out = ft_tfl_t(v, op->out);
    (void)o;
    (void)n_in;
    if (in->count != out->count) FT_REFUSE(FT_ERR_FORMAT, "output size mismatch");
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    if (in->type == FT_TFL_INT8)
        FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    else if (in->type != FT_TFL_FLOAT32)
        FT_REFUSE(FT_ERR_UNSUPPORTED, "input is not float32 or int8");
    v->m->macs += in->count;
    return FT_OK;
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const ft_tfl_tensor *ti = &m->tensors[op->in[0]], *to = &m->tensors[op->out];
    const uint8_t *in = ft_tfl_op_in(m, op, 0, arena);
    int8_t *out = (int8_t *)ft_tfl_op_out(m, op, arena);
    if (ti->type == FT_TFL_FLOAT32)
        ft_tfl_quantize_f32(in, ti->count, to->scale, to->zp, out);
    else
        ft_tfl_requantize((const int8_t *)in, ti->count, ti->scale, ti->zp, to->scale, to->zp, out);
    return FT_OK;
}

const ft_tfl_op_reg ft_op_quantize = {FT_TFL_OP_QUANTIZE, 0, NULL, verify, NULL, invoke};
