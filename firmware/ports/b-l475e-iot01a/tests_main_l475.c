/* Unit-test runner on the STM32L475 (QEMU b-l475e-iot01a): firmware/tests/runner.c's tests, output on
 * USART1, exit through semihosting. */
#include "ft_test.h"
#include "tests_list.h"
#include "port_l475.h"

void ft_test_out(const char *s)
{
    for (; *s; s++) ft_l475_putc(*s);
}

int main(void)
{
    int failed;
    ft_l475_init();
    ft_test_outf("b-l475e-iot01a: core clock %lu Hz\n", (unsigned long)ft_l475_core_hz()); /* PLL locked or not */
    failed = ft_test_run_all();
    ft_l475_exit(failed ? 1 : 0);
    return 0;
}
