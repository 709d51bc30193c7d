# SPDX-License-Identifier: MIT
# Makefile - builds mbroker into build/: the broker daemon, the worker
# library (static and shared), the reference worker, the admin CLI and the
# tests.  `make test` runs every test, `make demo` the main job.  The first
# build runs scripts/install-deps.sh when a dependency is missing.

BUILD ?= build
O := $(BUILD)
SANITIZE ?=
OPT ?= -O2

WARNINGS := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wpointer-arith -Wcast-qual -Wwrite-strings \
	-Wformat=2 -Wundef -Wvla -Werror
# Linux only by design (/dev/shm, pidfd, SO_PEERCRED, sem_clockwait):
# _GNU_SOURCE for every file, see docs/design.md.
CPPFLAGS += -D_GNU_SOURCE -Iinclude -Icommon -MMD -MP
CFLAGS += -std=c11 $(OPT) -g $(WARNINGS) -fstack-protector-strong \
	-fvisibility=hidden -pthread
ifeq ($(SANITIZE),)
CPPFLAGS += -D_FORTIFY_SOURCE=2
else
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif
LDFLAGS += -pthread

# pkg-config is asked once, after the dependencies are installed.
lazy = $(eval $(1) := $$(shell pkg-config $(2)))$($(1))
BROKER_CFLAGS = $(call lazy,BROKER_CFLAGS,--cflags libevent_core jansson libxxhash)
BROKER_LIBS = $(call lazy,BROKER_LIBS,--libs libevent_core jansson libxxhash)
LIB_LIBS = $(call lazy,LIB_LIBS,--libs jansson libxxhash)
TEST_CFLAGS = $(call lazy,TEST_CFLAGS,--cflags cmocka)
TEST_LIBS = $(call lazy,TEST_LIBS,--libs cmocka)
# pocketsphinx's headers are not warning-clean: -isystem keeps -Werror ours.
SPHINX_CFLAGS = $(patsubst -I%,-isystem %,$(call lazy,SPHINX_RAW,--cflags pocketsphinx))
SPHINX_LIBS = $(call lazy,SPHINX_LIBS,--libs pocketsphinx)

