#include "ft_cache.h"
#include <string.h>

ft_status ft_cache_init(ft_cache *c, uint16_t capacity, uint16_t dim)
{
    if (!c) return FT_ERR_ARG;
    if (capacity == 0 || capacity > FT_CACHE_CAPACITY || dim > FT_MAX_DIM) return FT_ERR_RANGE;
    c->capacity = capacity;
    c->dim = dim;
    ft_cache_clear(c);
    return FT_OK;
}

void ft_cache_clear(ft_cache *c)
{
    c->head = 0;
    c->count = 0;
}

ft_status ft_cache_push(ft_cache *c, const int8_t *x, uint16_t label)
{
    uint32_t slot;
    if (!c || !x) return FT_ERR_ARG;
    if (c->dim == 0 || c->capacity == 0) return FT_ERR_STATE;
    slot = c->head % c->capacity;
    memcpy(c->features + (size_t)slot * c->dim, x, c->dim);
    c->labels[slot] = label;
    c->head++;
    if (c->head >= 2u * c->capacity) c->head -= c->capacity; /* keep head % capacity, never overflow */
    if (c->count < c->capacity) c->count++;
    return FT_OK;
}

const int8_t *ft_cache_row(const ft_cache *c, uint32_t slot) { return c->features + (size_t)slot * c->dim; }

uint32_t ft_cache_labelled(const ft_cache *c)
{
    uint32_t i, n = 0;
    for (i = 0; i < c->count; i++) n += c->labels[i] != FT_CACHE_UNLABELLED;
    return n;
}

int ft_cache_slot_of(const ft_cache *c, uint32_t base, uint32_t pushed_total, uint32_t id, uint32_t *slot)
{
    /* unsigned differences: a pushed_total that wrapped past 2^32 still numbers the newest samples right */
    uint32_t since = pushed_total - base, age = pushed_total - id; /* age: 1 for the newest sample */
    if (c->capacity == 0 || age == 0 || age > since || age > c->count) return 0;
    *slot = (id - base) % c->capacity;
    return 1;
}
