/* Link layer of docs/protocol.md: COBS deframing with overflow discard, header/CRC checks, the
 * idempotent-retry response cache, dispatch to ft_dev, response framing. Byte-stream in, bytes out. */
#ifndef FT_LINK_H
#define FT_LINK_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_cobs.h"
#include "ft_dev.h"
#include "ft_proto.h"

#define FT_FRAME_MAX (FT_HDR_SIZE + FT_MAX_PAYLOAD + FT_CRC_SIZE)
#define FT_WIRE_MAX (FT_COBS_MAX_ENCODED(FT_FRAME_MAX) + 1u)
/* Responses that neither use nor replace the retry cache (UPLOAD_CHUNK, BAD_VERSION, UNKNOWN_TYPE, MALFORMED)
 * carry at most a 200-byte reason */
#define FT_NC_MAX 200u

typedef ft_status (*ft_link_send)(const uint8_t *buf, size_t len);

typedef struct {
    uint8_t rx[FT_COBS_MAX_ENCODED(FT_FRAME_MAX)]; /* encoded bytes of the frame being received */
    size_t rx_len;
    int rx_overflow;
    uint8_t frame[FT_FRAME_MAX];                   /* decoded response frame being built */
    uint8_t tx[FT_WIRE_MAX];                       /* the last response on the wire (the retry cache) */
    uint8_t tx_nc[FT_COBS_MAX_ENCODED(FT_HDR_SIZE + FT_NC_MAX + FT_CRC_SIZE) + 1u]; /* a response not cached */
    size_t tx_len;
    int have_last;
    uint8_t last_version, last_type;
    uint16_t last_seq;
    uint32_t last_crc;
    uint32_t dropped;                              /* bad frames dropped silently */
    ft_link_send send;
} ft_link;

void ft_link_init(ft_link *l, ft_link_send send);
/* Consume received bytes: every complete request is handled by d and answered through send. Stops early
 * (returning FT_OK with *used < len) after a RESET request was answered, so the caller can reboot. */
ft_status ft_link_feed(ft_link *l, ft_dev *d, const uint8_t *buf, size_t len, size_t *used);

#endif
