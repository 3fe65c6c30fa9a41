/*
 * fuzz_envelope.c - libFuzzer target for the JSON envelope of
 * docs/events.md as lib/codec.c decodes it (content type
 * application/json, and sniffed without one). An accepted envelope holds
 * only valid UTF-8 without NUL in its text fields, its payload bound is
 * exact (one byte less refuses it), sniffing agrees with the content type,
 * and the event survives the protobuf round trips of check.c; a refused
 * one has a reason and dead-letters within the documented prefix. Seeds:
 * corpus/fuzz_envelope/; dictionary: envelope.dict.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "utf8.h"

static void require_text(const char *s)
{
    REQUIRE(s != NULL);
    REQUIRE(wh_utf8_valid(s, strlen(s), NULL));
}

static void require_clean(const wh_event *ev)
{
    require_text(ev->id);
    require_text(ev->app);
    require_text(ev->type);
    require_text(ev->content_type);
    for (size_t i = 0; i < ev->n_endpoints; i++)
        require_text(ev->endpoint_ids[i]);
    for (size_t i = 0; i < ev->n_headers; i++) {
        require_text(ev->headers[i].name);
        require_text(ev->headers[i].value);
    }
}

static void require_payload_bound(const uint8_t *msg, size_t len,
                                  const wh_event *ev)
{
    char err[WH_ERRLEN];
    wh_event_msg *m = NULL;
    REQUIRE(wh_codec_event_decode(msg, len, WH_CT_JSON, ev->payload_len, &m,
                                  err, sizeof(err)) == WH_OK);
    wh_codec_event_free(m);
    if (ev->payload_len == 0)
        return;
    m = (wh_event_msg *)err;
    REQUIRE(wh_codec_event_decode(msg, len, WH_CT_JSON, ev->payload_len - 1,
                                  &m, err, sizeof(err)) == WH_ERR);
    fuzz_require_failure(err, m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[WH_ERRLEN];
    wh_event_msg *m = (wh_event_msg *)err;
    err[0] = '\0';
    if (wh_codec_event_decode(data, size, WH_CT_JSON, WH_PAYLOAD_DEFAULT_MAX,
                              &m, err, sizeof(err)) != WH_OK) {
        fuzz_require_failure(err, m);
        fuzz_dead_letter_raw(data, size, err);
        return 0;
    }
    REQUIRE(m != NULL);
    const wh_event *ev = wh_codec_event(m);
    require_clean(ev);
    require_payload_bound(data, size, ev);

    /* without a content type, an envelope (first non-space byte '{') is
     * sniffed as one and decodes to the same event */
    size_t i = 0;
    while (i < size && strchr(" \t\r\n", data[i]) && data[i])
        i++;
    if (i < size && data[i] == '{') {
        wh_event_msg *s = NULL;
        REQUIRE(wh_codec_event_decode(data, size, NULL,
                                      WH_PAYLOAD_DEFAULT_MAX, &s, err,
                                      sizeof(err)) == WH_OK);
        fuzz_require_event_eq(wh_codec_event(s), ev);
        wh_codec_event_free(s);
    }
    fuzz_roundtrip_event(ev, WH_PAYLOAD_DEFAULT_MAX);
    wh_codec_event_free(m);
    return 0;
}
