"""The detector interface, the plain base-score detector, and JSON persistence.

Every detector works at two levels (the pytorch-ood ``fit_features`` pattern):

- *features*: the expensive array a detector is computed from, ``features(x)``: the clean
  base scores (B,) for a plain detector, the (B, N) matrix of noisy base scores for a
  smoothed one. ``fit_features`` / ``score_features`` turn such arrays into a fitted
  detector and scores. The command-line pipeline computes the arrays once per base score,
  shares them between detectors and caches them; the formulas stay in the classes.
- *inputs*: ``fit(data)``, ``score(x)``, ``predict(x)`` compute the features and call the
  feature-level methods.

Fitted state ends in ``_``. Scoring after a parameter changed since ``fit`` is an error.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from ross_ood.model import ModelWrapper, model_fingerprint
from ross_ood.scores import Score, get_score, score_from_spec
from ross_ood.scores.base import score_values
from ross_ood.smoothing import Smoothing, calibrate_tau
from ross_ood.store import atomic_write_text
from ross_ood.validate import check_fraction, check_int

__all__ = ["Detector", "BaseScoreDetector", "FeatureUnit", "NotFittedError", "StaleFitError", "iter_batches",
           "FORMAT", "register"]

FORMAT = "ross-ood-detector/2"
#: how far outside [0, 1] a surrogate's input may lie (unclipped attack iterates of the paper's
#: normalised eps space: eps * std_c, below 0.25 for every eps up to 255/255 * std 0.25)
SURROGATE_SLACK = 0.25
#: the detector classes that ``Detector.load`` can rebuild, by class name
_CLASSES: dict[str, type] = {}


def register(cls):
    _CLASSES[cls.__name__] = cls
    return cls


class NotFittedError(RuntimeError):
    """Raised when a detector that needs calibration is used before ``fit``."""


class StaleFitError(RuntimeError):
    """Raised when a detector's parameters changed after ``fit``."""


@dataclass(frozen=True)
class FeatureUnit:
    """The feature array a detector reads: ``clean/<score>`` (B,) or ``noisy/<score>`` (B, N)."""

    score: Score
    smoothing: Smoothing | None = None

    @property
    def name(self) -> str:
        return f"{'clean' if self.smoothing is None else 'noisy'}/{self.score.name}"

    def spec(self) -> dict:
        d = {"unit": self.name, "score": self.score.spec()}
        if self.smoothing is not None:
            d["smoothing"] = self.smoothing.key()
        return d


