/* The device with public keys (ft_dev + ft_update + ft_keys), on host and in QEMU: a signed upload of the factory
 * head (golden/golden_signing.h) verified, activated and confirmed, its payload running after a reboot; HMAC-only
 * and untrusted images refused; KEYS / KEY_CHANGE through the handler; the update key advertised. */
#include "ft_test.h"
#include "ft_dev.h"
#include "ft_keys.h"
#include "ft_proto.h"
#include "ft_sha256.h"
#include "ft_simflash.h"
#include "golden/golden_signing.h"
#include "../app/factory_head.h"

extern ft_dev ft_test_dev; /* defined in test_device.c: one device object for the device tests (RAM) */
static uint8_t resp[FT_MAX_PAYLOAD];
static size_t resp_len;
static uint8_t req[2048];

static void boot(void)
{
    memset(&ft_test_dev, 0, sizeof ft_test_dev);
    ft_test_dev.device_id = 7;
    ft_test_dev.factory_patch = ft_factory_head;
    ft_test_dev.factory_len = FT_FACTORY_HEAD_LEN;
    ft_test_dev.board_name = "test";
    CHECK_OK(ft_dev_boot(&ft_test_dev));
}

static uint8_t call(uint8_t type, const uint8_t *p, size_t n)
{
    return ft_dev_handle(&ft_test_dev, type, p, n, resp, sizeof resp, &resp_len);
}

/* UPLOAD_BEGIN (kind 1, any slot) + one UPLOAD_CHUNK of the whole image; the BEGIN status. */
static uint8_t upload(const uint8_t *img, uint32_t n, uint8_t flags, uint32_t counter)
{
    uint8_t st;
    memset(req, 0, FT_UPLOAD_BEGIN_SIZE);
    req[0] = 1;
    req[1] = 0xFF;
    req[2] = flags;
    ft_wr32(req + 4, n);
    ft_sha256(img, n, req + 8);
    ft_wr32(req + 72, counter);
    st = call(FT_MSG_UPLOAD_BEGIN, req, FT_UPLOAD_BEGIN_SIZE);
    if (st != FT_ST_OK) return st;
    ft_wr32(req, 0);
    memcpy(req + 4, img, n);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_CHUNK, req, 4 + n), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), n);
    return st;
}

static int reason_is(const char *want)
{
    size_t n = strlen(want);
    return resp_len == n && memcmp(resp, want, n) == 0;
}

