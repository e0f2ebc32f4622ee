/* fedtiny firmware on a POSIX host: the same app as on a board, over TCP, a pty or stdio.
 *
 *   fedtiny-fw [--tcp PORT | --pty | --stdio] [--flash FILE] [--device-id N] [--key HEX | --no-key]
 *              [--trust-key FILE]... [--device-key-file FILE] [--factory-head FILE] [--model FILE] [--name NAME] [--cut-at N] [-v]
 *
 * --tcp listens on 127.0.0.1:PORT (0: any free port) and prints "listening on socket://127.0.0.1:PORT";
 * one client at a time, the board keeps its RAM state across reconnects. --pty prints "pty /dev/pts/N".
 * --cut-at N: a power cut in the N-th flash program/erase counted from after the boot (operations 1..N-1 complete,
 * the N-th is torn: ft_simflash.c), then the process ends (exit 75). RESET reboots in place (RAM state rebuilt from
 * the flash file), keeping the link. --help prints every option.
 * --trust-key (up to 4 times): an Ed25519 public key (PEM SubjectPublicKeyInfo as `fedtiny key generate` writes
 * signing.pub.pem, or 64 hex digits) stored on a flash that holds no key; the board then accepts only signed images
 * (docs/protocol.md section 7). --device-key-file: this board's update key (64 hex digits, `fedtiny key device`),
 * which tags its updates instead of the fleet key. A bad file: one line naming it, exit 2.
 * --model FILE: the factory model (a .tflite), as `fedtiny emulate --model` and as a build with FT_FACTORY_MODEL
 * compiles in: head patches and the factory head (its own head, unless --factory-head) run on its backbone. */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE
#include "ft_app.h"
#include "ft_keys.h"
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
static uint8_t trust[FT_MAX_KEYS][32];
static uint8_t update_key[32];
static uint8_t *model_buf; /* the --model file */

static int usage(void)
{
    fprintf(stderr, "usage: fedtiny-fw [--tcp PORT | --pty | --stdio] [--flash FILE] [--device-id N] "
                    "[--key HEX | --no-key] [--trust-key FILE]... [--device-key-file FILE] [--factory-head FILE] "
                    "[--model FILE] [--name NAME] [--cut-at N] [-v]\n"
                    "fedtiny-fw --help: what each option does\n");
    return 2;
}

/* --help: the options, on stdout, exit 0 */
static int help(void)
{
    printf("usage: fedtiny-fw [OPTIONS]\n"
           "The fedtiny board firmware on a POSIX host: the same core and app as on a board, speaking the link\n"
           "protocol (docs/protocol.md) over TCP, a pty or stdin/stdout, with the board's flash in a file.\n"
           "\n"
           "Link (one of; default --stdio):\n"
           "  --tcp PORT             listen on 127.0.0.1:PORT (0: any free port); prints\n"
           "                         \"listening on socket://127.0.0.1:PORT\"; one client at a time, the board keeps\n"
           "                         its RAM state across reconnects\n"
           "  --pty                  open a pseudo-terminal (a serial port); prints \"pty /dev/pts/N\"\n"
           "  --stdio                frames on stdin/stdout\n"
           "Board:\n"
           "  --flash FILE           the flash image (created blank if missing; without it the flash is RAM only)\n"
           "  --device-id N          the device id HELLO reports (default %u)\n"
           "  --name NAME            the board name HELLO reports (UTF-8; cut to at most 64 bytes at a character)\n"
           "  --model FILE           the factory model (.tflite), as a build with FT_FACTORY_MODEL compiles in: head\n"
           "                         patches and the factory head run on its backbone; a model this build refuses\n"
           "                         does not boot (exit 1; -v logs why; `fedtiny info FILE --board NAME` gives the\n"
           "                         build options a model needs)\n"
           "  --factory-head FILE    the factory head (a HeadPatch file) instead of the model's own or the built-in\n"
           "Keys (docs/protocol.md section 7):\n"
           "  --key HEX              the fleet key (64 hex digits; default: the test-vector key, FOR TESTS ONLY)\n"
           "  --no-key               no fleet key: every upload is refused with AUTH_FAILED\n"
           "  --trust-key FILE       an Ed25519 public key (PEM, as `fedtiny key generate` writes, or 64 hex digits)\n"
           "                         stored on a flash that holds none; the board then takes signed images only\n"
           "                         (up to %u times)\n"
           "  --device-key-file FILE this board's update key (64 hex digits, `fedtiny key device`): tags updates\n"
           "Tests:\n"
           "  --cut-at N             a power cut in the N-th flash operation (program or erase) counted from after\n"
           "                         the boot, N >= 1 (0: none): operations 1..N-1 complete, the N-th is torn (half\n"
           "                         of a program's words, a third of an erase land) and the process exits 75 at\n"
           "                         once, printing \"power cut at flash op N\" on stderr\n"
           "  -v                     log the firmware's messages on stderr\n"
           "  -h, --help             this text\n"
           "\n"
           "Built with FT_MAX_CLASSES=%u FT_MAX_DIM=%u FT_CACHE_CAPACITY=%u FT_MAX_PAYLOAD=%u FT_SLOT_SIZE=%lu\n"
           "FT_TFL_ARENA_SIZE=%lu (firmware/README.md \"Build options\": make -C firmware FT_DEFS=\"-DNAME=value\").\n"
           "Exit: 2 for a bad option or file, 75 at a --cut-at power cut, 1 if the board does not boot.\n",
           (unsigned)FT_DEVICE_ID, (unsigned)FT_MAX_KEYS, (unsigned)FT_MAX_CLASSES, (unsigned)FT_MAX_DIM,
           (unsigned)FT_CACHE_CAPACITY, (unsigned)FT_MAX_PAYLOAD, (unsigned long)FT_SLOT_SIZE,
           (unsigned long)FT_TFL_ARENA_SIZE);
    return 0;
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

/* The text of a small key file (NUL-terminated, trailing whitespace cut), or NULL with a message. */
static char *read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) {
        fprintf(stderr, "fedtiny-fw: %s: key file not found\n", path);
        return NULL;
    }
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    return buf;
}

