"""Noise-augmented training for smoothing: Gaussian data augmentation (Cohen et al., ICML 2019)
with optional consistency regularisation (Jeong & Shin, NeurIPS 2020).

A smoothed detector scores noisy copies x + delta, delta ~ N(0, sigma^2 I) in pixel space
(clipped to [0, 1]); a classifier that has seen such copies in training keeps its accuracy
and its scores under that noise. Each step draws ``n_noise`` noisy copies of every image of
the batch; the loss is the mean cross-entropy over the copies plus, with ``consistency``
lambda > 0, lambda * mean_i KL(p_bar || p_i) + eta * H(p_bar), p_bar the mean softmax of the
copies (Jeong & Shin's consistency loss).

Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): with ``outliers`` set, every step
also sees as many outlier images as ID images, each with one draw of the same training noise,
and the loss adds ``oe_weight`` times their mean cross-entropy to the uniform distribution,
-(1/K) sum_k log softmax_k (the ID and outlier images go through the network as one batch, as in
Hendrycks et al.'s code). The outliers are either ``"jigsaw"``, synthetic ones made from the ID
batch itself (each augmented ID image cut into a 4 x 4 grid of tiles, the tiles shuffled by a
permutation drawn per image: colours and local texture of the ID data, no object shape), or
images of a file source handed to ``train_epoch`` (drawn in an order of (seed, epoch), cropped
and flipped like the ID images).

Adversarial training under noise (SmoothAdv-style, Salman et al., NeurIPS 2019: PGD on the
expectation over the noise draws): with ``adv_eps`` > 0, every step first attacks the ID images
of the batch with ``adv_steps`` steps of L-inf PGD (pixel units, step 2.5 eps / steps, a uniform
random start, clipped to [0, 1]) on the mean cross-entropy of their ``n_noise`` noisy copies, the
noise fixed across the steps and the network in eval mode; the training loss is then computed on
the adversarial images with the same noise. With ``adv_outliers`` the outliers are attacked in
the same steps too (ALOE, Chen et al., 2020; as ATD attacks both sides): each PGD step ascends
the whole training loss, the ID cross-entropy plus ``oe_weight`` x the outliers' cross-entropy to
the uniform distribution, so the outliers move toward a confident prediction, the direction an
attacker pushes an OOD input; without it the outliers are not attacked.

Every random draw of epoch e comes from generators seeded by (seed, e) alone: order, crops and
flips from a CPU generator, the noise from a generator on the training device (so a GPU draws
its noise where it trains). A run resumed after epoch e gives the same weights as an
uninterrupted run on the same device. The training images can live on the device: crops and
flips are one gather, not a Python loop, so a GPU is not starved by the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ross_ood.model import ModelWrapper
from ross_ood.noise import pair_seed
from ross_ood.precision import autocast

__all__ = ["NAMED_OUTLIERS", "TrainConfig", "train_epoch", "adversarial_under_noise", "adv_step", "pgd_accuracy", "pgd_correct", "evaluate_accuracy", "epoch_generator", "noise_generator", "augment", "lr_at",
           "load_images", "jigsaw", "SYNTHETIC_OUTLIERS"]

#: outlier kinds made from the ID batch, with their description (anything else given as
#: ``outliers`` is a path to images)
#: outlier sources by name (the rest are paths): ``tin-oe``, the half of Tiny ImageNet's non-CIFAR classes that
#: the real benchmarks never evaluate on (``data.benchmarks.TIN_OE_CLASSES``)
NAMED_OUTLIERS = ("tin-oe",)
SYNTHETIC_OUTLIERS = {"jigsaw": "synthetic, each augmented ID image of the batch cut into 4 x 4 tiles, "
                                "the tiles shuffled per image"}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run's hyper-parameters (validated by ``settings.TrainSettings``)."""

    sigma: float = 0.12
    epochs: int = 4
    lr: float = 0.02
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    n_noise: int = 1
    consistency: float = 0.0
    entropy: float = 0.5
    seed: int = 0
    precision: str = "fp32"
    outliers: str | None = None
    oe_weight: float = 0.5
    adv_eps: float = 0.0  # L-inf radius of the training attack, pixel units (0: no adversarial training)
    adv_steps: int = 2
    adv_step_size: float | None = None  # pixel units; None: 2.5 eps / steps, or 1.25 eps with one step (Wong et al.)
    adv_outliers: bool = False  # attack the outliers too (needs adv_eps > 0 and outliers)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of every draw of ``epoch``: depends on (seed, epoch) only."""
    return torch.Generator().manual_seed(pair_seed(seed, 0x7A1, epoch, 0))


