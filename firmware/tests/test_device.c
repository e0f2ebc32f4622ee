/* Device-level tests: frame codec against the protocol vectors, the link (framing, retry cache, bad
 * frames), the command set, and power cuts at every flash operation of an upload + update commit. */
#include "ft_test.h"
#include "ft_dev.h"
#include "ft_link.h"
#include "ft_proto.h"
#include "ft_sha256.h"
#include "ft_crc32.h"
#include "ft_simflash.h"
#include "golden/golden_frames.h"
#include "../app/factory_head.h"

/* one device object shared by the device tests (test_device.c defines it): small-RAM boards (STM32L475) hold one */
extern ft_dev ft_test_dev;
ft_dev ft_test_dev;
static ft_link lnk;
static uint8_t resp[FT_MAX_PAYLOAD];
static size_t resp_len;
static uint8_t out[4 * FT_WIRE_MAX];
static size_t out_len;
static const uint8_t key[32] = FT_FLEET_KEY_INIT;

void test_frame_vectors(void)
{
    static uint8_t buf[FT_WIRE_MAX];
    size_t i, n;
    for (i = 0; i < GOLDEN_FRAME_N; i++) {
        const golden_frame_case *g = &golden_frames[i];
        CHECK_OK(ft_cobs_encode(g->decoded, g->decoded_len, buf, sizeof buf, &n));
        CHECK_EQ_INT(n + 1, g->wire_len);
        CHECK_MEM(buf, g->wire, n);
        CHECK_EQ_INT(g->wire[g->wire_len - 1], 0);
        CHECK_OK(ft_cobs_decode(g->wire, g->wire_len - 1, buf, sizeof buf, &n));
        CHECK_EQ_INT(n, g->decoded_len);
        CHECK_MEM(buf, g->decoded, n);
        CHECK_EQ_INT(ft_crc32(g->decoded, n - 4), ft_rd32(g->decoded + n - 4));
    }
}

static ft_status capture(const uint8_t *b, size_t n)
{
    if (out_len + n > sizeof out) return FT_ERR_NOSPACE;
    memcpy(out + out_len, b, n);
    out_len += n;
    return FT_OK;
}

/* A formatted flash and device 9 booted on it (the factory head, the fleet key): the start of the label,
 * INFER and staged-input tests. */
void ft_test_boot_blank(void);
void ft_test_boot_blank(void)
{
    ft_simflash_cut_at(0);
    ft_simflash_format();
    memset(&ft_test_dev, 0, sizeof ft_test_dev);
    ft_test_dev.device_id = 9;
    memcpy(ft_test_dev.key, key, 32);
    ft_test_dev.has_key = 1;
    ft_test_dev.factory_patch = ft_factory_head;
    ft_test_dev.factory_len = FT_FACTORY_HEAD_LEN;
    ft_test_dev.board_name = "test";
    CHECK_OK(ft_dev_boot(&ft_test_dev));
}

static void boot(void)
{
    memset(&ft_test_dev, 0, sizeof ft_test_dev);
    ft_test_dev.device_id = 7;
    memcpy(ft_test_dev.key, key, 32);
    ft_test_dev.has_key = 1;
    ft_test_dev.factory_patch = ft_factory_head;
    ft_test_dev.factory_len = FT_FACTORY_HEAD_LEN;
    ft_test_dev.board_name = "test";
    CHECK_OK(ft_dev_boot(&ft_test_dev));
    ft_link_init(&lnk, capture);
}

static void power_up_blank(void)
{
    ft_simflash_cut_at(0);
    ft_simflash_format();
    boot();
}

static uint8_t call(uint8_t type, const uint8_t *p, size_t n)
{
    return ft_dev_handle(&ft_test_dev, type, p, n, resp, sizeof resp, &resp_len);
}

/* A request frame on the wire. */
static size_t wire(uint8_t type, uint16_t seq, const uint8_t *p, size_t n, uint8_t *w, uint8_t version)
{
    static uint8_t fr[FT_FRAME_MAX];
    size_t enc = 0;
    fr[0] = version; fr[1] = type; fr[2] = 0; fr[3] = 0;
    ft_wr16(fr + 4, seq);
    ft_wr16(fr + 6, (uint16_t)n);
    if (n) memcpy(fr + 8, p, n);
    ft_wr32(fr + 8 + n, ft_crc32(fr, 8 + n));
    if (ft_cobs_encode(fr, 12 + n, w, FT_WIRE_MAX, &enc) != FT_OK) return 0;
    w[enc] = 0;
    return enc + 1;
}

/* Decode the single response frame in out[]. Returns its status, payload in resp. */
static int parse_out(uint8_t type, uint16_t seq)
{
    static uint8_t fr[FT_WIRE_MAX];
    size_t n = 0;
    if (out_len < 2 || out[out_len - 1] != 0) return -1;
    if (ft_cobs_decode(out, out_len - 1, fr, sizeof fr, &n) != FT_OK || n < 12) return -2;
    if (ft_crc32(fr, n - 4) != ft_rd32(fr + n - 4)) return -3;
    if (fr[1] != type || ft_rd16(fr + 4) != seq || !(fr[2] & FT_FLAG_RESPONSE)) return -4;
    resp_len = ft_rd16(fr + 6);
    memcpy(resp, fr + 8, resp_len);
    return fr[3];
}

