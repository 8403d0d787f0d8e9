"""Snakemake script for rule download_model: hands the rule's files to husai.pipeline.download_model."""

from husai.smk import run

run(snakemake, "download_model")  # noqa: F821  (snakemake is injected by Snakemake)
