/*
 * test_secretbox.c - unit tests for secretbox.c: key text parsing (base64
 * and hex), key ids, sealing round trips, known answers of both formats
 * computed with another AES-GCM implementation, previous keys (the list's
 * parsing, its bound, the files) and every way opening must fail: a key
 * id not configured, wrong key, wrong aad, tampered (key id included) or
 * truncated input, unknown version, small buffers, and the size limits.
 */
#include "secretbox.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* Key bytes 00 01 .. 1f in both accepted encodings. */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_HEX                                                          \
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

/* A version 1 value that fails authentication under every key. */
static const char *auth_err =
    "secret failed authentication (wrong WEBHOOK_SECRET_KEY?)";
/* A version 2 value that fails authentication under the key it names. */
static const char *auth_err2 =
    "secret failed authentication (tampered with, or sealed for another "
    "row)";
/* SHA-256("webhook-secretbox key id" || 00 01 .. 1f), first 4 bytes */
#define KEY_ID "985a8f7b"
/* SECRET sealed in version 1 under key 00..1f for aad "ep_123" (see
 * test_known_answer) */
#define V1_KNOWN_HEX                                                     \
    "01000102030405060708090a0b306aa57ea6ba8f7dc610aef989ae3334f2a4d343" \
    "9a2e0f38002ea9d547206f804d71e29dfcb69fee4f20b7fa53fa6898a5ac7522dffe"

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
    CHECK_INT(sealed[0], 2);
    CHECK_MEM(sealed + 1, 4, sb.keys[0].id, 4);
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
    CHECK(memcmp(sealed + 5, sealed2 + 5, WH_SECRETBOX_NONCE_LEN) != 0);
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

/* Sealed with Python's cryptography AESGCM (key 00..1f, nonce 00..0b):
 * version 2 with associated data 0x02, the key id and "ep_123"; version 1
 * (as sealed before key ids) with 0x01 "ep_123". So the format is
 * readable by other tools, and rows sealed before key ids still open. */
