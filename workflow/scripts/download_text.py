"""Snakemake script for rule download_text: hands the rule's files to husai.pipeline.download_text."""

from husai.smk import run

run(snakemake, "download_text")  # noqa: F821  (snakemake is injected by Snakemake)
