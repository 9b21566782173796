# The two commands of the quickstart: `make demo` and `make test`.
# Both create .venv when needed and install what they use into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := $(wildcard src tests examples benchmarks)

.PHONY: demo test lint typecheck bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# pytest exits 5 when it collects no test (a -k filter matching nothing, say):
# that is not a failure of the code under test.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# About 45 minutes of load, not part of `make test`: 1,000,000 short
# connections and 10 minutes of mixed load through serve (async, thread) and
# relay, with the servers' memory, descriptors, threads and children sampled
# every minute (docs/reliability.md). A short run:
# make soak SOAK_ARGS='--connections 20000 --minutes 1'.
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

# The manual pages, generated from the parser into man/ (committed, installed
# with the package; a test fails when they and the parser disagree).
.PHONY: man dist
man: $(STAMP)
	$(BIN)/python scripts/build_man.py man

# A wheel and an sdist in dist/ (the wheel is built from the sdist).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# The documentation site, into site/; --strict: a broken link or reference fails.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
