# husai: seed-replicated SAE consistency studies ending in one release verdict.
# Targets only; the stages live in rules/*.smk. See README.md for the user stories.

# The embedded default, unless --configfile names a study (configs are not merged with the default).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/activations.smk"
include: "rules/saes.smk"
include: "rules/consistency.smk"
include: "rules/release.smk"


rule all:
    default_target: True
    input:
        RELEASE_GATE_OK,


rule release_gate:
    input:
        RELEASE_GATE_OK,
