/* Labels in the cache, pseudo-labels and the training set (docs/ondevice.md 5a; the reference is
 * fedtiny/ondevice/pseudo.py): which cached samples a TRAIN trains on, and the labels the board gives itself. */
#ifndef FT_LABELS_H
#define FT_LABELS_H
#include <stdint.h>
#include "ft_cache.h"
#include "ft_head.h"
#include "ft_train.h"

/* The running int8 head's pseudo-label of int8 features x[D]: *cls = argmax of the int8 logits (ties to the lowest
 * class); returns 1 when the margin (float)(q1 - q2) * output_scale (q2: the best other class, q1 when C = 1) is
 * >= margin (one float32 multiply and compare), else 0. fedtiny.ondevice.pseudo.pseudo_labels. */
int ft_pseudo_label(const ft_head *h, const int8_t *x, float margin, uint16_t *cls);

/* Fill *s with the training set of the cache: slots 0 .. count-1 in order, each labelled slot with its label and,
 * with `pseudo`, each slot without a label that ft_pseudo_label finds confident (its label c1; weight `weight`).
 * Returns s->n (0: nothing to train on). A label >= C in the cache is kept (ft_train refuses it). */
uint32_t ft_train_set_build(ft_train_set *s, const ft_cache *c, const ft_head *h, int pseudo, float margin,
                            float weight);

#endif
