/* Unit tests for lib/tokens.c without a Postgres: scope names, the token
 * id check, splitting a presented token into its id and SHA-256 (against
 * hashes Python's hashlib computed), the constant-time comparison, the
 * usable rules at their boundaries, and everything refused before any
 * database access: a malformed token in wh_tokens_verify and every bad
 * spec in wh_tokens_create (db is NULL there, so a query would crash). */
#include <stdlib.h>

#include "base64.h"
#include "test.h"
#include "tokens.h"

/* A token by the documented rules: prefix, the id's 16 characters, "_",
 * base64url (unpadded) of the 32 bytes 0, 1, ..., 31. */
static const char built[] =
    "wht_abcdefghijklmnop_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
/* hashlib.sha256(built).hexdigest() */
static const char built_sha256[] =
    "dcae8f96756c45a23745f6639e743ff24e74adeb66d6c40a6053fd5612bcc5d8";
/* Every character class of both parts: 2-7 in the id, - and _ in the
 * secret. */
static const char edgy[] =
    "wht_a2b3c4d5e6f7zz77_---------------------______________________";
static const char edgy_sha256[] =
    "699c85d472eefc05d17ba736216d61860f627d1503a7d1252f74b4c56a1d7018";

static void unhex(const char *hex, unsigned char out[32])
{
    for (size_t i = 0; i < 32; i++)
        out[i] = (unsigned char)(wh_hex_value(hex[2 * i]) * 16 +
                                 wh_hex_value(hex[2 * i + 1]));
}

static void test_scope_names(void)
{
    static const wh_token_scope all[] = {WH_SCOPE_ADMIN, WH_SCOPE_APP,
                                         WH_SCOPE_INGEST, WH_SCOPE_READ};
    static const char *const names[] = {"admin", "app", "ingest", "read"};
    for (size_t i = 0; i < WH_ARRAY_LEN(all); i++) {
        wh_token_scope s = WH_SCOPE_READ;
        CHECK_STR(wh_token_scope_name(all[i]), names[i]);
        CHECK_INT(wh_token_scope_parse(names[i], &s), WH_OK);
        CHECK_INT(s, all[i]);
    }
    static const char *const bad[] = {"", "Admin", "apps", "ad", "read ",
                                      "*"};
    wh_token_scope s = WH_SCOPE_APP;
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++)
        CHECK_INT(wh_token_scope_parse(bad[i], &s), WH_ERR);
    CHECK_INT(wh_token_scope_parse(NULL, &s), WH_ERR);
    CHECK_INT(s, WH_SCOPE_APP);               /* untouched on failure */
    CHECK_STR(wh_token_scope_name((wh_token_scope)42), "?");
}

static void test_check_id(void)
{
    char err[WH_ERRLEN];
    CHECK_INT(wh_tokens_check_id("tok_abcdefghijklmnop", err, sizeof(err)),
              WH_OK);
    CHECK_INT(wh_tokens_check_id("tok_234567zzzzzzzzzz", err, sizeof(err)),
              WH_OK);
    static const char *const bad[] = {
        "", "tok_", "tok_abcdefghijklmno", "tok_abcdefghijklmnopq",
        "tok_ABCDEFGHIJKLMNOP", "tok_abcdefghijklmno1", "tok_abcdefghijklmn8a",
        "ep_abcdefghijklmnopq", "tik_abcdefghijklmnop",
        "tok_abcdefghijklmno/"};
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        CHECK_INT(wh_tokens_check_id(bad[i], err, sizeof(err)), WH_ERR);
        CHECK(strstr(err, "is not a token id") != NULL);
    }
    CHECK_INT(wh_tokens_check_id(NULL, err, sizeof(err)), WH_ERR);
}

static void test_split_well_formed(void)
{
    char id[WH_TOKEN_ID_MAX];
    unsigned char hash[32], want[32];
    CHECK_INT(strlen(built), 64);
    CHECK_INT(wh_tokens_split(built, id, hash), WH_OK);
    CHECK_STR(id, "tok_abcdefghijklmnop");
    unhex(built_sha256, want);
    CHECK_MEM(hash, 32, want, 32);
    CHECK_INT(wh_tokens_split(edgy, id, hash), WH_OK);
    CHECK_STR(id, "tok_a2b3c4d5e6f7zz77");
    unhex(edgy_sha256, want);
    CHECK_MEM(hash, 32, want, 32);
    /* the secret part is the base64url of the 32 bytes, as documented */
    unsigned char raw[32];
    size_t n = 0;
    char std[45];
    memcpy(std, built + 21, 43);
    for (size_t i = 0; i < 43; i++)
        std[i] = std[i] == '-' ? '+' : std[i] == '_' ? '/' : std[i];
    CHECK_INT(wh_base64_decode(std, 43, raw, sizeof(raw), &n), WH_OK);
    CHECK_INT(n, 32);
    CHECK_INT(raw[0], 0);
    CHECK_INT(raw[31], 31);
}

