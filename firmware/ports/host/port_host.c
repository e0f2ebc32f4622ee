/* fedtiny port for POSIX hosts: link over any file descriptor pair (socket, pty, stdio), flash simulated
 * in RAM and mirrored to a file, a power-cut hook that ends the process at the N-th flash write. */
#define _POSIX_C_SOURCE 200809L
#include "port.h"
#include "port_host.h"
#include "ft_simflash.h"
#include "fedtiny_config.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int link_in = -1, link_out = -1;
static FILE *flash_file;
static const char *board_name = "host";
static uint32_t device_id = 0x484F5354u;
int ft_host_verbose;

void ft_host_set_link(int in_fd, int out_fd)
{
    link_in = in_fd;
    link_out = out_fd;
}

void ft_host_set_identity(const char *name, uint32_t id)
{
    board_name = name;
    device_id = id;
}

static void mirror(uint32_t offset, size_t len)
{
    if (!flash_file) return;
    if (fseek(flash_file, (long)offset, SEEK_SET) != 0 ||
        fwrite(ft_simflash_mem + offset, 1, len, flash_file) != len || fflush(flash_file) != 0) {
        fprintf(stderr, "fedtiny host: flash file write failed: %s\n", strerror(errno));
        _exit(3);
    }
}

ft_status ft_host_flash_open(const char *path)
{
    size_t n;
    ft_simflash_format();
    ft_simflash_on_change(mirror);
    if (!path) return FT_OK;
    flash_file = fopen(path, "r+b");
    if (flash_file) {
        n = fread(ft_simflash_mem, 1, FT_FLASH_SIZE, flash_file);
        if (n < FT_FLASH_SIZE) memset(ft_simflash_mem + n, 0xFF, FT_FLASH_SIZE - n); /* grown config */
    } else {
        flash_file = fopen(path, "w+b");
        if (!flash_file) return FT_ERR_FLASH;
    }
    mirror(0, FT_FLASH_SIZE);
    return FT_OK;
}

static void power_cut(void)
{
    if (flash_file) fflush(flash_file);
    fprintf(stderr, "fedtiny host: power cut at flash op %u\n", (unsigned)ft_simflash_ops());
    _exit(FT_HOST_EXIT_POWER_CUT);
}

void ft_host_power_cut_at(uint32_t n)
{
    ft_simflash_cut_at(n);
    ft_simflash_on_cut(n ? power_cut : NULL);
}

ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got)
{
    struct pollfd p;
    ssize_t r;
    if (!buf || !got) return FT_ERR_ARG;
    *got = 0;
    if (link_in < 0) return FT_ERR_IO;
    p.fd = link_in;
    p.events = POLLIN;
    p.revents = 0;
    r = poll(&p, 1, 20);
    if (r < 0) return errno == EINTR ? FT_OK : FT_ERR_IO;
    if (r == 0) return FT_OK;
    r = read(link_in, buf, cap);
    if (r < 0) return (errno == EAGAIN || errno == EINTR) ? FT_OK : FT_ERR_IO;
    if (r == 0) return FT_ERR_IO; /* peer closed */
    *got = (size_t)r;
    return FT_OK;
}

ft_status ft_port_write(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    if (!buf && len) return FT_ERR_ARG;
    if (link_out < 0) return FT_ERR_IO;
    while (off < len) {
        ssize_t w = write(link_out, buf + off, len - off);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return FT_ERR_IO;
        }
        off += (size_t)w;
    }
    return FT_OK;
}

ft_status ft_port_flash_read(uint32_t offset, void *buf, size_t len) { return ft_simflash_read(offset, buf, len); }
ft_status ft_port_flash_write(uint32_t offset, const void *buf, size_t len)
{
    return ft_simflash_write(offset, buf, len);
}
ft_status ft_port_flash_erase(uint32_t offset, size_t len) { return ft_simflash_erase(offset, len); }
const uint8_t *ft_port_flash_map(uint32_t offset, size_t len) { return ft_simflash_map(offset, len); }

uint32_t ft_port_millis(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

void ft_port_log(const char *msg)
{
    if (ft_host_verbose) fprintf(stderr, "fedtiny: %s\n", msg);
}

const char *ft_port_board_name(void) { return board_name; }
uint32_t ft_port_device_id(void) { return device_id; }

void ft_port_reset(void)
{
    if (flash_file) fflush(flash_file);
    _exit(FT_HOST_EXIT_RESET);
}
