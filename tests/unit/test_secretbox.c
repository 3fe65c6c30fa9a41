/*
 * test_secretbox.c - unit tests for secretbox.c: key text parsing (base64
 * and hex), sealing round trips, a known answer computed with another
 * AES-GCM implementation, and every way opening must fail: wrong key,
 * wrong aad, tampered or truncated input, unknown version, small buffers,
 * and the size limits.
 */
#include "secretbox.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* Key bytes 00 01 .. 1f in both accepted encodings. */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_HEX                                                          \
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static const char *auth_err =
    "secret failed authentication (wrong WEBHOOK_SECRET_KEY?)";

static wh_secretbox box(const char *key_text)
{
    wh_secretbox sb;
    char err[WH_ERRLEN];
    if (wh_secretbox_init(&sb, key_text, err, sizeof(err)) != WH_OK) {
        fprintf(stderr, "secretbox init: %s\n", err);
        exit(2);
    }
    return sb;
}

static int hex_to_bytes(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (n > cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return (int)n;
}

static void test_round_trip(void)
{
    char keytext[WH_SECRETBOX_KEY_TEXT_LEN], err[WH_ERRLEN];
    unsigned char sealed[256], sealed2[256];
    char plain[256];
    size_t slen = 0, slen2 = 0, plen = 0;

    CHECK_INT(wh_secretbox_generate_key(keytext, sizeof(keytext)), WH_OK);
    CHECK_INT(strlen(keytext), 44);
    wh_secretbox sb = box(keytext);

    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", SECRET, strlen(SECRET), sealed,
                                sizeof(sealed), &slen, err, sizeof(err)),
              WH_OK);
    CHECK_INT(slen, strlen(SECRET) + WH_SECRETBOX_OVERHEAD);
    CHECK_INT(slen, wh_secretbox_sealed_len(strlen(SECRET)));
    CHECK_INT(sealed[0], 1);
    CHECK(memmem(sealed, slen, "MfKQ9r8G", 8) == NULL);

    CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));

    /* a fresh nonce each time: same input, different output, both open */
    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", SECRET, strlen(SECRET), sealed2,
                                sizeof(sealed2), &slen2, err, sizeof(err)),
              WH_OK);
    CHECK_INT(slen2, slen);
    CHECK(memcmp(sealed + 1, sealed2 + 1, WH_SECRETBOX_NONCE_LEN) != 0);
    CHECK(memcmp(sealed, sealed2, slen) != 0);
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed2, slen2, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));

    /* binary plaintext, an empty aad, an empty plaintext */
    static const unsigned char bin[] = {0, 0xff, 0x80, 0, 1};
    CHECK_INT(wh_secretbox_seal(&sb, "", bin, sizeof(bin), sealed,
                                sizeof(sealed), &slen, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_secretbox_open(&sb, "", sealed, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, bin, sizeof(bin));
    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", NULL, 0, sealed, sizeof(sealed),
                                &slen, err, sizeof(err)),
              WH_OK);
    CHECK_INT(slen, WH_SECRETBOX_OVERHEAD);
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, slen, NULL, 0, &plen,
                                err, sizeof(err)),
              WH_OK);
    CHECK_INT(plen, 0);
    wh_secretbox_cleanup(&sb);
}

/* Sealed with Python's cryptography AESGCM (key 00..1f, nonce 00..0b,
 * associated data 0x01 "ep_123"), so the format is readable by other
 * tools. */
