#ifndef FT_PORT_HOST_H
#define FT_PORT_HOST_H
#include <stdint.h>
#include "ft_status.h"
/* Link file descriptors (a socket, a pty master/slave, or stdin/stdout). */
void ft_host_set_link(int in_fd, int out_fd);
/* Back the simulated flash with a file (created 0xFF-filled when missing); NULL: RAM only. */
ft_status ft_host_flash_open(const char *path);
/* Exit the process (code 75) at the n-th flash program/erase: a power cut, for tests. 0 disarms. */
void ft_host_power_cut_at(uint32_t n);
void ft_host_set_identity(const char *name, uint32_t id);
extern int ft_host_verbose;
#define FT_HOST_EXIT_POWER_CUT 75
#define FT_HOST_EXIT_RESET 76
#endif
