/* A small int8 TFLite interpreter, bit-exact with TFLite Micro's reference kernels.
 *
 * ft_tfl_verify() parses a .tflite image with the bounds-checked reader (ft_tfl_reader.h), checks every
 * tensor, buffer, operator, shape and quantization parameter, refuses what the firmware cannot run with a
 * reason naming the op or the limit (FT_ERR_UNSUPPORTED / FT_ERR_RANGE / FT_ERR_FORMAT), precomputes the
 * kernels' parameters and plans the activation arena (tensor lifetimes -> offsets, greedy packing by size,
 * RESHAPE in place). ft_tfl_invoke() then runs the model from one caller-provided arena: no malloc,
 * weights read in place from the image (which must stay valid and unchanged while the model is used). */
#ifndef FT_TFL_INTERP_H
#define FT_TFL_INTERP_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_status.h"
#include "ft_tfl_ops.h"

/* tflite TensorType values the interpreter knows */
enum { FT_TFL_FLOAT32 = 0, FT_TFL_INT32 = 2, FT_TFL_INT64 = 4, FT_TFL_INT8 = 9 };

#define FT_TFL_MAX_DIMS 4

typedef struct {
    int32_t dims[FT_TFL_MAX_DIMS];
    uint32_t count;          /* elements */
    uint32_t bytes;
    uint32_t offset;         /* activations: offset in the arena (planned) */
    const uint8_t *data;     /* constants: the buffer inside the image; NULL for activations */
    float scale;             /* per-tensor quantization (first scale) */
    int32_t zp;
    const uint8_t *scales;   /* float32 LE vector in the image (per-channel filters), n_scales entries */
    const uint8_t *zps;      /* int64 LE vector in the image, n_zps entries */
    uint32_t n_scales, n_zps;
    int32_t qdim;            /* quantized_dimension */
    int16_t first, last;     /* lifetime: first producing / last consuming op */
    int16_t buf;             /* arena buffer: itself, or the tensor it aliases (RESHAPE) */
    uint8_t type, rank, is_const, ready;
} ft_tfl_tensor;

typedef struct {
    uint8_t code; /* tflite BuiltinOperator */
    uint8_t reg;  /* its registration: index in the op registry (ft_tfl_op.h, ft_tfl_op_list.h) */
    int16_t in[3];
    int16_t out;
    uint32_t scratch_off, scratch_len; /* the DSP kernel's scratch in the arena (when dsp; len 0: none) */
    uint8_t dsp;                       /* 1: the DSP kernel runs (FT_TFL_OPTIMIZED, m->optimized), else the portable one */
    uint32_t tflm_persist;             /* persistent bytes TFLite Micro's kernel allocates for it (its per-channel
                                        * multipliers and shifts: 8 B per channel), for ft_tfl_model.tflm_floor */
    uint32_t requant_off;              /* its channels' multipliers in the arena (ft_tfl_requant_table) */
    int32_t requant_n;                 /* its table's entries (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: out_c, 1 for per-tensor weights); 0: none */
    union {
        ft_tfl_conv_params conv;
        ft_tfl_fc_params fc;
        ft_tfl_pool_params pool;
        ft_tfl_add_params add;
        ft_tfl_mean_params mean;
        ft_tfl_pad_params pad;
        ft_tfl_softmax_params softmax;
    } p;
} ft_tfl_op;

typedef struct {
    const uint8_t *image;
    uint32_t image_len;
    uint16_t n_tensors, n_ops, n_inputs, n_outputs;
    int16_t inputs[FT_TFL_MAX_IO], outputs[FT_TFL_MAX_IO];
    uint32_t arena_bytes; /* activation arena the plan needs (with the DSP kernels' scratch and the multipliers) */
    uint32_t tflm_floor;  /* a lower bound of the arena TFLite Micro needs for the model (32-bit build): its planned
                           * activations, per-channel multipliers (8 B per conv channel), one TfLiteEvalTensor (12 B)
                           * per tensor and a node (24 B) per op. The DSP kernels' scratch may grow the arena up to
                           * this figure only: an op whose scratch would pass it keeps the portable kernel */
    /* The per-channel multipliers' tables: every op's at the arena's top, [requant_off, requant_off + requant_len),
     * then a 4-byte stamp. Written at the first invoke on an arena (or when the stamp there is not requant_stamp:
     * another model's, or anything else), then read by every invoke, as TFLite Micro's Prepare fills its
     * persistent arena once: between invokes the arena belongs to the model, its inputs aside. */
    uint32_t requant_off, requant_len, requant_stamp;
    uint8_t optimized;    /* 1: ops with scratch run the DSP kernels (FT_TFL_OPTIMIZED); a test may clear it */
    uint64_t macs;        /* multiply-accumulates (and element operations) per inference */
    ft_tfl_tensor tensors[FT_TFL_MAX_TENSORS];
    ft_tfl_op ops[FT_TFL_MAX_OPS];
    int16_t order[FT_TFL_MAX_TENSORS]; /* planner work space */
    char reason[FT_TFL_REASON_LEN];    /* why verify refused the image ("" when accepted) */
} ft_tfl_model;

/* Verify `image` (len bytes) and plan its arena; refuses a plan larger than arena_capacity (FT_ERR_RANGE).
 * On failure m->reason says why, naming the op / tensor / limit. */
ft_status ft_tfl_verify(ft_tfl_model *m, const uint8_t *image, uint32_t len, uint32_t arena_capacity);

/* Called after each op (tests compare every intermediate tensor; the arena is the live one). */
typedef void (*ft_tfl_op_cb)(void *ctx, const ft_tfl_model *m, uint16_t op_index, const uint8_t *arena);

/* Run the verified model. The inputs must have been written (ft_tfl_input) into this arena. */
ft_status ft_tfl_invoke(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, ft_tfl_op_cb cb, void *ctx);

/* Run ops [0, end) only (end <= n_ops): every tensor an op before `end` reads or writes is then as after a
 * full invoke up to that point, so the inputs of op `end` (e.g. a head's features) are in the arena. */
ft_status ft_tfl_invoke_until(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, uint16_t end, ft_tfl_op_cb cb,
                              void *ctx);

/* Input / output i in the arena (NULL if i is out of range); *bytes = its size, *t = its tensor (optional). */
uint8_t *ft_tfl_input(const ft_tfl_model *m, unsigned i, uint8_t *arena, uint32_t *bytes, const ft_tfl_tensor **t);
const uint8_t *ft_tfl_output(const ft_tfl_model *m, unsigned i, const uint8_t *arena, uint32_t *bytes,
                             const ft_tfl_tensor **t);
/* Data of tensor idx: in the image (constant) or in the arena. NULL for a bad index. */
const uint8_t *ft_tfl_tensor_data(const ft_tfl_model *m, unsigned idx, const uint8_t *arena);

/* "CONV_2D", ... or "BUILTIN_<n>" into buf (size >= 24). */
const char *ft_tfl_op_name(uint32_t code, char *buf, size_t size);

#endif
