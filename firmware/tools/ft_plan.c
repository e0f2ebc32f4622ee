/* ft_plan MODEL.tflite: what the firmware's interpreter makes of a model, on the host: verify it exactly as
 * the board does (ft_tfl_verify) and print the plan as "key value" lines (arena_bytes, macs, ops, tensors,
 * then "op INDEX NAME" per operator). A model the firmware refuses: "refused REASON" on stdout, exit 1.
 * Usage errors and unreadable files: one line on stderr, exit 2. Used by `fedtiny info` and
 * benchmarks/model_table.py (the firmware's arena next to TFLite Micro's). */
#include "ft_tfl_interp.h"
#include <stdio.h>
#include <stdlib.h>

#define MAX_MODEL (16u * 1024u * 1024u)
#define ARENA_CAPACITY 0x7FFFFFFFu /* report the plan's size, whatever it is; a board's limit is its own */

static ft_tfl_model model;

int main(int argc, char **argv)
{
    FILE *f;
    uint8_t *buf;
    size_t n;
    ft_status st;
    uint16_t i;
    char name[32];
    if (argc != 2) {
        fprintf(stderr, "usage: ft_plan MODEL.tflite\n");
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "ft_plan: %s: cannot open\n", argv[1]);
        return 2;
    }
    buf = (uint8_t *)malloc(MAX_MODEL + 1u);
    if (!buf) {
        fclose(f);
        return 2;
    }
    n = fread(buf, 1, MAX_MODEL + 1u, f);
    fclose(f);
    if (n > MAX_MODEL) {
        fprintf(stderr, "ft_plan: %s: larger than %u bytes\n", argv[1], MAX_MODEL);
        free(buf);
        return 2;
    }
    st = ft_tfl_verify(&model, buf, (uint32_t)n, ARENA_CAPACITY);
    if (st != FT_OK) {
        printf("refused %s\n", model.reason[0] ? model.reason : "malformed model");
        free(buf);
        return 1;
    }
    printf("arena_bytes %lu\n", (unsigned long)model.arena_bytes);
    printf("macs %llu\n", (unsigned long long)model.macs);
    printf("ops %u\n", (unsigned)model.n_ops);
    printf("tensors %u\n", (unsigned)model.n_tensors);
#if defined(FT_TFL_OPTIMIZED) && FT_TFL_OPTIMIZED
    printf("kernels optimized\n"); /* the arena includes the DSP kernels' scratch */
#else
    printf("kernels portable\n");
#endif
    for (i = 0; i < model.n_ops; i++) printf("op %u %s\n", (unsigned)i, ft_tfl_op_name(model.ops[i].code, name, sizeof name));
    free(buf);
    return 0;
}
