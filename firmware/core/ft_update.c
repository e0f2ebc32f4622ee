/* The update state machine of docs/protocol.md sections 5-7: UPLOAD_BEGIN / CHUNK / STATUS, VERIFY, ACTIVATE,
 * CONFIRM, ROLLBACK, the slots at boot (provisioning, revert, fallback), the security counter and the image tag. */
#include "ft_update.h"
#include "ft_dev_internal.h"
#include "ft_dev_util.h"
#include "ft_sha256.h"
#include "ft_signed.h"
#include "port.h"
#include <stdio.h>
#include <string.h>

static uint8_t imgbuf[FT_HEAD_PATCH_MAX]; /* a slot's image read from flash (SET_HEAD staging is kept apart) */

/* ---------------------------------------------------------------------------------------------- heads */
/* Load and check (SHA-256 from flash, HeadPatch validity, shape) the head in a slot: the whole image is hashed, the
 * head is the image, or a signed slot's payload. */
static ft_status load_slot_head(ft_dev *d, uint8_t slot, ft_head *out, uint8_t *status)
{
    const ft_slot_meta *s = &d->store.m.slots[slot];
    uint8_t sha[32];
    uint32_t off, len;
    ft_status r;
    *status = FT_ST_MALFORMED;
#if FT_BACKBONE
    if (s->kind == FT_KIND_TFLITE) { /* a full image: verified in place, its head taken from the model */
        *status = ftd_load_model(d, slot, out);
        return *status == FT_ST_OK ? FT_OK : FT_ERR_FORMAT;
    }
#endif
    if (s->kind != FT_KIND_HEAD_PATCH) {
        *status = FT_ST_UNSUPPORTED;
        return FT_ERR_UNSUPPORTED;
    }
    if (s->received != s->total_len) return FT_ERR_RANGE;
    r = ft_store_sha256(&d->store, slot, s->total_len, sha);
    if (r != FT_OK) {
        *status = FT_ST_FLASH_ERROR;
        return r;
    }
    if (!ft_ct_equal(sha, s->sha256, 32)) {
        *status = FT_ST_HASH_MISMATCH;
        return FT_ERR_AUTH;
    }
    if (ft_signed_payload(&d->store, slot, &off, &len) != FT_OK) return FT_ERR_FORMAT;
    if (len > sizeof imgbuf) return FT_ERR_RANGE;
    r = ft_store_read(&d->store, slot, off, imgbuf, len);
    if (r != FT_OK) {
        *status = FT_ST_FLASH_ERROR;
        return r;
    }
    r = ft_head_decode_patch(out, imgbuf, len, d->C, d->D);
    if (r == FT_ERR_UNSUPPORTED) *status = FT_ST_SHAPE_MISMATCH;
    return r;
}

/* DOWNGRADE's reason, the virtual board's words. */
static const char *downgrade_why(uint32_t counter, uint32_t floor)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "security counter %lu < the board's %lu", (unsigned long)counter, (unsigned long)floor);
    return buf;
}

/* A slot whose image failed (hash, validation): RECEIVING with received = 0 (a re-upload rewrites it). Its bytes
 * stay as they are: the rewrite's first chunk (offset 0) erases the slot first (ft_update_upload_chunk). */
static void mark_bad(ft_dev *d, uint8_t slot)
{
    d->store.m.slots[slot].state = FT_SLOT_RECEIVING;
    d->store.m.slots[slot].received = 0;
}

static ft_status image_tag(const ft_dev *d, uint8_t kind, uint32_t total, const uint8_t *sha, uint32_t counter,
                           uint8_t out[32])
{
    uint8_t msg[6 + 1 + 4 + 32 + 4];
    memcpy(msg, "FTIMG2", 6);
    msg[6] = kind;
    ft_wr32(msg + 7, total);
    memcpy(msg + 11, sha, 32);
    ft_wr32(msg + 43, counter);
    ft_hmac_sha256(d->key, sizeof d->key, msg, sizeof msg, out);
    return FT_OK;
}

/* NULL if the image tag (over kind, length, hash and security counter) is valid, else the reason. */
static const char *check_tag(const ft_dev *d, uint8_t kind, uint32_t total, const uint8_t *sha, uint32_t counter,
                             const uint8_t *tag)
{
    static const uint8_t zero[32];
    uint8_t want[32];
    if (!d->has_key) return "no fleet key provisioned";
    if (ft_ct_equal(tag, zero, 32)) return "unsigned image";
    image_tag(d, kind, total, sha, counter, want);
    if (!ft_ct_equal(want, tag, 32)) return "bad image HMAC tag";
    return NULL;
}

