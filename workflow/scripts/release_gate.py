"""Snakemake script for rule release_gate: hands the rule's files to husai.pipeline.release_gate."""

from husai.smk import run

run(snakemake, "release_gate")  # noqa: F821  (snakemake is injected by Snakemake)
