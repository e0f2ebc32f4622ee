/* The int8 interpreter (core/ft_tfl_*) against TFLite Micro, layer by layer, bit for bit, plus refusals
 * and a mutation fuzz. Its own program (make test-tfl), not part of unit_tests: the golden bundle comes
 * from scripts/gen_tfl_golden.py at test time (the host binary reads it from a file, the QEMU image has it
 * compiled in from tfl_golden_data.h).
 *
 *   test_tfl BUNDLE [--fuzz N] [--seed S]     (host)
 *
 * Prints one line per model and "N passed, M failed" (checked by tests/test_firmware_tfl.py). Any
 * out-of-bounds access in the fuzz aborts the host build (ASan/UBSan) or faults in QEMU. */
#ifdef FT_TFL_TEST_MAIN
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ft_tfl_interp.h"

#ifdef FT_TFL_GOLDEN_HEADER
#include "port_mps2.h"
#include "tfl_golden_data.h"
#endif

#ifndef FT_TFL_TEST_MAX_MODEL
#define FT_TFL_TEST_MAX_MODEL (256u * 1024u)
#endif

static ft_tfl_model model;
static uint8_t arena[FT_TFL_ARENA_SIZE];
static uint8_t mutated[FT_TFL_TEST_MAX_MODEL];
static int passed, failed;

static void out(const char *fmt, ...)
{
    char buf[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
#ifdef FT_TFL_GOLDEN_HEADER
    ft_mps2_puts(buf);
#else
    fputs(buf, stdout);
#endif
}

/* ---- bundle ---------------------------------------------------------------------------------------- */
typedef struct {
    const uint8_t *p;
    size_t n, pos;
    int bad;
} rd;

static uint32_t rd_u32(rd *r)
{
    uint32_t v;
    if (r->bad || r->n - r->pos < 4) {
        r->bad = 1;
        return 0;
    }
    v = (uint32_t)r->p[r->pos] | ((uint32_t)r->p[r->pos + 1] << 8) | ((uint32_t)r->p[r->pos + 2] << 16) |
        ((uint32_t)r->p[r->pos + 3] << 24);
    r->pos += 4;
    return v;
}

static const uint8_t *rd_bytes(rd *r, size_t n)
{
    const uint8_t *q;
    if (r->bad || r->n - r->pos < n) {
        r->bad = 1;
        return NULL;
    }
    q = r->p + r->pos;
    r->pos += n;
    return q;
}

typedef struct {
    char name[64];
    const uint8_t *model;
    uint32_t model_len, tflm_arena, n_inputs, n_tensors;
    const uint8_t *input;
    uint32_t input_len;
    const uint8_t *tensors; /* n_tensors x (u32 index, u32 len, bytes) */
    size_t tensors_len;
} gcase;

static int read_case(rd *r, gcase *c)
{
    uint32_t k, nl;
    const uint8_t *name;
    size_t start;
    memset(c, 0, sizeof *c);
    if (r->n - r->pos < 2) return 0;
    nl = (uint32_t)r->p[r->pos] | ((uint32_t)r->p[r->pos + 1] << 8);
    r->pos += 2;
    name = rd_bytes(r, nl);
    if (!name || nl >= sizeof c->name) return 0;
    memcpy(c->name, name, nl);
    c->model_len = rd_u32(r);
    c->model = rd_bytes(r, c->model_len);
    c->tflm_arena = rd_u32(r);
    c->n_inputs = rd_u32(r);
    for (k = 0; k < c->n_inputs; k++) {
        uint32_t len = rd_u32(r);
        const uint8_t *b = rd_bytes(r, len);
        if (k == 0) {
            c->input = b;
            c->input_len = len;
        }
    }
    c->n_tensors = rd_u32(r);
    start = r->pos;
    for (k = 0; k < c->n_tensors; k++) {
        rd_u32(r);
        rd_bytes(r, rd_u32(r));
    }
    c->tensors = r->p + start;
    c->tensors_len = r->pos - start;
    return !r->bad;
}

/* Golden bytes of tensor idx, or NULL. */
static const uint8_t *golden_tensor(const gcase *c, uint32_t idx, uint32_t *len)
{
    rd r = {c->tensors, c->tensors_len, 0, 0};
    uint32_t k;
    for (k = 0; k < c->n_tensors; k++) {
        uint32_t i = rd_u32(&r), n = rd_u32(&r);
        const uint8_t *b = rd_bytes(&r, n);
        if (i == idx) {
            *len = n;
            return b;
        }
    }
    return NULL;
}

/* ---- layer-by-layer comparison ------------------------------------------------------------------ */
typedef struct {
    const gcase *c;
    uint32_t compared, mismatched;
} cmp_ctx;

static void after_op(void *vctx, const ft_tfl_model *m, uint16_t op_index, const uint8_t *a)
{
    cmp_ctx *x = (cmp_ctx *)vctx;
    int16_t t = m->ops[op_index].out;
    uint32_t len = 0, k, diff = 0, first = 0;
    const uint8_t *g = golden_tensor(x->c, (uint32_t)t, &len);
    const uint8_t *mine = ft_tfl_tensor_data(m, (unsigned)t, a);
    char nb[24];
    if (!g) return;
    x->compared++;
    if (len != m->tensors[t].bytes) {
        x->mismatched++;
        out("  %s op %u: tensor %d size %u, golden %u\n", x->c->name, (unsigned)op_index, t,
            (unsigned)m->tensors[t].bytes, (unsigned)len);
        return;
    }
    for (k = 0; k < len; k++)
        if (mine[k] != g[k]) {
            if (!diff) first = k;
            diff++;
        }
    if (diff) {
        x->mismatched++;
        out("  %s op %u %s: tensor %d differs in %u of %u bytes (first at %u: %d vs golden %d)\n", x->c->name,
            (unsigned)op_index, ft_tfl_op_name(m->ops[op_index].code, nb, sizeof nb), t, (unsigned)diff,
            (unsigned)len, (unsigned)first, (int)(int8_t)mine[first], (int)(int8_t)g[first]);
    }
}

static void check(int ok, const char *what, const char *name)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        out("FAIL %s: %s\n", name, what);
    }
}

