/* The port header: everything the portable core needs from a board. A port is one C file (plus its
 * startup/build glue) implementing these functions; the core never touches hardware itself. */
#ifndef FT_PORT_H
#define FT_PORT_H

#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

/* Link bytes. read: up to cap bytes, non-blocking or with a short timeout; *got = 0 when none. */
ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got);
/* write: all len bytes (blocking). */
ft_status ft_port_write(const uint8_t *buf, size_t len);

/* Flash: offsets are from the start of fedtiny's flash region of FT_FLASH_SIZE bytes.
 * erase: whole pages (offset, len multiples of FT_FLASH_PAGE_SIZE) to 0xFF.
 * write: NOR semantics (bits only go 1 -> 0), offset and len multiples of FT_FLASH_WRITE_ALIGN. */
ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len);
ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len);
ft_status ft_port_flash_erase(uint32_t offset, size_t len);
/* The flash region memory-mapped for reading in place: a pointer to byte `offset` valid for len bytes, or NULL
 * where the port cannot map it (then full .tflite images are refused: the interpreter reads a model's weights
 * from its slot without a copy). Host and QEMU: the simulated flash in RAM; nRF52840: its memory-mapped
 * flash; ESP32: esp_partition_mmap. */
const uint8_t *ft_port_flash_map(uint32_t offset, size_t len);

/* Milliseconds since boot (monotonic, wraps). */
uint32_t ft_port_millis(void);

/* Diagnostics: a line of text to a debug channel (not the link). May be a no-op. */
void ft_port_log(const char *msg);

/* Device identity (for HELLO/INFO): a NUL-terminated board name, and a 32-bit id. */
const char *ft_port_board_name(void);
uint32_t ft_port_device_id(void);

/* Reboot the board (after an update commit). Hosts may exit with a code the test harness expects. */
void ft_port_reset(void);

#endif
