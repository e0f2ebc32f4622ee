/* Trusted keys (core/ft_keys.c): provisioning, KEYS, KEY_CHANGE with the virtual board's statuses (KeyChange
 * messages signed by fedtiny.link.signing, golden/golden_signing.h), and power cuts at every flash operation of a
 * key change and of a security-counter update: the board always boots with the old state or the new one. */
#include "ft_test.h"
#include "ft_keys.h"
#include "ft_head.h"
#include "ft_image.h"
#include "ft_proto.h"
#include "ft_simflash.h"
#include "ft_store.h"
#include "golden/golden_signing.h"
#include <string.h>

static ft_keys k;
static char why[128];
static uint8_t msg[FT_KEY_CHANGE_SIZE + 1];

static uint8_t change(const uint8_t *m, uint32_t device)
{
    why[0] = 0;
    return ft_keys_change(&k, device, m, FT_KEY_CHANGE_SIZE, why, sizeof why);
}

/* a blank flash provisioned with key 1 */
static void provision1(void)
{
    ft_simflash_cut_at(0);
    ft_simflash_format();
    CHECK_OK(ft_keys_config((const uint8_t(*)[32])gs_pub1, 1, NULL));
    CHECK_OK(ft_keys_open(&k));
}

static int has(const uint8_t *pub)
{
    unsigned i;
    for (i = 0; i < k.n; i++)
        if (memcmp(k.keys[i], pub, 32) == 0) return 1;
    return 0;
}

void test_keys_provision_and_keyset(void)
{
    uint8_t set[8 + 32 * FT_MAX_KEYS], two[2][32];
    provision1();
    CHECK_EQ_INT(k.n, 1);
    CHECK_EQ_INT(k.key_counter, 0);
    CHECK_EQ_INT(ft_keys_set(&k, set, sizeof set), 40);
    CHECK_EQ_INT(set[0], 1);
    CHECK_EQ_INT(set[1], 4);
    CHECK_EQ_INT(ft_rd32(set + 4), 0);
    CHECK_MEM(set + 8, gs_keyhash1, 32);
    CHECK_EQ_INT(ft_keys_set(&k, set, 39), 0);
    /* the stored set is the board's: other keys given at a later boot change nothing */
    memcpy(two[0], gs_pub2, 32);
    memcpy(two[1], gs_pub2, 32);
    CHECK_OK(ft_keys_config((const uint8_t(*)[32])two, 2, NULL));
    CHECK_OK(ft_keys_open(&k));
    CHECK(k.n == 1 && has(gs_pub1));
    /* duplicates are dropped at provisioning; more than 4 keys refused */
    ft_simflash_format();
    CHECK_OK(ft_keys_open(&k));
    CHECK_EQ_INT(k.n, 1);
    CHECK(has(gs_pub2));
    CHECK(ft_keys_config((const uint8_t(*)[32])two, 5, NULL) == FT_ERR_ARG);
    /* no keys provisioned: an HMAC board (n = 0, KEY_CHANGE unsupported) */
    CHECK_OK(ft_keys_config(NULL, 0, NULL));
    ft_simflash_format();
    CHECK_OK(ft_keys_open(&k));
    CHECK_EQ_INT(k.n, 0);
    CHECK_EQ_INT(ft_keys_set(&k, set, sizeof set), 8);
    CHECK_EQ_INT(change(gs_kc_add2, 7), FT_ST_UNSUPPORTED);
    CHECK(ft_keys_update_key() == NULL);
    CHECK_OK(ft_keys_config(NULL, 0, gs_pub4));
    CHECK(ft_keys_update_key() != NULL && memcmp(ft_keys_update_key(), gs_pub4, 32) == 0);
    CHECK_OK(ft_keys_config(NULL, 0, NULL));
}

