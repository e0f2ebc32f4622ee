/* The int8 feature cache: a ring buffer of (int8 feature vector, label), as fedtiny.ondevice.FeatureCache.
 * Slot head % capacity is overwritten next; training visits slots 0 .. count-1. */
#ifndef FT_CACHE_H
#define FT_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_status.h"

typedef struct {
    uint16_t dim;        /* D of the cached vectors (0: not set) */
    uint16_t capacity;   /* slots (<= FT_CACHE_CAPACITY) */
    uint32_t head;       /* next slot to write is head % capacity */
    uint32_t count;      /* valid slots */
    int8_t features[FT_CACHE_CAPACITY * FT_MAX_DIM];
    uint16_t labels[FT_CACHE_CAPACITY]; /* the wire's u16 labels, whole (a head may have more than 256 classes);
                                         * FT_CACHE_UNLABELLED: the sample has none (docs/ondevice.md 5a) */
} ft_cache;

#define FT_CACHE_UNLABELLED 0xFFFFu /* a slot's label when it has none (the wire's FT_UNLABELLED) */

ft_status ft_cache_init(ft_cache *c, uint16_t capacity, uint16_t dim);
void ft_cache_clear(ft_cache *c);
/* Append one sample (dim int8 values) and its label (< C, or FT_CACHE_UNLABELLED; any u16). */
ft_status ft_cache_push(ft_cache *c, const int8_t *x, uint16_t label);
/* The slot's features (row of dim bytes) and label. */
const int8_t *ft_cache_row(const ft_cache *c, uint32_t slot);
/* Valid slots that hold a label. */
uint32_t ft_cache_labelled(const ft_cache *c);
/* The slot of sample id `id` (docs/protocol.md "Sample ids"): ids base .. pushed_total-1 were pushed since the
 * cache was last emptied (base = pushed_total then), the newest `count` of them are cached, id s in slot
 * (s - base) % capacity. 1 and *slot if the sample is cached, else 0. */
int ft_cache_slot_of(const ft_cache *c, uint32_t base, uint32_t pushed_total, uint32_t id, uint32_t *slot);

#endif
