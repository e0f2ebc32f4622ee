/* Helpers shared by the device modules (ft_dev_util.h). */
#include "ft_dev_util.h"

ft_head ftd_scratch_head; /* a head being validated before it replaces the running one */

uint8_t ftd_running_kind(const ft_dev *d)
{
    return d->active == FT_NO_SLOT ? (uint8_t)FT_KIND_HEAD_PATCH : d->store.m.slots[d->active].kind;
}

void ftd_clear_ram(ft_dev *d)
{
    ft_cache_clear(&d->cache);
    d->id_base = d->pushed_total; /* the cache restarts at slot 0, sample ids go on (docs/protocol.md "Sample ids") */
    d->has_pending = 0;
    d->staged_len = 0;
}

int ftd_head_fits(const ft_dev *d, const ft_head *h)
{
    return h->input_scale == d->feat_scale && h->input_zero_point == d->feat_zp;
}
