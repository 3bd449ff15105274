# CMA — build, test and install.
#
#   make                 release libcma.so + libcma.a (and include/cma.h)
#   make test            every test: cargo tests, loom model, C/C++ tests,
#                        preload smoke test with real programs
#   make install PREFIX=/usr/local
#   make bench           the benchmark suite against glibc, jemalloc,
#                        mimalloc and tcmalloc

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
LIBDIR := target/release

.PHONY: all lib deps test test-rust test-secure test-loom test-header test-c test-install test-smoke \
        lint install uninstall bench clean

all: lib

# The shipped libraries are built as cdylib + staticlib only (with the rlib
# in the same compilation, rustc cannot internalise the allocator's statics
# and every fast-path global goes through the GOT) and without std (see the
# `std` feature in Cargo.toml).
lib:
	$(CARGO) rustc --release --lib --no-default-features --features override \
		--crate-type cdylib --crate-type staticlib
	ln -sf libcma.so $(LIBDIR)/libcma.so.$(MAJOR)

test: deps test-rust test-secure test-loom lint lib test-header test-c test-install test-smoke
	@echo "make test: all tests passed"

# What a fresh Debian machine lacks (compilers, pkg-config, the programs of
# the smoke test, the peer allocators): installed once, quick when present.
deps:
	scripts/install-deps.sh

test-rust:
	$(CARGO) test --release
	$(CARGO) run --release --example global_alloc --no-default-features --features std

# The allocator tests again in secure mode (canaries, quarantine, guards).
test-secure:
	CMA_SECURE=1 $(CARGO) test --release --test allocator --test stats --test prop_heap

test-loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
		$(CARGO) test --release --test loom_ticket_lock

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --lib --no-default-features --features override -- -D warnings
	$(CARGO) clippy --release --lib --example global_alloc --no-default-features --features std -- -D warnings

# A build must not change the committed header.
test-header: lib
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		git diff --exit-code -- include/cma.h || \
		{ echo "include/cma.h is stale: commit the regenerated header"; exit 1; }; \
	fi

test-c: lib
	c_tests/run.sh --lib-dir $(LIBDIR)

test-smoke: lib
	scripts/preload-smoke.sh --lib $(LIBDIR)/libcma.so

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
INSTALL_LIB := $(DESTDIR)$(PREFIX)/lib

install: lib
	install -d $(INSTALL_LIB)/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(LIBDIR)/libcma.so $(INSTALL_LIB)/libcma.so.$(VERSION)
	ln -sf libcma.so.$(VERSION) $(INSTALL_LIB)/libcma.so.$(MAJOR)
	ln -sf libcma.so.$(MAJOR) $(INSTALL_LIB)/libcma.so
	install -m 644 $(LIBDIR)/libcma.a $(INSTALL_LIB)/libcma.a
	install -m 644 include/cma.h $(DESTDIR)$(PREFIX)/include/cma.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' cma.pc.in > $(INSTALL_LIB)/pkgconfig/cma.pc
	install -m 755 scripts/cma-run $(DESTDIR)$(PREFIX)/bin/cma-run

uninstall:
	rm -f $(INSTALL_LIB)/libcma.so.$(VERSION) $(INSTALL_LIB)/libcma.so.$(MAJOR) \
	      $(INSTALL_LIB)/libcma.so $(INSTALL_LIB)/libcma.a \
	      $(INSTALL_LIB)/pkgconfig/cma.pc $(DESTDIR)$(PREFIX)/include/cma.h \
	      $(DESTDIR)$(PREFIX)/bin/cma-run

# Installs into a scratch prefix, builds a C program with pkg-config
# against the installed files, runs it and cma-run, then uninstalls.
test-install: lib
	scripts/test-install.sh

bench: lib
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf c_tests/build benches/build