static void run_golden(const gcase *c, uint32_t *tensors_total)
{
    ft_status st;
    cmp_ctx x;
    uint8_t *in;
    uint32_t in_len = 0;
    if (strncmp(c->name, "refuse_", 7) == 0) {
        /* a model with an op the firmware lacks: refused at verify, the reason names the op */
        const char *op = c->name + 7;
        char want[40];
        size_t k;
        st = ft_tfl_verify(&model, c->model, c->model_len, sizeof arena);
        for (k = 0; op[k] && k + 1 < sizeof want; k++) want[k] = (char)(op[k] >= 'a' && op[k] <= 'z' ? op[k] - 32 : op[k]);
        want[k] = 0;
        out("case %s: %s (%s)\n", c->name, ft_status_str(st), model.reason);
        check(st == FT_ERR_UNSUPPORTED && strstr(model.reason, want) != NULL, "refusal naming the op", c->name);
        return;
    }
    st = ft_tfl_verify(&model, c->model, c->model_len, sizeof arena);
    if (st != FT_OK) {
        out("case %s: verify %s: %s\n", c->name, ft_status_str(st), model.reason);
        check(0, "verify", c->name);
        return;
    }
    in = ft_tfl_input(&model, 0, arena, &in_len, NULL);
    if (!in || in_len != c->input_len) {
        check(0, "input size", c->name);
        return;
    }
    memset(arena, 0xA5, sizeof arena); /* stale arena contents must not matter */
    memcpy(in, c->input, in_len);
    x.c = c;
    x.compared = x.mismatched = 0;
    st = ft_tfl_invoke(&model, arena, sizeof arena, after_op, &x);
    out("case %s: %u ops, %u tensors compared, %u differ; arena %u bytes (TFLite Micro %u), %lu MACs\n", c->name,
        (unsigned)model.n_ops, (unsigned)x.compared, (unsigned)x.mismatched, (unsigned)model.arena_bytes,
        (unsigned)c->tflm_arena, (unsigned long)model.macs);
    check(st == FT_OK && x.mismatched == 0 && x.compared == model.n_ops, "bit-exact", c->name);
    check(model.arena_bytes <= c->tflm_arena, "arena no larger than TFLite Micro's", c->name);
    *tensors_total += x.compared;
    /* every truncation of the image is refused (a cut upload) */
    {
        uint32_t len, bad = 0;
        for (len = 0; len < c->model_len; len += (len < 64 ? 1u : 1u + len / 61u))
            if (ft_tfl_verify(&model, c->model, len, sizeof arena) == FT_OK) bad++;
        check(bad == 0, "truncated images refused", c->name);
    }
}