static void test_known_answer(void)
{
    static const char v2_hex[] =
        "02985a8f7b000102030405060708090a0b306aa57ea6ba8f7dc610aef989ae3334"
        "f2a4d3439a2e0f38002ea9d547206f804d71e29dfcb6d0449352a3030a37c0094e"
        "0fb73c0ca3";
    static const char empty_hex[] =
        "01000102030405060708090a0b021c41a565ec06057d1731aa725debe8";
    unsigned char sealed[128];
    char plain[128], err[WH_ERRLEN];
    size_t plen = 0;

    wh_secretbox b64 = box(KEY_B64), hex = box(KEY_HEX);
    CHECK_MEM(b64.keys[0].key, 32, hex.keys[0].key, 32);
    int n = hex_to_bytes(v2_hex, sealed, sizeof(sealed));
    CHECK_INT(n, 71);
    CHECK_INT(wh_secretbox_open(&b64, "ep_123", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK(wh_secretbox_is_current(&b64, sealed, (size_t)n));
    CHECK_INT(wh_secretbox_open(&hex, "ep_12", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err2);

    n = hex_to_bytes(V1_KNOWN_HEX, sealed, sizeof(sealed));
    CHECK_INT(n, 67);
    CHECK(!wh_secretbox_is_current(&b64, sealed, (size_t)n));
    CHECK_INT(wh_secretbox_open(&b64, "ep_123", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK_INT(wh_secretbox_open(&hex, "ep_12", sealed, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);

    n = hex_to_bytes(empty_hex, sealed, sizeof(sealed));
    CHECK_INT(n, WH_SECRETBOX_V1_OVERHEAD);
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

    /* another key: its id is not the one the value names */
    CHECK_INT(wh_secretbox_generate_key(other, sizeof(other)), WH_OK);
    wh_secretbox wrong = box(other);
    CHECK_INT(wh_secretbox_open(&wrong, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed under key id " KEY_ID ", which is not configured");
    CHECK_INT(plen, 0);

    /* a key differing in one bit, under the right id: authentication
     * fails and nothing decrypted under it is left behind */
    wh_secretbox near = sb;
    near.keys[0].key[31] ^= 0x80;
    memset(plain, 'Q', sizeof(plain));
    CHECK_INT(wh_secretbox_open(&near, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err2);
    CHECK_INT(plen, 0);
    for (size_t i = 0; i < strlen(SECRET); i++)
        CHECK(plain[i] == 0);

    /* the row moved to another endpoint */
    static const char *aads[] = {"ep_2", "ep_", "ep_1 ", "", "EP_1"};
    for (size_t i = 0; i < WH_ARRAY_LEN(aads); i++) {
        CHECK_INT(wh_secretbox_open(&sb, aads[i], sealed, slen, plain,
                                    sizeof(plain), &plen, err, sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, auth_err2);
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

    /* every byte after the key id: nonce, ciphertext, tag */
    int failures = 0;
    for (size_t i = 1 + WH_SECRETBOX_KEY_ID_LEN; i < slen; i++) {
        memcpy(copy, sealed, slen);
        copy[i] ^= 0x01;
        if (wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                              &plen, err, sizeof(err)) != WH_ERR ||
            strcmp(err, auth_err2) != 0)
            failures++;
    }
    CHECK_INT(failures, 0);

    /* a key id byte: that id is not configured ... */
    memcpy(copy, sealed, slen);
    copy[1] ^= 0x01;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK(strstr(err, "which is not configured") != NULL);
    /* ... and when it is (the same key bytes under the changed id, as a
     * previous key), the id is authenticated: it still fails */
    wh_secretbox relabelled = sb;
    relabelled.keys[1] = sb.keys[0];
    relabelled.keys[1].id[0] ^= 0x01;
    relabelled.nkeys = 2;
    CHECK_INT(wh_secretbox_open(&relabelled, "ep_1", copy, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err2);
    CHECK_INT(wh_secretbox_open(&relabelled, "ep_1", sealed, slen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);

    /* the version byte: 1 reads the key id as nonce, and fails */
    memcpy(copy, sealed, slen);
    copy[0] = 1;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
    copy[0] = 3;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret has unknown version 3 (expected 1 or 2)");
    copy[0] = 0;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret has unknown version 0 (expected 1 or 2)");

    /* an extra byte appended shifts the tag */
    memcpy(copy, sealed, slen);
    copy[slen] = 0;
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", copy, slen + 1, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err2);
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
                 "sealed secret truncated (%zu bytes, minimum 33)", n);
        CHECK_STR(err, want);
    }
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", NULL, 0, plain, sizeof(plain),
                                &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret truncated (0 bytes, minimum 33)");
    /* a version 1 value has no key id: its minimum is 4 bytes less */
    unsigned char v1[WH_SECRETBOX_V1_OVERHEAD] = {1};
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", v1, sizeof(v1) - 1, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret truncated (28 bytes, minimum 29)");
    CHECK_INT(wh_secretbox_open(&sb, "ep_1", v1, sizeof(v1), plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
    /* long enough to parse but cut short: the tag no longer matches */
    for (size_t n = WH_SECRETBOX_OVERHEAD; n < slen; n++) {
        CHECK_INT(wh_secretbox_open(&sb, "ep_1", sealed, n, plain,
                                    sizeof(plain), &plen, err, sizeof(err)),
                  WH_ERR);
        CHECK_STR(err, auth_err2);
    }
}

static void test_key_text(void)
{
    wh_secretbox sb;
    char err[WH_ERRLEN];
    static const char *form = "32 bytes, base64 or hex encoded";

    CHECK_INT(wh_secretbox_init(&sb, KEY_B64, err, sizeof(err)), WH_OK);
    CHECK_INT(sb.keys[0].key[0], 0);
    CHECK_INT(sb.keys[0].key[31], 0x1f);
    CHECK_INT(sb.nkeys, 1);
    CHECK_INT(wh_secretbox_init(&sb, KEY_HEX, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_secretbox_init(&sb,
                                "000102030405060708090A0B0C0D0E0F"
                                "101112131415161718191A1B1C1D1E1F",
                                err, sizeof(err)),
              WH_OK);
    CHECK_INT(sb.keys[0].key[10], 0x0a);

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
    CHECK_STR(err, "sealed secret too long (4130 bytes, maximum 4129)");

    /* output buffers one byte too small */
    unsigned char small[128];
    char out[64];
    CHECK_INT(wh_secretbox_seal(&sb, "ep", SECRET, strlen(SECRET), small,
                                strlen(SECRET) + WH_SECRETBOX_OVERHEAD - 1,
                                &slen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "sealed secret needs 71 bytes, buffer has 70");
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

static void test_key_id(void)
{
    char a[WH_SECRETBOX_KEY_TEXT_LEN], b[WH_SECRETBOX_KEY_TEXT_LEN];
    char ida[WH_SECRETBOX_KEY_ID_TEXT_LEN], idb[WH_SECRETBOX_KEY_ID_TEXT_LEN];

    /* derived from the key: the same in either encoding, every time */
    wh_secretbox b64 = box(KEY_B64), hex = box(KEY_HEX);
    wh_secretbox_current_id(&b64, ida);
    CHECK_STR(ida, KEY_ID);
    wh_secretbox_current_id(&hex, idb);
    CHECK_STR(idb, KEY_ID);
    CHECK_INT(strlen(ida), 8);
    /* not the key's own bytes */
    CHECK(memcmp(b64.keys[0].id, b64.keys[0].key, 4) != 0);

    /* different keys, different ids */
    CHECK_INT(wh_secretbox_generate_key(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(b, sizeof(b)), WH_OK);
    wh_secretbox sa = box(a), sb = box(b), sa2 = box(a);
    wh_secretbox_current_id(&sa, ida);
    wh_secretbox_current_id(&sb, idb);
    CHECK(strcmp(ida, idb) != 0);
    CHECK(strcmp(ida, KEY_ID) != 0);
    wh_secretbox_current_id(&sa2, idb);
    CHECK_STR(ida, idb);
    CHECK_INT(wh_secretbox_previous_count(&sa), 0);
    wh_secretbox_cleanup(&sa);
    CHECK_INT(sa.nkeys, 0);
}

/* A box whose current key is cur and whose previous keys are prev. */
static wh_secretbox box_with(const char *cur, const char *prev)
{
    wh_secretbox sb = box(cur);
    char err[WH_ERRLEN];
    if (wh_secretbox_add_previous(&sb, "PREV", prev, err, sizeof(err)) !=
        WH_OK) {
        fprintf(stderr, "add previous: %s\n", err);
        exit(2);
    }
    return sb;
}

static void test_previous(void)
{
    char a[WH_SECRETBOX_KEY_TEXT_LEN], b[WH_SECRETBOX_KEY_TEXT_LEN];
    char c[WH_SECRETBOX_KEY_TEXT_LEN], err[WH_ERRLEN], plain[128];
    char ida[WH_SECRETBOX_KEY_ID_TEXT_LEN], want[WH_ERRLEN];
    unsigned char under_a[128], under_b[128];
    size_t alen = 0, blen = 0, plen = 0;

    CHECK_INT(wh_secretbox_generate_key(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(b, sizeof(b)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(c, sizeof(c)), WH_OK);
    wh_secretbox only_a = box(a);
    wh_secretbox_current_id(&only_a, ida);
    CHECK_INT(wh_secretbox_seal(&only_a, "ep_1", SECRET, strlen(SECRET),
                                under_a, sizeof(under_a), &alen, err,
                                sizeof(err)),
              WH_OK);

    /* B current, A previous: opens what A sealed, seals under B */
    wh_secretbox ba = box_with(b, a);
    CHECK_INT(wh_secretbox_previous_count(&ba), 1);
    CHECK_INT(wh_secretbox_open(&ba, "ep_1", under_a, alen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK(!wh_secretbox_is_current(&ba, under_a, alen));
    CHECK(wh_secretbox_is_current(&only_a, under_a, alen));
    CHECK_INT(wh_secretbox_seal(&ba, "ep_1", SECRET, strlen(SECRET), under_b,
                                sizeof(under_b), &blen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(under_b + 1, 4, ba.keys[0].id, 4);
    CHECK(wh_secretbox_is_current(&ba, under_b, blen));
    CHECK(!wh_secretbox_is_current(&ba, under_b, WH_SECRETBOX_OVERHEAD - 1));
    /* the previous key never seals: A alone cannot open B's value */
    char idb[WH_SECRETBOX_KEY_ID_TEXT_LEN];
    wh_secretbox_current_id(&ba, idb);
    CHECK_INT(wh_secretbox_open(&only_a, "ep_1", under_b, blen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    snprintf(want, sizeof(want), "sealed under key id %s, which is not "
             "configured", idb);
    CHECK_STR(err, want);

    /* B alone: A's value names A's id, not configured */
    wh_secretbox only_b = box(b);
    CHECK_INT(wh_secretbox_open(&only_b, "ep_1", under_a, alen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    snprintf(want, sizeof(want), "sealed under key id %s, which is not "
             "configured", ida);
    CHECK_STR(err, want);
    /* a previous key that is not the one still fails */
    wh_secretbox bc = box_with(b, c);
    CHECK_INT(wh_secretbox_open(&bc, "ep_1", under_a, alen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, want);
    /* A as the third of three previous keys */
    char d[WH_SECRETBOX_KEY_TEXT_LEN], list[256];
    CHECK_INT(wh_secretbox_generate_key(d, sizeof(d)), WH_OK);
    snprintf(list, sizeof(list), "%s,%s,%s", c, d, a);
    wh_secretbox bcda = box_with(b, list);
    CHECK_INT(wh_secretbox_previous_count(&bcda), 3);
    CHECK_INT(wh_secretbox_open(&bcda, "ep_1", under_a, alen, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));

    /* version 1 (the known answer, key 00..1f) opens with the key as the
     * current one or as any previous one, not without it */
    unsigned char v1[128];
    int n = hex_to_bytes(V1_KNOWN_HEX, v1, sizeof(v1));
    snprintf(list, sizeof(list), "%s %s", c, KEY_B64);
    wh_secretbox as_prev = box_with(b, list), as_cur = box_with(KEY_HEX, c);
    CHECK_INT(wh_secretbox_open(&as_prev, "ep_123", v1, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK_INT(wh_secretbox_open(&as_cur, "ep_123", v1, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_OK);
    CHECK_MEM(plain, plen, SECRET, strlen(SECRET));
    CHECK(!wh_secretbox_is_current(&as_cur, v1, (size_t)n));
    CHECK_INT(wh_secretbox_open(&bc, "ep_123", v1, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
    CHECK_INT(wh_secretbox_open(&as_prev, "ep_12", v1, (size_t)n, plain,
                                sizeof(plain), &plen, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, auth_err);
    wh_secretbox_cleanup(&bcda);
}

static void test_previous_list(void)
{
    char k[5][WH_SECRETBOX_KEY_TEXT_LEN], list[512], err[WH_ERRLEN];
    for (int i = 0; i < 5; i++)
        CHECK_INT(wh_secretbox_generate_key(k[i], sizeof(k[i])), WH_OK);
    wh_secretbox sb;

    /* separators: commas, whitespace, both, empty entries */
    static const char *forms[] = {"%s,%s", "%s %s", " ,%s,, \t%s\n,",
                                  "\n%s\r\n%s\n\n"};
    for (size_t i = 0; i < WH_ARRAY_LEN(forms); i++) {
        sb = box(k[0]);
        snprintf(list, sizeof(list), forms[i], k[1], k[2]);
        CHECK_INT(wh_secretbox_add_previous(&sb, "P", list, err, sizeof(err)),
                  WH_OK);
        CHECK_INT(wh_secretbox_previous_count(&sb), 2);
        CHECK_MEM(sb.keys[2].id, 4, box(k[2]).keys[0].id, 4);
    }
    /* nothing but separators: no previous key */
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", " , \n,", err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);

    /* the bound: 3 previous keys, not 4 */
    snprintf(list, sizeof(list), "%s,%s,%s", k[1], k[2], k[3]);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", list, err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_secretbox_previous_count(&sb), WH_SECRETBOX_PREVIOUS_MAX);
    snprintf(list, sizeof(list), "%s,%s,%s,%s", k[1], k[2], k[3], k[4]);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", list, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "P: more than 3 previous keys");
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);

    /* a bad entry: named by position among the keys, never quoted */
    snprintf(list, sizeof(list), "%s,,hunter2,%s", k[1], k[2]);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "WEBHOOK_SECRET_KEY_PREVIOUS",
                                        list, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "WEBHOOK_SECRET_KEY_PREVIOUS: key 2 must be 32 bytes, "
                   "base64 or hex encoded (got 7 characters, expected 44 "
                   "or 64)");
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);
    /* a 44-character entry that is not base64, a 64 one not hex */
    char bad[WH_SECRETBOX_KEY_TEXT_LEN];
    memcpy(bad, k[2], sizeof(bad));
    bad[3] = '!';
    snprintf(list, sizeof(list), "%s %s %s", k[1], k[3], bad);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", list, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "P: key 3 must be 32 bytes, base64 or hex encoded (not "
                   "valid base64 of 32 bytes)");
    CHECK(strstr(err, bad) == NULL);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P",
                                        "000102030405060708090a0b0c0d0e0f1011"
                                        "12131415161718191a1b1c1d1e1z",
                                        err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "P: key 1 must be 32 bytes, base64 or hex encoded (not "
                   "valid hex of 32 bytes)");
    /* the current key again, or one key twice (in another encoding) */
    snprintf(list, sizeof(list), "%s,%s", k[1], k[0]);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", list, err, sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "P: key 2 is the current key (the previous keys are the "
                   "ones it replaced)");
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);
    sb = box(k[0]);
    CHECK_INT(wh_secretbox_add_previous(&sb, "P", KEY_B64 " " KEY_HEX, err,
                                        sizeof(err)),
              WH_ERR);
    CHECK_STR(err, "P: key 2 is key 1 again");
    /* a previous key that fails keeps none of the others */
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);
    static const wh_secretbox_key zero;
    CHECK_MEM(&sb.keys[1], sizeof(zero), &zero, sizeof(zero));
}

/* Writes text to a new file under /tmp; its name into path (64 bytes). */
static void temp_file(char *path, const char *text)
{
    snprintf(path, 64, "/tmp/test_secretbox.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror("temp file");
        exit(2);
    }
    close(fd);
}

static void test_load(void)
{
    char a[WH_SECRETBOX_KEY_TEXT_LEN], b[WH_SECRETBOX_KEY_TEXT_LEN];
    char c[WH_SECRETBOX_KEY_TEXT_LEN], text[512], err[WH_ERRLEN];
    char cur_file[64], prev_file[64], bad_file[64], big_file[64], want[512];
    wh_secretbox sb;

    CHECK_INT(wh_secretbox_generate_key(a, sizeof(a)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(b, sizeof(b)), WH_OK);
    CHECK_INT(wh_secretbox_generate_key(c, sizeof(c)), WH_OK);
    snprintf(text, sizeof(text), "\n  %s\n", a);
    temp_file(cur_file, text);
    snprintf(text, sizeof(text), "%s\n\n%s\n", b, c);
    temp_file(prev_file, text);
    snprintf(text, sizeof(text), "%s\nnot a key\n", b);
    temp_file(bad_file, text);
    char *huge = calloc(1, 2000);
    memset(huge, '\n', 1100);
    temp_file(big_file, huge);
    free(huge);

    /* current from text or file, previous from text or file */
    wh_secretbox_source src = {.key = a, .previous = b};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_secretbox_previous_count(&sb), 1);
    src = (wh_secretbox_source){.key_file = cur_file,
                                .previous_file = prev_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_secretbox_previous_count(&sb), 2);
    CHECK_MEM(sb.keys[0].key, 32, box(a).keys[0].key, 32);
    CHECK_MEM(sb.keys[2].key, 32, box(c).keys[0].key, 32);
    /* no previous key is fine; "" is not given */
    src = (wh_secretbox_source){.key = a, .previous = "", .previous_file = ""};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_OK);
    CHECK_INT(wh_secretbox_previous_count(&sb), 0);

    /* refusals, each leaving no key */
    src = (wh_secretbox_source){.key = a, .previous = b,
                                .previous_file = prev_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "set WEBHOOK_SECRET_KEY_PREVIOUS or "
                   "WEBHOOK_SECRET_KEY_PREVIOUS_FILE, not both");
    CHECK_INT(sb.nkeys, 0);
    src = (wh_secretbox_source){.key = a, .previous = "x"};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "WEBHOOK_SECRET_KEY_PREVIOUS: key 1 must be") == err);
    CHECK_INT(sb.nkeys, 0);
    src = (wh_secretbox_source){.key = a, .previous = a};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "WEBHOOK_SECRET_KEY_PREVIOUS: key 1 is the current key "
                   "(the previous keys are the ones it replaced)");
    src = (wh_secretbox_source){.key = a, .previous_file = bad_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    snprintf(want, sizeof(want), "WEBHOOK_SECRET_KEY_PREVIOUS_FILE %s: key 2 "
             "must be 32 bytes, base64 or hex encoded (got 3 characters, "
             "expected 44 or 64)", bad_file);
    CHECK_STR(err, want);
    CHECK(strstr(err, b) == NULL);
    src = (wh_secretbox_source){.key = a, .previous_file = "/nonexistent"};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "WEBHOOK_SECRET_KEY_PREVIOUS_FILE /nonexistent: No such "
                   "file or directory");
    src = (wh_secretbox_source){.key = a, .previous_file = big_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    snprintf(want, sizeof(want), "WEBHOOK_SECRET_KEY_PREVIOUS_FILE %s: longer "
             "than 1 KiB, not a key", big_file);
    CHECK_STR(err, want);
    src = (wh_secretbox_source){.key_file = big_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    snprintf(want, sizeof(want), "WEBHOOK_SECRET_KEY_FILE %s: longer than 1 "
             "KiB, not a key", big_file);
    CHECK_STR(err, want);
    src = (wh_secretbox_source){.key = a, .key_file = cur_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK_STR(err, "set WEBHOOK_SECRET_KEY or WEBHOOK_SECRET_KEY_FILE, not "
                   "both");
    src = (wh_secretbox_source){.previous = b};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "WEBHOOK_SECRET_KEY is not set, nor "
                      "WEBHOOK_SECRET_KEY_FILE") == err);
    src = (wh_secretbox_source){.key_file = bad_file};
    CHECK_INT(wh_secretbox_load(&sb, &src, err, sizeof(err)), WH_ERR);
    CHECK(strstr(err, "holds no valid key") != NULL);
    CHECK(strstr(err, "not a key") == NULL && strstr(err, b) == NULL);
    unlink(cur_file);
    unlink(prev_file);
    unlink(bad_file);
    unlink(big_file);
}

TEST_MAIN(test_round_trip, test_known_answer, test_wrong_key_and_aad,
          test_tampering, test_truncated, test_key_text, test_generate_key,
          test_limits, test_key_id, test_previous, test_previous_list,
          test_load)
