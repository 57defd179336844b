"""A plain EOT-PGD on a median-smoothed score, written apart from ross_ood.attacks on purpose:
the reference that the project's attack must match or beat (issue 17). It shares nothing with
the library but the model and the score function: its own noise (one torch generator), its own
step schedule, its own best-iterate rule.

One random start; ``steps`` sign-gradient steps of size eps/40 + (eps/4 - eps/40)(1 + cos(pi t / T))/2;
the gradient of the mean base score over ``copies`` fresh Gaussian copies per step (clipped to
[0, 1] in pixel space); every ``judge_every`` steps, per input, keep the best iterate by the
median over ``judge_copies`` *fixed* noise draws. Each input's attack depends only on its own
rows of the generator's draws for a given batch.
"""
from __future__ import annotations

import math

import torch


def reference_eotpgd(score, x: torch.Tensor, sigma_px: torch.Tensor, eps_px: torch.Tensor, objective: str,
                     clip: bool = True, steps: int = 60, copies: int = 16, judge_copies: int = 16,
                     judge_every: int = 10, seed: int = 0) -> torch.Tensor:
    """``score(x) -> (B,)`` the base score (higher = ID); ``sigma_px`` and ``eps_px`` per channel
    (1, C, 1, 1) in pixel units. Returns the adversarial inputs."""
    g = torch.Generator().manual_seed(seed)
    sign = -1.0 if objective == "min" else 1.0

    def noisy(v, n):
        return torch.stack([score(((v + sigma_px * torch.randn(v.shape, generator=g)).clamp(0, 1) if clip
                                   else v + sigma_px * torch.randn(v.shape, generator=g))) for _ in range(n)])

    fixed = torch.randn((judge_copies, *x.shape), generator=g)

    def judge(v):
        with torch.no_grad():
            s = torch.stack([score((v + sigma_px * d).clamp(0, 1) if clip else v + sigma_px * d) for d in fixed])
        return sign * s.median(0).values

    def proj(v):
        v = torch.max(torch.min(v, x + eps_px), x - eps_px)
        return v.clamp(0, 1) if clip else v

    x_adv = proj(x + eps_px * (2 * torch.rand(x.shape, generator=g) - 1))
    best, best_f = x_adv.clone(), judge(x_adv)
    for t in range(steps):
        alpha = eps_px * (1 / 40 + (1 / 4 - 1 / 40) * 0.5 * (1 + math.cos(math.pi * t / steps)))
        v = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(sign * noisy(v, copies).mean(0).sum(), v)
        x_adv = proj(x_adv + alpha * grad.sign()).detach()
        if (t + 1) % judge_every == 0:
            f = judge(x_adv)
            better = f > best_f
            best[better], best_f = x_adv[better], torch.where(better, f, best_f)
    return best
