/* The learning handlers of docs/protocol.md section 4: the running head in RAM, the feature cache, training and the
 * pending update. Each takes the request payload and answers through the codec context; returns the status. */
#ifndef FT_LEARN_H
#define FT_LEARN_H
#include "ft_codec.h"

uint8_t ft_learn_get_head(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_set_head(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_push_samples(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_train(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_read_update(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_update_ack(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_evaluate(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_label(ft_ctx *c, const uint8_t *p, size_t n);
uint8_t ft_learn_infer(ft_ctx *c, const uint8_t *p, size_t n);
/* STAGE_INPUT (docs/protocol.md "STAGE_INPUT"): one piece of a raw input staged in d->input. */
uint8_t ft_learn_stage_input(ft_ctx *c, const uint8_t *p, size_t n);

#endif
