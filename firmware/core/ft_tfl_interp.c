/* The int8 TFLite interpreter's generic part (ft_tfl_interp.h): the flatbuffer, tensors, operators' inputs and
 * outputs, the arena plan and the invoke loop. Each op is one registration (parse, verify, plan, invoke) in its own
 * file, core/ops/ft_op_<name>.c, listed once in ft_tfl_op_list.h (scripts/gen_ops.py from
 * fedtiny/model/ops_table.py); shared verification helpers: ft_tfl_op_util.c. */
#include "ft_tfl_op.h"
#include "ft_tfl_ops_dsp.h" /* FT_TFL_DSP_NONE */
#include <string.h>

#define FT_TFL_REG_ENTRY(code, name, reg) &reg,
const ft_tfl_op_reg *const ft_tfl_op_regs[FT_TFL_N_OPS] = {FT_TFL_OPS(FT_TFL_REG_ENTRY)};
#undef FT_TFL_REG_ENTRY

/* the registry index of a builtin code, or -1: an op this firmware does not run */
static int find_op(uint32_t code)
{
    int k;
    for (k = 0; k < FT_TFL_N_OPS; k++)
        if (ft_tfl_op_regs[k]->code == code) return k;
    return -1;
}

#define FT_TFL_NAME_ENTRY(code, name) {code, name},
static const struct {
    uint8_t code;
    const char *name;
} op_names[] = {FT_TFL_BUILTIN_NAMES(FT_TFL_NAME_ENTRY)};
#undef FT_TFL_NAME_ENTRY

