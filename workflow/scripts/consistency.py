"""Snakemake script for rule consistency: hands the rule's files to husai.pipeline.consistency."""

from husai.smk import run

run(snakemake, "consistency")  # noqa: F821  (snakemake is injected by Snakemake)
