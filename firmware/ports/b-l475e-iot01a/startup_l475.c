/* Cortex-M4F startup for the STM32L475VG: vector table (16 system + 82 STM32L4 IRQs, all to the fault
 * handler: the port polls, it enables no peripheral interrupt), .data/.bss init, FPU enable, main. */
#include <stdint.h>
#include "port_l475.h"

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __arena_start__, __arena_end__,
    __stack_top;
int main(void);
void Reset_Handler(void);

static void Default_Handler(void) { ft_l475_fault(); }
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));

#define N_IRQ 82 /* RM0351 table 58: positions 0..81 on the STM32L475 */
__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + N_IRQ])(void) = {
    [0] = (void (*)(void))(&__stack_top),
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [15] = SysTick_Handler,
    [16 ... 16 + N_IRQ - 1] = Default_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = &__etext, *dst = &__data_start__;
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10/CP11 full access (hard-float ABI) */
    __asm volatile("dsb\n isb");
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__; dst++) *dst = 0;
    for (dst = &__arena_start__; dst < &__arena_end__; dst++) *dst = 0;
    (void)main();
    for (;;) {
    }
}

/* newlib's sbrk: fedtiny does not allocate; any malloc fails instead of growing into the stack. */
void *_sbrk(int incr);
void *_sbrk(int incr)
{
    (void)incr;
    return (void *)-1;
}