void test_link_framing(void)
{
    static uint8_t w[FT_WIRE_MAX * 2];
    size_t n, used;
    uint32_t before;
    power_up_blank();
    /* HELLO over the wire, preceded by the host's flush byte and garbage */
    w[0] = 0; w[1] = 0x55; w[2] = 0x13; w[3] = 0;
    n = wire(FT_MSG_HELLO, 1, NULL, 0, w + 4, 1) + 4;
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(used, n);
    CHECK_EQ_INT(parse_out(FT_MSG_HELLO, 1), FT_ST_OK);
    CHECK_EQ_INT(resp[0], 1);
    CHECK_EQ_INT(ft_rd32(resp + 4), 7);
    CHECK_EQ_INT(ft_rd16(resp + 12), 10);
    CHECK_EQ_INT(ft_rd16(resp + 14), 64);
    CHECK_EQ_INT(ft_rd32(resp + 8) & (FT_CAP_FLOAT_TRAIN | FT_CAP_FIXED_TRAIN),
                 FT_CAP_FIXED_TRAIN | (FT_USE_FLOAT ? FT_CAP_FLOAT_TRAIN : 0u));
    /* full images with the interpreter (FT_BACKBONE); raw samples only while one runs (the factory head runs here) */
    CHECK_EQ_INT(ft_rd32(resp + 8) & (FT_CAP_RAW_SAMPLES | FT_CAP_FULL_IMAGE), FT_BACKBONE ? FT_CAP_FULL_IMAGE : 0u);
    CHECK_EQ_INT(ft_rd16(resp + 28), 0); /* raw_input_len */
    CHECK(lnk.dropped >= 1);
    /* a retry (same seq/type/payload) gets the cached bytes without re-executing */
    {
        size_t first = out_len;
        static uint8_t copy[FT_WIRE_MAX];
        memcpy(copy, out, first);
        out_len = 0;
        CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w + 4, n - 4, &used));
        CHECK_EQ_INT(out_len, first);
        CHECK_MEM(out, copy, first);
    }
    /* corrupted CRC: dropped silently */
    n = wire(FT_MSG_STATUS, 2, NULL, 0, w, 1);
    w[3] ^= 0x40;
    before = lnk.dropped;
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(out_len, 0);
    CHECK_EQ_INT(lnk.dropped, before + 1);
    /* bad version -> BAD_VERSION; unknown type -> UNKNOWN_TYPE; bad payload -> MALFORMED */
    n = wire(FT_MSG_STATUS, 3, NULL, 0, w, 2);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(parse_out(FT_MSG_STATUS, 3), FT_ST_BAD_VERSION);
    n = wire(0x7E, 4, NULL, 0, w, 1);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(parse_out(0x7E, 4), FT_ST_UNKNOWN_TYPE);
    n = wire(FT_MSG_STATUS, 5, w, 3, w + 100, 1);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w + 100, n, &used));
    CHECK_EQ_INT(parse_out(FT_MSG_STATUS, 5), FT_ST_MALFORMED);
    /* an over-long frame is discarded up to the next 0x00, the next frame is served */
    memset(w, 0x11, sizeof lnk.rx + 10);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, sizeof lnk.rx + 10, &used));
    n = wire(FT_MSG_HELLO, 6, NULL, 0, w + 1, 1);
    w[0] = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n + 1, &used));
    CHECK_EQ_INT(parse_out(FT_MSG_HELLO, 6), FT_ST_OK);
}

