"""Snakemake script for rule merge_activations: hands the rule's files to husai.pipeline.merge_activations."""

from husai.smk import run

run(snakemake, "merge_activations")  # noqa: F821  (snakemake is injected by Snakemake)
