"""The score contract: ``Score``, what every base score implements.

A score is a small object oriented higher = more in-distribution (ID):

- ``name``: how it is called (``get_score(name)``, detector names ``median-NAME``, ...);
- ``params()``: the parameters that determine its values (a threshold calibrated with other
  parameters is stale: ``StaleFitError``); ``spec()`` is ``{"name": ..., **params()}``;
- ``__call__(model, x) -> (B,)``: the scores of images ``x`` (B, C, H, W) in [0, 1], differentiable
  in ``x`` (attacks climb it), on the model's device;
- ``from_outputs(outputs, model) -> (B,)`` (with ``pass_level = True``): the same from one forward
  pass (``model.outputs(x)``: logits and penultimate features), so that several scores share it;
  ``needs_features = True`` asks the pass for the features;
- ``value_range``: the interval the values lie in (certificates bound the tails with it).

Notation of the score modules: z = logits, p = softmax(z), h = penultimate features,
c = argmax z, W = weight rows of the last linear layer."""
from __future__ import annotations

from typing import Callable

import torch

from ross_ood.model import ModelWrapper, Outputs
from ross_ood.validate import ContractError

__all__ = ['Score', 'score_values', 'score_outputs', 'check_score_class']


class Score:
    """Base class of every score: the contract a score of your own keeps.

    - **Direction**: higher = more in-distribution. A score where OOD is high (a distance, an
      energy ``-logsumexp``) returns its negative.
    - **One of two methods**: ``from_outputs(out, model)`` with ``pass_level = True`` when the score
      is a function of one forward pass (``out.logits`` (B, K); ``out.features`` (B, D), the input of
      the last linear layer, only with ``needs_features = True``, else None), so that several scores
      share the pass; or ``__call__(model, x)`` for a score that needs the images ``x`` (B, C, H, W,
      in [0, 1], on the model's device) themselves (ODIN and PRO perturb them).
    - **Returns** a floating-point torch tensor of shape (B,), one finite value per image, computed in
      torch from the model's outputs, so that attacks can follow its gradient with respect to ``x``
      (a numpy array, another shape or integers are refused by name).
    - **Gradients**: fitting and plain scoring run under ``torch.no_grad``; attacks call the score
      with gradients on. A score that takes a gradient itself (as ODIN does) wraps that part in
      ``torch.enable_grad()``. A score computed without autograd cannot be attacked by gradients:
      the gradient-free leg still measures it, and a warning says so.
    - ``params()``: every parameter that changes the values (a temperature, fitted statistics);
      ``spec()`` adds the name. A detector fitted with other params is stale (``StaleFitError``),
      and cached results are keyed by them.
    - ``value_range``: the interval the values lie in, if bounded (certificates use it).

    A feature-based score (cosine similarity to the closest class mean of held-out ID features)::

        class CosineToMean(ross_ood.Score):
            name, pass_level, needs_features = "cosmean", True, True

            def __init__(self, means=None):
                self.means = means  # (K, D) class means of ID features, or None before fitting

            def params(self):
                return {"means_sum": None if self.means is None else float(self.means.sum())}

            def from_outputs(self, out, model):
                h = torch.nn.functional.normalize(out.features, dim=1)
                m = torch.nn.functional.normalize(self.means.to(h), dim=1)
                return (h @ m.T).max(1).values  # (B,), higher = closer to an ID class

        ross_ood.register_score("cosmean", CosineToMean)  # median-cosmean, ross-cosmean, --plugin
    """

    name: str = "score"
    #: True when the score is a function of one forward pass (logits, features)
    pass_level: bool = False
    needs_features: bool = False
    #: the interval the score's values lie in (used by certificates to bound tails)
    value_range: tuple = (float("-inf"), float("inf"))

    def params(self) -> dict:
        return {}

    def spec(self) -> dict:
        """Name and parameters: everything that determines the score's values."""
        return {"name": self.name, **self.params()}

    def __call__(self, model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
        return score_outputs(self, model.outputs(x, features=self.needs_features), model)

    def from_outputs(self, out: Outputs, model: ModelWrapper) -> torch.Tensor:
        if type(self).__call__ is Score.__call__:
            raise NotImplementedError(f"{type(self).__name__} ({self.name!r}) implements neither from_outputs(outputs, "
                                      "model) nor __call__(model, x): a score implements one of them (ross_ood.Score)")
        raise NotImplementedError(f"{self.name} needs the input, not only one forward pass: it has no from_outputs, "
                                  "so set pass_level = False")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _input_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score values and their input gradient, keeping ``x``'s graph when it has one."""
    with torch.enable_grad():
        if x.requires_grad:
            s = fn(x)
            (g,) = torch.autograd.grad(s.sum(), x, retain_graph=True)
            return s, g
        xd = x.detach().requires_grad_(True)
        s = fn(xd)
        (g,) = torch.autograd.grad(s.sum(), xd)
        return s.detach(), g


def check_score_class(cls: type) -> None:
    """A ``Score`` subclass implements ``from_outputs`` or ``__call__`` (the contract)."""
    if cls.from_outputs is Score.from_outputs and cls.__call__ is Score.__call__:
        raise ContractError(f"{cls.__name__} implements neither from_outputs(outputs, model) (one forward pass, with "
                            "pass_level = True) nor __call__(model, x): a score implements one of them (ross_ood.Score)")


def _checked(score: Score, v, n: int) -> torch.Tensor:
    """``v`` if it is what the score contract says a score returns: a floating-point torch tensor
    of shape (n,), one value per image; else an error naming the score and what it returned."""
    if not isinstance(v, torch.Tensor):
        raise ContractError(f"score {score.name!r} ({type(score).__name__}) returned a {type(v).__name__}; a score "
                        f"returns a torch tensor of shape ({n},), computed in torch so that attacks can follow its "
                        "gradient")
    if tuple(v.shape) != (n,):
        raise ContractError(f"score {score.name!r} ({type(score).__name__}) returned shape {tuple(v.shape)} for {n} "
                         f"images; a score returns one value per image, shape ({n},)")
    if not v.is_floating_point():
        raise ContractError(f"score {score.name!r} ({type(score).__name__}) returned {v.dtype} values; a score returns "
                        "floating-point values (cast with .float())")
    return v


def score_outputs(score: Score, out: Outputs, model: ModelWrapper) -> torch.Tensor:
    """``score.from_outputs(out, model)``, checked (``_checked``); a score that reads the features
    without asking for them (``needs_features``) is told so."""
    try:
        v = score.from_outputs(out, model)
    except AttributeError as e:
        if out.features is None and "NoneType" in str(e):
            raise ContractError(f"score {score.name!r} ({type(score).__name__}) read the penultimate features "
                                 "(outputs.features), which the forward pass computes only when asked: set "
                                 f"needs_features = True on {type(score).__name__}") from e
        raise
    return _checked(score, v, out.logits.shape[0])


def score_values(score: Score, model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    """``score(model, x)``, checked (``_checked``)."""
    try:
        v = score(model, x)
    except AttributeError as e:
        if "'NoneType' object has no attribute" in str(e) and not score.needs_features:
            raise ContractError(f"score {score.name!r} ({type(score).__name__}) failed on a missing value ({e}); "
                                 "if it reads the penultimate features (outputs.features), set needs_features = True "
                                 f"on {type(score).__name__}") from e
        raise
    return _checked(score, v, x.shape[0])
