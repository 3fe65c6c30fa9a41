# Build, test and run the webhook delivery engine.
#
#   make                      build every binary into build/bin
#   make SANITIZER=address,undefined   instrumented tree in build-san/
#   make test                 unit, integration and end-to-end tests
#   make test-long            the ordering fault test at a larger scale
#   make run                  local stack + demo (Ctrl-C stops it)
#   make dev-up / dev-down    local stack in the background
#   make bench                benchmarks
#   make fuzz                 libFuzzer targets, FUZZ_SECONDS (60) each

CC        ?= cc
SANITIZER ?=
PKGS      := rdkafka libcurl libpq libcrypto libprotobuf-c

# FUZZ=1 (set by make fuzz): the libFuzzer tree, the library compiled by
# clang with coverage for the fuzzer, AddressSanitizer and UBSan.
ifneq ($(FUZZ),)
B         ?= build-fuzzer
override SANITIZER := fuzzer-no-link,address,undefined
endif
ifeq ($(SANITIZER),)
B         ?= build
SANFLAGS  :=
else
B         ?= build-san
SANFLAGS  := -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
             -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral
CFLAGS    ?= -O2 -g

# Hardening, so that an overflow aborts instead of running on: stack
# canaries, stack-clash probes, CET branch tracking where the compiler has
# it, position-independent executables and full RELRO (relocations
# resolved at start-up, then read-only) in both trees; _FORTIFY_SOURCE
# (checked memcpy, snprintf, read, ...) in the plain tree only, since it
# needs optimization and hides calls from AddressSanitizer's interceptors.
# tests/integration/test_hardening.sh checks the binaries.
cc_option  = $(shell $(CC) -Werror $(1) -E -x c /dev/null >/dev/null 2>&1 && echo $(1))
HARDEN_CFLAGS := -fstack-protector-strong -fPIE \
                 $(call cc_option,-fstack-clash-protection) \
                 $(call cc_option,-fcf-protection)
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now
ifeq ($(SANITIZER),)
HARDEN_CFLAGS += $(if $(filter -O0,$(CFLAGS)),,-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2)
endif

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(HARDEN_CFLAGS) $(SANFLAGS) \
             -Ilib -Iproducer -Iworker -Ischeduler -I$(B)/gen $(shell pkg-config --cflags $(PKGS))
LDLIBS    := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
ALL_LDFLAGS = $(LDFLAGS) $(HARDEN_LDFLAGS) $(SANFLAGS)

PROTO     := proto/webhook/v1/webhook.proto
PROTO_C   := $(B)/gen/webhook/v1/webhook.pb-c.c
PROTO_H   := $(B)/gen/webhook/v1/webhook.pb-c.h