def iter_batches(data, batch_size: int) -> Iterable[tuple[torch.Tensor, list[int] | None]]:
    """Yield ``(x, keys)`` from a tensor, or from an iterable of tensors / (x, ...) tuples /
    dicts with ``x`` and optional ``key``. Keys are None unless the data carries them."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"data must have rank 4 (B, C, H, W); got rank {data.dim()} with shape "
                             f"{tuple(data.shape)}" + (" (add a batch dimension with x[None])" if data.dim() == 3
                                                       else ""))
        for i in range(0, data.shape[0], batch_size):
            yield data[i:i + batch_size], None
        return
    for b in data:
        if isinstance(b, torch.Tensor):
            x, keys = b, None
        elif isinstance(b, dict):
            if "x" not in b:
                raise ValueError(f"a dict batch must hold the images under 'x'; got keys {sorted(map(str, b))}")
            k = b.get("key")
            x, keys = b["x"], (None if k is None else [int(v) for v in k])
        elif isinstance(b, (tuple, list)) and b and isinstance(b[0], torch.Tensor):
            x, keys = b[0], None
        else:
            raise TypeError(f"cannot read a batch of type {type(b).__name__}; give tensors, (x, y) tuples "
                            "or dicts with 'x'")
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            raise ValueError(f"got one image of shape {tuple(x.shape)} where a batch (B, C, H, W) belongs: a "
                             "Dataset yields single images; wrap it in torch.utils.data.DataLoader(dataset, "
                             "batch_size=...) or pass a 4-D tensor")
        yield x, keys


class Detector:
    """Common machinery; subclasses implement ``unit``, ``features`` and ``_score``."""

    kind = "base"
    needs_fit = False

    def __init__(self, model: ModelWrapper, *, base: str | Score = "fdbd", base_params: dict | None = None,
                 accept_rate: float = 0.95, batch_size: int = 128):
        if not isinstance(model, ModelWrapper):
            raise TypeError("model must be a ross_ood ModelWrapper: use ross_ood.wrap(net, mean, std)")
        self.model = model
        self.base = get_score(base, **(base_params or {}))
        self.accept_rate = accept_rate
        self.batch_size = batch_size
        self._fit_config: dict | None = None
        self.threshold_: float | None = None

    # ---------------------------------------------------------------- config
    def config(self) -> dict:
        """Everything that determines the detector's scores (validated)."""
        self._validate()
        return {"detector": self.kind, "base": self.base.spec(), "accept_rate": float(self.accept_rate)}

    def _validate(self) -> None:
        check_fraction("accept_rate", self.accept_rate)
        check_int("batch_size", self.batch_size)

    def _check_fresh(self, for_predict: bool = False) -> None:
        now = self.config()
        if self._fit_config is None:
            if self.needs_fit or for_predict:
                raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(id_validation_data) first")
            return
        if getattr(self, "_fitted_on", self.model) is not self.model:
            raise StaleFitError(f"{type(self).__name__}.model was replaced since fit: its threshold (and any tau) "
                                "belong to the old network; call .fit(id_validation_data) again")
        if now != self._fit_config:
            changed = sorted(k for k in set(now) | set(self._fit_config) if now.get(k) != self._fit_config.get(k))
            raise StaleFitError(f"{type(self).__name__} parameters changed since fit ({', '.join(changed)}): "
                                "call .fit(id_validation_data) again")

    def with_params(self, **changes) -> "Detector":
        """An unfitted copy with some parameters changed (e.g. ``lam=0.02``)."""
        import copy
        new = copy.copy(self)
        for k, v in changes.items():
            if not hasattr(new, k) or k.endswith("_"):
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(new, k, v)
        new._fit_config = None
        for k in [k for k in vars(new) if k.endswith("_") and not k.startswith("_")]:
            setattr(new, k, None)
        new._validate()
        return new

    # ------------------------------------------------------------- features
    def unit(self) -> FeatureUnit:
        """Which feature array this detector reads."""
        return FeatureUnit(self.base)

    def features(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """The detector's feature array for the images ``x`` (checked as ``score`` checks them);
        attached to the autograd graph only when ``x.requires_grad``."""
        self._validate()
        x = self.model.prepare(x)
        with torch.set_grad_enabled(x.requires_grad):
            return self._features(x, keys)

    def _features(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """``features`` of a checked batch on the model's device."""
        return score_values(self.base, self.model, x)

    def check_features(self, feats, name: str = "features") -> torch.Tensor:
        """``feats`` as a tensor, refused by name when it is not a feature array of this
        detector: shape (B,) for a plain score, (B, n_samples) for a smoothed one, finite."""
        f = torch.as_tensor(feats.detach() if isinstance(feats, torch.Tensor) else feats)
        want = self._feature_columns()
        ok = f.dim() == 1 if want is None else (f.dim() == 2 and f.shape[1] == want)
        if not ok:
            shape = "(B,)" if want is None else f"(B, {want}): one column per noisy copy"
            raise ValueError(f"{name} of {type(self).__name__} must have shape {shape}; got {tuple(f.shape)}")
        if f.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(f.shape)})")
        if not f.is_floating_point():
            f = f.double()
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"{name} contains {int((~torch.isfinite(f)).sum())} non-finite values (NaN or Inf)")
        return f

    def _feature_columns(self) -> int | None:
        """Columns of the feature array (None: a vector)."""
        return None

    def fit_features(self, feats) -> "Detector":
        """Calibrate from the feature array of the ID validation data; returns self."""
        self._validate()
        feats = self.check_features(feats, "fit features")
        if feats.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 ID validation images, got {feats.shape[0]}: the threshold (and "
                             "ROSS's tau) are quantiles of their scores; give a few hundred")
        self._fit_config = None
        self._fit(feats)
        self._fit_config, self._fitted_on = self.config(), self.model
        scores = self._score(feats)
        if bool((scores == scores[0]).all()):
            import warnings
            warnings.warn(f"{type(self).__name__}.fit: all {len(scores)} ID validation scores are equal "
                          f"({float(scores[0]):.6g}; identical images?): the threshold cannot tell them from any "
                          "other input; fit on varied held-out ID images", stacklevel=2)
        return self

    def _fit(self, feats: torch.Tensor) -> None:
        self.threshold_ = calibrate_tau(self._score(feats), 1 - float(self.accept_rate))

    def score_features(self, feats) -> torch.Tensor:
        """Scores (B,) from a feature array, higher = ID."""
        self._check_fresh()
        return self._score(self.check_features(feats))

    def _score(self, feats: torch.Tensor) -> torch.Tensor:
        return feats

    # ---------------------------------------------------------------- inputs
    def fit(self, data, *, progress: bool | None = None) -> "Detector":
        """Calibrate on ID validation data (a tensor or an iterable of batches); returns self.
        ``progress``: a bar with the time left (None: when stderr is a terminal; ``ross_ood.progress``)."""
        from ross_ood.progress import bars, count_images
        from ross_ood.progress import progress as bar
        self._validate()
        parts = []
        shape = None
        with bar(bars(progress), f"fit {self.kind}", count_images(data)) as update:
            for x, keys in iter_batches(data, int(self.batch_size)):
                x = self.model.prepare(x, name="fit data")
                if shape is None:
                    shape = tuple(x.shape[1:])
                elif tuple(x.shape[1:]) != shape:  # one call, one image size (input_size= fixes it for every call)
                    raise ValueError(f"fit data: a batch of {'x'.join(map(str, x.shape[1:]))} images after batches of "
                                     f"{'x'.join(map(str, shape))}: give images of one size (resize them, or wrap the "
                                     "network with input_size=)")
                with torch.no_grad():
                    parts.append(self._features(x, keys).detach().cpu())
                if update:
                    update(len(x))
        if not parts:
            raise ValueError("fit got empty ID validation data")
        return self.fit_features(torch.cat(parts))

    def score(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """Scores (B,), higher = ID. Gradients flow when ``x.requires_grad``."""
        self._check_fresh()
        x = self.model.prepare(x)
        with torch.set_grad_enabled(x.requires_grad):
            return self._score(self._features(x, keys))

    __call__ = score

    def predict(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """Boolean (B,): True where the input is flagged OOD: its score is below ``threshold_``,
        the threshold ``fit`` sets so that a share ``accept_rate`` (0.95 by default) of the ID
        validation data is accepted (read it, or set your own: ``det.threshold_ = t``)."""
        self._check_fresh(for_predict=True)
        return (self.score(x, keys) < self.threshold_).cpu()

    def predict_class(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class, from the clean input (never from a noisy copy)."""
        with torch.no_grad():
            return self.model(self.model.prepare(x)).argmax(1).cpu()

    def surrogate(self, what: str, attack_n: int | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """A differentiable function ``f(x, draw) -> (B,)`` an attack climbs: ``base`` (the
        base score) for every detector; smoothed detectors add their own (see there). ``x`` is
        checked as ``score`` checks it."""
        self._validate()
        f = self._surrogate(what, attack_n)
        # attack iterates in normalised units are not clipped: they leave [0, 1] by eps * std_c
        return lambda x, draw: f(self.model.prepare(x, slack=SURROGATE_SLACK), draw)

    def _surrogate(self, what: str, attack_n: int | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        if what != "base":
            raise ValueError(f"{type(self).__name__} has no attack surrogate {what!r}; it has 'base'")
        return lambda x, draw: score_values(self.base, self.model, x)

    def judge(self, judge_n: int | None = None):
        """The attack's judge ``f(x, keys) -> (B,)`` that compares iterates: None for a
        deterministic score (the attack's own value of the score is exact); smoothed detectors
        judge on common random numbers (see there)."""
        return None

    # --------------------------------------------------------------- persist
    def _state(self) -> dict:
        return {"threshold_": self.threshold_}

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted detector as JSON (parameters, thresholds, model fingerprint; no pickle)."""
        if self._fit_config is None:
            raise NotFittedError("only a fitted detector can be saved")
        doc = {"format": FORMAT, "class": type(self).__name__, "config": self._fit_config,
               "state": self._state(), "linear": self.model.linear_name, "model": model_fingerprint(self.model)}
        atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike, model: ModelWrapper, base: Score | None = None) -> "Detector":
        """Read a detector saved with ``save`` onto the same ``model``; ``base`` overrides the
        saved base score (needed for scores with data-dependent parameters)."""
        doc = _read_doc(path)
        klass = _CLASSES.get(doc["class"])
        if klass is None:
            raise ValueError(f"{path} holds an unknown detector class {doc['class']!r}")
        if cls is not Detector and klass is not cls:
            raise ValueError(f"{path} holds a {doc['class']}, not a {cls.__name__}")
        if not isinstance(model, ModelWrapper):
            raise TypeError(f"model must be the wrapped classifier the detector was fitted on (ross_ood.wrap(net, "
                            f"mean, std), as at fit), got a plain {type(model).__name__}: wrap it first")
        have = model_fingerprint(model)
        if doc.get("model") != have:
            raise ValueError(f"{path} was fitted on model {doc.get('model')!r}, not on this one ({have!r}): "
                             "its thresholds do not apply; fit it again on this model")
        for k, v in doc["state"].items():
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{path}: saved state {k} = {v!r} is not a finite number (corrupt file)")
        cfg = dict(doc["config"])
        det = klass.from_config(model, base if base is not None else score_from_spec(cfg["base"]), cfg)
        for k, v in doc["state"].items():
            setattr(det, k, v)
        det._fit_config, det._fitted_on = det.config(), model
        if det._fit_config != doc["config"]:
            raise ValueError(f"{path}: the rebuilt detector's configuration differs from the saved one")
        return det

    @classmethod
    def from_config(cls, model: ModelWrapper, base: Score, cfg: dict) -> "Detector":
        """Build from a ``config()`` dictionary (inverse of ``config``)."""
        return cls(model, base=base, accept_rate=cfg["accept_rate"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


def _read_doc(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a saved ross-ood detector (invalid JSON: {e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a saved ross-ood detector (not a UTF-8 JSON text file)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{path} is not a saved ross-ood detector (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in ("class", "config", "state") if not isinstance(doc.get(k), str if k == "class" else dict)]
    if missing:
        raise ValueError(f"{path} is not a complete saved ross-ood detector: {', '.join(missing)} missing or "
                         "malformed (corrupt or edited file)")
    if not isinstance(doc["config"].get("base"), dict):
        raise ValueError(f"{path} is not a complete saved ross-ood detector: config.base missing (corrupt file)")
    return doc


@register
class BaseScoreDetector(Detector):
    """A base score used as it is (no smoothing). ``fit`` only sets the predict threshold.

    Parameters
    ----------
    model : ModelWrapper
        The wrapped classifier (``ross_ood.wrap``).
    base : str or Score
        Base score name (``ross_ood.SCORE_NAMES``) or a ``Score`` object.
    base_params : dict, optional
        Parameters of the base score, e.g. ``{"temperature": 2.0}`` for Energy.
    accept_rate : float
        Share of the ID validation data that ``predict`` accepts as ID (0.95: the threshold
        is their 5% quantile).
    batch_size : int
        Images per forward pass in ``fit``.
    """

    kind = "base"
