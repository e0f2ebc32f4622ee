/* Port functions for the fuzz target: flash simulated in RAM, no link. */
#include "port.h"
#include "ft_simflash.h"

ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got)
{
    (void)buf;
    (void)cap;
    *got = 0;
    return FT_OK;
}
ft_status ft_port_write(const uint8_t *buf, size_t len)
{
    (void)buf;
    (void)len;
    return FT_OK;
}
ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len) { return ft_simflash_read(offset, buf, len); }
ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len) { return ft_simflash_write(offset, buf, len); }
ft_status ft_port_flash_erase(uint32_t offset, size_t len) { return ft_simflash_erase(offset, len); }
const uint8_t *ft_port_flash_map(uint32_t offset, size_t len) { return ft_simflash_map(offset, len); }
uint32_t ft_port_millis(void) { return 0; }
void ft_port_log(const char *msg) { (void)msg; }
const char *ft_port_board_name(void) { return "fuzz"; }
uint32_t ft_port_device_id(void) { return 1; }
void ft_port_reset(void) {}
