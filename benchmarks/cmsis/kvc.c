/* fedtiny's int8 kernels against Arm's CMSIS-NN, layer by layer, on an emulated Cortex-M (QEMU -icount).
 *
 * Built and run by benchmarks/kernels_vs_cmsis.py: the firmware's interpreter sources (firmware/core, linked,
 * unchanged) and CMSIS-NN's sources (compiled from their own directory) go into one image. QEMU's generic loader
 * puts the .tflite at kvc_model and (length << 32 | KVC_MAGIC) at kvc_cfg. The harness verifies the model with
 * ft_tfl_verify, fills the inputs with a fixed pseudo-random sequence and runs the model with the portable
 * kernels (ft_tfl_invoke, model.optimized = 0). After each operator (the callback: that operator's inputs are
 * still in the arena, the planner never lets an operator's output overlap its inputs) it runs on the same input
 *   - fedtiny's portable kernel,
 *   - fedtiny's DSP-build kernel, as the interpreter's plan chose it (op->dsp: the DSP kernel where it applies and
 *     its scratch fits the arena below TFLite Micro's, ft_tfl_add_fast / ft_tfl_mean_fast / the pools' _dsp, else the portable
 *     one), both with the
 *     per-channel multipliers the interpreter computed once into the arena at the first invoke
 *     (ft_tfl_requant_table, outside the counted region, as CMSIS-NN's are),
 *   - the CMSIS-NN function TFLite Micro's cmsis_nn kernels call, with the parameters TFLite Micro computes in
 *     Prepare (per-channel multipliers and shifts from double scales, QuantizeMultiplier; ADD's left shift 20;
 *     softmax's PreprocessSoftmaxScaling and CalculateInputRadius), computed here outside the counted region,
 * each into its own buffer, counts the instructions of each call and compares each output with the
 * interpreter's bytes.
 *
 * Counting: SysTick runs on the processor clock, which -icount advances per instruction; a loop of exactly
 * 2,000,000 instructions calibrates ticks per instruction, and the cost of reading the counter is subtracted.
 *
 * Output lines (semihosting SYS_WRITE0; then SYS_EXIT, 0 on success):
 *   KVC model ops N arena B floor F   (F: ft_tfl_model.tflm_floor, a lower bound of TFLite Micro's arena)
 *   KVC op I NAME SHAPE P D C DS CS MP MD MC
 *     P, D, C: instructions of fedtiny portable, fedtiny DSP build, CMSIS-NN ("-": CMSIS-NN has no kernel here)
 *     DS, CS: scratch bytes (fedtiny DSP kernel, CMSIS-NN *_get_buffer_size); MP MD MC: 1 = output identical
 *   KVC qm N   instructions of one per-channel output multiplier as fedtiny computes it once per arena
 *              ((double)in_scale * filter_scale / out_scale, ft_quantize_multiplier), mean of 64 channels
 *   KVC refused REASON
 *   KVC done */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arm_nnfunctions.h"
#include "ft_head.h"
#include "ft_tfl_interp.h"
#include "ft_tfl_ops.h"
#include "ft_tfl_ops_dsp.h"

#define KVC_MAGIC 0xC3515E1Fu
#ifndef KVC_MODEL_MAX
#define KVC_MODEL_MAX (1536u * 1024u)
#endif
#ifndef KVC_ARENA
#define KVC_ARENA (768u * 1024u)
#endif
#ifndef KVC_BUF
#define KVC_BUF (192u * 1024u)
#endif
#define KVC_MAX_CH 1024

/* tflite BuiltinOperator codes */
enum {
    OP_ADD = 0, OP_AVERAGE_POOL_2D = 1, OP_CONV_2D = 3, OP_DEPTHWISE_CONV_2D = 4, OP_DEQUANTIZE = 6,
    OP_FULLY_CONNECTED = 9, OP_MAX_POOL_2D = 17, OP_RESHAPE = 22, OP_SOFTMAX = 25, OP_PAD = 34, OP_MEAN = 40,
    OP_QUANTIZE = 114, OP_PADV2 = 60
};

