/* Unit-test runner, QEMU mps2-an386 build: output on UART0, exit through semihosting. */
#include "ft_test.h"
#include "tests_list.h"
#include "port_mps2.h"

void ft_test_out(const char *s)
{
    for (; *s; s++) {
        ft_mps2_putc(*s);
    }
}

int main(void)
{
    int failed;
    ft_mps2_init();
    failed = ft_test_run_all();
    ft_mps2_semihost_exit(failed ? 1 : 0);
    return 0;
}
