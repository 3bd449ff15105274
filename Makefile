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

.PHONY: all lib test test-rust test-secure test-loom test-header test-c test-smoke \
        lint install uninstall bench clean

all: lib

# The shipped libraries are built as cdylib + staticlib only (with the rlib
# in the same compilation, rustc cannot internalise the allocator's statics
# and every fast-path global goes through the GOT) and without std (see the
# `std` feature in Cargo.toml).
lib:
	$(CARGO) rustc --release --lib --no-default-features --features override \
		--crate-type cdylib --crate-type staticlib

test: test-rust test-secure test-loom lint lib test-header test-c test-smoke
	@echo "make test: all tests passed"

test-rust:
	$(CARGO) test --release
	$(CARGO) run --release --example global_alloc --no-default-features --features std

# The allocator tests again in secure mode (canaries, quarantine, guards).
test-secure:
	CMA_SECURE=1 $(CARGO) test --release --test allocator --test stats

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

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(LIBDIR)/libcma.so $(DESTDIR)$(PREFIX)/lib/libcma.so
	install -m 644 $(LIBDIR)/libcma.a $(DESTDIR)$(PREFIX)/lib/libcma.a
	install -m 644 include/cma.h $(DESTDIR)$(PREFIX)/include/cma.h
	install -m 755 scripts/cma-run $(DESTDIR)$(PREFIX)/bin/cma-run

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libcma.so $(DESTDIR)$(PREFIX)/lib/libcma.a \
	      $(DESTDIR)$(PREFIX)/include/cma.h $(DESTDIR)$(PREFIX)/bin/cma-run

bench: lib
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf c_tests/build benches/build
