"""The TopK (+ AuxK) training step with explicit gradients: no autograd graph, every gradient written by hand.

Same math as `TopKSAE.training_losses` followed by `backward()` (tests/saes/test_topk_grad.py checks the
gradients against autograd and whole runs against the autograd trainer). Why: at the embedded sizes a step is
dominated by small ops, and autograd adds a dense [S, B, F] gradient of the pre-activations (a zero fill and a
scatter) plus a dense [S, D, B] x [S, B, F] weight-gradient GEMM, although only k of the F latents of a row
carry a gradient. Here both weight gradients are sparse scatters of S*B*k rows:

    loss_S = fvu_S + aux_S,  r = y_hat - y,  g_r = dL/dy_hat = 2 r / (B scale^2)
    dL/dvals[s,b,j]   = <g_r[s,b], W_dec[s, idx[s,b,j]]>           (a gather and a batched dot)
    dL/dpre (chosen)  = dL/dvals * [pre > 0]                       (ReLU; AuxK values: * isfinite)
    dL/dW_dec[s,f]    = sum over (b, j) with idx = f of vals * g_r[s,b]
    dL/dW_enc[s,:,f]  = sum over (b, j) with idx = f of dL/dpre * (x_b - b_dec_s)
    dL/db_enc[s,f]    = sum over (b, j) with idx = f of dL/dpre
    dL/db_dec[s]      = sum_b g_r[s,b] - W_enc[s] @ dL/db_enc[s]   (b_dec is subtracted from the input)

The scatters are `index_add_` over rows (deterministic on CPU, so a resumed run stays bit-identical), seed by
seed in a fixed order, so a seed's gradient does not depend on which other seeds share the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F_

from husai.saes.topk_select import network_applies, topk_indices_T


def _buffer(sae, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A step-to-step reusable tensor kept on the SAE (`_step_buffers`; the trainer drops them at the end): the
    multi-MB temporaries of a step would otherwise be fresh allocations that page-fault on every step."""
    bufs = sae.__dict__.setdefault("_step_buffers", {})
    t = bufs.get(name)
    if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
        t = bufs[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return t


def _aux_terms(sae, y_BD, r_SBO, pre_SBF, dead_SF, W_flat, seed_off):
    """AuxK forward and its gradient: (aux_S, flat idx, decoded values, d aux / d values, isfinite mask).
    The same computation as TopKSAE.aux_loss: dead latents' raw pre-activations reconstruct the detached
    residual y - y_hat, normalised by the residual's power and scaled by min(n_dead / k_aux, 1)."""
    cfg = sae.cfg
    S, B, _ = pre_SBF.shape
    k_aux = min(cfg.aux_k or max(1, cfg.d_in // 2), cfg.d_sae)
    resid = -r_SBO  # y - y_hat (no gradient flows through it)
    masked = pre_SBF.masked_fill(~dead_SF.unsqueeze(1), float("-inf"))
    top, idx = masked.topk(k_aux, dim=-1, sorted=False)
    fin = torch.isfinite(top).to(pre_SBF.dtype)
    va = pre_SBF.gather(-1, idx) * fin
    flat = idx + seed_off
    rh = F_.embedding_bag(flat.reshape(S * B, k_aux), W_flat, mode="sum",
                          per_sample_weights=va.reshape(S * B, k_aux)).view(S, B, -1)
    e = rh - resid
    num = (e * e).sum(dim=(1, 2))
    den = (resid * resid).sum(dim=(1, 2)).clamp_min(1e-12)
    scale_S = (dead_SF.sum(dim=1).to(num.dtype) / k_aux).clamp(max=1.0)
    aux = cfg.aux_k_coefficient * scale_S * num / den
    g_rh = e * (2 * cfg.aux_k_coefficient * scale_S / den).view(S, 1, 1)
    # k_aux (d_in / 2) is a large share of d_sae: one dense [B, O] x [O, F] product per seed, then a gather, costs
    # far less than gathering k_aux decoder rows per token (a [S * B * k_aux, O] temporary).
    g_va = torch.bmm(g_rh, sae.W_dec_SFD.transpose(1, 2)).gather(-1, idx)
    return aux, flat, va, g_rh, g_va * fin


@torch.no_grad()
def topk_step_grads(sae, x_BD: torch.Tensor, y_BD: torch.Tensor, dead_SF: torch.Tensor, scale: float,
                    any_dead: bool):
    """One TopK training forward; writes d(sum_S loss_S)/d(param) into every parameter's `.grad` (replacing
    it) and returns the same TrainOut as `training_losses`."""
    from husai.saes.base import TrainOut
    from husai.saes.topk import fired_from_indices

    W_enc, W_dec, b_enc, b_dec = sae.W_enc_SDF, sae.W_dec_SFD, sae.b_enc_SF, sae.b_dec_SD
    S, B = sae.n_seeds, x_BD.shape[0]
    D, F, O = W_enc.shape[1], W_enc.shape[2], W_dec.shape[2]
    sub_b_dec = sae.apply_b_dec_to_input
    c_SF = b_enc - torch.bmm(b_dec.unsqueeze(1), W_enc).squeeze(1) if sub_b_dec else b_enc
    K = sae.cfg.k
    if network_applies(F, K, x_BD.device):  # pre-activations as [S, F, B]: the selection network's layout
        preT = torch.bmm(W_enc.transpose(1, 2), x_BD.t().unsqueeze(0).expand(S, D, B),
                         out=_buffer(sae, "pre", (S, F, B), W_enc)).add_(c_SF.unsqueeze(2))
        idxT = topk_indices_T(preT, K)
        pre = preT.transpose(1, 2)  # (a view; only AuxK reads it)
        idx, pv = idxT.transpose(1, 2).contiguous(), preT.gather(1, idxT).transpose(1, 2).contiguous()
    else:
        pre = torch.baddbmm(c_SF.unsqueeze(1), x_BD.unsqueeze(0).expand(S, B, D), W_enc)
        idx = sae.select_indices(pre, x_BD)
        pv = pre.gather(-1, idx)
    vals = pv.relu()
    seed_off = (torch.arange(S, device=idx.device) * F).view(S, 1, 1)
    flat = idx + seed_off
    W_flat = W_dec.reshape(S * F, O)
    y_hat = F_.embedding_bag(flat.reshape(S * B, K), W_flat, mode="sum",
                             per_sample_weights=vals.reshape(S * B, K)).view(S, B, O) + b_dec.unsqueeze(1)
    r = y_hat - y_BD.unsqueeze(0)
    fvu = (r * r).sum(dim=2).mean(dim=1) / scale**2
    g_r = r * (2.0 / (B * scale**2))
    mask = (pv > 0).to(pv.dtype)  # ReLU
    if any_dead and sae.cfg.aux_k_coefficient != 0:
        aux, flat_a, va, g_rh, g_pre_a = _aux_terms(sae, y_BD, r, pre, dead_SF, W_flat, seed_off)
        idx_a = flat_a - seed_off
    else:
        aux, idx_a = y_hat.new_zeros(S), None
    # The weight gradients, one seed at a time: each seed's [B, k, D] temporaries (1 MB at the embedded sizes)
    # stay in cache, where all seeds' at once (5 MB) measured slower on a loaded machine. Per seed, the main
    # entries then the AuxK ones: the same order whoever shares the batch.
    rows = _buffer(sae, "rows", (B * K, O), W_dec)
    dec_src = _buffer(sae, "dec_src", (B, K, O), W_dec)
    enc_src = _buffer(sae, "enc_src", (B, K, D), W_enc)
    gW_dec = _buffer(sae, "grad_W_dec", (S, F, O), W_dec).zero_()
    gW_encT = _buffer(sae, "grad_W_enc_T", (S, F, D), W_enc).zero_()
    gW_enc = _buffer(sae, "grad_W_enc", tuple(W_enc.shape), W_enc)
    g_pre = torch.empty_like(pv)
    x_SBD = x_BD.unsqueeze(0) - b_dec.unsqueeze(1) if sub_b_dec else x_BD.unsqueeze(0).expand(S, B, D)
    for s in range(S):
        # dL/dvals = <g_r, chosen decoder rows>, then the ReLU mask
        torch.index_select(W_dec[s], 0, idx[s].reshape(-1), out=rows)
        torch.bmm(g_r[s].unsqueeze(1), rows.view(B, K, O).transpose(1, 2), out=g_pre[s].unsqueeze(1))
        g_pre[s].mul_(mask[s])
        # decoder rows: value * output gradient, summed over the rows that chose the latent
        torch.mul(vals[s].unsqueeze(-1), g_r[s].unsqueeze(1), out=dec_src)
        gW_dec[s].index_add_(0, idx[s].reshape(-1), dec_src.view(-1, O))
        # encoder columns: dL/dpre * (x - b_dec), summed over the rows that chose the latent
        torch.mul(g_pre[s].unsqueeze(-1), x_SBD[s].unsqueeze(1), out=enc_src)
        gW_encT[s].index_add_(0, idx[s].reshape(-1), enc_src.view(-1, D))
        if idx_a is not None:  # AuxK: k_aux of F latents per row, dense enough for two [F, B] x [B, *] products
            # (each row's aux indices are distinct; padding entries carry value and gradient 0)
            a_BF = torch.zeros(B, F, dtype=va.dtype, device=va.device).scatter_(1, idx_a[s], va[s])
            gW_dec[s].addmm_(a_BF.t(), g_rh[s])
            ga_BF = torch.zeros_like(a_BF).scatter_(1, idx_a[s], g_pre_a[s])
            gW_encT[s].addmm_(ga_BF.t(), x_SBD[s])
        gW_enc[s].copy_(gW_encT[s].t())  # (a 2-D transposed copy takes torch's blocked transpose path)
    flat_e = flat if idx_a is None else torch.cat([flat, flat_a], dim=2)
    g_pre = g_pre if idx_a is None else torch.cat([g_pre, g_pre_a], dim=2)
    g_c = torch.zeros(S * F, dtype=b_enc.dtype, device=b_enc.device).index_add_(
        0, flat_e.reshape(-1), g_pre.reshape(-1)).view(S, F)
    g_b_dec = g_r.sum(dim=1)
    if sub_b_dec:
        g_b_dec = g_b_dec - torch.bmm(g_c.unsqueeze(1), W_enc.transpose(1, 2)).squeeze(1)  # (row x matrix: fast)
    W_enc.grad, W_dec.grad, b_enc.grad, b_dec.grad = gW_enc, gW_dec, g_c, g_b_dec
    return TrainOut(terms={"fvu": fvu, "aux": aux}, fired_SF=fired_from_indices(vals, idx, F),
                    l0_S=(vals > 0).sum(dim=2).float().mean(dim=1), y_hat_SBD=y_hat)
