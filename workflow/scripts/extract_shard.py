"""Snakemake script for rule extract_shard: hands the rule's files to husai.pipeline.extract_shard."""

from husai.smk import run

run(snakemake, "extract_shard")  # noqa: F821  (snakemake is injected by Snakemake)
