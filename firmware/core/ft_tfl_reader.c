#include "ft_tfl_reader.h"
#include <string.h>

static uint16_t rd16(const ft_fb *fb, uint32_t pos) { return (uint16_t)(fb->buf[pos] | (fb->buf[pos + 1] << 8)); }

int64_t ft_fb_rd_i64(const ft_fb *fb, uint32_t pos)
{
    uint64_t u = (uint64_t)ft_fb_rd_u32(fb, pos) | ((uint64_t)ft_fb_rd_u32(fb, pos + 4) << 32);
    return u <= 0x7FFFFFFFFFFFFFFFull ? (int64_t)u : -(int64_t)(0xFFFFFFFFFFFFFFFFull - u) - 1;
}

float ft_fb_rd_f32(const ft_fb *fb, uint32_t pos)
{
    uint32_t u = ft_fb_rd_u32(fb, pos);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* [pos, pos+n) inside the image, without overflow. */
static int in_image(const ft_fb *fb, uint64_t pos, uint64_t n) { return pos <= fb->len && n <= fb->len - pos; }

/* A table: its soffset, vtable and declared inline size all inside the image. */
static ft_status check_table(const ft_fb *fb, uint32_t table)
{
    int64_t vt;
    uint16_t vt_size, t_size;
    if (table == 0 || !in_image(fb, table, 4)) return FT_ERR_FORMAT;
    vt = (int64_t)table - (int64_t)ft_fb_rd_i32(fb, table);
    if (vt < 0 || !in_image(fb, (uint64_t)vt, 4)) return FT_ERR_FORMAT;
    vt_size = rd16(fb, (uint32_t)vt);
    t_size = rd16(fb, (uint32_t)vt + 2);
    if (vt_size < 4 || (vt_size & 1u) || !in_image(fb, (uint64_t)vt, vt_size)) return FT_ERR_FORMAT;
    if (t_size < 4 || !in_image(fb, table, t_size)) return FT_ERR_FORMAT;
    return FT_OK;
}

ft_status ft_fb_root(const ft_fb *fb, uint32_t *table)
{
    uint32_t t;
    if (!fb || !fb->buf || !table) return FT_ERR_ARG;
    if (fb->len < 8) return FT_ERR_FORMAT;
    t = ft_fb_rd_u32(fb, 0);
    FT_TRY(check_table(fb, t));
    *table = t;
    return FT_OK;
}

int ft_fb_has_ident(const ft_fb *fb, const char ident[4]) { return fb->len >= 8 && memcmp(fb->buf + 4, ident, 4) == 0; }

ft_status ft_fb_field(const ft_fb *fb, uint32_t table, unsigned id, uint32_t size, uint32_t *pos)
{
    uint32_t vt;
    uint16_t vt_size, t_size, off;
    *pos = 0;
    FT_TRY(check_table(fb, table)); /* cheap; keeps every accessor safe on its own */
    vt = (uint32_t)((int64_t)table - (int64_t)ft_fb_rd_i32(fb, table));
    vt_size = rd16(fb, vt);
    t_size = rd16(fb, vt + 2);
    if (id > 200u || 4u + 2u * id + 2u > vt_size) return FT_OK; /* field newer than the writer: absent */
    off = rd16(fb, vt + 4u + 2u * id);
    if (off == 0) return FT_OK;
    if (off < 4u || (uint32_t)off + size > t_size) return FT_ERR_FORMAT;
    *pos = table + off;
    return FT_OK;
}

ft_status ft_fb_u8(const ft_fb *fb, uint32_t table, unsigned id, uint8_t dflt, uint8_t *out)
{
    uint32_t pos;
    FT_TRY(ft_fb_field(fb, table, id, 1, &pos));
    *out = pos ? fb->buf[pos] : dflt;
    return FT_OK;
}

ft_status ft_fb_i32(const ft_fb *fb, uint32_t table, unsigned id, int32_t dflt, int32_t *out)
{
    uint32_t pos;
    FT_TRY(ft_fb_field(fb, table, id, 4, &pos));
    *out = pos ? ft_fb_rd_i32(fb, pos) : dflt;
    return FT_OK;
}

ft_status ft_fb_u32(const ft_fb *fb, uint32_t table, unsigned id, uint32_t dflt, uint32_t *out)
{
    uint32_t pos;
    FT_TRY(ft_fb_field(fb, table, id, 4, &pos));
    *out = pos ? ft_fb_rd_u32(fb, pos) : dflt;
    return FT_OK;
}

ft_status ft_fb_u64(const ft_fb *fb, uint32_t table, unsigned id, uint64_t dflt, uint64_t *out)
{
    uint32_t pos;
    FT_TRY(ft_fb_field(fb, table, id, 8, &pos));
    *out = pos ? ((uint64_t)ft_fb_rd_u32(fb, pos) | ((uint64_t)ft_fb_rd_u32(fb, pos + 4) << 32)) : dflt;
    return FT_OK;
}

ft_status ft_fb_f32(const ft_fb *fb, uint32_t table, unsigned id, float dflt, float *out)
{
    uint32_t pos;
    FT_TRY(ft_fb_field(fb, table, id, 4, &pos));
    *out = pos ? ft_fb_rd_f32(fb, pos) : dflt;
    return FT_OK;
}

/* Follows the uoffset stored at `pos` (already checked to hold 4 bytes). */
static ft_status deref(const ft_fb *fb, uint32_t pos, uint32_t *target)
{
    uint64_t t = (uint64_t)pos + ft_fb_rd_u32(fb, pos);
    if (t == 0 || t >= fb->len) return FT_ERR_FORMAT;
    *target = (uint32_t)t;
    return FT_OK;
}

ft_status ft_fb_table(const ft_fb *fb, uint32_t table, unsigned id, uint32_t *sub)
{
    uint32_t pos, t;
    *sub = 0;
    FT_TRY(ft_fb_field(fb, table, id, 4, &pos));
    if (!pos) return FT_OK;
    FT_TRY(deref(fb, pos, &t));
    FT_TRY(check_table(fb, t));
    *sub = t;
    return FT_OK;
}

ft_status ft_fb_vector(const ft_fb *fb, uint32_t table, unsigned id, uint32_t elem_size, ft_fb_vec *vec)
{
    uint32_t pos, v, n;
    vec->pos = 0;
    vec->n = 0;
    FT_TRY(ft_fb_field(fb, table, id, 4, &pos));
    if (!pos) return FT_OK;
    FT_TRY(deref(fb, pos, &v));
    if (!in_image(fb, v, 4)) return FT_ERR_FORMAT;
    n = ft_fb_rd_u32(fb, v);
    if (!in_image(fb, (uint64_t)v + 4u, (uint64_t)n * elem_size)) return FT_ERR_FORMAT;
    vec->pos = v + 4u;
    vec->n = n;
    return FT_OK;
}

ft_status ft_fb_vec_table(const ft_fb *fb, const ft_fb_vec *vec, uint32_t i, uint32_t *table)
{
    uint32_t t;
    if (i >= vec->n) return FT_ERR_FORMAT;
    FT_TRY(deref(fb, vec->pos + 4u * i, &t));
    FT_TRY(check_table(fb, t));
    *table = t;
    return FT_OK;
}
