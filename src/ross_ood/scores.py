"""Post-hoc base scores. Every score is oriented higher = more in-distribution (ID).

Each score is a small object with a ``name``, its ``params()`` (which key calibration: a
threshold computed with other parameters is stale) and ``__call__(model, x) -> (B,)``.
Scores that need only one forward pass (MSP, MaxLogit, Energy, GEN, fDBD) also implement
``from_outputs(outputs, model)`` so that several of them can share one pass.
All scores are differentiable in ``x`` and run on the model's device.

Notation: z = logits, p = softmax(z), h = penultimate features, c = argmax z,
W = weight rows of the last linear layer.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .model import ModelWrapper, Outputs

__all__ = ["Score", "MSP", "MaxLogit", "Energy", "GEN", "ODIN", "FDBD", "PRO",
           "get_score", "base_score", "SCORE_NAMES", "score_from_spec"]


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


class MSP(Score):
    """Maximum softmax probability, max_c softmax(z)_c (Hendrycks & Gimpel, ICLR 2017)."""

    name, pass_level, value_range = "msp", True, (0.0, 1.0)

    def from_outputs(self, out, model):
        return out.logits.softmax(1).max(1).values


class MaxLogit(Score):
    """Maximum logit, max_c z_c (Hendrycks et al., ICML 2022)."""

    name, pass_level = "maxlogit", True

    def from_outputs(self, out, model):
        return out.logits.max(1).values


class Energy(Score):
    """Negative free energy, T * logsumexp(z / T) (Liu et al., NeurIPS 2020)."""

    name, pass_level = "energy", True

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def params(self):
        return {"temperature": self.temperature}

    def from_outputs(self, out, model):
        t = self.temperature
        return t * torch.logsumexp(out.logits / t, dim=1)


class GEN(Score):
    """Generalised entropy, -sum over the top-M p of p^g (1-p)^g (Liu et al., CVPR 2023).

    Probabilities are clamped at the smallest normal float so that the gradient of p^g stays
    finite where softmax underflows to 0 (the value changes by at most tiny^g).
    """

    name, pass_level, value_range = "gen", True, (float("-inf"), 0.0)

    def __init__(self, gamma: float = 0.1, m: int = 100):
        if not gamma > 0:
            raise ValueError(f"GEN gamma must be > 0, got {gamma}")
        if int(m) < 1:
            raise ValueError(f"GEN M must be >= 1, got {m}")
        self.gamma, self.m = float(gamma), int(m)

    def params(self):
        return {"gamma": self.gamma, "m": self.m}

    def from_outputs(self, out, model):
        p = out.logits.softmax(1)
        m = min(self.m, p.shape[1])
        top = p.topk(m, dim=1).values.clamp_min(torch.finfo(p.dtype).tiny)
        g = self.gamma
        return -(top.pow(g) * (1 - top).clamp_min(0).pow(g)).sum(1)


class FDBD(Score):
    """Feature distance to decision boundaries (Liu & Qin, ICML 2024).

    s = sum_{j != c} |z_c - z_j| / ||W_c - W_j||, divided by ||h|| (``normalizer="norm"``,
    the setting of the ROSS paper) or by ||h - mu|| with mu the mean training feature
    (``normalizer="train_mean"``, the original fDBD paper; pass ``train_mean``).
    """

    name, pass_level, needs_features = "fdbd", True, True
    value_range = (0.0, float("inf"))

    def __init__(self, normalizer: str = "norm", train_mean: torch.Tensor | None = None):
        if normalizer not in ("norm", "train_mean"):
            raise ValueError(f"fDBD normalizer must be 'norm' or 'train_mean', got {normalizer!r}")
        if normalizer == "train_mean" and train_mean is None:
            raise ValueError("fDBD normalizer='train_mean' needs train_mean (the mean training feature); "
                             "compute it with ross_ood.scores.feature_mean(model, train_data)")
        self.normalizer = normalizer
        self.train_mean = None if train_mean is None else torch.as_tensor(train_mean, dtype=torch.float32).flatten()

    def params(self):
        p = {"normalizer": self.normalizer}
        if self.train_mean is not None:
            # a checksum of the mean keys calibration without storing the vector
            p["train_mean_sum"] = round(float(self.train_mean.double().sum()), 10)
        return p

    def from_outputs(self, out, model):
        if out.features is None:
            raise ValueError("fDBD needs penultimate features")
        lin = model.linear_layer()
        w = lin.weight  # (K, D)
        z = out.logits
        c = z.argmax(1)  # (B,)
        zc = z.gather(1, c[:, None])  # (B, 1)
        diff_w = w[c][:, None, :] - w[None, :, :]  # (B, K, D)
        dist = diff_w.norm(dim=2)  # (B, K); zero at j = c
        num = (zc - z).abs()  # zero at j = c
        ratio = torch.where(dist > 0, num / dist.clamp_min(1e-12), torch.zeros_like(num))
        total = ratio.sum(1)
        h = out.features
        if self.normalizer == "norm":
            denom = h.norm(dim=1)
        else:
            denom = (h - self.train_mean.to(h.device, h.dtype)).norm(dim=1)
        return total / denom.clamp_min(1e-12)


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


_REGISTRY: dict[str, type[Score]] = {
    "msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "gen": GEN, "odin": ODIN, "fdbd": FDBD,
}
SCORE_NAMES = tuple(_REGISTRY) + tuple(f"pro-{n}" for n in _REGISTRY if n != "odin")


def get_score(name: str | Score, **params) -> Score:
    """A score by name (``msp``, ``maxlogit``, ``energy``, ``gen``, ``odin``, ``fdbd``,
    ``pro-<name>``), with its parameters as keyword arguments. A ``Score`` passes through."""
    if isinstance(name, Score):
        if params:
            raise ValueError("parameters cannot be given with a Score object")
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
        raise ValueError(f"unknown score name {name!r}; known: {', '.join(SCORE_NAMES)}")
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
    return score(model, x.to(model.device, model.mean.dtype))


@torch.no_grad()
def feature_mean(model: ModelWrapper, batches) -> torch.Tensor:
    """Mean penultimate feature over an iterable of pixel-space batches (for fDBD train_mean)."""
    total, count = None, 0
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        h = model.outputs(x.to(model.device)).features.double()
        total = h.sum(0) if total is None else total + h.sum(0)
        count += h.shape[0]
    if count == 0:
        raise ValueError("feature_mean got no data")
    return (total / count).float().cpu()
