/*
 * test_base64.c - unit tests for lib/base64.c: the RFC 4648 section 10
 * vectors both ways, unpadded input, every byte value round trip, the
 * output capacity bound and malformed input.
 */
#include <string.h>

#include "base64.h"
#include "test.h"

static const struct {
    const char *plain, *enc;
} vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_lengths(void)
{
    CHECK_INT(wh_base64_encoded_len(0), 0);
    CHECK_INT(wh_base64_encoded_len(1), 4);
    CHECK_INT(wh_base64_encoded_len(2), 4);
    CHECK_INT(wh_base64_encoded_len(3), 4);
    CHECK_INT(wh_base64_encoded_len(4), 8);
    CHECK_INT(wh_base64_encoded_len(32), 44);
    CHECK_INT(wh_base64_decoded_max(0), 0);
    CHECK_INT(wh_base64_decoded_max(2), 1);
    CHECK_INT(wh_base64_decoded_max(3), 2);
    CHECK_INT(wh_base64_decoded_max(4), 3);
    CHECK_INT(wh_base64_decoded_max(44), 33);
}

static void test_rfc4648_vectors(void)
{
    for (size_t i = 0; i < WH_ARRAY_LEN(vectors); i++) {
        const char *p = vectors[i].plain, *e = vectors[i].enc;
        char enc[16];
        unsigned char dec[16];
        size_t n = 99;

        memset(enc, 'X', sizeof(enc));
        CHECK_INT(wh_base64_encode(p, strlen(p), enc), strlen(e));
        CHECK_STR(enc, e);
        CHECK_INT(wh_base64_encoded_len(strlen(p)), strlen(e));

        CHECK_INT(wh_base64_decode(e, strlen(e), dec, sizeof(dec), &n), WH_OK);
        CHECK_MEM(dec, n, p, strlen(p));
        CHECK(wh_base64_decoded_max(strlen(e)) >= strlen(p));

        /* The same without padding. */
        size_t unpadded = strlen(e);
        while (unpadded > 0 && e[unpadded - 1] == '=')
            unpadded--;
        n = 99;
        CHECK_INT(wh_base64_decode(e, unpadded, dec, sizeof(dec), &n), WH_OK);
        CHECK_MEM(dec, n, p, strlen(p));
        CHECK(wh_base64_decoded_max(unpadded) >= strlen(p));
    }
}

static void test_all_bytes_round_trip(void)
{
    unsigned char src[256], dec[256];
    char enc[345];
    for (int i = 0; i < 256; i++)
        src[i] = (unsigned char)(255 - i);
    for (size_t len = 0; len <= sizeof(src); len++) {
        size_t n = wh_base64_encode(src, len, enc);
        CHECK_INT(n, wh_base64_encoded_len(len));
        CHECK_INT(enc[n], '\0');
        size_t out = 0;
        CHECK_INT(wh_base64_decode(enc, n, dec, sizeof(dec), &out), WH_OK);
        CHECK_MEM(dec, out, src, len);
    }
    /* The alphabet's last two characters. */
    CHECK_INT(wh_base64_encode("\xfb\xff", 2, enc), 4);
    CHECK_STR(enc, "+/8=");
}

static void test_capacity(void)
{
    unsigned char out[6];
    size_t n = 0;
    /* "foobar" needs exactly 6 bytes. */
    CHECK_INT(wh_base64_decode("Zm9vYmFy", 8, out, 6, &n), WH_OK);
    CHECK_INT(n, 6);
    n = 77;
    memset(out, 0, sizeof(out));
    CHECK_INT(wh_base64_decode("Zm9vYmFy", 8, out, 5, &n), WH_ERR);
    CHECK_INT(n, 77);
    CHECK_INT(out[0], 0); /* nothing written */
    CHECK_INT(wh_base64_decode("Zm9vYg==", 8, out, 3, &n), WH_ERR);
    CHECK_INT(wh_base64_decode("Zm9vYg==", 8, out, 4, &n), WH_OK);
    CHECK_INT(n, 4);
    CHECK_INT(wh_base64_decode("Zm8", 3, out, 1, &n), WH_ERR);
    CHECK_INT(wh_base64_decode("", 0, out, 0, &n), WH_OK);
    CHECK_INT(n, 0);
}

static void test_invalid(void)
{
    static const char *const bad[] = {
        "Z",         /* length mod 4 == 1 */
        "Zm9vY",     /* length mod 4 == 1 */
        "Zm9v Yg==", /* whitespace */
        "Zm9v\nYmFy",
        "Zm9vYmF*",  /* outside the alphabet */
        "Zm9v-_==",  /* URL-safe alphabet */
        "Zg=",       /* padding not completing a group */
        "Zg===",
        "Z===",      /* too much padding */
        "====",
        "=",
        "==",
        "Zg==Zg==",  /* padding in the middle */
        "Zm=v",
        "Z=9v",
        "Zm9vYmFy=",
        "Zm9vYmFy====",
    };
    unsigned char out[32];
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        size_t n = 1234;
        int rc = wh_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out),
                                  &n);
        if (rc != WH_ERR)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK_INT(rc, WH_ERR);
        CHECK_INT(n, 1234);
    }
    /* A NUL byte inside the given length is a bad character. */
    size_t n;
    CHECK_INT(wh_base64_decode("Zm9v\0mFy", 8, out, sizeof(out), &n), WH_ERR);
    /* High bytes. */
    CHECK_INT(wh_base64_decode("Zm9\xc3", 4, out, sizeof(out), &n), WH_ERR);
}

static void test_trailing_bits_tolerated(void)
{
    unsigned char out[4];
    size_t n = 0;
    /* "Zh==" has non-zero unused bits; it decodes like "Zg==". */
    CHECK_INT(wh_base64_decode("Zh==", 4, out, sizeof(out), &n), WH_OK);
    CHECK_MEM(out, n, "f", 1);
    CHECK_INT(wh_base64_decode("Zm9=", 4, out, sizeof(out), &n), WH_OK);
    CHECK_MEM(out, n, "fo", 2);
    CHECK_INT(wh_base64_decode("Zh", 2, out, sizeof(out), &n), WH_OK);
    CHECK_MEM(out, n, "f", 1);
}

TEST_MAIN(test_lengths, test_rfc4648_vectors, test_all_bytes_round_trip,
          test_capacity, test_invalid, test_trailing_bits_tolerated)
