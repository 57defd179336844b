"""Detectors: a plain base score, median smoothing, and ROSS.

Uniform interface (pytorch-ood / scikit-learn style): ``fit(id_validation)`` returns the
detector; ``score(x)`` gives (B,) scores, higher = ID; ``predict(x)`` gives a boolean
"is OOD" per input at the threshold that accepts ``accept_rate`` of the ID validation data.
Fitted state ends in ``_``. Scoring after a parameter changed since ``fit`` is an error.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np
import torch

from .model import ModelWrapper
from .scores import Score, get_score, score_from_spec
from .smoothing import NOISE_DEVICES, NOISE_SPACES, calibrate_tau, median_stats, noisy_scores, ross_gate

__all__ = ["Detector", "BaseScoreDetector", "MedianSmoothing", "ROSS", "NotFittedError",
           "StaleFitError", "iter_batches", "load_detector"]

FORMAT = "ross-ood-detector/1"


class NotFittedError(RuntimeError):
    """Raised when a detector that needs calibration is used before ``fit``."""


class StaleFitError(RuntimeError):
    """Raised when a detector's parameters changed after ``fit``."""


def iter_batches(data, batch_size: int) -> Iterable[tuple[torch.Tensor, list[int] | None]]:
    """Yield ``(x, keys)`` from a tensor, or from an iterable of tensors / (x, ...) tuples /
    dicts with ``x`` and optional ``key``. Keys are None unless the data carries them."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 3:
            raise ValueError(f"data must have rank 4 (B, C, H, W); got rank 3 with shape {tuple(data.shape)} "
                             "(add a batch dimension with x[None])")
        for i in range(0, data.shape[0], batch_size):
            yield data[i:i + batch_size], None
        return
    for b in data:
        if isinstance(b, torch.Tensor):
            yield b, None
        elif isinstance(b, dict):
            k = b.get("key")
            yield b["x"], (None if k is None else [int(v) for v in k])
        elif isinstance(b, (tuple, list)) and b and isinstance(b[0], torch.Tensor):
            yield b[0], None
        else:
            raise TypeError(f"cannot read a batch of type {type(b).__name__}; give tensors, (x, y) tuples "
                            "or dicts with 'x'")


class Detector:
    """Common machinery. Subclasses implement ``config()`` and ``_score_batch``."""

    def __init__(self, model: ModelWrapper, base: str | Score = "fdbd", base_params: dict | None = None,
                 accept_rate: float = 0.95, batch_size: int = 128, space: str = "pixel"):
        if not isinstance(model, ModelWrapper):
            raise TypeError("model must be a ross_ood ModelWrapper: use ross_ood.wrap(net, mean, std)")
        self.model = model
        self.base = get_score(base, **(base_params or {}))
        self.accept_rate = float(accept_rate)
        self.batch_size = int(batch_size)
        self.space = space
        self._fit_config: dict | None = None
        self.threshold_: float | None = None

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        return {"detector": self.kind, "base": self.base.spec(), "accept_rate": self.accept_rate,
                "space": self.space}

    kind = "base"
    needs_fit = False

    def _validate(self) -> None:
        if self.space not in NOISE_SPACES:
            raise ValueError(f"space must be one of {NOISE_SPACES}, got {self.space!r}")
        if not 0 < self.accept_rate < 1:
            raise ValueError(f"accept_rate must be in (0, 1), got {self.accept_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def _check_fresh(self, for_predict: bool = False) -> None:
        self._validate()
        if self._fit_config is None:
            if self.needs_fit or for_predict:
                raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(id_validation_data) first")
            return
        now = self.config()
        if now != self._fit_config:
            changed = sorted(k for k in set(now) | set(self._fit_config) if now.get(k) != self._fit_config.get(k))
            raise StaleFitError(f"{type(self).__name__} parameters changed since fit ({', '.join(changed)}): "
                                "call .fit(id_validation_data) again")

    # ------------------------------------------------------------------ fit
    def _collect(self, data, fn) -> list:
        out = []
        for x, keys in iter_batches(data, self.batch_size):
            self.model.check(x, pixel_range=self.space == "pixel", name="fit data")
            with torch.no_grad():
                out.append(fn(x.to(self.model.device), keys))
        if not out:
            raise ValueError("fit got empty ID validation data")
        return out

    def fit(self, data) -> "Detector":
        """Calibrate on ID validation data (a tensor or an iterable of batches)."""
        self._validate()
        self._fit_config = None
        self._fit(data)
        self._fit_config = self.config()
        return self

    def _fit(self, data) -> None:
        s = torch.cat(self._collect(data, lambda x, k: self._score_batch(x, k).detach().cpu()))
        self.threshold_ = calibrate_tau(s, 1 - self.accept_rate)

    # ---------------------------------------------------------------- score
    def _score_batch(self, x: torch.Tensor, keys) -> torch.Tensor:
        raise NotImplementedError

    def score(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """Scores (B,), higher = ID. Gradients flow when ``x.requires_grad``."""
        self._check_fresh()
        self.model.check(x, pixel_range=self.space == "pixel")
        x = x.to(self.model.device)
        if x.requires_grad:
            return self._score_batch(x, keys)
        with torch.no_grad():
            return self._score_batch(x, keys)

    __call__ = score

    def predict(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """Boolean (B,): True where the input is flagged OOD (score below the threshold)."""
        self._check_fresh(for_predict=True)
        return (self.score(x, keys) < self.threshold_).cpu()

    def predict_class(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class, from the clean input (never from a noisy copy)."""
        self.model.check(x, pixel_range=self.space == "pixel")
        with torch.no_grad():
            return self.model(x.to(self.model.device)).argmax(1).cpu()

    # --------------------------------------------------------------- persist
    def _state(self) -> dict:
        return {"threshold_": self.threshold_}

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted detector as JSON (parameters, thresholds, seed; no pickle)."""
        if self._fit_config is None:
            raise NotFittedError("only a fitted detector can be saved")
        doc = {"format": FORMAT, "class": type(self).__name__, "config": self._fit_config,
               "state": self._state(), "linear": self.model.linear_name}
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: ModelWrapper, base: Score | None = None) -> "Detector":
        """Read a detector saved with ``save``; ``base`` overrides the saved base score."""
        with open(path) as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not a saved ross-ood detector (invalid JSON: {e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved ross-ood detector (format {doc.get('format')!r}, "
                             f"expected {FORMAT!r})")
        klass = _CLASSES.get(doc["class"])
        if klass is None:
            raise ValueError(f"{path} holds an unknown detector class {doc['class']!r}")
        if cls is not Detector and klass is not cls:
            raise ValueError(f"{path} holds a {doc['class']}, not a {cls.__name__}")
        cfg = dict(doc["config"])
        base_score = base if base is not None else score_from_spec(cfg["base"])
        det = klass._from_config(model, base_score, cfg)
        for k, v in doc["state"].items():
            setattr(det, k, v)
        det._fit_config = det.config()
        if det._fit_config != doc["config"]:
            raise ValueError(f"{path}: the rebuilt detector's configuration differs from the saved one")
        return det

    @classmethod
    def _from_config(cls, model, base, cfg):
        return cls(model, base=base, accept_rate=cfg["accept_rate"], space=cfg["space"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class BaseScoreDetector(Detector):
    """A base score used as it is (no smoothing). ``fit`` only sets the predict threshold."""

    kind = "base"

    def _score_batch(self, x, keys):
        return self.base(self.model, x)


class MedianSmoothing(Detector):
    """Median of the base score over ``n_samples`` Gaussian-noised copies of the input."""

    kind = "median"

    def __init__(self, model: ModelWrapper, base: str | Score = "fdbd", n_samples: int = 25,
                 sigma: float = 0.05, noise_space: str = "pixel", seed: int = 0, chunk_size: int = 128,
                 base_params: dict | None = None, accept_rate: float = 0.95, batch_size: int = 128,
                 noise_device: str = "cpu"):
        super().__init__(model, base, base_params, accept_rate, batch_size, noise_space)
        self.n_samples, self.sigma, self.seed, self.chunk_size = n_samples, sigma, seed, chunk_size
        self.noise_device = noise_device
        self._validate()

    @property
    def noise_space(self) -> str:
        return self.space

    @noise_space.setter
    def noise_space(self, v: str) -> None:
        self.space = v

    def _validate(self) -> None:
        super()._validate()
        if isinstance(self.n_samples, bool) or int(self.n_samples) != self.n_samples or self.n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {self.n_samples}")
        if not (isinstance(self.sigma, (int, float)) and self.sigma >= 0 and np.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.noise_device not in NOISE_DEVICES:
            raise ValueError(f"noise_device must be one of {NOISE_DEVICES}, got {self.noise_device!r}")

    def config(self) -> dict:
        cfg = {**super().config(), "n_samples": int(self.n_samples), "sigma": float(self.sigma),
               "seed": int(self.seed)}
        if self.noise_device != "cpu":  # only then does it change the numbers (on a GPU)
            cfg["noise_device"] = self.noise_device
        return cfg

    @classmethod
    def _from_config(cls, model, base, cfg):
        extra = {"lam": cfg["lam"]} if "lam" in cfg else {}
        return cls(model, base=base, n_samples=cfg["n_samples"], sigma=cfg["sigma"], noise_space=cfg["space"],
                   seed=cfg["seed"], accept_rate=cfg["accept_rate"], noise_device=cfg.get("noise_device", "cpu"),
                   **extra)

    def noisy(self, x: torch.Tensor, keys=None) -> torch.Tensor:
        """The (B, N) matrix of noisy base scores."""
        return noisy_scores(self.model, x, [self.base], int(self.n_samples), float(self.sigma), self.space,
                            int(self.seed), keys, int(self.chunk_size), noise_device=self.noise_device)[self.base.name]

    def _score_batch(self, x, keys):
        return median_stats(self.noisy(x, keys))["median"]


class ROSS(MedianSmoothing):
    """ROSS (Stoica, Hekal & Lomuscio, CVPR Findings 2026): median smoothing plus a gate.

    With s_i the base score of N noisy copies, m = median, D = mean |s_i - m|, CoV = D / m,
    and tau the 5% quantile of m on ID validation data (computed by ``fit``)::

        S = min(m, tau) + max(m - tau, 0) * (1 + lam / (D + 1e-12))

    Below tau S is the smoothed score; above, stable inputs (small D) are pushed further up.
    ``lam`` is in the base score's units. ``components(x)`` returns median, mad (= -D),
    cov (= -CoV) and ross, all higher = ID.
    """

    kind = "ross"
    needs_fit = True

    def __init__(self, model: ModelWrapper, base: str | Score = "fdbd", n_samples: int = 25, sigma: float = 0.05,
                 lam: float = 0.01, noise_space: str = "pixel", seed: int = 0, chunk_size: int = 128,
                 base_params: dict | None = None, accept_rate: float = 0.95, batch_size: int = 128,
                 tau_quantile: float = 0.05, noise_device: str = "cpu"):
        self.lam = lam
        self.tau_quantile = tau_quantile
        super().__init__(model, base, n_samples, sigma, noise_space, seed, chunk_size, base_params,
                         accept_rate, batch_size, noise_device)
        self.tau_: float | None = None

    def _validate(self) -> None:
        super()._validate()
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0 and np.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        if not 0 < self.tau_quantile < 1:
            raise ValueError(f"tau_quantile must be in (0, 1), got {self.tau_quantile}")

    def config(self) -> dict:
        return {**super().config(), "lam": float(self.lam), "tau_quantile": float(self.tau_quantile)}

    @classmethod
    def _from_config(cls, model, base, cfg):
        return cls(model, base=base, n_samples=cfg["n_samples"], sigma=cfg["sigma"], lam=cfg["lam"],
                   noise_space=cfg["space"], seed=cfg["seed"], accept_rate=cfg["accept_rate"],
                   tau_quantile=cfg["tau_quantile"], noise_device=cfg.get("noise_device", "cpu"))

    def _state(self) -> dict:
        return {"threshold_": self.threshold_, "tau_": self.tau_}

    def _fit(self, data) -> None:
        stats = self._collect(data, lambda x, k: {a: v.cpu() for a, v in median_stats(self.noisy(x, k)).items()})
        m = torch.cat([s["median"] for s in stats])
        d = torch.cat([s["D"] for s in stats])
        self.tau_ = calibrate_tau(m, self.tau_quantile)
        self.threshold_ = calibrate_tau(ross_gate(m, d, self.tau_, float(self.lam)), 1 - self.accept_rate)

    def components_from_noisy(self, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """median, mad (= -D), cov (= -CoV), ross from a (B, N) noisy-score matrix."""
        if self.tau_ is None:
            raise NotFittedError("ROSS is not fitted: call .fit(id_validation_data) first")
        st = median_stats(s)
        return {"median": st["median"], "mad": -st["D"], "cov": -st["cov"],
                "ross": ross_gate(st["median"], st["D"], self.tau_, float(self.lam))}

    def _score_batch(self, x, keys):
        return self.components_from_noisy(self.noisy(x, keys))["ross"]

    def components(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """All four statistics (B,) each, higher = ID."""
        self._check_fresh()
        self.model.check(x, pixel_range=self.space == "pixel")
        x = x.to(self.model.device)
        with torch.set_grad_enabled(x.requires_grad):
            return self.components_from_noisy(self.noisy(x, keys))


_CLASSES = {c.__name__: c for c in (BaseScoreDetector, MedianSmoothing, ROSS)}


def load_detector(path, model: ModelWrapper, base: Score | None = None) -> Detector:
    """Load any saved detector."""
    return Detector.load(path, model, base)
