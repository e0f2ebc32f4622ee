/* B-L475E-IOT01A (STM32L475VG) port: what the startup code, the app and the test runner call. */
#ifndef FT_PORT_L475_H
#define FT_PORT_L475_H
#include <stdint.h>

void ft_l475_init(void);               /* clocks, USART1 (ST-LINK virtual COM port), SysTick, flash backend */
uint32_t ft_l475_core_hz(void);        /* core clock after init: 80 MHz (PLL) or 4 MHz (MSI) */
void ft_l475_putc(char ch);
void ft_l475_puts(const char *s);
void ft_l475_exit(int code);           /* semihosting exit under QEMU / a debugger; halts otherwise */
void ft_l475_fault(void);
void SysTick_Handler(void);

/* Flash backend (flash_l475.c: the STM32L4 flash controller; or ft_simflash in RAM with FT_L475_RAMFLASH) */
void ft_l475_flash_init(void);
#endif
