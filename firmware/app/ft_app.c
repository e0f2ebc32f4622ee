#include "ft_app.h"
#include "factory_head.h"
#include "port.h"
#include <string.h>

ft_dev ft_app_dev;
ft_link ft_app_link;
static const uint8_t default_key[FT_HMAC_KEY_LEN] = FT_FLEET_KEY_INIT;

ft_status ft_app_boot(const ft_app_config *cfg)
{
    ft_dev *d = &ft_app_dev;
    uint32_t boots = d->boots;
    memset(d, 0, sizeof *d); /* RAM does not survive a reboot */
    d->boots = boots;
    d->device_id = cfg && cfg->device_id ? cfg->device_id : ft_port_device_id();
    if (cfg && cfg->key) {
        memcpy(d->key, cfg->key, FT_HMAC_KEY_LEN);
        d->has_key = 1;
    } else if (!cfg && FT_HAS_FLEET_KEY) {
        memcpy(d->key, default_key, FT_HMAC_KEY_LEN);
        d->has_key = 1;
    }
    d->factory_patch = cfg && cfg->factory_head ? cfg->factory_head : ft_factory_head;
    d->factory_len = cfg && cfg->factory_head ? cfg->factory_len : FT_FACTORY_HEAD_LEN;
    d->board_name = cfg ? cfg->board_name : NULL;
    ft_link_init(&ft_app_link, ft_port_write);
    return ft_dev_boot(d);
}

ft_status ft_app_poll(void)
{
    uint8_t buf[128];
    size_t got = 0, off = 0;
    FT_TRY(ft_port_read(buf, sizeof buf, &got));
    while (off < got) {
        size_t used = 0;
        FT_TRY(ft_link_feed(&ft_app_link, &ft_app_dev, buf + off, got - off, &used));
        off += used;
        if (ft_app_dev.reset_requested) return FT_ERR_AGAIN; /* bytes after RESET are lost, as on a board */
    }
    return FT_OK;
}
