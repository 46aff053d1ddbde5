# Two commands on a fresh machine: `make demo` runs metricdiff on sample_runs/, `make test` runs
# the tests. Each creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metricdiff report sample_runs/featC_hpA.parquet --by source

test: $(STAMP)
	$(BIN)/python -m pytest

samples: $(STAMP)
	$(BIN)/python sample_runs/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
