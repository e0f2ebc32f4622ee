/* SOFTMAX (tflite builtin 25): int8 over the last axis, TFLM's fixed output quantization (1/256, -128). */
#include "ft_tfl_op.h"
#include <math.h>
#include <string.h>

static ft_status parse(ft_tfl_vctx *v, uint32_t opt, uint8_t opt_type, ft_tfl_opts *o)
{
    if (opt && opt_type != FT_TFL_OPT_SOFTMAX) FT_REFUSE(FT_ERR_FORMAT, "options of another op");
    if (opt) FT_RD(ft_fb_f32(&v->fb, opt, 0, 0.0f, &o->beta));
    return FT_OK;
}

static ft_status verify(ft_tfl_vctx *v, ft_tfl_op *op, const ft_tfl_opts *o, uint32_t n_in)
{
    ft_tfl_tensor *in = ft_tfl_t(v, op->in[0]), *out = ft_tfl_t(v, op->out);
    ft_tfl_softmax_params *p = &op->p.softmax;
    float beta = o->beta;
    double real;
    (void)n_in;
    FT_TRY(ft_tfl_check_act(v, op->in[0], "input"));
    FT_TRY(ft_tfl_check_act(v, op->out, "output"));
    /* TFLM's int8 softmax writes a fixed output quantization: scale 1/256, zero point -128 */
    if (out->zp != -128 || fabs((double)out->scale - 1.0 / 256.0) > 0.001 / 256.0)
        FT_REFUSE(FT_ERR_UNSUPPORTED, "output quantization is not 1/256, -128");
    if (in->rank < 1 || in->count != out->count) FT_REFUSE(FT_ERR_FORMAT, "output shape mismatch");
    /* the exp() input must be representable: beta * scale * 2^26 >= 0.5 (left shift >= 0) or 0 */
    real = (double)beta * (double)in->scale * 67108864.0;
    if (!isfinite(beta) || beta < 0.0f || (real != 0.0 && real < 0.5)) FT_REFUSE(FT_ERR_UNSUPPORTED, "beta out of range");
    memset(p, 0, sizeof *p);
    p->depth = in->dims[in->rank - 1];
    /* the Q12.19 sum of exps overflows past 4095 classes */
    if (p->depth > 4095) FT_REFUSE_N(FT_ERR_RANGE, "classes above 4095:", p->depth);
    p->outer = (int32_t)(in->count / (uint32_t)p->depth);
    p->beta = beta;
    p->input_scale = in->scale;
    ft_tfl_softmax_prepare(p); /* the parameters once, as TFLM's Prepare (software double arithmetic on an M4) */
    v->m->macs += 2u * (uint64_t)in->count;
    return FT_OK;
}

static ft_status invoke(const ft_tfl_model *m, const ft_tfl_op *op, uint8_t *arena)
{
    ft_tfl_softmax(&op->p.softmax, (const int8_t *)ft_tfl_op_in(m, op, 0, arena), (int8_t *)ft_tfl_op_out(m, op, arena));
    return FT_OK;
}

const ft_tfl_op_reg ft_op_softmax = {FT_TFL_OP_SOFTMAX, 0, parse, verify, NULL, invoke};
