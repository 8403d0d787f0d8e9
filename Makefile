# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: run test lint install clean-results

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	source $(VENV)/bin/activate && snakemake release_gate --cores $(CORES) --configfile config/config.yaml

test: $(STAMP)
	source $(VENV)/bin/activate && python -m pytest -q

lint: $(STAMP)
	source $(VENV)/bin/activate && ruff check src tests workflow benchmarks && snakemake --lint

clean-results:
	rm -rf results/model results/activations results/saes results/consistency results/release results/logs results/benchmarks results/evidence results/lanes results/probes results/controls
