"""A new user's first hour (issue 52): the mistakes that used to run silently, end in a raw error from
deep inside, or name the wrong problem, each answered in one line that names it (API: ValueError,
TypeError or a warning; command line: exit 2, no traceback)."""
import warnings

import pytest
import torch
from torch import nn

import ross_ood
from ross_ood import cli
from ross_ood.validate import ContractError

from .conftest import DATA_ROOT, SmallCNN, need_data


def _one_line_exit_2(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


EVAL = ["eval", "--benchmark", "cifar10-jpeg", "--model", "resnet20", "--detectors", "msp", "--limit", "4",
        "--ood-sets", "tin", "--no-progress", "--device", "cpu", "--data-root", str(DATA_ROOT), "--bootstrap", "0"]


# ---------------------------------------------------------------- silent
@pytest.mark.parametrize("kind", ["base", "median", "ross"])
def test_1_fit_on_one_image_is_refused_and_on_equal_scores_warned(cnn, images, kind):
    make = {"base": lambda: ross_ood.BaseScoreDetector(cnn, base="energy"),
            "median": lambda: ross_ood.MedianSmoothing(cnn, base="energy", n_samples=4, sigma=0.1),
            "ross": lambda: ross_ood.ROSS(cnn, base="energy", n_samples=4, sigma=0.1)}[kind]
    with pytest.raises(ValueError, match="fit needs at least 2 ID validation images, got 1"):
        make().fit(images[:1])
    if kind == "base":  # a plain score of two identical images: two equal values
        with pytest.warns(UserWarning, match="all 2 ID validation scores are equal"):
            make().fit(images[:1].repeat(2, 1, 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make().fit(images)  # varied images: no warning


def test_2_a_replaced_model_makes_the_fit_stale(cnn, images):
    det = ross_ood.MedianSmoothing(cnn, base="energy", n_samples=4, sigma=0.1).fit(images)
    torch.manual_seed(5)
    det.model = ross_ood.wrap(SmallCNN(), [0.5, 0.4, 0.3], [0.25, 0.2, 0.3])
    for call in (det.predict, det.score):
        with pytest.raises(ross_ood.StaleFitError, match="model was replaced since fit"):
            call(images)
    det.fit(images)
    assert det.predict(images).shape == (12,)


def test_3_sigma_in_0_255_units_is_refused(cnn, capsys):
    for make in (ross_ood.MedianSmoothing, ross_ood.ROSS):
        with pytest.raises(ValueError, match=r"sigma 30 is in units of the \[0, 1\] pixel range .* 0.1176"):
            make(cnn, base="energy", sigma=30, noise_space="pixel")
    need_data("cifar10", "test.zip")
    _one_line_exit_2(capsys, [*EVAL, "--sigma", "30", "--out", "/tmp/unused-ross"], "sigma 30 is in units")


def test_4_5_a_fraction_or_zero_given_as_cli_eps(capsys):
    from ross_ood.cli.app import build_parser, resolve_settings
    args = build_parser("attack").parse_args(["attack", "--detectors", "msp", "--eps", "0.03,2", "--out", "/tmp/x"])
    with pytest.warns(UserWarning, match=r"eps 0.03 is read in 1/255 units \(0.03/255 = 0.000118 of the pixel "
                                         r"range\); for 0.03 of the pixel range give 7.65 or 0.03/1"):
        st = resolve_settings(args)
    assert st.eps_values == pytest.approx([0.03 / 255, 2 / 255])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_settings(build_parser("attack").parse_args(["attack", "--detectors", "msp", "--eps", "0.5/1,8",
                                                            "--out", "/tmp/x"]))
    _one_line_exit_2(capsys, ["attack", "--detectors", "msp", "--eps", "0", "--out", "/tmp/x"],
                     "eps '0' is 0: an attack needs a budget > 0")
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        ross_ood.robustness_report(None, torch.zeros(2, 3, 8, 8), {"o": torch.zeros(2, 3, 8, 8)}, eps=0)


# ---------------------------------------------------------------- raw
def test_6_one_image_per_set_is_refused_before_any_work(cnn, images, capsys):
    det = ross_ood.BaseScoreDetector(cnn, base="energy").fit(images)
    with pytest.raises(ValueError, match=r"OOD set 'o' has 1 image: the bootstrap intervals need at least 2"):
        ross_ood.robustness_report(det, images[:4], {"o": images[4:5]}, eps=2 / 255)
    with pytest.raises(ValueError, match=r"the ID set has 1 image"):
        ross_ood.robustness_report(det, images[:1], {"o": images[4:8]}, eps=2 / 255)
    rep = ross_ood.robustness_report(det, images[:1], {"o": images[4:5]}, eps=2 / 255, targets=["transfer"],
                                     budget=ross_ood.AttackBudget(transfer_steps=1), n_resamples=0, progress=False)
    assert 0 <= rep.auroc("clean") <= 1  # without intervals one image is fine
    need_data("cifar10", "test.zip")
    _one_line_exit_2(capsys, [a if a != "4" else "1" for a in EVAL] + ["--bootstrap", "10", "--out", "/tmp/x"],
                     "limit 1 leaves one image per set")


class _Wide(ross_ood.Score):
    name, pass_level = "wide", True

    def from_outputs(self, out, model):
        return out.logits[:, :2]


class _Numpy(ross_ood.Score):
    name = "npscore"

    def __call__(self, model, x):
        return model(x).detach().numpy().max(1)


class _PerBatch(ross_ood.Score):
    name, pass_level = "perbatch", True

    def from_outputs(self, out, model):
        return out.logits.max()


class _Feats(ross_ood.Score):
    name, pass_level = "featnorm", True  # reads the features without needs_features

    def from_outputs(self, out, model):
        return out.features.norm(dim=1)


@pytest.mark.parametrize("score, match", [
    (_Wide(), r"score 'wide' \(_Wide\) returned shape \(\d+, 2\) for \d+ images; a score returns one value per image"),
    (_PerBatch(), r"score 'perbatch' \(_PerBatch\) returned shape \(\) for \d+ images"),
    (_Numpy(), r"score 'npscore' \(_Numpy\) returned a ndarray; a score returns a torch tensor"),
    (_Feats(), r"score 'featnorm' \(_Feats\) read the penultimate features .* set needs_features = True")])
def test_7_8_9_a_score_that_breaks_the_contract_is_named(cnn, images, score, match):
    for det in (ross_ood.BaseScoreDetector(cnn, base=score), ross_ood.MedianSmoothing(cnn, base=score, n_samples=4)):
        with pytest.raises(ContractError, match=match):
            det.fit(images)
    with pytest.raises(ContractError, match=match):
        ross_ood.base_score(score, cnn, images)


def test_7_9_the_same_from_a_plugin_on_the_command_line(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    plugin = tmp_path / "bad_scores.py"
    plugin.write_text("import ross_ood\n\n"
                      "class Wide(ross_ood.Score):\n    name, pass_level = 'widecli', True\n"
                      "    def from_outputs(self, out, model):\n        return out.logits[:, :2]\n\n"
                      "class Feats(ross_ood.Score):\n    name, pass_level = 'featcli', True\n"
                      "    def from_outputs(self, out, model):\n        return out.features.norm(dim=1)\n\n"
                      "ross_ood.register_score('widecli', Wide)\nross_ood.register_score('featcli', Feats)\n")
    base = [a if a != "msp" else "median-widecli" for a in EVAL] + ["--plugin", str(plugin), "-N", "2"]
    _one_line_exit_2(capsys, [*base, "--out", str(tmp_path / "a")], "score 'widecli' (Wide) returned shape")
    base = [a if a != "msp" else "featcli" for a in EVAL] + ["--plugin", str(plugin)]
    _one_line_exit_2(capsys, [*base, "--out", str(tmp_path / "b")], "set needs_features = True on Feats")


def test_10_a_seed_that_is_not_an_integer(cnn, images):
    det = ross_ood.BaseScoreDetector(cnn, base="energy").fit(images)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 'a'"):
        ross_ood.robustness_report(det, images[:4], {"o": images[4:8]}, seed="a")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 1.5"):
        ross_ood.Attack(det, eps=2 / 255, seed=1.5)


def test_11_a_network_on_the_meta_device():
    with torch.device("meta"):
        net = SmallCNN()
    with pytest.raises(ValueError, match="the network's weights are on the meta device .* load its weights first"):
        ross_ood.wrap(net, [0.5] * 3, [0.25] * 3)


_FACTORIES = '''
import torch
from torch import nn
import ross_ood


class Net(nn.Module):
    def __init__(self, out="tensor"):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 10), out

    def forward(self, x):
        z = self.fc(self.conv(x).mean((2, 3)))
        return {"logits": z} if self.out == "dict" else (z, z) if self.out == "tuple" else z


M, S = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
def needs_arg(n): return Net(), M, S
def only_net(): return Net()
def net_and_mean(): return Net(), M
def not_a_module(): return (lambda x: x), M, S
def tuple_net(): return Net("tuple"), M, S
def dict_net(): return Net("dict"), M, S
def dict_net_named(): return ross_ood.wrap(Net("dict"), M, S, output="logits")
def broken(): raise RuntimeError("no GPU here")
'''


@pytest.mark.parametrize("factory, needles", [
    ("needs_arg", ["needs_arg() takes required arguments (n)", "give them defaults"]),
    ("only_net", ["only_net() returned a Net; return (net, mean, std[, input_size])"]),
    ("net_and_mean", ["net_and_mean() returned a tuple of 2; return (net, mean, std"]),
    ("not_a_module", ["net must be a torch.nn.Module, got function"]),
    ("tuple_net", ["on one blank 3x32x32 image", "returned a tuple", "output=INDEX"]),
    ("dict_net", ["on one blank 3x32x32 image", "returned a dict", "output=KEY), KEY one of 'logits'"]),
    ("broken", ["broken() failed: RuntimeError: no GPU here"])])
def test_12_13_model_factories_that_go_wrong_answer_in_one_line(tmp_path, capsys, factory, needles):
    need_data("cifar10", "test.zip")
    (tmp_path / "factories.py").write_text(_FACTORIES)
    argv = [a if a != "resnet20" else f"{tmp_path / 'factories.py'}:{factory}" for a in EVAL]
    _one_line_exit_2(capsys, [*argv, "--out", str(tmp_path / "o")], f"factories.py:{factory}'", *needles)


def test_13_a_dict_network_named_with_output_runs_and_warns_it_is_untrained(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    (tmp_path / "factories.py").write_text(_FACTORIES)
    argv = [a if a != "resnet20" else f"{tmp_path / 'factories.py'}:dict_net_named" for a in EVAL]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert "no checkpoint given, so the network keeps the weights dict_net_named() gave it (untrained" in \
        capsys.readouterr().err


def test_wrap_selects_the_logits_of_a_dict_or_tuple_network(images):
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            z = self.fc(x.mean((2, 3)))
            return {"logits": z, "emb": x.mean((2, 3))}
    torch.manual_seed(0)
    net = Both()
    m = ross_ood.wrap(net, [0.5] * 3, [0.25] * 3, output="logits")
    want = net.fc(((images - 0.5) / 0.25).mean((2, 3)))
    torch.testing.assert_close(m(images), want)
    assert m.outputs(images).features.shape == (12, 3)  # the last linear layer is still found
    with pytest.raises(ValueError, match="output 'z': the network returned a dict with keys 'logits', 'emb'"):
        ross_ood.wrap(net, [0.5] * 3, [0.25] * 3, output="z")(images)
    with pytest.raises(TypeError, match="output=KEY\\), KEY one of 'logits', 'emb'"):
        ross_ood.wrap(net, [0.5] * 3, [0.25] * 3)(images)
    with pytest.raises(TypeError, match="a dict key \\(str\\) or a tuple index \\(int\\), got 1.5"):
        ross_ood.wrap(net, [0.5] * 3, [0.25] * 3, output=1.5)


# ---------------------------------------------------------------- misleading
def test_14_loading_onto_an_unwrapped_network_says_wrap_it(cnn, images, tmp_path):
    det = ross_ood.BaseScoreDetector(cnn, base="energy").fit(images)
    det.save(tmp_path / "e.json")
    with pytest.raises(TypeError, match="model must be the wrapped classifier .* got a plain SmallCNN: wrap it"):
        ross_ood.load_detector(tmp_path / "e.json", cnn.net)
    assert ross_ood.load_detector(tmp_path / "e.json", cnn).threshold_ == det.threshold_


def test_15_a_score_with_neither_method_is_refused_by_name(cnn):
    class Empty(ross_ood.Score):
        name = "empty"
    with pytest.raises(ContractError, match="Empty implements neither from_outputs"):
        ross_ood.register_score("empty", Empty)
    with pytest.raises(ContractError, match="Empty implements neither from_outputs"):
        ross_ood.MedianSmoothing(cnn, base=Empty())


def test_16_certify_n_is_named(cnn, images):
    det = ross_ood.MedianSmoothing(cnn, base="energy", n_samples=4, sigma=0.1).fit(images)
    with pytest.raises(ValueError, match="certify_n must be an integer >= 1, got 0"):
        ross_ood.robustness_report(det, images[:4], {"o": images[4:8]}, certify_radii=[0.1], certify_n=0)
    plain = ross_ood.BaseScoreDetector(cnn, base="energy").fit(images)
    with pytest.raises(ValueError, match="energy has no certificate"):  # before the attack, not after it
        ross_ood.robustness_report(plain, images[:4], {"o": images[4:8]}, certify_radii=[0.1])


def test_17_a_model_file_without_factory_and_a_missing_file(tmp_path, capsys):
    need_data("cifar10", "test.zip")
    argv = [a if a != "resnet20" else "mynet.py" for a in EVAL]
    _one_line_exit_2(capsys, [*argv, "--out", str(tmp_path / "o")], "model 'mynet.py' is a file",
                     "FILE.py:FACTORY", "--model mynet.py:make_model")
    argv = [a if a != "resnet20" else "nope.py:make" for a in EVAL]
    line = _one_line_exit_2(capsys, [*argv, "--out", str(tmp_path / "o")], "model 'nope.py:make'",
                            "file nope.py not found")
    assert "plugin" not in line


@pytest.mark.slow
def test_the_no_gradient_warning_comes_once_per_report(cnn, images):
    class NoGrad(ross_ood.Score):
        name, pass_level = "nograd", True

        def from_outputs(self, out, model):
            return out.logits.detach().max(1).values
    det = ross_ood.BaseScoreDetector(cnn, base=NoGrad()).fit(images)
    for _ in range(2):  # each report says it once, however many batches and plans it attacks
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            ross_ood.robustness_report(det, images[:6], {"o": images[6:]}, eps=2 / 255, targets=["transfer", "adaptive"],
                                       budget=ross_ood.AttackBudget(transfer_steps=2, adaptive_steps=2, eotpgd_steps=0,
                                                                    square_queries=0),
                                       batch_size=2, n_resamples=0, progress=False)
        said = [w for w in rec if "has no gradient" in str(w.message)]
        assert len(said) == 1


def test_images_of_two_sizes_in_one_fit_are_refused(cnn, images):
    sizes = [images[:6], torch.nn.functional.interpolate(images[6:], size=16)]
    with pytest.raises(ValueError, match="a batch of 3x16x16 images after batches of 3x8x8: give images of one size"):
        ross_ood.BaseScoreDetector(cnn, base="energy").fit(sizes)
    sized = ross_ood.wrap(cnn.net, [0.5, 0.4, 0.3], [0.25, 0.2, 0.3], input_size=8)
    with pytest.raises(ValueError, match="16"):
        ross_ood.BaseScoreDetector(sized, base="energy").fit(sizes)