/* ------------------------------------------------------------------------------------------- boot */
/* Power-up of the slots (after ft_dev_boot set the RAM state and the factory head's shape): open the store,
 * provision the factory head on a blank flash, revert a test image, load the running head (falling back from a
 * corrupt confirmed image). */
ft_status ft_update_boot(ft_dev *d)
{
    uint8_t st;
    FT_TRY(ft_store_open(&d->store));
    if (!d->store.have_record) { /* provisioning: the factory head in slot 0, confirmed */
        ft_slot_meta *s = &d->store.m.slots[0];
        if (d->factory_len > FT_SLOT_SIZE) return FT_ERR_RANGE;
        FT_TRY(ft_store_erase(&d->store, 0, d->factory_len));
        FT_TRY(ft_store_write(&d->store, 0, 0, d->factory_patch, d->factory_len));
        memset(&d->store.m, 0, sizeof d->store.m);
        d->store.m.testing = FT_NO_SLOT;
        s->state = FT_SLOT_CONFIRMED;
        s->kind = FT_KIND_HEAD_PATCH;
        s->total_len = s->received = d->factory_len;
        ft_sha256(d->factory_patch, d->factory_len, s->sha256);
        d->store.m.confirmed = 0;
        FT_TRY(ft_store_persist(&d->store));
    }
    if (d->store.m.testing != FT_NO_SLOT) { /* reset while under test: back to the confirmed slot */
        d->store.m.slots[d->store.m.testing].state = FT_SLOT_VERIFIED;
        d->store.m.testing = FT_NO_SLOT;
        d->store.m.reverted |= FT_SS_REVERTED;
        FT_TRY(ft_store_persist(&d->store));
    }
    /* update ids up to uid_reserved may have been issued before this boot: a new block is reserved in flash
     * before the first id of it is issued (ft_learn_train), so ids never repeat across resets */
    d->update_counter = d->uid_limit = d->store.m.uid_reserved;
    /* boot hashes what it loads: a corrupt confirmed image is marked bad, the other VERIFIED slot (if intact)
     * becomes the confirmed one (FELL_BACK); with none, the built-in factory head runs (no slot confirmed) */
    d->active = d->store.m.confirmed;
    if (d->active != FT_NO_SLOT && load_slot_head(d, d->active, &d->head, &st) != FT_OK) {
        uint8_t i, bad = d->active;
        ft_port_log("confirmed slot corrupt: falling back");
        mark_bad(d, bad);
        d->store.m.confirmed = d->active = FT_NO_SLOT;
        for (i = 0; i < FT_N_SLOTS; i++) {
            if (i == bad || d->store.m.slots[i].state != FT_SLOT_VERIFIED) continue;
            if (load_slot_head(d, i, &d->head, &st) == FT_OK) {
                d->store.m.slots[i].state = FT_SLOT_CONFIRMED;
                d->store.m.confirmed = d->active = i;
                break;
            }
        }
        d->store.m.reverted |= FT_SS_FELL_BACK;
        FT_TRY(ft_store_persist(&d->store));
    }
    if (d->active == FT_NO_SLOT) FT_TRY(ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0));
    return FT_OK;
}

/* ------------------------------------------------------------------------------------------ uploads */
static uint8_t upload_slot(const ft_dev *d)
{
    uint8_t i;
    for (i = 0; i < FT_N_SLOTS; i++)
        if (i != d->store.m.confirmed) return i;
    return 0;
}

static uint8_t upload_state(ft_ctx *c, uint8_t slot, uint8_t resumed)
{
    const ft_slot_meta *s = &c->d->store.m.slots[slot];
    uint32_t crc = 0;
    ft_status r = ft_store_crc32(&c->d->store, slot, s->received, &crc);
    if (r != FT_OK) return ft_fail_flash(c, r);
    c->resp[0] = slot;
    c->resp[1] = s->state;
    c->resp[2] = resumed;
    c->resp[3] = 0;
    ft_wr32(c->resp + 4, s->total_len);
    ft_wr32(c->resp + 8, s->received);
    ft_wr32(c->resp + 12, crc);
    *c->len = FT_UPLOAD_STATE_SIZE;
    return FT_ST_OK;
}

