# scimbus: `make run` serves the whole stack; `make test` runs every test.
SHELL := /bin/bash
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: help run test test-fast bench soak lint clean

help:
	@echo "make run    - set up (venv, packages, redis, nginx) and run the stack on :$${SCIM_PORT:-8585}"
	@echo "make test   - every test, against real Redis, SQLite, PostgreSQL, nginx"
	@echo "make bench  - load the running stack (start it with make run) and print rates"
	@echo "make soak   - the long fault runs kept out of make test"

run:
	@deploy/setup.sh run
	exec $(BIN)/scimbus run

test:
	@deploy/setup.sh test
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

soak:
	@deploy/setup.sh test
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench:
	@deploy/setup.sh test
	$(BIN)/python -m bench $(BENCH_ARGS)

lint:
	@deploy/setup.sh test
	$(BIN)/python -m pyflakes libs services tests bench 2>/dev/null || $(BIN)/python -m compileall -q libs services tests

clean:
	rm -rf .venv var .pytest_cache
