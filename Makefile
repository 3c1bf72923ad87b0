# The README's commands. Each target installs what it needs first (scripts/setup.sh, by purpose:
# `make setup` polycrate itself; `make demo` + the demo's hosts; `make test` + everything the tests use).
PYTEST ?= .venv/bin/python -m pytest
.PHONY: setup setup-demo setup-test setup-docs demo demo-rollback test checks test-fast docs docs-serve bench bench-server lint

# --- installs, by purpose (scripts/setup.sh --help) ---
setup:
	@bash scripts/setup.sh

setup-demo:
	@bash scripts/setup.sh --demo

setup-test:
	@bash scripts/setup.sh --test

setup-docs:
	@bash scripts/setup.sh --docs

# --- the demo ---
demo: setup-demo
	.venv/bin/python -m tests.fleet.demo

demo-rollback: setup-demo
	.venv/bin/python -m tests.fleet.demo --rollback

# --- tests ---
# The whole suite: unit, integration and end-to-end, and the documentation built with --strict
# (tests/unit/test_docs.py). pytest's exit 5 (no test collected, e.g. a marker filter that matches
# nothing) is said loudly and is not a failure.
test: setup-test
	@$(MAKE) --no-print-directory checks
	@$(PYTEST) -p no:cacheprovider tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; rc=0; fi; exit $$rc

# ruff and mypy (pyproject.toml: [tool.ruff], [tool.mypy]) before the tests: any finding fails `make test`
checks:
	.venv/bin/ruff check src tests bench scripts examples
	.venv/bin/mypy

test-fast: setup-test
	$(PYTEST) -q tests/unit

# --- the documentation site (mkdocs.yml, docs/; the reference pages are generated from the code
# by scripts/docs_reference.py, an MkDocs hook) ---
docs: setup-docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir build/site
	@echo "docs: build/site/index.html"

docs-serve: setup-docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve

# --- benchmarks, lint ---
bench: setup-demo
	.venv/bin/python -m bench

bench-server: setup-test
	.venv/bin/python -m bench.server

lint: setup-test
	@$(MAKE) --no-print-directory checks