uint8_t ft_update_upload_begin(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t kind, slot, flags, target;
    uint32_t total, counter;
    const char *why;
    ft_slot_meta *s;
    ft_status r;
    if (n != FT_UPLOAD_BEGIN_SIZE) return ft_fail(c, FT_ST_MALFORMED, "UploadBegin is 76 bytes");
    kind = p[0];
    slot = p[1];
    flags = p[2];
    total = ft_rd32(p + 4);
    counter = ft_rd32(p + 72);
    if (kind != FT_KIND_HEAD_PATCH && kind != FT_KIND_TFLITE) return ft_fail(c, FT_ST_MALFORMED, "image kind");
    if (kind == FT_KIND_TFLITE && !ftd_full_image_ok())
        return ft_fail(c, FT_ST_UNSUPPORTED, "this board cannot run full images (no interpreter or no flash mapping): head patches only");
    target = upload_slot(d);
    if (slot != 0xFF && slot != target) return ft_fail(c, FT_ST_BAD_STATE, "slot is not the upload slot");
    s = &d->store.m.slots[target];
    if (s->state == FT_SLOT_TESTING) return ft_fail(c, FT_ST_BAD_STATE, "upload slot is under test: CONFIRM or ROLLBACK first");
    if (total == 0 || total > FT_SLOT_SIZE) return ft_fail(c, FT_ST_NO_SPACE, "image larger than a slot");
    { /* the board's mode (section 7): public keys take only SIGNED images (signature checked at VERIFY), else the
       * HMAC tag is checked now */
        int tagged;
        why = ft_signed_mode(&d->keys, (flags & FT_UPLOAD_SIGNED) != 0, 0, &tagged);
        if (!why && tagged) why = check_tag(d, kind, total, p + 8, counter, p + 40);
    }
    if (why) return ft_fail(c, FT_ST_AUTH_FAILED, why);
    if (counter < d->store.m.sec_floor) return ft_fail(c, FT_ST_DOWNGRADE, downgrade_why(counter, d->store.m.sec_floor));
    if (s->kind == kind && s->total_len == total && memcmp(s->sha256, p + 8, 32) == 0 && s->security_counter == counter &&
        s->flags == ((flags & FT_UPLOAD_SIGNED) ? FT_SLOT_FLAG_SIGNED : 0u) && (s->state == FT_SLOT_RECEIVING || s->state == FT_SLOT_VERIFIED) && !(flags & 1u))
        return upload_state(c, target, 1);
    {
        uint32_t old_len = s->total_len > total ? s->total_len : total;
        memset(s, 0, sizeof *s);
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r); /* invalidate, then erase */
        if ((r = ft_store_erase(&d->store, target, old_len)) != FT_OK) return ft_fail_flash(c, r);
    }
    s->state = FT_SLOT_RECEIVING;
    s->kind = kind;
    s->total_len = total;
    s->received = 0;
    memcpy(s->sha256, p + 8, 32);
    s->flags = (flags & FT_UPLOAD_SIGNED) ? FT_SLOT_FLAG_SIGNED : 0u;
    if (s->flags) memset(s->tag, 0, 32); /* a signed image carries no tag */
    else memcpy(s->tag, p + 40, 32);
    s->security_counter = counter;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
    return upload_state(c, target, 0);
}

uint8_t ft_update_upload_chunk(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint8_t target = upload_slot(d);
    ft_slot_meta *s = &d->store.m.slots[target];
    uint32_t off, dl;
    ft_status r;
    if (n < 4) return ft_fail(c, FT_ST_MALFORMED, "UPLOAD_CHUNK needs an offset");
    off = ft_rd32(p);
    dl = (uint32_t)(n - 4);
    if (s->state == FT_SLOT_VERIFIED) {
        ft_wr32(c->resp, s->total_len);
        *c->len = 4;
        return FT_ST_OK;
    }
    if (s->state != FT_SLOT_RECEIVING) return ft_fail(c, FT_ST_BAD_STATE, "slot is not receiving (UPLOAD_BEGIN first)");
    if (off > s->total_len || dl > s->total_len - off) return ft_fail(c, FT_ST_MALFORMED, "chunk beyond the image");
    if (off == s->received && dl) {
        if (off == 0) {
            /* a rewrite from 0 (a slot marked bad, or a cut before the first `received` was persisted): flash can
             * only clear bits, so whatever the slot holds (the bad image, a torn chunk) is erased first; a slot
             * that reads erased (BEGIN erased it) is not erased again. A cut anywhere here leaves received = 0
             * and the next chunk at 0 checks again. */
            int blank;
            if ((r = ft_store_blank(&d->store, target, s->total_len, &blank)) != FT_OK) return ft_fail_flash(c, r);
            if (!blank && (r = ft_store_erase(&d->store, target, s->total_len)) != FT_OK) return ft_fail_flash(c, r);
        }
        /* data first, then the persisted `received` */
        if ((r = ft_store_write(&d->store, target, off, p + 4, dl)) != FT_OK) return ft_fail_flash(c, r);
        s->received += dl;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
    }
    ft_wr32(c->resp, s->received);
    *c->len = 4;
    return FT_ST_OK;
}

