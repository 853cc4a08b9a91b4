# The README's two commands: `make run` and `make test`. CI runs .ci/run, which calls `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TCK ?= ../shared/dmn-tck

.PHONY: run test check bench bench-load bench-micro bench-memory redis-server valgrind perf node-deps tck clean

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

# valgrind counts instructions for the performance budget (tests/test_performance_gate.py): installed as root,
# else that test is skipped and says why.
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind) >/dev/null; \
	  else echo "valgrind is missing: the performance budget's test will be skipped ('sudo apt-get install valgrind')"; fi; }

# perf samples a server for benchmarks/profile.py (tests/test_profile_tool.py): installed as root if it can be, else
# that test is skipped and says why; a failed install does not stop the suite.
perf:
	@command -v perf >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf) >/dev/null 2>&1 \
	      || echo "linux-perf could not be installed: the profile tool's test will be skipped"; \
	  else echo "perf is missing: the profile tool's test will be skipped ('sudo apt-get install linux-perf')"; fi; }

node-deps: tests/sdk/node_modules/.package-lock.json

# The real Sitecore Cloud SDK for tests/test_sdk_e2e.py, pinned by tests/sdk/package-lock.json.
tests/sdk/node_modules/.package-lock.json: tests/sdk/package.json tests/sdk/package-lock.json
	cd tests/sdk && npm ci --no-audit --no-fund

test: $(STAMP) redis-server valgrind perf node-deps
	$(BIN)/python -m pytest -q

# The DMN conformance gate: every case of the tiers we claim must pass (exit 1 on any regression).
tck: $(STAMP)
	$(BIN)/arbiter tck $(TCK) --tier A --tier A3 --tier B --tier D --failures-only

check: $(STAMP)
	$(BIN)/ruff check engine tests benchmarks
	$(BIN)/ruff format --check engine tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# `make bench` is the one command: the load harness (real Redis, the floor, the catalogue stub and Arbiter;
# wrk at saturation and the open-loop generator at fixed rates; decide, events and batched events), then the
# micro-benchmarks. Results and how to read them: benchmarks/RESULTS.md. `WORKERS=2 make bench` sets the
# server workers; BENCH_LOAD_ARGS overrides the rest (e.g. BENCH_LOAD_ARGS="--guests 2000 --duration 3").
WORKERS ?= 1
BENCH_LOAD_ARGS ?= --guests 20000 --duration 10
BENCH_LOAD = $(BIN)/python -m benchmarks.loadtest --workers $(WORKERS) $(BENCH_LOAD_ARGS) --json benchmarks/last-load.json
BENCH_MICRO = $(BIN)/python -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
	--benchmark-columns=min,median,iqr,ops,rounds
NEED_WRK = @command -v wrk >/dev/null 2>&1 || { echo "wrk is missing: install it (e.g. 'sudo apt-get install wrk')"; exit 1; }

bench: $(STAMP) redis-server
	$(NEED_WRK)
	$(BENCH_LOAD)
	$(BENCH_MICRO)

bench-load: $(STAMP) redis-server
	$(NEED_WRK)
	$(BENCH_LOAD)

bench-micro: $(STAMP)
	$(BENCH_MICRO)

bench-memory: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.memory