/* t with byte i replaced by c (length unchanged). */
static int split_with(const char *t, size_t i, char c)
{
    char buf[WH_TOKEN_TEXT_MAX], id[WH_TOKEN_ID_MAX];
    unsigned char hash[32];
    wh_strlcpy(buf, t, sizeof(buf));
    buf[i] = c;
    return wh_tokens_split(buf, id, hash);
}

static void test_split_refused(void)
{
    char id[WH_TOKEN_ID_MAX], buf[WH_TOKEN_TEXT_MAX + 8];
    unsigned char hash[32];
    /* wrong prefix */
    CHECK_INT(split_with(built, 0, 'W'), WH_ERR);
    CHECK_INT(split_with(built, 2, 'x'), WH_ERR);
    CHECK_INT(split_with(built, 3, '-'), WH_ERR);
    CHECK_INT(wh_tokens_split("whsec_abcdefghijklmnop_AAECAwQFBgcICQoLDA0"
                              "ODxAREhMUFRYXGBkaGxwdHh", id, hash), WH_ERR);
    /* missing separator: replaced, or dropped (one byte short) */
    CHECK_INT(split_with(built, 20, 'a'), WH_ERR);
    CHECK_INT(split_with(built, 20, '-'), WH_ERR);
    snprintf(buf, sizeof(buf), "wht_abcdefghijklmnop%s", built + 21);
    CHECK_INT(wh_tokens_split(buf, id, hash), WH_ERR);
    /* bad characters in the id part, then in the secret part */
    CHECK_INT(split_with(built, 4, 'A'), WH_ERR);
    CHECK_INT(split_with(built, 10, '1'), WH_ERR);
    CHECK_INT(split_with(built, 19, '8'), WH_ERR);
    CHECK_INT(split_with(built, 12, '_'), WH_ERR);
    CHECK_INT(split_with(built, 30, '+'), WH_ERR);
    CHECK_INT(split_with(built, 40, '/'), WH_ERR);
    CHECK_INT(split_with(built, 63, '='), WH_ERR);
    CHECK_INT(split_with(built, 50, ' '), WH_ERR);
    CHECK_INT(split_with(built, 45, '\xc3'), WH_ERR);
    /* too short, too long, empty, NULL */
    CHECK_INT(split_with(built, 63, '\0'), WH_ERR);
    snprintf(buf, sizeof(buf), "%sA", built);
    CHECK_INT(wh_tokens_split(buf, id, hash), WH_ERR);
    snprintf(buf, sizeof(buf), "%s\n", built);
    CHECK_INT(wh_tokens_split(buf, id, hash), WH_ERR);
    CHECK_INT(wh_tokens_split("", id, hash), WH_ERR);
    CHECK_INT(wh_tokens_split(NULL, id, hash), WH_ERR);
    /* never reads past WH_TOKEN_TEXT_MAX bytes: a heap block of exactly
     * that size without a NUL (AddressSanitizer sees any byte beyond) */
    char *unterminated = malloc(WH_TOKEN_TEXT_MAX);
    CHECK(unterminated != NULL);
    if (unterminated) {
        memcpy(unterminated, built, 64);
        memset(unterminated + 64, 'A', WH_TOKEN_TEXT_MAX - 64);
        CHECK_INT(wh_tokens_split(unterminated, id, hash), WH_ERR);
        free(unterminated);
    }
}

static void test_hash_equal(void)
{
    unsigned char a[32], b[32];
    unhex(built_sha256, a);
    memcpy(b, a, 32);
    CHECK(wh_tokens_hash_equal(a, b));
    b[0] ^= 1;
    CHECK(!wh_tokens_hash_equal(a, b));
    b[0] ^= 1;
    b[31] ^= 0x80;
    CHECK(!wh_tokens_hash_equal(a, b));
    unhex(edgy_sha256, b);
    CHECK(!wh_tokens_hash_equal(a, b));
}

