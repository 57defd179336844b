"""Typed settings of every command, validated once, by the validators the API uses.

Settings come from, in increasing priority: the defaults below, a YAML config file
(``--config``, read with ``yaml.safe_load``; an unknown key or a value of the wrong type is
an error that names it), and the flags given on the command line (generated from these
fields: ``--n-samples`` for ``n_samples``; help texts show the defaults). Lists are given
comma-separated or as YAML lists. Building a settings object validates it: a bad value is
refused before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ross_ood.cli.config import FieldSettings, field_kind, load_config_file, opt
from ross_ood.detectors import DEFAULT_Q
from ross_ood.engine.adversarial import OBJECTIVES, AttackBudget, check_targets
from ross_ood.engine.report import BUDGET_PRESETS
from ross_ood.precision import PRECISIONS, check_precision
from ross_ood.validate import (
    NOISE_DEVICES,
    SPACES,
    check_certify_args,
    check_choice,
    check_device,
    check_fraction,
    check_int,
    check_number,
    check_ood_names,
    check_out_dir,
    parse_eps,
    parse_lam,
)

__all__ = ["Settings", "EvalSettings", "AttackSettings", "CertifySettings", "SweepSettings", "TrainSettings",
           "COMMANDS", "command_defaults", "load_config_file", "field_kind"]

DEFAULT_DETECTORS = ["msp", "energy", "gen", "odin", "fdbd", "pro-fdbd", "ross-msp", "ross-fdbd"]
_BUDGET = AttackBudget()  # the attack defaults live in one place: AttackBudget


@dataclass
class Settings(FieldSettings):
    """What every command shares."""

    benchmark: str = opt("cifar10", "benchmark: cifar10 (lossless; near CIFAR-100, Tiny ImageNet), cifar100, "
                         "cifar10-jpeg (the JPEG copy), mnist, openood-cifar10, openood-cifar100, openood-imagenet200")
    model: str | None = opt(None, "zoo model name, tv:NAME, or your own network as MODULE:FACTORY or FILE.py:FACTORY "
                            "(returning (net, mean, std[, input_size])) (default: the benchmark's)")
    checkpoint: str | None = opt(None, "weights file for the model (default: the zoo's file)")
    zoo: str | None = opt(None, "a zoo of your own: a YAML file NAME: {model: FILE.py:FACTORY, checkpoint: PATH}; "
                          "--model NAME then names one of its entries")
    data_root: str | None = opt(None, "data root (default: $ROSS_DATA, else ../shared/data, else ~/.cache/ross-ood)")
    plugin: list[str] = opt([], "user modules or .py files imported first (e.g. ones that call "
                            "ross_ood.register_score, making median-NAME etc. known)")
    detectors: list[str] = opt(DEFAULT_DETECTORS, "plain scores (msp, maxlogit, energy, gen, odin, fdbd, knn, "
                               "mahalanobis, vim, react, ash, scale, "
                               "pro-<score>), median-<score>, quantile-<score>, ross-<score>")
    limit: int | None = opt(None, "seeded class-stratified subset of at most this many images per set")
    seed: int = opt(0, "seed of the noise, attack starts and subsets")
    split_seed: int = opt(0, "seed of the carved ID validation split")
    out: str = opt("runs/eval", "output folder (results, config.yaml, cache/)")
    n_samples: int = opt(25, "noisy copies N per input", short="-N")
    sigma: float = opt(0.05, "noise std in noise_space units")
    lam: str = opt("0.01", "ROSS lambda (base score units): a number, or per base score e.g. fdbd=0.01,msp=0.002")
    tau_quantile: float = opt(0.05, "quantile of the ID validation medians that sets ROSS's tau")
    quantile: float = opt(DEFAULT_Q, "percentile q of quantile-<score> detectors (the certifiable stability score)")
    accept_rate: float = opt(0.95, "share of ID validation inputs that predict() accepts")
    noise_space: str = opt("pixel", "pixel (clipped to [0,1]) or normalized (sigma*std per channel, the paper's)",
                           choices=SPACES)
    batch_size: int = opt(128, "images per batch")
    chunk_size: int = opt(128, "noisy images per forward pass (bounds memory)")
    block_size: int = opt(512, "images per cached, resumable block")
    device: str = opt("auto", "auto, cpu, cuda, cuda:1, ...")
    noise_device: str = opt("cpu", "where noise is drawn: cpu (same noise on any device) or model (faster on "
                            "a GPU for large images, other numbers there)", choices=NOISE_DEVICES)
    ood: list[str] = opt([], "extra OOD sets NAME=PATH: a .zip, a folder, an IDX file, synthetic:gaussian")
    only_extra: bool = opt(False, "use only the --ood sets, not the benchmark's")
    ood_sets: list[str] = opt([], "only these OOD sets of the benchmark: names (cifar100,tin) or a group (near, far); "
                              "none given: all")
    part: str | None = opt(None, "K/M: only the K-th of M disjoint parts of the ID test set and of every OOD set (a "
                           "long run in pieces; ross combine joins them into one table)")
    stats_limit: int | None = opt(None, "knn, mahalanobis, vim, react: seeded class-stratified subset of the "
                                  "benchmark's training set for their statistics (default: all of it)")
    stats_cache: str | None = opt(None, "folder caching those statistics per model and training data (default: "
                                  "$XDG_CACHE_HOME/ross-ood/feature-stats)")
    workers: int = opt(0, "data-loading worker processes")
    progress: bool = opt(True, "progress bars")
    bootstrap: int = opt(1000, "bootstrap resamples of the images for the 95% intervals of AUROC and FPR@95 "
                         "(0: no intervals)")

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        from ross_ood.cli.plugins import load_plugins
        from ross_ood.data import BENCHMARKS
        from ross_ood.detectors import parse_detector_name
        load_plugins(self.plugin)  # before the detector names are checked: a plugin may register scores
        if self.zoo is not None:
            from ross_ood.cli.plugins import read_zoo
            read_zoo(self.zoo)  # a malformed file is refused before any work
        from ross_ood.smoothing import Smoothing
        check_choice("benchmark", self.benchmark, tuple(BENCHMARKS))
        if not self.detectors:
            raise ValueError("no detectors given")
        if len(set(self.detectors)) != len(self.detectors):
            raise ValueError(f"duplicate detector names in {self.detectors}")
        self.kinds = {d: parse_detector_name(d) for d in self.detectors}
        self.lam_value = parse_lam(self.lam, {b for k, b in self.kinds.values() if k == "ross"})
        if self.limit is not None:
            check_int("limit", self.limit)
            if self.limit < 2 and self.bootstrap:
                raise ValueError("limit 1 leaves one image per set, and the bootstrap intervals need at least 2: give "
                                 "--limit 2 or more, or --bootstrap 0")
        if self.stats_limit is not None:
            check_int("stats_limit", self.stats_limit, minimum=2)
        from ross_ood.validate import parse_part
        self.part_value = parse_part(self.part)
        from ross_ood.scores import STATS_SCORES
        needs = sorted({b.removeprefix("pro-") for _, b in self.kinds.values()} & set(STATS_SCORES))
        if needs and not (BENCHMARKS[self.benchmark].stats or BENCHMARKS[self.benchmark].train):
            raise ValueError(f"{', '.join(needs)} fit on ID training images, and benchmark {self.benchmark!r} has none")
        for name in ("seed", "split_seed", "workers", "bootstrap"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("batch_size", "block_size"):
            check_int(name, getattr(self, name))
        check_fraction("tau_quantile", self.tau_quantile)
        check_fraction("quantile", self.quantile)
        check_fraction("accept_rate", self.accept_rate)
        for sigma in self.sigma if isinstance(self.sigma, list) else [self.sigma]:
            Smoothing(self.n_samples, sigma, self.noise_space, self.seed, self.chunk_size, self.noise_device)
        check_device(self.device)
        check_out_dir(self.out)
        bench = BENCHMARKS[self.benchmark]
        from ross_ood.data.benchmarks import select_sets
        select_sets(bench, self.ood_sets)
        self.extra_ood = check_ood_names(self.ood, {"id_val", "id_test"} | (
            set() if self.only_extra else {*bench.near, *bench.far}), f"benchmark {self.benchmark!r}")

    def lam_for(self, base: str) -> float:
        lam = self.lam_value
        return lam.get(base, lam.get("default", 0.01)) if isinstance(lam, dict) else lam

    def smoothed_only(self, command: str) -> None:
        plain = [d for d, (k, _) in self.kinds.items() if k == "base"]
        if plain:
            raise ValueError(f"{command} needs smoothed detectors (median-<score>, quantile-<score> or ross-<score>), "
                             f"got {plain}")

@dataclass
class EvalSettings(Settings):
    """``ross eval``: clean evaluation."""


@dataclass
class AttackSettings(Settings):
    """``ross attack``: robustness under L-inf attacks."""

    out: str = opt("runs/attack", "output folder (results, config.yaml, cache/)")
    detectors: list[str] = opt(["msp", "energy", "gen", "odin", "fdbd", "pro-fdbd", "ross-msp", "ross-energy",
                                "ross-gen", "ross-fdbd"], "detectors to attack (names as for eval)")
    eps: list[str] = opt(["2", "4", "8", "16"], "L-inf budgets in 1/255 units ('8/255' and '0.03/1' also work)")
    eps_space: str = opt("pixel", "pixel (clipped to [0,1]) or normalized (eps*std per channel)", choices=SPACES)
    objective: list[str] = opt(["min", "max", "both"], "min (attack ID down), max (attack OOD up), both (both at "
                               "once; reuses the attacks of min and max)")
    target: list[str] = opt(["transfer", "adaptive", "square", "worst"], "transfer (the paper's PGD on the base "
                            "score), adaptive (APGD and EOT-PGD on the defended score), square (gradient-free, "
                            "on the defended score), worst (per input, over all of them)")
    transfer_steps: int = opt(_BUDGET.transfer_steps, "PGD steps of the transfer attack (the paper's 40)")
    adaptive_steps: int = opt(_BUDGET.adaptive_steps, "APGD steps of the adaptive attacks")
    restarts: int = opt(_BUDGET.adaptive_restarts, "restarts of the adaptive attacks")
    eot: int = opt(_BUDGET.eot, "EOT draws per step")
    attack_n: int = opt(_BUDGET.attack_n, "noisy copies per EOT draw in adaptive attacks on smoothed detectors")
    surrogates: list[str] = opt(list(_BUDGET.surrogates), "attacked statistics of smoothed detectors: median (the "
                                "detector's own order statistic), mean, softmedian, ross (the gated score; ROSS only)")
    early_stop: bool = opt(_BUDGET.early_stop, "stop attacking an input once its defended score crosses every clean "
                           "score of the other side (exact for PGD-Min/Max; see ross_ood.engine.adversarial)")
    check_every: int = opt(_BUDGET.check_every, "APGD steps between early-stopping checks")
    warm_start: bool = opt(_BUDGET.warm_start, "start each adaptive attack of a detector at its worst input of the "
                           "earlier attacks (transfer, earlier surrogates) instead of a random point")
    judge: bool = opt(_BUDGET.judge, "compare attack iterates (best iterate, APGD's step control, restarts) on "
                      "common random numbers: the detector's own score of judge_n noisy copies keyed by the clean input")
    judge_n: int | None = opt(_BUDGET.judge_n, "noisy copies of the judge (default: n_samples)")
    apgd_judge_every: int = opt(_BUDGET.apgd_judge_every, "APGD steps between judgements of the iterate (1: every "
                                "step; more: a cheaper judge that still judges each step-size checkpoint and the last step)")
    apgd_eta0: float = opt(_BUDGET.apgd_eta0, "APGD's first step size, in eps")
    eotpgd_steps: int = opt(_BUDGET.eotpgd_steps, "steps of the fixed-schedule EOT-PGD plan (cosine step eps/4 -> "
                            "eps/40, best iterate by the judge every 10 steps; 0: none)")
    eotpgd_surrogates: list[str] = opt(list(_BUDGET.eotpgd_surrogates), "attacked statistics of the EOT-PGD plan "
                                       "on smoothed detectors")
    eotpgd_n: int = opt(_BUDGET.eotpgd_n, "noisy copies per gradient of the EOT-PGD plan")
    eotpgd_restarts: int = opt(_BUDGET.eotpgd_restarts, "random starts of the EOT-PGD plan (the judge picks per input)")
    square_queries: int = opt(_BUDGET.square_queries, "queries per input of the gradient-free Square attack on the "
                              "defended score (target square, part of worst; 0: no such leg)")
    square_n: int = opt(_BUDGET.square_n, "noisy copies of the Square attack's judge on smoothed detectors (common "
                        "random numbers keyed by the clean input)")
    extra_attacks: list[str] = opt([], "attacks of your own to run in the adaptive target (and worst): names "
                                   "registered with ross_ood.register_attack by a --plugin file")
    budget: str = opt("default", "attack budget preset, as the API's budget=: default (the attack behind every stored "
                      "number) or quick (a quarter of the steps, one restart, no EOT-PGD, 100 gradient-free queries: a "
                      "cheap look that a stronger attack can only lower); the budget flags given beside it (in a "
                      "config or on the command line) override its values", choices=("default", "quick"))
    precision: str = opt(_BUDGET.precision, "precision of the attacks' gradient steps and judge: auto (bf16 where "
                         "it is measured faster for this network on this device, else fp32), fp32, bf16 or fp16 "
                         "(CUDA); stopping checks and reported scores are float32", choices=PRECISIONS)
    attack_batch: int = opt(64, "images per attack batch")
    diagnose: bool = opt(False, "also diagnose the attack (2x steps, 2x copies, unbounded eps, plans, silent "
                         "failures, objective curves): OUT/diagnosis.md; about 4x the attack's cost")

    def validate(self) -> None:
        super().validate()
        self.eps_values = parse_eps(self.eps, strict=True)
        if not self.eps_values:
            raise ValueError("no eps given")
        for o in self.objective or [None]:
            check_choice("objective", o, OBJECTIVES)
        check_int("attack_batch", self.attack_batch)
        check_precision(self.precision, None if self.device == "auto" else self.device)
        check_choice("budget", self.budget, tuple(BUDGET_PRESETS))
        self.attack_budget = AttackBudget(**{b: tuple(v) if isinstance(v, list) else v
                                            for b, v in ((b, getattr(self, k)) for k, b in budget_fields().items())})
        check_targets(self.target, self.attack_budget)

    @classmethod
    def with_preset(cls, given: dict) -> dict:
        """The settings ``given`` (a config file's and the command line's, before defaults) with every
        attack-budget setting they do not name taken from the preset ``given["budget"]``."""
        preset = given.get("budget", "default")
        check_choice("budget", preset, tuple(BUDGET_PRESETS))
        chosen = BUDGET_PRESETS[preset]
        return {**{k: _setting(getattr(chosen, b)) for k, b in budget_fields().items()}, **given}


@dataclass
class CertifySettings(Settings):
    """``ross certify``: certified metrics vs L2 radius (pixel space)."""

    out: str = opt("runs/certify", "output folder (results, config.yaml, cache/)")
    detectors: list[str] = opt(["median-fdbd", "ross-fdbd", "median-msp", "ross-msp"], "smoothed detectors")
    sigma: list[float] = opt([0.12, 0.25], "noise levels in pixel units, one run each")
    model: list[str] = opt([], "one zoo model per sigma (default: the benchmark's for all)")
    n_samples: int = opt(1000, "noise samples per input", short="-N")
    alpha: float = opt(0.001, "failure probability per input")
    radii: list[float] = opt([0, 0.05, 0.1, 0.2, 0.3, 0.5], "L2 radii in pixel units")
    grid: int = opt(200, "percentile grid for the D bounds")

    def validate(self) -> None:
        super().validate()
        self.smoothed_only("certify")
        check_choice("noise_space (certificates are in pixel space)", self.noise_space, ("pixel",))
        if not self.sigma:
            raise ValueError("no sigma given")
        for s in self.sigma:
            check_number("sigma", s, strict=True)
        for r in self.radii or [0.0]:
            check_certify_args(r, self.alpha, self.grid)  # the API's check (certified_bounds)
        if self.model and len(self.model) != len(self.sigma):
            raise ValueError(f"model must name one model per sigma ({len(self.sigma)}), got {len(self.model)}")


@dataclass
class SweepSettings(Settings):
    """``ross sweep``: the paper's lambda, N and sigma ablations."""

    out: str = opt("runs/sweep", "output folder (results, config.yaml, cache/)")
    detectors: list[str] = opt(["ross-fdbd", "ross-msp"], "smoothed detectors")
    sweep: list[str] = opt(["lam", "n_samples", "sigma"], "which parameters to sweep")
    lam_values: list[float] = opt([0.005, 0.01, 0.02, 0.05], "lambda values")
    n_samples_values: list[int] = opt([5, 10, 25, 50, 100], "N values")
    sigma_values: list[float] = opt([0.025, 0.05, 0.1, 0.25], "sigma values (noise_space units)")
    attack_eps: list[str] = opt(["8"], "transfer-attack budgets in 1/255 (empty: clean only)")
    eps_space: str = opt("normalized", "eps space of the attack (normalized: the paper's)", choices=SPACES)
    objective: list[str] = opt(["min", "max"], "min and/or max")
    transfer_steps: int = opt(_BUDGET.transfer_steps, "PGD steps of the transfer attack (the paper's 40)")
    attack_batch: int = opt(64, "images per attack batch")

    def validate(self) -> None:
        super().validate()
        from ross_ood.engine.adversarial import AttackBudget
        from ross_ood.smoothing import Smoothing
        self.smoothed_only("sweep")
        for p in self.sweep:
            check_choice("swept parameter", p, ("lam", "n_samples", "sigma"))
        for v in self.lam_values:
            check_number("lam", v)
        for n in self.n_samples_values:
            Smoothing(n, self.sigma)
        for s in self.sigma_values:
            Smoothing(self.n_samples, s, self.noise_space)
        self.eps_values = parse_eps(self.attack_eps, strict=True)
        for o in self.objective:
            check_choice("objective", o, ("min", "max"))
        check_int("attack_batch", self.attack_batch)
        self.attack_budget = AttackBudget(transfer_steps=self.transfer_steps)