uint8_t kvc_model[KVC_MODEL_MAX] __attribute__((section(".noinit"), aligned(16)));
volatile uint32_t kvc_cfg[2] __attribute__((section(".noinit")));
static uint8_t arena[KVC_ARENA] __attribute__((aligned(16)));
static int8_t out_p[KVC_BUF] __attribute__((aligned(16)));
static int8_t out_d[KVC_BUF] __attribute__((aligned(16)));
static int8_t out_c[KVC_BUF] __attribute__((aligned(16)));
static uint8_t scratch_d[KVC_BUF] __attribute__((aligned(16)));
static uint8_t scratch_c[KVC_BUF] __attribute__((aligned(16)));
static int32_t q_mult[KVC_MAX_CH], q_shift[KVC_MAX_CH], bias_c[KVC_MAX_CH];
static ft_tfl_model model;
static int failed;

/* ---- output: semihosting, so one image runs on any mps2 board ---- */
static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static void out(const char *s) { (void)semihost(0x04, s); } /* SYS_WRITE0 */
static void kvc_exit(int code)
{
    (void)semihost(0x18, (const void *)(code == 0 ? 0x20026u : 0x20023u)); /* SYS_EXIT */
    for (;;) {
    }
}

/* ---- startup (vector table in kvc_start.c) ---- */
static volatile uint32_t wraps;
void SysTick_Handler(void);
void SysTick_Handler(void) { wraps++; }
void kvc_fault(void);
void kvc_fault(void)
{
    out("KVC refused fault\n");
    kvc_exit(2);
}

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static uint64_t ticks(void)
{
    uint32_t w1, w2, v;
    do {
        w1 = wraps;
        v = SYST_CVR;
        w2 = wraps;
    } while (w1 != w2);
    return (uint64_t)w1 * 0x1000000u + (0xFFFFFFu - v);
}

static uint64_t calib;    /* ticks of 2,000,000 instructions */
static uint64_t overhead; /* ticks of an empty counted region */
static uint64_t insn(uint64_t t)
{
    t = t > overhead ? t - overhead : 0u;
    return (t * 2000000u + calib / 2u) / calib;
}

static const char *u64s(uint64_t v, char *buf)
{
    char tmp[24];
    int n = 0, i = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n) buf[i++] = tmp[--n];
    buf[i] = 0;
    return buf;
}

/* ---- TFLite Micro's parameter arithmetic (tensorflow/lite/kernels/internal/quantization_util.cc) ---- */
static void quantize_multiplier(double real, int32_t *mult, int32_t *shift)
{
    int sh = 0;
    double q;
    int64_t qf;
    if (real == 0.0) {
        *mult = 0;
        *shift = 0;
        return;
    }
    q = frexp(real, &sh);
    qf = (int64_t)round(q * 2147483648.0); /* TfLiteRound: half away from zero */
    if (qf == ((int64_t)1 << 31)) {
        qf /= 2;
        sh++;
    }
    if (sh < -31) {
        sh = 0;
        qf = 0;
    }
    if (sh > 30) {
        sh = 30;
        qf = 0x7FFFFFFF;
    }
    *mult = (int32_t)qf;
    *shift = sh;
}

static float rd_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* PopulateConvolutionQuantizationParams: per channel, (double)input_scale * (double)filter_scale / output_scale */
static void per_channel(float in_scale, float out_scale, const uint8_t *scales, uint32_t n_scales, int32_t n_out)
{
    int32_t c;
    for (c = 0; c < n_out; c++) {
        double fs = (double)rd_f32(scales + 4u * (n_scales > 1 ? (uint32_t)c : 0u));
        quantize_multiplier((double)in_scale * fs / (double)out_scale, &q_mult[c], &q_shift[c]);
    }
}

