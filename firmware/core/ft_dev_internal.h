/* Private to the device modules (ft_dev, ft_dev_model, ft_codec, ft_learn, ft_update): state and helpers they
 * share (the helpers of ft_dev_util.h included). Not for ports, apps or tests, which use ft_dev.h. */
#ifndef FT_DEV_INTERNAL_H
#define FT_DEV_INTERNAL_H
#include "ft_dev.h"
#include "ft_dev_util.h"
#include "ft_codec.h"
#include "ft_proto.h"
#include "ft_tfl_interp.h"

/* The firmware's own names for wire values (ft_store.h, fedtiny_config.h) must agree with the generated ft_proto.h:
 * a compile error here means one of them changed. */
typedef char ftd_wire_values_agree[((int)FT_SLOT_EMPTY == (int)FT_WIRE_SLOT_EMPTY &&
                                    (int)FT_SLOT_RECEIVING == (int)FT_WIRE_SLOT_RECEIVING &&
                                    (int)FT_SLOT_VERIFIED == (int)FT_WIRE_SLOT_VERIFIED &&
                                    (int)FT_SLOT_TESTING == (int)FT_WIRE_SLOT_TESTING &&
                                    (int)FT_SLOT_CONFIRMED == (int)FT_WIRE_SLOT_CONFIRMED &&
                                    (int)FT_KIND_HEAD_PATCH == (int)FT_WIRE_KIND_HEAD_PATCH &&
                                    (int)FT_KIND_TFLITE == (int)FT_WIRE_KIND_TFLITE && FT_NO_SLOT == FT_WIRE_NO_SLOT &&
                                    FT_MAX_EPOCHS <= FT_TRAIN_MAX_EPOCHS && FT_MAX_TRAIN_WORK <= FT_TRAIN_MAX_WORK &&
                                    FT_MAX_PAYLOAD <= FT_WIRE_MAX_PAYLOAD && FT_MAX_PAYLOAD >= FT_WIRE_MIN_MAX_PAYLOAD &&
                                    FT_HMAC_KEY_LEN == FT_TAG_SIZE && FT_CACHE_UNLABELLED == FT_UNLABELLED &&
                                    FT_CACHE_CAPACITY <= 65535)
                                       ? 1
                                       : -1];

/* The complete staged raw input (STAGE_INPUT, ft_learn.c) of `bytes` bytes, or NULL (none staged, incomplete, or of
 * another size; always NULL with FT_MAX_STAGED_INPUT 0). */
const uint8_t *ftd_staged_input(const ft_dev *d, uint32_t bytes);

/* 1 if this build and port can run full images (interpreter compiled in, slots readable in place). */
int ftd_full_image_ok(void);

#if FT_BACKBONE
/* The running model (ft_dev_model.c). Verify the full image in `slot` in place (SHA-256 of flash, the
 * interpreter's checks, the head) and take its head into out (may be NULL); a protocol status, the reason in
 * ftd_model_why(). */
uint8_t ftd_load_model(ft_dev *d, uint8_t slot, ft_head *out);
const char *ftd_model_why(void);
/* Boot with d->factory_model: verify it; without a factory_patch, its own head becomes the factory head. */
ft_status ftd_factory_boot(ft_dev *d);
/* The running full image's model, or NULL (a head patch or the factory head runs). */
const ft_tfl_model *ftd_backbone(ft_dev *d);
/* One raw sample (kind 1 int8, kind 2 float32) through the backbone; *feat = the head's D int8 inputs. */
ft_status ftd_run_backbone(const ft_tfl_model *m, uint8_t kind, const uint8_t *sample, const int8_t **feat);
/* INFER: the model's ops after the head on the running head h's int8 logits y[C] into out (C int8, or C float32 LE
 * when *type = FT_INFER_OUT_FLOAT32); y == NULL only checks them. A protocol status, reason in ftd_model_why(). */
uint8_t ftd_run_tail(const ft_tfl_model *m, const ft_head *h, const int8_t *y, uint8_t *out, uint8_t *type);
#endif

#endif
