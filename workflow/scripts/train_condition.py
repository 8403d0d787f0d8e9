"""Snakemake script for rule train_condition: hands the rule's files to husai.pipeline.train_condition."""

from husai.smk import run

run(snakemake, "train_condition")  # noqa: F821  (snakemake is injected by Snakemake)
