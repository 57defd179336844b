"""ross train: resumable to the same weights, bad input refused, the loss as written."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ross_ood import cli
from ross_ood.cli.jobs import run_train
from ross_ood.cli.settings import TrainSettings
from ross_ood.engine.train import TrainConfig, _loss

from .conftest import DATA_ROOT, need_data


def _st(out, **kw):
    args = dict(data_root=str(DATA_ROOT), out=str(out), limit=48, val_limit=20, test_limit=40, epochs=2, batch_size=16,
                sigma=0.1, progress=False, device="cpu")
    args.update(kw)
    return TrainSettings(**args)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    need_data("cifar10", "train.zip")
    whole = run_train(_st(tmp_path / "a"))
    import ross_ood.cli.jobs.train as job
    real, calls = job.train_epoch, []

    def killed_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)
    monkeypatch.setattr(job, "train_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run_train(_st(tmp_path / "b"))
    assert not (tmp_path / "b" / "model.pt").exists() and (tmp_path / "b" / "state.pt").is_file()
    monkeypatch.setattr(job, "train_epoch", real)
    with pytest.raises(ValueError, match="already holds a training run: pass --resume"):
        _st(tmp_path / "b")
    resumed = run_train(_st(tmp_path / "b", resume=True))
    assert resumed["sha256"] == whole["sha256"]  # bit-identical weights
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the noise is part of training: without it the weights differ
    other = run_train(_st(tmp_path / "c", sigma=0.0))
    assert other["sha256"] != whole["sha256"]
    doc = json.loads((tmp_path / "a" / "model.json").read_text())
    assert doc["command"].startswith("ross train ") and "--sigma 0.1" in doc["command"]


def test_a_schedule_in_pieces_ends_with_the_weights_of_the_whole(tmp_path, capsys):
    need_data("cifar10", "train.zip")
    whole = run_train(_st(tmp_path / "a", epochs=3))
    assert run_train(_st(tmp_path / "b", epochs=3, stop_after=1)) is None
    assert "epochs 1-1 of 3 done" in capsys.readouterr().out
    assert not (tmp_path / "b" / "model.pt").exists() and (tmp_path / "b" / "state.pt").is_file()
    with pytest.raises(ValueError, match="stop_after 1: epochs 1-1 of .* are done already"):
        run_train(_st(tmp_path / "b", epochs=3, stop_after=1, resume=True))
    assert run_train(_st(tmp_path / "b", epochs=3, stop_after=2, resume=True)) is None
    doc = run_train(_st(tmp_path / "b", epochs=3, resume=True))
    assert doc["sha256"] == whole["sha256"]  # the learning rate follows --epochs, not the piece
    assert [(p["first_epoch"], p["last_epoch"]) for p in doc["pieces"]] == [(1, 1), (2, 2), (3, 3)]
    assert doc["wall_s"] >= sum(p["wall_s"] for p in doc["pieces"]) > 0
    with pytest.raises(ValueError, match="stop_after"):
        _st(tmp_path / "c", stop_after=0)


def test_trained_model_loads_through_the_zoo(tmp_path):
    need_data("cifar10", "train.zip")
    run_train(_st(tmp_path, epochs=1))
    from ross_ood.models import load_model
    m = load_model("resnet20", DATA_ROOT, checkpoint=tmp_path / "model.pt")
    base = load_model("resnet20", DATA_ROOT)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(m(x), base(x))  # fine-tuned: other weights than the start
    assert m.fingerprint != base.fingerprint


@pytest.mark.parametrize("argv,match", [
    (["--sigma", "-0.1"], "sigma must be a finite number >= 0"),
    (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--consistency", "1"], "consistency regularisation compares noisy copies: give n_noise >= 2"),
    (["--benchmark", "mnist"], "benchmark must be one of 'cifar10'"),
])
def test_bad_settings_refused(tmp_path, capsys, argv, match):
    assert cli.main(["train", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_or_corrupt_training_set(tmp_path, capsys):
    need_data("weights", "resnet20_cifar10jpeg_ft.pt")
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    (root / "weights").symlink_to(DATA_ROOT / "weights")
    args = ["train", "--data-root", str(root), "--no-progress", "--device", "cpu"]
    assert cli.main([*args, "--out", str(tmp_path / "o1")]) == 2
    assert "archive not found" in capsys.readouterr().err
    (root / "cifar10" / "train.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    assert cli.main([*args, "--out", str(tmp_path / "o2")]) == 2
    assert "is not a readable ZIP archive" in capsys.readouterr().err


def test_existing_output_needs_resume(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds a training run"):
        _st(tmp_path)


def test_consistency_loss_by_hand():
    """With sigma = 0 every copy is identical: KL(p_bar || p_i) = 0, and the loss is the
    cross-entropy plus eta times the entropy of the prediction."""
    torch.manual_seed(0)
    import ross_ood
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    model = ross_ood.wrap(net, [0.0] * 3, [1.0] * 3)
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 3, 0])
    cfg = TrainConfig(sigma=0.0, n_noise=3, consistency=2.0, entropy=0.5)
    loss, _ = _loss(model, x, y, cfg, torch.Generator().manual_seed(1))
    logits = model(x)
    p = logits.softmax(1)
    want = F.cross_entropy(logits, y) + 0.5 * (-(p * p.log()).sum(1).mean())
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    cfg2 = TrainConfig(sigma=0.3, n_noise=3, consistency=2.0, entropy=0.0)
    loss2, _ = _loss(model, x, y, cfg2, torch.Generator().manual_seed(1))
    ce_only, _ = _loss(model, x, y, TrainConfig(sigma=0.3, n_noise=3), torch.Generator().manual_seed(1))
    assert loss2.item() > ce_only.item()  # noisy copies disagree: KL > 0 adds to the loss


def test_resume_with_other_settings_refused(tmp_path, capsys):
    need_data("cifar10", "train.zip")
    run_train(_st(tmp_path / "b", epochs=1, test_limit=20))
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert state["recipe"]["lr"] == 0.02 and state["epoch"] == 1
    (tmp_path / "b" / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"started with other settings \(lr 0.02 -> 0.05\)"):
        run_train(_st(tmp_path / "b", epochs=1, lr=0.05, resume=True, test_limit=20))


def test_augment_is_the_per_image_crop_and_flip():
    """The one-gather crop equals cropping each padded image by hand at the drawn offsets."""
    from ross_ood.engine.train import augment
    x = torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    out = augment(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 9, (6,), generator=g), torch.randint(0, 9, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(6):
        want = padded[i, :, dy[i]:dy[i] + 5, dx[i]:dx[i] + 7]
        assert torch.equal(out[i], want.flip(2) if flip[i] else want)


def test_fp16_refused_on_cpu(tmp_path):
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        _st(tmp_path, precision="fp16")


@pytest.mark.slow
def test_bf16_training_runs_and_records_test_accuracy(tmp_path):
    need_data("cifar10", "train.zip")
    doc = run_train(_st(tmp_path, epochs=1, precision="bf16", test_limit=30))
    assert doc["test_images"] == 30 and 0 <= doc["test_acc"] <= 1 and 0 <= doc["test_acc_noisy"] <= 1
    assert "--precision bf16" in doc["command"]
    # the bf16 step moved the weights away from the fp32 run's (autocast changed the arithmetic)
    fp32 = run_train(_st(tmp_path / "f", epochs=1, test_limit=30))
    assert fp32["sha256"] != doc["sha256"]


def test_jigsaw_outliers_shuffle_whole_tiles():
    """Every output image is its input's 16 tiles, each intact, each used once, in a drawn order."""
    from ross_ood.engine.train import jigsaw
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = jigsaw(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and not torch.equal(out, x)
    for i in range(3):
        tiles_in = {x[i, :, r:r + 2, c:c + 2].numpy().tobytes() for r in range(0, 8, 2) for c in range(0, 8, 2)}
        tiles_out = [out[i, :, r:r + 2, c:c + 2].numpy().tobytes() for r in range(0, 8, 2) for c in range(0, 8, 2)]
        assert len(set(tiles_out)) == 16 and set(tiles_out) == tiles_in
    assert torch.equal(out, jigsaw(x, torch.Generator().manual_seed(1)))  # seeded
    with pytest.raises(ValueError, match="divisible by 4"):
        jigsaw(torch.rand(1, 3, 6, 6), torch.Generator())


def test_outlier_exposure_loss_by_hand():
    """sigma = 0: the loss is the ID cross-entropy plus oe_weight times the outliers' cross-entropy
    to the uniform distribution, -(1/K) sum_k log p_k."""
    torch.manual_seed(0)
    import ross_ood
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    model = ross_ood.wrap(net, [0.0] * 3, [1.0] * 3)
    x, y, xo = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 3, 0]), torch.rand(7, 3, 2, 2)
    loss, logits = _loss(model, x, y, TrainConfig(sigma=0.0, oe_weight=0.3), torch.Generator().manual_seed(1), xo)
    lo = model(xo).log_softmax(1)
    want = F.cross_entropy(model(x), y) + 0.3 * (-lo.mean(1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert logits.shape == (5, 4)
    # uniform outputs on the outliers add exactly log K
    flat = ross_ood.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)), [0.0] * 3, [1.0] * 3)
    torch.nn.init.zeros_(flat.net[1].weight)
    torch.nn.init.zeros_(flat.net[1].bias)
    l2, _ = _loss(flat, x, y, TrainConfig(sigma=0.0, oe_weight=1.0), torch.Generator(), xo)
    assert l2.item() == pytest.approx(2 * torch.log(torch.tensor(4.0)).item(), rel=1e-6)


