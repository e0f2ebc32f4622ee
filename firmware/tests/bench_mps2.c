/* Instruction counts on the emulated Cortex-M4F (QEMU mps2-an386, run with -icount shift=6): SysTick on
 * the processor clock (25 MHz) counts virtual time, which -icount advances by 64 ns per instruction, so
 * instructions = ticks / 1.6. Prints one line per figure and exits through semihosting. */
#include "port.h"
#include "port_mps2.h"
#include "ft_head.h"
#include "ft_train.h"
#include "ft_cache.h"
#include "../app/factory_head.h"
#include "ft_image.h"
#include "golden/golden_signing.h"
#include <stdio.h>
#include <string.h>

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static ft_head head;
static ft_float_head fh;
static ft_cache cache;
static ft_train_work work;

static ft_status gs_mem_read(void *ctx, uint32_t off, uint8_t *buf, size_t n)
{
    (void)ctx;
    if (off > GS_IMG_HEAD_LEN || n > GS_IMG_HEAD_LEN - off) return FT_ERR_RANGE;
    memcpy(buf, gs_img_head + off, n);
    return FT_OK;
}

static uint64_t ticks(void)
{
    uint32_t w1, w2, v;
    do {
        w1 = ft_port_millis();
        v = SYST_CVR;
        w2 = ft_port_millis();
    } while (w1 != w2);
    return (uint64_t)w1 * 0x1000000u + (0xFFFFFFu - v);
}

static void out(const char *what, uint64_t t, uint32_t reps)
{
    char buf[128];
    /* instructions = ticks / 1.6 = ticks * 5 / 8 */
    snprintf(buf, sizeof buf, "BENCH %s %lu\n", what, (unsigned long)((t * 5u / 8u) / reps));
    ft_mps2_puts(buf);
}

int main(void)
{
    uint32_t i, x = 1, steps = 0;
    int8_t feat[64], logits[16];
    uint64_t t0;
    float loss;
    ft_train_cfg cfg = {1, 16, 0.01f, 0.0f, 0.0f, 0.0f, 42, 1, 7};
    ft_mps2_init();
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;
    /* calibration: 2 instructions per iteration (subs + bne), 1,000,000 iterations */
    t0 = ticks();
    {
        register uint32_t n __asm__("r0") = 1000000u;
        __asm volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n));
    }
    out("calibration_2M_instructions", ticks() - t0, 1);
    if (ft_head_decode_patch(&head, ft_factory_head, FT_FACTORY_HEAD_LEN, 0, 0) != FT_OK) ft_mps2_semihost_exit(1);
    if (ft_cache_init(&cache, 200, 64) != FT_OK) ft_mps2_semihost_exit(1);
    for (i = 0; i < 200; i++) {
        uint32_t d;
        for (d = 0; d < 64; d++) {
            x = x * 1103515245u + 12345u;
            feat[d] = (int8_t)(x >> 24);
        }
        if (ft_cache_push(&cache, feat, (uint8_t)(i % 10)) != FT_OK) ft_mps2_semihost_exit(1);
    }
    t0 = ticks();
    for (i = 0; i < 200; i++)
        if (ft_head_forward(&head, ft_cache_row(&cache, i), logits) != FT_OK) ft_mps2_semihost_exit(1);
    out("int8_head_inference_64x10", ticks() - t0, 200);
    t0 = ticks();
    for (i = 0; i < 10; i++) (void)ft_head_dequantize(&head, &fh);
    out("dequantize_head_64x10", ticks() - t0, 10);
    if (ft_head_dequantize(&head, &fh) != FT_OK) ft_mps2_semihost_exit(1);
    t0 = ticks();
    if (ft_train(&fh, &cache, head.input_scale, head.input_zero_point, &cfg, &work, &loss, &steps) != FT_OK)
        ft_mps2_semihost_exit(1);
    {
        uint64_t t = ticks() - t0;
        out("train_epoch_200_samples_batch16", t, 1);
        out("train_step_batch16_incl_shuffle", t, steps);
    }
    t0 = ticks();
    for (i = 0; i < 10; i++) ft_sample_order(ft_stream_key(42, 1, 7, i), 200, work.sort_key, work.order);
    out("shuffle_order_200", ticks() - t0, 10);
    if (ft_head_dequantize(&head, &fh) != FT_OK) ft_mps2_semihost_exit(1);
    t0 = ticks();
    if (ft_train_fixed(&fh, &cache, head.input_scale, head.input_zero_point, &cfg, &work, &loss, &steps) != FT_OK)
        ft_mps2_semihost_exit(1);
    out("train_step_batch16_fixed_point", ticks() - t0, steps);
    cfg.momentum = 0.9f;
    cfg.prox_mu = 0.01f;
    cfg.weight_decay = 1e-4f;
    t0 = ticks();
    if (ft_train(&fh, &cache, head.input_scale, head.input_zero_point, &cfg, &work, &loss, &steps) != FT_OK)
        ft_mps2_semihost_exit(1);
    out("train_step_batch16_momentum_prox_wd", ticks() - t0, steps);
    t0 = ticks();
    for (i = 0; i < 10; i++)
        if (ft_head_quantize(&fh, head.input_scale, head.input_zero_point, cache.features, 200, 64, &head) != FT_OK)
            ft_mps2_semihost_exit(1);
    out("requantize_64x10_calib200", ticks() - t0, 10);
    { /* a signed 10x64 head patch (928 B MCUboot image): parse, SHA-256, key hash, Ed25519 verify */
        static ft_image_info im;
        t0 = ticks();
        for (i = 0; i < 3; i++)
            if (ft_image_parse_mem(&im, gs_img_head, GS_IMG_HEAD_LEN) != FT_OK ||
                ft_image_verify(&im, gs_mem_read, NULL, (const uint8_t(*)[32])gs_pub1, 1) != FT_OK)
                ft_mps2_semihost_exit(1);
        out("signed_image_verify_928B", ticks() - t0, 3);
    }
    ft_mps2_semihost_exit(0);
    return 0;
}
