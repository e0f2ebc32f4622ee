/* Message codec of the device (docs/protocol.md sections 2 and 4): the response being built for one request,
 * error responses with a reason, BlobRead paging (GET_HEAD, READ_UPDATE) and the SlotStatus layout. Framing, CRC and
 * the retry cache are the link layer's (ft_link). */
#ifndef FT_CODEC_H
#define FT_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include "ft_dev.h"

/* One request being answered: the device and the response payload buffer. */
typedef struct {
    ft_dev *d;
    uint8_t *resp;
    size_t cap;
    size_t *len;
} ft_ctx;

/* A non-OK answer: the reason (at most FT_REASON_MAX bytes) as payload; returns status. */
uint8_t ft_fail(ft_ctx *c, uint8_t status, const char *reason);
/* FLASH_ERROR with the flash status as reason. */
uint8_t ft_fail_flash(ft_ctx *c, ft_status s);
/* The SlotStatus payload (STATUS, ACTIVATE, CONFIRM, ROLLBACK). */
uint8_t ft_put_slot_status(ft_ctx *c);

/* Reads n bytes at off of an object produced on the fly. */
typedef ft_status (*ft_blob_reader)(ft_dev *d, uint32_t off, uint8_t *out, size_t n);
/* BlobRead request p -> BlobPage of an object of `total` bytes; hdr bytes the caller put before total_len. */
uint8_t ft_blob_page(ft_ctx *c, const uint8_t *p, size_t n, uint32_t total, size_t hdr, ft_blob_reader rd);

#endif
