"""Snakemake script for rule judge_regularised: hands the rule's files to husai.pipeline_saes.judge_regularised."""

import sys
from pathlib import Path

# Under --sdm conda the per-rule envs do not install husai; the repository's src/ is the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from husai.smk import run  # noqa: E402

run(snakemake, "judge_regularised")  # noqa: F821  (snakemake is injected by Snakemake)