void test_keys_change_statuses(void)
{
    uint8_t before[8 + 32 * FT_MAX_KEYS], after[8 + 32 * FT_MAX_KEYS];
    provision1();
    /* layout: MALFORMED */
    memcpy(msg, gs_kc_add2, FT_KEY_CHANGE_SIZE);
    CHECK_EQ_INT(ft_keys_change(&k, 7, msg, FT_KEY_CHANGE_SIZE - 1, why, sizeof why), FT_ST_MALFORMED);
    CHECK_EQ_INT(ft_keys_change(&k, 7, msg, FT_KEY_CHANGE_SIZE + 1, why, sizeof why), FT_ST_MALFORMED);
    msg[0] = 'X';
    CHECK_EQ_INT(change(msg, 7), FT_ST_MALFORMED);
    msg[0] = 'F';
    msg[4] = 3;
    CHECK_EQ_INT(change(msg, 7), FT_ST_MALFORMED);
    CHECK(strcmp(why, "KeyChange: op 3 (1 = add, 2 = retire)") == 0);
    /* device id, signer, signature: AUTH_FAILED */
    CHECK_EQ_INT(change(gs_kc_add2, 8), FT_ST_AUTH_FAILED);
    CHECK(strcmp(why, "key change for device 7, this is device 8") == 0);
    CHECK_EQ_INT(change(gs_kc_by3, 7), FT_ST_AUTH_FAILED);
    CHECK(strcmp(why, "key change signed by a key this board does not trust") == 0);
    memcpy(msg, gs_kc_add2, FT_KEY_CHANGE_SIZE);
    msg[12] = 9; /* the counter raised by a host: signed, refused */
    CHECK_EQ_INT(change(msg, 7), FT_ST_AUTH_FAILED);
    CHECK(strcmp(why, "key change: bad Ed25519 signature") == 0);
    CHECK_EQ_INT(change(gs_kc_retire_last, 7), FT_ST_BAD_STATE);
    CHECK_EQ_INT(k.n, 1);
    /* the sequence: add 2, 3, 4; a fifth is NO_SPACE; retire 1. Reserved bytes are ignored, in the signature too */
    memcpy(msg, gs_kc_add2, FT_KEY_CHANGE_SIZE);
    msg[5] = 0x55;
    msg[7] = 1;
    CHECK_EQ_INT(change(msg, 7), FT_ST_OK);
    CHECK(k.n == 2 && has(gs_pub2) && k.key_counter == 1);
    /* the same change again (a retry after a reset): OK, nothing written */
    ft_keys_set(&k, before, sizeof before);
    ft_simflash_cut_at(0);
    CHECK_EQ_INT(change(gs_kc_add2, 7), FT_ST_OK);
    CHECK_EQ_INT(ft_simflash_ops(), 0);
    CHECK_OK(ft_keys_open(&k));
    ft_keys_set(&k, after, sizeof after);
    CHECK_MEM(before, after, 8 + 64);
    CHECK_EQ_INT(change(gs_kc_add3, 7), FT_ST_OK);
    CHECK_EQ_INT(change(gs_kc_add2, 7), FT_ST_DOWNGRADE); /* counter 1 < 2: a replay */
    CHECK(strcmp(why, "key counter 1 <= the board's 2 (replayed change)") == 0);
    CHECK_EQ_INT(change(gs_kc_add4, 7), FT_ST_OK);
    CHECK_EQ_INT(k.n, 4);
    CHECK_EQ_INT(change(gs_kc_add5, 7), FT_ST_NO_SPACE);
    CHECK_EQ_INT(k.key_counter, 3);
    CHECK_EQ_INT(change(gs_kc_retire1, 7), FT_ST_OK);
    CHECK(k.n == 3 && !has(gs_pub1) && k.key_counter == 4);
    CHECK_MEM(k.keys[0], gs_pub2, 32); /* the order added is kept */
    CHECK_MEM(k.keys[2], gs_pub4, 32);
    /* key 1 retired: its changes no longer verify */
    CHECK_EQ_INT(change(gs_kc_add5, 7), FT_ST_AUTH_FAILED);
    /* persisted: a reboot reads the same set */
    ft_keys_set(&k, before, sizeof before);
    CHECK_OK(ft_keys_open(&k));
    ft_keys_set(&k, after, sizeof after);
    CHECK_MEM(before, after, 8 + 96);
}

/* Power cut at every flash operation of one key change (optionally one that switches journal sectors): after the
 * reboot the set is {key 1} with counter 0 or {key 1, key 2} with counter 1, never anything else. */
