"""Snakemake script for rule evidence_bundle_build: hands the rule's files to husai.pipeline.evidence_bundle."""

from husai.smk import run

run(snakemake, "evidence_bundle")  # noqa: F821  (snakemake is injected by Snakemake)
