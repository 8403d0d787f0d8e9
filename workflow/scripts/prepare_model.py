"""Snakemake script for rule prepare_model: hands the rule's files to husai.pipeline.prepare_model."""

from husai.smk import run

run(snakemake, "prepare_model")  # noqa: F821  (snakemake is injected by Snakemake)
