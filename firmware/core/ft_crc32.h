/* CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320, init/xorout 0xFFFFFFFF): same as zlib.crc32 / binascii.crc32. */
#ifndef FT_CRC32_H
#define FT_CRC32_H
#include <stddef.h>
#include <stdint.h>

/* Streaming: crc = ft_crc32_update(0, a, n); crc = ft_crc32_update(crc, b, m); (like zlib.crc32(data, crc)) */
uint32_t ft_crc32_update(uint32_t crc, const void *data, size_t len);
uint32_t ft_crc32(const void *data, size_t len);

#endif
