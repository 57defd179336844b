"""``run_attack``: one configured attack (restarts, early stopping, judge) on a batch."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from ross_ood.attacks.apgd import apgd
from ross_ood.attacks.base import (
    CHECK_EVERY,
    AttackConfig,
    JudgeFn,
    ScoreFn,
    StopFn,
    eps_tensor,
    project,
)
from ross_ood.attacks.eotpgd import eotpgd
from ross_ood.attacks.pgd import pgd
from ross_ood.attacks.registry import ALGORITHMS, registered_attack
from ross_ood.attacks.square import SQUARE_CHECK_EVERY, square
from ross_ood.model import ModelWrapper
from ross_ood.noise import content_keys

__all__ = ['run_attack']


def run_attack(score_fn: ScoreFn, x: torch.Tensor, model: ModelWrapper, cfg: AttackConfig,
               eval_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, stop_fn: StopFn | None = None,
               check_every: int = CHECK_EVERY, x_init: torch.Tensor | None = None,
               judge: JudgeFn | None = None, trace: list | None = None,
               apgd_judge_every: int = 1, square_check_every: int = SQUARE_CHECK_EVERY) -> tuple[torch.Tensor, torch.Tensor]:
    """All restarts of one attack; per input, keep the restart that is worst for the defender
    (lowest score for ``min``, highest for ``max``) by ``eval_fn``, else by the ``judge`` (common
    random numbers keyed by the clean inputs ``x``), else by the attack's own value. Returns
    (x_adv, score). With ``stop_fn`` (APGD, EOT-PGD and Square; PGD is the paper's fixed protocol) inputs
    stop early inside a run, and a restart runs only on the inputs whose result is not done.
    ``x_init`` warm-starts the first run (later restarts start at random). ``trace`` (a list, APGD
    and EOT-PGD) receives (restart, step, rows, attacker's value) of every judged iterate.
    ``apgd_judge_every``: APGD's steps between judgements (``apgd``; EOT-PGD's is ``cfg.judge_every``);
    ``square_check_every``: Square's queries between early-stopping checks. Square reads only the
    score's values (``judge`` when given, else ``score_fn``), never its gradient."""
    own = None if cfg.algorithm in ALGORITHMS else registered_attack(cfg.algorithm)
    if stop_fn is not None and (cfg.algorithm == "pgd" or (own is not None and not own.early_stop)):
        raise ValueError(f"early stopping is not implemented for {cfg.algorithm} (PGD is the paper's fixed protocol; "
                         "a registered attack says so with early_stop=False)")
    eps = eps_tensor(model, cfg.eps, cfg.eps_space).to(x.device, x.dtype)
    clip = cfg.eps_space == "pixel"
    sign = 1.0 if cfg.objective == "max" else -1.0
    keys = content_keys(x) if judge is not None else None
    best_x, best_s = None, None
    todo = torch.arange(len(x), device=x.device)  # inputs the next restart runs on
    for r in range(cfg.restarts):
        sub_keys = None if keys is None else [keys[i] for i in todo.tolist()]
        if cfg.algorithm == "pgd":
            x_adv, gain = pgd(score_fn, x[todo], eps, cfg, clip, restart=r)
        elif own is not None:  # an attack of one's own (attacks.registry): the keywords of the built-in ones
            x_adv, gain = own.fn(score_fn, x[todo], eps, cfg, clip, restart=r, stop_fn=stop_fn, check_every=check_every,
                                 judge=judge, keys=sub_keys, trace=trace,
                                 x_init=x_init[todo] if x_init is not None and r == 0 else None)
            x_adv = project(x_adv.detach().to(x.dtype), x[todo], eps, clip)  # within the budget, whatever it did
        else:
            algo = {"apgd": partial(apgd, judge_every=apgd_judge_every), "eotpgd": eotpgd, "square": square}[cfg.algorithm]
            every = square_check_every if cfg.algorithm == "square" else check_every
            x_adv, gain = algo(score_fn, x[todo], eps, cfg, clip, restart=r, stop_fn=stop_fn,
                               check_every=every, judge=judge, keys=sub_keys, trace=trace,
                               x_init=x_init[todo] if x_init is not None and r == 0 else None)
        with torch.no_grad():
            s = eval_fn(x_adv) if eval_fn is not None else sign * gain
        if best_x is None:
            best_x, best_s = x_adv, s
        else:
            better = sign * s > sign * best_s[todo]
            best_x[todo[better]] = x_adv[better]
            best_s[todo[better]] = s[better]
        if stop_fn is not None and r + 1 < cfg.restarts:
            todo = todo[~stop_fn(best_x[todo]).to(x.device)]
            if not len(todo):
                break
    return best_x.detach(), best_s.detach()
