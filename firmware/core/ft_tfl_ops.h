/* int8 kernels with TFLite Micro's reference arithmetic, bit for bit (checked layer by layer against the
 * tflite_micro Python runtime by tests/test_firmware_tfl.py): MultiplyByQuantizedMultiplier with double
 * rounding, TfLiteRound (half away from zero) for activation ranges, gemmlowp fixed point for SOFTMAX.
 *
 * The kernels trust their parameters: ft_tfl_interp.c checks every shape, index and buffer size when it
 * verifies a model, before any kernel runs. Weights, biases and per-channel scales are read in place from
 * the model image as little-endian bytes (any alignment), so an image in flash needs no copy. Tensors are
 * NHWC. */
#ifndef FT_TFL_OPS_H
#define FT_TFL_OPS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ft_status.h"

/* Fused activations (tflite ActivationFunctionType). */
enum { FT_TFL_ACT_NONE = 0, FT_TFL_ACT_RELU = 1, FT_TFL_ACT_RELU_N1_TO_1 = 2, FT_TFL_ACT_RELU6 = 3 };

/* CalculateActivationRangeQuantized for an int8 output. FT_ERR_UNSUPPORTED for other activations. */
ft_status ft_tfl_act_range(int act, float out_scale, int32_t out_zp, int32_t *act_min, int32_t *act_max);
/* tflite ComputePaddingHeightWidth for one dimension (SAME/VALID handled by the out size given). */
int32_t ft_tfl_padding(int32_t stride, int32_t dilation, int32_t in_size, int32_t filter, int32_t out_size);
/* Output size for padding SAME (1) or VALID (0). */
int32_t ft_tfl_out_size(int same, int32_t in_size, int32_t filter, int32_t stride, int32_t dilation);

typedef struct {
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t filter_h, filter_w;
    int32_t filter_in_c;  /* CONV_2D: input channels per group (filter [out_c][fh][fw][filter_in_c]) */
    int32_t depth_mult;   /* DEPTHWISE_CONV_2D: out_c = in_c * depth_mult (filter [1][fh][fw][out_c]) */
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t input_zp, output_zp, act_min, act_max;
    float input_scale, output_scale;
    const uint8_t *filter_scales; /* float32 LE, n_scales = 1 (per tensor) or out_c (per channel) */
    uint32_t n_scales;
    const uint8_t *bias;          /* int32 LE [out_c], or NULL */
    const uint8_t *requant;       /* ft_tfl_requant_table (out_c channels), any alignment: required by the DSP
                                     kernels; NULL: the portable kernels compute each channel's multiplier per call */
} ft_tfl_conv_params;

/* Per-channel requantization, precomputed once (the interpreter does it in the arena at the first invoke, as
 * TFLite Micro's Prepare does in its persistent arena): entry e's multiplier and shift from
 * (double)in_scale * filter_scale[e] / out_scale (ft_quantize_multiplier), stored as `entries` int32 multipliers
 * (host byte order) then `entries` int8 shifts: FT_TFL_REQUANT_BYTES(entries), any alignment. Per-channel weights
 * have one entry per output channel; per-tensor weights (one scale) one entry for every channel
 * (ft_tfl_requant_entries, ft_tfl_requant_index). */
#define FT_TFL_REQUANT_BYTES(entries) (5u * (uint32_t)(entries))
static inline int32_t ft_tfl_requant_entries(uint32_t n_scales, int32_t channels) { return n_scales > 1 ? channels : 1; }
/* the entry of channel c: c, or 0 for a one-entry table (mask = ft_tfl_requant_mask(entries)) */
static inline int32_t ft_tfl_requant_mask(int32_t entries) { return entries > 1 ? -1 : 0; }
void ft_tfl_requant_table(float in_scale, const uint8_t *filter_scales, uint32_t n_scales, int32_t channels,
                          float out_scale, uint8_t *table);
static inline int32_t ft_tfl_requant_mult(const uint8_t *table, int32_t e)
{
    int32_t m;
    const uint8_t *s = table + 4u * (uint32_t)e;
    memcpy(&m, s, 4);
    return m;
}
static inline int32_t ft_tfl_requant_shift(const uint8_t *table, int32_t entries, int32_t e)
{
    return (int8_t)table[4u * (uint32_t)entries + (uint32_t)e];
}

void ft_tfl_conv2d(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out);
void ft_tfl_depthwise_conv2d(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out);

