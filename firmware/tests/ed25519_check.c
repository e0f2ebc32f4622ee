/* Ed25519/SHA-512 check of core/ft_ed25519.c (issue 10): RFC 8032 section 7.1 test vectors, SHA-512 FIPS 180-4
 * examples, then the vectors made by Python's `cryptography` (tests/test_signing.py writes them: random keys and
 * messages, valid and corrupted signatures, SHA-512 of random messages). Host: `ed25519_check FILE`. QEMU
 * (-DFT_ED_QEMU): the vectors are compiled in (ed25519_vectors.h) and the instructions per verification are
 * printed (run with -icount shift=6, as tests/bench_mps2.c). Record format (little-endian):
 *   u8 0, u32 n, bytes[n] msg, bytes[64] sha512          SHA-512 check
 *   u8 1, u8 valid, bytes[32] pub, bytes[64] sig, u32 n, bytes[n] msg    Ed25519 check */
#include "ft_ed25519.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FT_ED_QEMU
#include "port.h"
#include "port_mps2.h"
#include "ed25519_vectors.h"
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static uint64_t ticks(void)
{
    uint32_t w1, w2, v;
    do {
        w1 = ft_port_millis();
        v = SYST_CVR;
        w2 = ft_port_millis();
    } while (w1 != w2);
    return (uint64_t)w1 * 0x1000000u + (0xFFFFFFu - v);
}
static void say(const char *s) { ft_mps2_puts(s); }
#else
static void say(const char *s) { fputs(s, stdout); }
#endif

static int hexval(char ch) { return ch <= '9' ? ch - '0' : (ch | 32) - 'a' + 10; }
static void unhex(const char *h, uint8_t *out)
{
    size_t i, n = strlen(h) / 2;
    for (i = 0; i < n; i++) out[i] = (uint8_t)(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]));
}

/* RFC 8032 7.1 TEST 1, 2, 3 and TEST SHA(abc) */
static const char *const rfc[][3] = {
    {"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
    {"ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"},
};

static int fails;
static unsigned long n_sha, n_ok, n_bad;

static void check_rfc(void)
{
    uint8_t pub[32], sig[64], msg[64], d[64], want[64];
    size_t i;
    for (i = 0; i < sizeof rfc / sizeof rfc[0]; i++) {
        unhex(rfc[i][0], pub);
        unhex(rfc[i][1], msg);
        unhex(rfc[i][2], sig);
        if (ft_ed25519_verify(sig, pub, msg, strlen(rfc[i][1]) / 2) != 0) { say("FAIL rfc8032 vector\n"); fails++; }
        sig[5] ^= 1;
        if (ft_ed25519_verify(sig, pub, msg, strlen(rfc[i][1]) / 2) == 0) { say("FAIL rfc8032 corrupted\n"); fails++; }
    }
    ft_sha512((const uint8_t *)"abc", 3, d);
    unhex("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f", want);
    if (memcmp(d, want, 64)) { say("FAIL sha512(abc)\n"); fails++; }
}

static uint32_t rd32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void check_records(const uint8_t *p, size_t len)
{
    size_t off = 0;
#ifdef FT_ED_QEMU
    uint64_t t_ok = 0;
#endif
    while (off < len) {
        if (p[off] == 0) {
            uint32_t n = rd32(p + off + 1);
            uint8_t d[64];
            ft_sha512(p + off + 5, n, d);
            if (memcmp(d, p + off + 5 + n, 64)) { say("FAIL sha512 record\n"); fails++; }
            n_sha++;
            off += 5 + n + 64;
        } else {
            int valid = p[off + 1];
            const uint8_t *pub = p + off + 2, *sig = pub + 32;
            uint32_t n = rd32(sig + 64);
            int r;
#ifdef FT_ED_QEMU
            uint64_t t0 = ticks();
#endif
            r = ft_ed25519_verify(sig, pub, sig + 68, n);
#ifdef FT_ED_QEMU
            if (valid) t_ok += ticks() - t0;
#endif
            if ((r == 0) != valid) {
                char buf[96];
                snprintf(buf, sizeof buf, "FAIL ed25519 record at %lu: expected %s\n", (unsigned long)off,
                         valid ? "valid" : "invalid");
                say(buf);
                fails++;
            }
            if (valid) n_ok++; else n_bad++;
            off += 2 + 32 + 64 + 4 + n;
        }
    }
#ifdef FT_ED_QEMU
    if (n_ok) {
        char buf[96];
        /* instructions = ticks / 1.6 (see tests/bench_mps2.c) */
        snprintf(buf, sizeof buf, "BENCH ed25519_verify_instructions %lu\n", (unsigned long)(t_ok * 5u / 8u / n_ok));
        say(buf);
    }
#endif
}

int main(int argc, char **argv)
{
    char buf[128];
#ifdef FT_ED_QEMU
    (void)argc; (void)argv;
    ft_mps2_init();
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;
    check_rfc();
    check_records(ft_ed_vectors, sizeof ft_ed_vectors);
#else
    check_rfc();
    if (argc > 1) {
        FILE *f = fopen(argv[1], "rb");
        long len;
        uint8_t *p;
        if (!f) { perror(argv[1]); return 2; }
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        p = malloc((size_t)len + 1);
        if (!p || fread(p, 1, (size_t)len, f) != (size_t)len) return 2;
        fclose(f);
        check_records(p, (size_t)len);
        free(p);
    }
#endif
    snprintf(buf, sizeof buf, "ed25519: %lu sha512, %lu valid and %lu invalid signatures checked, %d failure(s)\n",
             n_sha, n_ok, n_bad, fails);
    say(buf);
#ifdef FT_ED_QEMU
    ft_mps2_semihost_exit(fails ? 1 : 0);
#endif
    return fails ? 1 : 0;
}
