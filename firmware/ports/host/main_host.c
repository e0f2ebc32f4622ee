/* fedtiny firmware on a POSIX host: the same app as on a board, over TCP, a pty or stdio.
 *
 *   fedtiny-fw [--tcp PORT | --pty | --stdio] [--flash FILE] [--device-id N] [--key HEX | --no-key]
 *              [--factory-head FILE] [--name NAME] [--cut-at N] [-v]
 *
 * --tcp listens on 127.0.0.1:PORT (0: any free port) and prints "listening on socket://127.0.0.1:PORT";
 * one client at a time, the board keeps its RAM state across reconnects. --pty prints "pty /dev/pts/N".
 * --cut-at N ends the process (exit 75) at the N-th flash program/erase after boot: a power cut. RESET reboots in
 * place (RAM state rebuilt from the flash file), keeping the link. */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE
#include "ft_app.h"
#include "port.h"
#include "port_host.h"
#include "ft_simflash.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

static uint8_t key[FT_HMAC_KEY_LEN];
static uint8_t factory[FT_HEAD_PATCH_MAX];

static int usage(void)
{
    fprintf(stderr, "usage: fedtiny-fw [--tcp PORT | --pty | --stdio] [--flash FILE] [--device-id N] "
                    "[--key HEX | --no-key] [--factory-head FILE] [--name NAME] [--cut-at N] [-v]\n");
    return 2;
}

static int parse_hex(const char *s, uint8_t *out, size_t n)
{
    size_t i;
    if (strlen(s) != 2 * n) return -1;
    for (i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Runs the app on one connection until the link goes away. */
static int serve(int in_fd, int out_fd, ft_app_config *cfg)
{
    ft_host_set_link(in_fd, out_fd);
    for (;;) {
        ft_status s = ft_app_poll();
        if (s == FT_ERR_AGAIN) {
            if (ft_host_verbose) fprintf(stderr, "fedtiny host: reboot\n");
            if (ft_app_boot(cfg) != FT_OK) {
                fprintf(stderr, "fedtiny host: boot failed\n");
                return 1;
            }
            continue;
        }
        if (s == FT_ERR_IO) return 0;
        if (s != FT_OK) {
            fprintf(stderr, "fedtiny host: %s\n", ft_status_str(s));
            return 1;
        }
    }
}

int main(int argc, char **argv)
{
    ft_app_config cfg;
    const char *flash = NULL, *factory_file = NULL, *mode = "stdio";
    int port = 0, i, have_key = FT_HAS_FLEET_KEY;
    uint32_t cut = 0;
    static const uint8_t default_key[FT_HMAC_KEY_LEN] = FT_FLEET_KEY_INIT;
    memcpy(key, default_key, sizeof key);
    memset(&cfg, 0, sizeof cfg);
    cfg.device_id = FT_DEVICE_ID;
    cfg.board_name = "host";
    signal(SIGPIPE, SIG_IGN);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tcp") && v) { mode = "tcp"; port = atoi(v); i++; }
        else if (!strcmp(a, "--pty")) mode = "pty";
        else if (!strcmp(a, "--stdio")) mode = "stdio";
        else if (!strcmp(a, "--flash") && v) { flash = v; i++; }
        else if (!strcmp(a, "--device-id") && v) { cfg.device_id = (uint32_t)strtoul(v, NULL, 0); i++; }
        else if (!strcmp(a, "--key") && v) { if (parse_hex(v, key, sizeof key)) return usage(); have_key = 1; i++; }
        else if (!strcmp(a, "--no-key")) have_key = 0;
        else if (!strcmp(a, "--factory-head") && v) { factory_file = v; i++; }
        else if (!strcmp(a, "--name") && v) { cfg.board_name = v; i++; }
        else if (!strcmp(a, "--cut-at") && v) { cut = (uint32_t)strtoul(v, NULL, 0); i++; }
        else if (!strcmp(a, "-v")) ft_host_verbose = 1;
        else return usage();
    }
    cfg.key = have_key ? key : NULL;
    if (factory_file) {
        FILE *f = fopen(factory_file, "rb");
        size_t n;
        if (!f) { perror(factory_file); return 2; }
        n = fread(factory, 1, sizeof factory, f);
        fclose(f);
        cfg.factory_head = factory;
        cfg.factory_len = (uint32_t)n;
    }
    if (ft_host_flash_open(flash) != FT_OK) { fprintf(stderr, "cannot open flash file %s\n", flash); return 2; }
    if (ft_app_boot(&cfg) != FT_OK) { fprintf(stderr, "fedtiny host: boot failed\n"); return 1; }
    ft_host_power_cut_at(cut); /* counted from after the boot */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "stdio")) return serve(0, 1, &cfg);
    if (!strcmp(mode, "pty")) {
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        struct termios t;
        if (m < 0 || grantpt(m) || unlockpt(m)) { perror("pty"); return 1; }
        {
            int s = open(ptsname(m), O_RDWR | O_NOCTTY); /* raw mode on the slave side */
            if (s >= 0 && tcgetattr(s, &t) == 0) { cfmakeraw(&t); tcsetattr(s, TCSANOW, &t); }
            printf("pty %s\n", ptsname(m));
            for (;;) {
                serve(m, m, &cfg); /* a closed slave reads as EIO until reopened: keep serving */
                usleep(20000);
            }
        }
    }
    {
        int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (srv < 0 || bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 1) ||
            getsockname(srv, (struct sockaddr *)&a, &al)) {
            perror("tcp");
            return 1;
        }
        printf("listening on socket://127.0.0.1:%d\n", ntohs(a.sin_port));
        for (;;) {
            int c = accept(srv, NULL, NULL), r;
            if (c < 0) { if (errno == EINTR) continue; perror("accept"); return 1; }
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            r = serve(c, c, &cfg);
            close(c);
            if (r) return r;
        }
    }
}