void test_device_commands(void)
{
    static uint8_t p[2048];
    size_t i;
    power_up_blank();
    {
        /* HELLO's extension (arena_bytes) only when asked with the byte FT_HELLO_EXT: 0 with no full image */
        static uint8_t plain[FT_MAX_PAYLOAD];
        size_t plain_len;
        CHECK_EQ_INT(call(FT_MSG_HELLO, NULL, 0), FT_ST_OK);
        memcpy(plain, resp, resp_len);
        plain_len = resp_len;
        CHECK_EQ_INT(plain_len, 34u + resp[32] + resp[33 + resp[32]]);
        p[0] = FT_HELLO_EXT;
        CHECK_EQ_INT(call(FT_MSG_HELLO, p, 1), FT_ST_OK);
        CHECK_EQ_INT(resp_len, plain_len + FT_HELLO_EXT_SIZE);
        CHECK(memcmp(resp, plain, plain_len) == 0);
        CHECK_EQ_INT(ft_rd32(resp + plain_len), 0);
        p[0] = 2;
        CHECK_EQ_INT(call(FT_MSG_HELLO, p, 1), FT_ST_MALFORMED);
    }
    memset(p, 0, 28);
    ft_wr16(p, 1); ft_wr16(p + 2, 4); ft_wrf32(p + 4, 0.05f);
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 28), FT_ST_CACHE_EMPTY);
    /* push 20 samples of D=64 */
    p[0] = 0; p[1] = 1; ft_wr16(p + 2, 10); ft_wr16(p + 4, 64);
    for (i = 0; i < 10; i++) ft_wr16(p + 6 + 2 * i, (uint16_t)(i % 10));
    for (i = 0; i < 640; i++) p[26 + i] = (uint8_t)(i * 7);
    CHECK_EQ_INT(call(FT_MSG_PUSH_SAMPLES, p, 26 + 640), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 10);
    ft_wr16(p + 4, 63);
    CHECK_EQ_INT(call(FT_MSG_PUSH_SAMPLES, p, 26 + 630), FT_ST_SHAPE_MISMATCH);
    ft_wr16(p + 4, 64); ft_wr16(p + 6, 10);
    CHECK_EQ_INT(call(FT_MSG_PUSH_SAMPLES, p, 26 + 640), FT_ST_MALFORMED); /* label 10 >= C */
    CHECK_EQ_INT(ft_test_dev.cache.count, 10);                                     /* nothing changed */
    /* TRAIN flags: the arithmetic (bit 0 FIXED); unknown bits and unsupported arithmetic are refused */
    memset(p, 0, 32);
    ft_wr16(p, 1); ft_wr16(p + 2, 4); ft_wrf32(p + 4, 0.05f);
    ft_wr32(p + 28, 4u); /* bit 1 is PSEUDO (a 40-byte request): test_labels.c */
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 32), FT_ST_UNSUPPORTED);
    ft_wr32(p + 28, FT_TRAIN_FIXED);
    ft_wrf32(p + 8, 0.9f); /* momentum: not in the fixed-point path */
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 32), FT_ST_UNSUPPORTED);
    ft_wrf32(p + 8, 0.0f);
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 30), FT_ST_MALFORMED);
#if !FT_USE_FLOAT
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 28), FT_ST_UNSUPPORTED); /* 28 bytes = flags 0 = float32 */
#endif
    /* TRAIN -> update pending -> READ_UPDATE -> ACK (float32 where the build has it, else fixed-point) */
    ft_wr32(p + 28, FT_USE_FLOAT ? 0u : FT_TRAIN_FIXED);
    CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 32), FT_ST_OK);
    {
        uint32_t uid = ft_rd32(resp);
        CHECK_EQ_INT(ft_rd32(resp + 4), 10);
        CHECK_EQ_INT(call(FT_MSG_TRAIN, p, 32), FT_ST_UPDATE_PENDING);
        ft_wr32(p + 100, 0); ft_wr16(p + 104, 100);
        CHECK_EQ_INT(call(FT_MSG_READ_UPDATE, p + 100, 6), FT_ST_OK);
        CHECK_EQ_INT(ft_rd32(resp), uid);
        CHECK_EQ_INT(ft_rd32(resp + 4), 32 + 4 * 640 + 40 + 32);
        CHECK_EQ_INT(resp_len, 8 + 100);
        CHECK(memcmp(resp + 8, "FTUP", 4) == 0);
        /* the tag authenticates the blob */
        {
            static uint8_t blob[32 + 4 * 640 + 40 + 32];
            uint32_t off = 0, total = sizeof blob;
            uint8_t mac[32];
            while (off < total) {
                ft_wr32(p + 100, off); ft_wr16(p + 104, 1000);
                CHECK_EQ_INT(call(FT_MSG_READ_UPDATE, p + 100, 6), FT_ST_OK);
                if (resp_len <= 8) break;
                memcpy(blob + off, resp + 8, resp_len - 8);
                off += (uint32_t)(resp_len - 8);
            }
            ft_hmac_sha256(key, 32, blob, total - 32, mac);
            CHECK_MEM(mac, blob + total - 32, 32);
            CHECK_EQ_INT(ft_rd32(blob + 12), 7);
        }
        ft_wr32(p + 100, uid + 1);
        CHECK_EQ_INT(call(FT_MSG_UPDATE_ACK, p + 100, 4), FT_ST_NO_UPDATE);
        ft_wr32(p + 100, uid);
        CHECK_EQ_INT(call(FT_MSG_UPDATE_ACK, p + 100, 4), FT_ST_OK);
        CHECK_EQ_INT(call(FT_MSG_UPDATE_ACK, p + 100, 4), FT_ST_OK); /* idempotent */
        CHECK_EQ_INT(call(FT_MSG_READ_UPDATE, p + 100, 6), FT_ST_NO_UPDATE);
    }
    ft_wr32(p, 0);
    CHECK_EQ_INT(call(FT_MSG_EVALUATE, p, 4), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 10);
    /* GET_HEAD pages reassemble to the factory head */
    {
        static uint8_t patch[FT_FACTORY_HEAD_LEN];
        uint32_t off = 0;
        while (off < FT_FACTORY_HEAD_LEN) {
            ft_wr32(p, off); ft_wr16(p + 4, 300);
            CHECK_EQ_INT(call(FT_MSG_GET_HEAD, p, 6), FT_ST_OK);
            CHECK_EQ_INT(ft_rd32(resp), FT_FACTORY_HEAD_LEN);
            if (resp_len <= 4) break;
            memcpy(patch + off, resp + 4, resp_len - 4);
            off += (uint32_t)(resp_len - 4);
        }
        CHECK_MEM(patch, ft_factory_head, FT_FACTORY_HEAD_LEN);
        ft_wr32(p, FT_FACTORY_HEAD_LEN + 1);
        CHECK_EQ_INT(call(FT_MSG_GET_HEAD, p, 6), FT_ST_MALFORMED);
    }
    /* SET_HEAD in two parts; wrong offset -> BAD_OFFSET */
    ft_wr32(p, FT_FACTORY_HEAD_LEN); ft_wr32(p + 4, 0);
    memcpy(p + 8, ft_factory_head, 400);
    p[8 + 20 + 40] ^= 1; /* bias of class 0 (low byte) */
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 408), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 400);
    ft_wr32(p + 4, 401);
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 8), FT_ST_BAD_OFFSET);
    ft_wr32(p + 4, 400);
    memcpy(p + 8, ft_factory_head + 400, FT_FACTORY_HEAD_LEN - 400);
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 8 + FT_FACTORY_HEAD_LEN - 400), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 0);
    CHECK_EQ_INT(ft_test_dev.head.bias[0], (int32_t)ft_rd32(ft_factory_head + 20 + 40) ^ 1);
    CHECK_EQ_INT(call(FT_MSG_ROLLBACK, NULL, 0), FT_ST_OK);
    p[0] = 0;
    CHECK_EQ_INT(call(FT_MSG_RESET, p, 1), FT_ST_OK);
    CHECK(ft_test_dev.reset_requested);
}

