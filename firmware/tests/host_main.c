/* Unit-test runner, host build (runs under ASan + UBSan). */
#include "ft_test.h"
#include "tests_list.h"
#include "port_host.h"
#include <stdio.h>

void ft_test_out(const char *s) { fputs(s, stdout); }

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ft_host_flash_open(NULL) != FT_OK) return 2;
    return ft_test_run_all() ? 1 : 0;
}
