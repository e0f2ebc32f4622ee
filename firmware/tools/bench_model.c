/* Instructions per inference of one .tflite on the emulated Cortex-M4F (QEMU mps2-an386 with -icount), the
 * portable kernels and, where the firmware has them (FT_TFL_OPTIMIZED), the DSP kernels. The model is not
 * compiled in: QEMU's generic loader puts its bytes at ft_bench_model and (length << 32 | BENCH_MAGIC) at
 * ft_bench_cfg (addresses from arm-none-eabi-nm; benchmarks/model_table.py does this). Counting: SysTick runs on
 * the 25 MHz processor clock, which -icount advances per instruction; a loop of exactly 2,000,000 instructions
 * calibrates ticks per instruction. Output lines (then a semihosting exit, 0 on success):
 *   BENCH arena_bytes N | BENCH macs N | BENCH portable N | BENCH optimized N (or n/a)
 *   BENCH op INDEX NAME PORTABLE OPTIMIZED      (per operator; OPTIMIZED n/a without FT_TFL_OPTIMIZED)
 *   BENCH refused REASON                        (the firmware cannot run the model: exit 1) */
#include "port.h"
#include "port_mps2.h"
#include "ft_tfl_interp.h"
#include <stdio.h>
#include <string.h>

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define BENCH_MAGIC 0xBE9C4D0Du
#ifndef BENCH_MODEL_MAX
#define BENCH_MODEL_MAX (1024u * 1024u)
#endif
#ifndef BENCH_ARENA
#define BENCH_ARENA (1024u * 1024u)
#endif

uint8_t ft_bench_model[BENCH_MODEL_MAX] __attribute__((section(".noinit"), aligned(16)));
volatile uint32_t ft_bench_cfg[2] __attribute__((section(".noinit")));
static uint8_t arena[BENCH_ARENA] __attribute__((aligned(16)));
static ft_tfl_model model;
static uint64_t calib; /* ticks of 2,000,000 instructions */
static uint64_t op_ticks[2][FT_TFL_MAX_OPS];
static uint64_t last;
static int pass;

static uint64_t ticks(void)
{
    uint32_t w1, w2, v;
    do {
        w1 = ft_port_millis(); /* SysTick wraps (every 2^24 ticks here) */
        v = SYST_CVR;
        w2 = ft_port_millis();
    } while (w1 != w2);
    return (uint64_t)w1 * 0x1000000u + (0xFFFFFFu - v);
}

static uint64_t insn(uint64_t t) { return (t * 2000000u + calib / 2u) / calib; }

/* newlib-nano's printf has no %llu: 64-bit decimal by hand */
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

static void out(const char *s)
{
    ft_mps2_puts(s);
}

static void on_op(void *ctx, const ft_tfl_model *m, uint16_t op, const uint8_t *a)
{
    uint64_t now = ticks();
    (void)ctx;
    (void)m;
    (void)a;
    op_ticks[pass][op] = now - last;
    last = ticks();
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
        if (t->type == FT_TFL_FLOAT32) /* float inputs: values in [-1, 1) */
            for (k = 0; k + 4u <= bytes; k += 4u) {
                float v = (float)(int8_t)p[k] / 128.0f;
                memcpy(p + k, &v, 4);
            }
    }
}

/* One warm-up and one measured inference; then per-op ticks with the callback. */
static uint64_t measure(void)
{
    uint64_t t0, t;
    fill_inputs();
    if (ft_tfl_invoke(&model, arena, sizeof arena, NULL, NULL) != FT_OK) ft_mps2_semihost_exit(1);
    fill_inputs();
    t0 = ticks();
    if (ft_tfl_invoke(&model, arena, sizeof arena, NULL, NULL) != FT_OK) ft_mps2_semihost_exit(1);
    t = ticks() - t0;
    fill_inputs();
    last = ticks();
    if (ft_tfl_invoke(&model, arena, sizeof arena, on_op, NULL) != FT_OK) ft_mps2_semihost_exit(1);
    return t;
}

int main(void)
{
    char line[160], name[32], n1[24], n2[24];
    uint64_t t0, portable, optimized = 0;
    uint16_t i;
    ft_mps2_init();
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
    if (ft_bench_cfg[0] != BENCH_MAGIC || ft_bench_cfg[1] == 0u || ft_bench_cfg[1] > BENCH_MODEL_MAX) {
        out("BENCH refused no model loaded (QEMU -device loader at ft_bench_model / ft_bench_cfg)\n");
        ft_mps2_semihost_exit(1);
    }
    if (ft_tfl_verify(&model, ft_bench_model, ft_bench_cfg[1], sizeof arena) != FT_OK) {
        snprintf(line, sizeof line, "BENCH refused %s\n", model.reason);
        out(line);
        ft_mps2_semihost_exit(1);
    }
    snprintf(line, sizeof line, "BENCH arena_bytes %lu\nBENCH macs %s\n", (unsigned long)model.arena_bytes,
             u64s(model.macs, n1));
    out(line);
#if defined(FT_TFL_OPTIMIZED) && FT_TFL_OPTIMIZED
    model.optimized = 0; /* the same plan, the portable kernels */
#endif
    pass = 0;
    portable = measure();
    snprintf(line, sizeof line, "BENCH portable %s\n", u64s(insn(portable), n1));
    out(line);
#if defined(FT_TFL_OPTIMIZED) && FT_TFL_OPTIMIZED
    model.optimized = 1;
    pass = 1;
    optimized = measure();
    snprintf(line, sizeof line, "BENCH optimized %s\n", u64s(insn(optimized), n1));
#else
    snprintf(line, sizeof line, "BENCH optimized n/a\n");
#endif
    out(line);
    (void)optimized;
    for (i = 0; i < model.n_ops; i++) {
#if defined(FT_TFL_OPTIMIZED) && FT_TFL_OPTIMIZED
        const char *opt = u64s(insn(op_ticks[1][i]), n2);
#else
        const char *opt = "n/a";
#endif
        snprintf(line, sizeof line, "BENCH op %u %s %s %s\n", (unsigned)i,
                 ft_tfl_op_name(model.ops[i].code, name, sizeof name), u64s(insn(op_ticks[0][i]), n1), opt);
        out(line);
    }
    ft_mps2_semihost_exit(0);
    return 0;
}
