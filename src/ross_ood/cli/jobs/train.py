"""``ross train``: noise-augmented fine-tuning of a zoo classifier on the benchmark's ID
training set, resumable per epoch (see ``ross_ood.engine.train`` for the method).

Writes into ``--out``: ``state.pt`` after every epoch (weights, optimizer, history; read with
``weights_only=True``), and at the end ``model.pt`` (the state dict, loadable through the zoo:
``--model resnet20 --checkpoint OUT/model.pt``) with ``model.json`` beside it (sha256, the
exact command, settings, per-epoch accuracies, and the accuracy clean and under one draw of
the training noise on the whole ID test archive, the figures of the data README), ``config.yaml``
and ``results.md``. A resumed run must have the settings it was started with (the learning-rate
schedule depends on them): another setting is refused by name, never mixed in. An outlier
source (``--outliers PATH``) that is missing, empty or shares an image with an evaluation set
is refused before anything is written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from ross_ood.cli.config import command_line
from ross_ood.cli.runtime import setup_runtime
from ross_ood.cli.settings import TrainSettings
from ross_ood.engine.train import (
    NAMED_OUTLIERS,
    SYNTHETIC_OUTLIERS,
    TrainConfig,
    evaluate_accuracy,
    load_images,
    pgd_correct,
    train_epoch,
)
from ross_ood.precision import grad_scaler
from ross_ood.progress import bars, progress
from ross_ood.runs.rundir import RUN_ONLY_SETTINGS, prepare_out
from ross_ood.store import atomic_write_bytes, atomic_write_text

__all__ = ["run_train"]


def _data(st: TrainSettings, root: Path, model, prog):
    from ross_ood.data import BENCHMARKS, ZipImageSet, build_benchmark
    from ross_ood.data.benchmarks import training_archive
    from ross_ood.data.image import SubsetView, content_hash, stratified_subset
    spec = BENCHMARKS[st.benchmark]
    path, manifest, note = training_archive(st.benchmark, root)
    print(f"ross train: {note}", file=sys.stderr, flush=True)
    train = ZipImageSet(path)
    if st.limit is not None and st.limit < len(train):
        train = SubsetView(train, stratified_subset(len(train), st.limit, train.labels, st.seed))
    train.prepare(model.channels, model.input_size)
    bench = build_benchmark(st.benchmark, root, model.channels, model.input_size, limit=st.val_limit, seed=st.seed,
                            num_classes=model.num_classes)
    with progress(prog, "load train", len(train)) as update:
        x, y = load_images(train, update)
    test = ZipImageSet(root / spec.id)
    test.prepare(model.channels, model.input_size)
    if manifest is not None:  # an archive from outside the data root: refuse one that shares an image with the test set
        held = {content_hash(test[i][0]) for i in range(len(test))}
        hits = [i for i in range(len(x)) if content_hash(x[i]) in held]
        if hits:
            raise ValueError(f"training archive {path}: {len(hits)} image(s) are images of the ID test set "
                             f"{test.describe()} (by content), e.g. training image {hits[0]}; a training set "
                             "must be disjoint from the test set")
    if st.test_limit is not None and st.test_limit < len(test):
        test = SubsetView(test, stratified_subset(len(test), st.test_limit, test.labels, st.seed))
    xt, yt = load_images(test)
    desc = {"set": train.describe(), "archive": str(path), "sha256": None if manifest is None else manifest["sha256"],
            "note": note}
    return (x, y), load_images(bench.val), (xt, yt), desc


def _outliers(st: TrainSettings, root: Path, model, prog):
    """The outlier images of a file source (None for none or a synthetic kind) and their
    description. A source with an image that decodes to the same pixels as an image of any
    evaluation set of the benchmark (ID test, its validation split, every OOD set; compared by
    ``content_hash``, so a copied or losslessly re-encoded file is caught) is refused."""
    if st.outliers is None:
        return None, None
    if st.outliers in SYNTHETIC_OUTLIERS:
        return None, f"{st.outliers}: {SYNTHETIC_OUTLIERS[st.outliers]}"
    from ross_ood.data import build_benchmark, open_set
    from ross_ood.data.benchmarks import tin_oe_set
    from ross_ood.data.image import content_hash
    src = tin_oe_set(root) if st.outliers == NAMED_OUTLIERS[0] else open_set(st.outliers, name="outliers")
    src.prepare(model.channels, model.input_size)
    bench = build_benchmark(st.benchmark, root, model.channels, model.input_size)
    if src.classes and src.labels is not None:  # Tiny ImageNet classes that a benchmark evaluates on
        import numpy as np
        for name, ds in bench.ood.items():
            if ds.classes and ds.labels is not None and name == "tin":
                shared = sorted(set(src.classes[k] for k in np.unique(src.labels))
                                & {ds.classes[k] for k in np.unique(ds.labels)})
                if shared:
                    raise ValueError(f"outliers {st.outliers}: holds {len(shared)} class(es) of the evaluation set "
                                     f"{name} ({', '.join(shared[:4])}{' ...' if len(shared) > 4 else ''}); "
                                     "outlier exposure needs classes disjoint from every evaluation set (give "
                                     "--outliers tin-oe, the held-out half of Tiny ImageNet)")
    with progress(prog, "load outliers", len(src)) as update:
        xo, _ = load_images(src, update, labelled=False)
    mine = {content_hash(x) for x in xo}
    for name, ds in bench.sets().items():
        hits = [j for j in range(len(ds)) if content_hash(ds[j][0]) in mine]
        if hits:
            raise ValueError(f"outliers {st.outliers}: {len(hits)} image(s) are images of the evaluation set "
                             f"{name} ({ds.describe()}), e.g. its image {hits[0]}; outlier exposure needs data "
                             "disjoint from every evaluation set")
    return xo, src.describe()


def _save(path: Path, obj) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


#: settings that do not change the trained weights: a resumed run may differ in these (the run-only
#: settings of every command but training's own hyper-parameters, e.g. its batch size)
_RUN_ONLY = tuple(k for k in RUN_ONLY_SETTINGS if k not in {f.name for f in dataclasses.fields(TrainConfig)})


def _recipe(st: TrainSettings) -> dict:
    return {k: v for k, v in st.to_dict().items() if k not in _RUN_ONLY}


def _field_defaults(st: TrainSettings) -> dict:
    from dataclasses import MISSING, fields
    return {f.name: (f.default_factory() if f.default is MISSING else f.default) for f in fields(st)}


def _start(st: TrainSettings, model, out: Path):
    opt = torch.optim.SGD(model.parameters(), lr=st.lr, momentum=st.momentum, weight_decay=st.weight_decay,
                          nesterov=st.momentum > 0)
    state = out / "state.pt"
    if not (st.resume and state.is_file()):
        return opt, 0, [], []
    from ross_ood.models import CheckpointError
    try:
        saved = torch.load(state, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, ValueError, EOFError) as e:
        raise CheckpointError(f"cannot resume from {state}: {str(e).splitlines()[0]}") from None
    recipe, now = saved.get("recipe"), _recipe(st)
    if recipe is not None:  # a setting newer than the run was at its default then
        defaults = _field_defaults(st)
        recipe = {k: recipe.get(k, defaults.get(k)) for k in now}
    if recipe is not None and recipe != now:
        diff = ", ".join(f"{k} {recipe.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(recipe) | set(now))
                         if recipe.get(k) != now.get(k))
        raise ValueError(f"cannot resume {out}: it was started with other settings ({diff}); "
                         "resume with the same settings, or train into another folder")
    try:
        model.net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {state}: {str(e).splitlines()[0]}") from None
    return opt, int(saved["epoch"]), list(saved["history"]), list(saved.get("pieces", []))


def kept_epoch(history: list[dict], drop: float) -> int:
    """The epoch that fast adversarial training keeps (Wong, Rice & Kolter 2020's guard against
    catastrophic overfitting): the last one before the per-epoch PGD accuracy (``val_pgd_acc``) first
    falls more than ``drop`` below the best so far; the last epoch when it never collapses."""
    best, kept = None, 0
    for h in history:
        acc = h["val_pgd_acc"]
        if best is not None and acc < best - drop:
            break
        kept, best = h["epoch"], acc if best is None else max(best, acc)
    return kept


def train_config(st: TrainSettings) -> TrainConfig:
    """The method's hyper-parameters of a ``ross train`` run: every field of ``TrainConfig``
    taken by name from the settings (the eps values as parsed, pixel units)."""
    from dataclasses import fields
    vals = {f.name: getattr(st, f.name) for f in fields(TrainConfig) if hasattr(st, f.name)}
    vals.update(adv_eps=st.adv_eps_value, adv_step_size=st.adv_step_value)
    return TrainConfig(**vals)


def run_train(st: TrainSettings) -> dict:
    """Run ``ross train``; returns the model.json document."""
    from ross_ood.data import default_data_root
    from ross_ood.models import load_model
    out, root, prog = Path(st.out), default_data_root(st.data_root), bars(st.progress)
    dev = setup_runtime(st.device)
    from ross_ood.precision import check_precision
    check_precision(st.precision, dev)  # "auto" resolved: fp16 on the CPU is refused before any work
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    model = load_model(st.model, root, checkpoint=st.checkpoint, device=dev, pretrained=not st.scratch)
    xo, outlier_desc = _outliers(st, root, model, prog)  # refused before anything is written
    if st.scratch:
        torch.manual_seed(st.seed)
        for m in model.net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    (x, y), (xv, yv), (xt, yt), train_desc = _data(st, root, model, prog)
    prepare_out(out)  # after every input is read and checked: a refused run leaves no folder
    x, y = x.to(dev), y.to(dev)  # on a GPU the whole training set lives there (600 MB for CIFAR-10)
    cfg = train_config(st)
    opt, start, history, pieces = _start(st, model, out)
    if st.stop_after is not None and start < st.epochs and st.stop_after <= start:
        raise ValueError(f"stop_after {st.stop_after}: epochs 1-{start} of {out} are done already; give a larger "
                         "--stop-after, or none to finish the schedule")
    check = None
    if st.adv_check:  # the guard against catastrophic overfitting: a fixed seeded subset of the validation split
        k = torch.randperm(len(xv), generator=torch.Generator().manual_seed(st.seed))[:st.adv_check]
        check = xv[k], yv[k]
    scaler = grad_scaler(st.precision, dev)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(st.to_dict(), sort_keys=True))
    t0 = time.time()
    pieces.append({"first_epoch": start + 1, "last_epoch": start, "wall_s": 0.0,
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(dev),
                   "threads": torch.get_num_threads()})  # a piece's seconds depend on its threads
    end = st.epochs if st.stop_after is None else min(st.epochs, st.stop_after)
    for epoch in range(start, end):
        with progress(prog, f"epoch {epoch + 1}/{st.epochs}", len(x)) as update:
            rec = train_epoch(model, x, y, opt, cfg, epoch, update, scaler, None if xo is None else xo.to(dev))
        rec.update(val_acc=evaluate_accuracy(model, xv, yv),
                   val_acc_noisy=evaluate_accuracy(model, xv, yv, st.sigma, seed=st.seed))
        if check is not None:
            ok = pgd_correct(model, *check, cfg, seed=st.seed)
            # per image, in the seeded order of the check images: two runs checked on them pair
            rec.update(val_pgd_acc=float(ok.double().mean()), val_pgd_correct="".join("01"[int(v)] for v in ok))
        rec["wall_s"] = time.time() - t0
        history.append(rec)
        pieces[-1].update(last_epoch=epoch + 1, wall_s=rec["wall_s"])
        if check is not None and kept_epoch(history, st.adv_check_drop) == epoch + 1:
            _save(out / "kept.pt", {"state_dict": model.net.state_dict(), "epoch": epoch + 1})
        _save(out / "state.pt", {"model": model.net.state_dict(), "optimizer": opt.state_dict(),
                                 "epoch": epoch + 1, "history": history, "recipe": _recipe(st), "pieces": pieces})
    if end < st.epochs:  # one piece of a long schedule: state.pt holds it, --resume continues
        print(f"{out}: epochs {start + 1}-{end} of {st.epochs} done in {time.time() - t0:.0f} s (state.pt); "
              f"continue with --resume")
        return None
    kept = kept_epoch(history, st.adv_check_drop) if check is not None else len(history)
    if kept != len(history):  # Wong et al.'s early stopping: the last epoch before PGD accuracy collapsed
        saved = torch.load(out / "kept.pt", map_location="cpu", weights_only=True)
        model.net.load_state_dict(saved["state_dict"])
    sha = _save(out / "model.pt", {"state_dict": model.net.state_dict()})
    test = {"test_images": len(xt), "test_acc": evaluate_accuracy(model, xt, yt),
            "test_acc_noisy": evaluate_accuracy(model, xt, yt, st.sigma, seed=st.seed)}
    doc = {"file": "model.pt", "sha256": sha, "command": command_line("train", st), "base": st.model,
           "arch": model.name, "noise_sigma": st.sigma, "train_set": train_desc["set"],
           "train_archive": train_desc["archive"], "train_archive_sha256": train_desc["sha256"], "train_images": len(x), "kept_epoch": kept,
           "outliers": outlier_desc, "outlier_images": None if xo is None else len(xo),
           "val_images": len(xv), **test, "wall_s": sum(p["wall_s"] for p in pieces[:-1]) + time.time() - t0, "pieces": pieces, "device": str(dev), "history": history,
           "settings": st.to_dict(),
           "load_with": f"--model {st.model} --checkpoint {out / 'model.pt'}"}
    atomic_write_text(out / "model.json", json.dumps(doc, indent=1))
    pgd = check is not None
    rows = ["| epoch | loss | train acc (noisy) | val acc | val acc under sigma |" + (" val PGD-10 acc |" if pgd else ""),
            "|---|---|---|---|---|" + ("---|" if pgd else "")]
    rows += [f"| {h['epoch']} | {h['loss']:.4f} | {100 * h['train_acc_noisy']:.2f} | {100 * h['val_acc']:.2f} | "
             f"{100 * h['val_acc_noisy']:.2f} |" + (f" {100 * h.get('val_pgd_acc', float('nan')):.2f} |" if pgd else "")
             for h in history]
    if pgd:
        rows.append(f"\nKept as model.pt: epoch {kept} (the last before PGD-10 accuracy on {len(check[0])} validation images "
                    f"fell more than {100 * st.adv_check_drop:g} points below its best: catastrophic overfitting).")
    atomic_write_text(out / "results.md", f"## ross train: {st.model}, sigma {st.sigma:g} (pixel units)\n\n"
                      f"{len(x)} training images ({train_desc['set']}; {train_desc['note']}); validation: {len(xv)} images of the ID "
                      f"validation split." + (f" Outlier exposure (weight {st.oe_weight:g}): {outlier_desc}."
                                              if outlier_desc else "") + "\n\n" + "\n".join(rows) + f"\n\nWhole ID test archive ({len(xt)} images): "
                      f"{100 * test['test_acc']:.2f}% clean, {100 * test['test_acc_noisy']:.2f}% under sigma "
                      f"{st.sigma:g}.\n\n`{doc['command']}`; sha256 {sha}\n")
    return doc
