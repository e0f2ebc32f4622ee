/* Instructions per op of the int8 interpreter on the emulated Cortex-M4F (QEMU mps2-an386, -icount shift=6:
 * SysTick counts virtual time, 1.6 ticks per instruction), the portable kernels and the DSP kernels
 * (ft_tfl_ops_dsp.c) on the same verified model and input; the outputs of both runs must be identical.
 *
 *   make bench-tfl                              the golden models of make test-tfl (fedtiny's reference models
 *                                               and the synthetic sweeps; TFL_GOLDEN=DIR as for test-tfl)
 *   make bench-tfl TFL_MODEL=path/model.tflite  one model, compiled in (xxd -i), MODEL = the file name without
 *                                               its extension; input from a seeded PRNG (float32: in [-1, 1))
 *
 * Output, one figure per line, space-separated, names without spaces (parsed by benchmarks/):
 *   op MODEL IDX OPNAME portable N optimized M
 *   model MODEL ops K macs MACS arena BYTES portable N optimized M ratio R
 *   bench-tfl: K models
 * N and M are instructions: for an op, from the interpreter's dispatch of that op to its completion (a few dozen
 * instructions of dispatch and timing included); for a model, the whole ft_tfl_invoke. R = N / M with two
 * decimals. A model the firmware refuses prints "refused MODEL: REASON". Exit status 0, or 1 if the two kernel
 * sets disagree or a model fails to run. */
#include <stdio.h>
#include <string.h>
#include "ft_tfl_interp.h"
#include "port.h"
#include "port_mps2.h"
#ifdef FT_TFL_BENCH_MODEL
#include "tfl_bench_model.h" /* xxd -i -n tfl_bench_model (made const by the Makefile) */
#ifndef FT_TFL_BENCH_NAME      /* MODEL in the output lines: the file's name without .tflite */
#define FT_TFL_BENCH_NAME "model"
#endif
#else
#include "tfl_golden_data.h"
#endif

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static ft_tfl_model model;
static uint8_t arena[FT_TFL_ARENA_SIZE];
static uint8_t first_out[4096];
static uint64_t op_ticks[2][FT_TFL_MAX_OPS];
static uint64_t t_last;
static int run_set;

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

static unsigned long instr(uint64_t t) { return (unsigned long)(t * 5u / 8u); } /* ticks / 1.6 */

static void say(const char *s) { ft_mps2_puts(s); }

static void after_op(void *ctx, const ft_tfl_model *m, uint16_t i, const uint8_t *a)
{
    uint64_t t = ticks();
    (void)ctx, (void)m, (void)a;
    op_ticks[run_set][i] = t - t_last;
    t_last = ticks();
}

/* One invoke with the portable (set 0) or the DSP (set 1) kernels; returns whole-invoke ticks or 0 on error. */
static uint64_t run(int set, const uint8_t *const *in, const uint32_t *in_len)
{
    uint32_t k;
    uint64_t t0;
    model.optimized = (uint8_t)set;
    run_set = set;
    memset(arena, 0xA5, model.arena_bytes);
    for (k = 0; k < model.n_inputs; k++) memcpy(ft_tfl_input(&model, k, arena, NULL, NULL), in[k], in_len[k]);
    t0 = ticks();
    t_last = t0;
    if (ft_tfl_invoke(&model, arena, sizeof arena, after_op, NULL) != FT_OK) return 0;
    return ticks() - t0;
}

