/* Startup for the kernels-vs-CMSIS-NN harness (kvc.c) on QEMU's mps2 boards (Cortex-M4 an386, M7 an500,
 * M33 an505 in the secure state): vector table, FPU on, .data/.bss, main. Linked with the kvc.ld that
 * benchmarks/kernels_vs_cmsis.py writes for the board's memory map. */
#include <stdint.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top;
int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);
void kvc_fault(void);
void *_sbrk(int incr);

static void Fault_Handler(void) { kvc_fault(); }

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, 0, 0, 0, SysTick_Handler,
};

void Reset_Handler(void)
{
    uint32_t *src = &__etext, *dst = &__data_start__;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10, CP11 full access */
    __asm volatile("dsb\n isb");
#endif
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__; dst++) *dst = 0;
    (void)main();
    for (;;) {
    }
}

/* nothing here allocates: any malloc fails */
void *_sbrk(int incr)
{
    (void)incr;
    return (void *)-1;
}