/* ---------------------------------------------------------------------------- upload + power cuts */
static uint8_t new_patch[FT_FACTORY_HEAD_LEN];
static uint8_t begin_req[FT_UPLOAD_BEGIN_SIZE];

/* UploadBegin of new_patch signed with the security counter `counter` */
static void sign_begin(uint32_t counter)
{
    uint8_t msg[47];
    ft_wr32(begin_req + 72, counter);
    memcpy(msg, "FTIMG2", 6);
    msg[6] = begin_req[0];
    ft_wr32(msg + 7, ft_rd32(begin_req + 4));
    memcpy(msg + 11, begin_req + 8, 32);
    ft_wr32(msg + 43, counter);
    ft_hmac_sha256(key, 32, msg, sizeof msg, begin_req + 40);
}

static void make_new_head(int variant)
{
    memcpy(new_patch, ft_factory_head, sizeof new_patch);
    new_patch[20 + 40] = (uint8_t)(new_patch[20 + 40] + 11 + variant); /* bias[0] */
    new_patch[20 + 80 + 5] = (uint8_t)(new_patch[20 + 80 + 5] ^ (0x21 + variant));
    memset(begin_req, 0, sizeof begin_req);
    begin_req[0] = 1;
    begin_req[1] = 0xFF;
    ft_wr32(begin_req + 4, sizeof new_patch);
    ft_sha256(new_patch, sizeof new_patch, begin_req + 8);
    sign_begin(0);
}

/* Upload (resuming), verify, activate, confirm. Returns 0 when done, else the failing status. */
static int deploy(void)
{
    static uint8_t p[2048];
    uint32_t off, n;
    uint8_t slot, s;
    size_t i, j;
    if ((s = call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req)) != FT_ST_OK) return s;
    slot = resp[0];
    off = ft_rd32(resp + 8);
    while (off < sizeof new_patch) {
        n = sizeof new_patch - off < 301 ? (uint32_t)sizeof new_patch - off : 301; /* unaligned chunks */
        ft_wr32(p, off);
        memcpy(p + 4, new_patch + off, n);
        if ((s = call(FT_MSG_UPLOAD_CHUNK, p, 4 + n)) != FT_ST_OK) return s;
        off = ft_rd32(resp);
    }
    p[0] = slot;
    if ((s = call(FT_MSG_VERIFY, p, 1)) != FT_ST_OK) return s;
    if ((s = call(FT_MSG_ACTIVATE, p, 1)) != FT_ST_OK) return s;
    /* golden vectors: 2 inputs, expected = the running head's outputs */
    p[0] = slot; p[1] = 0; ft_wr16(p + 2, 2); ft_wr16(p + 4, 64); ft_wr16(p + 6, 10);
    for (i = 0; i < 2; i++) {
        uint8_t *v = p + 8 + i * 74;
        for (j = 0; j < 64; j++) v[j] = (uint8_t)(j * 5 + i * 3);
        if (ft_head_forward(&ft_test_dev.head, (const int8_t *)v, (int8_t *)(v + 64)) != FT_OK) return 255;
    }
    if ((s = call(FT_MSG_CONFIRM, p, 8 + 2 * 74)) != FT_ST_OK) return s;
    return 0;
}

static int running_is(const uint8_t *patch)
{
    static uint8_t cur[FT_FACTORY_HEAD_LEN];
    if (ft_head_patch_size(&ft_test_dev.head) != FT_FACTORY_HEAD_LEN) return 0;
    if (ft_head_patch_read(&ft_test_dev.head, 0, cur, sizeof cur) != FT_OK) return 0;
    return memcmp(cur, patch, sizeof cur) == 0;
}

static void power_cut_sweep(int prior_updates, int complete)
{
    static uint8_t old_patch[FT_FACTORY_HEAD_LEN];
    uint32_t cut, cuts = 0, saw_new = 0, saw_old = 0;
    for (cut = 1; cut < 400; cut++) {
        int v;
        power_up_blank();
        for (v = 0; v < prior_updates; v++) {
            make_new_head(100 + v);
            CHECK_EQ_INT(deploy(), 0);
        }
        CHECK_OK(ft_head_patch_read(&ft_test_dev.head, 0, old_patch, sizeof old_patch));
        make_new_head(0);
        ft_simflash_cut_at(cut);
        ft_simflash_cut_complete(complete);
        v = deploy();
        if (!ft_simflash_is_cut()) { /* the whole deploy fits before this cut: every point is covered */
            CHECK_EQ_INT(v, 0);
            break;
        }
        cuts++;
        ft_simflash_cut_at(0); /* power back */
        boot();
        /* the board runs the old or the new head, bit for bit, never a mix */
        if (running_is(new_patch)) saw_new++;
        else if (running_is(old_patch)) saw_old++;
        else CHECK(!"running head is neither the old nor the new one");
        CHECK(ft_test_dev.store.m.testing == FT_NO_SLOT);
        CHECK(ft_test_dev.store.m.confirmed < FT_N_SLOTS);
        CHECK(ft_test_dev.store.m.slots[ft_test_dev.store.m.confirmed].state == FT_SLOT_CONFIRMED);
        /* and the interrupted deploy completes after the reboot (resuming the upload) */
        CHECK_EQ_INT(deploy(), 0);
        CHECK(running_is(new_patch));
        if (ft_test_current_failed) {
            ft_test_outf("    (cut at flash op %u)\n", (unsigned)cut);
            break;
        }
    }
    ft_simflash_cut_complete(0);
    CHECK(cuts >= 6);
    CHECK(saw_old > 0);
    CHECK(!complete || saw_new > 0); /* power lost right after the commit record landed: new */
}

