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

__all__ = ['Score']


class Score:
    """Base class. Subclasses set ``name`` and implement ``__call__``."""

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
        out = model.outputs(x, features=self.needs_features)
        return self.from_outputs(out, model)

    def from_outputs(self, out: Outputs, model: ModelWrapper) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} needs the input, not only one forward pass")

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
