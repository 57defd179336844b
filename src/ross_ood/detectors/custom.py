"""A detector of your own, not written with ross_ood's scores: evaluated and attacked like ours.

Any object with ``score(x) -> (B,)`` (images (B, C, H, W) in [0, 1] on the model's device, higher
= more in-distribution) is a detector here; optional methods:

- ``fit(x_val)``: called with the ID validation images when the wrapper is fitted;
- ``surrogate(x) -> (B,)``: a differentiable stand-in that the gradient attacks climb (default:
  ``score`` itself; a score without gradients warns, and only the gradient-free leg of the attack,
  ``target="square"``, measures it: the worst case includes that leg);
- ``spec() -> dict``: what determines its scores (a JSON-able dict); it makes a cached report
  resumable across processes (without it the cache key holds the object's identity, so a cache is
  reused only within one process);
- ``name``: how tables name it (default: the class name, lowercased).

``as_detector(obj, model)`` wraps it as a ``Detector`` (a plain detector: no smoothing), which
``robustness_report`` and ``Attack`` do themselves for such objects. ``model`` is the classifier
it guards (``ross_ood.wrap``): the images are checked against its input size and channels and
put on its device; accuracy comes from it. Such a wrapper cannot be saved (save your object your
own way). On the command line a score of your own is the route (``--plugin``, ``register_score``).
"""
from __future__ import annotations

import re

import torch

from ross_ood.detectors.base import BaseScoreDetector, Detector, iter_batches
from ross_ood.model import ModelWrapper
from ross_ood.scores import Score

__all__ = ["ObjectDetector", "as_detector"]


def _object_name(obj) -> str:
    name = getattr(obj, "name", None) or type(obj).__name__.lower()
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise ValueError(f"a detector object's name must be letters, digits, _ and ., got {name!r}")
    return name


class _ObjectScore(Score):
    """The object's ``score`` as a ``Score``: its values, checked (shape (B,), finite)."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def params(self) -> dict:
        spec = getattr(self.obj, "spec", None)
        own = spec() if callable(spec) else {"instance": id(self.obj)}
        if not isinstance(own, dict):
            raise TypeError(f"{type(self.obj).__name__}.spec() must return a dict, got {type(own).__name__}")
        return {"class": f"{type(self.obj).__module__}.{type(self.obj).__qualname__}", **own}

    def __call__(self, model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
        return _checked(self.obj.score(x), len(x), f"{type(self.obj).__name__}.score", x.device)


def _checked(s, n: int, what: str, device) -> torch.Tensor:
    s = s if isinstance(s, torch.Tensor) else torch.as_tensor(s)
    if s.shape != (n,):
        raise ValueError(f"{what} must return one score per image, shape ({n},); got {tuple(s.shape)}")
    if not s.is_floating_point():
        s = s.double()
    if not bool(torch.isfinite(s.detach()).all()):
        raise ValueError(f"{what} returned {int((~torch.isfinite(s.detach())).sum())} non-finite scores")
    return s.to(device)


class ObjectDetector(BaseScoreDetector):
    """A detector object of your own as a plain ``Detector`` (module doc)."""

    def __init__(self, obj, model: ModelWrapper, *, name: str | None = None, accept_rate: float = 0.95,
                 batch_size: int = 128):
        if not callable(getattr(obj, "score", None)):
            raise TypeError(f"a detector needs a score(x) method; {type(obj).__name__} has none")
        self.obj = obj
        super().__init__(model, base=_ObjectScore(obj, name or _object_name(obj)), accept_rate=accept_rate,
                         batch_size=batch_size)

    def fit(self, data, *, progress: bool | None = None) -> "ObjectDetector":
        """``obj.fit`` (when it has one) on the ID validation images, then the predict threshold."""
        fit = getattr(self.obj, "fit", None)
        if callable(fit):
            xs = [self.model.prepare(x, name="fit data") for x, _ in iter_batches(data, int(self.batch_size))]
            if not xs:
                raise ValueError("fit got empty ID validation data")
            fit(torch.cat(xs))
        return super().fit(data, progress=progress)

    def _surrogate(self, what: str, attack_n: int | None = None):
        if what != "base":
            raise ValueError(f"{type(self.obj).__name__} has no attack surrogate {what!r}; it has 'base'")
        sur = getattr(self.obj, "surrogate", None)
        if callable(sur):
            return lambda x, draw: _checked(sur(x), len(x), f"{type(self.obj).__name__}.surrogate", x.device)
        return lambda x, draw: self.base(self.model, x)

    def save(self, path) -> None:
        raise TypeError(f"a {type(self.obj).__name__} wrapped by ross_ood cannot be saved by it: save your object "
                        "your own way")


def as_detector(obj, model: ModelWrapper | None = None) -> Detector:
    """``obj`` if it is a ``Detector``; else an ``ObjectDetector`` on ``model`` (default:
    ``obj.model``). Refused by name when neither fits."""
    if isinstance(obj, Detector):
        return obj
    if not callable(getattr(obj, "score", None)):
        raise TypeError(f"detector must be a ross_ood Detector or an object with a score(x) method, got "
                        f"{type(obj).__name__}")
    model = model if model is not None else getattr(obj, "model", None)
    if not isinstance(model, ModelWrapper):
        raise TypeError(f"a detector object of your own ({type(obj).__name__}) needs the classifier it guards: pass "
                        "model=ross_ood.wrap(net, mean, std) (or give the object a .model attribute)")
    return ObjectDetector(obj, model)
