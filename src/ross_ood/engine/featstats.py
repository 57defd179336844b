"""The feature-statistics cache: penultimate features and labels of a model on its benchmark's
training set, fitted once (``scores.fit_feature_stats``) and kept as safetensors for the scores
that need them (KNN, Mahalanobis, ViM, ReAct)."""
from __future__ import annotations

import os
from pathlib import Path

from ross_ood.store import user_cache_dir

__all__ = ["STATS_FORMAT", "feature_stats"]

#: what the feature-statistics cache stores, and the version of its format
STATS_FORMAT = "ross-ood-feature-stats/1"


def feature_stats(model, train_archive, root: str | os.PathLike, *, limit: int | None = None, seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, pre_size: int | None = None):
    """The ``FeatureStats`` of ``model`` on the training archive ``train_archive`` (a path relative to
    the data root ``root``, or an ``ImageSet``; a seeded class-stratified subset of ``limit`` images;
    images resized to ``pre_size`` then centre-cropped, as the benchmark's are), from the cache in
    ``cache_dir`` (default ``~/.cache/ross-ood/feature-stats``) when there, else computed and cached. The cache file is named by a hash of (model fingerprint, training set signature, limit,
    seed) and records them: a file whose record differs is stale and refused by name."""
    import hashlib
    import json

    from ross_ood.data import ZipImageSet
    from ross_ood.data.image import SubsetView, stratified_subset
    from ross_ood.model import model_fingerprint
    from ross_ood.scores import FeatureStats, fit_feature_stats
    train = train_archive if hasattr(train_archive, "prepare") else ZipImageSet(Path(root) / train_archive)
    limit = limit if limit is not None and limit < len(train) else None
    if limit is not None:
        train = SubsetView(train, stratified_subset(len(train), limit, train.labels, seed), "train")
    train.prepare(model.channels, model.input_size, pre_size)
    record = {"format": STATS_FORMAT, "model": model_fingerprint(model), "train": train.describe(),
              "train_signature": train.signature(), "limit": limit, "seed": seed if limit is not None else None}
    if pre_size is not None:  # absent otherwise: the caches made before it existed stay valid
        record["pre_size"] = pre_size
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    cache_dir = Path(cache_dir) if cache_dir else user_cache_dir("feature-stats")
    path = cache_dir / f"{key}.safetensors"
    from safetensors.torch import load_file, safe_open, save_file
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            saved = json.loads((f.metadata() or {}).get("record", "null"))
        if saved != record:
            diff = sorted(k for k in record if not isinstance(saved, dict) or saved.get(k) != record[k])
            raise ValueError(f"feature-statistics cache {path} is stale: it was made for other {', '.join(diff)}; "
                             "delete it (or give another --stats-cache) to recompute")
        t = load_file(str(path))
        return FeatureStats(t["features"], t["labels"], record["train"], record["model"])
    from ross_ood.engine.train import load_images
    x, y = load_images(train)
    stats = fit_feature_stats(model, x, y, source=record["train"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": stats.features, "labels": stats.labels}, str(tmp), metadata={"record": json.dumps(record)})
    os.replace(tmp, path)
    return stats