def _png_folder(folder, images):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"{i:03d}.png")
    return folder


def test_outlier_source_refused_when_missing_empty_or_overlapping(tmp_path, capsys):
    need_data("cifar10", "train.zip")
    base = ["train", "--benchmark", "cifar10-jpeg", "--data-root", str(DATA_ROOT), "--no-progress", "--device", "cpu",
            "--limit", "16"]
    assert cli.main([*base, "--out", str(tmp_path / "o1"), "--outliers", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "outliers" in err and "not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert cli.main([*base, "--out", str(tmp_path / "o2"), "--outliers", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no images" in err and len(err.strip().splitlines()) == 1
    # a CIFAR-10 test image, decoded and saved again losslessly, among outlier images
    from ross_ood.data import ZipImageSet
    test = ZipImageSet(DATA_ROOT / "cifar10" / "test.zip").prepare(3, 32)
    cifar = (test[123][0].permute(1, 2, 0) * 255).round().byte().numpy()
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    src = _png_folder(tmp_path / "mixed", [*noise, cifar])
    assert cli.main([*base, "--out", str(tmp_path / "o3"), "--outliers", str(src)]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) are images of the evaluation set id_" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))  # refused before anything is written


@pytest.mark.slow
def test_outlier_exposure_from_files_trains_and_is_recorded(tmp_path):
    need_data("cifar10", "train.zip")
    rng = np.random.default_rng(1)
    src = _png_folder(tmp_path / "noise", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)])
    doc = run_train(_st(tmp_path / "a", epochs=1, outliers=str(src), oe_weight=0.5))
    assert doc["outlier_images"] == 5 and "noise" in doc["outliers"] and f"--outliers {src}" in doc["command"]
    (tmp_path / "a" / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"started with other settings \(oe_weight 0.5 -> 1.0\)"):
        run_train(_st(tmp_path / "a", epochs=1, outliers=str(src), oe_weight=1.0, resume=True))


