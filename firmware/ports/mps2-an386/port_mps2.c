/* fedtiny port for QEMU mps2-an386 (Cortex-M4F): CMSDK UART0 link, SysTick millis, flash emulated in RAM. */
#include "port.h"
#include "ft_simflash.h"
#include "port_mps2.h"
#include "fedtiny_config.h"
#include <string.h>

#define UART0 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0 + 0x0u))
#define UART_STATE (*(volatile uint32_t *)(UART0 + 0x4u))
#define UART_CTRL (*(volatile uint32_t *)(UART0 + 0x8u))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0 + 0x10u))
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_AIRCR (*(volatile uint32_t *)0xE000ED0Cu)
#define SYSCLK_HZ 25000000u

static volatile uint32_t ms_ticks;
/* Survives a system reset (QEMU does not clear RAM): tells a warm reboot from a power-up. */
static uint32_t flash_magic __attribute__((section(".noinit")));
#define FLASH_MAGIC 0xF1A5F1A5u

void SysTick_Handler(void) { ms_ticks++; }

void ft_mps2_init(void)
{
    UART_BAUDDIV = 16;
    UART_CTRL = 0x3u; /* TX + RX enable */
    SYST_RVR = SYSCLK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* processor clock, interrupt, enable */
    if (flash_magic != FLASH_MAGIC) {
        ft_simflash_format();
        flash_magic = FLASH_MAGIC;
    }
}

void ft_mps2_putc(char ch)
{
    while (UART_STATE & 1u) {
    }
    UART_DATA = (uint8_t)ch;
}

void ft_mps2_puts(const char *s)
{
    while (*s) ft_mps2_putc(*s++);
}

void ft_mps2_fault(void)
{
    ft_mps2_puts("\nFAULT\n");
    ft_mps2_semihost_exit(2);
}

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ft_mps2_semihost_exit(int code)
{
    /* SYS_EXIT (0x18): ADP_Stopped_ApplicationExit ends QEMU with 0, anything else with 1. */
    semihost(0x18, (void *)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got)
{
    size_t n = 0;
    if (!buf || !got) return FT_ERR_ARG;
    while (n < cap && (UART_STATE & 2u)) buf[n++] = (uint8_t)UART_DATA;
    *got = n;
    return FT_OK;
}

ft_status ft_port_write(const uint8_t *buf, size_t len)
{
    size_t i;
    if (!buf && len) return FT_ERR_ARG;
    for (i = 0; i < len; i++) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = buf[i];
    }
    return FT_OK;
}

ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len) { return ft_simflash_read(offset, buf, len); }
ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len)
{
    return ft_simflash_write(offset, buf, len);
}
ft_status ft_port_flash_erase(uint32_t offset, size_t len) { return ft_simflash_erase(offset, len); }
const uint8_t *ft_port_flash_map(uint32_t offset, size_t len) { return ft_simflash_map(offset, len); }
uint32_t ft_port_millis(void) { return ms_ticks; }
void ft_port_log(const char *msg) { (void)msg; /* UART0 is the link; no separate debug channel */ }
const char *ft_port_board_name(void) { return "mps2-an386"; }
uint32_t ft_port_device_id(void) { return 0x4D505332u; }

void ft_port_reset(void)
{
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
    __asm volatile("dsb");
    for (;;) {
    }
}