const char *ft_tfl_op_name(uint32_t code, char *buf, size_t size)
{
    size_t i;
    ft_tfl_sbuf b;
    for (i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (op_names[i].code == code) return op_names[i].name;
    b.s = buf;
    b.n = 0;
    b.cap = size;
    if (size) buf[0] = 0;
    ft_tfl_sb_str(&b, "BUILTIN_");
    ft_tfl_sb_num(&b, code);
    return buf;
}

typedef ft_tfl_vctx vctx;
#define REFUSE FT_REFUSE
#define REFUSE_N FT_REFUSE_N
#define RD FT_RD

static ft_status read_tensor(vctx *v, uint32_t tt, const ft_fb_vec *buffers, uint16_t idx)
{
    ft_tfl_tensor *t = &v->m->tensors[idx];
    ft_fb_vec shape, data, vscale, vzp;
    uint32_t buffer, q, bt, k, esize;
    uint64_t count = 1;
    uint8_t is_var;
    memset(t, 0, sizeof *t);
    t->first = t->last = -1;
    t->buf = (int16_t)idx;
    RD(ft_fb_vector(&v->fb, tt, 0, 4, &shape));
    RD(ft_fb_u8(&v->fb, tt, 1, 0, &t->type));
    RD(ft_fb_u32(&v->fb, tt, 2, 0, &buffer));
    RD(ft_fb_u8(&v->fb, tt, 5, 0, &is_var));
    if (is_var) REFUSE_N(FT_ERR_UNSUPPORTED, "variable tensor", idx);
    if (shape.n > FT_TFL_MAX_DIMS) REFUSE_N(FT_ERR_UNSUPPORTED, "tensor rank above 4: tensor", idx);
    t->rank = (uint8_t)shape.n;
    for (k = 0; k < shape.n; k++) {
        int32_t d = ft_fb_rd_i32(&v->fb, shape.pos + 4u * k);
        if (d < 1) REFUSE_N(FT_ERR_UNSUPPORTED, "dynamic or empty dimension in tensor", idx);
        t->dims[k] = d;
        count *= (uint64_t)d;
        if (count > 0x7FFFFFFFu) REFUSE_N(FT_ERR_RANGE, "tensor too large:", idx);
    }
    esize = ft_tfl_type_size(t->type);
    if (esize == 0) {
        t->bytes = 0; /* a type no supported op takes: refused where an op uses it */
    } else if (count * esize > 0x7FFFFFFFu) {
        REFUSE_N(FT_ERR_RANGE, "tensor too large:", idx);
    } else {
        t->bytes = (uint32_t)(count * esize);
    }
    t->count = (uint32_t)count;
    if (buffer >= buffers->n) REFUSE_N(FT_ERR_FORMAT, "buffer index out of range in tensor", idx);
    RD(ft_fb_vec_table(&v->fb, buffers, buffer, &bt));
    RD(ft_fb_vector(&v->fb, bt, 0, 1, &data));
    {
        uint64_t off, size;
        RD(ft_fb_u64(&v->fb, bt, 1, 0, &off));
        RD(ft_fb_u64(&v->fb, bt, 2, 0, &size));
        if (off > 1 || size > 0) REFUSE(FT_ERR_UNSUPPORTED, "buffer stored outside the flatbuffer (>2 GB layout)");
    }
    if (data.n > 0) {
        if (esize == 0 || data.n != t->bytes) REFUSE_N(FT_ERR_FORMAT, "constant buffer size mismatch in tensor", idx);
        t->is_const = 1;
        t->ready = 1;
        t->data = v->fb.buf + data.pos;
    }
    RD(ft_fb_table(&v->fb, tt, 4, &q));
    t->scale = 0.0f;
    t->zp = 0;
    if (q) {
        RD(ft_fb_vector(&v->fb, q, 2, 4, &vscale));
        RD(ft_fb_vector(&v->fb, q, 3, 8, &vzp));
        RD(ft_fb_i32(&v->fb, q, 6, 0, &t->qdim));
        if (vscale.n) {
            t->scales = v->fb.buf + vscale.pos;
            t->n_scales = vscale.n;
            t->scale = ft_fb_rd_f32(&v->fb, vscale.pos);
        }
        if (vzp.n) {
            int64_t z = ft_fb_rd_i64(&v->fb, vzp.pos);
            t->zps = v->fb.buf + vzp.pos;
            t->n_zps = vzp.n;
            t->zp = (z < -0x7FFFFFFF || z > 0x7FFFFFFF) ? 0x7FFFFFFF : (int32_t)z; /* refused where used */
        }
    }
    return FT_OK;
}
/* ---- operators ----------------------------------------------------------------------------------- */
static ft_status read_op(vctx *v, uint32_t ot, const ft_fb_vec *opcodes, uint16_t oi)
{
    ft_tfl_model *m = v->m;
    ft_tfl_op *op = &m->ops[oi];
    ft_fb_vec ins, outs;
    uint32_t opcode_index, oc, opt, k;
    uint8_t dep, opt_type;
    int32_t code;
    int reg;
    memset(op, 0, sizeof *op);
    op->in[0] = op->in[1] = op->in[2] = -1;
    v->op_index = oi;
    v->code = 0xFFFFFFFFu;
    RD(ft_fb_u32(&v->fb, ot, 0, 0, &opcode_index));
    if (opcode_index >= opcodes->n) REFUSE_N(FT_ERR_FORMAT, "opcode index out of range in op", oi);
    RD(ft_fb_vec_table(&v->fb, opcodes, opcode_index, &oc));
    RD(ft_fb_u8(&v->fb, oc, 0, 0, &dep));
    RD(ft_fb_i32(&v->fb, oc, 3, 0, &code));
    /* schema >= 3a: the real code is the larger of the deprecated int8 field and the int32 one */
    if ((int32_t)(int8_t)dep > code) code = (int8_t)dep;
    if (code < 0 || code > 255) REFUSE_N(FT_ERR_UNSUPPORTED, "unknown builtin operator", code);
    v->code = (uint32_t)code;
    op->code = (uint8_t)code;
    reg = find_op((uint32_t)code);
    if (reg < 0) REFUSE(FT_ERR_UNSUPPORTED, "operator not supported by this firmware");
    op->reg = (uint8_t)reg;
    RD(ft_fb_vector(&v->fb, ot, 1, 4, &ins));
    RD(ft_fb_vector(&v->fb, ot, 2, 4, &outs));
    RD(ft_fb_u8(&v->fb, ot, 3, 0, &opt_type));
    RD(ft_fb_table(&v->fb, ot, 4, &opt));
    if (outs.n != 1) REFUSE_N(FT_ERR_UNSUPPORTED, "outputs:", outs.n);
    if (ins.n < 1 || ins.n > 3) REFUSE_N(FT_ERR_UNSUPPORTED, "inputs:", ins.n);
    for (k = 0; k < ins.n; k++) {
        int32_t t = ft_fb_rd_i32(&v->fb, ins.pos + 4u * k);
        if (t < -1 || t >= m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "tensor index out of range:", t);
        if (t >= 0 && !m->tensors[t].ready) REFUSE_N(FT_ERR_FORMAT, "input computed later or never: tensor", t);
        op->in[k] = (int16_t)t;
    }
    if (op->in[0] < 0) REFUSE(FT_ERR_FORMAT, "missing input");
    {
        int32_t t = ft_fb_rd_i32(&v->fb, outs.pos);
        if (t < 0 || t >= m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "tensor index out of range:", t);
        if (m->tensors[t].ready) REFUSE_N(FT_ERR_FORMAT, "output is a constant, an input or computed twice: tensor", t);
        if (ft_tfl_type_size(m->tensors[t].type) == 0) REFUSE_N(FT_ERR_UNSUPPORTED, "output type", m->tensors[t].type);
        op->out = (int16_t)t;
    }
    {
        const ft_tfl_op_reg *r = ft_tfl_op_regs[reg];
        ft_tfl_opts o;
        memset(&o, 0, sizeof o);
        if (r->parse) FT_TRY(r->parse(v, opt, opt_type, &o));
        FT_TRY(r->verify(v, op, &o, ins.n));
    }
    m->tensors[op->out].ready = 1;
    return FT_OK;
}

/* ---- arena planning -------------------------------------------------------------------------------- */
static uint32_t align4(uint32_t x) { return (x + 3u) & ~3u; }

#if FT_TFL_OPTIMIZED
/* The DSP kernels' scratch (ft_tfl_ops_dsp.h): each op's own area, alive only while that op runs, placed in the
 * arena's gaps: the lowest offset clear of every buffer alive at that op (its inputs and output included). An op
 * whose scratch would push the arena past `limit` keeps the portable kernel (the same bytes, slower); an op whose
 * kernel needs none runs it always. Returns the new top. */
static uint64_t plan_scratch(ft_tfl_model *m, uint64_t top, uint64_t limit)
{
    uint16_t i, j;
    for (i = 0; i < m->n_ops; i++) {
        ft_tfl_op *op = &m->ops[i];
        const ft_tfl_op_reg *r = ft_tfl_op_regs[op->reg];
        uint64_t len = r->scratch ? r->scratch(op) : FT_TFL_DSP_NONE, off = 0;
        int moved = 1;
        if (len == FT_TFL_DSP_NONE) continue;
        if (len == 0) {
            op->dsp = 1;
            continue;
        }
        len = (len + 3u) & ~(uint64_t)3u;
        while (moved) {
            moved = 0;
            for (j = 0; j < m->n_tensors; j++) {
                const ft_tfl_tensor *u = &m->tensors[j];
                uint64_t end = (uint64_t)u->offset + align4(u->bytes);
                if (u->is_const || u->buf != (int16_t)j || u->first < 0 || u->first > (int16_t)i || u->last < (int16_t)i)
                    continue; /* not an arena buffer alive at op i */
                if (off < end && u->offset < off + len) {
                    off = end;
                    moved = 1;
                }
            }
        }
        if (off + len > limit) continue;
        op->dsp = 1;
        op->scratch_off = (uint32_t)off;
        op->scratch_len = (uint32_t)len;
        if (off + len > top) top = off + len;
    }
    return top;
}

#endif

/* ft_tfl_model.tflm_floor: what TFLite Micro's arena holds at least besides the same activations (its
 * GreedyMemoryPlanner, 16-byte aligned): each op's persistent buffers (ft_tfl_op.tflm_persist: an int32 multiplier
 * and shift per output channel of every CONV_2D / DEPTHWISE_CONV_2D and per-channel FULLY_CONNECTED), a
 * TfLiteEvalTensor per tensor (12 B on a 32-bit target) and a TfLiteNode per op (at least 6 pointers). */
static uint64_t tflm_floor(const ft_tfl_model *m, uint64_t activations)
{
    uint64_t f = activations + 12u * (uint64_t)m->n_tensors + 24u * (uint64_t)m->n_ops;
    uint16_t i;
    for (i = 0; i < m->n_ops; i++) f += m->ops[i].tflm_persist;
    return f;
}
/* ---- per-channel multipliers ------------------------------------------------------------------------ */
/* where op's multipliers come from: (double)in_scale * filter_scales[c] / out_scale */
static void requant_src(const ft_tfl_op *op, float *in_scale, float *out_scale, const uint8_t **scales, uint32_t *n)
{
    if (op->code == FT_TFL_OP_FULLY_CONNECTED) {
        *in_scale = op->p.fc.input_scale;
        *out_scale = op->p.fc.output_scale;
        *scales = op->p.fc.filter_scales;
        *n = op->p.fc.n_scales;
    } else {
        *in_scale = op->p.conv.input_scale;
        *out_scale = op->p.conv.output_scale;
        *scales = op->p.conv.filter_scales;
        *n = op->p.conv.n_scales;
    }
}

static uint32_t mix(uint32_t h, uint32_t x) { return (h ^ x) * 0x01000193u; } /* FNV-1a, a word at a time */
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The tables' places (after everything else, below `top`'s new value) and the stamp of what they hold: the
 * layout and every input of ft_tfl_requant_table, so a table written for another model or layout never matches. */
