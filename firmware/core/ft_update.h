/* The update state machine of docs/protocol.md sections 5-7: A/B slots in flash, uploads, VERIFY (hash, tag,
 * security counter, image validation), ACTIVATE, CONFIRM (self-test of the image under test), ROLLBACK, and the
 * slots at power-up. Handlers take the request payload and answer through the codec context. */
#ifndef FT_UPDATE_H
#define FT_UPDATE_H
#include "ft_codec.h"

/* Power-up of the slots, called by ft_dev_boot once the RAM state and the factory head's shape are set: open the
 * store (provision the factory head on a blank flash), revert a test image, load the running head (hashing it;
 * a corrupt confirmed image falls back to the other verified slot, else the factory head). */
ft_status ft_update_boot(ft_dev *d);

uint8_t ft_update_upload_begin(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_upload_chunk(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_upload_status(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_verify(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_activate(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_confirm(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_update_rollback(ft_ctx *c, const uint8_t *p, size_t n);

#endif
