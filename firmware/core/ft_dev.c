/* The device: dispatch of docs/protocol.md requests to the codec (ft_codec), the learning handlers (ft_learn) and
 * the update state machine (ft_update); HELLO, STATUS, RESET; power-up. Shared state: ft_dev_internal.h. */
#include "ft_dev_internal.h"
#include "ft_keys.h"
#include "ft_learn.h"
#include "ft_update.h"
#include "port.h"
#include <stdio.h>
#include <string.h>

ft_status ft_dev_boot(ft_dev *d)
{
    if (!d || (!d->factory_patch && !d->factory_model)) return FT_ERR_ARG;
    /* RAM state of a fresh power-up */
    d->has_pending = 0;
    d->acked_id = 0;
    d->pushed_total = 0;
    d->id_base = 0;
    d->staged_len = 0;
    d->input_total = 0; /* no staged raw input (STAGE_INPUT) */
    d->input_len = 0;
    d->reset_requested = 0;
    d->boots++;
#if FT_BACKBONE
    if (d->factory_model) FT_TRY(ftd_factory_boot(d)); /* the factory model's head: the factory head */
#else
    if (!d->factory_patch) return FT_ERR_UNSUPPORTED;
#endif
    FT_TRY(ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0));
    d->C = d->head.C;
    d->D = d->head.D;
    d->feat_scale = d->head.input_scale;
    d->feat_zp = d->head.input_zero_point;
    FT_TRY(ft_keys_open(&d->keys)); /* provisions the configured public keys on a flash holding none */
    FT_TRY(ft_update_boot(d));
    return ft_cache_init(&d->cache, FT_CACHE_CAPACITY, d->D);
}

static uint8_t h_hello(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t *o = c->resp;
    const char *name = d->board_name ? d->board_name : ft_port_board_name();
    size_t nl = strlen(name), fl = strlen(FT_FW_VERSION);
    /* every build has the integer trainer; FT_USE_FLOAT=0 (no FPU) builds have only that one */
    uint32_t caps = FT_CAP_TRAIN | FT_CAP_EVALUATE | FT_CAP_HEAD_PATCH | FT_CAP_SET_HEAD | FT_CAP_FIXED_TRAIN |
                    FT_CAP_LABELS | FT_CAP_INFER | (FT_USE_FLOAT ? FT_CAP_FLOAT_TRAIN : 0u);
    uint16_t raw_len = 0;
    uint32_t arena = 0; /* the arena the running model needs (the extension): 0 without a full image */
    if (n > 1 || (n == 1 && p[0] != FT_HELLO_EXT))
        return ft_fail(c, FT_ST_MALFORMED, "HELLO takes no payload or the byte 1 (extension)");
    if (nl > 64) { /* at most 64 bytes, cut at a UTF-8 character boundary (never inside a multi-byte character) */
        nl = 64;
        while (nl > 0 && ((uint8_t)name[nl] & 0xC0u) == 0x80u) nl--;
    }
    if (d->has_key) caps |= FT_CAP_FLEET_KEY;
    if (d->keys.n) caps |= FT_CAP_SIGNED_IMAGES;   /* public keys: only signed images (section 7) */
    if (ft_keys_update_key()) caps |= FT_CAP_DEVICE_KEY;
    if (ftd_full_image_ok()) caps |= FT_CAP_FULL_IMAGE;
#if FT_MAX_STAGED_INPUT > 0
    caps |= FT_CAP_STAGED_INPUT; /* STAGE_INPUT, PUSH_SAMPLES / INFER kinds 3 and 4 */
#endif
#if FT_BACKBONE
    {
        const ft_tfl_model *m = ftd_backbone(d);
        if (m) {
            caps |= FT_CAP_RAW_SAMPLES;
            raw_len = (uint16_t)m->tensors[m->inputs[0]].count;
            arena = m->arena_bytes;
        }
    }
#endif
    o[0] = FT_PROTO_VERSION;
    o[1] = FT_N_SLOTS;
    ft_wr16(o + 2, (uint16_t)FT_MAX_PAYLOAD);
    ft_wr32(o + 4, d->device_id);
    ft_wr32(o + 8, caps);
    ft_wr16(o + 12, d->C);
    ft_wr16(o + 14, d->D);
    ft_wr32(o + 16, d->cache.capacity);
    ft_wr32(o + 20, d->cache.count);
    ft_wr32(o + 24, FT_SLOT_SIZE);
    ft_wr16(o + 28, raw_len); /* raw_input_len: elements of the running model's input (0: no backbone) */
    o[30] = FT_RX_WINDOW;
    o[31] = d->active;
    o[32] = (uint8_t)nl;
    memcpy(o + 33, name, nl);
    o[33 + nl] = (uint8_t)fl;
    memcpy(o + 34 + nl, FT_FW_VERSION, fl);
    *c->len = 34 + nl + fl;
    if (n) { /* the extension only when asked: the plain answer keeps the first layout for exact-length hosts */
        ft_wr32(o + *c->len, arena);
        *c->len += FT_HELLO_EXT_SIZE;
    }
    return FT_ST_OK;
}