/* Benchmarks one model; returns 0, or 1 if it ran differently with the two kernel sets. */
static int bench(const char *name, const uint8_t *image, uint32_t len, uint32_t n_in, const uint8_t *const *in,
                 const uint32_t *in_len)
{
    char line[200], nb[24];
    uint64_t total[2];
    uint32_t out_len = 0, k;
    const uint8_t *o;
    if (ft_tfl_verify(&model, image, len, sizeof arena) != FT_OK) {
        snprintf(line, sizeof line, "refused %s: %s\n", name, model.reason);
        say(line);
        return 0;
    }
    if (n_in != model.n_inputs) {
        snprintf(line, sizeof line, "%s: %u inputs given, the model takes %u\n", name, (unsigned)n_in,
                 (unsigned)model.n_inputs);
        say(line);
        return 1;
    }
    for (k = 0; k < model.n_inputs; k++) {
        uint32_t n = 0;
        (void)ft_tfl_input(&model, k, arena, &n, NULL);
        if (n != in_len[k]) {
            snprintf(line, sizeof line, "input %u of %s: %u bytes, the model takes %u\n", (unsigned)k, name,
                     (unsigned)in_len[k], (unsigned)n);
            say(line);
            return 1;
        }
    }
    total[0] = run(0, in, in_len);
    o = ft_tfl_output(&model, 0, arena, &out_len, NULL);
    if (!total[0] || out_len > sizeof first_out) return 1;
    memcpy(first_out, o, out_len);
    total[1] = run(1, in, in_len);
    o = ft_tfl_output(&model, 0, arena, &out_len, NULL);
    if (!total[1] || memcmp(first_out, o, out_len) != 0) {
        snprintf(line, sizeof line, "MISMATCH %s: the DSP kernels' output differs from the portable kernels'\n", name);
        say(line);
        return 1;
    }
    for (k = 0; k < model.n_ops; k++) {
        snprintf(line, sizeof line, "op %s %u %s portable %lu optimized %lu\n", name, (unsigned)k,
                 ft_tfl_op_name(model.ops[k].code, nb, sizeof nb), instr(op_ticks[0][k]), instr(op_ticks[1][k]));
        say(line);
    }
    {
        unsigned long p = instr(total[0]), q = instr(total[1]);
        unsigned long r = q ? (unsigned long)(((uint64_t)p * 100u + q / 2u) / q) : 0; /* 32-bit long on the M4 */
        snprintf(line, sizeof line, "model %s ops %u macs %lu arena %lu portable %lu optimized %lu ratio %lu.%02lu\n",
                 name, (unsigned)model.n_ops, (unsigned long)model.macs, (unsigned long)model.arena_bytes, p, q,
                 r / 100u, r % 100u);
        say(line);
    }
    return 0;
}

#ifdef FT_TFL_BENCH_MODEL
static uint8_t inputs[FT_TFL_MAX_IO][4096];

static int bench_all(void)
{
    uint32_t k, i, x = 12345u, n_len[FT_TFL_MAX_IO];
    const uint8_t *in[FT_TFL_MAX_IO];
    int rc;
    if (ft_tfl_verify(&model, tfl_bench_model, tfl_bench_model_len, sizeof arena) != FT_OK) {
        char line[160];
        snprintf(line, sizeof line, "refused model: %s\n", model.reason);
        say(line);
        return 1;
    }
    for (k = 0; k < model.n_inputs; k++) { /* int8 bytes, or float32 in [-1, 1) */
        const ft_tfl_tensor *t;
        uint32_t n = 0;
        (void)ft_tfl_input(&model, k, arena, &n, &t);
        if (n > sizeof inputs[0]) return 1;
        for (i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            inputs[k][i] = (uint8_t)(x >> 24);
        }
        if (t->type == FT_TFL_FLOAT32)
            for (i = 0; i + 4 <= n; i += 4) {
                float f = (float)(int8_t)inputs[k][i] / 128.0f;
                memcpy(&inputs[k][i], &f, 4);
            }
        in[k] = inputs[k];
        n_len[k] = n;
    }
    rc = bench(FT_TFL_BENCH_NAME, tfl_bench_model, tfl_bench_model_len, model.n_inputs, in, n_len);
    say("bench-tfl: 1 models\n");
    return rc;
}
#else
static uint32_t u32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* The bundle of scripts/gen_tfl_golden.py (layout in its docstring): name, model, inputs; tensors skipped. */
static int bench_all(void)
{
    const uint8_t *p = tfl_golden_data + 12, *end = tfl_golden_data + tfl_golden_len;
    uint32_t cases = u32(tfl_golden_data + 8), c, k, models = 0;
    int rc = 0;
    char line[64];
    for (c = 0; c < cases && p + 2 <= end; c++) {
        char name[64];
        const uint8_t *in[FT_TFL_MAX_IO], *image;
        uint32_t in_len[FT_TFL_MAX_IO], nl = p[0] | (uint32_t)p[1] << 8, len, n_in, n_t;
        if (nl >= sizeof name) return 1;
        memcpy(name, p + 2, nl);
        name[nl] = 0;
        p += 2 + nl;
        len = u32(p);
        image = p + 4;
        p += 4 + len + 4; /* model, TFLite Micro's arena */
        n_in = u32(p);
        p += 4;
        if (n_in > FT_TFL_MAX_IO) return 1;
        for (k = 0; k < n_in; k++) {
            in[k] = p + 4;
            in_len[k] = u32(p);
            p += 4 + in_len[k];
        }
        n_t = u32(p);
        p += 4;
        for (k = 0; k < n_t; k++) p += 8 + u32(p + 4);
        if (strncmp(name, "refuse_", 7) == 0) continue;
        rc |= bench(name, image, len, n_in, in, in_len);
        models++;
    }
    snprintf(line, sizeof line, "bench-tfl: %u models\n", (unsigned)models);
    say(line);
    return rc;
}
#endif

int main(void)
{
    int rc;
    ft_mps2_init();
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;
    rc = bench_all();
    ft_mps2_semihost_exit(rc);
    return rc;
}
