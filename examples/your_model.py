"""Your own network, a robust OOD detector on it, and its robustness report: 1.5-2 minutes on 2 CPU cores.

    python examples/your_model.py            # data from $ROSS_DATA, else ../shared/data

1. trains a small CNN of its own on 5,000 CIFAR-10 training images with Gaussian noise
   augmentation (so that smoothing at sigma 0.12 does not destroy its accuracy);
2. wraps it (its own normalisation; its forward returns a dict, so ``output="logits"`` names the
   logits, with no adapter module), builds median-Energy (median smoothing of the Energy score)
   and calibrates it on held-out CIFAR-10 test images;
3. runs the robustness report: clean and attacked (PGD-Min / -Max / -Both at 2/255 and 8/255,
   the worst case over the transfer, adaptive and gradient-free attacks) near-OOD AUROC against CIFAR-100, and
   the certified AUROC at L2 0.12; prints the table.

The sizes are small so that it runs in minutes (``--images`` per set, the ``quick`` attack
budget): the numbers are a demonstration, with wide intervals. For a real evaluation, use more
images and the ``default`` budget (the one every stored number uses).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ross_ood
from ross_ood.data import ZipImageSet, default_data_root, stratified_subset
from ross_ood.engine.report import BUDGET_PRESETS


def images(archive, count: int, seed: int, skip: int = 0) -> torch.Tensor:
    """``count`` class-stratified images of a ZIP archive (after the first ``skip`` of the same draw)."""
    ds = ZipImageSet(archive).prepare(3, 32)
    idx = stratified_subset(len(ds), skip + count, ds.labels, seed)[skip:]
    return torch.stack([ds[int(i)][0] for i in idx]), torch.tensor([ds[int(i)][1] for i in idx])


class SmallCNN(nn.Module):
    """A user's own network: two conv blocks and a linear head, returning a dict."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        h = self.features(x)
        return {"logits": self.head(h), "embedding": h}


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std, epochs: int, sigma: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            xb = (x[idx] + sigma * torch.randn(x[idx].shape, generator=gen)).clamp(0, 1)
            loss = nn.functional.cross_entropy(net((xb - m) / s)["logits"], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()


def main(argv=None) -> ross_ood.RobustnessReport:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50, help="images per set in the report")
    ap.add_argument("--train-images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget", default="quick", choices=sorted(BUDGET_PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    root, t0 = default_data_root(), time.time()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

    # 1. a network of your own, trained under the noise that smoothing will add
    x_train, y_train = images(root / "cifar10" / "train.zip", a.train_images, a.seed)
    net = SmallCNN()
    train(net, x_train, y_train, mean, std, a.epochs, sigma=0.12, seed=a.seed)

    # 2. wrap it and build the detector, calibrated on held-out ID images (never training images)
    model = ross_ood.wrap(net, mean=mean, std=std, input_size=32, output="logits")  # its forward returns a dict
    x_val, _ = images(root / "cifar10-png" / "test.zip", 200, a.seed)
    x_id, y_id = images(root / "cifar10-png" / "test.zip", a.images, a.seed, skip=200)
    x_ood, _ = images(root / "cifar100" / "test.zip", a.images, a.seed)
    det = ross_ood.MedianSmoothing(model, base="energy", n_samples=25, sigma=0.12, seed=a.seed).fit(x_val)
    with torch.no_grad():
        acc = float((model(x_id).argmax(1) == y_id).float().mean())

    # 3. the whole robustness report in one call
    report = ross_ood.robustness_report(det, x_id, {"cifar100": x_ood}, eps=[2 / 255, 8 / 255], budget=a.budget,
                                        certify_radii=[0.12], certify_n=200, seed=a.seed)
    print(f"accuracy on {len(x_id)} CIFAR-10 test images: {100 * acc:.1f}%; wall time {time.time() - t0:.0f} s\n")
    print(report.table())
    return report


if __name__ == "__main__":
    main()
