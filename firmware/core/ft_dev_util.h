/* Helpers the device modules share (ft_learn, ft_update, ft_dev_model): the running image's kind, the RAM state
 * lost on a switch of model, a head's fit to the board's features, and the one scratch head. Their own unit, so
 * that ft_dev.c (the dispatch) and the handlers it dispatches to (ft_learn.c, ft_update.c) do not call each other.
 * Private to the device modules, like ft_dev_internal.h (which includes it). */
#ifndef FT_DEV_UTIL_H
#define FT_DEV_UTIL_H
#include <stdint.h>
#include "ft_dev.h"

/* A head being validated before it replaces the running one (SET_HEAD, VERIFY, ACTIVATE, CONFIRM): one static
 * buffer, since a request handles one head at a time. */
extern ft_head ftd_scratch_head;

/* Kind of the image running now (the factory head is a head patch). */
uint8_t ftd_running_kind(const ft_dev *d);
/* Switching to or from a full image is a reboot into another model: the feature cache (features of another
 * backbone), a pending update and SET_HEAD staging are lost (docs/protocol.md section 5). */
void ftd_clear_ram(ft_dev *d);
/* A head patch must read the features the way this firmware quantizes them (SHAPE_MISMATCH otherwise). */
int ftd_head_fits(const ft_dev *d, const ft_head *h);

#endif
