"""The bridge from a Snakemake `script:` to a husai.pipeline function: log redirection and argument passing.

A workflow script is exactly: `from husai.smk import run; run(snakemake, "<pipeline function>")`."""

from __future__ import annotations

import contextlib
import sys
import traceback


def run(smk, name: str) -> None:
    from husai import pipeline

    func = getattr(pipeline, name)
    log_path = smk.log[0] if len(smk.log) else None
    with open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr) as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                func(smk.input, smk.output, smk.params, smk.config, smk.rule)
            except BaseException:
                traceback.print_exc()
                raise
