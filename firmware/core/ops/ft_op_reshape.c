/* RESHAPE (tflite builtin 22): same type and element count; planned in place (the output is the input's arena
 * buffer), so it copies only a constant input. */
#include "ft_tfl_op.h"
#include <string.h>

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in = ft_tfl_t(v, op->in[0]), *out = ft_tfl_t(v, op->out);
    (void)o;
    (void)n_in;
    if (in->type != out->type || ft_tfl_type_size(in->type) == 0) FT_REFUSE(FT_ERR_UNSUPPORTED, "type change or unknown type");
    if (in->count != out->count) FT_REFUSE(FT_ERR_FORMAT, "element counts differ");
    return FT_OK;
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    const uint8_t *in = ft_tfl_op_in(m, op, 0, arena);
    uint8_t *out = ft_tfl_op_out(m, op, arena);
    if (in != out) memmove(out, in, m->tensors[op->out].bytes); /* in place unless the input is a constant */
    return FT_OK;
}

const ft_tfl_op_reg ft_op_reshape = {FT_TFL_OP_RESHAPE, 1, NULL, verify, NULL, invoke};
