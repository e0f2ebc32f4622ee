/* The firmware application: one device (ft_dev) behind one link (ft_link), driven by a port. */
#ifndef FT_APP_H
#define FT_APP_H
#include <stdint.h>
#include "ft_status.h"
#include "ft_dev.h"
#include "ft_link.h"

typedef struct {
    uint32_t device_id;
    const uint8_t *key;          /* FT_HMAC_KEY_LEN bytes, or NULL: no key provisioned */
    const uint8_t *factory_head; /* HeadPatch; NULL: the compiled-in factory head */
    uint32_t factory_len;
    const uint8_t *factory_model; /* a .tflite (read in place, kept for the board's life); NULL: the compiled-in one
                                   * (make FT_FACTORY_MODEL=...), if any. With a model and no factory_head, the
                                   * model's own head is the factory head. */
    uint32_t factory_model_len;
    const char *board_name;      /* NULL: ft_port_board_name() */
} ft_app_config;

/* Power-up (also after a RESET on ports that reboot in place). */
ft_status ft_app_boot(const ft_app_config *cfg);
/* Read what the link has and answer it. FT_OK; FT_ERR_AGAIN when a RESET was answered and the board must
 * reboot now; FT_ERR_IO when the link is gone. */
ft_status ft_app_poll(void);

extern ft_dev ft_app_dev;
extern ft_link ft_app_link;
#endif
