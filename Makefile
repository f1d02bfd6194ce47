# Front door. Every target installs what it needs first (Debian packages only).
SHELL := /bin/bash
JOBS ?= $(shell nproc)

.PHONY: all deps build debug asan tsan test demo bench format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

debug: deps
	@cmake --preset debug >/dev/null
	@cmake --build --preset debug -j $(JOBS)

asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

tsan: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)

# Format check, release build with every test, then ASan+UBSan unit and integration tests.
test:
	@bash scripts/test.sh

# Three simulated engines, the router in front of them, and real requests through it.
demo: build
	@bash scripts/demo.sh

# Overhead and body-peek benchmarks (see docs/BENCHMARKS.md).
bench: build
	@bash bench/run.sh

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

format-check:
	@git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

clean:
	rm -rf build build-debug build-asan build-tsan
