/* Labels in the cache, pseudo-labels and the training set (docs/ondevice.md 5a). One float32 multiply and one
 * float32 compare per unlabelled slot, no contraction possible: the same slots and labels on every board. */
#include "ft_labels.h"

int ft_pseudo_label(const ft_head *h, const int8_t *x, float margin, uint16_t *cls)
{
    int8_t q[FT_MAX_CLASSES];
    uint16_t c, top = 0;
    int32_t q2 = INT32_MIN;
    float m;
    *cls = 0;
    if (ft_head_forward(h, x, q) != FT_OK) return 0;
    for (c = 1; c < h->C; c++)
        if (q[c] > q[top]) top = c; /* strictly greater: ties to the lowest class */
    for (c = 0; c < h->C; c++)
        if (c != top && q[c] > q2) q2 = q[c];
    if (h->C < 2) q2 = q[top];
    m = (float)((int32_t)q[top] - q2) * h->output_scale;
    *cls = top;
    return m >= margin;
}

uint32_t ft_train_set_build(ft_train_set *s, const ft_cache *c, const ft_head *h, int pseudo, float margin,
                            float weight)
{
    uint32_t i;
    s->n = 0;
    s->weight = pseudo ? weight : 1.0f;
    for (i = 0; i < c->count; i++) {
        uint16_t y = c->labels[i];
        if (y == FT_CACHE_UNLABELLED && !(pseudo && h->D == c->dim && ft_pseudo_label(h, ft_cache_row(c, i), margin, &y)))
            continue;
        s->slot[s->n] = (uint16_t)i;
        s->label[s->n] = y;
        s->n++;
    }
    return s->n;
}
