"""The assignment-consistency regulariser, and the honest way to judge it.

Training adds, per seed s,   lambda_s * (1 - mean_i |cos(W_dec[s, i], R[pi_s(i)])|)
where R is a reference decoder (rows = feature directions) and pi_s the one-to-one Hungarian assignment of
the seed's latents to reference rows that maximises total |cos|. The assignment is a discrete choice, so it
is recomputed (scipy's linear_sum_assignment, on the host) only every `update_interval` steps and held fixed
in between; the loss is differentiable in W_dec for a fixed assignment. It is part of the trainer state, so a
resumed run continues with the very assignment the killed one had. lambda = 0 leaves the trainer untouched
(the trainer skips the term), so the unregularised run is exactly the lambda = 0 condition.

Pulling seeds toward one reference trivially makes them agree with it and with each other; neither is
evidence of consistency. `judge_regularised` reports the consistency of the regularised seeds with a
*held-out set of unregularised seeds* (trained without the reference), beside the unregularised seeds'
consistency among themselves and the explained-variance cost.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import torch


class AssignmentRegularizer:
    def __init__(self, reference_GD, lam: float | list[float], update_interval: int = 100, method: str = "scipy"):
        """reference_GD: [G, D] (or one per seed slice, [S, G, D]) decoder rows. lam: one value, or one per slice.
        method: "scipy" (exact Hungarian), or any husai.assignment method ("auto": exact up to 4096 latents,
        a certified auction above, where the O(n^3) Hungarian takes ~36 s per refresh at 16384)."""
        ref = reference_GD.detach().cpu().float() if isinstance(reference_GD, torch.Tensor) else \
            torch.as_tensor(np.asarray(reference_GD), dtype=torch.float32)
        if ref.ndim not in (2, 3) or not torch.isfinite(ref).all():
            raise ValueError(f"reference decoder must be finite [G, D] (or [S, G, D]), got shape {tuple(ref.shape)}")
        if update_interval < 1:
            raise ValueError(f"assignment_update_interval must be >= 1, got {update_interval}")
        self.ref = torch.nn.functional.normalize(ref, dim=-1)
        self.lam = torch.as_tensor(lam, dtype=torch.float32).reshape(-1)
        if bool((self.lam < 0).any()):
            raise ValueError(f"lambda must be >= 0, got {self.lam.tolist()}")
        self.update_interval = int(update_interval)
        self.method = method
        self.rows_SM: torch.Tensor | None = None
        self.cols_SM: torch.Tensor | None = None
        self.updated_at = -1

    @property
    def active(self) -> bool:
        return bool((self.lam > 0).any())

    def fingerprint(self) -> dict:
        digest = hashlib.sha256(self.ref.numpy().tobytes()).hexdigest()
        return {"lam": self.lam.tolist(), "update_interval": self.update_interval, "reference_sha256": digest,
                "method": self.method}

    def _ref_for(self, S: int, device) -> torch.Tensor:
        ref = self.ref.to(device)
        return ref.unsqueeze(0).expand(S, -1, -1) if ref.ndim == 2 else ref

    @torch.no_grad()
    def refresh_(self, W_dec_SFD: torch.Tensor) -> None:
        """Recompute every seed's Hungarian assignment on |cos| (host work, every update_interval steps)."""
        S = W_dec_SFD.shape[0]
        W = torch.nn.functional.normalize(W_dec_SFD.detach().float(), dim=-1)
        sim = torch.bmm(W, self._ref_for(S, W.device).transpose(1, 2)).abs()
        rows, cols = zip(*(self._solve(sim[s]) for s in range(S)), strict=True)
        self.rows_SM = torch.as_tensor(np.stack(rows), dtype=torch.long, device=W_dec_SFD.device)
        self.cols_SM = torch.as_tensor(np.stack(cols), dtype=torch.long, device=W_dec_SFD.device)

    def _solve(self, sim_FG: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from husai.assignment import matched_assignment

        r = matched_assignment(sim_FG, method=self.method, device=sim_FG.device)
        return r.rows, r.cols

    def matched_abs_cos(self, W_dec_SFD: torch.Tensor) -> torch.Tensor:
        """Mean |cos| over the current assignment, per seed [S] (differentiable in W_dec)."""
        S, _, D = W_dec_SFD.shape
        W = torch.nn.functional.normalize(W_dec_SFD.float(), dim=-1)
        a = W.gather(1, self.rows_SM.unsqueeze(-1).expand(-1, -1, D))
        b = self._ref_for(S, W.device).gather(1, self.cols_SM.unsqueeze(-1).expand(-1, -1, D))
        return (a * b).sum(dim=-1).abs().mean(dim=1)

    def loss_S(self, sae, step: int) -> torch.Tensor:
        W = sae.W_dec_SFD
        if self.ref.shape[-1] != W.shape[2] or (self.ref.ndim == 3 and self.ref.shape[0] != W.shape[0]):
            raise ValueError(f"reference decoder {tuple(self.ref.shape)} does not fit W_dec {tuple(W.shape)}")
        if self.rows_SM is None or (step % self.update_interval == 0 and self.updated_at != step):
            self.refresh_(W)
            self.updated_at = step
        lam = self.lam.to(W.device).expand(W.shape[0])
        return lam * (1 - self.matched_abs_cos(W))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.rows_SM is None:
            return {}
        return {"rows": self.rows_SM, "cols": self.cols_SM, "updated_at": torch.tensor([self.updated_at])}

    def load_state_tensors(self, t: dict) -> None:
        if "rows" in t:
            self.rows_SM, self.cols_SM, self.updated_at = t["rows"].clone(), t["cols"].clone(), int(t["updated_at"][0])


def judge_regularised(regularised: list, heldout_unregularised: list, tau: float = 0.7,
                      ev_regularised: list[float] | None = None, ev_unregularised: list[float] | None = None,
                      reference=None, regularised_seeds: list[int] | None = None,
                      heldout_seeds: list[int] | None = None) -> dict:
    """Honest judging of a regularised condition.

    regularised: decoders [F, D] of the seeds trained with lambda > 0 toward `reference`.
    heldout_unregularised: decoders of seeds trained with lambda = 0 that never saw the reference.
    Returns, per statistic (husai.consistency's pwmcc, matched_mcc, shared_fraction): the headline
    `regularised_vs_heldout` (each regularised seed against every held-out seed, averaged per regularised
    seed: the seed is the unit), the baseline `heldout_vs_heldout`, the non-evidence `regularised_vs_regularised`
    and `regularised_vs_reference` (inflated by construction, reported for diagnosis only), and the EV drop.

    regularised_seeds / heldout_seeds: the seed ids of the two lists. When given, a regularised seed is never
    compared with the held-out seed of the same id: the two share their init (and the data order), so their
    agreement would be inflated by the shared start, not produced by the regulariser."""
    from husai.consistency import STATISTICS, pair_statistics

    if len(heldout_unregularised) < 2 or not regularised:
        raise ValueError("judging needs >= 1 regularised and >= 2 held-out unregularised seeds")
    r_ids = list(regularised_seeds) if regularised_seeds is not None else [None] * len(regularised)
    h_ids = list(heldout_seeds) if heldout_seeds is not None else [None] * len(heldout_unregularised)
    if len(r_ids) != len(regularised) or len(h_ids) != len(heldout_unregularised):
        raise ValueError("regularised_seeds / heldout_seeds must have one id per decoder")

    def summarise(per_seed: list[dict]) -> dict:
        return {name: {"mean": float(np.mean([p[name] for p in per_seed])),
                       "per_seed": [float(p[name]) for p in per_seed]} for name in STATISTICS}

    cross, skipped = [], []
    for A, ra in zip(regularised, r_ids, strict=True):
        pairs = [pair_statistics(A, B, tau) for B, hb in zip(heldout_unregularised, h_ids, strict=True)
                 if ra is None or ra != hb]
        skipped += [ra] if len(pairs) < len(heldout_unregularised) else []
        cross.append({name: float(np.mean([p[name] for p in pairs])) for name in STATISTICS})
    base = [pair_statistics(A, B, tau) for A, B in itertools.combinations(heldout_unregularised, 2)]
    within = [pair_statistics(A, B, tau) for A, B in itertools.combinations(regularised, 2)]
    out = {
        "headline": "regularised_vs_heldout",
        "regularised_vs_heldout": summarise(cross),
        "heldout_vs_heldout": summarise(base),
        "regularised_vs_regularised": summarise(within) if within else None,
        "regularised_vs_reference": summarise([pair_statistics(A, reference, tau) for A in regularised])
        if reference is not None else None,
        "n_regularised": len(regularised), "n_heldout": len(heldout_unregularised), "tau": tau,
        "regularised_seeds": r_ids, "heldout_seeds": h_ids, "same_seed_pairs_excluded": skipped,
        "note": "only regularised_vs_heldout minus heldout_vs_heldout is evidence of more consistent features; "
                "agreement among regularised seeds or with the reference is produced by the regulariser itself",
    }
    out["delta_vs_heldout_baseline"] = {name: out["regularised_vs_heldout"][name]["mean"]
                                        - out["heldout_vs_heldout"][name]["mean"] for name in STATISTICS}
    if ev_regularised is not None and ev_unregularised is not None:
        out["explained_variance"] = {"regularised": float(np.mean(ev_regularised)),
                                     "unregularised": float(np.mean(ev_unregularised)),
                                     "drop": float(np.mean(ev_unregularised) - np.mean(ev_regularised))}
    return out
