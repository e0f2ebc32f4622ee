/* libFuzzer target: the signed-image parser and verifier (core/ft_image.c) and KEY_CHANGE (core/ft_keys.c) on
 * arbitrary bytes. Byte 0 picks the target; for images a reader that traps on any access outside the image
 * checks the parser's bounds (ASan checks the rest). Seeds: tests/fuzz/corpus_image (fedtiny-signed images). */
#include "ft_image.h"
#include "ft_keys.h"
#include "ft_simflash.h"
#include "../golden/golden_signing.h"
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *p;
    uint32_t n;
} mem;

static ft_status rd(void *ctx, uint32_t off, uint8_t *out, size_t n)
{
    const mem *m = (const mem *)ctx;
    if (off > m->n || n > m->n - off) __builtin_trap(); /* the parser read outside the image */
    memcpy(out, m->p + off, n);
    return FT_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    static ft_keys keys;
    if (size < 1) return 0;
    if (!inited) {
        ft_simflash_format();
        if (ft_keys_config((const uint8_t(*)[32])gs_pub1, 1, NULL) != FT_OK) __builtin_trap();
        inited = 1;
    }
    if (data[0] & 1) {
        ft_image_info im;
        mem m;
        m.p = data + 1;
        m.n = (uint32_t)(size - 1);
        if (ft_image_parse(&im, rd, &m, m.n) == FT_OK) {
            if (im.hashed_len > m.n || im.hdr_size < FT_IMAGE_HDR_MIN) __builtin_trap();
            (void)ft_image_verify(&im, rd, &m, (const uint8_t(*)[32])gs_pub1, 1);
        }
    } else {
        char why[128];
        uint8_t set[8 + 32 * FT_MAX_KEYS];
        ft_simflash_cut_at(0);
        if (data[0] & 0x80) ft_simflash_format();
        if (ft_keys_open(&keys) != FT_OK || keys.n == 0 || keys.n > FT_MAX_KEYS) __builtin_trap();
        (void)ft_keys_change(&keys, 7, data + 1, size - 1, why, sizeof why);
        if (keys.n == 0 || keys.n > FT_MAX_KEYS || ft_keys_set(&keys, set, sizeof set) == 0) __builtin_trap();
    }
    return 0;
}
