"""What every attack shares: the budget and its projection, the configuration, start points,
the EOT gradient, and the bookkeeping of the best iterate judged on common random numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ross_ood.attacks.registry import ALGORITHMS, attack_names, registered_attack
from ross_ood.model import ModelWrapper
from ross_ood.noise import channel_scale, content_keys, draw_noise
from ross_ood.validate import SPACES, check_choice, check_eps, check_int, check_number

__all__ = ['AttackConfig', 'StopFn', 'JudgeFn', 'ScoreFn', 'eps_tensor', 'project', 'OBJECTIVES', 'DIRECTIONS', 'ALGORITHMS', 'SIDES', 'OBJECTIVE_NAMES', 'ATTACK_VERSION', 'CHECK_EVERY', 'new_attack_run', 'LEG_SETTINGS', 'SHARED_SETTINGS']


#: evaluation objectives and the attacked sides they combine: PGD-Min (ID attacked down), PGD-Max
#: (OOD attacked up) and PGD-Both (both at once, as ATD, ALOE and AROS evaluate). Every input's
#: attack depends only on its own score, so PGD-Both pairs exactly the attacked inputs of the
#: other two, and reads them from the same cache.
SIDES = {"min": ("min",), "max": ("max",), "both": ("min", "max")}


#: how the tables name each objective
OBJECTIVE_NAMES = {"min": "PGD-Min", "max": "PGD-Max", "both": "PGD-Both"}


#: the evaluation objectives (one name for them: ``engine.adversarial`` re-exports it)
OBJECTIVES = tuple(SIDES)
#: what one attack does to each input's score: lower it (ID, ``min``) or raise it (OOD, ``max``)
DIRECTIONS = ("min", "max")




_START_SALT = 1 << 20  # keeps start points apart from the smoothing noise streams


#: which ``engine.AttackBudget`` settings each leg of the attack reads (the rest, ``SHARED_SETTINGS``,
#: every leg): the one list that ``ross combine --legs`` takes each leg's settings by, checked
#: against the budget's fields by tests/test_attack_registry.py
LEG_SETTINGS = {"transfer": ("transfer_steps", "transfer_step_size"),
                "adaptive": ("adaptive_steps", "adaptive_restarts", "eot", "attack_n", "surrogates", "warm_start",
                             "judge_n", "apgd_eta0", "apgd_judge_every", "eotpgd_steps", "eotpgd_surrogates",
                             "eotpgd_n", "eotpgd_restarts", "extra_attacks"),
                "square": ("square_queries", "square_n")}
SHARED_SETTINGS = ("early_stop", "check_every", "judge", "precision")


#: bumped whenever the attack code changes what it computes: part of every cache key
ATTACK_VERSION = 4


CHECK_EVERY = 10  # default APGD steps between early-stopping checks


ScoreFn = Callable[[torch.Tensor, int], torch.Tensor]


StopFn = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) inputs -> (B,) bool: "done, stop attacking"


JudgeFn = Callable[[torch.Tensor, list], torch.Tensor]  # (x, clean inputs' keys) -> (B,) the defence's score


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """One attack (every field by keyword). ``eps``: the L-inf budget as a fraction of the pixel
    range (8/255 = 0.0314; in ``normalized`` space, times each channel's std), at most 1.
    ``algorithm``: pgd, apgd, eotpgd or square (gradient-free; ``steps`` = queries per input).
    ``step_size``: PGD's step, or EOT-PGD's first step, as a fraction of eps; ``step_min``:
    EOT-PGD's last step; ``eta0``: APGD's first step; ``judge_every``: EOT-PGD's steps between
    judgements of the iterate; ``p_init``: Square's first window, as a share of the image."""

    eps: float
    objective: str  # "min" or "max"
    eps_space: str = "pixel"
    algorithm: str = "pgd"
    steps: int = 40
    step_size: float = 1 / 30
    restarts: int = 1
    random_start: bool = True
    eot: int = 1
    keep: str = "last"  # "last" iterate (the paper's PGD) or "best"
    seed: int = 0
    eta0: float = 2.0
    step_min: float = 1 / 40
    judge_every: int = 10
    p_init: float = 0.8  # Square's first window share of the image (AutoAttack's value)
    params: tuple = ()  # a registered attack's own settings, sorted (name, value) pairs (attacks.registry)

    def __post_init__(self):
        check_choice("objective (an attack's direction)", self.objective, DIRECTIONS)
        check_choice("eps_space", self.eps_space, SPACES)
        check_choice("attack algorithm", self.algorithm, attack_names())
        check_eps(self.eps)
        check_int("steps", self.steps, minimum=0)
        check_int("restarts", self.restarts)
        check_int("eot", self.eot)
        check_number("step_size", self.step_size, strict=True)
        check_choice("keep", self.keep, ("last", "best"))
        check_number("eta0", self.eta0, strict=True)
        check_number("step_min", self.step_min, strict=True)
        check_int("judge_every", self.judge_every)
        check_number("p_init", self.p_init, strict=True)
        if self.p_init > 1:
            raise ValueError(f"p_init is a share of the image, in (0, 1]; got {self.p_init}")

    def spec(self) -> dict:
        """What determines the attack's result (a cache key). ``p_init`` enters for Square only:
        the keys of the gradient attacks stay those of the caches written before it existed."""
        skip = (() if self.algorithm == "square" else ("p_init",)) + (() if self.params else ("params",))
        out = {"version": ATTACK_VERSION, **{k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}}
        if self.algorithm not in ALGORITHMS:
            out.update(params=dict(self.params), **registered_attack(self.algorithm).key())
        return out


def eps_tensor(model: ModelWrapper, eps: float, eps_space: str) -> torch.Tensor:
    """Per-channel pixel-space budget, shape (1, C, 1, 1)."""
    return channel_scale(model.std, eps, eps_space)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, clip: bool) -> torch.Tensor:
    """Into the L-infinity ball of radius ``eps`` around ``x`` (and [0, 1] when ``clip``)."""
    out = x + (x_adv - x).clamp(-eps, eps)
    return out.clamp(0.0, 1.0) if clip else out


