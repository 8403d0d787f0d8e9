"""Snakemake script for rule evidence_run_id: hands the rule's files to husai.pipeline.evidence_run_id."""

from husai.smk import run

run(snakemake, "evidence_run_id")  # noqa: F821  (snakemake is injected by Snakemake)
