#include "ft_test.h"
#include "ft_simflash.h"
#include "fedtiny_config.h"
#include <string.h>

void test_simflash_nor(void)
{
    uint8_t a[8] = {0xF0, 0x0F, 0xFF, 0x00, 1, 2, 3, 4}, b[8];
    uint8_t c[8] = {0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    ft_simflash_cut_at(0);
    CHECK_OK(ft_simflash_erase(0, FT_FLASH_PAGE_SIZE));
    CHECK_OK(ft_simflash_write(8, a, 8));
    CHECK_OK(ft_simflash_write(8, c, 8));
    CHECK_OK(ft_simflash_read(8, b, 8));
    CHECK_EQ_INT(b[0], 0x00);
    CHECK_EQ_INT(b[1], 0x0F);
    CHECK_EQ_INT(b[7], 4);
    CHECK(ft_simflash_write(3, a, 8) == FT_ERR_ARG);            /* misaligned */
    CHECK(ft_simflash_erase(1, FT_FLASH_PAGE_SIZE) == FT_ERR_ARG);
    CHECK(ft_simflash_read(FT_FLASH_SIZE - 4, b, 8) == FT_ERR_ARG);
    /* power cut at the second op: the first lands, the second partly, the rest fail */
    ft_simflash_cut_at(2);
    CHECK_OK(ft_simflash_erase(0, FT_FLASH_PAGE_SIZE));
    CHECK(ft_simflash_write(0, a, 8) == FT_ERR_FLASH);
    CHECK(ft_simflash_is_cut());
    CHECK(ft_simflash_read(0, b, 8) == FT_ERR_FLASH);
    ft_simflash_cut_at(0);
    CHECK_OK(ft_simflash_read(0, b, 8));
    CHECK_MEM(b, a, 4);            /* half made it */
    CHECK_EQ_INT(b[4], 0xFF);
}