@pytest.mark.parametrize("source", ["jigsaw", "files"])
def test_outliers_change_the_step_and_are_seeded(source):
    """An epoch with outliers moves the weights elsewhere than one without, and the same epoch
    twice gives the same weights (the outlier order, tiles and crops are drawn from the seed)."""
    import ross_ood
    from ross_ood.engine.train import train_epoch
    x = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 4
    xo = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) if source == "files" else None
    outliers = "jigsaw" if source == "jigsaw" else "some/folder"

    def run(cfg, images=None):
        torch.manual_seed(0)
        model = ross_ood.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)), [0.5] * 3, [0.25] * 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_epoch(model, x, y, opt, cfg, 0, outlier_images=images)
        return model.net[1].weight.detach().clone()

    cfg = TrainConfig(sigma=0.1, epochs=1, batch_size=8, outliers=outliers)
    with_oe = run(cfg, xo)
    assert torch.equal(with_oe, run(cfg, xo))
    assert not torch.allclose(with_oe, run(TrainConfig(sigma=0.1, epochs=1, batch_size=8)))
    if source == "files":
        with pytest.raises(ValueError, match="is a file source: pass its images"):
            run(cfg, None)


def _flat_model():
    import ross_ood
    torch.manual_seed(0)
    return ross_ood.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)), [0.5] * 3, [0.25] * 3)