typedef struct {
    int32_t batches, accum_depth, out_c;
    int32_t input_zp, filter_zp, output_zp, act_min, act_max;
    float input_scale, output_scale;
    const uint8_t *filter_scales; /* float32 LE, 1 or out_c */
    uint32_t n_scales;
    const uint8_t *bias;          /* int32 LE [out_c], or NULL */
    const uint8_t *requant;       /* as ft_tfl_conv_params.requant */
} ft_tfl_fc_params;

void ft_tfl_fully_connected(const ft_tfl_fc_params *p, const int8_t *in, const int8_t *filter, int8_t *out);

typedef struct {
    int32_t batches, in_h, in_w, c, out_h, out_w;
    int32_t filter_h, filter_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} ft_tfl_pool_params;

/* Returns FT_ERR_FORMAT if a window covers no input (TFLM fails the invoke the same way). */
ft_status ft_tfl_avg_pool(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out);
void ft_tfl_max_pool(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out);

#define FT_TFL_BCAST_DIMS 4
typedef struct {
    int32_t out_dims[FT_TFL_BCAST_DIMS];                   /* right-aligned, leading 1s */
    int32_t in1_dims[FT_TFL_BCAST_DIMS], in2_dims[FT_TFL_BCAST_DIMS];
    int32_t in1_zp, in2_zp, output_zp, act_min, act_max;
    float in1_scale, in2_scale, output_scale;
} ft_tfl_add_params;

void ft_tfl_add(const ft_tfl_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

typedef struct {
    int32_t in_dims[FT_TFL_BCAST_DIMS]; /* right-aligned to 4 dims */
    uint8_t reduce[FT_TFL_BCAST_DIMS];  /* 1: axis reduced */
    int32_t input_zp, output_zp;
    float input_scale, output_scale;
} ft_tfl_mean_params;

void ft_tfl_mean(const ft_tfl_mean_params *p, const int8_t *in, int8_t *out);
/* MEAN's arithmetic on one reduced sum (wrapping int32 sum of the int8 inputs), shared with ft_tfl_mean_fast. */
typedef struct {
    int64_t n;          /* elements per sum */
    int32_t mult, shift;
    int same;           /* input and output quantization equal: sum / n */
} ft_tfl_mean_q;
void ft_tfl_mean_quant(const ft_tfl_mean_params *p, ft_tfl_mean_q *q);
int8_t ft_tfl_mean_out(const ft_tfl_mean_params *p, const ft_tfl_mean_q *q, uint32_t sum);

typedef struct {
    int32_t in_dims[FT_TFL_BCAST_DIMS]; /* right-aligned to 4 dims */
    int32_t before[FT_TFL_BCAST_DIMS], after[FT_TFL_BCAST_DIMS];
    int8_t pad_value;
} ft_tfl_pad_params;

void ft_tfl_pad(const ft_tfl_pad_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t outer, depth;
    float beta, input_scale;
    /* ft_tfl_softmax_prepare: the input multiplier, shift and diff_min for (prep_beta, prep_scale), computed once
     * (TFLM's Prepare); ft_tfl_softmax uses them while beta and input_scale are still those, else computes its own */
    uint8_t prepared;
    float prep_beta, prep_scale;
    int32_t in_mult, in_shift, diff_min;
} ft_tfl_softmax_params;

void ft_tfl_softmax_prepare(ft_tfl_softmax_params *p);
void ft_tfl_softmax(const ft_tfl_softmax_params *p, const int8_t *in, int8_t *out);

/* QUANTIZE float32 -> int8 (AffineQuantize); `in` is float32 in host byte order, any alignment. */
void ft_tfl_quantize_f32(const uint8_t *in, uint32_t n, float scale, int32_t zp, int8_t *out);
/* QUANTIZE int8 -> int8 (Requantize). */
void ft_tfl_requantize(const int8_t *in, uint32_t n, float in_scale, int32_t in_zp, float out_scale, int32_t out_zp,
                       int8_t *out);
/* DEQUANTIZE int8 -> float32 (host byte order, any alignment). */
void ft_tfl_dequantize(const int8_t *in, uint32_t n, float scale, int32_t zp, uint8_t *out);

/* gemmlowp / TFLite fixed-point helpers, exposed for the unit tests. */
int32_t ft_tfl_srdhm(int32_t a, int32_t b);                /* SaturatingRoundingDoublingHighMul */
int32_t ft_tfl_rounding_divide_by_pot(int32_t x, int exponent);

#endif
