# husai: seed-replicated SAE consistency studies ending in one release verdict.
# Targets only; the stages live in rules/*.smk. See README.md for the user stories.

from husai.locking import acquire as acquire_results_lock, release as release_results_lock

# The embedded default, unless --configfile names a study (configs are not merged with the default).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/activations.smk"
include: "rules/saes.smk"
include: "rules/consistency.smk"
include: "rules/lanes.smk"
include: "rules/external.smk"
include: "rules/release.smk"
include: "rules/evidence.smk"
include: "rules/platform.smk"


rule all:
    default_target: True
    input:
        RELEASE_GATE_OK,


rule release_gate:
    input:
        RELEASE_GATE_OK,


rule evidence_bundle:
    input:
        EVIDENCE_MANIFEST,


rule platform_canary:
    input:
        rules.platform_canary_metrics.output.decision,


# One workflow at a time per results/ (Snakemake's own lock only guards overlapping outputs).
onstart:
    acquire_results_lock("results")


onsuccess:
    release_results_lock("results")


onerror:
    release_results_lock("results")
