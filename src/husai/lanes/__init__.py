"""Evaluation and stress lanes: splice, probes, transcoder stress, OOD stress, known-circuit recovery.

Each module is a set of library functions that return JSON-able dicts; the workflow's rules call them and the
release gate compares their values with thresholds from `config/policy.yaml`. Nothing here holds a threshold
as a hidden default that decides a gate: every pass/fail takes its threshold as an argument, so the policy
file stays the one place where a verdict is defined. Submodules are imported on use (they pull in torch,
statsmodels and TransformerLens), so importing `husai.lanes` alone costs nothing.
"""

LANES = ("splice", "probes", "transcoder_stress", "ood", "known_circuit")
