# Build, test and run the webhook delivery engine.
#
#   make                      build every binary into build/bin
#   make SANITIZER=address,undefined   instrumented tree in build-san/
#   make test                 unit, integration and end-to-end tests
#   make test-long            the ordering fault test at a larger scale
#   make run                  local stack + demo (Ctrl-C stops it)
#   make dev-up / dev-down    local stack in the background
#   make bench                benchmarks

CC        ?= cc
SANITIZER ?=
PKGS      := rdkafka libcurl libpq libcrypto libprotobuf-c

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
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) \
             -Ilib -Iproducer -Iworker -Ischeduler -I$(B)/gen $(shell pkg-config --cflags $(PKGS))
LDLIBS    := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

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
BINS := $(B)/bin/webhook-worker $(B)/bin/webhookctl \
        $(B)/bin/webhook-produce $(B)/bin/webhook-produce-example \
        $(B)/bin/webhook-devbroker $(B)/bin/webhook-receiver \
        $(B)/bin/webhook-ordercheck
ifneq ($(SCHED_SRC),)
BINS += $(B)/bin/webhook-scheduler
endif

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all test test-long test-unit test-integration run dev-up dev-down bench clean \
        format check-format
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

$(B)/bin/webhook-receiver: $(B)/obj/dev/receiver.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bin/webhook-ordercheck: $(B)/obj/dev/ordercheck.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# worker modules with unit tests of their own
$(B)/tests/test_tracker: $(B)/obj/worker/tracker.o
$(B)/tests/test_rows: $(B)/obj/worker/rows.o

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIB_A) $(LDLIBS)

test-unit: all
	tests/run.sh --build $(B) unit

test-integration: all
	tests/run.sh --build $(B) integration

test:
	$(MAKE) -j$(shell nproc) all
	$(MAKE) -j$(shell nproc) SANITIZER=address,undefined all
	tests/run.sh --build build --sanitized-build build-san all

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
	rm -rf build build-san

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