static const int32_t *bias_of(const uint8_t *b, int32_t n)
{
    int32_t c;
    for (c = 0; c < n; c++) {
        uint32_t u = b ? ((uint32_t)b[4 * c] | ((uint32_t)b[4 * c + 1] << 8) | ((uint32_t)b[4 * c + 2] << 16) |
                          ((uint32_t)b[4 * c + 3] << 24))
                       : 0u;
        memcpy(&bias_c[c], &u, 4);
    }
    return bias_c;
}

/* ---- one operator ---- */
typedef struct {
    uint64_t p, d, c;
    int has_c;
    uint32_t ds, cs;
    char shape[64];
} kvc_row;

#define COUNT(dst, call)         \
    do {                         \
        uint64_t t0_ = ticks();  \
        call;                    \
        (dst) = insn(ticks() - t0_); \
    } while (0)

static void run_cmsis(const ft_tfl_op *op, const int8_t *in, const int8_t *in2, const int8_t *w, int8_t *y,
                      kvc_row *r)
{
    arm_cmsis_nn_status st = ARM_CMSIS_NN_SUCCESS;
    cmsis_nn_context ctx;
    ctx.buf = scratch_c;
    ctx.size = 0;
    r->has_c = 1;
    switch (op->code) {
    case OP_CONV_2D: {
        const ft_tfl_conv_params *p = &op->p.conv;
        cmsis_nn_conv_params cp;
        cmsis_nn_per_channel_quant_params qp;
        cmsis_nn_dims id = {p->batches, p->in_h, p->in_w, p->in_c}, fd = {p->out_c, p->filter_h, p->filter_w,
                                                                          p->filter_in_c},
                      bd = {1, 1, 1, p->out_c}, od = {p->batches, p->out_h, p->out_w, p->out_c};
        const int32_t *b = bias_of(p->bias, p->out_c);
        per_channel(p->input_scale, p->output_scale, p->filter_scales, p->n_scales, p->out_c);
        qp.multiplier = q_mult;
        qp.shift = q_shift;
        cp.input_offset = -p->input_zp;
        cp.output_offset = p->output_zp;
        cp.stride.h = p->stride_h;
        cp.stride.w = p->stride_w;
        cp.padding.h = p->pad_h;
        cp.padding.w = p->pad_w;
        cp.dilation.h = p->dil_h;
        cp.dilation.w = p->dil_w;
        cp.activation.min = p->act_min;
        cp.activation.max = p->act_max;
        r->cs = (uint32_t)arm_convolve_wrapper_s8_get_buffer_size(&cp, &id, &fd, &od);
        ctx.size = (int32_t)r->cs;
        COUNT(r->c, st = arm_convolve_wrapper_s8(&ctx, &cp, &qp, &id, in, &fd, w, &bd, b, &od, y));
        break;
    }
    case OP_DEPTHWISE_CONV_2D: {
        const ft_tfl_conv_params *p = &op->p.conv;
        cmsis_nn_dw_conv_params cp;
        cmsis_nn_per_channel_quant_params qp;
        cmsis_nn_dims id = {p->batches, p->in_h, p->in_w, p->in_c}, fd = {1, p->filter_h, p->filter_w, p->out_c},
                      bd = {1, 1, 1, p->out_c}, od = {p->batches, p->out_h, p->out_w, p->out_c};
        const int32_t *b = bias_of(p->bias, p->out_c);
        per_channel(p->input_scale, p->output_scale, p->filter_scales, p->n_scales, p->out_c);
        qp.multiplier = q_mult;
        qp.shift = q_shift;
        cp.input_offset = -p->input_zp;
        cp.output_offset = p->output_zp;
        cp.ch_mult = p->depth_mult;
        cp.stride.h = p->stride_h;
        cp.stride.w = p->stride_w;
        cp.padding.h = p->pad_h;
        cp.padding.w = p->pad_w;
        cp.dilation.h = p->dil_h;
        cp.dilation.w = p->dil_w;
        cp.activation.min = p->act_min;
        cp.activation.max = p->act_max;
        r->cs = (uint32_t)arm_depthwise_conv_wrapper_s8_get_buffer_size(&cp, &id, &fd, &od);
        ctx.size = (int32_t)r->cs;
        COUNT(r->c, st = arm_depthwise_conv_wrapper_s8(&ctx, &cp, &qp, &id, in, &fd, w, &bd, b, &od, y));
        break;
    }
    case OP_FULLY_CONNECTED: {
        const ft_tfl_fc_params *p = &op->p.fc;
        cmsis_nn_fc_params fp;
        cmsis_nn_quant_params qp;
        cmsis_nn_dims id = {p->batches, 1, 1, p->accum_depth}, fd = {p->accum_depth, 1, 1, p->out_c},
                      bd = {1, 1, 1, p->out_c}, od = {p->batches, 1, 1, p->out_c};
        const int32_t *b = bias_of(p->bias, p->out_c);
        per_channel(p->input_scale, p->output_scale, p->filter_scales, p->n_scales, p->out_c);
        qp.multiplier = q_mult;
        qp.shift = q_shift;
        qp.is_per_channel = p->n_scales > 1;
        fp.input_offset = -p->input_zp;
        fp.filter_offset = -p->filter_zp;
        fp.output_offset = p->output_zp;
        fp.activation.min = p->act_min;
        fp.activation.max = p->act_max;
        r->cs = (uint32_t)arm_fully_connected_s8_get_buffer_size(&fd);
        ctx.size = (int32_t)r->cs;
        COUNT(r->c, st = arm_fully_connected_wrapper_s8(&ctx, &fp, &qp, &id, in, &fd, w, &bd, b, &od, y));
        break;
    }
    case OP_AVERAGE_POOL_2D:
    case OP_MAX_POOL_2D: {
        const ft_tfl_pool_params *p = &op->p.pool;
        cmsis_nn_pool_params pp;
        cmsis_nn_dims id = {p->batches, p->in_h, p->in_w, p->c}, fd = {1, p->filter_h, p->filter_w, 1},
                      od = {p->batches, p->out_h, p->out_w, p->c};
        pp.stride.h = p->stride_h;
        pp.stride.w = p->stride_w;
        pp.padding.h = p->pad_h;
        pp.padding.w = p->pad_w;
        pp.activation.min = p->act_min;
        pp.activation.max = p->act_max;
        if (op->code == OP_AVERAGE_POOL_2D) {
            r->cs = (uint32_t)arm_avgpool_s8_get_buffer_size(p->out_w, p->c);
            ctx.size = (int32_t)r->cs;
            COUNT(r->c, st = arm_avgpool_s8(&ctx, &pp, &id, in, &fd, &od, y));
        } else {
            COUNT(r->c, st = arm_max_pool_s8(&ctx, &pp, &id, in, &fd, &od, y));
        }
        break;
    }
    case OP_ADD: {
        const ft_tfl_add_params *p = &op->p.add;
        int k, bcast = 0;
        int32_t n = 1, m1, s1, m2, s2, mo, so;
        double twice_max, s_max;
        for (k = 0; k < FT_TFL_BCAST_DIMS; k++) {
            if (p->in1_dims[k] != p->out_dims[k] || p->in2_dims[k] != p->out_dims[k]) bcast = 1;
            n *= p->out_dims[k];
        }
        if (bcast) { /* TFLite Micro's cmsis_nn ADD runs its reference kernel when it broadcasts */
            r->has_c = 0;
            return;
        }
        s_max = (double)(p->in1_scale > p->in2_scale ? p->in1_scale : p->in2_scale);
        twice_max = 2.0 * s_max;
        quantize_multiplier((double)p->in1_scale / twice_max, &m1, &s1);
        quantize_multiplier((double)p->in2_scale / twice_max, &m2, &s2);
        quantize_multiplier(twice_max / ((double)(1 << 20) * (double)p->output_scale), &mo, &so);
        COUNT(r->c, st = arm_elementwise_add_s8(in, in2, -p->in1_zp, m1, s1, -p->in2_zp, m2, s2, 20, y, p->output_zp,
                                                 mo, so, p->act_min, p->act_max, n));
        break;
    }
    case OP_SOFTMAX: {
        const ft_tfl_softmax_params *p = &op->p.softmax;
        int32_t mult, shift, diff_min;
        double real = (double)p->beta * (double)p->input_scale * (double)(1 << (31 - 5)), radius;
        if (real > 2147483647.0) real = 2147483647.0;
        quantize_multiplier(real, &mult, &shift);
        radius = 1.0 * (double)((1 << 5) - 1) * (double)((int64_t)1 << (31 - 5)) / (double)((int64_t)1 << shift);
        diff_min = -(int32_t)floor(radius);
        COUNT(r->c, arm_softmax_s8(in, p->outer, p->depth, mult, shift, diff_min, y));
        break;
    }
    case OP_PAD:
    case OP_PADV2: {
        const ft_tfl_pad_params *p = &op->p.pad;
        cmsis_nn_dims id = {p->in_dims[0], p->in_dims[1], p->in_dims[2], p->in_dims[3]},
                      pre = {p->before[0], p->before[1], p->before[2], p->before[3]},
                      post = {p->after[0], p->after[1], p->after[2], p->after[3]};
        COUNT(r->c, st = arm_pad_s8(in, y, p->pad_value, &id, &pre, &post));
        break;
    }
    default: /* MEAN, QUANTIZE, DEQUANTIZE, RESHAPE: no CMSIS-NN kernel in TFLite Micro's cmsis_nn */
        r->has_c = 0;
        return;
    }
    if (st != ARM_CMSIS_NN_SUCCESS) {
        out("KVC note CMSIS-NN returned an error\n");
        failed = 1;
    }
}

