/* INFER (docs/protocol.md "InferRequest") on a board without a backbone: the answers of the virtual board
 * (golden/golden_infer.h, from fedtiny.clients.board by scripts/gen_golden.py) byte for byte, refusals with the same
 * statuses, and nothing changed (cache, sample ids, retry state of the device). The full-model path (kinds 1 and 2,
 * the ops after the head) is checked against TFLite Micro by tests/test_infer.py. */
#include "ft_test.h"
#include "ft_cache.h"
#include "ft_dev.h"
#include "ft_head.h"
#include "ft_proto.h"
#include "ft_simflash.h"
#include "golden/golden_infer.h"
#include "../app/factory_head.h"

extern ft_dev ft_test_dev; /* test_device.c: one device object for every device test */
static uint8_t resp[FT_MAX_PAYLOAD];
static size_t resp_len;

/* test_device.c: a formatted flash and device 9 booted on it (the factory head, the fleet key) */
void ft_test_boot_blank(void);
#define boot_blank ft_test_boot_blank

static uint8_t call(uint8_t type, const uint8_t *p, size_t n)
{
    return ft_dev_handle(&ft_test_dev, type, p, n, resp, sizeof resp, &resp_len);
}

void test_infer_message(void)
{
    static uint8_t push[FT_SAMPLES_HDR_SIZE + 2 + 64];
    int8_t logits[FT_MAX_CLASSES];
    uint32_t i;
    boot_blank();
    CHECK_EQ_INT(call(FT_MSG_HELLO, NULL, 0), FT_ST_OK);
    CHECK(ft_rd32(resp + 8) & FT_CAP_INFER);
    CHECK_EQ_INT(ft_test_dev.C, 10);
    CHECK_EQ_INT(ft_test_dev.D, 64);
    /* one cached sample: INFER must leave it, its label and the sample ids as they are */
    push[0] = FT_SAMPLE_FEATURES;
    push[2] = 1;
    push[4] = 64;
    push[6] = 3;
    for (i = 0; i < 64; i++) push[8 + i] = (uint8_t)(i * 7u);
    CHECK_EQ_INT(call(FT_MSG_PUSH_SAMPLES, push, sizeof push), FT_ST_OK);
    for (i = 0; i < GOLDEN_INFER_N; i++) {
        const golden_infer_case *g = &golden_infer[i];
        CHECK_EQ_INT(call(FT_MSG_INFER, g->req_len ? g->req : NULL, g->req_len), g->status);
        if (g->status != FT_ST_OK) continue;
        CHECK_EQ_INT(resp_len, g->resp_len);
        CHECK(memcmp(resp, g->resp, g->resp_len) == 0);
        /* no backbone: the head only, out_type NONE, out_len 0; the logits are ft_head_forward's */
        CHECK_EQ_INT(ft_rd16(resp), 10);
        CHECK_EQ_INT(resp[2], FT_INFER_OUT_NONE);
        CHECK_EQ_INT(ft_rd16(resp + 4), 0);
        CHECK_OK(ft_head_forward(&ft_test_dev.head, (const int8_t *)(g->req + FT_INFER_HDR_SIZE), logits));
        CHECK(memcmp(resp + FT_INFER_RESULT_HDR_SIZE, logits, 10) == 0);
    }
    CHECK_EQ_INT(ft_test_dev.cache.count, 1);
    CHECK_EQ_INT(ft_test_dev.cache.labels[0], 3);
    CHECK_EQ_INT(ft_test_dev.pushed_total, 1);
    CHECK_EQ_INT(ft_test_dev.has_pending, 0);
}
