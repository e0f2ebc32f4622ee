#include "ft_test.h"
#include "tests_list.h"
#include <stdarg.h>
#include <stdio.h>

#define FT_ENTRY(name) {#name, test_##name},
static const ft_test_case ft_tests[] = {FT_TESTS(FT_ENTRY)};
#undef FT_ENTRY

int ft_test_current_failed;
static const char *current_name;

void ft_test_outf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ft_test_out(buf);
}

void ft_test_fail(const char *file, int line, const char *what)
{
    if (ft_test_current_failed < 5) ft_test_outf("FAIL %s: %s:%d: %s\n", current_name, file, line, what);
    ft_test_current_failed++;
}

/* Runs every test; returns the number of failed tests. */
int ft_test_run_all(void)
{
    size_t i;
    int passed = 0, failed = 0;
    for (i = 0; i < sizeof ft_tests / sizeof ft_tests[0]; i++) {
        current_name = ft_tests[i].name;
        ft_test_current_failed = 0;
        ft_tests[i].fn();
        if (ft_test_current_failed) {
            failed++;
            ft_test_outf("not ok %s\n", ft_tests[i].name);
        } else {
            passed++;
            ft_test_outf("ok %s\n", ft_tests[i].name);
        }
    }
    ft_test_outf("%d passed, %d failed\n", passed, failed);
    return failed;
}
