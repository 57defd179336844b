"""What an attack of one's own needs (``ross_ood.register_attack``), as the built-in attacks use it.

- ``start(x, eps, clip, cfg, restart)``: the seeded uniform start in the eps ball, per input a
  function of (seed, restart, the input's content) only, not of its batch;
- ``gain_and_grad(score_fn, x, sign, eot, draw0)``: the attacker's gain ``sign x`` the score,
  averaged over ``eot`` draws, and its input gradient (zero, with one warning per run, for a
  score without one);
- ``project(x_adv, x, eps, clip)``: into the L-inf ball (and [0, 1] when ``clip``);
- ``valuer(score_fn, judge, sign)``: ``value(x, keys)``, the attacker's value of iterates from the
  score alone: on common random numbers with a ``judge``, else the deterministic score;
- ``Running``: early stopping, the rows still attacked and the filed results of the done ones
  (``drop(stop_fn(x_best) done flags, state)``, then ``finish``); see ``attacks.eotpgd``;
- ``trace(trace, restart, step, idx, value)``: diagnostics of judged iterates.

A momentum PGD (MI-FGSM, Dong et al. 2018) on this kit is ``tests/test_attack_registry.py``."""
from ross_ood.attacks.base import _gain_and_grad as gain_and_grad
from ross_ood.attacks.base import _Running as Running
from ross_ood.attacks.base import _start as start
from ross_ood.attacks.base import _trace as trace
from ross_ood.attacks.base import _valuer as valuer
from ross_ood.attacks.base import project

__all__ = ["start", "gain_and_grad", "project", "valuer", "Running", "trace"]
