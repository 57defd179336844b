"""Attacks of one's own, known by name like scores: ``register_attack(name, fn, ...)``.

A registered attack is one function with the signature of the built-in algorithms (``apgd``,
``eotpgd``, ``square``)::

    fn(score_fn, x, eps, cfg, clip, *, restart, stop_fn, check_every, judge, keys, x_init, trace)
        -> (x_adv, gain)

``score_fn(x, draw)`` is the attacked surrogate of the detector's score (higher = ID; the attack
raises ``sign x score`` with ``sign = +1`` for ``cfg.objective == "max"``, -1 for ``"min"``), ``x``
the clean batch, ``eps`` the per-channel budget (1, C, 1, 1), ``clip`` whether iterates stay in
[0, 1]; ``cfg`` is its ``AttackConfig`` (``steps``, ``restarts``, ``eot``, ``seed`` and the
attack's own ``params`` as ``dict(cfg.params)``). It returns the adversarial batch, within the
budget, and the attacker's value of it (``sign x`` the score, per input). ``stop_fn`` (early
stopping: (B,) done flags of iterates), ``judge`` (the detector's score on common random numbers,
keyed by ``keys``), ``x_init`` (a warm start) and ``trace`` may be used or ignored; the kit that
the built-in attacks use is public in ``ross_ood.attacks.kit``.

The attack owns its settings: ``steps``, ``restarts``, the ``surrogates`` it attacks on smoothed
detectors and ``params`` are given at registration and enter the cache key of its results. It runs
as part of the adaptive target (and so of ``worst``) when named in ``AttackBudget.extra_attacks``
(``ross attack --extra-attacks NAME``, after ``--plugin FILE`` that registers it)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["RegisteredAttack", "register_attack", "registered_attack", "attack_names", "ALGORITHMS"]

#: the algorithms of ross-ood itself (``attacks.run.run_attack`` runs them); ``attack_names()`` adds
#: the registered ones
ALGORITHMS = ("pgd", "apgd", "eotpgd", "square")


@dataclass(frozen=True)
class RegisteredAttack:
    name: str
    fn: Callable
    steps: int
    restarts: int
    surrogates: tuple
    params: dict = field(default_factory=dict)
    early_stop: bool = True

    def key(self) -> dict:
        """What determines its results beyond the attack config: the function, by its name."""
        return {"fn": f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', repr(self.fn))}"}


_ATTACKS: dict[str, RegisteredAttack] = {}


def register_attack(name: str, fn: Callable, *, steps: int = 40, restarts: int = 1, surrogates=("mean",),
                    params: dict | None = None, early_stop: bool = True) -> RegisteredAttack:
    """Make ``fn`` (the module doc's signature) known as attack ``name``: ``AttackBudget(extra_attacks=
    (name,))`` and ``ross attack --extra-attacks name`` then run it in the adaptive target and in
    ``worst``, cached and resumable like the built-in attacks. ``surrogates``: what it attacks on a
    smoothed detector (``median``, ``mean``, ``softmedian``, ``ross``; a plain score is attacked
    itself). ``params``: its own settings (numbers, strings, bools), in ``dict(cfg.params)``.
    ``early_stop=False`` if ``fn`` ignores ``stop_fn``. A built-in name, or a name taken by another
    function, is refused."""
    from ross_ood.detectors import SURROGATES
    from ross_ood.validate import check_choice, check_int
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"attack name must be lowercase letters, digits and _, got {name!r}")
    if name in ALGORITHMS:
        raise ValueError(f"attack name {name!r} is built in; choose another")
    if not callable(fn):
        raise TypeError(f"register_attack({name!r}, ...) needs a function, got {type(fn).__name__}")
    surrogates = tuple(surrogates)
    if not surrogates:
        raise ValueError(f"attack {name!r}: name at least one surrogate of {', '.join(SURROGATES)}")
    for s in surrogates:
        check_choice("surrogate", s, SURROGATES)
    params = dict(params or {})
    for k, v in params.items():
        if not isinstance(k, str) or not isinstance(v, (int, float, str, bool)):
            raise ValueError(f"attack {name!r}: params must map names to numbers, strings or bools, got {k!r}: {v!r}")
    reg = RegisteredAttack(name, fn, check_int("steps", steps), check_int("restarts", restarts), surrogates,
                           params, bool(early_stop))
    old = _ATTACKS.get(name)
    if old is not None and old.key() != reg.key():
        raise ValueError(f"attack name {name!r} is already registered to {old.key()['fn']}")
    _ATTACKS[name] = reg
    return reg


def registered_attack(name: str) -> RegisteredAttack:
    if name not in _ATTACKS:
        known = ", ".join(_ATTACKS) or "none (register one with ross_ood.register_attack, or --plugin FILE)"
        raise ValueError(f"unknown attack {name!r}; registered attacks: {known}")
    return _ATTACKS[name]


def attack_names() -> tuple:
    """Every algorithm known now: the built-in ones and those registered."""
    return ALGORITHMS + tuple(_ATTACKS)
