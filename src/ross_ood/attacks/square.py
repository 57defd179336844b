"""Square: a score-based, gradient-free L-inf attack (Andriushchenko, Croce, Flammarion & Hein,
"Square Attack: a query-efficient black-box adversarial attack via random search", ECCV 2020).

Random search on the vertices of the L-inf ball: start at vertical stripes (each column of each
channel at +eps or -eps), then at every query move one random square window of side s to +eps or
-eps per channel, and keep the candidate when the attacker's value improves. The window's area is
a fraction p of the image, p halved on the schedule of the reference code (``p_init`` at the
start, rescaled to the query budget). It reads only the score's values, never a gradient: a
defence whose gradients are useless (flat, quantised, computed without autograd) does not stop it.

Values: the ``judge`` (a randomised defence's own score on common random numbers keyed by the
clean input, so every candidate of one input is compared on the same noise), else the score
itself (deterministic). Per input, the windows and signs come from a stream keyed by the input's
content, the seed and the restart: the result of an input never depends on its batch.
Reference implementation: fra31/auto-attack ``autoattack/square.py`` (its L-inf branch); the
differences: one window per input (there one per batch), a candidate that changes nothing is not
queried, and a window is accepted on strict improvement of the score (there of the margin loss).
"""
from __future__ import annotations

import math

import torch

from ross_ood.attacks.base import (
    AttackConfig,
    JudgeFn,
    ScoreFn,
    StopFn,
    _Running,
    _trace,
    _valuer,
    project,
)
from ross_ood.noise import content_keys, draw_noise

__all__ = ['square', 'p_selection', 'SQUARE_CHECK_EVERY']

_SQUARE_SALT = 3 << 20  # keeps the windows apart from the start points and the smoothing noise

#: queries between early-stopping checks (a check costs about one query)
SQUARE_CHECK_EVERY = 25


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The window's share of the image at query ``it`` of ``n_queries``: the reference code's
    schedule on 10,000 queries (``p_init`` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000,
    8000), rescaled to ``n_queries``."""
    it = int(it / n_queries * 10000)
    for k, edge in enumerate((8000, 6000, 4000, 2000, 1000, 500, 200, 50, 10)):
        if it > edge:
            return p_init / 2 ** (9 - k)
    return p_init


def square(score_fn: ScoreFn, x: torch.Tensor, eps: torch.Tensor, cfg: AttackConfig, clip: bool,
           restart: int = 0, stop_fn: StopFn | None = None, check_every: int = SQUARE_CHECK_EVERY,
           x_init: torch.Tensor | None = None, judge: JudgeFn | None = None,
           keys: list | None = None, trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Square attack with ``cfg.steps`` queries per input (module doc); returns the best iterate
    and the attacker's value of it (sign x score). With ``stop_fn``, every ``check_every``
    queries the best iterates of the running inputs are checked and the done ones leave the
    batch. ``x_init`` (projected into the ball) replaces the stripes start."""
    sign = 1.0 if cfg.objective == "max" else -1.0
    b, c, h, w = x.shape
    rng_keys = content_keys(x)
    keys = rng_keys if keys is None else keys

    value = _valuer(score_fn, judge, sign)

    dev, dt = x.device, x.dtype
    if x_init is None:
        stripes = draw_noise(rng_keys, [restart] * b, (c, 1, w), cfg.seed, _SQUARE_SALT + 1, uniform=True)
        x_adv = project(x + eps * torch.where(stripes.to(dev) < 0.5, -1.0, 1.0).to(dt), x, eps, clip)
    else:
        x_adv = project(x_init.to(dt), x, eps, clip)
    # per input and query: the window's corner (2 uniforms) and one sign per channel
    u = draw_noise(rng_keys, [restart] * b, (max(cfg.steps, 1), 2 + c), cfg.seed, _SQUARE_SALT, uniform=True).to(dev)
    f_best = value(x_adv, keys)
    st = {"x": x, "x_best": x_adv.clone(), "f_best": f_best, "u": u}
    run = _Running(st["x_best"], f_best, keys)
    _trace(trace, restart, 0, run.idx, f_best)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    for i in range(cfg.steps):
        p = p_selection(cfg.p_init, i, cfg.steps)
        s = max(min(int(round(math.sqrt(p * h * w))), min(h, w) - 1), 1)  # a window always fits, even 1 x 1
        ui = st["u"][:, i]
        vh = (ui[:, 0] * (h - s + 1)).floor().clamp(max=h - s)[:, None]
        vw = (ui[:, 1] * (w - s + 1)).floor().clamp(max=w - s)[:, None]
        in_h = (rows[None] >= vh) & (rows[None] < vh + s)
        in_w = (cols[None] >= vw) & (cols[None] < vw + s)
        window = (in_h[:, :, None] & in_w[:, None, :])[:, None]  # (B, 1, H, W)
        signs = torch.where(ui[:, 2:] < 0.5, -1.0, 1.0).to(dt)[:, :, None, None]
        cand = project(torch.where(window, st["x"] + eps * signs, st["x_best"]), st["x"], eps, clip)
        moved = (cand != st["x_best"]).flatten(1).any(1)
        if moved.any():
            idx = moved.nonzero().flatten()
            sub_keys = [run.keys[j] for j in idx.tolist()] if judge is not None else None
            f = value(cand[idx], sub_keys)
            better = f > st["f_best"][idx]
            st["x_best"][idx[better]] = cand[idx[better]]
            st["f_best"][idx[better]] = f[better]
        if (i + 1) % check_every == 0 or i + 1 == cfg.steps:
            _trace(trace, restart, i + 1, run.idx, st["f_best"])
            if stop_fn is not None and i + 1 < cfg.steps:
                done = stop_fn(st["x_best"]).to(dev)
                if done.any():
                    st = run.drop(done, st)
                    if not len(run.idx):
                        break
    return run.finish(st["x_best"], st["f_best"])
