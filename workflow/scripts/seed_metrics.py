"""Snakemake script for rule seed_metrics: hands the rule's files to husai.pipeline.seed_metrics."""

from husai.smk import run

run(snakemake, "seed_metrics")  # noqa: F821  (snakemake is injected by Snakemake)