@dataclass
class TrainSettings(FieldSettings):
    """``ross train``: noise-augmented fine-tuning (or training) of a zoo classifier."""

    benchmark: str = opt("cifar10", "benchmark whose ID training set is used (cifar10 and cifar10-jpeg: "
                         "cifar10/train.zip, the JPEG copy; cifar100: cifar100/train.zip)")
    model: str = opt("resnet20", "zoo model to start from (its weights, or --checkpoint)")
    checkpoint: str | None = opt(None, "weights to start from (default: the zoo's file)")
    scratch: bool = opt(False, "start from random weights instead")
    data_root: str | None = opt(None, "data root (default: $ROSS_DATA, else ../shared/data)")
    out: str = opt("runs/train", "output folder: model.pt, model.json, state.pt (per epoch), results")
    sigma: float = opt(0.12, "Gaussian noise std in pixel units added to training images (0: none)")
    epochs: int = opt(4, "epochs")
    lr: float = opt(0.02, "peak learning rate (one-cycle: warm-up, cosine decay), SGD with Nesterov momentum")
    batch_size: int = opt(128, "images per step")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-4, "weight decay")
    n_noise: int = opt(1, "noisy copies per image and step")
    consistency: float = opt(0.0, "consistency regularisation lambda (Jeong & Shin 2020; needs n_noise >= 2)")
    entropy: float = opt(0.5, "entropy weight eta of the consistency loss")
    outliers: str | None = opt(None, "outlier exposure: 'jigsaw' (synthetic, tiles of the ID batch shuffled), "
                               "'tin-oe' (the half of Tiny ImageNet's classes no benchmark evaluates on), or a "
                               "folder / ZIP archive of outlier images disjoint from every evaluation set")
    oe_weight: float = opt(0.5, "weight of the outlier-exposure loss (cross-entropy to uniform on the outliers)")
    adv_eps: str = opt("0", "adversarial training under noise: L-inf radius of the training attack in 1/255 pixel "
                       "units ('2', '2/255'; 0: none), PGD on the mean loss of the noisy copies (SmoothAdv-style)")
    adv_steps: int = opt(2, "PGD steps of the training attack (random start; 1 step: fast adversarial training, "
                         "Wong et al. 2020)")
    adv_step_size: str = opt("auto", "step of the training attack in 1/255 pixel units (auto: 2.5 eps / steps, "
                             "with one step 1.25 eps as Wong et al.); at most 2 x adv_eps")
    adv_check: int = opt(0, "guard against catastrophic overfitting: ID validation images attacked after each epoch "
                         "(PGD-10 at adv_eps under one noise draw); the last epoch before that accuracy collapses is kept as "
                         "model.pt (0: off, the last epoch is kept)")
    adv_check_drop: float = opt(0.1, "a fall of the per-epoch PGD accuracy (fraction) below its best that counts as "
                                "catastrophic overfitting: the last epoch before it is kept")
    adv_outliers: bool = opt(False, "attack the outliers too, in the same PGD steps on the whole training loss "
                             "(ALOE-style; needs adv_eps > 0 and outliers)")
    limit: int | None = opt(None, "seeded class-stratified subset of the training images")
    val_limit: int = opt(1000, "images of the ID validation split for per-epoch accuracy")
    test_limit: int | None = opt(None, "images of the ID test archive for the final accuracy (default: all)")
    precision: str = opt("fp32", "fp32, bf16 (autocast, CPU or CUDA; fast only where the hardware has bfloat16: "
                         "benchmarks/bench_precision.py) or fp16 (CUDA, with a loss scale)",
                         choices=tuple(p for p in PRECISIONS if p != "auto"))
    seed: int = opt(0, "seed of order, crops, flips, noise and initialisation")
    resume: bool = opt(False, "continue the run in --out from its last finished epoch")
    stop_after: int | None = opt(None, "end this piece of the schedule once that many of its epochs are done "
                                 "(state.pt kept; --resume continues it; the learning rate follows --epochs)")
    device: str = opt("auto", "auto, cpu, cuda, cuda:1, ...")
    progress: bool = opt(True, "progress bars")

    def validate(self) -> None:
        from ross_ood.data import BENCHMARKS
        check_choice("benchmark", self.benchmark, tuple(k for k, b in BENCHMARKS.items() if b.train))
        if self.stop_after is not None:
            check_int("stop_after", self.stop_after)
        check_number("sigma", self.sigma)
        check_int("epochs", self.epochs)
        check_number("lr", self.lr, strict=True)
        check_int("batch_size", self.batch_size)
        check_number("momentum", self.momentum)
        check_number("weight_decay", self.weight_decay)
        check_int("n_noise", self.n_noise)
        check_number("consistency", self.consistency)
        check_number("entropy", self.entropy)
        if self.consistency > 0 and self.n_noise < 2:
            raise ValueError("consistency regularisation compares noisy copies: give n_noise >= 2")
        check_number("oe_weight", self.oe_weight, strict=True)
        try:
            (self.adv_eps_value,) = parse_eps([str(self.adv_eps)])
        except ValueError as e:
            if "beyond the pixel range" in str(e):
                raise ValueError(f"adv_eps must lie in (0, 255] in 1/255 units (0: off): {e}") from None
            raise ValueError(f"adv_eps must be one finite number >= 0 (in 1/255 units, e.g. 2 or 2/255), "
                             f"got {self.adv_eps!r}") from None
        check_int("adv_steps", self.adv_steps)
        if not 0 <= self.adv_eps_value <= 1:
            raise ValueError(f"adv_eps must lie in (0, 255] in 1/255 units (0: off), got {self.adv_eps!r}")
        self.adv_step_value = None
        if str(self.adv_step_size) != "auto":
            try:
                (self.adv_step_value,) = parse_eps([str(self.adv_step_size)])
            except ValueError:
                raise ValueError(f"adv_step_size must be 'auto' or one number > 0 in 1/255 units, got "
                                 f"{self.adv_step_size!r}") from None
            if self.adv_eps_value <= 0:
                raise ValueError("adv_step_size is the step of adversarial training: give adv_eps > 0 too")
            if not 0 < self.adv_step_value <= 2 * self.adv_eps_value + 1e-12:
                raise ValueError(f"adv_step_size {self.adv_step_size} is above 2 x adv_eps ({self.adv_eps}): a larger "
                                 "step of fast adversarial training is known to overfit catastrophically "
                                 "(Wong et al. 2020)")
        check_int("adv_check", self.adv_check, minimum=0)
        check_fraction("adv_check_drop", self.adv_check_drop)
        if self.adv_check and self.adv_eps_value <= 0:
            raise ValueError("adv_check measures PGD accuracy of adversarial training: give adv_eps > 0 too")
        if self.adv_outliers and (self.adv_eps_value <= 0 or self.outliers is None):
            raise ValueError("adv_outliers attacks the outliers of adversarial training: give adv_eps > 0 and "
                             "outliers too")
        if self.outliers is not None:
            from ross_ood.engine.train import NAMED_OUTLIERS, SYNTHETIC_OUTLIERS
            if (self.outliers not in SYNTHETIC_OUTLIERS and self.outliers not in NAMED_OUTLIERS
                    and not Path(self.outliers).exists()):
                named = ", ".join([*SYNTHETIC_OUTLIERS, *NAMED_OUTLIERS])
                raise ValueError(f"outliers {self.outliers!r} not found: give {named}, or a folder or ZIP archive "
                                 "of images")
        if self.limit is not None:
            check_int("limit", self.limit)
        check_int("val_limit", self.val_limit)
        if self.test_limit is not None:
            check_int("test_limit", self.test_limit)
        check_int("seed", self.seed, minimum=0)
        check_device(self.device)
        check_precision(self.precision, None if self.device == "auto" else self.device)
        check_out_dir(self.out)
        if not self.resume and any((Path(self.out) / f).exists() for f in ("state.pt", "model.pt")):
            raise ValueError(f"out {self.out!r} already holds a training run: pass --resume to continue it, "
                             "or choose another folder")