LIB_SRC   := $(wildcard lib/*.c) producer/producer.c
LIB_OBJ   := $(LIB_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/webhook.pb-c.o \
             $(B)/obj/gen/migrations.o
SQL       := $(sort $(wildcard sql/[0-9]*.sql))
LIB_A     := $(B)/libwebhook.a

# binary name -> its sources (each directory holds one program's files)
WORKER_SRC    := $(wildcard worker/*.c)
SCHED_SRC     := $(wildcard scheduler/*.c)
CTL_SRC       := $(wildcard ctl/*.c)
# webhook-api alone links the HTTP server and JSON libraries
API_SRC       := $(wildcard api/*.c)
API_PKGS      := libmicrohttpd jansson
API_CFLAGS     = $(shell pkg-config --cflags $(API_PKGS)) -Iapi
API_LDLIBS     = $(shell pkg-config --libs $(API_PKGS))
BINS := $(B)/bin/webhook-worker $(B)/bin/webhookctl \
        $(B)/bin/webhook-produce $(B)/bin/webhook-produce-example \
        $(B)/bin/webhook-devbroker $(B)/bin/webhook-receiver \
        $(B)/bin/webhook-ordercheck $(B)/bin/webhook-partcheck
ifneq ($(SCHED_SRC),)
BINS += $(B)/bin/webhook-scheduler
endif
ifneq ($(API_SRC),)
BINS += $(B)/bin/webhook-api
endif

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

# libFuzzer targets (tests/fuzz/fuzz_*.c, see tests/fuzz/README.md), built
# by `make fuzz` into $(FUZZ_B)/fuzz with FUZZ_CC.
FUZZ_CC      ?= clang
FUZZ_B       ?= build-fuzzer
FUZZ_SECONDS ?= 60
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/%)

.PHONY: all test test-long test-unit test-integration run dev-up dev-down bench clean \
        format check-format fuzz fuzz-build fuzz-targets
all: $(BINS) $(UNIT_BIN)

$(PROTO_C) $(PROTO_H) &: $(PROTO)
	@mkdir -p $(B)/gen
	protoc-c --proto_path=proto --c_out=$(B)/gen $(PROTO)

$(B)/gen/migrations.c: $(SQL) sql/embed.sh
	@mkdir -p $(B)/gen
	sql/embed.sh $@ $(SQL)

$(B)/obj/gen/migrations.o: $(B)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/obj/gen/webhook.pb-c.o: $(PROTO_C)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/bin/webhook-worker: $(WORKER_SRC:%.c=$(B)/obj/%.o) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-scheduler: $(SCHED_SRC:%.c=$(B)/obj/%.o) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhookctl: $(CTL_SRC:%.c=$(B)/obj/%.o) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-produce: $(B)/obj/producer/webhook-produce.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-produce-example: $(B)/obj/producer/example.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-devbroker: $(B)/obj/dev/broker.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# the API contract, served at /v1/openapi.yaml
$(B)/gen/openapi.c: docs/openapi.yaml api/embed.sh
	@mkdir -p $(B)/gen
	api/embed.sh $@ api_openapi_yaml docs/openapi.yaml

$(B)/obj/gen/openapi.o: $(B)/gen/openapi.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/obj/api/%.o: api/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(API_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/bin/webhook-api: $(API_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/openapi.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(API_LDLIBS) $(LDLIBS)

$(B)/bin/webhook-receiver: $(B)/obj/dev/receiver.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-ordercheck: $(B)/obj/dev/ordercheck.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-partcheck: $(B)/obj/dev/partcheck.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# worker modules with unit tests of their own
$(B)/tests/test_tracker: $(B)/obj/worker/tracker.o
$(B)/tests/test_lane: $(B)/obj/worker/lane.o $(B)/obj/worker/parts.o
$(B)/tests/test_rows: $(B)/obj/worker/rows.o
# scheduler modules with unit tests of their own
$(B)/tests/test_dbwatch: $(B)/obj/scheduler/dbwatch.o

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIB_A) $(LDLIBS)

# the fuzz targets' own checks, and the library objects they exercise
$(B)/fuzz/%: $(B)/obj/tests/fuzz/%.o $(B)/obj/tests/fuzz/check.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(LIB_A) $(LDLIBS)

$(B)/fuzz/fuzz_rows: $(B)/obj/worker/rows.o

fuzz-targets: $(FUZZ_BIN)

fuzz-build:
	$(MAKE) FUZZ=1 CC=$(FUZZ_CC) B=$(FUZZ_B) fuzz-targets

# every target for FUZZ_SECONDS from its corpus; fails on a crash, leak or
# timeout (the findings land in $(FUZZ_B)/findings)
fuzz: fuzz-build
	tests/fuzz/run.sh --build $(FUZZ_B) --seconds $(FUZZ_SECONDS)

test-unit: all
	tests/run.sh --build $(B) unit

test-integration: all
	tests/run.sh --build $(B) integration

test:
	$(MAKE) -j$(shell nproc) all
	$(MAKE) -j$(shell nproc) SANITIZER=address,undefined all
	$(MAKE) -j$(shell nproc) fuzz-build
	tests/run.sh --build build --sanitized-build build-san --fuzz-build $(FUZZ_B) all

# the ordering fault test at a larger scale (about 15 minutes)
test-long: all
	ORDERING_LONG=1 BUILD_DIR=$(CURDIR)/$(B) tests/integration/test_ordering.sh

run: all
	dev/run.sh

dev-up: all
	dev/up.sh

dev-down:
	dev/down.sh

bench: all
	tests/bench/run.sh

format:
	clang-format -i lib/*.[ch] worker/*.[ch] producer/*.[ch] ctl/*.[ch] dev/*.c tests/unit/*.[ch]

clean:
	rm -rf build build-san $(FUZZ_B)

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
