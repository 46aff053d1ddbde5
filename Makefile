# Two commands on a fresh machine: `make demo` runs metricdiff on sample_runs/, `make test` runs
# the tests. Each creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metricdiff compare sample_runs/featA_hpB.parquet sample_runs/featB_hpA.parquet sample_runs/featC_hpA.parquet --by source

test: $(STAMP)
	$(BIN)/python -m pytest

# Static checks (CI runs them too): pyflakes and pycodestyle through ruff.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

samples: $(STAMP)
	$(BIN)/python sample_runs/generate.py
	$(BIN)/python sample_runs/generate_seeds.py
	$(BIN)/python sample_runs/generate_split.py
	$(BIN)/python sample_runs/generate_series.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info

# Benchmark at the default sizes (several minutes; writes ~5 GB of runs to bench_data/, reused
# on later runs). Options: $(BIN)/python bench/bench.py -h
bench: $(STAMP)
	$(BIN)/python bench/bench.py
