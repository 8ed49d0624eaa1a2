# Tally: `make run` starts the whole stack on 127.0.0.1, `make test` runs every test.
SHELL := /bin/bash
# Builds go outside the clone by default, so fresh clones reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target

.PHONY: run stop status test bench install lint fmt

run:
	bash deploy/local/run.sh

stop:
	bash deploy/local/stack.sh stop all

status:
	bash deploy/local/stack.sh status

test:
	bash tests/run.sh

bench:
	bash tests/bench.sh

install:
	bash deploy/local/stack.sh install

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
