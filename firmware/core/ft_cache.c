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
