# Two commands for a newcomer: `make demo` (serve an example graph) and `make test`.
# Both create .venv on first use. The demo installs only what its example needs (the
# package, no extras: under a minute); the tests install everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
EXTRAS := dev,ray,torch,mlflow,examples,otel
PORT ?= 8000

.PHONY: setup demo test lint typecheck pytest bench clean

# $(call apt,command,package,why): install a system package with apt-get when the command is
# missing and we are root; otherwise say how.
apt = @command -v $(1) >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	(apt-get update -qq && apt-get install -y -qq $(2) >/dev/null) || \
	echo "note: '$(1)' not found; install it (apt-get install $(2)) $(3)"; }

$(STAMP): pyproject.toml
	$(call apt,dot,graphviz,for svg/png rendering and the live page's drawings)
	$(call apt,chromium,chromium,for the live page's browser tests)
	$(call apt,wrk,wrk,for the HTTP load tests of tests/test_bench.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[$(EXTRAS)]"
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	$(call apt,dot,graphviz,for the live page's drawings)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $(DEMO_STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/graphserve build examples.quickstart:app
	@echo "graphserve: the live page will be at http://127.0.0.1:$(PORT)/-/"
	$(VENV)/bin/graphserve deploy examples.quickstart:app --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHON=$(PY) scripts/lint_imports.sh

typecheck: $(STAMP)
	PYTHON=$(PY) scripts/typecheck.sh

pytest: $(STAMP)
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(call apt,wrk,wrk,for the HTTP load)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
