"""Scores of a perturbed input: ODIN and PRO.

- ODIN: temperature-scaled MSP after one signed input step that raises it,
  x' = x - eps sign(-grad log max softmax(z / T)). Liang, Li & Srikant, "Enhancing The Reliability
  of Out-of-distribution Image Detection in Neural Networks", ICLR 2018; reference:
  github.com/facebookresearch/odin, OpenOOD ``odin_postprocessor.py``.
- PRO-<score>: the minimum of the base score over a few signed steps that lower it (a stability
  test in a small ball). Chen et al., perturbation-rectified OOD detection (PRO), CVPR 2024; the
  ROSS paper evaluates pro-fDBD against it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ross_ood.scores.base import Score, _input_grad

__all__ = ['ODIN', 'PRO']


class ODIN(Score):
    """ODIN (Liang et al., ICLR 2018): MSP at temperature T of a pre-processed input.

    x~ = x - eps * sign(-grad_x log max softmax(z(x)/T)); score = max softmax(z(x~)/T).
    ``eps`` is in normalised units, i.e. eps * std_c per channel in pixel space (as the ROSS
    spec states; OpenOOD divides the step by std, which makes its eps pixel units).
    The sign is treated as a constant for differentiation, so the score is differentiable.
    """

    name, value_range = "odin", (0.0, 1.0)

    def __init__(self, temperature: float = 1000.0, eps: float = 0.0014):
        if not temperature > 0:
            raise ValueError(f"ODIN temperature must be > 0, got {temperature}")
        if eps < 0:
            raise ValueError(f"ODIN eps must be >= 0, got {eps}")
        self.temperature, self.eps = float(temperature), float(eps)

    def params(self):
        return {"temperature": self.temperature, "eps": self.eps}

    def __call__(self, model, x):
        t = self.temperature
        _, g = _input_grad(lambda v: F.log_softmax(model(v) / t, dim=1).max(1).values, x)
        x_t = x + self.eps * model.std * g.sign()
        return (model(x_t) / t).softmax(1).max(1).values


class PRO(Score):
    """Perturbation-rectified OOD score (Chen et al., CVPR 2024) around any base score.

    k steps x <- x - delta * sign(grad_x s(x)) (delta in normalised units), and the score is
    the minimum of s over the trajectory, start included.
    """

    def __init__(self, base: Score, steps: int = 5, delta: float = 0.001):
        if isinstance(base, PRO):
            raise ValueError("PRO cannot wrap PRO")
        if int(steps) < 0:
            raise ValueError(f"PRO steps must be >= 0, got {steps}")
        if delta < 0:
            raise ValueError(f"PRO delta must be >= 0, got {delta}")
        self.base, self.steps, self.delta = base, int(steps), float(delta)
        self.name = f"pro-{base.name}"
        self.needs_features = base.needs_features
        self.value_range = base.value_range

    def params(self):
        return {"steps": self.steps, "delta": self.delta, "base": self.base.spec()}

    def __call__(self, model, x):
        x_t = x
        values = []
        for _ in range(self.steps):
            s, g = _input_grad(lambda v: self.base(model, v), x_t)
            values.append(s)
            x_t = x_t - self.delta * model.std * g.sign()
        values.append(self.base(model, x_t))
        return torch.stack(values, 0).min(0).values
