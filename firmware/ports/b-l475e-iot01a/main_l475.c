/* fedtiny firmware for the B-L475E-IOT01A: the app loop on USART1 (115200 8N1, the ST-LINK virtual COM port).
 * The device id: the chip's unique id (board build), or per QEMU board with the generic loader:
 * -device loader,addr=<ft_board_cfg>,data=<(id << 32) | 0xB0A4DCF6>,data-len=8 (as the mps2 port). */
#include "ft_app.h"
#include "port.h"
#include "port_l475.h"

#define BOARD_CFG_MAGIC 0xB0A4DCF6u
volatile uint32_t ft_board_cfg[2] __attribute__((section(".noinit")));

int main(void)
{
    ft_app_config cfg;
    static const uint8_t fleet_key[FT_HMAC_KEY_LEN] = FT_FLEET_KEY_INIT;
    ft_status s;
    ft_l475_init();
    cfg.device_id = ft_board_cfg[0] == BOARD_CFG_MAGIC ? ft_board_cfg[1] : ft_port_device_id();
    cfg.key = FT_HAS_FLEET_KEY ? fleet_key : NULL;
    cfg.factory_head = NULL;
    cfg.factory_len = 0;
    cfg.factory_model = NULL; /* the compiled-in one, if any */
    cfg.factory_model_len = 0;
    cfg.board_name = NULL;
    s = ft_app_boot(&cfg);
    if (s != FT_OK) {
        ft_port_log("boot failed");
        ft_l475_fault();
    }
    for (;;) {
        s = ft_app_poll();
        if (s == FT_ERR_AGAIN) ft_port_reset(); /* RESET answered: system reset (SRAM2 survives it) */
    }
}
