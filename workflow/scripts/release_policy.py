"""Snakemake script for rule release_policy: hands the rule's files to husai.pipeline.release_policy."""

from husai.smk import run

run(snakemake, "release_policy")  # noqa: F821  (snakemake is injected by Snakemake)
