#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) once after creating envs/saebench.yaml: sae-bench and the few packages its evals
# import, installed WITHOUT dependencies over the pinned stack (its own pins would replace numpy and torch).
set -euo pipefail
pip install --no-deps -r requirements/saebench.txt