static uint64_t plan_requant(ft_tfl_model *m, uint64_t top)
{
    uint16_t i;
    uint32_t h = 0x811C9DC5u, k;
    m->requant_off = (uint32_t)((top + 3u) & ~(uint64_t)3u);
    m->requant_len = 0;
    for (i = 0; i < m->n_ops; i++) {
        ft_tfl_op *op = &m->ops[i];
        float in_s, out_s;
        const uint8_t *sc;
        uint32_t n;
        if (op->requant_n <= 0) continue;
        op->requant_off = m->requant_off + m->requant_len;
        m->requant_len += (FT_TFL_REQUANT_BYTES(op->requant_n) + 3u) & ~3u;
        requant_src(op, &in_s, &out_s, &sc, &n);
        h = mix(mix(mix(mix(mix(h, op->requant_off), (uint32_t)op->requant_n), f32_bits(in_s)), f32_bits(out_s)), n);
        for (k = 0; k < 4u * n; k++) h = mix(h, sc[k]);
    }
    m->requant_stamp = h;
    return m->requant_len ? (uint64_t)m->requant_off + m->requant_len + 4u : top;
}

#if FT_TFL_OPTIMIZED
/* bytes the tables and their stamp take (a first pass: the scratch is planned below them) */
static uint32_t requant_bytes(const ft_tfl_model *m)
{
    uint16_t i;
    uint64_t n = 0;
    for (i = 0; i < m->n_ops; i++)
        if (m->ops[i].requant_n > 0) n += (FT_TFL_REQUANT_BYTES(m->ops[i].requant_n) + 3u) & ~3u;
    n = n ? n + 4u + 3u : 0u; /* the stamp, and the alignment of the tables' start */
    return n > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)n;
}
#endif