uint8_t ft_update_upload_status(ft_ctx *c, const uint8_t *p, size_t n)
{
    uint8_t slot;
    if (n != 1) return ft_fail(c, FT_ST_MALFORMED, "UPLOAD_STATUS is 1 byte");
    slot = p[0] == 0xFF ? upload_slot(c->d) : p[0];
    if (slot >= FT_N_SLOTS) return ft_fail(c, FT_ST_MALFORMED, "no such slot");
    return upload_state(c, slot, 0);
}

static int slot_arg(const uint8_t *p, size_t n) { return (n == 1 && p[0] < FT_N_SLOTS) ? p[0] : -1; }

/* A completed upload that fails VERIFY (hash, tag, security counter, content), or a corrupt VERIFIED slot, is
 * marked bad (RECEIVING, received 0); a corrupt CONFIRMED/TESTING slot keeps its state (its copy in RAM runs,
 * the next boot falls back). */
static uint8_t verify_failed(ft_ctx *c, uint8_t slot, uint8_t status, const char *why)
{
    ft_slot_meta *s = &c->d->store.m.slots[slot];
    ft_status r;
    if (s->state == FT_SLOT_RECEIVING || s->state == FT_SLOT_VERIFIED) {
        mark_bad(c->d, slot);
        if ((r = ft_store_persist(&c->d->store)) != FT_OK) return ft_fail_flash(c, r);
    }
    return ft_fail(c, status, why);
}

uint8_t ft_update_verify(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    int slot = slot_arg(p, n);
    ft_slot_meta *s;
    ft_status r;
    uint8_t sha[32];
    if (slot < 0) return ft_fail(c, FT_ST_MALFORMED, "VERIFY takes a slot number");
    s = &d->store.m.slots[slot];
    if (s->state == FT_SLOT_EMPTY) return ft_fail(c, FT_ST_BAD_STATE, "slot is empty");
    if (s->state == FT_SLOT_RECEIVING && s->received != s->total_len)
        return ft_fail(c, FT_ST_BAD_STATE, "image not completely received");
    /* every VERIFY hashes the slot in flash, whatever its state */
    if ((r = ft_store_sha256(&d->store, (uint8_t)slot, s->total_len, sha)) != FT_OK) return ft_fail_flash(c, r);
    if (!ft_ct_equal(sha, s->sha256, 32))
        return verify_failed(c, (uint8_t)slot, FT_ST_HASH_MISMATCH, "sha256 of the image in flash differs from the declared one");
    if (s->state == FT_SLOT_RECEIVING) {
        const char *why;
        char sig_why[128];
        uint8_t st;
        int tagged, is_signed = (s->flags & FT_SLOT_FLAG_SIGNED) != 0;
        why = ft_signed_mode(&d->keys, is_signed, 1, &tagged);
        if (!why && tagged) why = check_tag(d, s->kind, s->total_len, s->sha256, s->security_counter, s->tag);
        if (!why && is_signed) { /* Ed25519 with a trusted key; the security counter is the signed one */
            st = ft_signed_verify(&d->store, (uint8_t)slot, &d->keys, sig_why, sizeof sig_why);
            if (st == FT_ST_FLASH_ERROR) return ft_fail(c, st, sig_why);
            if (st != FT_ST_OK) why = sig_why;
        }
        if (why) return verify_failed(c, (uint8_t)slot, FT_ST_AUTH_FAILED, why);
        if (s->security_counter < d->store.m.sec_floor)
            return verify_failed(c, (uint8_t)slot, FT_ST_DOWNGRADE, downgrade_why(s->security_counter, d->store.m.sec_floor));
        r = load_slot_head(d, (uint8_t)slot, &ftd_scratch_head, &st);
#if FT_BACKBONE
        if (r != FT_OK && s->kind == FT_KIND_TFLITE) return verify_failed(c, (uint8_t)slot, st, ftd_model_why());
#endif
        if (r != FT_OK)
            return verify_failed(c, (uint8_t)slot, st, st == FT_ST_SHAPE_MISMATCH ? "head shape differs from the model's"
                                                                                   : "image does not parse as a head patch");
        if (s->kind == FT_KIND_HEAD_PATCH && !ftd_head_fits(d, &ftd_scratch_head))
            return verify_failed(c, (uint8_t)slot, FT_ST_SHAPE_MISMATCH, "head input quantization differs from the board's features");
        s->state = FT_SLOT_VERIFIED;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
    }
    c->resp[0] = (uint8_t)slot;
    c->resp[1] = s->state;
    memcpy(c->resp + 2, s->sha256, 32);
    *c->len = FT_VERIFY_RESULT_SIZE;
    return FT_ST_OK;
}

