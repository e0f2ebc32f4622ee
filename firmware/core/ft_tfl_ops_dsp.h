/* int8 CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED for the Cortex-M4/M7 DSP extension (and faster ADD and MEAN), as CMSIS-NN does
 * them: activations widened once to int16 pairs with the input zero point subtracted (im2col for convolutions),
 * weights widened with SXTB16, dual 16-bit multiply-accumulates (SMLAD; SMLABB/SMLATT for depthwise), conv tiled
 * 2 output channels x 2 pixels. Every product and sum is the portable kernel's, in int32 wrapping arithmetic, and
 * the requantization is TFLM's MultiplyByQuantizedMultiplier (ft_tfl_dsp_requant: ft_mul_by_quantized_multiplier
 * restated in 32-bit operations, CMSIS-NN's way, for the multipliers ft_quantize_multiplier gives), so the outputs are the portable kernels' (and
 * TFLite Micro's) bit for bit (tests/tfl_kernels_check.c compares them on random shapes).
 *
 * Built everywhere: with __ARM_FEATURE_DSP the intrinsics are the instructions (ACLE), elsewhere portable C
 * equivalents (so the host tests run the same code under ASan/UBSan). The interpreter uses them when
 * FT_TFL_OPTIMIZED (fedtiny_config.h). A kernel may need a scratch area from the arena, sized by its
 * *_scratch() function when the model is verified (FT_TFL_DSP_NONE: the kernel does not apply, run the portable
 * one). */
#ifndef FT_TFL_OPS_DSP_H
#define FT_TFL_OPS_DSP_H
#include <stdint.h>
#include "ft_tfl_ops.h"

/* The DSP kernel's scratch bytes for these parameters, or FT_TFL_DSP_NONE where the kernel does not apply (the
 * portable one runs): CONV_2D below 4 weights per output, DEPTHWISE_CONV_2D with a depth multiplier above 1 and
 * output channels not a multiple of 4, FULLY_CONNECTED below 4 weights per output. 0: the kernel applies and needs no scratch. */
#define FT_TFL_DSP_NONE 0xFFFFFFFFu
uint32_t ft_tfl_conv2d_dsp_scratch(const ft_tfl_conv_params *p);    /* im2col of 2 pixels as int16 pairs */
uint32_t ft_tfl_depthwise_dsp_scratch(const ft_tfl_conv_params *p); /* 0 (no scratch); NONE: depth multiplier > 1
                                                                       * with out_c not a multiple of 4 */
uint32_t ft_tfl_fc_dsp_scratch(const ft_tfl_fc_params *p);          /* 0 (no scratch) */

/* `scratch` holds at least the *_scratch() bytes, any alignment; its contents on entry do not matter. p->requant
 * must hold the channels' precomputed multipliers (ft_tfl_requant_table): the kernels compute none. */
void ft_tfl_conv2d_dsp(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out,
                       uint8_t *scratch);
void ft_tfl_depthwise_dsp(const ft_tfl_conv_params *p, const int8_t *in, const int8_t *filter, int8_t *out,
                          uint8_t *scratch);
/* ft_mul_by_quantized_multiplier(x, mult, shift) for 0 <= mult < 2^31, -31 <= shift <= 30, in fewer instructions. */
int32_t ft_tfl_dsp_requant(int32_t x, int32_t mult, int32_t shift);

void ft_tfl_fc_dsp(const ft_tfl_fc_params *p, const int8_t *in, const int8_t *filter, int8_t *out, uint8_t *scratch);

/* MAX_POOL_2D / AVERAGE_POOL_2D: ft_tfl_max_pool's / ft_tfl_avg_pool's bytes, 4 channels per word (SSUB8 + SEL
 * for the maximum; two int16 sums per word with SXTAB16 for the average, windows above 256 taps handed to
 * ft_tfl_avg_pool). No scratch. */
void ft_tfl_max_pool_dsp(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out);
ft_status ft_tfl_avg_pool_dsp(const ft_tfl_pool_params *p, const int8_t *in, int8_t *out);

/* ADD: ft_tfl_add's bytes; inputs of the output's shape in one flat loop with ft_tfl_dsp_requant, broadcasting
 * handed to ft_tfl_add. No scratch. */
void ft_tfl_add_fast(const ft_tfl_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
/* MEAN: ft_tfl_mean's bytes; a reduction over H and W (axes 1 and 2 of NHWC) as one strided sum per channel,
 * other axes handed to ft_tfl_mean. No scratch. */
void ft_tfl_mean_fast(const ft_tfl_mean_params *p, const int8_t *in, int8_t *out);

#endif