COMMON_SRC := $(wildcard common/*.c)
LIB_SRC := $(COMMON_SRC) worker/client.c worker/attach.c worker/member.c \
	worker/member_dir.c worker/tensor.c
BROKER_SRC := $(filter-out broker/mbrokerd.c,$(wildcard broker/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(O)/obj/%.o,$(1))
LIB_OBJ := $(call obj,$(LIB_SRC))
LIB_PIC := $(patsubst %.c,$(O)/pic/%.o,$(LIB_SRC))
BROKER_OBJ := $(call obj,$(BROKER_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,$(O)/tests/%,$(UNIT_SRC))
VERSION := 0.1.0
SONAME := libmbroker.so.0
REALNAME := libmbroker.so.$(VERSION)
DEPS_OK := $(O)/.deps-ok

PROGRAMS := $(O)/mbrokerd $(O)/mbctl $(O)/mbworker
TEST_TOOLS := $(O)/mkmodel $(O)/mbfault $(O)/mbbench
EXAMPLES := $(O)/examples/pocketsphinx_pool
LIBRARIES = $(O)/libmbroker.a $(O)/$(REALNAME) $(O)/libmbroker.so

.PHONY: all test unit integration demo soak bench asan tsan valgrind fuzz \
	format clean install uninstall deps
all: $(PROGRAMS) $(LIBRARIES) $(TEST_TOOLS) $(EXAMPLES)

deps: $(DEPS_OK)
$(DEPS_OK): scripts/install-deps.sh
	@scripts/install-deps.sh --check || scripts/install-deps.sh
	@mkdir -p $(@D) && touch $@

$(O)/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(BROKER_CFLAGS) $(TEST_CFLAGS) -c $< -o $@

# Unit tests and fuzz targets reach the internal headers they test.
$(O)/obj/tests/%.o: CPPFLAGS += -Ibroker -Iworker

$(O)/pic/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(BROKER_CFLAGS) -fPIC -c $< -o $@

$(O)/libbroker.a: $(BROKER_OBJ)
	$(AR) rcs $@ $^

$(O)/libmbroker.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

$(O)/$(REALNAME): $(LIB_PIC)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(O)/libmbroker.so: $(O)/$(REALNAME)
	ln -sf $(REALNAME) $(O)/$(SONAME)
	ln -sf $(SONAME) $@

$(O)/mbrokerd: $(call obj,broker/mbrokerd.c) $(O)/libbroker.a $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -o $@ $^ $(BROKER_LIBS)

$(O)/mbworker: $(O)/obj/worker/mbworker.o $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(O)/mbctl: $(O)/obj/worker/mbctl.o $(O)/obj/worker/mbctl_watch.o $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(O)/mkmodel: $(O)/obj/tests/tools/mkmodel.o
	$(CC) $(LDFLAGS) -o $@ $^

$(O)/mbfault: $(O)/obj/tests/tools/mbfault.o $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(O)/mbbench: $(O)/obj/bench/mbbench.o $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_LIBS)
$(O)/obj/bench/%.o: CPPFLAGS += -Iworker

$(O)/examples/pocketsphinx_pool: $(call obj,examples/pocketsphinx_pool.c \
		examples/clip.c examples/model_memory.c) $(O)/libmbroker.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIB_LIBS) $(SPHINX_LIBS)
$(O)/obj/examples/%.o: CPPFLAGS += $(SPHINX_CFLAGS)

# Unit tests name the calls they make fail in a line "WRAP: f g ...".
wraps = $(foreach f,$(shell sed -n 's/^.*WRAP: //p' $(1)),-Wl,--wrap=$(f))
$(O)/tests/%: $(O)/obj/tests/unit/%.o $(O)/libbroker.a $(O)/libmbroker.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(call wraps,tests/unit/$*.c) -o $@ $^ $(BROKER_LIBS) $(TEST_LIBS)

test: all $(UNIT_BIN)
	MB_SANITIZE=$(SANITIZE) tests/run.sh $(O)

unit: all $(UNIT_BIN)
	tests/run.sh --unit $(O)

integration: all
	tests/run.sh --integration $(O)

demo: all
	scripts/demo.sh $(O)

# About two minutes; `make test` runs a 10-second smoke of it.
soak: all
	scripts/soak.sh $(O)

# Every scenario of docs/performance.md; `make test` runs a tiny smoke.
bench: all
	scripts/bench.sh $(O)

asan:
	$(MAKE) BUILD=build/asan SANITIZE=address,undefined OPT=-O1 test

tsan:
	$(MAKE) BUILD=build/tsan SANITIZE=thread OPT=-O1 test

valgrind: all $(UNIT_BIN)
	MB_VALGRIND=1 tests/run.sh --valgrind $(O)

# libFuzzer targets, built with clang; FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
FUZZ_BIN := $(O)/fuzz_request $(O)/fuzz_safetensors
fuzz:
	@scripts/install-deps.sh --fuzz --check || scripts/install-deps.sh --fuzz
	$(MAKE) BUILD=build/fuzz CC=clang SANITIZE=fuzzer-no-link,address,undefined \
		OPT=-O1 build/fuzz/fuzz_request build/fuzz/fuzz_safetensors
	tests/fuzz/run.sh build/fuzz $(FUZZ_SECONDS)

$(O)/fuzz_%: $(O)/obj/tests/fuzz/fuzz_%.o $(O)/libbroker.a $(O)/libmbroker.a
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(BROKER_LIBS)

format:
	clang-format -i $(wildcard broker/*.[ch] worker/*.[ch] common/*.[ch] \
		include/*.h tests/unit/*.[ch])

PREFIX ?= /usr/local
DOCDIR = $(DESTDIR)$(PREFIX)/share/doc/mbroker
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3 \
		$(DESTDIR)$(PREFIX)/share/man/man8 $(DOCDIR)/contrib/systemd \
		$(DOCDIR)/contrib/supervisord
	install -m 755 $(O)/mbrokerd $(DESTDIR)$(PREFIX)/sbin/
	install -m 755 $(O)/mbctl $(O)/mbworker $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(O)/libmbroker.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(O)/$(REALNAME) $(DESTDIR)$(PREFIX)/lib/
	ln -sf $(REALNAME) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libmbroker.so
	install -m 644 include/mbroker.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' mbroker.pc.in \
		>$(DESTDIR)$(PREFIX)/lib/pkgconfig/mbroker.pc
	install -m 644 man/mbctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/libmbroker.3 $(DESTDIR)$(PREFIX)/share/man/man3/
	install -m 644 man/mbrokerd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 contrib/systemd/mbrokerd.service $(DOCDIR)/contrib/systemd/
	install -m 644 contrib/supervisord/mbroker.conf $(DOCDIR)/contrib/supervisord/
	install -m 755 scripts/mbroker-service $(DESTDIR)$(PREFIX)/sbin/
	install -m 644 README.md $(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/mbrokerd $(DESTDIR)$(PREFIX)/bin/mbctl \
		$(DESTDIR)$(PREFIX)/sbin/mbroker-service \
		$(DESTDIR)$(PREFIX)/bin/mbworker \
		$(DESTDIR)$(PREFIX)/lib/libmbroker.a \
		$(DESTDIR)$(PREFIX)/lib/$(REALNAME) \
		$(DESTDIR)$(PREFIX)/lib/$(SONAME) \
		$(DESTDIR)$(PREFIX)/lib/libmbroker.so \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig/mbroker.pc \
		$(DESTDIR)$(PREFIX)/include/mbroker.h \
		$(DESTDIR)$(PREFIX)/share/man/man1/mbctl.1 \
		$(DESTDIR)$(PREFIX)/share/man/man3/libmbroker.3 \
		$(DESTDIR)$(PREFIX)/share/man/man8/mbrokerd.8
	rm -rf $(DOCDIR)

clean:
	rm -rf build

# Keep every object: test objects are intermediate files to make.
.SECONDARY:

-include $(shell find $(O) -name '*.d' 2>/dev/null)