uint8_t ft_update_activate(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    int slot = slot_arg(p, n);
    ft_head *tmp = &ftd_scratch_head;
    uint8_t st;
    int full;
    ft_status r;
    if (slot < 0) return ft_fail(c, FT_ST_MALFORMED, "ACTIVATE takes a slot number");
    if (d->store.m.testing == slot) return ft_put_slot_status(c);
    if (d->store.m.slots[slot].state != FT_SLOT_VERIFIED || d->store.m.testing != FT_NO_SLOT)
        return ft_fail(c, FT_ST_BAD_STATE, "slot is not VERIFIED, or another is under test");
    if (d->store.m.slots[slot].security_counter < d->store.m.sec_floor)
        return ft_fail(c, FT_ST_DOWNGRADE, downgrade_why(d->store.m.slots[slot].security_counter, d->store.m.sec_floor));
    if (load_slot_head(d, (uint8_t)slot, tmp, &st) != FT_OK) {
        mark_bad(d, (uint8_t)slot);
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
        return ft_fail(c, st, "slot image unusable");
    }
    full = d->store.m.slots[slot].kind == FT_KIND_TFLITE || ftd_running_kind(d) == FT_KIND_TFLITE;
    d->store.m.slots[slot].state = FT_SLOT_TESTING;
    d->store.m.testing = (uint8_t)slot;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
    d->active = (uint8_t)slot;
    d->head = *tmp;
    if (full) ftd_clear_ram(d); /* into or out of a full image: another model runs */
    return ft_put_slot_status(c);
}

/* One golden vector: D int8 features into the running head, or int8 model inputs through the backbone (the
 * loaded image under test) and the head: the whole model up to its int8 logits. */
static ft_status confirm_forward(ft_dev *d, const uint8_t *v, int raw_in, int8_t *out)
{
#if FT_BACKBONE
    if (raw_in) {
        const ft_tfl_model *m = ftd_backbone(d);
        const int8_t *feat;
        if (!m) return FT_ERR_STATE;
        FT_TRY(ftd_run_backbone(m, 1, v, &feat));
        return ft_head_forward(&d->head, feat, out);
    }
#else
    (void)raw_in;
#endif
    return ft_head_forward(&d->head, (const int8_t *)v, out);
}

/* The golden vectors run on the image under test as it is in flash (not on a head SET_HEAD put in RAM since
 * ACTIVATE); on success that image runs. */
