/* fedtiny firmware for QEMU mps2-an386: the app loop on UART0. The device id can be set per board with
 * QEMU's generic loader: -device loader,addr=<ft_board_cfg>,data=<(id << 32) | 0xB0A4DC F6>,data-len=8
 * (tests read the address of ft_board_cfg from the ELF). */
#include "ft_app.h"
#include "port.h"
#include "port_mps2.h"

#define BOARD_CFG_MAGIC 0xB0A4DCF6u
volatile uint32_t ft_board_cfg[2] __attribute__((section(".noinit")));

int main(void)
{
    ft_app_config cfg;
    const uint8_t *key = NULL;
    static const uint8_t fleet_key[FT_HMAC_KEY_LEN] = FT_FLEET_KEY_INIT;
    ft_status s;
    ft_mps2_init();
    if (FT_HAS_FLEET_KEY) key = fleet_key;
    cfg.device_id = ft_board_cfg[0] == BOARD_CFG_MAGIC ? ft_board_cfg[1] : FT_DEVICE_ID;
    cfg.key = key;
    cfg.factory_head = NULL;
    cfg.factory_len = 0;
    cfg.factory_model = NULL; /* the compiled-in one, if built with FT_FACTORY_MODEL=... */
    cfg.factory_model_len = 0;
    cfg.board_name = NULL;
    s = ft_app_boot(&cfg);
    if (s != FT_OK) {
        ft_port_log("boot failed");
        ft_mps2_fault();
    }
    for (;;) {
        s = ft_app_poll();
        if (s == FT_ERR_AGAIN) ft_port_reset(); /* RESET answered: system reset (the RAM "flash" survives) */
    }
}