/* torn operation at the cut (half a write / part of an erase lands) */
void test_power_cut_first_update(void) { power_cut_sweep(0, 0); }
void test_power_cut_second_update(void) { power_cut_sweep(1, 0); }
/* the operation completes, then the power goes (before the board can answer) */
void test_power_cut_after_op(void) { power_cut_sweep(1, 1); }

void test_upload_resume_and_auth(void)
{
    static uint8_t p[2048];
    power_up_blank();
    make_new_head(3);
    /* unsigned and wrongly signed images are refused before anything is erased */
    memcpy(p, begin_req, sizeof begin_req);
    memset(p + 40, 0, 32);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, p, sizeof begin_req), FT_ST_AUTH_FAILED);
    p[40] = 1;
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, p, sizeof begin_req), FT_ST_AUTH_FAILED);
    p[1] = 0;
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_OK);
    CHECK_EQ_INT(resp[0], 1);
    /* half the image, then a "link drop" and a reboot */
    ft_wr32(p, 0);
    memcpy(p + 4, new_patch, 333);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_CHUNK, p, 4 + 333), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 333);
    ft_wr32(p, 500); /* a gap: nothing written, the device says where it is */
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_CHUNK, p, 4 + 10), FT_ST_OK);
    CHECK_EQ_INT(ft_rd32(resp), 333);
    boot();
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_OK);
    CHECK_EQ_INT(resp[2], 1);                      /* resumed */
    CHECK_EQ_INT(ft_rd32(resp + 8), 333);          /* received */
    CHECK_EQ_INT(ft_rd32(resp + 12), ft_crc32(new_patch, 333));
    p[0] = 1;
    CHECK_EQ_INT(call(FT_MSG_VERIFY, p, 1), FT_ST_BAD_STATE);
    CHECK_EQ_INT(deploy(), 0);
    CHECK(running_is(new_patch));
    /* ROLLBACK of a test image, and a reset while testing reverts (REVERTED reported once) */
    make_new_head(4);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_OK);
    CHECK_EQ_INT(resp[0], 0);
    ft_wr32(p, 0);
    memcpy(p + 4, new_patch, sizeof new_patch);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_CHUNK, p, 4 + sizeof new_patch), FT_ST_OK);
    p[0] = 0;
    CHECK_EQ_INT(call(FT_MSG_VERIFY, p, 1), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, p, 1), FT_ST_OK);
    CHECK(running_is(new_patch));
    boot();
    CHECK(!running_is(new_patch));
    CHECK_EQ_INT(call(FT_MSG_STATUS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp[3], 1);
    CHECK_EQ_INT(resp[4 + 0], FT_SLOT_VERIFIED);
    CHECK_EQ_INT(call(FT_MSG_STATUS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp[3], 0);
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, p, 1), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_ROLLBACK, NULL, 0), FT_ST_OK);
    CHECK(!running_is(new_patch));
    CHECK_EQ_INT(resp[1], 1); /* active = the confirmed slot 1 */
}

/* ------------------------------------------------------------------------------- issue 10 regressions */
static void push_features(uint16_t n, int clear)
{
    static uint8_t p[6 + 2 * 200 + 200 * 64];
    uint16_t i;
    p[0] = 0; p[1] = (uint8_t)(clear ? 1 : 0); ft_wr16(p + 2, n); ft_wr16(p + 4, 64);
    for (i = 0; i < n; i++) ft_wr16(p + 6 + 2 * i, (uint16_t)(i % 10));
    for (i = 0; i < n * 64u; i++) p[6 + 2 * n + i] = (uint8_t)(i * 13 + 5);
    CHECK_EQ_INT(call(FT_MSG_PUSH_SAMPLES, p, 6 + 2u * n + 64u * n), FT_ST_OK);
}

static uint8_t train(uint16_t epochs, uint16_t batch, float lr, float mom, float wd, float mu, uint32_t flags)
{
    uint8_t p[32];
    memset(p, 0, sizeof p);
    ft_wr16(p, epochs); ft_wr16(p + 2, batch);
    ft_wrf32(p + 4, lr); ft_wrf32(p + 8, mom); ft_wrf32(p + 12, wd); ft_wrf32(p + 16, mu);
    ft_wr32(p + 20, 42); ft_wr32(p + 24, 1); ft_wr32(p + 28, flags);
    return call(FT_MSG_TRAIN, p, 32);
}

static uint8_t ack(uint32_t uid)
{
    uint8_t p[4];
    ft_wr32(p, uid);
    return call(FT_MSG_UPDATE_ACK, p, 4);
}

#define TRAIN_ARITH (FT_USE_FLOAT ? 0u : FT_TRAIN_FIXED)

/* defects 1 and 3: every hyper-parameter finite and in its documented range, the work bounded, a diverged
 * result discarded -- refused with MALFORMED, nothing pending */