/* ---- mutation fuzz ------------------------------------------------------------------------------- */
static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void fuzz(const gcase *c, uint32_t n, uint32_t *refused, uint32_t *ran)
{
    uint32_t it;
    if (c->model_len > sizeof mutated || strncmp(c->name, "refuse_", 7) == 0) return;
    for (it = 0; it < n; it++) {
        uint32_t len = c->model_len, k, edits = 1 + rnd() % 4;
        memcpy(mutated, c->model, len);
        for (k = 0; k < edits; k++) {
            uint32_t pos = rnd() % len, kind = rnd() % 4;
            if (kind == 0) mutated[pos] = (uint8_t)rnd();
            else if (kind == 1) mutated[pos] ^= (uint8_t)(1u << (rnd() % 8));
            else if (kind == 2) mutated[pos] = (uint8_t)(rnd() & 1 ? 0xFF : 0x00);
            else mutated[pos] = (uint8_t)(mutated[pos] + (rnd() & 1 ? 1 : 0xFF));
        }
        if (rnd() % 16 == 0) len = rnd() % len;
        if (ft_tfl_verify(&model, mutated, len, sizeof arena) != FT_OK) {
            (*refused)++;
            continue;
        }
        {
            uint32_t i, j;
            for (i = 0; i < model.n_inputs; i++) {
                uint32_t in_len = 0;
                uint8_t *in = ft_tfl_input(&model, i, arena, &in_len, NULL);
                for (j = 0; in && j < in_len; j++) in[j] = (uint8_t)rnd();
            }
            (void)ft_tfl_invoke(&model, arena, sizeof arena, NULL, NULL); /* any status; no fault */
            (*ran)++;
        }
    }
}

static int run_bundle(const uint8_t *data, size_t len, uint32_t fuzz_n, uint64_t seed)
{
    rd r = {data, len, 0, 0};
    gcase c;
    uint32_t version, n, k, tensors = 0, refused = 0, ran = 0, models = 0;
    if (len < 12 || memcmp(data, "FTGB", 4) != 0) {
        out("bad bundle\n");
        return 1;
    }
    r.pos = 4;
    version = rd_u32(&r);
    n = rd_u32(&r);
    if (version != 1) {
        out("bad bundle version\n");
        return 1;
    }
    for (k = 0; k < n; k++) {
        if (!read_case(&r, &c)) {
            out("bad case %u\n", (unsigned)k);
            return 1;
        }
        run_golden(&c, &tensors);
        if (strncmp(c.name, "refuse_", 7) != 0) models++;
    }
    out("bit-exact: %u models, %u tensors compared\n", (unsigned)models, (unsigned)tensors);
    if (fuzz_n) {
        rng_state = seed ? seed : 0x9E3779B97F4A7C15ull;
        r.pos = 12;
        r.bad = 0;
        for (k = 0; k < n; k++) {
            if (!read_case(&r, &c)) break;
            fuzz(&c, fuzz_n, &refused, &ran);
        }
        out("fuzz: %u mutated images, %u refused, %u verified and ran\n", (unsigned)(refused + ran), (unsigned)refused,
            (unsigned)ran);
        check(refused + ran > 0, "fuzz ran", "fuzz");
    }
    out("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#ifdef FT_TFL_GOLDEN_HEADER
#ifndef FT_TFL_QEMU_FUZZ
#define FT_TFL_QEMU_FUZZ 40u
#endif
int main(void)
{
    int rc;
    ft_mps2_init();
    rc = run_bundle(tfl_golden_data, tfl_golden_len, FT_TFL_QEMU_FUZZ, 1);
    ft_mps2_semihost_exit(rc);
    return rc;
}
#else
int main(int argc, char **argv)
{
    FILE *f;
    static uint8_t *data;
    long n;
    uint32_t fuzz_n = 0;
    uint64_t seed = 1;
    int i, rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: %s BUNDLE [--fuzz N] [--seed S]\n", argv[0]);
        return 2;
    }
    for (i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--fuzz") == 0) fuzz_n = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seed") == 0) seed = strtoull(argv[i + 1], NULL, 10);
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    /* the test program (not the firmware) may allocate: the bundle's size is only known here */
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(data = (uint8_t *)malloc((size_t)n)) || fread(data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    rc = run_bundle(data, (size_t)n, fuzz_n, seed);
    free(data);
    return rc;
}
#endif
#else
/* Built into unit_tests by the Makefile's tests/test_*.c wildcard: nothing there (see make test-tfl). */
typedef int ft_tfl_test_not_in_unit_tests;
#endif
