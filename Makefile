# The two commands a newcomer needs: `make demo` and `make test`.
# Both install their own dependencies (scripts/install-deps.sh) and build the one
# profile the tests use (dev), so running one after the other builds once.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug

.PHONY: all deps build test fmt clippy nextest demo bench clean-labs

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --locked --bins
	@# margayctl is also the kubectl plugin `kubectl margay` (same binary, other name).
	ln -sf margayctl $(BIN)/kubectl-margay

test: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) build --workspace --locked --bins
	$(CARGO) nextest run --workspace --locked --no-fail-fast

demo: build
	@scripts/demo.sh

bench: deps
	$(CARGO) build --workspace --locked --release --bins
	target/release/margay-bench run --write-docs docs/performance.md $(BENCH)
