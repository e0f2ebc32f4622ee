/* fedtiny port for the B-L475E-IOT01A discovery kit (STM32L475VG, Cortex-M4F): USART1 on PB6/PB7 (the ST-LINK
 * virtual COM port; the first -serial of QEMU's b-l475e-iot01a machine), 80 MHz from MSI through the PLL,
 * SysTick milliseconds, system reset. Flash: flash_l475.c (the STM32L4 controller) or, with FT_L475_RAMFLASH
 * (the QEMU build: QEMU 10 emulates the flash as ROM and not its controller), ft_simflash in SRAM2. */
#include "port.h"
#include "port_l475.h"
#include "fedtiny_config.h"
#include <string.h>

#define REG(a) (*(volatile uint32_t *)(a))
#define RCC 0x40021000u
#define RCC_CR REG(RCC + 0x00u)
#define RCC_CFGR REG(RCC + 0x08u)
#define RCC_PLLCFGR REG(RCC + 0x0Cu)
#define RCC_AHB2ENR REG(RCC + 0x4Cu)
#define RCC_APB2ENR REG(RCC + 0x60u)
#define FLASH_ACR REG(0x40022000u)
#define GPIOB 0x48000400u
#define GPIOB_MODER REG(GPIOB + 0x00u)
#define GPIOB_AFRL REG(GPIOB + 0x20u)
#define USART1 0x40013800u
#define USART_CR1 REG(USART1 + 0x00u)
#define USART_BRR REG(USART1 + 0x0Cu)
#define USART_ISR REG(USART1 + 0x1Cu)
#define USART_ICR REG(USART1 + 0x20u)
#define USART_RDR REG(USART1 + 0x24u)
#define USART_TDR REG(USART1 + 0x28u)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define BAUD 115200u
#define MSI_HZ 4000000u
#define PLL_HZ 80000000u

static volatile uint32_t ms_ticks;
static uint32_t core_hz = MSI_HZ;

void SysTick_Handler(void) { ms_ticks++; }

/* MSI 4 MHz -> PLL (M=1, N=40, R=2) = 80 MHz, the STM32L475's maximum; 4 flash wait states first (RM0351
 * 3.3.3). Every wait is bounded: if the PLL never locks the board stays on MSI and says so in core_hz. */
static void clock_80mhz(void)
{
    uint32_t n;
    FLASH_ACR = (FLASH_ACR & ~7u) | 4u | (1u << 8) | (1u << 9) | (1u << 10); /* LATENCY=4, PRFTEN, ICEN, DCEN */
    RCC_PLLCFGR = 1u | (0u << 4) | (40u << 8) | (0u << 25) | (1u << 24);     /* MSI, M=1, N=40, R=2, PLLREN */
    RCC_CR |= 1u << 24;                                                         /* PLLON */
    for (n = 0; n < 100000u && !(RCC_CR & (1u << 25)); n++) {
    }
    if (!(RCC_CR & (1u << 25))) return;
    RCC_CFGR = (RCC_CFGR & ~3u) | 3u; /* SW = PLL */
    for (n = 0; n < 100000u && ((RCC_CFGR >> 2) & 3u) != 3u; n++) {
    }
    if (((RCC_CFGR >> 2) & 3u) == 3u) core_hz = PLL_HZ;
}

void ft_l475_init(void)
{
    clock_80mhz();
    RCC_AHB2ENR |= 1u << 1;  /* GPIOB */
    RCC_APB2ENR |= 1u << 14; /* USART1 */
    (void)RCC_APB2ENR;       /* read back: the enable takes effect before the first register access */
    GPIOB_MODER = (GPIOB_MODER & ~(0xFu << 12)) | (0xAu << 12);         /* PB6, PB7 alternate function */
    GPIOB_AFRL = (GPIOB_AFRL & ~(0xFFu << 24)) | (0x77u << 24);         /* AF7: USART1 TX / RX */
    USART_BRR = core_hz / BAUD; /* UE is 0 after reset; oversampling by 16, PCLK2 = core clock */
    USART_CR1 = (1u << 3) | (1u << 2) | 1u; /* TE, RE, UE; 8N1 */
    SYST_RVR = core_hz / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* processor clock, interrupt, enable */
    ft_l475_flash_init();
}

uint32_t ft_l475_core_hz(void) { return core_hz; }

void ft_l475_putc(char ch)
{
    while (!(USART_ISR & ISR_TXE)) {
    }
    USART_TDR = (uint8_t)ch;
}

void ft_l475_puts(const char *s)
{
    while (*s) ft_l475_putc(*s++);
}

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ft_l475_exit(int code)
{
    /* SYS_EXIT (0x18): ADP_Stopped_ApplicationExit ends QEMU with 0, anything else with 1 */
    semihost(0x18, (void *)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

void ft_l475_fault(void)
{
    ft_l475_puts("\nFAULT\n");
#ifdef FT_L475_RAMFLASH
    ft_l475_exit(2); /* QEMU: end the emulator (semihosting) */
#else
    ft_port_reset(); /* a board without a debugger: a breakpoint would lock up; reboot instead */
#endif
}

ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got)
{
    size_t n = 0;
    if (!buf || !got) return FT_ERR_ARG;
    if (USART_ISR & ISR_ORE) USART_ICR = ISR_ORE; /* an overrun loses bytes; the link's CRC and retry recover */
    while (n < cap && (USART_ISR & ISR_RXNE)) buf[n++] = (uint8_t)USART_RDR;
    *got = n;
    return FT_OK;
}

ft_status ft_port_write(const uint8_t *buf, size_t len)
{
    size_t i;
    if (!buf && len) return FT_ERR_ARG;
    for (i = 0; i < len; i++) ft_l475_putc((char)buf[i]);
    return FT_OK;
}

uint32_t ft_port_millis(void) { return ms_ticks; }
void ft_port_log(const char *msg) { (void)msg; /* USART1 is the link; no separate debug channel */ }
const char *ft_port_board_name(void) { return "b-l475e-iot01a"; }

uint32_t ft_port_device_id(void)
{
#ifdef FT_L475_RAMFLASH
    return 0x4C343735u; /* "L475": QEMU does not map the unique-id area */
#else
    /* the 96-bit unique device id (RM0351 48.1) folded to 32 bits */
    return REG(0x1FFF7590u) ^ REG(0x1FFF7594u) ^ REG(0x1FFF7598u);
#endif
}

void ft_port_reset(void)
{
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
    __asm volatile("dsb");
    for (;;) {
    }
}
