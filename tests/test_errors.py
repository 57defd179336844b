"""Bad input gets a clear error that names the problem."""
import pytest
import torch

import ross_ood


@pytest.mark.parametrize("bad,match", [
    (float("nan"), "NaN"), (float("inf"), "Inf"), (1.5, r"outside \[0, 1\]"), (-0.1, r"outside \[0, 1\]")])
def test_bad_pixels(cnn, images, bad, match):
    x = images.clone()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=match):
        ross_ood.base_score("msp", cnn, x)
    det = ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(images)
    with pytest.raises(ValueError, match=match):
        det.score(x)


def test_normalized_space_still_checks_the_pixel_range(cnn, images):
    """Images are pixel-space in every noise space: 0-255 images are refused, not scored."""
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        ross_ood.ROSS(cnn, base="msp", n_samples=3, noise_space="normalized").fit(images * 255)
    det = ross_ood.ROSS(cnn, base="msp", n_samples=3, noise_space="normalized").fit(images)
    for bad, match in ((1.2, r"outside \[0, 1\]"), (float("nan"), "NaN")):
        x = images.clone()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match=match):
            det.score(x)


def test_wrong_rank_and_channels(cnn, images):
    with pytest.raises(ValueError, match="rank 4"):
        ross_ood.base_score("msp", cnn, images[0])
    with pytest.raises(ValueError, match="2 channels but the model expects 3"):
        ross_ood.base_score("msp", cnn, images[:, :2])
    with pytest.raises(ValueError, match="rank 4"):
        ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(images[0])


def test_empty_fit_data(cnn):
    with pytest.raises(ValueError, match="empty"):
        ross_ood.ROSS(cnn, base="msp", n_samples=3).fit([])
    with pytest.raises(ValueError, match="empty"):
        ross_ood.ROSS(cnn, base="msp", n_samples=3).fit(torch.empty(0, 3, 8, 8))


def test_bad_parameters(cnn):
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 0"):
        ross_ood.ROSS(cnn, n_samples=0)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -0.1"):
        ross_ood.ROSS(cnn, sigma=-0.1)
    with pytest.raises(ValueError, match="lam must be"):
        ross_ood.ROSS(cnn, lam=-1)
    with pytest.raises(ValueError, match="noise_space must be one of"):
        ross_ood.ROSS(cnn, noise_space="latent")
    with pytest.raises(ValueError, match="unknown score name 'foo'"):
        ross_ood.ROSS(cnn, base="foo")


def test_score_before_fit(cnn, images):
    det = ross_ood.ROSS(cnn, base="msp", n_samples=3)
    with pytest.raises(ross_ood.NotFittedError, match="fit"):
        det.score(images)
    with pytest.raises(ross_ood.NotFittedError, match="fit"):
        det.components(images)
    with pytest.raises(ross_ood.NotFittedError, match="fit"):
        ross_ood.BaseScoreDetector(cnn, base="msp").predict(images)


def test_model_must_be_wrapped(images):
    from torch import nn
    with pytest.raises(TypeError, match="ross_ood.wrap"):
        ross_ood.ROSS(nn.Linear(2, 2))


def test_metrics_reject_bad_scores():
    with pytest.raises(ValueError, match="ood_scores is empty"):
        ross_ood.ood_metrics([1.0, 2.0], [])
    with pytest.raises(ValueError, match="non-finite"):
        ross_ood.ood_metrics([1.0, float("nan")], [0.0])
