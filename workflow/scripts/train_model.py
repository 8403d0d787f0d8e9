"""Snakemake script for rule train_model: hands the rule's files to husai.pipeline.train_model."""

from husai.smk import run

run(snakemake, "train_model")  # noqa: F821  (snakemake is injected by Snakemake)
