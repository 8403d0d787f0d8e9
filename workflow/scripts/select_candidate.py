"""Snakemake script for rule select_candidate: hands the rule's files to husai.pipeline.select_candidate."""

from husai.smk import run

run(snakemake, "select_candidate")  # noqa: F821  (snakemake is injected by Snakemake)