def budget_fields() -> dict:
    """{``ross attack`` setting: the ``AttackBudget`` field it sets}: every budget field has a flag of
    its own name, but for ``restarts`` (``adaptive_restarts``) and the paper's fixed ``transfer_step_size``
    (none)."""
    from dataclasses import fields
    names = {f.name for f in fields(AttackSettings)}
    out = {f.name: f.name for f in fields(AttackBudget) if f.name in names}
    out["restarts"] = "adaptive_restarts"
    missing = sorted({f.name for f in fields(AttackBudget)} - set(out.values()) - {"transfer_step_size"})
    if missing:  # a new budget field without its flag would silently keep its default on the command line
        raise RuntimeError(f"AttackBudget fields without a ross attack setting: {missing}")
    return out


def _setting(v):
    """A budget value as a setting holds it (lists for tuples)."""
    return list(v) if isinstance(v, tuple) else v


COMMANDS = {"eval": EvalSettings, "attack": AttackSettings, "certify": CertifySettings, "sweep": SweepSettings,
            "train": TrainSettings}


def command_defaults() -> dict:
    """{command: its settings' defaults}: what ``runs.combine.combine_runs(defaults=...)`` fills into
    stored configs that predate a setting."""
    return {k: c.defaults() for k, c in COMMANDS.items()}