def _gain_and_grad(score_fn: ScoreFn, x: torch.Tensor, sign: float, eot: int, draw0: int):
    """Mean over ``eot`` draws of sign * score, and its input gradient."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        total = 0
        for k in range(eot):
            total = total + sign * score_fn(x, draw0 + k)
        gain = total / eot
        if not gain.requires_grad:  # computed without autograd (torch.no_grad, .detach(), numpy)
            _warn_no_gradient()
            return gain.detach(), torch.zeros_like(x)
        (g,) = torch.autograd.grad(gain.sum(), x, allow_unused=True)
    if g is None:
        _warn_no_gradient()
        return gain.detach(), torch.zeros_like(x)
    return gain.detach(), g.detach()


#: whether this attack (one report, one ``Attack`` call) has said that its score has no gradient
_NO_GRADIENT_SAID = [False]


def new_attack_run() -> None:
    """A new report or ``Attack`` call: its first gradient-less score is said again (once)."""
    _NO_GRADIENT_SAID[0] = False


def _warn_no_gradient() -> None:
    """Once per attack run (``new_attack_run``), not once per batch: Python's own once-per-place
    registry is cleared whenever a warnings filter changes, which image decoding does."""
    if _NO_GRADIENT_SAID[0]:
        return
    _NO_GRADIENT_SAID[0] = True
    import warnings
    warnings.warn("the attacked score has no gradient with respect to the input (computed without autograd): "
                  "the gradient attacks cannot move it, and only the gradient-free leg (target 'square', part of "
                  "'worst') measures its robustness", RuntimeWarning, stacklevel=1)


def _start(x, eps, clip, cfg: AttackConfig, restart: int):
    """Uniform start in the eps ball. Like the smoothing noise, the start of an input depends
    only on (seed, restart, the input's content), not on its batch."""
    if not cfg.random_start:
        return x.clone()
    keys = content_keys(x)
    u = draw_noise(keys, [0] * len(keys), x.shape[1:], cfg.seed, _START_SALT + restart, uniform=True)
    u = u.to(x.device, x.dtype) * 2 - 1
    return project(x + u * eps, x, eps, clip)


class _Running:
    """The rows of a batch still being attacked, and the finished results of the others:
    ``drop(done)`` files the done rows' best iterates and removes them from every tensor in
    ``state`` (and from ``keys``)."""

    def __init__(self, x_best: torch.Tensor, f_best: torch.Tensor, keys):
        self.out_x, self.out_f = x_best.clone(), f_best.clone()
        self.idx = torch.arange(len(x_best), device=x_best.device)
        self.keys = keys

    def drop(self, done: torch.Tensor, state: dict) -> dict:
        self.out_x[self.idx[done]], self.out_f[self.idx[done]] = state["x_best"][done], state["f_best"][done]
        keep = ~done
        self.idx = self.idx[keep]
        if self.keys is not None:
            self.keys = [k for k, d in zip(self.keys, done.tolist()) if not d]
        return {k: v[keep] for k, v in state.items()}

    def finish(self, x_best: torch.Tensor, f_best: torch.Tensor):
        self.out_x[self.idx], self.out_f[self.idx] = x_best, f_best
        return self.out_x.detach(), self.out_f


def _judged(judge: JudgeFn | None, sign: float, x: torch.Tensor, keys, gain: torch.Tensor | None = None):
    """The attacker's value of iterates ``x``: sign x the judge's score, or, without a judge,
    ``gain`` (the attack's own exact value of a deterministic score)."""
    if judge is None:
        return gain
    return sign * judge(x, keys).to(x.device, torch.float64)


def _valuer(score_fn: ScoreFn, judge: JudgeFn | None, sign: float):
    """``value(x, keys)``: the attacker's value of iterates from the score's values alone (no
    gradient): sign x the judge's score on common random numbers, else sign x the (deterministic)
    score itself. EOT-PGD judges its iterates with it, Square its candidates."""
    def value(xv: torch.Tensor, keys) -> torch.Tensor:
        if judge is not None:
            return _judged(judge, sign, xv, keys)
        with torch.no_grad():
            return sign * score_fn(xv, 0).to(torch.float64)
    return value


def _trace(trace: list | None, restart: int, step: int, idx: torch.Tensor, f: torch.Tensor) -> None:
    """Diagnostics: the attacker's value (judged) of the current iterate of each running input."""
    if trace is not None:
        trace.append((restart, step, idx.cpu().numpy().copy(), f.detach().double().cpu().numpy().copy()))