def test_training_attack_raises_the_noisy_loss_inside_the_ball():
    """The SmoothAdv-style attack: within eps (pixel units) and [0, 1], and the mean cross-entropy
    of the noisy copies (same noise) is higher at the attacked images than at the clean ones."""
    from ross_ood.engine.train import adversarial_under_noise
    model = _flat_model()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 3, 8, 8, generator=g)
    y = torch.arange(16) % 4
    cfg = TrainConfig(sigma=0.1, n_noise=2, adv_eps=8 / 255, adv_steps=3)
    noise = torch.randn(32, 3, 8, 8, generator=g)
    start = (torch.rand(x.shape, generator=g) * 2 - 1) * cfg.adv_eps
    xa = adversarial_under_noise(model, x, y, noise, cfg, start)
    assert (xa - x).abs().max() <= cfg.adv_eps + 1e-7 and xa.min() >= 0 and xa.max() <= 1

    def noisy_ce(v):
        with torch.no_grad():
            return F.cross_entropy(model((v.repeat(2, 1, 1, 1) + 0.1 * noise).clamp(0, 1)), y.repeat(2)).item()
    assert noisy_ce(xa) > noisy_ce(x) + 0.05
    assert not model.training  # the mode the network was in is restored: eval here, train below
    model.train()
    adversarial_under_noise(model, x, y, noise, cfg, start)
    assert model.training