/* Fills the tables unless the arena's stamp says they are there (the first invoke on this arena computes them). */
static void ensure_requant(const ft_tfl_model *m, uint8_t *arena)
{
    uint16_t i;
    uint32_t stamp;
    if (!m->requant_len) return;
    memcpy(&stamp, arena + m->requant_off + m->requant_len, 4);
    if (stamp == m->requant_stamp) return;
    for (i = 0; i < m->n_ops; i++) {
        const ft_tfl_op *op = &m->ops[i];
        float in_s, out_s;
        const uint8_t *sc;
        uint32_t n;
        if (op->requant_n <= 0) continue;
        requant_src(op, &in_s, &out_s, &sc, &n);
        ft_tfl_requant_table(in_s, sc, n, op->requant_n, out_s, arena + op->requant_off);
    }
    memcpy(arena + m->requant_off + m->requant_len, &m->requant_stamp, 4);
}

/* Lifetimes per buffer, then greedy placement (largest first, lowest offset that does not overlap a
 * placed buffer alive at the same time): TFLite Micro's GreedyMemoryPlanner strategy, over activations
 * (TFLM's arena also holds its tensor/node structs, here in ft_tfl_model), then the DSP kernels' scratch, then
 * the per-channel multipliers' tables (TFLM's persistent buffers), counted in arena_bytes too. */