/* fedtiny: the portable kernel (dsp == 0) or the DSP build's choice (dsp == 1), as ft_tfl_interp.c runs it */
static void run_fedtiny(const ft_tfl_model *m, const ft_tfl_op *op, const uint8_t *in, const uint8_t *in2,
                        const int8_t *w, int8_t *y, int dsp, uint64_t *count, uint32_t *scratch, const uint8_t *a)
{
    const ft_tfl_tensor *ti = &m->tensors[op->in[0]], *to = &m->tensors[op->out];
    const int8_t *x = (const int8_t *)in;
    uint32_t s = 0;
    /* the per-channel multipliers the interpreter computed once into the arena (its first invoke) */
    ft_tfl_conv_params cp = op->p.conv;
    ft_tfl_fc_params fp = op->p.fc;
    cp.requant = a + op->requant_off;
    fp.requant = a + op->requant_off;
    int use = dsp && op->dsp; /* the interpreter's plan: the DSP kernel where it applies and its scratch fits */
    if (use) s = op->scratch_len;
    *scratch = s;
    if (s > sizeof scratch_d) {
        out("KVC refused DSP scratch larger than the harness buffer\n");
        kvc_exit(1);
    }
    switch (op->code) {
    case OP_CONV_2D:
        if (use) COUNT(*count, ft_tfl_conv2d_dsp(&cp, x, w, y, scratch_d));
        else COUNT(*count, ft_tfl_conv2d(&cp, x, w, y));
        break;
    case OP_DEPTHWISE_CONV_2D:
        if (use) COUNT(*count, ft_tfl_depthwise_dsp(&cp, x, w, y, scratch_d));
        else COUNT(*count, ft_tfl_depthwise_conv2d(&cp, x, w, y));
        break;
    case OP_FULLY_CONNECTED:
        if (use) COUNT(*count, ft_tfl_fc_dsp(&fp, x, w, y, scratch_d));
        else COUNT(*count, ft_tfl_fully_connected(&fp, x, w, y));
        break;
    case OP_AVERAGE_POOL_2D:
        if (dsp) COUNT(*count, (void)ft_tfl_avg_pool_dsp(&op->p.pool, x, y));
        else COUNT(*count, (void)ft_tfl_avg_pool(&op->p.pool, x, y));
        break;
    case OP_MAX_POOL_2D:
        if (dsp) COUNT(*count, ft_tfl_max_pool_dsp(&op->p.pool, x, y));
        else COUNT(*count, ft_tfl_max_pool(&op->p.pool, x, y));
        break;
    case OP_ADD:
        if (dsp) COUNT(*count, ft_tfl_add_fast(&op->p.add, x, (const int8_t *)in2, y));
        else COUNT(*count, ft_tfl_add(&op->p.add, x, (const int8_t *)in2, y));
        break;
    case OP_MEAN:
        if (dsp) COUNT(*count, ft_tfl_mean_fast(&op->p.mean, x, y));
        else COUNT(*count, ft_tfl_mean(&op->p.mean, x, y));
        break;
    case OP_PAD:
    case OP_PADV2:
        COUNT(*count, ft_tfl_pad(&op->p.pad, x, y));
        break;
    case OP_SOFTMAX:
        COUNT(*count, ft_tfl_softmax(&op->p.softmax, x, y));
        break;
    case OP_QUANTIZE:
        if (ti->type == FT_TFL_FLOAT32)
            COUNT(*count, ft_tfl_quantize_f32(in, ti->count, to->scale, to->zp, y));
        else
            COUNT(*count, ft_tfl_requantize(x, ti->count, ti->scale, ti->zp, to->scale, to->zp, y));
        break;
    case OP_DEQUANTIZE:
        COUNT(*count, ft_tfl_dequantize(x, ti->count, ti->scale, ti->zp, (uint8_t *)y));
        break;
    case OP_RESHAPE:
        COUNT(*count, memmove(y, in, to->bytes));
        break;
    default:
        *count = 0;
        break;
    }
}

