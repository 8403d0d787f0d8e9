#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) once after creating envs/saebench.yaml: sae-bench and the few packages its evals
# import, installed WITHOUT dependencies over the pinned stack (its own pins would replace numpy and torch).
# The list repeats requirements/saebench.txt (Snakemake runs this from the conda prefix, not the repository);
# tests/test_envs.py checks that the two agree.
set -euo pipefail
pip install --no-deps \
  sae-bench==0.6.0 \
  tabulate==0.10.0 \
  sae-probes==0.4.2 \
  scikit-learn==1.9.1 \
  threadpoolctl==3.8.0 \
  joblib==1.6.0 \
  xgboost-cpu==3.2.0 \
  zstandard==0.25.0
