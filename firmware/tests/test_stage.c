/* STAGE_INPUT (docs/protocol.md "STAGE_INPUT"): pieces of one raw input staged in the device, its checks in the
 * documented order (statuses and the exact BAD_OFFSET reason "staged N"), a refusal changes nothing, a reboot clears
 * the staging, and the staged kinds 3 and 4 on a board without a backbone (UNSUPPORTED). A build with
 * FT_MAX_STAGED_INPUT 0 (the microcontroller default, e.g. QEMU) answers UNSUPPORTED and does not advertise
 * STAGED_INPUT. The full-model path (push, INFER, CONFIRM on the staged input) is checked against TFLite Micro and the
 * virtual board by tests/test_chunked_input.py. */
#include "ft_test.h"
#include "ft_dev.h"
#include "ft_proto.h"
#include "ft_simflash.h"
#include "../app/factory_head.h"

extern ft_dev ft_test_dev; /* test_device.c: one device object for every device test */
static uint8_t resp[FT_MAX_PAYLOAD];
static size_t resp_len;

/* test_device.c: a formatted flash and device 9 booted on it (the factory head, the fleet key) */
void ft_test_boot_blank(void);
#define boot_blank ft_test_boot_blank

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* One STAGE_INPUT piece of `n` bytes (i, i+1, ...) at `off` of an input of `total` bytes. */
static uint8_t stage(uint32_t total, uint32_t off, uint32_t n)
{
    static uint8_t p[FT_STAGE_INPUT_HDR_SIZE + 64];
    uint32_t i;
    wr32(p, total);
    wr32(p + 4, off);
    for (i = 0; i < n && i < 64; i++) p[8 + i] = (uint8_t)(off + i);
    return ft_dev_handle(&ft_test_dev, FT_MSG_STAGE_INPUT, p, FT_STAGE_INPUT_HDR_SIZE + n, resp, sizeof resp, &resp_len);
}

#if FT_MAX_STAGED_INPUT > 0
static int reason_is(const char *s)
{
    return resp_len == strlen(s) && memcmp(resp, s, resp_len) == 0;
}
#endif

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void test_stage_input(void)
{
    uint8_t push[FT_SAMPLES_HDR_SIZE + 4] = {FT_SAMPLE_STAGED_INT8, 0, 1, 0, 10, 0, 1, 0, 2, 0};
    uint8_t infer[FT_INFER_HDR_SIZE] = {FT_SAMPLE_STAGED_F32, 0, 10, 0};
    boot_blank();
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_HELLO, NULL, 0, resp, sizeof resp, &resp_len), FT_ST_OK);
    CHECK_EQ_INT(!!(rd32(resp + 8) & FT_CAP_STAGED_INPUT), FT_MAX_STAGED_INPUT > 0);
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_STAGE_INPUT, infer, 3, resp, sizeof resp, &resp_len), FT_ST_MALFORMED);
#if FT_MAX_STAGED_INPUT == 0
    CHECK_EQ_INT(stage(10, 0, 4), FT_ST_UNSUPPORTED);
#else
    CHECK_EQ_INT(stage(0, 0, 0), FT_ST_NO_SPACE);
    CHECK_EQ_INT(stage(FT_MAX_STAGED_INPUT + 1u, 0, 4), FT_ST_NO_SPACE);
    CHECK_EQ_INT(stage(10, 11, 0), FT_ST_MALFORMED);          /* offset past total */
    CHECK_EQ_INT(stage(10, 8, 3), FT_ST_MALFORMED);           /* data past total */
    CHECK_EQ_INT(stage(10, 0xFFFFFFFFu, 2), FT_ST_MALFORMED); /* offset + len overflows u32 */
    CHECK_EQ_INT(stage(10, 4, 2), FT_ST_BAD_OFFSET);          /* nothing staged */
    CHECK(reason_is("staged 0"));
    CHECK_EQ_INT(stage(10, 0, 4), FT_ST_OK);
    CHECK_EQ_INT(resp_len, 4);
    CHECK_EQ_INT(rd32(resp), 4);
    CHECK_EQ_INT(stage(10, 6, 2), FT_ST_BAD_OFFSET); /* a lost piece: the staged length to resume from */
    CHECK(reason_is("staged 4"));
    CHECK_EQ_INT(stage(12, 4, 2), FT_ST_BAD_OFFSET); /* another total: start again */
    CHECK(reason_is("staged 0"));
    CHECK_EQ_INT(stage(10, 4, 6), FT_ST_OK); /* the refusals changed nothing: it completes */
    CHECK_EQ_INT(rd32(resp), 10);
    CHECK_EQ_INT(ft_test_dev.input_len, 10);
    CHECK(ft_test_dev.input[0] == 0 && ft_test_dev.input[9] == 9);
    CHECK_EQ_INT(stage(10, 10, 0), FT_ST_OK); /* an empty piece at the end */
    CHECK_EQ_INT(rd32(resp), 10);
    CHECK_EQ_INT(ft_dev_boot(&ft_test_dev), FT_OK); /* a reboot loses it */
    CHECK_EQ_INT(stage(10, 4, 6), FT_ST_BAD_OFFSET);
    CHECK(reason_is("staged 0"));
#endif
    /* the staged kinds: n <= 1 (MALFORMED), then UNSUPPORTED (no backbone here, or no staging); nothing cached */
    push[2] = 2;
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_PUSH_SAMPLES, push, sizeof push, resp, sizeof resp, &resp_len),
                 FT_ST_MALFORMED);
    push[2] = 1;
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_PUSH_SAMPLES, push, sizeof push - 2, resp, sizeof resp, &resp_len),
                 FT_ST_UNSUPPORTED);
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_INFER, infer, sizeof infer, resp, sizeof resp, &resp_len),
                 FT_ST_UNSUPPORTED);
    infer[0] = 5; /* kind 5: MALFORMED */
    CHECK_EQ_INT(ft_dev_handle(&ft_test_dev, FT_MSG_INFER, infer, sizeof infer, resp, sizeof resp, &resp_len),
                 FT_ST_MALFORMED);
    CHECK_EQ_INT(ft_test_dev.cache.count, 0);
    CHECK_EQ_INT(ft_test_dev.pushed_total, 0);
}
