"""Gates of the evaluation and stress lanes. PLACEHOLDER until the lane wiring lands: each gate reports its
evidence as missing (so a required lane gate fails, an optional one is skipped) — never passed."""

from __future__ import annotations

from husai.gate import _missing

# gate name -> lane evidence name (results/lanes/<model>/<hook>/<condition>/<lane>.json; transcoder per study)
LANE_EVIDENCE = {"splice": "splice", "probe_tripwires": "probes", "ood": "ood", "known_circuit": "known_circuit",
                 "transcoder": "transcoder"}


def _not_wired(name):
    return lambda spec, record, policy: _missing(name, spec, f"{name} lane evidence not produced")


LANE_GATES = {name: _not_wired(name) for name in LANE_EVIDENCE}
