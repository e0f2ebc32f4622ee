/* Signed slots (docs/protocol.md section 7), for the update state machine: which authentication mode an upload must
 * use on this board, VERIFY of a signed slot from flash (ft_image over the store, trusted keys of ft_keys), and where
 * a slot's model lies (a signed slot's payload follows its MCUboot header). Reasons are the virtual board's. */
#ifndef FT_SIGNED_H
#define FT_SIGNED_H
#include <stddef.h>
#include <stdint.h>
#include "ft_keys.h"
#include "ft_store.h"

/* UPLOAD_BEGIN (at_verify = 0) or VERIFY (1): NULL if an image of this mode (is_signed: UploadBegin flag SIGNED) is
 * acceptable on a board with these keys, else the AUTH_FAILED reason. An unsigned image on a board without keys
 * still needs its HMAC tag checked (*check_tag = 1). */
const char *ft_signed_mode(const ft_keys *k, int is_signed, int at_verify, int *check_tag);

/* VERIFY of a complete signed slot: the MCUboot layout, SHA256 TLV, trusted KEYHASH, Ed25519 signature, and the
 * signed security counter equal to the declared one. A protocol status (OK, AUTH_FAILED, FLASH_ERROR), why set. */
uint8_t ft_signed_verify(const ft_store *st, uint8_t slot, const ft_keys *k, char *why, size_t cap);

/* The model of a slot: [*off, *off + *len) of its image (a signed slot: the MCUboot payload, else all of it).
 * FT_ERR_FORMAT if a signed slot's header does not parse (a corrupt slot). */
ft_status ft_signed_payload(const ft_store *st, uint8_t slot, uint32_t *off, uint32_t *len);

#endif
