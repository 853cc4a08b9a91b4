# The README's two commands: `make run` and `make test`. CI runs .ci/run, which calls `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TCK ?= ../shared/dmn-tck

.PHONY: run test check bench bench-load bench-memory redis-server node-deps tck clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/arbiter serve --models models

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; \
	  else echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server') and re-run"; exit 1; fi; }

test: $(STAMP) redis-server
	$(BIN)/python -m pytest -q

# The DMN conformance gate: every case of the tiers we claim must pass (exit 1 on any regression).
tck: $(STAMP)
	$(BIN)/arbiter tck $(TCK) --tier A --tier A3 --tier B --tier D --failures-only

check: $(STAMP)
	$(BIN)/ruff check engine tests benchmarks
	$(BIN)/mypy

bench: $(STAMP) redis-server
	$(BIN)/python -m pytest benchmarks -q -p no:cacheprovider --benchmark-only --benchmark-columns=min,median,iqr,ops,rounds

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Load harness (real Redis + floor app + Arbiter, wrk and the open-loop generator): benchmarks/RESULTS.md.
BENCH_LOAD_ARGS ?= --workers 1 --guests 20000 --duration 10
bench-load: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.loadtest $(BENCH_LOAD_ARGS) --json benchmarks/last-load.json

bench-memory: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.memory
