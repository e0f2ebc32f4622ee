/* Cortex-M4F startup for QEMU mps2-an386: vector table, .data/.bss init, FPU enable (CPACR), main. */
#include <stdint.h>
#include <string.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top, __stack_limit;
int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);
void ft_mps2_fault(void);

static void Default_Handler(void) { ft_mps2_fault(); }
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + 32])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler, UsageFault_Handler,
    0, 0, 0, 0, 0, 0, 0, 0, SysTick_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = &__etext, *dst = &__data_start__;
    /* FPU: full access for CP10 and CP11 */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm volatile("dsb\n isb");
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__; dst++) *dst = 0;
    (void)main();
    for (;;) {
    }
}

/* newlib's sbrk: fedtiny does not allocate; this makes any malloc fail instead of corrupting the stack. */
void *_sbrk(int incr);
void *_sbrk(int incr)
{
    (void)incr;
    return (void *)-1;
}
