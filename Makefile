# Two commands for a newcomer: `make demo` (serve an example graph) and `make test`.
# Both create .venv on first use and install everything the project needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := dev,ray,torch,mlflow,examples
PORT ?= 8000

.PHONY: setup demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@command -v dot >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || \
		echo "note: Graphviz 'dot' not found; install it (apt-get install graphviz) for svg/png rendering"; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/graphserve build examples.quickstart:app
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
	@command -v wrk >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || \
		echo "note: wrk not found; install it (apt-get install wrk) for the HTTP load"; }
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