static ft_status plan(vctx *v, uint32_t capacity)
{
    ft_tfl_model *m = v->m;
    uint16_t i, j, n = 0, k;
    uint64_t top = 0;
    for (i = 0; i < m->n_ops; i++) {
        const ft_tfl_op *op = &m->ops[i];
        ft_tfl_tensor *o = &m->tensors[op->out];
        /* an in-place op (RESHAPE) writes nothing new: its output is the input's buffer */
        if (ft_tfl_op_regs[op->reg]->in_place && !m->tensors[op->in[0]].is_const) o->buf = m->tensors[op->in[0]].buf;
        for (k = 0; k < 3; k++) {
            int16_t t = op->in[k];
            if (t >= 0 && !m->tensors[t].is_const) {
                ft_tfl_tensor *b = &m->tensors[m->tensors[t].buf];
                if (b->first < 0) b->first = 0; /* a graph input */
                if (b->last < (int16_t)i) b->last = (int16_t)i;
            }
        }
        {
            ft_tfl_tensor *b = &m->tensors[o->buf];
            if (b->first < 0 || b->first > (int16_t)i) b->first = (int16_t)i;
            if (b->last < (int16_t)i) b->last = (int16_t)i;
        }
    }
    for (i = 0; i < m->n_inputs; i++) {
        ft_tfl_tensor *b = &m->tensors[m->tensors[m->inputs[i]].buf];
        if (b->first < 0) b->first = 0;
        if (b->last < 0) b->last = 0;
    }
    for (i = 0; i < m->n_outputs; i++) {
        ft_tfl_tensor *b = &m->tensors[m->tensors[m->outputs[i]].buf];
        if (m->tensors[m->outputs[i]].is_const) continue;
        b->last = (int16_t)m->n_ops; /* the caller reads it after the last op */
        if (b->first < 0) b->first = 0;
    }
    /* a buffer's size: the largest tensor it holds (aliases have the same bytes) */
    for (i = 0; i < m->n_tensors; i++) {
        ft_tfl_tensor *t = &m->tensors[i];
        if (!t->is_const && t->buf == (int16_t)i && t->first >= 0) {
            /* insertion sort by size, descending; ties by index keep the plan deterministic */
            for (j = n; j > 0 && m->tensors[m->order[j - 1]].bytes < t->bytes; j--) m->order[j] = m->order[j - 1];
            m->order[j] = (int16_t)i;
            n++;
        }
    }
    for (i = 0; i < n; i++) {
        ft_tfl_tensor *t = &m->tensors[m->order[i]];
        uint32_t size = align4(t->bytes), off = 0;
        int moved = 1;
        /* raise the candidate past every conflicting placed buffer until none overlaps */
        while (moved) {
            moved = 0;
            for (j = 0; j < i; j++) {
                const ft_tfl_tensor *u = &m->tensors[m->order[j]];
                if (u->last < t->first || t->last < u->first) continue; /* not alive together */
                if (off < u->offset + align4(u->bytes) && u->offset < off + size) {
                    off = u->offset + align4(u->bytes);
                    moved = 1;
                }
            }
        }
        t->offset = off;
        if ((uint64_t)off + size > top) top = (uint64_t)off + size;
    }
    for (i = 0; i < m->n_tensors; i++) {
        ft_tfl_tensor *t = &m->tensors[i];
        if (!t->is_const) t->offset = m->tensors[t->buf].offset;
    }
    {
        uint64_t fl = tflm_floor(m, top);
        m->tflm_floor = fl > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)fl;
    }
#if FT_TFL_OPTIMIZED
    {
        uint64_t q = requant_bytes(m), limit = capacity < m->tflm_floor ? capacity : m->tflm_floor;
        top = plan_scratch(m, top, limit > q ? limit - q : 0u);
    }
#endif
    top = plan_requant(m, top);
    m->arena_bytes = (uint32_t)top;
    v->code = 0xFFFFFFFFu;
    if (top > capacity) {
        ft_tfl_refuse(v, FT_ERR_RANGE, "arena needs", (int64_t)top, 1);
        ft_tfl_sb_str(&v->why, " bytes > ");
        ft_tfl_sb_num(&v->why, capacity);
        return FT_ERR_RANGE;
    }
    return FT_OK;
}

