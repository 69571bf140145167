VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

.PHONY: run test bench lint fmt migration clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/crisis-supply serve --demo --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/allocation.py

lint: $(STAMP)
	$(VENV)/bin/ruff check app optimizer tests benchmarks migrations
	$(VENV)/bin/mypy optimizer

# Regenerate the initial migration from the models (pre-release only: no deployed databases yet).
migration: $(STAMP)
	$(PY) -m app.devtools.regen_migration

clean:
	rm -rf $(VENV) data .pytest_cache