static void test_known_answer(void)
{
    static const char sealed_hex[] =
        "01000102030405060708090a0b306aa57ea6ba8f7dc610aef989ae3334f2a4d343"
        "9a2e0f38002ea9d547206f804d71e29dfcb69fee4f20b7fa53fa6898a5ac7522dffe";
    static const char empty_hex[] =
        "01000102030405060708090a0b021c41a565ec06057d1731aa725debe8";
    unsigned char sealed[128];
    char plain[128], err[WH_ERRLEN];
    size_t plen = 0;

    int n = hex_to_bytes(sealed_hex, sealed, sizeof(sealed));
    CHECK_INT(n, 67);
    wh_secretbox b64 = box(KEY_B64), hex = box(KEY_HEX);
    CHECK_MEM(b64.key, sizeof(b64.key), hex.key, sizeof(hex.key));
    CHECK_INT(wh_secretbox_open(&b64, "ep_123", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK_INT(wh_secretbox_open(&hex, "ep_12", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);

    n = hex_to_bytes(empty_hex, sealed, sizeof(sealed));
    CHECK_INT(n, WH_SECRETBOX_OVERHEAD);
    CHECK_INT(wh_secretbox_open(&hex, "", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_INT(plen, 0);
}

static void test_wrong_key_and_aad(void)
{
    unsigned char sealed[128];
    char plain[128], err[WH_ERRLEN], other[WH_SECRETBOX_KEY_TEXT_LEN];
    size_t slen = 0, plen = 99;

    wh_secretbox sb = box(KEY_B64);
    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", SECRET, strlen(SECRET), sealed,
                                sizeof(sealed), &slen, err, sizeof(err)),
              WH_OK);

    CHECK_INT(wh_secretbox_generate_key(other, sizeof(other)), WH_OK);
    wh_secretbox wrong = box(other);
    memset(plain, 'Q', sizeof(plain));
    CHECK_INT(wh_secretbox_open(&wrong, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
    CHECK_INT(plen, 0);
    /* nothing decrypted under the wrong key is left behind */
    for (size_t i = 0; i < strlen(SECRET); i++)
        CHECK(plain[i] == 0);

    /* a key differing in one bit */
    wh_secretbox near = sb;
    near.key[31] ^= 0x80;
    CHECK_INT(wh_secretbox_open(&near, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);

    /* the row moved to another endpoint */
    static const char *aads[] = {"ep_2", "ep_", "ep_1 ", "", "EP_1"};
    for (size_t i = 0; i < WH_ARRAY_LEN(aads); i++) {
        CHECK_INT(wh_secretbox_open(&sb, aads[i], sealed, slen, plain,
                                    sizeof(plain), &plen, err, sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, auth_err);
    }
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
}

static void test_tampering(void)
{
    unsigned char sealed[128], copy[128];
    char plain[128], err[WH_ERRLEN];
    size_t slen = 0, plen = 0;

    wh_secretbox sb = box(KEY_HEX);
    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", SECRET, strlen(SECRET), sealed,
                                sizeof(sealed), &slen, err, sizeof(err)),
              WH_OK);

    /* every byte after the version: nonce, ciphertext, tag */
    int failures = 0;
    for (size_t i = 1; i < slen; i++) {
        memcpy(copy, sealed, slen);
        copy[i] ^= 0x01;
        if (wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                              &plen, err, sizeof(err)) != WH_ERR ||
            strcmp(err, auth_err) != 0)
            failures++;
    }
    CHECK_INT(failures, 0);

    /* the version byte */
    memcpy(copy, sealed, slen);
    copy[0] = 2;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret has unknown version 2 (expected 1)");
    copy[0] = 0;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret has unknown version 0 (expected 1)");

    /* an extra byte appended shifts the tag */
    memcpy(copy, sealed, slen);
    copy[slen] = 0;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen + 1, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
}

static void test_truncated(void)
{
    unsigned char sealed[128];
    char plain[128], err[WH_ERRLEN];
    size_t slen = 0, plen = 0;

    wh_secretbox sb = box(KEY_B64);
    CHECK_INT(wh_secretbox_seal(&sb, "ep_1", SECRET, strlen(SECRET), sealed,
                                sizeof(sealed), &slen, err, sizeof(err)),
              WH_OK);
    /* shorter than the fixed parts */
    for (size_t n = 0; n < WH_SECRETBOX_OVERHEAD; n++) {
        CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, n, plain,
                                    sizeof(plain), &plen, err, sizeof(err)),
                  WH_ERR);
        char want[WH_ERRLEN];
        snprintf(want, sizeof(want),
                 "sealed secret truncated (%zu bytes, minimum 29)", n);
        CHECK_STR(err, want);
    }
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", NULL, 0, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    /* long enough to parse but cut short: the tag no longer matches */
    for (size_t n = WH_SECRETBOX_OVERHEAD; n < slen; n++) {
        CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, n, plain,
                                    sizeof(plain), &plen, err, sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, auth_err);
    }
}

static void test_key_text(void)
{
    wh_secretbox sb;
    char err[WH_ERRLEN];
    static const char *form = "32 bytes, base64 or hex encoded";

    CHECK_INT(wh_secretbox_init(&sb, KEY_B64, err, sizeof(err)), WH_OK);
    CHECK_INT(sb.key[0], 0);
    CHECK_INT(sb.key[31], 0x1f);
    CHECK_INT(wh_secretbox_init(&sb, KEY_HEX, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_secretbox_init(&sb,
                                "000102030405060708090A0B0C0D0E0F"
                                "101112131415161718191A1B1C1D1E1F",
                                err, sizeof(err)),
              WH_OK);
    CHECK_INT(sb.key[10], 0x0a);

    static const char *bad[] = {
        /* base64 without padding (43), of 33 bytes (44, no '='), one
         * character off the alphabet, URL-safe, spaces */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh!=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-=",
        " AECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        /* base64 of 31 bytes padded to 44 characters */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",
        /* hex: 63, 65, non-hex digit, "0x" prefix */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
        "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        /* a "whsec_" endpoint secret by mistake, a short password */
        SECRET,
        "hunter2",
    };
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        memset(&sb, 0xAA, sizeof(sb));
        err[0] = '\0';
        CHECK_INT(wh_secretbox_init(&sb, bad[i], err, sizeof(err)), WH_ERR);
        CHECK(strstr(err, "WEBHOOK_SECRET_KEY must be ") == err);
        CHECK(strstr(err, form) != NULL);
        /* the key text is never echoed */
        CHECK(strstr(err, "AAECAw") == NULL && strstr(err, "hunter") == NULL &&
              strstr(err, "0102030405") == NULL);
        /* nothing of a bad key is kept */
        static const wh_secretbox zero;
        CHECK_MEM(&sb, sizeof(sb), &zero, sizeof(zero));
    }
    CHECK_INT(wh_secretbox_init(&sb, "hunter2", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "WEBHOOK_SECRET_KEY must be 32 bytes, base64 or hex "
                   "encoded (got 7 characters, expected 44 or 64)");
    CHECK_INT(wh_secretbox_init(&sb, "", err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "WEBHOOK_SECRET_KEY is not set (32 bytes, base64 or hex "
                   "encoded)");
    CHECK_INT(wh_secretbox_init(&sb, NULL, err, sizeof(err)), WH_ERR);

    /* a very long value is refused after looking at its first 65 bytes */
    char *huge = malloc(100000);
    memset(huge, 'a', 100000 - 1);
    huge[100000 - 1] = '\0';
    CHECK_INT(wh_secretbox_init(&sb, huge, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "more than 64 characters") != NULL);
    free(huge);

    CHECK_INT(wh_secretbox_init(&sb, "x", NULL, 0), WH_ERR);
}

static void test_generate_key(void)
{
    char a[WH_SECRETBOX_KEY_TEXT_LEN], b[WH_SECRETBOX_KEY_TEXT_LEN];
    char err[WH_ERRLEN];
    wh_secretbox sb;

    CHECK_INT(wh_secretbox_generate_key(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(b, sizeof(b)), WH_OK);
    CHECK(strcmp(a, b) != 0);
    CHECK_INT(wh_secretbox_init(&sb, a, err, sizeof(err)), WH_OK);
    /* cap bound: exactly 45 works, 44 does not */
    char c[64];
    CHECK_INT(wh_secretbox_generate_key(c, 44), WH_ERR);
    CHECK_STR(c, "");
    CHECK_INT(wh_secretbox_generate_key(c, 45), WH_OK);
    CHECK_INT(strlen(c), 44);
    CHECK_INT(wh_secretbox_generate_key(NULL, 0), WH_ERR);
}

static void test_limits(void)
{
    wh_secretbox sb = box(KEY_B64);
    char err[WH_ERRLEN];
    size_t slen = 0, plen = 0;
    size_t big = WH_SECRETBOX_PLAIN_MAX + WH_SECRETBOX_OVERHEAD + 1;
    unsigned char *sealed = calloc(1, big);
    unsigned char *plain = calloc(1, big);

    CHECK_INT(wh_secretbox_sealed_len(0), WH_SECRETBOX_OVERHEAD);
    CHECK_INT(wh_secretbox_sealed_len(WH_SECRETBOX_PLAIN_MAX),
              WH_SECRETBOX_PLAIN_MAX + WH_SECRETBOX_OVERHEAD);
    CHECK_INT(wh_secretbox_sealed_len(WH_SECRETBOX_PLAIN_MAX + 1), 0);
    CHECK_INT(wh_secretbox_sealed_len((size_t)-1), 0);

    /* the largest plaintext round-trips; one byte more is refused */
    for (size_t i = 0; i < WH_SECRETBOX_PLAIN_MAX + 1; i++)
        plain[i] = (unsigned char)i;
    CHECK_INT(wh_secretbox_seal(&sb, "ep", plain, WH_SECRETBOX_PLAIN_MAX,
                                sealed, big, &slen, err, sizeof(err)),
              WH_OK);
    unsigned char *back = calloc(1, big);
    CHECK_INT(wh_secretbox_open(&sb, "ep", sealed, slen, back,
                                WH_SECRETBOX_PLAIN_MAX, &plen, err,
                                sizeof(err)),
              WH_OK);
    CHECK_MEM(back, plen, plain, (size_t)WH_SECRETBOX_PLAIN_MAX);
    CHECK_INT(wh_secretbox_seal(&sb, "ep", plain, WH_SECRETBOX_PLAIN_MAX + 1,
                                sealed, big, &slen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "secret too long to seal (4097 bytes, maximum 4096)");
    CHECK_INT(slen, 0);
    CHECK_INT(wh_secretbox_open(&sb, "ep", sealed, big, back, big, &plen, err,
                                sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret too long (4126 bytes, maximum 4125)");

    /* output buffers one byte too small */
    unsigned char small[128];
    char out[64];
    CHECK_INT(wh_secretbox_seal(&sb, "ep", SECRET, strlen(SECRET), small,
                                strlen(SECRET) + WH_SECRETBOX_OVERHEAD - 1,
                                &slen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret needs 67 bytes, buffer has 66");
    CHECK_INT(wh_secretbox_seal(&sb, "ep", SECRET, strlen(SECRET), small,
                                strlen(SECRET) + WH_SECRETBOX_OVERHEAD, &slen,
                                err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_secretbox_open(&sb, "ep", small, slen, out,
                                strlen(SECRET) - 1, &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "opened secret needs 38 bytes, buffer has 37");
    CHECK_INT(plen, 0);
    CHECK_INT(wh_secretbox_open(&sb, "ep", small, slen, out, strlen(SECRET),
                                &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(out, plen, SECRET, strlen(SECRET));

    /* aad length: WH_SECRETBOX_AAD_MAX bytes are fine, one more is not */
    char aad[WH_SECRETBOX_AAD_MAX + 2];
    memset(aad, 'e', WH_SECRETBOX_AAD_MAX);
    aad[WH_SECRETBOX_AAD_MAX] = '\0';
    CHECK_INT(wh_secretbox_seal(&sb, aad, SECRET, strlen(SECRET), small,
                                sizeof(small), &slen, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_secretbox_open(&sb, aad, small, slen, out, sizeof(out),
                                &plen, err, sizeof(err)),
              WH_OK);
    aad[WH_SECRETBOX_AAD_MAX] = 'e';
    aad[WH_SECRETBOX_AAD_MAX + 1] = '\0';
    CHECK_INT(wh_secretbox_seal(&sb, aad, SECRET, strlen(SECRET), small,
                                sizeof(small), &slen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "secretbox aad too long (maximum 256 bytes)");
    CHECK_INT(wh_secretbox_open(&sb, aad, small, sizeof(small), out,
                                sizeof(out), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "secretbox aad too long (maximum 256 bytes)");

    free(back);
    free(plain);
    free(sealed);
}

TEST_MAIN(test_round_trip, test_known_answer, test_wrong_key_and_aad,
          test_tampering, test_truncated, test_key_text, test_generate_key,
          test_limits)
