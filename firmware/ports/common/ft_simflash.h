/* Flash simulated in a RAM array with NOR semantics (erase -> 0xFF, write only clears bits), used by the
 * host port (mirrored to a file) and the QEMU port (flash emulated in RAM), and by the unit tests.
 * A power-cut hook: the N-th program/erase operation is applied only partly, and every flash operation
 * after it fails, as if the power had gone (tests then "reboot" by re-opening the store). */
#ifndef FT_SIMFLASH_H
#define FT_SIMFLASH_H
#include <stddef.h>
#include <stdint.h>
#include "ft_status.h"

extern uint8_t ft_simflash_mem[];

void ft_simflash_format(void);                     /* whole flash to 0xFF */
/* Arm the power cut at the n-th program/erase operation from now (1 = the next one); 0 disarms. */
void ft_simflash_cut_at(uint32_t n);
int ft_simflash_is_cut(void);
/* 1: the cut operation lands completely and the power goes right after it; 0 (default): it is torn. */
void ft_simflash_cut_complete(int complete);                      /* 1 once the cut happened (until the next cut_at) */
uint32_t ft_simflash_ops(void);                    /* program/erase operations since the last cut_at */
/* Called after the (partial) cut operation; the host firmware exits the process there. May be NULL. */
void ft_simflash_on_cut(void (*fn)(void));
/* Called after every successful program/erase with the touched range (the host port mirrors to a file). */
void ft_simflash_on_change(void (*fn)(uint32_t offset, size_t len));

ft_status ft_simflash_read(uint32_t offset, void *buf, size_t len);
ft_status ft_simflash_write(uint32_t offset, const void *buf, size_t len);
ft_status ft_simflash_erase(uint32_t offset, size_t len);
/* The flash bytes [offset, offset+len) in place (NULL if out of range or after a power cut). */
const uint8_t *ft_simflash_map(uint32_t offset, size_t len);

#endif
