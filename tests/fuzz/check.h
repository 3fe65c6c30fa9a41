/*
 * check.h - what the fuzz targets (tests/fuzz/fuzz_*.c) share: REQUIRE,
 * which traps so libFuzzer keeps the input that broke a property, and the
 * codec round trips both the envelope and the protobuf targets run on a
 * decoded event. Linked into every target by `make fuzz`.
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* Every target's entry point (libFuzzer calls it with each input). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that must hold: a trap is a crash libFuzzer reports. */
#define REQUIRE(c)                                                       \
    do {                                                                 \
        if (!(c))                                                        \
            __builtin_trap();                                            \
    } while (0)

/* An error result: *out untouched-or-NULL as given in want_out, and a
 * non-empty, NUL-terminated reason within WH_ERRLEN. */
void fuzz_require_failure(const char *err, const void *out);

void fuzz_require_event_eq(const wh_event *a, const wh_event *b);
void fuzz_require_delivery_eq(const wh_delivery *a, const wh_delivery *b);

/* A decoded event passes validation again, meets the header rules of
 * docs/events.md (checked independently), and survives Event ->
 * protobuf -> Event (given and sniffed content type), the Event inside a
 * Delivery -> Delivery, and that Delivery inside a DeadLetter -> DeadLetter,
 * field for field. */
void fuzz_roundtrip_event(const wh_event *ev, size_t payload_max);

/* A decoded Delivery survives Delivery -> protobuf -> Delivery. */
void fuzz_roundtrip_delivery(const wh_delivery *d);

/* An undecodable message's dead letter carries at most
 * WH_DEAD_RAW_PREFIX_MAX leading bytes of it, its whole length, and why
 * (cut to WH_DEAD_TEXT_MAX bytes). */
void fuzz_dead_letter_raw(const uint8_t *raw, size_t len, const char *why);

#endif