static int b64(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
         : c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* A raw Ed25519 public key from a PEM public key (SubjectPublicKeyInfo) or 64 hex digits: 0, else -1 (said why). */
static int load_public_key(const char *path, uint8_t out[32])
{
    static const uint8_t spki[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    char text[1024];
    const char *p, *end;
    uint8_t der[64];
    size_t n = 0;
    unsigned acc = 0, bits = 0;
    if (!read_text(path, text, sizeof text)) return -1;
    if (strlen(text) == 64 && parse_hex(text, out, 32) == 0) return 0;
    p = strstr(text, "-----BEGIN PUBLIC KEY-----");
    end = p ? strstr(p, "-----END PUBLIC KEY-----") : NULL;
    if (!p || !end) {
        fprintf(stderr, "fedtiny-fw: %s: expected a PEM Ed25519 public key (signing.pub.pem) or 64 hex digits\n", path);
        return -1;
    }
    for (p += 26; p < end; p++) {
        int v = b64((unsigned char)*p);
        if (v < 0) continue; /* line breaks, '=' padding */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == sizeof der) break;
            der[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (n != 44 || memcmp(der, spki, sizeof spki) != 0) {
        fprintf(stderr, "fedtiny-fw: %s: not an Ed25519 public key (DER SubjectPublicKeyInfo of 44 bytes)\n", path);
        return -1;
    }
    memcpy(out, der + 12, 32);
    return 0;
}

/* The factory model file into memory kept for the process's life (a board has it in flash): 0, else -1 (said why). */
static int load_model(const char *path, ft_app_config *cfg)
{
    FILE *f = fopen(path, "rb");
    long n;
    uint8_t *buf;
    if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0 || n > 0x7FFFFFFL || fseek(f, 0, SEEK_SET)) {
        fprintf(stderr, "fedtiny-fw: %s: cannot read the model file\n", path);
        if (f) fclose(f);
        return -1;
    }
    buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fedtiny-fw: %s: cannot read the model file\n", path);
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    model_buf = buf; /* a static: reachable until exit (no leak report) */
    cfg->factory_model = buf;
    cfg->factory_model_len = (uint32_t)n;
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
    const char *flash = NULL, *factory_file = NULL, *model_file = NULL, *mode = "stdio";
    int port = 0, i, have_key = FT_HAS_FLEET_KEY, have_update_key = 0;
    unsigned n_trust = 0;
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
        else if (!strcmp(a, "--trust-key") && v) {
            if (n_trust == FT_MAX_KEYS) {
                fprintf(stderr, "fedtiny-fw: --trust-key: a board holds at most %u public keys\n", (unsigned)FT_MAX_KEYS);
                return 2;
            }
            if (load_public_key(v, trust[n_trust++])) return 2;
            i++;
        }
        else if (!strcmp(a, "--device-key-file") && v) {
            char text[256];
            if (!read_text(v, text, sizeof text)) return 2;
            if (parse_hex(text, update_key, sizeof update_key)) {
                fprintf(stderr, "fedtiny-fw: %s: the device update key is exactly 32 bytes as 64 hex digits\n", v);
                return 2;
            }
            have_update_key = 1;
            i++;
        }
        else if (!strcmp(a, "--factory-head") && v) { factory_file = v; i++; }
        else if (!strcmp(a, "--model") && v) { model_file = v; i++; }
        else if (!strcmp(a, "--name") && v) { cfg.board_name = v; i++; }
        else if (!strcmp(a, "--cut-at") && v) { cut = (uint32_t)strtoul(v, NULL, 0); i++; }
        else if (!strcmp(a, "-v")) ft_host_verbose = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) return help();
        else return usage();
    }
    cfg.key = have_key ? key : NULL;
    if (ft_keys_config((const uint8_t(*)[32])trust, n_trust, have_update_key ? update_key : NULL) != FT_OK) return usage();
    if (factory_file) {
        FILE *f = fopen(factory_file, "rb");
        size_t n;
        if (!f) { perror(factory_file); return 2; }
        n = fread(factory, 1, sizeof factory, f);
        fclose(f);
        cfg.factory_head = factory;
        cfg.factory_len = (uint32_t)n;
    }
    if (model_file && load_model(model_file, &cfg)) return 2;
    if (ft_host_flash_open(flash) != FT_OK) { fprintf(stderr, "cannot open flash file %s\n", flash); return 2; }
    if (ft_app_boot(&cfg) != FT_OK) {
        if (model_file) fprintf(stderr, "fedtiny-fw: %s: the factory model does not boot (-v logs why)\n", model_file);
        fprintf(stderr, "fedtiny host: boot failed\n");
        return 1;
    }
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
