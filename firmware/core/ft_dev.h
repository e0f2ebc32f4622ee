/* The device: the message handlers of docs/protocol.md over the core (head, cache, training, store).
 * All state is in one static struct; ft_dev_boot() is a power-up (RAM state rebuilt from flash). */
#ifndef FT_DEV_H
#define FT_DEV_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_status.h"
#include "ft_head.h"
#include "ft_cache.h"
#include "ft_train.h"
#include "ft_store.h"
#include "ft_keys.h"

typedef struct {
    /* identity and provisioning */
    uint32_t device_id;
    uint8_t key[FT_HMAC_KEY_LEN];
    int has_key;
    const uint8_t *factory_patch; /* HeadPatch provisioned into slot 0 on a blank flash (NULL with a factory model:
                                   * its own head) */
    uint32_t factory_len;
    const uint8_t *factory_model; /* the factory model (.tflite read in place, part of the firmware image), or NULL:
                                   * the backbone head patches and the factory head run on (docs/protocol.md s. 5) */
    uint32_t factory_model_len;
    const char *board_name;
    /* flash-backed */
    ft_store store;
    ft_keys keys;                 /* trusted Ed25519 public keys, key counter (ft_keys) */
    /* RAM */
    uint16_t C, D;                /* the model's head shape */
    float feat_scale;             /* the firmware's feature quantization (the factory head's input) */
    int32_t feat_zp;
    uint8_t active;               /* running slot (FT_NO_SLOT: nothing confirmed, the factory head runs) */
    ft_head head;                 /* running int8 head */
    ft_cache cache;
    uint32_t pushed_total;
    uint32_t id_base;             /* pushed_total when the cache was last emptied (CLEAR, a switch of model): sample
                                   * id s is in slot (s - id_base) % capacity (docs/protocol.md "Sample ids") */
    uint32_t update_counter, uid_limit, pending_id, acked_id; /* ids up to uid_limit are reserved in flash */
    int has_pending;
    uint32_t upd_round, upd_n;
    float upd_loss;
    uint8_t upd_tag[32];
    ft_float_head upd;            /* trained head (the pending update) */
    ft_train_work work;
    uint8_t staged[FT_HEAD_PATCH_MAX];
    uint32_t staged_len;
    uint32_t input_total, input_len; /* STAGE_INPUT: the staged raw input's total and bytes received (0 0: none) */
#if FT_MAX_STAGED_INPUT > 0
    uint8_t input[FT_MAX_STAGED_INPUT]; /* the staged raw input (PUSH_SAMPLES / INFER kinds 3 and 4) */
#endif
    int reset_requested;          /* RESET: reboot after the response is sent */
    uint32_t boots;
} ft_dev;

/* Power-up: open the store (provision the factory head on a blank flash), revert a test image, load the
 * running head. identity fields and factory_patch (or factory_model) must be set before. */
ft_status ft_dev_boot(ft_dev *d);
/* Handle one request payload; writes the response payload (or an error reason) and returns the status. */
uint8_t ft_dev_handle(ft_dev *d, uint8_t type, const uint8_t *req, size_t len, uint8_t *resp, size_t cap,
                      size_t *resp_len);

#endif
