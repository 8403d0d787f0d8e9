"""The bridge from a Snakemake `script:` to a husai.pipeline function: log redirection and argument passing.

A workflow script is exactly: `from husai.smk import run; run(snakemake, "<rule function>")`; the function is
looked up in the husai.pipeline* modules."""

from __future__ import annotations

import contextlib
import sys
import traceback

RULE_MODULES = ("husai.pipeline", "husai.pipeline_text", "husai.pipeline_lanes", "husai.pipeline_evidence",
                "husai.pipeline_saes", "husai.pipeline_external")


def find_rule_function(name: str):
    import importlib

    for mod in RULE_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"no rule function {name!r} in {RULE_MODULES}")


def run(smk, name: str) -> None:
    import torch

    # A job uses the threads its rule asked for: oversubscribing 2 shared cores made training up to 10x slower.
    torch.set_num_threads(max(1, int(getattr(smk, "threads", 1) or 1)))
    func = find_rule_function(name)
    log_path = smk.log[0] if len(smk.log) else None
    with open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr) as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                func(smk.input, smk.output, smk.params, smk.config, smk.rule)
            except BaseException:
                traceback.print_exc()
                raise