static void key_change_cuts(int switch_sector, int complete)
{
    uint32_t cut;
    int old_seen = 0, new_seen = 0;
    for (cut = 1; cut < 20; cut++) {
        uint8_t st;
        provision1();
        if (switch_sector) { /* the rest of sector 0 holds no blank record: the change erases sector 1 first */
            uint32_t off = FT_KEY_BASE + FT_KEY_REC_SIZE;
            memset(ft_simflash_mem + off, 0x00, FT_FLASH_PAGE_SIZE - FT_KEY_REC_SIZE);
            memset(ft_simflash_mem + FT_KEY_BASE + FT_FLASH_PAGE_SIZE, 0x5A, FT_FLASH_PAGE_SIZE); /* stale junk */
            CHECK_OK(ft_keys_open(&k));
            CHECK_EQ_INT(k.n, 1);
        }
        ft_simflash_cut_complete(complete);
        ft_simflash_cut_at(cut);
        st = change(gs_kc_add2, 7);
        ft_simflash_cut_at(0);
        ft_simflash_cut_complete(0);
        CHECK_OK(ft_keys_open(&k)); /* the reboot */
        if (k.n == 1 && k.key_counter == 0 && has(gs_pub1)) {
            old_seen = 1;
            CHECK(st != FT_ST_OK);
        } else {
            CHECK(k.n == 2 && k.key_counter == 1 && has(gs_pub1) && has(gs_pub2));
            new_seen = 1;
        }
        /* the board still takes the change after the cut (or already has it) */
        CHECK_EQ_INT(change(gs_kc_add2, 7), FT_ST_OK);
        CHECK_OK(ft_keys_open(&k));
        CHECK(k.n == 2 && k.key_counter == 1);
        if (st == FT_ST_OK) break; /* the cut came after the last operation */
    }
    CHECK(new_seen && (old_seen || (complete && !switch_sector))); /* a completed single write has no torn state */
    CHECK(cut < 20);
}

void test_keys_power_cut_every_write(void)
{
    key_change_cuts(0, 0);
    key_change_cuts(0, 1);
    key_change_cuts(1, 0);
    key_change_cuts(1, 1);
}

/* The anti-rollback floor is raised in the commit record (ft_store): a cut at every operation of that write leaves
 * the old floor and the old confirmed slot, or the new floor with the new slot confirmed. */
void test_security_counter_power_cut(void)
{
    static ft_store st;
    uint32_t cut;
    int old_seen = 0, new_seen = 0;
    for (cut = 1; cut < 10; cut++) {
        ft_status r;
        ft_simflash_cut_at(0);
        ft_simflash_format();
        CHECK_OK(ft_store_open(&st));
        memset(&st.m, 0, sizeof st.m);
        st.m.testing = FT_NO_SLOT;
        st.m.confirmed = 0;
        st.m.sec_floor = 3;
        st.m.slots[0].state = FT_SLOT_CONFIRMED;
        st.m.slots[1].state = FT_SLOT_TESTING;
        st.m.slots[1].security_counter = 7;
        st.m.testing = 1;
        CHECK_OK(ft_store_persist(&st));
        /* CONFIRM of slot 1: one record */
        st.m.slots[0].state = FT_SLOT_VERIFIED;
        st.m.slots[1].state = FT_SLOT_CONFIRMED;
        st.m.confirmed = 1;
        st.m.testing = FT_NO_SLOT;
        st.m.sec_floor = 7;
        ft_simflash_cut_at(cut);
        r = ft_store_persist(&st);
        ft_simflash_cut_at(0);
        CHECK_OK(ft_store_open(&st));
        if (st.m.sec_floor == 3) {
            CHECK(st.m.confirmed == 0 && st.m.testing == 1 && r != FT_OK);
            old_seen = 1;
        } else {
            CHECK(st.m.sec_floor == 7 && st.m.confirmed == 1 && st.m.testing == FT_NO_SLOT);
            new_seen = 1;
        }
        if (r == FT_OK) break;
    }
    CHECK(old_seen && new_seen);
    CHECK_OK(ft_keys_config(NULL, 0, NULL)); /* the next tests boot boards without keys */
}
