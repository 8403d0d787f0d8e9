# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: run test lint install clean-results

$(STAMP): pyproject.toml requirements/saebench.txt
	# The PoCL 3.0 of the pocl-binary-distribution wheel cannot build kernels on recent CPUs (LLVM 14: "unknown
	# target CPU 'generic'"); Debian's PoCL 3.1 can. Installed when we are root with apt, else OpenCL tests skip.
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s pocl-opencl-icd >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pocl-opencl-icd ocl-icd-libopencl1; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# sae-bench pins numpy<2 and a CUDA torch: installed without dependencies over the pinned stack
	$(PY) -m pip install -q --no-deps -r requirements/saebench.txt
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

# A real one-node Slurm on this machine (root, apt): installs Debian's slurm-wlm + munge, runs tests/slurm
# (the tiny workflow through the slurm executor plugin with profiles/ci-slurm, GPU requests refused), and
# stops every daemon it started. See tools/slurm/README.md.
.PHONY: test-slurm
test-slurm: $(STAMP)
	PY=$(PY) tools/slurm/run-test.sh