def test_attacked_outliers_move_toward_confidence_and_leave_the_id_attack_unchanged():
    """ALOE-style: the outliers are attacked in the same steps, inside the ball and [0, 1], and their
    cross-entropy to the uniform distribution (same noise) rises; the network is in eval mode, so the
    ID images' attack is exactly the one without outliers (the loss is a sum over the two parts)."""
    from ross_ood.engine.train import adversarial_under_noise
    model = _flat_model()
    g = torch.Generator().manual_seed(3)
    x, xo = torch.rand(8, 3, 8, 8, generator=g), torch.rand(6, 3, 8, 8, generator=g)
    y = torch.arange(8) % 4
    cfg = TrainConfig(sigma=0.1, n_noise=2, adv_eps=8 / 255, adv_steps=3, oe_weight=0.5, adv_outliers=True)
    noise, onoise = torch.randn(16, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    start = (torch.rand(x.shape, generator=g) * 2 - 1) * cfg.adv_eps
    ostart = (torch.rand(xo.shape, generator=g) * 2 - 1) * cfg.adv_eps
    xa, xoa = adversarial_under_noise(model, x, y, noise, cfg, start, xo, onoise, ostart)
    assert torch.allclose(xa, adversarial_under_noise(model, x, y, noise, cfg, start), atol=1e-7)
    assert (xoa - xo).abs().max() <= cfg.adv_eps + 1e-7 and xoa.min() >= 0 and xoa.max() <= 1

    def uniform_ce(v):  # written out here: -(1/K) sum_k log softmax_k, mean over the outliers
        with torch.no_grad():
            logp = torch.log_softmax(model((v + 0.1 * onoise).clamp(0, 1)), 1)
        return float(-(logp.sum(1) / logp.shape[1]).mean())
    assert uniform_ce(xoa) > uniform_ce(xo) + 0.01


def test_attacked_outliers_need_adversarial_training_and_outliers(tmp_path, capsys):
    for flags in (["--adv-outliers"], ["--adv-outliers", "--adv-eps", "2"], ["--adv-outliers", "--outliers", "jigsaw"]):
        assert cli.main(["train", "--out", str(tmp_path / "o"), "--device", "cpu", *flags]) == 2
        assert "adv_outliers attacks the outliers of adversarial training" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    from ross_ood.engine.train import train_epoch
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 4

    def run(**kw):
        model = _flat_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_epoch(model, x, y, opt, TrainConfig(sigma=0.1, epochs=1, batch_size=8, adv_eps=4 / 255,
                                                  outliers="jigsaw", **kw), 0)
        return model.net[1].weight.detach().clone()
    assert torch.equal(run(adv_outliers=True), run(adv_outliers=True))
    assert not torch.allclose(run(adv_outliers=True), run())


def test_adversarial_epoch_is_seeded_and_differs_from_plain():
    from ross_ood.engine.train import train_epoch
    x = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 4

    def run(cfg):
        model = _flat_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_epoch(model, x, y, opt, cfg, 0)
        return model.net[1].weight.detach().clone()
    adv = TrainConfig(sigma=0.1, epochs=1, batch_size=8, adv_eps=4 / 255, adv_steps=2)
    assert torch.equal(run(adv), run(adv))
    assert not torch.allclose(run(adv), run(TrainConfig(sigma=0.1, epochs=1, batch_size=8)))


@pytest.mark.parametrize("flags,message", [
    (["--adv-eps", "-1"], "adv_eps must be one finite number >= 0"),
    (["--adv-eps", "abc"], "adv_eps must be one finite number >= 0"),
    (["--adv-eps", "2", "--adv-steps", "0"], "adv_steps must be an integer >= 1"),
])
def test_training_attack_settings_are_checked(tmp_path, capsys, flags, message):
    assert cli.main(["train", "--out", str(tmp_path / "o"), "--device", "cpu", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_resume_with_other_adversarial_settings_is_refused(tmp_path):
    need_data("cifar10", "train.zip")
    need_data("cifar10-png", "test.zip")
    run_train(_st(tmp_path / "a", epochs=2, limit=32, adv_eps="2", adv_steps=1))
    (tmp_path / "a" / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"started with other settings \(adv_eps '2' -> '4'\)"):
        run_train(_st(tmp_path / "a", epochs=2, limit=32, adv_eps="4", adv_steps=1, resume=True))


@pytest.mark.slow
def test_tin_outliers_must_be_the_held_out_half(tmp_path, capsys):
    """A Tiny ImageNet folder holding a class the benchmark evaluates on is refused by class (even
    re-encoded, where a hash would not match); the held-out half, tin-oe, is accepted."""
    need_data("tinyimagenet32", "val.zip")
    need_data("cifar10-png", "test.zip")
    from PIL import Image

    from ross_ood.data import build_benchmark
    tin = build_benchmark("cifar10", DATA_ROOT, 3, 32).ood["tin"]
    eval_class = tin.classes[int(tin.labels[0])]
    src = tmp_path / "tin"
    (src / eval_class).mkdir(parents=True)
    (src / "n99999999").mkdir()
    rng = np.random.default_rng(0)
    for d in (eval_class, "n99999999"):  # new pixels: only the class gives it away
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / d / "0.png")
    base = ["train", "--data-root", str(DATA_ROOT), "--no-progress", "--device", "cpu", "--limit", "16",
            "--epochs", "1", "--val-limit", "10", "--test-limit", "10", "--batch-size", "8"]
    assert cli.main([*base, "--out", str(tmp_path / "o1"), "--outliers", str(src)]) == 2
    err = capsys.readouterr().err
    assert f"holds 1 class(es) of the evaluation set tin ({eval_class})" in err and "tin-oe" in err
    assert not (tmp_path / "o1").exists()
    doc = run_train(_st(tmp_path / "o2", epochs=1, limit=16, outliers="tin-oe"))
    assert doc["outlier_images"] == 3300 and "tin-oe" in doc["outliers"]


def test_fast_adversarial_training_step_and_guard():
    """Wong et al.'s fast AT: one step of 1.25 eps by default; the guard keeps the last epoch before
    the PGD accuracy falls more than the drop below its best (hand-computed histories)."""
    from ross_ood.cli.jobs.train import kept_epoch
    from ross_ood.engine.train import adv_step
    assert adv_step(TrainConfig(adv_eps=8 / 255, adv_steps=1)) == pytest.approx(1.25 * 8 / 255)
    assert adv_step(TrainConfig(adv_eps=8 / 255, adv_steps=2)) == pytest.approx(2.5 * 8 / 255 / 2)
    assert adv_step(TrainConfig(adv_eps=8 / 255, adv_steps=1, adv_step_size=4 / 255)) == pytest.approx(4 / 255)
    h = lambda *accs: [{"epoch": i + 1, "val_pgd_acc": a} for i, a in enumerate(accs)]  # noqa: E731
    assert kept_epoch(h(0.30, 0.33, 0.32), 0.1) == 3  # noise of a point or two is no collapse
    assert kept_epoch(h(0.30, 0.35, 0.02, 0.40), 0.1) == 2  # collapsed at epoch 3: epoch 2 is kept
    assert kept_epoch(h(0.30, 0.25), 0.01) == 1


@pytest.mark.parametrize("flags,message", [
    (["--adv-eps", "300"], "beyond the pixel range"),
    (["--adv-eps", "8", "--adv-steps", "1", "--adv-step-size", "17"], "above 2 x adv_eps"),
    (["--adv-step-size", "2"], "give adv_eps > 0 too"),
    (["--adv-check", "100"], "give adv_eps > 0 too"),
])
def test_fast_at_settings_are_checked(tmp_path, capsys, flags, message):
    assert cli.main(["train", "--out", str(tmp_path / "o"), "--device", "cpu", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _packed(tmp_path, members: dict, sha=None):
    """A training archive in an extra data root, with its manifest (sha256 of the bytes, or ``sha``)."""
    import hashlib
    import zipfile
    d = tmp_path / "extra" / "cifar10-png"
    d.mkdir(parents=True)
    with zipfile.ZipFile(d / "train.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    real = hashlib.sha256((d / "train.zip").read_bytes()).hexdigest()
    (d / "train.json").write_text(json.dumps({"sha256": sha or real, "count": len(members)}))
    return tmp_path / "extra"


def test_lossless_training_archive_is_checked(tmp_path, monkeypatch):
    """The packed lossless training set is used when present; one whose manifest does not match its
    bytes, or that holds an image of the test set (by content), is refused by name; absent, the note says so."""
    need_data("cifar10-png", "test.zip")
    need_data("cifar10", "train.zip")
    import zipfile

    from ross_ood.data.benchmarks import training_archive
    path, man, note = training_archive("cifar10", DATA_ROOT)
    assert man is None and path.name == "train.zip" and "lossless training set absent" in note
    with zipfile.ZipFile(DATA_ROOT / "cifar10-png" / "test.zip") as z:  # 2 images per class, all from the test set
        names = [n for n in sorted(z.namelist()) if n.endswith(("0001.png", "0002.png"))]
        members = {n: z.read(n) for n in names}
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(_packed(tmp_path / "a", members, sha="0" * 64)))
    with pytest.raises(ValueError, match="does not match its manifest"):
        training_archive("cifar10", DATA_ROOT)
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(_packed(tmp_path / "b", members)))
    path, man, note = training_archive("cifar10", DATA_ROOT)
    assert man["count"] == 20 and note.startswith("lossless training set")
    with pytest.raises(ValueError, match=r"20 image\(s\) are images of the ID test set"):
        run_train(_st(tmp_path / "o", limit=None, epochs=1))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_pieces_script_records_every_piece_and_ends_with_the_model(tmp_path):
    """scripts/train_pieces.sh: a schedule of 2 epochs in pieces of 1 (issue 54's 8/255 recipe, tiny)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    need_data("cifar10", "train.zip")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1", "RUNS": str(tmp_path / "runs"),
           "RESULTS": str(tmp_path / "res"), "ROSS_EXTRA_DATA": str(tmp_path / "none"),
           "TRAIN_ARGS": f"--data-root {DATA_ROOT} --epochs 2 --limit 48 --val-limit 20 --test-limit 40 --batch-size 16"}
    name = "c10png-r20-s012-e52-fast8-oe-e30"

    def piece():
        r = subprocess.run([str(root / "scripts" / "train_pieces.sh"), name, "1"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout
    assert "epochs 1-1 of 2 done" in piece()
    rec = json.loads((tmp_path / "res" / f"{name}.pieces.json").read_text())
    assert rec["epochs_done"] == 1 and len(rec["pieces"]) == 1 and "val_pgd_acc" in rec["history"][0]
    assert not (tmp_path / "res" / f"{name}.model.json").exists()
    assert f"{name}: 2 epochs in 2 piece(s)" in piece()
    doc = json.loads((tmp_path / "res" / f"{name}.model.json").read_text())
    assert [(p["first_epoch"], p["last_epoch"]) for p in doc["pieces"]] == [(1, 1), (2, 2)]
    assert doc["base"] == "resnet20-noise012-e52" and doc["outliers"]
    assert "the schedule is finished" in piece()
    # scripts/compare_train.py pairs two runs on the check images: a run against itself differs by 0
    other = tmp_path / "res" / "other.pieces.json"
    twin = json.loads((tmp_path / "res" / f"{name}.pieces.json").read_text())
    bits = twin["history"][0]["val_pgd_correct"]
    twin["history"][0]["val_pgd_correct"] = "1" * len(bits)
    other.write_text(json.dumps(twin))
    cmp = [sys.executable, str(root / "scripts" / "compare_train.py"), str(tmp_path / "res" / f"{name}.pieces.json")]
    r = subprocess.run([*cmp, str(other)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = 100 * (bits.count("0")) / len(bits)  # B: every check image right
    assert f"| {-d:+.2f} [" in r.stdout.splitlines()[4] and "+0.00 [+0.00, +0.00]" in r.stdout.splitlines()[5]
    twin["settings"]["adv_eps"] = "4"
    other.write_text(json.dumps(twin))
    r = subprocess.run([*cmp, str(other)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "checks differ in adv_eps" in r.stderr


def test_paired_accuracy_difference_by_hand():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "compare_train.py"
    spec = importlib.util.spec_from_file_location("compare_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # per-image differences [1, 0, 0, 0]: a resample's mean is k/4 with k ~ Binomial(4, 1/4), so
    # P(0) = 0.316 > 2.5% and P(>= 0.75) = 0.051 > 2.5% > P(1) = 0.004: the interval is [0, 0.75]
    d, lo, hi = mod.paired_difference(np.array([1.0, 1, 1, 0]), np.array([0.0, 1, 1, 0]))
    assert (d, lo, hi) == (0.25, 0.0, 0.75)
    assert mod.paired_difference(np.ones(5), np.ones(5)) == (0.0, 0.0, 0.0)


def test_compare_train_sums_pieces_and_pairs_epochs_as_asked():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "compare_train.py"
    spec = importlib.util.spec_from_file_location("compare_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # an epoch's wall_s counts from the start of its piece: epoch 3 (5 s into piece 2) ends 21.5 + 5 s in
    doc = {"history": [{"epoch": 1, "wall_s": 10}, {"epoch": 2, "wall_s": 21}, {"epoch": 3, "wall_s": 5},
                       {"epoch": 4, "wall_s": 11}],
           "pieces": [{"first_epoch": 1, "last_epoch": 2, "wall_s": 21.5}, {"first_epoch": 3, "last_epoch": 4, "wall_s": 11}]}
    assert mod.cumulative_seconds(doc) == {1: 10, 2: 21, 3: 26.5, 4: 32.5}
    two = {"history": doc["history"][:2]}
    assert [(a["epoch"], b["epoch"]) for a, b in mod.parse_pairs(None, two, doc)] == [(1, 1), (2, 2)]
    assert [(a["epoch"], b["epoch"]) for a, b in mod.parse_pairs("1:2,2:4", two, doc)] == [(1, 2), (2, 4)]
    with pytest.raises(SystemExit, match="A has no epoch 3"):
        mod.parse_pairs("3:4", two, doc)
    with pytest.raises(SystemExit, match="A_EPOCH:B_EPOCH"):
        mod.parse_pairs("2-4", two, doc)
