/* libFuzzer target: the whole receive path (COBS deframing, header/CRC checks, every message handler,
 * uploads into the simulated flash). The input is split: byte 0 chooses whether CRCs are fixed up so that
 * the fuzzer reaches the message handlers instead of stopping at the CRC check, and (bit 6) whether the board
 * holds an Ed25519 public key (signed uploads, KEYS/KEY_CHANGE) or the HMAC fleet key only. */
#include "ft_dev.h"
#include "ft_link.h"
#include "ft_crc32.h"
#include "ft_cobs.h"
#include "ft_simflash.h"
#include "ft_keys.h"
#include "../golden/golden_signing.h"
#include "../../app/factory_head.h"
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ft_dev dev;
static ft_link lnk;
static const uint8_t key[32] = FT_FLEET_KEY_INIT;
static uint8_t fr[FT_FRAME_MAX + 16], wire[FT_WIRE_MAX + 16];

static ft_status sink(const uint8_t *b, size_t n)
{
    (void)b;
    (void)n;
    return FT_OK;
}

static void power_up(void)
{
    memset(&dev, 0, sizeof dev);
    dev.device_id = 1;
    memcpy(dev.key, key, 32);
    dev.has_key = 1;
    dev.factory_patch = ft_factory_head;
    dev.factory_len = FT_FACTORY_HEAD_LEN;
    if (ft_dev_boot(&dev) != FT_OK) __builtin_trap();
    ft_link_init(&lnk, sink);
}

static void feed(const uint8_t *b, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t used = 0;
        if (ft_link_feed(&lnk, &dev, b + off, n - off, &used) != FT_OK) __builtin_trap();
        off += used;
        if (dev.reset_requested) {
            if (ft_dev_boot(&dev) != FT_OK) __builtin_trap();
            ft_link_init(&lnk, sink);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        ft_simflash_format();
        inited = 1;
    }
    if (size < 1) return 0;
    ft_simflash_cut_at(0);
    if (data[0] & 0x80) ft_simflash_format(); /* sometimes start from a blank flash */
    /* public keys are stored on a key journal holding none (a blank flash); later boots keep what is stored */
    if (ft_keys_config((const uint8_t(*)[32])gs_pub1, (data[0] & 0x40) ? 1u : 0u, NULL) != FT_OK) __builtin_trap();
    power_up();
    if (data[0] & 1) {
        /* structured: records of [type, len_lo, len_hi, payload...] turned into valid frames */
        size_t i = 1;
        uint16_t seq = 0;
        while (i + 3 <= size) {
            uint8_t type = data[i];
            size_t n = (size_t)data[i + 1] | ((size_t)data[i + 2] << 8), enc = 0;
            i += 3;
            if (n > size - i) n = size - i;
            if (n > FT_MAX_PAYLOAD) n = FT_MAX_PAYLOAD;
            fr[0] = 1; fr[1] = type; fr[2] = 0; fr[3] = 0;
            fr[4] = (uint8_t)seq; fr[5] = (uint8_t)(seq >> 8);
            fr[6] = (uint8_t)n; fr[7] = (uint8_t)(n >> 8);
            memcpy(fr + 8, data + i, n);
            {
                uint32_t c = ft_crc32(fr, 8 + n);
                fr[8 + n] = (uint8_t)c; fr[9 + n] = (uint8_t)(c >> 8);
                fr[10 + n] = (uint8_t)(c >> 16); fr[11 + n] = (uint8_t)(c >> 24);
            }
            if (ft_cobs_encode(fr, 12 + n, wire, sizeof wire - 1, &enc) != FT_OK) __builtin_trap();
            wire[enc] = 0;
            feed(wire, enc + 1);
            i += n;
            seq++;
        }
    } else {
        feed(data + 1, size - 1); /* raw bytes */
    }
    return 0;
}
