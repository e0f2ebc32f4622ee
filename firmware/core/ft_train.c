#include "ft_train.h"
#include <math.h>
#include <string.h>

#define GOLDEN 0x9E3779B97F4A7C15ull

uint64_t ft_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ft_stream_key(uint64_t seed, uint32_t round, uint32_t device_id, uint32_t epoch)
{
    uint64_t k = ft_mix64(seed) ^ (uint64_t)round;
    k = ft_mix64(k) ^ (uint64_t)device_id;
    return ft_mix64(ft_mix64(k) ^ (uint64_t)epoch);
}

void ft_sample_order(uint64_t key, uint32_t count, uint64_t *sort_key, uint16_t *order)
{
    uint32_t i, j;
    /* stable insertion sort by mix(key ^ (slot + 1) * GOLDEN) */
    for (i = 0; i < count; i++) {
        uint64_t k = ft_mix64(key ^ ((uint64_t)(i + 1u) * GOLDEN));
        j = i;
        while (j > 0 && sort_key[j - 1] > k) {
            sort_key[j] = sort_key[j - 1];
            order[j] = order[j - 1];
            j--;
        }
        sort_key[j] = k;
        order[j] = (uint16_t)i;
    }
}

float ft_softmax_xent(const float *logits, uint16_t C, uint16_t label, float *p)
{
    float mx = logits[0], s = 0.0f;
    uint16_t c;
    for (c = 1; c < C; c++)
        if (logits[c] > mx) mx = logits[c];
    for (c = 0; c < C; c++) {
        p[c] = expf(logits[c] - mx);
        s += p[c];
    }
    for (c = 0; c < C; c++) p[c] = p[c] / s;
    return logf(s) - (logits[label] - mx);
}

ft_status ft_train(ft_float_head *fh, const ft_cache *cache, float input_scale, int32_t input_zero_point,
                   const ft_train_cfg *cfg, ft_train_work *wk, float *loss, uint32_t *steps)
{
    uint16_t C, D, c, d;
    uint32_t n, bsz, epoch, t, n_steps, j, total_steps = 0;
    size_t CD;
    double loss_sum = 0.0;
    float logits[FT_MAX_CLASSES];
    if (!fh || !cache || !cfg || !wk || !loss || !steps) return FT_ERR_ARG;
    C = fh->C;
    D = fh->D;
    n = cache->count;
    if (C == 0 || D == 0) return FT_ERR_EMPTY;
    if (cache->dim != D) return FT_ERR_ARG;
    if (cfg->epochs < 1 || cfg->batch_size < 1) return FT_ERR_ARG;
    if (!(cfg->lr > 0.0f) || !(cfg->momentum >= 0.0f) || !(cfg->weight_decay >= 0.0f) || !(cfg->prox_mu >= 0.0f))
        return FT_ERR_ARG;
    if (!isfinite(cfg->lr) || !isfinite(cfg->momentum) || !isfinite(cfg->weight_decay) || !isfinite(cfg->prox_mu))
        return FT_ERR_ARG;
    CD = (size_t)C * D;
    wk->grad.C = wk->vel.C = wk->anchor.C = C;
    wk->grad.D = wk->vel.D = wk->anchor.D = D;
    memcpy(wk->anchor.weights, fh->weights, CD * sizeof(float));
    memcpy(wk->anchor.bias, fh->bias, C * sizeof(float));
    memset(wk->vel.weights, 0, CD * sizeof(float));
    memset(wk->vel.bias, 0, C * sizeof(float));
    bsz = cfg->batch_size;
    n_steps = (n + bsz - 1) / bsz;
    for (epoch = 0; epoch < cfg->epochs; epoch++) {
        ft_sample_order(ft_stream_key(cfg->seed, cfg->round, cfg->device_id, epoch), n, wk->sort_key, wk->order);
        for (t = 0; t < n_steps; t++) {
            uint32_t first = t * bsz, m = n - first < bsz ? n - first : bsz;
            float inv_m = 1.0f / (float)m;
            memset(wk->grad.weights, 0, CD * sizeof(float));
            memset(wk->grad.bias, 0, C * sizeof(float));
            for (j = 0; j < m; j++) {
                uint16_t slot = wk->order[first + j];
                const int8_t *q = ft_cache_row(cache, slot);
                uint16_t y = cache->labels[slot];
                if (y >= C) return FT_ERR_FORMAT;
                for (d = 0; d < D; d++) wk->x[d] = ((float)q[d] - (float)input_zero_point) * input_scale;
                for (c = 0; c < C; c++) {
                    const float *w = fh->weights + (size_t)c * D;
                    float acc = 0.0f;
                    for (d = 0; d < D; d++) acc += wk->x[d] * w[d];
                    logits[c] = acc + fh->bias[c];
                }
                loss_sum += (double)ft_softmax_xent(logits, C, y, wk->p);
                wk->p[y] -= 1.0f;
                for (c = 0; c < C; c++) {
                    float g = wk->p[c] * inv_m;
                    float *gw = wk->grad.weights + (size_t)c * D;
                    for (d = 0; d < D; d++) gw[d] += g * wk->x[d];
                    wk->grad.bias[c] += g;
                }
            }
            if (cfg->weight_decay != 0.0f)
                for (j = 0; j < CD; j++) wk->grad.weights[j] += cfg->weight_decay * fh->weights[j];
            if (cfg->prox_mu != 0.0f) {
                for (j = 0; j < CD; j++) wk->grad.weights[j] += cfg->prox_mu * (fh->weights[j] - wk->anchor.weights[j]);
                for (c = 0; c < C; c++) wk->grad.bias[c] += cfg->prox_mu * (fh->bias[c] - wk->anchor.bias[c]);
            }
            if (cfg->momentum != 0.0f) {
                for (j = 0; j < CD; j++) wk->grad.weights[j] = wk->vel.weights[j] = cfg->momentum * wk->vel.weights[j] + wk->grad.weights[j];
                for (c = 0; c < C; c++) wk->grad.bias[c] = wk->vel.bias[c] = cfg->momentum * wk->vel.bias[c] + wk->grad.bias[c];
            }
            for (j = 0; j < CD; j++) fh->weights[j] -= cfg->lr * wk->grad.weights[j];
            for (c = 0; c < C; c++) fh->bias[c] -= cfg->lr * wk->grad.bias[c];
            total_steps++;
        }
    }
    {
        double seen = (double)n * cfg->epochs;
        *loss = (float)(loss_sum / (seen > 0 ? seen : 1.0));
    }
    *steps = total_steps;
    return FT_OK;
}
