"""Post-hoc base scores. Every score is oriented higher = more in-distribution (ID).

Each score is a small object with a ``name``, its ``params()`` (which key calibration: a
threshold computed with other parameters is stale) and ``__call__(model, x) -> (B,)``.
Scores that need only one forward pass (MSP, MaxLogit, Energy, GEN, fDBD) also implement
``from_outputs(outputs, model)`` so that several of them can share one pass.
All scores are differentiable in ``x`` and run on the model's device.

Notation: z = logits, p = softmax(z), h = penultimate features, c = argmax z,
W = weight rows of the last linear layer.

One score family per module: ``logits`` (MSP, MaxLogit, Energy, GEN), ``fdbd``, ``perturbed``
(ODIN, PRO), ``stats`` (KNN, Mahalanobis, ViM, ReAct), ``activation`` (ASH, SCALE); the contract
is ``base.Score``. This module holds the registry of names.
"""
from __future__ import annotations

import torch

from ross_ood.model import ModelWrapper
from ross_ood.scores.activation import ASH, SCALE
from ross_ood.scores.base import Score, check_score_class, score_values
from ross_ood.scores.fdbd import FDBD, feature_mean
from ross_ood.scores.logits import GEN, MSP, Energy, MaxLogit
from ross_ood.scores.perturbed import ODIN, PRO
from ross_ood.scores.stats import KNN, FeatureStats, Mahalanobis, ReAct, ViM, fit_feature_stats, vim_dim

__all__ = ['Score', 'MSP', 'MaxLogit', 'Energy', 'GEN', 'ODIN', 'FDBD', 'PRO', 'KNN', 'Mahalanobis', 'ViM', 'ReAct', 'ASH', 'SCALE', 'FeatureStats', 'fit_feature_stats', 'STATS_SCORES', 'feature_mean', 'vim_dim', 'get_score', 'base_score', 'SCORE_NAMES', 'score_from_spec', 'is_score_name', 'register_score', 'score_names']


_REGISTRY: dict[str, type[Score]] = {
    "msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "gen": GEN, "odin": ODIN, "fdbd": FDBD,
    "knn": KNN, "mahalanobis": Mahalanobis, "vim": ViM, "react": ReAct, "ash": ASH, "scale": SCALE,
}


#: scores fitted on ID training statistics (``FeatureStats``; ViM also needs the model)
STATS_SCORES = ("knn", "mahalanobis", "vim", "react")


#: the built-in score names, a snapshot taken at import: score_names() is the live list (with registered scores)
SCORE_NAMES = tuple(_REGISTRY) + tuple(f"pro-{n}" for n in _REGISTRY if n != "odin")
_BUILTIN = frozenset(_REGISTRY)


def score_names() -> tuple:
    """Every score name known now: the built-in ``SCORE_NAMES`` and those added by ``register_score``."""
    return tuple(_REGISTRY) + tuple(f"pro-{n}" for n in _REGISTRY if n != "odin")


def register_score(name: str, cls: type) -> None:
    """Make a ``Score`` subclass known by ``name``: ``get_score(name)``, the detectors ``NAME``,
    ``median-NAME``, ``quantile-NAME``, ``ross-NAME`` and ``pro-NAME``, in the API and (after
    ``--plugin``) on the command line. ``cls()`` must build it with default parameters; a built-in
    name, or a name taken by another class, is refused.

    Example::

        class Top2Margin(ross_ood.scores.Score):
            name, pass_level = "top2", True   # one forward pass
            def from_outputs(self, out, model):
                top = out.logits.topk(2, dim=1).values
                return top[:, 0] - top[:, 1]  # (B,), higher = more in-distribution

        ross_ood.register_score("top2", Top2Margin)
    """
    import re
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name.startswith("pro"):
        raise ValueError(f"score name must be lowercase letters, digits and _ (not starting with 'pro'), got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Score)):
        raise TypeError(f"register_score({name!r}, ...) needs a subclass of ross_ood.scores.Score, got {cls!r}")
    if name in _BUILTIN:
        raise ValueError(f"score name {name!r} is built in; choose another")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"score name {name!r} is already registered to {_REGISTRY[name].__name__}")
    try:
        made = cls()
    except TypeError as e:
        raise TypeError(f"score {name!r}: {cls.__name__}() must build it with default parameters ({e})") from None
    if made.name != name:
        raise ValueError(f"score {cls.__name__} has name {made.name!r}; register it under that name")
    check_score_class(cls)
    _REGISTRY[name] = cls


def is_score_name(name: str) -> bool:
    """Whether ``name`` is a known score name (without building it: some need statistics)."""
    return isinstance(name, str) and name.strip().lower() in score_names()


def get_score(name: str | Score, **params) -> Score:
    """A score by name (``msp``, ``maxlogit``, ``energy``, ``gen``, ``odin``, ``fdbd``,
    ``pro-<name>``), with its parameters as keyword arguments. A ``Score`` passes through."""
    if isinstance(name, Score):
        if params:
            raise ValueError("parameters cannot be given with a Score object")
        check_score_class(type(name))
        return name
    if not isinstance(name, str):
        raise TypeError(f"score name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key.startswith("pro-"):
        pro_keys = {"steps", "delta"}
        pro_params = {k: v for k, v in params.items() if k in pro_keys}
        base = get_score(key[4:], **{k: v for k, v in params.items() if k not in pro_keys})
        return PRO(base, **pro_params)
    if key not in _REGISTRY:
        raise ValueError(f"unknown score name {name!r}; known: {', '.join(score_names())}")
    try:
        return _REGISTRY[key](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for score {key!r}: {e}") from None


def score_from_spec(spec: dict) -> Score:
    """Inverse of ``Score.spec()`` (used when loading a saved detector)."""
    spec = dict(spec)
    name = spec.pop("name")
    if name.startswith("pro-"):
        base = score_from_spec(spec.pop("base"))
        return PRO(base, **spec)
    spec.pop("train_mean_sum", None)
    if name in STATS_SCORES:
        raise ValueError(f"a saved {name} score needs its training statistics again: build it with "
                         "get_score(name, stats=...) and pass it as base=")
    if name == "fdbd" and spec.get("normalizer") == "train_mean":
        raise ValueError("a saved fDBD with normalizer='train_mean' needs its train_mean again: "
                         "build the score yourself and pass it as base=")
    return get_score(name, **spec)


def base_score(name: str | Score, model: ModelWrapper, x: torch.Tensor, *, check: bool = True,
               **params) -> torch.Tensor:
    """Score a batch with a base score, higher = in-distribution.

    Parameters
    ----------
    name : str or Score
        ``msp``, ``maxlogit``, ``energy`` (``temperature``), ``gen`` (``gamma``, ``m``), ``odin``
        (``temperature``, ``eps`` in normalised units), ``fdbd`` (``normalizer``,
        ``train_mean``), ``pro-<score>`` (``steps``, ``delta``), or a ``Score`` object.
    model : ModelWrapper
        The wrapped classifier (``ross_ood.wrap``).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1]; float64 is cast to the model's type.
    check : bool
        Validate ``x`` (shape, finite pixels in [0, 1]) first.
    **params
        The score's parameters (see ``name``).

    Returns
    -------
    torch.Tensor
        (B,) scores, differentiable in ``x``.
    """
    score = get_score(name, **params)
    if not isinstance(model, ModelWrapper):
        raise TypeError("model must be a ross_ood ModelWrapper: use ross_ood.wrap(net, mean, std)")
    if check:
        model.check(x)
    return score_values(score, model, x.to(model.device, model.mean.dtype))
