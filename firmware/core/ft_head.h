/* The int8 head (the model's last FULLY_CONNECTED layer) as fedtiny.ondevice.Int8Head: per-channel
 * symmetric int8 weights, int32 bias, input/output quantization. Inference with TFLite Micro's reference
 * arithmetic (bit-exact), dequantization, and re-quantization of a trained float head (bit-exact with
 * fedtiny.ondevice.quantize_head). */
#ifndef FT_HEAD_H
#define FT_HEAD_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_status.h"

typedef struct {
    uint16_t C, D;                             /* classes, features; 0 = no head */
    float input_scale, output_scale;
    int32_t input_zero_point, output_zero_point;
    float weight_scales[FT_MAX_CLASSES];
    int32_t bias[FT_MAX_CLASSES];
    int8_t weights[FT_MAX_CLASSES * FT_MAX_DIM]; /* row-major [c][d] */
    /* derived by ft_head_prepare: TFLite per-channel output multipliers */
    int32_t mult[FT_MAX_CLASSES];
    int32_t shift[FT_MAX_CLASSES];
} ft_head;

/* A float32 head: weights [C][D] row-major, bias [C]. */
typedef struct {
    uint16_t C, D;
    float weights[FT_MAX_CLASSES * FT_MAX_DIM];
    float bias[FT_MAX_CLASSES];
} ft_float_head;

#define FT_HEAD_PATCH_SIZE(c, d) (20u + 8u * (uint32_t)(c) + (uint32_t)(c) * (uint32_t)(d))
#define FT_HEAD_PATCH_MAX FT_HEAD_PATCH_SIZE(FT_MAX_CLASSES, FT_MAX_DIM)

/* TFLite QuantizeMultiplier. */
void ft_quantize_multiplier(double real, int32_t *mult, int32_t *shift);
/* TFLite MultiplyByQuantizedMultiplier (TFLM reference, double rounding). */
int32_t ft_mul_by_quantized_multiplier(int32_t x, int32_t mult, int32_t shift);
/* C's round half away from zero, as the spec's round_half_away (on a double). */
double ft_round_half_away(double x);

/* Compute mult/shift from the scales; checks shape and scales (finite, > 0). */
ft_status ft_head_prepare(ft_head *h);
/* int8 logits out[C] for int8 features x[D] (FULLY_CONNECTED, per-channel). */
ft_status ft_head_forward(const ft_head *h, const int8_t *x, int8_t *out);
/* argmax of the int8 logits, ties to the lowest index. */
ft_status ft_head_predict(const ft_head *h, const int8_t *x, uint16_t *cls);

/* HeadPatch (docs/protocol.md) <-> head. decode validates size, magic, scales; want_c/want_d 0 = any. */
ft_status ft_head_decode_patch(ft_head *h, const uint8_t *p, size_t len, uint16_t want_c, uint16_t want_d);
/* Writes bytes [offset, offset+n) of the head's HeadPatch into out. */
ft_status ft_head_patch_read(const ft_head *h, uint32_t offset, uint8_t *out, size_t n);
uint32_t ft_head_patch_size(const ft_head *h);

/* W = w_q * s_w[c], b = bias_q * (s_in * s_w[c]) in float32. */
ft_status ft_head_dequantize(const ft_head *h, ft_float_head *fh);
/* Re-quantize fh into out: per-channel symmetric weights, int32 bias, logit range from the int32
 * accumulators on n calibration feature vectors (calib: n rows of D int8, row stride `stride` bytes).
 * input_scale/zero point are kept from the caller. */
ft_status ft_head_quantize(const ft_float_head *fh, float input_scale, int32_t input_zero_point,
                           const int8_t *calib, size_t n, size_t stride, ft_head *out);

/* Little-endian helpers shared by the codecs. */
static inline uint16_t ft_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t ft_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void ft_wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void ft_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
float ft_rdf32(const uint8_t *p);
void ft_wrf32(uint8_t *p, float v);

#endif