void test_signed_upload_on_device(void)
{
    static const uint8_t update_key[32] = {1, 2, 3};
    uint8_t slot = 1, golden[8 + 64 + 10];
    int8_t logits[16];
    ft_head fh;
    ft_simflash_cut_at(0);
    ft_simflash_format();
    CHECK_OK(ft_keys_config((const uint8_t(*)[32])gs_pub1, 1, update_key));
    boot();
    CHECK_EQ_INT(call(FT_MSG_HELLO, NULL, 0), FT_ST_OK);
    CHECK((ft_rd32(resp + 8) & (FT_CAP_SIGNED_IMAGES | FT_CAP_DEVICE_KEY)) == (FT_CAP_SIGNED_IMAGES | FT_CAP_DEVICE_KEY));
    /* an image without flag SIGNED: refused at BEGIN */
    CHECK_EQ_INT(upload(ft_factory_head, FT_FACTORY_HEAD_LEN, 0, 1), FT_ST_AUTH_FAILED);
    CHECK(reason_is("this board accepts only Ed25519-signed images (MCUboot format, UploadBegin flag SIGNED); "
                    "HMAC-tagged images are refused"));
    /* signed by a key the board does not trust: VERIFY refuses it and marks the slot bad */
    CHECK_EQ_INT(upload(gs_img_key2, GS_IMG_KEY2_LEN, FT_UPLOAD_SIGNED, 5), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_VERIFY, &slot, 1), FT_ST_AUTH_FAILED);
    CHECK(reason_is("signed image: signed by a key this board does not trust"));
    CHECK_EQ_INT(ft_test_dev.store.m.slots[1].received, 0);
    /* the declared counter must be the signed one */
    CHECK_EQ_INT(upload(gs_img_head, GS_IMG_HEAD_LEN, FT_UPLOAD_SIGNED, 2), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_VERIFY, &slot, 1), FT_ST_AUTH_FAILED);
    CHECK(reason_is("declared security counter 2 differs from the signed 1"));
    /* the signed factory head: verified, tested with its golden vector, confirmed; the floor is its counter */
    CHECK_EQ_INT(upload(gs_img_head, GS_IMG_HEAD_LEN, FT_UPLOAD_SIGNED, 1), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.store.m.slots[1].flags, FT_SLOT_FLAG_SIGNED);
    CHECK_EQ_INT(call(FT_MSG_VERIFY, &slot, 1), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, &slot, 1), FT_ST_OK);
    CHECK_OK(ft_head_decode_patch(&fh, ft_factory_head, FT_FACTORY_HEAD_LEN, 0, 0));
    memset(golden, 0, sizeof golden);
    golden[0] = 1;
    ft_wr16(golden + 2, 1);
    ft_wr16(golden + 4, 64);
    ft_wr16(golden + 6, 10);
    golden[8 + 3] = 77;
    CHECK_OK(ft_head_forward(&fh, (const int8_t *)golden + 8, logits));
    memcpy(golden + 8 + 64, logits, 10);
    CHECK_EQ_INT(call(FT_MSG_CONFIRM, golden, sizeof golden), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.store.m.confirmed, 1);
    CHECK_EQ_INT(ft_test_dev.store.m.sec_floor, 1);
    /* after a reboot the signed slot's payload runs (the whole image re-hashed, the head read after its header) */
    boot();
    CHECK_EQ_INT(ft_test_dev.active, 1);
    CHECK_EQ_INT(ft_test_dev.store.m.reverted & FT_SS_FELL_BACK, 0);
    /* KEYS / KEY_CHANGE through the handlers */
    CHECK_EQ_INT(call(FT_MSG_KEYS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp_len, 40);
    CHECK_MEM(resp + 8, gs_keyhash1, 32);
    CHECK_EQ_INT(call(FT_MSG_KEYS, req, 1), FT_ST_MALFORMED);
    CHECK_EQ_INT(call(FT_MSG_KEY_CHANGE, gs_kc_add2, GS_KC_ADD2_LEN), FT_ST_OK);
    CHECK_EQ_INT(resp[0], 2);
    CHECK_EQ_INT(ft_rd32(resp + 4), 1);
    /* the stored set is the board's: a boot provisioned with none keeps it */
    CHECK_OK(ft_keys_config(NULL, 0, NULL));
    boot();
    CHECK_EQ_INT(ft_test_dev.keys.n, 2);
    CHECK_EQ_INT(call(FT_MSG_HELLO, NULL, 0), FT_ST_OK);
    CHECK((ft_rd32(resp + 8) & (FT_CAP_SIGNED_IMAGES | FT_CAP_DEVICE_KEY)) == FT_CAP_SIGNED_IMAGES);
    /* a board without keys: SIGNED refused at BEGIN, KEYS n = 0, KEY_CHANGE unsupported */
    ft_simflash_format();
    boot();
    CHECK_EQ_INT(upload(gs_img_head, GS_IMG_HEAD_LEN, FT_UPLOAD_SIGNED, 1), FT_ST_AUTH_FAILED);
    CHECK(reason_is("no public key provisioned: this board accepts only HMAC-tagged images"));
    CHECK_EQ_INT(call(FT_MSG_KEYS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp_len, 8);
    CHECK_EQ_INT(call(FT_MSG_KEY_CHANGE, gs_kc_add2, GS_KC_ADD2_LEN), FT_ST_UNSUPPORTED);
}
