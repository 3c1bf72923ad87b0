# The README's commands. Each target installs what it needs first (scripts/setup.sh).
PYTEST ?= .venv/bin/python -m pytest
.PHONY: setup demo demo-rollback test test-fast bench bench-server lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/python -m tests.fleet.demo

demo-rollback: setup
	.venv/bin/python -m tests.fleet.demo --rollback

# The whole suite: unit, integration and end-to-end. pytest's exit 5 (no test collected, e.g. a marker
# filter that matches nothing) is said loudly and is not a failure.
test: setup
	@$(PYTEST) -p no:cacheprovider tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; rc=0; fi; exit $$rc

test-fast: setup
	$(PYTEST) -q tests/unit

bench: setup
	.venv/bin/python -m bench

bench-server: setup
	.venv/bin/python -m bench.server

lint: setup
	.venv/bin/ruff check src tests || true