void test_train_ranges_and_work_bound(void)
{
    const float inf = 1.0f / 0.0f;
    power_up_blank();
    push_features(10, 1);
    CHECK_EQ_INT(train(1, 4, inf, 0, 0, 0, FT_TRAIN_FIXED), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1, 4, inf, 0, 0, 0, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1, 4, 0.05f, inf - inf, 0, 0, 0), FT_ST_MALFORMED); /* NaN */
    CHECK_EQ_INT(train(1, 4, 0.05f, 0, inf, 0, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1, 4, 0.05f, 0, 0, inf, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1, 4, 0.05f, 1.0f, 0, 0, 0), FT_ST_MALFORMED);  /* momentum in [0, 1) */
    CHECK_EQ_INT(train(1, 4, 100.5f, 0, 0, 0, 0), FT_ST_MALFORMED);   /* lr in (0, 100] */
    CHECK_EQ_INT(train(1, 4, 0.05f, 0, 101, 0, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1, 4, 0.05f, 0, 0, 101, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(1001, 4, 0.05f, 0, 0, 0, 0), FT_ST_MALFORMED);
    CHECK_EQ_INT(train(0, 4, 0.05f, 0, 0, 0, 0), FT_ST_MALFORMED);
    /* work bound: epochs x cached <= 65536 */
    push_features(200, 1);
    CHECK_EQ_INT(train(328, 1, 0.05f, 0, 0, 0, TRAIN_ARITH), FT_ST_MALFORMED); /* 65600 */
    CHECK_EQ_INT(ft_test_dev.has_pending, 0);
#if FT_USE_FLOAT
    /* a diverging run (weight decay 100 at lr 100): discarded, no update id used */
    push_features(10, 1);
    CHECK_EQ_INT(train(20, 1, 100.0f, 0.5f, 100.0f, 0, 0), FT_ST_MALFORMED);
    CHECK(memcmp(resp, "training diverged", 17) == 0);
    CHECK_EQ_INT(ft_test_dev.has_pending, 0);
#endif
    CHECK_EQ_INT(train(1, 4, 100.0f, 0, 0, 0, FT_TRAIN_FIXED), FT_ST_OK); /* the top of the range: fine */
}

/* defect 5: update ids strictly increase over thousands of updates and resets, power cuts included */
void test_update_ids_never_repeat(void)
{
    uint32_t last = 0, i, cut;
    power_up_blank();
    push_features(1, 1);
    for (i = 0; i < 5000; i++) {
        if (i % 1700 == 1699 || i == 4097) { /* resets: one past a whole block too */
            boot();
            push_features(1, 1);
        }
        CHECK_EQ_INT(train(1, 1, 0.05f, 0, 0, 0, FT_TRAIN_FIXED), FT_ST_OK);
        CHECK(ft_rd32(resp) > last);
        last = ft_rd32(resp);
        CHECK_EQ_INT(ack(last), FT_ST_OK);
        if (ft_test_current_failed) return;
    }
    /* a power cut at the reservation write (torn or complete), then the next id is still new */
    for (cut = 0; cut < 2; cut++) {
        boot();
        push_features(1, 1);
        ft_simflash_cut_complete((int)cut);
        ft_simflash_cut_at(1);
        (void)train(1, 1, 0.05f, 0, 0, 0, FT_TRAIN_FIXED); /* the first TRAIN of a boot reserves a block */
        CHECK(ft_simflash_is_cut());
        ft_simflash_cut_at(0);
        ft_simflash_cut_complete(0);
        boot();
        push_features(1, 1);
        CHECK_EQ_INT(train(1, 1, 0.05f, 0, 0, 0, FT_TRAIN_FIXED), FT_ST_OK);
        CHECK(ft_rd32(resp) > last);
        last = ft_rd32(resp);
        CHECK_EQ_INT(ack(last), FT_ST_OK);
    }
}

/* Upload new_patch (begin_req) into the upload slot and VERIFY it; returns VERIFY's status. */
static uint8_t upload_verify(uint8_t *slot)
{
    static uint8_t p[2048];
    uint8_t s;
    if ((s = call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req)) != FT_ST_OK) return s;
    *slot = resp[0];
    ft_wr32(p, 0);
    memcpy(p + 4, new_patch, sizeof new_patch);
    if ((s = call(FT_MSG_UPLOAD_CHUNK, p, 4 + sizeof new_patch)) != FT_ST_OK) return s;
    p[0] = *slot;
    return call(FT_MSG_VERIFY, p, 1);
}

static void resign(uint32_t counter)
{
    ft_sha256(new_patch, sizeof new_patch, begin_req + 8);
    sign_begin(counter);
}

static uint8_t confirm_with(uint8_t slot, const ft_head *h)
{
    static uint8_t p[8 + 2 * 74];
    size_t i, j;
    p[0] = slot; p[1] = 0; ft_wr16(p + 2, 2); ft_wr16(p + 4, 64); ft_wr16(p + 6, 10);
    for (i = 0; i < 2; i++) {
        uint8_t *v = p + 8 + i * 74;
        for (j = 0; j < 64; j++) v[j] = (uint8_t)(j * 5 + i * 3);
        CHECK_OK(ft_head_forward(h, (const int8_t *)v, (int8_t *)(v + 64)));
    }
    return call(FT_MSG_CONFIRM, p, sizeof p);
}

/* defect 4: CONFIRM tests the image under test, not a head SET_HEAD put in RAM after ACTIVATE */
void test_confirm_tests_image_under_test(void)
{
    static uint8_t p[8 + FT_FACTORY_HEAD_LEN];
    static ft_head x, y;
    uint8_t slot = 0, k;
    power_up_blank();
    make_new_head(5);
    CHECK_EQ_INT(upload_verify(&slot), FT_ST_OK);
    CHECK_OK(ft_head_decode_patch(&x, new_patch, sizeof new_patch, 0, 0));
    p[0] = slot;
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, p, 1), FT_ST_OK);
    /* SET_HEAD a different head Y */
    ft_wr32(p, FT_FACTORY_HEAD_LEN); ft_wr32(p + 4, 0);
    memcpy(p + 8, new_patch, FT_FACTORY_HEAD_LEN);
    for (k = 0; k < 10; k++) p[8 + 20 + 40 + 4 * k + 1] ^= 0x40; /* every bias +-16384 */
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 8 + FT_FACTORY_HEAD_LEN), FT_ST_OK);
    CHECK_OK(ft_head_decode_patch(&y, p + 8, FT_FACTORY_HEAD_LEN, 0, 0));
    CHECK_EQ_INT(confirm_with(slot, &y), FT_ST_SELFTEST_FAILED); /* Y's vectors do not pass X */
    CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].state, FT_SLOT_TESTING);
    CHECK_EQ_INT(confirm_with(slot, &x), FT_ST_OK);
    CHECK(running_is(new_patch));
    boot();
    CHECK(running_is(new_patch));
}

