/* A small bounds-checked FlatBuffers reader for the .tflite schema.
 *
 * A model image comes from a link upload into a flash slot: it is untrusted. Every accessor here checks
 * that what it reads (table, vtable, field, vector header and elements) lies inside the image before
 * reading it, and reports a status instead. All reads are byte-wise little-endian, so an image in flash
 * at any alignment is read in place. Positions are byte offsets from the start of the image; 0 means
 * "absent" (no valid table, vector or string can start at offset 0: the root offset lives there). */
#ifndef FT_TFL_READER_H
#define FT_TFL_READER_H
#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

typedef struct {
    const uint8_t *buf;
    uint32_t len;
} ft_fb;

typedef struct {
    uint32_t pos; /* first element; 0 when the vector is absent */
    uint32_t n;   /* element count */
} ft_fb_vec;

/* Root table of the image; checks the image is large enough and the table is well formed. */
ft_status ft_fb_root(const ft_fb *fb, uint32_t *table);
/* Optional file identifier check (bytes 4..7, "TFL3" for .tflite). */
int ft_fb_has_ident(const ft_fb *fb, const char ident[4]);

/* Field `id` of `table`: *pos = absolute position of its inline value, or 0 when absent. The field's
 * `size` bytes are checked to lie inside the table and the image. */
ft_status ft_fb_field(const ft_fb *fb, uint32_t table, unsigned id, uint32_t size, uint32_t *pos);

/* Scalars with the schema's default when the field is absent. */
ft_status ft_fb_u8(const ft_fb *fb, uint32_t table, unsigned id, uint8_t dflt, uint8_t *out);
ft_status ft_fb_i32(const ft_fb *fb, uint32_t table, unsigned id, int32_t dflt, int32_t *out);
ft_status ft_fb_u32(const ft_fb *fb, uint32_t table, unsigned id, uint32_t dflt, uint32_t *out);
ft_status ft_fb_u64(const ft_fb *fb, uint32_t table, unsigned id, uint64_t dflt, uint64_t *out);
ft_status ft_fb_f32(const ft_fb *fb, uint32_t table, unsigned id, float dflt, float *out);

/* Sub-table (0 when absent), checked like the root. */
ft_status ft_fb_table(const ft_fb *fb, uint32_t table, unsigned id, uint32_t *sub);
/* Vector of `elem_size`-byte scalars or offsets: header and all elements checked to lie in the image. */
ft_status ft_fb_vector(const ft_fb *fb, uint32_t table, unsigned id, uint32_t elem_size, ft_fb_vec *vec);
/* Element i of a vector of tables (the table is checked). */
ft_status ft_fb_vec_table(const ft_fb *fb, const ft_fb_vec *vec, uint32_t i, uint32_t *table);

/* Little-endian loads at a position already checked by the caller (vector element, field). */
static inline uint32_t ft_fb_rd_u32(const ft_fb *fb, uint32_t pos)
{
    const uint8_t *p = fb->buf + pos;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline int32_t ft_fb_rd_i32(const ft_fb *fb, uint32_t pos)
{
    uint32_t u = ft_fb_rd_u32(fb, pos);
    /* two's complement without relying on implementation-defined conversion */
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(0xFFFFFFFFu - u) - 1;
}
int64_t ft_fb_rd_i64(const ft_fb *fb, uint32_t pos);
float ft_fb_rd_f32(const ft_fb *fb, uint32_t pos);

#endif