static uint8_t h_status(ft_ctx *c, const uint8_t *p, size_t n)
{
    uint8_t s;
    (void)p;
    if (n) return ft_fail(c, FT_ST_MALFORMED, "STATUS takes no payload");
    s = ft_put_slot_status(c);
    c->d->store.m.reverted = 0; /* reported once (persisted with the next metadata write) */
    return s;
}

static uint8_t h_reset(ft_ctx *c, const uint8_t *p, size_t n)
{
    if (n != 1 || p[0] != 0) return ft_fail(c, FT_ST_MALFORMED, "RESET mode must be 0");
    c->d->reset_requested = 1;
    *c->len = 0;
    return FT_ST_OK;
}

/* KEYS: the KeySet (n = 0 on a board without public keys). */
static uint8_t h_keys(ft_ctx *c, const uint8_t *p, size_t n)
{
    (void)p;
    if (n) return ft_fail(c, FT_ST_MALFORMED, "KEYS takes no payload");
    *c->len = ft_keys_set(&c->d->keys, c->resp, c->cap);
    return FT_ST_OK;
}

/* KEY_CHANGE: checks and effect in ft_keys (docs/protocol.md section 7); answers the KeySet after it. */
static uint8_t h_key_change(ft_ctx *c, const uint8_t *p, size_t n)
{
    char why[128];
    uint8_t st = ft_keys_change(&c->d->keys, c->d->device_id, p, n, why, sizeof why);
    if (st != FT_ST_OK) return ft_fail(c, st, why);
    *c->len = ft_keys_set(&c->d->keys, c->resp, c->cap);
    return FT_ST_OK;
}

uint8_t ft_dev_handle(ft_dev *d, uint8_t type, const uint8_t *req, size_t len, uint8_t *resp, size_t cap,
                      size_t *resp_len)
{
    ft_ctx c;
    c.d = d;
    c.resp = resp;
    c.cap = cap;
    c.len = resp_len;
    *resp_len = 0;
    if (!d || (!req && len) || !resp || cap < FT_MAX_PAYLOAD) return FT_ST_INTERNAL;
    switch (type) {
    case FT_MSG_HELLO: return h_hello(&c, req, len);
    case FT_MSG_STATUS: return h_status(&c, req, len);
    case FT_MSG_RESET: return h_reset(&c, req, len);
    case FT_MSG_GET_HEAD: return ft_learn_get_head(&c, req, len);
    case FT_MSG_SET_HEAD: return ft_learn_set_head(&c, req, len);
    case FT_MSG_PUSH_SAMPLES: return ft_learn_push_samples(&c, req, len);
    case FT_MSG_TRAIN: return ft_learn_train(&c, req, len);
    case FT_MSG_READ_UPDATE: return ft_learn_read_update(&c, req, len);
    case FT_MSG_UPDATE_ACK: return ft_learn_update_ack(&c, req, len);
    case FT_MSG_EVALUATE: return ft_learn_evaluate(&c, req, len);
    case FT_MSG_LABEL: return ft_learn_label(&c, req, len);
    case FT_MSG_INFER: return ft_learn_infer(&c, req, len);
    case FT_MSG_STAGE_INPUT: return ft_learn_stage_input(&c, req, len);
    case FT_MSG_UPLOAD_BEGIN: return ft_update_upload_begin(&c, req, len);
    case FT_MSG_UPLOAD_CHUNK: return ft_update_upload_chunk(&c, req, len);
    case FT_MSG_UPLOAD_STATUS: return ft_update_upload_status(&c, req, len);
    case FT_MSG_VERIFY: return ft_update_verify(&c, req, len);
    case FT_MSG_ACTIVATE: return ft_update_activate(&c, req, len);
    case FT_MSG_CONFIRM: return ft_update_confirm(&c, req, len);
    case FT_MSG_ROLLBACK: return ft_update_rollback(&c, req, len);
    case FT_MSG_KEYS: return h_keys(&c, req, len);
    case FT_MSG_KEY_CHANGE: return h_key_change(&c, req, len);
    default: {
        char buf[24];
        snprintf(buf, sizeof buf, "type 0x%02x", (unsigned)type);
        return ft_fail(&c, FT_ST_UNKNOWN_TYPE, buf);
    }
    }
}