static ft_status read_io(vctx *v, uint32_t sg, unsigned id, int16_t *list, uint16_t *n, int is_input)
{
    ft_fb_vec vec;
    uint32_t k;
    RD(ft_fb_vector(&v->fb, sg, id, 4, &vec));
    if (vec.n < 1 || vec.n > FT_TFL_MAX_IO) REFUSE_N(FT_ERR_UNSUPPORTED, is_input ? "graph inputs:" : "graph outputs:", vec.n);
    for (k = 0; k < vec.n; k++) {
        int32_t t = ft_fb_rd_i32(&v->fb, vec.pos + 4u * k);
        if (t < 0 || t >= v->m->n_tensors) REFUSE_N(FT_ERR_FORMAT, "graph input/output index out of range:", t);
        if (ft_tfl_type_size(v->m->tensors[t].type) == 0) REFUSE_N(FT_ERR_UNSUPPORTED, "graph input/output type", v->m->tensors[t].type);
        list[k] = (int16_t)t;
    }
    *n = (uint16_t)vec.n;
    return FT_OK;
}

ft_status ft_tfl_verify(ft_tfl_model *m, const uint8_t *image, uint32_t len, uint32_t arena_capacity)
{
    vctx vc, *v = &vc;
    uint32_t root, sg, version, k;
    ft_fb_vec opcodes, subgraphs, buffers, tensors, ops;
    ft_status st;
    if (!m || !image) return FT_ERR_ARG;
    memset(m, 0, sizeof *m);
    m->optimized = FT_TFL_OPTIMIZED;
    v->m = m;
    v->fb.buf = image;
    v->fb.len = len;
    v->why.s = m->reason;
    v->why.n = 0;
    v->why.cap = sizeof m->reason;
    v->code = 0xFFFFFFFFu;
    v->op_index = 0;
    if (ft_fb_root(&v->fb, &root) != FT_OK || !ft_fb_has_ident(&v->fb, "TFL3"))
        return ft_tfl_refuse(v, FT_ERR_FORMAT, "not a .tflite flatbuffer", 0, 0);
    RD(ft_fb_u32(&v->fb, root, 0, 0, &version));
    if (version != 3) REFUSE_N(FT_ERR_UNSUPPORTED, "schema version", version);
    RD(ft_fb_vector(&v->fb, root, 1, 4, &opcodes));
    RD(ft_fb_vector(&v->fb, root, 2, 4, &subgraphs));
    RD(ft_fb_vector(&v->fb, root, 4, 4, &buffers));
    if (subgraphs.n != 1) REFUSE_N(FT_ERR_UNSUPPORTED, "subgraphs (control flow):", subgraphs.n);
    RD(ft_fb_vec_table(&v->fb, &subgraphs, 0, &sg));
    RD(ft_fb_vector(&v->fb, sg, 0, 4, &tensors));
    RD(ft_fb_vector(&v->fb, sg, 3, 4, &ops));
    if (tensors.n > FT_TFL_MAX_TENSORS) {
        ft_tfl_refuse(v, FT_ERR_RANGE, "tensors", tensors.n, 1);
        ft_tfl_sb_str(&v->why, " > FT_TFL_MAX_TENSORS ");
        ft_tfl_sb_num(&v->why, FT_TFL_MAX_TENSORS);
        return FT_ERR_RANGE;
    }
    if (ops.n > FT_TFL_MAX_OPS) {
        ft_tfl_refuse(v, FT_ERR_RANGE, "operators", ops.n, 1);
        ft_tfl_sb_str(&v->why, " > FT_TFL_MAX_OPS ");
        ft_tfl_sb_num(&v->why, FT_TFL_MAX_OPS);
        return FT_ERR_RANGE;
    }
    if (ops.n == 0) REFUSE(FT_ERR_FORMAT, "no operators");
    m->n_tensors = (uint16_t)tensors.n;
    m->n_ops = (uint16_t)ops.n;
    for (k = 0; k < tensors.n; k++) {
        uint32_t tt;
        RD(ft_fb_vec_table(&v->fb, &tensors, k, &tt));
        FT_TRY(read_tensor(v, tt, &buffers, (uint16_t)k));
    }
    FT_TRY(read_io(v, sg, 1, m->inputs, &m->n_inputs, 1));
    FT_TRY(read_io(v, sg, 2, m->outputs, &m->n_outputs, 0));
    for (k = 0; k < m->n_inputs; k++) {
        ft_tfl_tensor *t = &m->tensors[m->inputs[k]];
        if (t->is_const) REFUSE(FT_ERR_FORMAT, "a graph input is a constant");
        t->ready = 1;
    }
    for (k = 0; k < ops.n; k++) {
        uint32_t ot;
        RD(ft_fb_vec_table(&v->fb, &ops, k, &ot));
        FT_TRY(read_op(v, ot, &opcodes, (uint16_t)k));
    }
    v->code = 0xFFFFFFFFu;
    for (k = 0; k < m->n_outputs; k++)
        if (!m->tensors[m->outputs[k]].ready) REFUSE_N(FT_ERR_FORMAT, "graph output never computed: tensor", m->outputs[k]);
    if (m->macs > FT_TFL_MAX_MACS) {
        ft_tfl_refuse(v, FT_ERR_RANGE, "multiply-accumulates", (int64_t)m->macs, 1);
        ft_tfl_sb_str(&v->why, " > FT_TFL_MAX_MACS ");
        ft_tfl_sb_num(&v->why, FT_TFL_MAX_MACS);
        return FT_ERR_RANGE;
    }
    st = plan(v, arena_capacity);
    if (st != FT_OK) return st;
    m->image = image;
    m->image_len = len;
    m->reason[0] = 0;
    return FT_OK;
}
/* ---- invoke -------------------------------------------------------------------------------------- */
const uint8_t *ft_tfl_tensor_data(const ft_tfl_model *m, unsigned idx, const uint8_t *arena)
{
    const ft_tfl_tensor *t;
    if (!m || idx >= m->n_tensors) return NULL;
    t = &m->tensors[idx];
    return t->is_const ? t->data : arena + t->offset;
}

