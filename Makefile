# scimbus: `make run` serves the whole stack; `make test` runs every test.
SHELL := /bin/bash
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: help run test test-fast bench bench-full bench-paging soak lint clean k8s-sync images compose-init

help:
	@echo "make run    - set up (venv, packages, redis, nginx) and run the stack on :$${SCIM_PORT:-8585}"
	@echo "make test   - every test, against real Redis, SQLite, PostgreSQL, nginx"
	@echo "make test-fast - the unit tier: the tests that need no server (a minute or two)"
	@echo "make bench  - start a stack, drive it with Entra-shaped load, print rates, worker scaling and cold starts (BENCH_ARGS=\"--url …\" for a running one)"
	@echo "             scimgateway (loki, Bun) is a second peer when a checkout of it is found (SCIMGATEWAY=PATH)"
	@echo "make bench-full - the same at issue 7's sizes (100,000 users, a 100,000-member group)"
	@echo "make bench-paging - page through 1,000,000 seeded users, print the reader's memory (PAGING_ARGS=\"--users N\")"
	@echo "make soak   - the long fault runs kept out of make test"
	@echo "make compose-init - write what compose.yaml needs and .env lacks: fresh secrets, a self-signed certificate (never overwrites)"
	@echo "make images - build every image compose.yaml runs from Debian packages and PyPI (offline sites); names go to .env"
	@echo "make k8s-sync - copy the gateway template and alert rules into k8s/base (kustomize reads only its folder)"

run:
	@deploy/setup.sh run
	exec $(BIN)/scimbus run

test:
	@deploy/setup.sh test
	$(BIN)/pytest -m "not slow" --durations=20 $(PYTEST_ARGS)

test-fast:
	@deploy/setup.sh test
	SCIM_TEST_TIER=unit $(BIN)/pytest -m unit $(PYTEST_ARGS)

soak:
	@deploy/setup.sh test
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# issue 19: scimgateway (loki, Bun) as a second peer when a checkout of jelhub/scimgateway is at a
# known place (it is not on the npm registry); SCIMGATEWAY=PATH names another, SCIMGATEWAY= skips it.
SCIMGATEWAY ?= $(firstword $(wildcard var/scimgateway ../scimgateway-src ../wt/scimgateway-src))
BENCH_ARGS ?= --postgres --json bench/results/latest.json $(if $(SCIMGATEWAY),--scimgateway $(SCIMGATEWAY))
DRAIN_ARGS ?= --postgres --writes 20000
COLDSTART_ARGS ?= --postgres
# issue 7's sizes: 100,000 users in the directory and a 100,000-member group (~25 min here)
FULL_BENCH_ARGS ?= --postgres --directory-size 100000 --big-group 100000 --peer-big-group 10000 --json bench/results/full.json $(if $(SCIMGATEWAY),--scimgateway $(SCIMGATEWAY))

bench:
	@deploy/setup.sh test
	@mkdir -p bench/results
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.drain $(DRAIN_ARGS)
	$(BIN)/python -m bench.coldstart $(COLDSTART_ARGS)

bench-full:
	@deploy/setup.sh test
	@mkdir -p bench/results
	$(BIN)/python -m bench $(FULL_BENCH_ARGS)
	$(BIN)/python -m bench.drain $(DRAIN_ARGS)

PAGING_ARGS ?= --postgres

bench-paging:
	@deploy/setup.sh test
	$(BIN)/python -m bench.paging $(PAGING_ARGS)

lint:
	@deploy/setup.sh test
	$(BIN)/ruff check --select F,E9 libs services tests bench

clean:
	rm -rf .venv var .pytest_cache

# issue 6: kustomize cannot read deploy/, so k8s/base keeps checked copies (tests/deploy fails on drift).
k8s-sync:
	@deploy/setup.sh test
	$(BIN)/python deploy/k8s_sync.py

# issue 17: the first start of compose, and images for sites that cannot pull (docs/deployment.md).
compose-init:
	@deploy/setup.sh run
	$(BIN)/scimbus init

images:
	deploy/images/build.sh