static void test_usable(void)
{
    char why[64];
    wh_token t;
    memset(&t, 0, sizeof(t));
    /* never expires, never revoked: usable at any time */
    CHECK_INT(wh_tokens_usable(&t, 0, why, sizeof(why)), WH_OK);
    CHECK_INT(wh_tokens_usable(&t, INT64_MAX, why, sizeof(why)), WH_OK);
    /* expires at 1000: usable up to 999, expired from 1000 on */
    t.expires_at_s = 1000;
    CHECK_INT(wh_tokens_usable(&t, 999, why, sizeof(why)), WH_OK);
    why[0] = '\0';
    CHECK_INT(wh_tokens_usable(&t, 1000, why, sizeof(why)), WH_DECLINED);
    CHECK_STR(why, "expired");
    CHECK_INT(wh_tokens_usable(&t, 1001, why, sizeof(why)), WH_DECLINED);
    /* revoked: refused whenever, and revocation is named over expiry */
    t.expires_at_s = 0;
    t.revoked_at_s = 500;
    CHECK_INT(wh_tokens_usable(&t, 400, why, sizeof(why)), WH_DECLINED);
    CHECK_STR(why, "revoked");
    t.expires_at_s = 1000;
    CHECK_INT(wh_tokens_usable(&t, 2000, why, sizeof(why)), WH_DECLINED);
    CHECK_STR(why, "revoked");
}

static void test_verify_malformed_without_db(void)
{
    char why[64];
    wh_token t;
    static const char *const bad[] = {
        "", "Bearer x", "wht_abcdefghijklmnop", "whsec_AAAA",
        "wht_abcdefghijklmnop_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8x"};
    for (size_t i = 0; i < WH_ARRAY_LEN(bad); i++) {
        why[0] = '\0';
        /* db NULL: a malformed token must be refused before any query */
        CHECK_INT(wh_tokens_verify(NULL, bad[i], 0, &t, why, sizeof(why)),
                  WH_DECLINED);
        CHECK_STR(why, "malformed");
        CHECK(t.allow_cidrs == NULL);
    }
    CHECK_INT(wh_tokens_verify(NULL, NULL, 0, &t, why, sizeof(why)),
              WH_DECLINED);
}

/* wh_tokens_create refuses spec with a message containing want, before
 * any database access. */
static void refused(const wh_token_spec *spec, const char *want)
{
    char token[WH_TOKEN_TEXT_MAX], id[WH_TOKEN_ID_MAX], err[WH_ERRLEN] = "";
    CHECK_INT(wh_tokens_create(NULL, spec, 1000, token, id, err, sizeof(err)),
              WH_DECLINED);
    if (!strstr(err, want))
        fprintf(stderr, "  err \"%s\", expected \"%s\"\n", err, want);
    CHECK(strstr(err, want) != NULL);
    CHECK_STR(token, "");
    CHECK_STR(id, "");
}

static void test_create_refuses_bad_specs(void)
{
    char long_name[WH_TOKEN_NAME_MAX + 2];
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    const wh_token_spec ok = {.name = "ci", .scope = WH_SCOPE_ADMIN};
    wh_token_spec s;

    s = ok, s.name = NULL;
    refused(&s, "--name: must not be empty");
    s = ok, s.name = "";
    refused(&s, "--name: must not be empty");
    s = ok, s.name = long_name;
    refused(&s, "--name: at most 100 bytes");
    s = ok, s.name = "tab\there";
    refused(&s, "--name: no control characters");
    s = ok, s.name = "bad \xff utf8";
    refused(&s, "--name: not valid UTF-8");
    s = ok, s.app = "has space", s.scope = WH_SCOPE_APP;
    refused(&s, "--app: ");
    s = ok, s.scope = WH_SCOPE_APP;
    refused(&s, "--scope: app needs --app");
    s = ok, s.app = "acme";
    refused(&s, "--scope: admin tokens reach every app");
    s = ok, s.scope = (wh_token_scope)7;
    refused(&s, "--scope: must be admin, app, ingest or read");
    s = ok, s.allow_cidrs = "10.0.0.0/33";
    refused(&s, "--allow-cidr: ");
    s = ok, s.allow_cidrs = "10.1.2.3/8";
    refused(&s, "--allow-cidr: ");
    s = ok, s.allow_cidrs = "not-an-address";
    refused(&s, "--allow-cidr: ");
    s = ok, s.allow_cidrs = " ";
    refused(&s, "--allow-cidr: no range given");
    s = ok, s.rate_limit_per_s = -1;
    refused(&s, "--rate-limit: 1 to 1000000");
    s = ok, s.rate_limit_per_s = WH_TOKEN_RATE_MAX + 1;
    refused(&s, "--rate-limit: 1 to 1000000");
    s = ok, s.expires_in_s = WH_TOKEN_EXPIRES_MAX_S + 1;
    refused(&s, "--expires: at most 10 years");
    s = ok, s.expires_in_s = -1;
    refused(&s, "--expires: ");
}

TEST_MAIN(test_scope_names, test_check_id, test_split_well_formed,
          test_split_refused, test_hash_equal, test_usable,
          test_verify_malformed_without_db, test_create_refuses_bad_specs)
