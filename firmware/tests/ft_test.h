/* One C unit-test harness for the host (ASan+UBSan) and QEMU builds. Each test is a function; checks
 * record failures and go on. The runner prints one line per failed check and a final line
 * "N passed, M failed" that pytest checks. */
#ifndef FT_TEST_H
#define FT_TEST_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ft_status.h"

typedef struct {
    const char *name;
    void (*fn)(void);
} ft_test_case;

void ft_test_fail(const char *file, int line, const char *what);
void ft_test_out(const char *s);   /* provided by the platform glue (stdout / UART) */
void ft_test_outf(const char *fmt, ...);
extern int ft_test_current_failed;

#define CHECK(cond) do { if (!(cond)) ft_test_fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_OK(expr) do { ft_status s_ = (expr); if (s_ != FT_OK) { ft_test_fail(__FILE__, __LINE__, #expr); ft_test_outf("    status %d (%s)\n", (int)s_, ft_status_str(s_)); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { ft_test_fail(__FILE__, __LINE__, #a " == " #b); ft_test_outf("    %lld != %lld\n", a_, b_); } } while (0)
#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)


#include "tests_list.h"
#endif
