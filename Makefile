VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

.PHONY: run test fuzz bench bench-optimizer bench-api lint fmt migration clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/crisis-supply serve --demo --port $(PORT)

# Two xdist workers (one per core); --dist loadfile keeps each file's module fixtures (e.g. the
# multi-process cluster in tests/test_concurrency.py) in one worker. PYTEST_ARGS adds options.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

# Schemathesis against the app's own OpenAPI document (docs/fuzzing.md). Minutes, not seconds: kept out of
# `make test` (tests/fuzz/conftest.py); .ci/run calls both. FUZZ_MAX_EXAMPLES / FUZZ_STATEFUL_SEQUENCES
# shorten a local run.
fuzz: $(STAMP)
	$(PY) -m pytest -q -p no:logging tests/fuzz $(PYTEST_ARGS)

bench: bench-optimizer bench-api

bench-optimizer: $(STAMP)
	$(PY) benchmarks/allocation.py

# Service targets (docs/benchmarks-api.md): needs PostgreSQL at BENCH_DATABASE_URL (default
# postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped) and wrk.
bench-api: $(STAMP)
	$(PY) benchmarks/api.py $(BENCH_API_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check app optimizer tests benchmarks migrations
	$(VENV)/bin/mypy optimizer

# Regenerate the initial migration from the models (pre-release only: no deployed databases yet).
migration: $(STAMP)
	$(PY) -m app.devtools.regen_migration

clean:
	rm -rf $(VENV) data .pytest_cache
