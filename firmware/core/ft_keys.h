/* The board's trusted Ed25519 public keys, KEYS and KEY_CHANGE (docs/protocol.md section 7), and its per-device
 * update key.
 *
 * The key set and the key counter live in their own power-fail-safe journal in flash (FT_KEY_PAGES pages after
 * the two image slots, the scheme of ft_store: records "FTKY", seq, key counter, n, keys, CRC-32, appended to one
 * sector, the other erased when it is full; boot takes the valid record with the highest seq), so a KEY_CHANGE is
 * one record write: a power cut leaves the old set or the new one.
 *
 * Provisioning (ft_keys_config, before boot): the public keys are stored once, on a flash that holds none; after
 * that only KEY_CHANGE changes the set. The update key is RAM-only provisioning data (a port passes it at every
 * boot, as the fleet key). */
#ifndef FT_KEYS_H
#define FT_KEYS_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_proto.h"
#include "ft_status.h"

#define FT_MAX_KEYS FT_MAX_TRUSTED_KEYS /* the wire constants (KeyChange layout, ops) are ft_proto.h's */
#define FT_KEY_REC_SIZE 160u
#define FT_KEY_BASE (FT_META_PAGES * FT_FLASH_PAGE_SIZE + 2u * FT_SLOT_SIZE)

typedef struct {
    uint32_t seq;         /* journal record counter */
    uint32_t key_counter; /* KEY_CHANGE replay protection (0 when provisioned) */
    uint8_t n;
    uint8_t keys[FT_MAX_KEYS][32];
    int have_record;
    uint32_t next_rec;    /* flash offset of the next record; 0xFFFFFFFF: switch sectors */
    uint32_t cur_sector;
} ft_keys;

/* Provisioning of this power-up: up to FT_MAX_KEYS raw public keys (stored only on a flash holding none;
 * duplicates dropped) and the 32-byte update key (NULL: none, the fleet key tags updates). Copies both. */
ft_status ft_keys_config(const uint8_t (*trust)[32], unsigned n, const uint8_t *update_key);
/* The provisioned update key, or NULL. */
const uint8_t *ft_keys_update_key(void);

/* Power-up: read the journal, store the provisioned keys if it holds none. */
ft_status ft_keys_open(ft_keys *k);
/* KEYS response (KeySet: n, max_keys, reserved, key counter, the KEYHASHes); its length, 0 if cap is short. */
size_t ft_keys_set(const ft_keys *k, uint8_t *out, size_t cap);
/* KEY_CHANGE of docs/protocol.md section 7, checks in its order; a protocol status (FT_ST_*), `why` set when not
 * OK. On OK the new set and counter are in flash (one record) and in k. */
uint8_t ft_keys_change(ft_keys *k, uint32_t device_id, const uint8_t *p, size_t n, char *why, size_t why_cap);

#endif