static void shape_of(const ft_tfl_tensor *t, char *buf, size_t size)
{
    size_t n = 0;
    unsigned k;
    buf[0] = 0;
    for (k = 0; k < t->rank && n + 12 < size; k++)
        n += (size_t)snprintf(buf + n, size - n, k ? "x%ld" : "%ld", (long)t->dims[k]);
    if (!t->rank) snprintf(buf, size, "scalar");
}

static void on_op(void *ctx, const ft_tfl_model *m, uint16_t i, const uint8_t *a)
{
    const ft_tfl_op *op = &m->ops[i];
    const ft_tfl_tensor *to = &m->tensors[op->out];
    const uint8_t *in = ft_tfl_tensor_data(m, (unsigned)op->in[0], a);
    const uint8_t *in2 = op->in[1] >= 0 ? ft_tfl_tensor_data(m, (unsigned)op->in[1], a) : NULL;
    const int8_t *w = op->in[1] >= 0 ? (const int8_t *)m->tensors[op->in[1]].data : NULL;
    const uint8_t *ref = a + to->offset;
    kvc_row r;
    uint32_t dummy, nb = to->bytes;
    char line[240], name[32], b1[24], b2[24], b3[24];
    int mp, md, mc;
    (void)ctx;
    memset(&r, 0, sizeof r);
    if (nb > KVC_BUF) {
        out("KVC refused an output tensor larger than the harness buffer\n");
        kvc_exit(1);
    }
    shape_of(to, r.shape, sizeof r.shape);
    memset(out_p, 0x5A, nb);
    memset(out_d, 0x5A, nb);
    memset(out_c, 0x5A, nb);
    run_fedtiny(m, op, in, in2, w, out_p, 0, &r.p, &dummy, a);
    run_fedtiny(m, op, in, in2, w, out_d, 1, &r.d, &r.ds, a);
    run_cmsis(op, (const int8_t *)in, (const int8_t *)in2, w, out_c, &r);
    mp = memcmp(out_p, ref, nb) == 0;
    md = memcmp(out_d, ref, nb) == 0;
    mc = r.has_c ? memcmp(out_c, ref, nb) == 0 : 1;
    if (!mp || !md || !mc) failed = 1;
    snprintf(line, sizeof line, "KVC op %u %s %s %s %s %s %lu %lu %d %d %d\n", (unsigned)i,
             ft_tfl_op_name(op->code, name, sizeof name), r.shape, u64s(r.p, b1), u64s(r.d, b2),
             r.has_c ? u64s(r.c, b3) : "-", (unsigned long)r.ds, (unsigned long)(r.has_c ? r.cs : 0u), mp, md,
             r.has_c ? mc : -1);
    out(line);
}

