/* Head training as fedtiny.ondevice.train_heads computes it for one device: mini-batch SGD in float32 on
 * dequantized int8 cached features, momentum, weight decay, FedProx term, and the counter-based shuffle
 * (splitmix64 finalizer over (seed, round, device id, epoch)). No batch buffers: each sample's gradient
 * is accumulated as it is computed, so RAM does not grow with the batch size. */
#ifndef FT_TRAIN_H
#define FT_TRAIN_H
#include <stdint.h>
#include "ft_cache.h"
#include "ft_head.h"

typedef struct {
    uint16_t epochs, batch_size;
    float lr, momentum, weight_decay, prox_mu;
    uint64_t seed;
    uint32_t round;
    uint32_t device_id;
} ft_train_cfg;

/* The training set of one TRAIN (docs/ondevice.md 5a): the kept cache slots in slot order, each with its label (the
 * cache's, or the pseudo-label of a slot without one). Entry i is sample i of section 3's "cache" of n samples;
 * an entry whose cache slot has no label (FT_CACHE_UNLABELLED) is pseudo-labelled: its gradient is scaled by
 * `weight`. 4 bytes per cache slot (+8), static in the work memory: bounded by FT_CACHE_CAPACITY. */
typedef struct {
    uint32_t n;
    float weight;                        /* pseudo_weight (TRAIN); 1 without PSEUDO */
    uint16_t slot[FT_CACHE_CAPACITY];
    uint16_t label[FT_CACHE_CAPACITY];
} ft_train_set;

/* Working memory of a training run (static in the app; sized by the config header). */
typedef struct {
    union {
        struct {
            ft_float_head grad;
            ft_float_head vel;     /* momentum velocity */
            ft_float_head anchor;  /* the round's starting head (FedProx) */
        } f;
        struct {                   /* fixed-point path (docs/ondevice.md 3b): same RAM as the float path */
            int32_t V[FT_MAX_CLASSES * FT_MAX_DIM]; /* W * s_in * 2^24 */
            int32_t bq[FT_MAX_CLASSES];             /* b * 2^24 */
            int64_t GW[FT_MAX_CLASSES * FT_MAX_DIM];
            int64_t GB[FT_MAX_CLASSES];
        } q;
    } u;
    ft_train_set set;                /* filled by ft_train_set_build before ft_train_on / ft_train_fixed_on */
    uint64_t sort_key[FT_CACHE_CAPACITY];
    uint16_t order[FT_CACHE_CAPACITY];
    float x[FT_MAX_DIM];
    float p[FT_MAX_CLASSES];
} ft_train_work;

uint64_t ft_mix64(uint64_t z);
uint64_t ft_stream_key(uint64_t seed, uint32_t round, uint32_t device_id, uint32_t epoch);
/* Visit order of slots 0..count-1 for a key (the spec's sample_order). */
void ft_sample_order(uint64_t key, uint32_t count, uint64_t *sort_key, uint16_t *order);

/* Train fh in place on the cache. input_scale/zp dequantize the features. loss: mean cross-entropy over
 * every sample visited; steps: SGD steps taken. */
ft_status ft_train(ft_float_head *fh, const ft_cache *cache, float input_scale, int32_t input_zero_point,
                   const ft_train_cfg *cfg, ft_train_work *work, float *loss, uint32_t *steps);

/* Fixed-point (integer) SGD for boards without an FPU, bit-exact with fedtiny.ondevice.fixed.train_heads_fixed:
 * plain SGD only (momentum, weight decay, prox_mu must be 0: FT_ERR_ARG otherwise). fh is converted in and
 * out with IEEE double once per call. */
ft_status ft_train_fixed(ft_float_head *fh, const ft_cache *cache, float input_scale, int32_t input_zero_point,
                         const ft_train_cfg *cfg, ft_train_work *work, float *loss, uint32_t *steps);

/* The same on a training set (docs/ondevice.md 5a): the n entries of `set` instead of every valid slot, a
 * pseudo-labelled entry's gradient times set->weight (float: one float32 multiply after inv_m; fixed point: Q16
 * wq = floor((double)weight * 65536 + 0.5), g = (g * wq) >> 16). set NULL: every valid slot with its cache label,
 * as ft_train / ft_train_fixed (which are these with NULL). */
ft_status ft_train_on(ft_float_head *fh, const ft_cache *cache, const ft_train_set *set, float input_scale,
                      int32_t input_zero_point, const ft_train_cfg *cfg, ft_train_work *work, float *loss,
                      uint32_t *steps);
ft_status ft_train_fixed_on(ft_float_head *fh, const ft_cache *cache, const ft_train_set *set, float input_scale,
                            int32_t input_zero_point, const ft_train_cfg *cfg, ft_train_work *work, float *loss,
                            uint32_t *steps);

/* Softmax cross-entropy of float logits z[C] for a label (the spec's softmax_xent, float32): p[C] gets the
 * probabilities, the return value is the sample's loss. */
float ft_softmax_xent(const float *logits, uint16_t C, uint16_t label, float *p);

/* The spec's own exp and log (fedtiny.ondevice.fmath exp_f32/log_f32), bit for bit: exp for v <= 0 (or NaN),
 * log for x >= 1 (a sum of exponentials); libm's expf/logf differ between libraries in the last bits. */
float ft_expf(float v);
float ft_logf(float x);

#endif