/* defect 6: boot hashes what it loads and falls back, VERIFY re-hashes flash, STATUS tells the truth */
void test_boot_rehash_and_fallback(void)
{
    static uint8_t p[8];
    power_up_blank();
    make_new_head(6);
    CHECK_EQ_INT(deploy(), 0);
    CHECK_EQ_INT(ft_test_dev.store.m.confirmed, 1);
    ft_simflash_mem[FT_SLOT_BASE(1) + 100] ^= 0x01; /* bit rot in the confirmed image */
    boot();
    CHECK(running_is(ft_factory_head));
    CHECK_EQ_INT(ft_test_dev.active, 0);
    CHECK_EQ_INT(call(FT_MSG_STATUS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp[1], 0);                       /* active */
    CHECK_EQ_INT(resp[2], 0);                       /* confirmed */
    CHECK_EQ_INT(resp[3], FT_SS_FELL_BACK);
    CHECK_EQ_INT(resp[4 + 44], FT_SLOT_RECEIVING);  /* the corrupt slot is marked bad */
    CHECK_EQ_INT(ft_rd32(resp + 4 + 44 + 8), 0);
    CHECK_EQ_INT(resp[4], FT_SLOT_CONFIRMED);
    CHECK_EQ_INT(call(FT_MSG_STATUS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp[3], 0);                       /* reported once */
    /* VERIFY re-hashes flash, also for the CONFIRMED slot (which keeps running from RAM) */
    p[0] = 0;
    CHECK_EQ_INT(call(FT_MSG_VERIFY, p, 1), FT_ST_OK);
    ft_simflash_mem[FT_SLOT_BASE(0) + 30] ^= 0x10;
    CHECK_EQ_INT(call(FT_MSG_VERIFY, p, 1), FT_ST_HASH_MISMATCH);
    CHECK_EQ_INT(ft_test_dev.store.m.slots[0].state, FT_SLOT_CONFIRMED);
    /* no intact slot left: the built-in factory head runs and STATUS says no slot is active */
    boot();
    CHECK_EQ_INT(call(FT_MSG_STATUS, NULL, 0), FT_ST_OK);
    CHECK_EQ_INT(resp[1], FT_NO_SLOT);
    CHECK_EQ_INT(resp[2], FT_NO_SLOT);
    CHECK_EQ_INT(resp[3], FT_SS_FELL_BACK);
    CHECK(running_is(ft_factory_head));
    make_new_head(7);
    CHECK_EQ_INT(deploy(), 0); /* and the board can be redeployed */
    CHECK(running_is(new_patch));
    /* a corrupt VERIFIED slot is marked bad by VERIFY; ACTIVATE refuses a corrupt slot */
    make_new_head(8);
    {
        uint8_t slot = 0;
        CHECK_EQ_INT(upload_verify(&slot), FT_ST_OK);
        ft_simflash_mem[FT_SLOT_BASE(slot) + 7] ^= 0x80;
        p[0] = slot;
        CHECK_EQ_INT(call(FT_MSG_ACTIVATE, p, 1), FT_ST_HASH_MISMATCH);
        CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].state, FT_SLOT_RECEIVING);
        CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].received, 0);
    }
}

/* defect 7: an image older than the confirmed one (security counter signed with it) is refused */
void test_downgrade_refused(void)
{
    static uint8_t p[8];
    uint8_t slot2;
    power_up_blank();
    make_new_head(10);
    sign_begin(2);
    CHECK_EQ_INT(deploy(), 0);
    slot2 = ft_test_dev.store.m.confirmed;
    CHECK_EQ_INT(ft_test_dev.store.m.sec_floor, 2);
    make_new_head(11);
    sign_begin(1);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_DOWNGRADE);
    ft_wr32(begin_req + 72, 5); /* the counter is covered by the tag */
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_AUTH_FAILED);
    sign_begin(3);
    CHECK_EQ_INT(deploy(), 0);
    CHECK_EQ_INT(ft_test_dev.store.m.sec_floor, 3);
    p[0] = slot2; /* the previous image (counter 2) is VERIFIED but may not run again */
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, p, 1), FT_ST_DOWNGRADE);
    boot(); /* the floor survives a reset */
    CHECK_EQ_INT(ft_test_dev.store.m.sec_floor, 3);
    make_new_head(10);
    sign_begin(2);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_DOWNGRADE);
    sign_begin(3); /* equal counters are accepted */
    CHECK_EQ_INT(deploy(), 0);
}

/* defect 8: a head patch with another input quantization is refused without a backbone too */
void test_head_input_quantization_checked(void)
{
    static uint8_t p[8 + FT_FACTORY_HEAD_LEN];
    uint8_t slot = 0;
    power_up_blank();
    make_new_head(12);
    ft_wrf32(new_patch + 12, ft_rdf32(new_patch + 12) * 2.0f); /* input_scale */
    resign(0);
    CHECK_EQ_INT(upload_verify(&slot), FT_ST_SHAPE_MISMATCH);
    CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].received, 0); /* marked bad */
    ft_wr32(p, FT_FACTORY_HEAD_LEN); ft_wr32(p + 4, 0);
    memcpy(p + 8, new_patch, FT_FACTORY_HEAD_LEN);
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 8 + FT_FACTORY_HEAD_LEN), FT_ST_SHAPE_MISMATCH);
    make_new_head(12);
    new_patch[10] = (uint8_t)(new_patch[10] + 1); /* input_zero_point */
    resign(0);
    CHECK_EQ_INT(upload_verify(&slot), FT_ST_SHAPE_MISMATCH);
}