static void fill_inputs(void)
{
    unsigned i;
    uint32_t x = 12345u, k;
    for (i = 0; i < model.n_inputs; i++) {
        uint32_t bytes;
        const ft_tfl_tensor *t;
        uint8_t *p = ft_tfl_input(&model, i, arena, &bytes, &t);
        if (!p) continue;
        for (k = 0; k < bytes; k++) {
            x = x * 1103515245u + 12345u;
            p[k] = (uint8_t)(x >> 24);
        }
        if (t->type == FT_TFL_FLOAT32)
            for (k = 0; k + 4u <= bytes; k += 4u) {
                float v = (float)(int8_t)p[k] / 128.0f;
                memcpy(p + k, &v, 4);
            }
    }
}

int main(void);
int main(void)
{
    char line[200];
    uint64_t t0;
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;
    t0 = ticks();
    {
        register uint32_t n __asm__("r0") = 1000000u; /* subs + bne: 2 instructions per iteration */
        __asm volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n));
    }
    calib = ticks() - t0;
    t0 = ticks();
    overhead = ticks() - t0;
    {
        volatile float in_s = 0.0173f, out_s = 0.0421f;
        int32_t qm, qs, c;
        uint64_t t;
        char b1[24];
        t0 = ticks();
        for (c = 0; c < 64; c++) {
            float fs = 0.0031f + 0.0007f * (float)c;
            ft_quantize_multiplier((double)in_s * (double)fs / (double)out_s, &qm, &qs);
            q_mult[c] = qm;
            q_shift[c] = qs;
        }
        t = ticks() - t0;
        snprintf(line, sizeof line, "KVC qm %s\n", u64s((insn(t) + 32u) / 64u, b1));
        out(line);
    }
    if (kvc_cfg[0] != KVC_MAGIC || kvc_cfg[1] == 0u || kvc_cfg[1] > KVC_MODEL_MAX) {
        out("KVC refused no model loaded (QEMU -device loader at kvc_model / kvc_cfg)\n");
        kvc_exit(1);
    }
    if (ft_tfl_verify(&model, kvc_model, kvc_cfg[1], sizeof arena) != FT_OK) {
        snprintf(line, sizeof line, "KVC refused %s\n", model.reason);
        out(line);
        kvc_exit(1);
    }
    snprintf(line, sizeof line, "KVC model ops %u arena %lu floor %lu\n", (unsigned)model.n_ops,
             (unsigned long)model.arena_bytes, (unsigned long)model.tflm_floor);
    out(line);
    model.optimized = 0; /* the reference bytes: the portable kernels, run by the interpreter */
    fill_inputs();
    if (ft_tfl_invoke(&model, arena, sizeof arena, on_op, NULL) != FT_OK) {
        out("KVC refused invoke failed\n");
        kvc_exit(1);
    }
    out(failed ? "KVC done mismatch\n" : "KVC done\n");
    kvc_exit(0);
    return 0;
}
