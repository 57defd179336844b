"""L-infinity attacks on any scalar score: PGD, APGD and EOT-PGD (gradients, with EOT) and
Square (gradient-free: the score's values only).

Objectives: ``min`` lowers the score (applied to ID inputs: ID looks OOD), ``max`` raises it
(applied to OOD inputs: OOD looks ID). The budget ``eps`` is in ``pixel`` units (the
adversarial image is clipped to [0, 1]) or ``normalized`` units (eps * std_c per channel,
no clipping, as the ROSS paper). All randomness (start points, EOT noise) is seeded.

``score_fn(x, draw)`` returns (B,) scores; ``draw`` numbers the EOT draw so that a
randomised defence can use fresh noise for each draw and step.

Randomised defences: the score an attack climbs is random, so two iterates scored on different
draws cannot be compared. ``judge(x, keys)`` (optional) is the defence's own statistic on
*common random numbers*: noise keyed by the clean inputs' ``keys`` and fixed for the whole
attack. Given a judge, every comparison between iterates (the best iterate, APGD's progress
checks and step-size halving, the choice between restarts) is made on it; without one (a
deterministic score) the attack's own value of the score is exact and is used.

Algorithms: ``pgd`` (the paper's fixed step, last or best iterate), ``square`` (Andriushchenko et
al. 2020: random square windows at the ball's vertices, ``steps`` queries), ``apgd`` (Croce & Hein 2020,
first step ``eta0`` x eps) and ``eotpgd``, a fixed-schedule EOT-PGD: sign steps of cosine-decaying
size from ``step_size`` x eps to ``step_min`` x eps, the best iterate by the judge every
``judge_every`` steps. The last needs no progress signal from the noisy objective at all, which
is what makes it hard to fool on a randomised score.

Early stopping (APGD and restarts): ``stop_fn(x)`` says per input whether attacking it
further is wasted (the caller decides; ``adversarial`` stops an input once the defended
score of its best iterate has crossed every clean score of the other side, which is exact
for the separate PGD-Min / PGD-Max metrics). A stopped input keeps the iterate that was
checked; the others continue as if alone, because every draw is keyed by the input's own
content and draw number: the result of an input never depends on which others are in its batch.

One attack per module: ``pgd``, ``apgd``, ``eotpgd``, ``square``; shared parts in ``base``; ``run_attack``
runs one configured attack with restarts and early stopping.
"""
from ross_ood.attacks.apgd import apgd
from ross_ood.attacks.base import (
                                   ALGORITHMS,
                                   ATTACK_VERSION,
                                   CHECK_EVERY,
                                   DIRECTIONS,
                                   LEG_SETTINGS,
                                   OBJECTIVE_NAMES,
                                   OBJECTIVES,
                                   SHARED_SETTINGS,
                                   SIDES,
                                   AttackConfig,
                                   JudgeFn,
                                   ScoreFn,
                                   StopFn,
                                   eps_tensor,
                                   project,
)
from ross_ood.attacks.eotpgd import eotpgd
from ross_ood.attacks.pgd import pgd
from ross_ood.attacks.registry import attack_names, register_attack
from ross_ood.attacks.run import run_attack
from ross_ood.attacks.square import SQUARE_CHECK_EVERY, p_selection, square

__all__ = ["AttackConfig", "StopFn", "JudgeFn", "ScoreFn", "pgd", "apgd", "eotpgd", "square", "p_selection", "SQUARE_CHECK_EVERY", "eps_tensor", "project", "run_attack",
           "OBJECTIVES", "DIRECTIONS", "ALGORITHMS", "SIDES", "OBJECTIVE_NAMES", "ATTACK_VERSION", "CHECK_EVERY",
           "LEG_SETTINGS", "SHARED_SETTINGS", "register_attack", "attack_names"]