def noise_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of the training noise of ``epoch``, on ``device``: (seed, epoch) only."""
    return torch.Generator(device=device).manual_seed(pair_seed(seed, 0x7A2, epoch, 0))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding 4) and horizontal flip, one draw per image from the CPU
    generator ``gen``; the crop is one gather on ``x``'s device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                 rows, cols]
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def jigsaw(x: torch.Tensor, gen: torch.Generator, grid: int = 4) -> torch.Tensor:
    """Synthetic outliers: each image of ``x`` (N, C, H, W) cut into ``grid`` x ``grid`` tiles,
    the tiles put back in an order drawn per image from the CPU generator ``gen``."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"jigsaw outliers need image sides divisible by {grid}, got {h} x {w}")
    th, tw = h // grid, w // grid
    tiles = x.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    perm = torch.argsort(torch.rand(b, grid * grid, generator=gen), dim=1).to(x.device)
    tiles = tiles[torch.arange(b, device=x.device)[:, None], perm]
    return tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """One-cycle schedule: linear warm-up over the first 15% of steps, cosine decay to 0."""
    warm = max(1, int(0.15 * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure's loss: the mean cross-entropy of ``logits`` to the uniform distribution."""
    return -logits.log_softmax(1).mean(1).mean()


def adversarial_under_noise(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor,
                            cfg: TrainConfig, start: torch.Tensor, outliers: torch.Tensor | None = None,
                            outlier_noise: torch.Tensor | None = None, outlier_start: torch.Tensor | None = None):
    """``x`` attacked by ``cfg.adv_steps`` steps of L-inf PGD (radius ``cfg.adv_eps``, pixel units,
    from ``x + start``, ``start`` uniform in the ball) on the mean cross-entropy over the noisy
    copies ``x + cfg.sigma * noise`` (``noise`` (n_noise * B, C, H, W), fixed across the steps).
    With ``outliers`` (and their ``outlier_noise``, one copy each, and ``outlier_start``) they are
    attacked in the same steps, the loss ascended being the training loss's ``cross-entropy +
    oe_weight x uniform cross-entropy of the outliers``; returns ``(x_adv, outliers_adv)`` then,
    else ``x_adv``."""
    eps, m = cfg.adv_eps, cfg.n_noise
    alpha = adv_step(cfg)
    n_id = m * len(x)
    was_training = model.training
    model.eval()
    parts = [(x, start.clone())] + ([] if outliers is None else [(outliers, outlier_start.clone())])
    all_noise = noise if outliers is None else torch.cat([noise, outlier_noise])
    try:
        for _ in range(cfg.adv_steps):
            deltas = [d.requires_grad_(True) for _, d in parts]
            xa = [(v + d).clamp(0.0, 1.0) for (v, _), d in zip(parts, deltas)]
            xs = torch.cat([xa[0].repeat(m, 1, 1, 1), *xa[1:]])
            with autocast(cfg.precision, x.device):
                logits = model((xs + cfg.sigma * all_noise).clamp(0.0, 1.0)).float()
            loss = F.cross_entropy(logits[:n_id], y.repeat(m))
            if outliers is not None:
                loss = loss + cfg.oe_weight * _uniform_ce(logits[n_id:])
            grads = torch.autograd.grad(loss, deltas)
            parts = [(v, (d.detach() + alpha * g.sign()).clamp(-eps, eps)) for (v, _), d, g in zip(parts, deltas, grads)]
    finally:
        model.train(was_training)
    adv = [(v + d).clamp(0.0, 1.0).detach() for v, d in parts]
    return adv[0] if outliers is None else (adv[0], adv[1])


def adv_step(cfg: TrainConfig) -> float:
    """The step of the training attack, pixel units: ``cfg.adv_step_size``, else 2.5 eps / steps
    (Madry-style PGD), or 1.25 eps for a single step (fast adversarial training, Wong, Rice & Kolter,
    ICLR 2020: a uniform random start plus one signed step of 1.25 eps)."""
    if cfg.adv_step_size is not None:
        return cfg.adv_step_size
    return 1.25 * cfg.adv_eps if cfg.adv_steps == 1 else 2.5 * cfg.adv_eps / cfg.adv_steps


def pgd_correct(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                steps: int = 10, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Per image (bool, on the CPU): still classified right under an L-inf PGD attack of ``steps``
    steps at ``cfg.adv_eps`` (step 2.5 eps / steps, uniform random start) on one fixed draw of the
    training noise per image, judged under the same noise: the per-epoch check of fast adversarial
    training against catastrophic overfitting (its PGD accuracy collapses while the single-step
    training accuracy rises; Wong et al. keep the best epoch), and what pairs two runs checked on the
    same images. Starts and noise come from a CPU generator seeded by ``seed``: the same on every device."""
    from dataclasses import replace
    check = replace(cfg, adv_steps=steps, adv_step_size=None, n_noise=1)
    gen = torch.Generator().manual_seed(pair_seed(seed, 0x7A4, 0, 0))
    out = []
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].to(model.device), labels[i:i + batch_size].to(model.device)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        start = ((torch.rand(x.shape, generator=gen) * 2 - 1) * cfg.adv_eps).to(x.device)
        xa = adversarial_under_noise(model, x, y, noise, check, start)
        with torch.no_grad():
            out.append((model((xa + cfg.sigma * noise).clamp(0.0, 1.0)).argmax(1) == y).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def pgd_accuracy(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                 steps: int = 10, seed: int = 0, batch_size: int = 256) -> float:
    """The share of ``pgd_correct``."""
    return float(pgd_correct(model, images, labels, cfg, steps, seed, batch_size).double().mean())


def _loss(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
          outliers: torch.Tensor | None = None, adv_start: torch.Tensor | None = None,
          outlier_start: torch.Tensor | None = None):
    m = cfg.n_noise
    n_id = m * len(x)
    noise = torch.randn((n_id + (0 if outliers is None else len(outliers)), *x.shape[1:]), generator=gen,
                        device=gen.device).to(x.device)
    if cfg.adv_eps > 0:
        if adv_start is None:
            raise ValueError("adversarial training needs the attack's random start (adv_start)")
        if cfg.adv_outliers and outliers is not None:
            if outlier_start is None:
                raise ValueError("attacking the outliers needs their random start (outlier_start)")
            x, outliers = adversarial_under_noise(model, x, y, noise[:n_id], cfg, adv_start, outliers,
                                                  noise[n_id:], outlier_start)
        else:
            x = adversarial_under_noise(model, x, y, noise[:n_id], cfg, adv_start)
    xs = x.repeat(m, 1, 1, 1) if outliers is None else torch.cat([x.repeat(m, 1, 1, 1), outliers])
    with autocast(cfg.precision, x.device):
        logits = model((xs + cfg.sigma * noise).clamp(0.0, 1.0))
    logits = logits.float()
    loss = F.cross_entropy(logits[:n_id], y.repeat(m))
    if outliers is not None:  # cross-entropy to the uniform distribution
        loss = loss + cfg.oe_weight * _uniform_ce(logits[n_id:])
    if cfg.consistency > 0 and m >= 2:
        logp = logits[:n_id].log_softmax(1).view(m, len(x), -1)
        p_bar = logp.exp().mean(0)
        kl = (p_bar * (p_bar.clamp_min(1e-12).log()[None] - logp)).sum(2).mean()
        ent = -(p_bar * p_bar.clamp_min(1e-12).log()).sum(1).mean()
        loss = loss + cfg.consistency * kl + cfg.entropy * ent
    return loss, logits[: len(x)]


def train_epoch(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor, opt: torch.optim.Optimizer,
                cfg: TrainConfig, epoch: int, progress=None, scaler=None,
                outlier_images: torch.Tensor | None = None) -> dict:
    """One epoch over ``images`` (N, C, H, W in [0, 1], on any device) in an order drawn from
    (seed, epoch). ``scaler``: the fp16 loss scale (``precision.grad_scaler``), else None.
    ``outlier_images``: the outliers of a file source (``cfg.outliers`` a path)."""
    if cfg.outliers is not None and cfg.outliers not in SYNTHETIC_OUTLIERS and outlier_images is None:
        raise ValueError(f"outliers {cfg.outliers!r} is a file source: pass its images as outlier_images")
    gen = epoch_generator(cfg.seed, epoch)
    noise_gen = noise_generator(cfg.seed, epoch, model.device)
    order = torch.randperm(len(images), generator=gen).to(images.device)
    if outlier_images is not None and cfg.outliers not in SYNTHETIC_OUTLIERS:
        # the epoch's outlier order, repeated as often as the ID images need (a smaller source recurs)
        o_gen = torch.Generator().manual_seed(pair_seed(cfg.seed, 0x7A3, epoch, 0))
        reps = math.ceil(len(images) / len(outlier_images))
        o_order = torch.cat([torch.randperm(len(outlier_images), generator=o_gen) for _ in range(reps)])
    else:
        outlier_images = None
    steps = math.ceil(len(images) / cfg.batch_size)
    model.train()
    total, correct, loss_sum = 0, 0, 0.0
    for k in range(steps):
        idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        x = augment(images[idx], gen).to(model.device)
        y = labels[idx].to(model.device)
        xo = None
        if cfg.outliers in SYNTHETIC_OUTLIERS:
            xo = jigsaw(x, gen)
        elif outlier_images is not None:
            oidx = o_order[k * cfg.batch_size:k * cfg.batch_size + len(idx)].to(outlier_images.device)
            xo = augment(outlier_images[oidx], gen).to(model.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch * steps + k, cfg.epochs * steps)
        start = o_start = None
        if cfg.adv_eps > 0:  # the attack's random starts, from the epoch's CPU generator
            start = ((torch.rand(x.shape, generator=gen) * 2 - 1) * cfg.adv_eps).to(x.device)
            if cfg.adv_outliers and xo is not None:
                o_start = ((torch.rand(xo.shape, generator=gen) * 2 - 1) * cfg.adv_eps).to(x.device)
        loss, logits = _loss(model, x, y, cfg, noise_gen, xo, start, o_start)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        total += len(idx)
        correct += (logits.argmax(1) == y).sum()
        loss_sum += loss.detach() * len(idx)
        if progress:
            progress(len(idx))
    model.eval()
    # the sums stay on the device during the epoch (no synchronisation per step)
    return {"epoch": epoch + 1, "loss": float(loss_sum) / total, "train_acc_noisy": int(correct) / total}


@torch.no_grad()
def evaluate_accuracy(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor, sigma: float = 0.0,
                      seed: int = 0, batch_size: int = 256) -> float:
    """Accuracy (float32 network) on clean images, or under one draw of N(0, sigma^2) pixel
    noise (clipped; drawn on the CPU, so the same on every device)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        if sigma > 0:
            x = (x + sigma * torch.randn(x.shape, generator=gen).to(x.device)).clamp(0.0, 1.0)
        correct += int((model(x.to(model.device)).argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum())
    return correct / len(images)


def load_images(ds, progress=None, labelled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of a data set as tensors (uint8 storage would be smaller; CIFAR-10's
    50,000 32x32 images take 600 MB as float32, fine on this project's machines). ``labelled``:
    refuse a set with unlabelled images."""
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        xs.append(x)
        ys.append(y)
        if progress:
            progress(1)
    labels = torch.as_tensor(np.asarray(ys), dtype=torch.long)
    if labelled and (labels < 0).any():
        raise ValueError(f"training set {ds.describe()} has unlabelled images")
    return torch.stack(xs), labels