uint8_t ft_update_confirm(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    uint32_t nv, il, ol, i, k;
    uint8_t slot, tol, st;
    int worst = -1, staged;
    uint32_t wi = 0, wk = 0, raw = 0;
    const uint8_t *sx = NULL; /* in_len 0: the staged input (STAGE_INPUT) is every vector's input */
    int8_t out[FT_MAX_CLASSES];
    ft_head *h = &ftd_scratch_head;
    ft_status r;
    if (n < FT_CONFIRM_HDR_SIZE) return ft_fail(c, FT_ST_MALFORMED, "Confirm header is 8 bytes");
    slot = p[0];
    tol = p[1];
    nv = ft_rd16(p + 2);
    il = ft_rd16(p + 4);
    ol = ft_rd16(p + 6);
    if (n != FT_CONFIRM_HDR_SIZE + nv * (il + ol)) return ft_fail(c, FT_ST_MALFORMED, "Confirm payload length");
    if (slot >= FT_N_SLOTS) return ft_fail(c, FT_ST_MALFORMED, "no such slot");
    if (nv == 0) return ft_fail(c, FT_ST_MALFORMED, "CONFIRM needs at least one golden vector");
    if (slot == d->store.m.confirmed && d->store.m.testing == FT_NO_SLOT) return ft_put_slot_status(c);
    if (d->store.m.testing != slot) return ft_fail(c, FT_ST_BAD_STATE, "slot is not under test");
    {
        /* in_len D: int8 features into the head; raw_input_len: int8 model inputs, the whole model runs; 0: the
         * staged input as int8 model input (needs a backbone and a staging buffer) */
#if FT_BACKBONE
        const ft_tfl_model *m = ftd_backbone(d); /* the TESTING slot is the running one */
        if (m) raw = m->tensors[m->inputs[0]].count;
#endif
        staged = il == 0;
        if (ol != d->C || (staged ? (raw == 0 || FT_MAX_STAGED_INPUT == 0) : (il != d->D && (raw == 0 || il != raw))))
            return ft_fail(c, FT_ST_UNSUPPORTED, "golden vectors must be D int8 features (or raw_input_len int8 model inputs) -> C int8 logits");
    }
    if (staged && !(sx = ftd_staged_input(d, raw)))
        return ft_fail(c, FT_ST_BAD_STATE, "no staged input of raw_input_len int8 bytes (STAGE_INPUT)");
    if (load_slot_head(d, slot, h, &st) != FT_OK) return ft_fail(c, st, "the image under test is unusable");
    d->head = *h; /* the image under test runs (a SET_HEAD since ACTIVATE is dropped) */
    for (i = 0; i < nv; i++) {
        const uint8_t *v = p + 8 + i * (il + ol);
        if (confirm_forward(d, staged ? sx : v, staged || il != d->D, out) != FT_OK)
            return ft_fail(c, FT_ST_INTERNAL, "forward");
        for (k = 0; k < ol; k++) {
            int diff = (int)out[k] - (int)(int8_t)v[il + k];
            if (diff < 0) diff = -diff;
            if (diff > worst) {
                worst = diff;
                wi = i;
                wk = k;
            }
        }
    }
    if (worst > (int)tol) {
        char buf[96];
        const uint8_t *v = p + 8 + wi * (il + ol);
        if (confirm_forward(d, staged ? sx : v, staged || il != d->D, out) != FT_OK)
            return ft_fail(c, FT_ST_INTERNAL, "forward");
        snprintf(buf, sizeof buf, "vector %u channel %u: got %d, expected %d", (unsigned)wi, (unsigned)wk,
                 (int)out[wk], (int)(int8_t)v[il + wk]);
        return ft_fail(c, FT_ST_SELFTEST_FAILED, buf);
    }
    if (d->store.m.confirmed != FT_NO_SLOT) d->store.m.slots[d->store.m.confirmed].state = FT_SLOT_VERIFIED;
    d->store.m.slots[slot].state = FT_SLOT_CONFIRMED;
    d->store.m.confirmed = slot;
    d->store.m.testing = FT_NO_SLOT;
    if (d->store.m.slots[slot].security_counter > d->store.m.sec_floor) /* anti-rollback floor, in the commit */
        d->store.m.sec_floor = d->store.m.slots[slot].security_counter;
    if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r); /* the commit: one record */
    return ft_put_slot_status(c);
}

uint8_t ft_update_rollback(ft_ctx *c, const uint8_t *p, size_t n)
{
    ft_dev *d = c->d;
    ft_status r;
    uint8_t st;
    (void)p;
    if (n) return ft_fail(c, FT_ST_MALFORMED, "ROLLBACK takes no payload");
    if (d->store.m.testing != FT_NO_SLOT) {
        int was_full = ftd_running_kind(d) == FT_KIND_TFLITE;
        d->store.m.slots[d->store.m.testing].state = FT_SLOT_VERIFIED;
        d->store.m.testing = FT_NO_SLOT;
        if ((r = ft_store_persist(&d->store)) != FT_OK) return ft_fail_flash(c, r);
        d->active = d->store.m.confirmed;
        if (d->active == FT_NO_SLOT || load_slot_head(d, d->active, &d->head, &st) != FT_OK) {
            d->active = FT_NO_SLOT; /* nothing usable confirmed: the firmware's factory head */
            if (ft_head_decode_patch(&d->head, d->factory_patch, d->factory_len, 0, 0) != FT_OK)
                return ft_fail(c, FT_ST_INTERNAL, "no usable head");
        }
        if (was_full || ftd_running_kind(d) == FT_KIND_TFLITE) ftd_clear_ram(d);
    }
    return ft_put_slot_status(c);
}