/* defect 9: the divergences decided in docs/protocol.md */
void test_protocol_decisions(void)
{
    static uint8_t p[8 + FT_FACTORY_HEAD_LEN];
    static uint8_t w[FT_WIRE_MAX];
    size_t n, used;
    uint8_t slot = 1;
    power_up_blank();
    /* SET_HEAD staging survives an unrelated VERIFY; a total other than the patch size is refused */
    ft_wr32(p, FT_FACTORY_HEAD_LEN); ft_wr32(p + 4, 0);
    memcpy(p + 8, ft_factory_head, 400);
    p[8 + 20 + 40] ^= 1;
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 408), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_VERIFY, &slot, 1), FT_ST_BAD_STATE);
    ft_wr32(p, 10000000u);
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 408), FT_ST_SHAPE_MISMATCH);
    CHECK_EQ_INT(ft_test_dev.staged_len, 400);
    ft_wr32(p, FT_FACTORY_HEAD_LEN); ft_wr32(p + 4, 400);
    memcpy(p + 8, ft_factory_head + 400, FT_FACTORY_HEAD_LEN - 400);
    CHECK_EQ_INT(call(FT_MSG_SET_HEAD, p, 8 + FT_FACTORY_HEAD_LEN - 400), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.head.bias[0], (int32_t)ft_rd32(ft_factory_head + 20 + 40) ^ 1);
    /* CONFIRM with zero golden vectors is refused */
    make_new_head(13);
    CHECK_EQ_INT(upload_verify(&slot), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_ACTIVATE, &slot, 1), FT_ST_OK);
    p[0] = slot; p[1] = 0; ft_wr16(p + 2, 0); ft_wr16(p + 4, 64); ft_wr16(p + 6, 10);
    CHECK_EQ_INT(call(FT_MSG_CONFIRM, p, 8), FT_ST_MALFORMED);
    CHECK_EQ_INT(call(FT_MSG_ROLLBACK, NULL, 0), FT_ST_OK);
    /* VERIFY of an incomplete upload: BAD_STATE, `received` kept (it can resume) */
    make_new_head(14);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_BEGIN, begin_req, sizeof begin_req), FT_ST_OK);
    ft_wr32(p, 0);
    memcpy(p + 4, new_patch, 100);
    CHECK_EQ_INT(call(FT_MSG_UPLOAD_CHUNK, p, 104), FT_ST_OK);
    CHECK_EQ_INT(call(FT_MSG_VERIFY, &slot, 1), FT_ST_BAD_STATE);
    CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].received, 100);
    /* the retry cache: BAD_VERSION / UNKNOWN_TYPE / MALFORMED do not replace it; a retried PUSH is not re-run */
    memset(p, 0, 6 + 2 + 64);
    p[0] = 0; ft_wr16(p + 2, 1); ft_wr16(p + 4, 64);
    n = wire(FT_MSG_PUSH_SAMPLES, 40, p, 6 + 2 + 64, w, 1);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(parse_out(FT_MSG_PUSH_SAMPLES, 40), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.cache.count, 1);
    {
        static uint8_t w2[FT_WIRE_MAX];
        size_t n2;
        n2 = wire(FT_MSG_HELLO, 41, p, 3, w2, 1);
        out_len = 0;
        CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w2, n2, &used));
        CHECK_EQ_INT(parse_out(FT_MSG_HELLO, 41), FT_ST_MALFORMED);
        n2 = wire(0x7E, 42, NULL, 0, w2, 1);
        out_len = 0;
        CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w2, n2, &used));
        CHECK_EQ_INT(parse_out(0x7E, 42), FT_ST_UNKNOWN_TYPE);
        n2 = wire(FT_MSG_STATUS, 43, NULL, 0, w2, 3);
        out_len = 0;
        CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w2, n2, &used));
        CHECK_EQ_INT(parse_out(FT_MSG_STATUS, 43), FT_ST_BAD_VERSION);
    }
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used)); /* the retry */
    CHECK_EQ_INT(parse_out(FT_MSG_PUSH_SAMPLES, 40), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.cache.count, 1);
    /* a stale duplicate of a RESTART BEGIN after its chunks does not erase the upload */
    begin_req[2] = 1; /* RESTART */
    n = wire(FT_MSG_UPLOAD_BEGIN, 50, begin_req, sizeof begin_req, w, 1);
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used));
    CHECK_EQ_INT(parse_out(FT_MSG_UPLOAD_BEGIN, 50), FT_ST_OK);
    {
        static uint8_t w2[FT_WIRE_MAX];
        size_t n2;
        ft_wr32(p, 0);
        memcpy(p + 4, new_patch, 300);
        n2 = wire(FT_MSG_UPLOAD_CHUNK, 51, p, 304, w2, 1);
        out_len = 0;
        CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w2, n2, &used));
        CHECK_EQ_INT(parse_out(FT_MSG_UPLOAD_CHUNK, 51), FT_ST_OK);
    }
    out_len = 0;
    CHECK_OK(ft_link_feed(&lnk, &ft_test_dev, w, n, &used)); /* the stale duplicate */
    CHECK_EQ_INT(parse_out(FT_MSG_UPLOAD_BEGIN, 50), FT_ST_OK);
    CHECK_EQ_INT(ft_test_dev.store.m.slots[slot].received, 300);
    begin_req[2] = 0;
}
