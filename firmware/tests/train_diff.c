/* Differential harness for the float32 head training (tests/test_firmware_float_train.py): reads training cases
 * from stdin, runs ft_train (core/ft_train.c, the code every board runs) on each, writes the trained heads to
 * stdout. The Python test runs the same cases through fedtiny.ondevice.train_heads and compares the bits.
 *
 * Host byte order (little-endian), no padding. A case:
 *   u16 C, D, capacity; u32 pushed; f32 in_s; i32 in_zp; u16 epochs, batch; f32 lr, momentum, weight_decay,
 *   prox_mu; u64 seed; u32 round, device; f32 w0[C*D]; f32 b0[C]; i8 x[pushed*D]; u8 y[pushed]
 *   (the samples are pushed into a ring cache of `capacity` slots in order, so more than capacity wrap)
 * Its answer:
 *   i32 status (ft_status of ft_train, or -1000 for a case outside this build's limits); f32 loss; u32 steps;
 *   f32 w[C*D]; f32 b[C]
 * Built with whatever flags the Makefile gives it (train-diff: contraction forced on, -march=native): ft_train.c's
 * pragmas, not the flags, keep the arithmetic exact. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ft_cache.h"
#include "ft_head.h"
#include "ft_train.h"

static ft_float_head fh;
static ft_cache cache;
static ft_train_work work;
static int8_t xs[FT_MAX_DIM];

static int rd(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }
static void wr(const void *p, size_t n) { fwrite(p, 1, n, stdout); }

/* skip n bytes of input */
static int skip(size_t n)
{
    uint8_t buf[256];
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        if (!rd(buf, k)) return 0;
        n -= k;
    }
    return 1;
}

static int one_case(void)
{
    uint16_t C, D, capacity, epochs, batch;
    uint32_t pushed, i, steps = 0;
    int32_t zp, st;
    float in_s, loss = 0.0f;
    ft_train_cfg cfg;
    size_t CD;
    if (!rd(&C, 2)) return 0; /* end of input */
    if (!rd(&D, 2) || !rd(&capacity, 2) || !rd(&pushed, 4) || !rd(&in_s, 4) || !rd(&zp, 4) || !rd(&epochs, 2) ||
        !rd(&batch, 2) || !rd(&cfg.lr, 4) || !rd(&cfg.momentum, 4) || !rd(&cfg.weight_decay, 4) ||
        !rd(&cfg.prox_mu, 4) || !rd(&cfg.seed, 8) || !rd(&cfg.round, 4) || !rd(&cfg.device_id, 4))
        return -1;
    cfg.epochs = epochs;
    cfg.batch_size = batch;
    CD = (size_t)C * D;
    if (C < 1 || D < 1 || C > FT_MAX_CLASSES || D > FT_MAX_DIM || capacity < 1 || capacity > FT_CACHE_CAPACITY) {
        if (!skip(CD * 4 + (size_t)C * 4 + (size_t)pushed * (D + 1u))) return -1;
        st = -1000;
        wr(&st, 4);
        wr(&loss, 4);
        wr(&steps, 4);
        for (i = 0; i < CD + C; i++) wr(&loss, 4);
        return 1;
    }
    fh.C = C;
    fh.D = D;
    if (!rd(fh.weights, CD * 4) || !rd(fh.bias, (size_t)C * 4)) return -1;
    if (ft_cache_init(&cache, capacity, D) != FT_OK) return -1;
    {
        static int8_t x_all[(FT_CACHE_CAPACITY * 4) * FT_MAX_DIM];
        static uint8_t y_all[FT_CACHE_CAPACITY * 4];
        if (pushed > FT_CACHE_CAPACITY * 4) return -1;
        if (!rd(x_all, (size_t)pushed * D) || !rd(y_all, pushed)) return -1;
        for (i = 0; i < pushed; i++) {
            memcpy(xs, x_all + (size_t)i * D, D);
            if (ft_cache_push(&cache, xs, y_all[i]) != FT_OK) return -1;
        }
    }
    st = (int32_t)ft_train(&fh, &cache, in_s, zp, &cfg, &work, &loss, &steps);
    wr(&st, 4);
    wr(&loss, 4);
    wr(&steps, 4);
    wr(fh.weights, CD * 4);
    wr(fh.bias, (size_t)C * 4);
    return 1;
}

int main(void)
{
    int r, n = 0;
    while ((r = one_case()) == 1) n++;
    fflush(stdout);
    if (r < 0) {
        fprintf(stderr, "train_diff: malformed case %d\n", n);
        return 2;
    }
    fprintf(stderr, "train_diff: %d cases\n", n);
    return 0;
}