uint8_t *ft_tfl_input(const ft_tfl_model *m, unsigned i, uint8_t *arena, uint32_t *bytes, const ft_tfl_tensor **t)
{
    const ft_tfl_tensor *x;
    if (!m || !arena || i >= m->n_inputs) return NULL;
    x = &m->tensors[m->inputs[i]];
    if (bytes) *bytes = x->bytes;
    if (t) *t = x;
    return arena + x->offset;
}

const uint8_t *ft_tfl_output(const ft_tfl_model *m, unsigned i, const uint8_t *arena, uint32_t *bytes,
                             const ft_tfl_tensor **t)
{
    const ft_tfl_tensor *x;
    if (!m || !arena || i >= m->n_outputs) return NULL;
    x = &m->tensors[m->outputs[i]];
    if (bytes) *bytes = x->bytes;
    if (t) *t = x;
    return ft_tfl_tensor_data(m, (unsigned)m->outputs[i], arena);
}

ft_status ft_tfl_invoke(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, ft_tfl_op_cb cb, void *ctx)
{
    return ft_tfl_invoke_until(m, arena, arena_size, m ? m->n_ops : 0u, cb, ctx);
}
ft_status ft_tfl_invoke_until(const ft_tfl_model *m, uint8_t *arena, uint32_t arena_size, uint16_t end, ft_tfl_op_cb cb,
                              void *ctx)
{
    uint16_t i;
    if (!m || !arena || !m->image || end > m->n_ops) return FT_ERR_ARG;
    if (arena_size < m->arena_bytes) return FT_ERR_NOSPACE;
    ensure_requant(m, arena);
    for (i = 0; i < end; i++) {
        const ft_tfl_op *op = &m->ops[i];
        if (op->reg >= FT_TFL_N_OPS) return FT_ERR_STATE; /* verify admits only registered ops */
        FT_TRY(ft_tfl_op_regs[op->reg]->invoke(m, op, arena));
        if (cb) cb(ctx, m, i, arena);
    }
    return FT_OK;
}
