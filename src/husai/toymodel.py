"""The embedded default's base model: a one-layer transformer that learns (a + b) mod p.

Protocol that cannot cheat: the input is [a, b, =] and the answer is read out at the `=` position, whose
input token carries no information about the answer; the answer token is never an input. Pairs are split
once by `seed` into train and held-out, and accuracy is reported on held-out pairs never trained on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

ANSWER_POS = 2  # the `=` position


@dataclass(frozen=True)
class ToyModelConfig:
    p: int = 59
    train_fraction: float = 0.6
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_layers: int = 1
    steps: int = 1000
    lr: float = 3e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    seed: int = 0
    fourier_top_k: int = 5  # frequencies counted by the Fourier-concentration statistic

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.fourier_top_k > (self.p - 1) // 2:
            raise ValueError(f"fourier_top_k={self.fourier_top_k} exceeds the {(self.p - 1) // 2} frequencies of p")


def hooked_config(cfg: ToyModelConfig):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_head=cfg.d_model // cfg.n_heads, n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=cfg.p + 1, d_vocab_out=cfg.p, n_ctx=3, act_fn="relu",
        normalization_type=None, seed=cfg.seed, device="cpu",
    )


def build_model(cfg: ToyModelConfig):
    from transformer_lens import HookedTransformer

    torch.manual_seed(cfg.seed)
    return HookedTransformer(hooked_config(cfg))


def all_pairs(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Every [a, b, =] input (token p is `=`) and its answer (a + b) mod p, in row-major (a, b) order."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1)
    return tokens.astype(np.int64), ((a + b) % p).astype(np.int64)


def split_pairs(p: int, train_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over all_pairs rows: True = used to train the model."""
    rng = np.random.default_rng(seed)
    n = p * p
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(train_fraction * n))]] = True
    return mask


def fourier_concentration(W_E_pD: torch.Tensor, top_k: int) -> float:
    """Fraction of the embedding's non-constant power in its top_k Fourier frequencies over token values.

    A grokked modular-addition model embeds numbers with a few key frequencies (Nanda et al. 2023), so this is
    near 1 for it and near top_k / ((p-1)/2) plus sampling noise for a random embedding."""
    p = W_E_pD.shape[0]
    x = torch.arange(p, dtype=torch.float64)
    W = W_E_pD.detach().to(torch.float64)
    W = W - W.mean(0, keepdim=True)
    powers = []
    for freq in range(1, (p - 1) // 2 + 1):
        c = torch.cos(2 * torch.pi * freq * x / p)
        s = torch.sin(2 * torch.pi * freq * x / p)
        c, s = c / c.norm(), s / s.norm()
        powers.append(float((c @ W).pow(2).sum() + (s @ W).pow(2).sum()))
    powers = np.sort(np.asarray(powers))[::-1]
    return float(powers[:top_k].sum() / powers.sum())


@torch.no_grad()
def accuracy(model, tokens: torch.Tensor, answers: torch.Tensor) -> tuple[float, np.ndarray]:
    logits = model(tokens)[:, ANSWER_POS, :]
    correct = (logits.argmax(-1) == answers).cpu().numpy()
    return float(correct.mean()), correct


def train_toy_model(cfg: ToyModelConfig, log_every: int = 50):
    """Full-batch AdamW on the train pairs; returns (model, metrics dict)."""
    model = build_model(cfg)
    init_fourier = fourier_concentration(model.W_E[: cfg.p], cfg.fourier_top_k)
    tokens, answers = all_pairs(cfg.p)
    mask = split_pairs(cfg.p, cfg.train_fraction, cfg.seed)
    tr_x, tr_y = torch.from_numpy(tokens[mask]), torch.from_numpy(answers[mask])
    te_x, te_y = torch.from_numpy(tokens[~mask]), torch.from_numpy(answers[~mask])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(cfg.beta1, cfg.beta2))
    curve = {"step": [], "train_loss": [], "heldout_accuracy": []}
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        logits = model(tr_x)[:, ANSWER_POS, :]
        loss = torch.nn.functional.cross_entropy(logits, tr_y)
        if not torch.isfinite(loss):
            raise RuntimeError(f"toy model: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            curve["step"].append(step)
            curve["train_loss"].append(loss.item())
            curve["heldout_accuracy"].append(accuracy(model, te_x, te_y)[0])
    seconds = time.perf_counter() - t0
    train_acc, _ = accuracy(model, tr_x, tr_y)
    test_acc, _ = accuracy(model, te_x, te_y)
    reached = next((s for s, a in zip(curve["step"], curve["heldout_accuracy"], strict=True) if a >= 0.99), None)
    metrics = {
        "train_accuracy": train_acc,
        "heldout_accuracy": test_acc,
        "n_train_pairs": int(mask.sum()),
        "n_heldout_pairs": int((~mask).sum()),
        "fourier_concentration": fourier_concentration(model.W_E[: cfg.p], cfg.fourier_top_k),
        "fourier_concentration_random_init": init_fourier,
        "fourier_concentration_chance": cfg.fourier_top_k / ((cfg.p - 1) // 2),
        "first_logged_step_heldout_ge_0.99": reached,
        "train_seconds": seconds,
        "curve": curve,
        "config": asdict(cfg),
        "protocol": "inputs [a, b, =]; answer (a+b) mod p read at the '=' position; held-out = pairs never trained",
    }
    return model, metrics


def load_model(cfg: ToyModelConfig, weights_path):
    from husai.io import load_safetensors

    model = build_model(cfg)
    state = load_safetensors(weights_path)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
