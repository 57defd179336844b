"""Model zoo and safe checkpoint loading.

Checkpoints are read with ``torch.load(..., weights_only=True)`` (or safetensors): a pickle
that tries to build arbitrary objects is refused. Known files are verified by sha256.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ross_ood.model import ModelWrapper, wrap
from ross_ood.models.lenet import MnistConvNet
from ross_ood.models.mobilenet_v2 import mobilenet_v2
from ross_ood.models.resnet18 import ResNet18_32x32, ResNet18_224x224
from ross_ood.models.resnet_cifar import resnet20, resnet32, resnet44, resnet56
from ross_ood.models.wide_resnet import wrn_16_4, wrn_28_10

__all__ = ["ZOO", "ARCHS", "ModelSpec", "load_model", "load_checkpoint", "load_state", "sha256_file",
           "CheckpointError", "dequantize_state"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, unsafe or mismatched."""


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20, "resnet32": resnet32, "resnet44": resnet44, "resnet56": resnet56,
    "mnist-cnn": MnistConvNet, "resnet18-32x32": ResNet18_32x32, "resnet18-224x224": ResNet18_224x224,
    "mobilenet-v2": mobilenet_v2, "wrn-16-4": wrn_16_4, "wrn-28-10": wrn_28_10,
}


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    file: str | None  # relative to <data root>/weights, or None (user gives --checkpoint)
    sha256: str | None
    mean: tuple
    std: tuple
    input_size: int
    num_classes: int = 10
    channels: int = 3
    note: str = ""
    extra: dict = field(default_factory=dict)
    packaged: bool = False  # the file ships with ross-ood (ross_ood/weights/), not in the data root

#: weights that ship with the package (small models trained by ``ross train``; see weights/README.md)
PACKAGED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


ZOO: dict[str, ModelSpec] = {
    "resnet20": ModelSpec("resnet20", "resnet20_cifar10jpeg_ft.pt",
                          "751394cead9bb514cc4738ce9e5a4f3a3efb920f7eda12f55f3101c9a901fe36",
                          IMAGENET_MEAN, IMAGENET_STD, 32, note="ResNet-20 fine-tuned on the JPEG CIFAR-10 copy"),
    "resnet20-original": ModelSpec("resnet20", "resnet20-12fca82f.th",
                                   "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
                                   IMAGENET_MEAN, IMAGENET_STD, 32, note="akamaster ResNet-20 (lossless CIFAR-10)"),
    "resnet20-noise012": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012.pt",
                                   "08b11982831634874c442713359364a4b2553e970b6f067b5d2f8db1293e6615",
                                   IMAGENET_MEAN, IMAGENET_STD, 32, note="noise-trained, sigma 0.12 (pixel)"),
    "resnet20-noise025": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise025.pt",
                                   "66a9528185d6f6b0e7b13f1d4b3b5eb47e66b1fd2a183e0893ebc6e07c4ed5dd",
                                   IMAGENET_MEAN, IMAGENET_STD, 32, note="noise-trained, sigma 0.25 (pixel)"),
    "resnet20-noise012-e36": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012_e36.safetensors",
                                       "6fdc7a8fa0f47fa86533da4fe84ede4a555f74d420985e2dead472b824076bc7",
                                       IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                       note="noise-trained 36 epochs, sigma 0.12 (pixel): 83.77% under its noise"),
    "resnet20-noise012-e52": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012_e52.safetensors",
                                       "5618dfccd533848d315dd3b4c61ee900d46eb512922650bac13e240955f5fd12",
                                       IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                       note="noise-trained 36 + 16 epochs, sigma 0.12 (pixel): 84.25% under its noise"),
    "resnet20-noise012-e52-oe": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012_e52_oe.safetensors",
                                          "2c2b91408ddcc348edfdfed08c970aa0d466b8c75cd218f0b8a21a1a45d9bfd6",
                                          IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                          note="noise-trained 36 + 16 epochs with jigsaw outlier exposure, sigma 0.12 "
                                               "(pixel): 84.02% under its noise"),
    "resnet20-noise012-e54-tinoe": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012_e54_tinoe.safetensors",
                                             "9c7d14409f8184d8237dbaa3d4cf7457636b45654ba3eb68793f9fbc0921f801",
                                             IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                             note="resnet20-noise012-e52 + 2 epochs with outlier exposure to the tin-oe "
                                                  "half of Tiny ImageNet, sigma 0.12 (pixel): 83.70% under its noise "
                                                  "on the lossless test set"),
    "resnet20-noise012-e54-adv4-tinoe": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise012_e54_adv4_tinoe.safetensors",
                                                  "c867f0ee660c33f7a5432338ce5992f0124217e936f654e5377fbd5f8935cdfa",
                                                  IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                                  note="resnet20-noise012-e52 + 2 epochs of adversarial training under "
                                                       "the noise (4/255, 2 PGD steps) with tin-oe outlier exposure, the "
                                                       "outliers attacked too, sigma 0.12 (pixel): 77.15% under its noise "
                                                       "on the lossless test set"),
    "resnet20-noise012-e54-fast4-tinoe": ModelSpec(
        "resnet20", "resnet20_cifar10png_noise012_e54_fast4_tinoe.safetensors",
        "9e0090058db620895a9c1cf126d6397342cc69b1f33b0dc27612f478459427a5", IMAGENET_MEAN, IMAGENET_STD, 32,
        packaged=True, note="resnet20-noise012-e52 + 2 epochs on the LOSSLESS training set of fast adversarial training "
                            "under the noise (4/255, one step of 1.25 eps) with attacked tin-oe outliers, sigma 0.12 "
                            "(pixel): 79.87% clean, 79.53% under its noise on the lossless test set"),
    "resnet20-noise012-e54-fast8-tinoe": ModelSpec(
        "resnet20", "resnet20_cifar10png_noise012_e54_fast8_tinoe.safetensors",
        "96392e7cbbd2dd02afeabe07facee1ed95b8947920d7664e1fbe49c322f61c16", IMAGENET_MEAN, IMAGENET_STD, 32,
        packaged=True, note="the same at 8/255 (one step of 1.25 eps): 70.90% clean, 69.90% under its noise on the "
                            "lossless test set"),
    "resnet20-noise012-e82-fast8-tinoe": ModelSpec(
        "resnet20", "resnet20_cifar10png_noise012_e82_fast8_tinoe.safetensors",
        "a26b3891aeb1ba84cb0561871e21742f8f4817d99bedb9d8a344339f500b3c49", IMAGENET_MEAN, IMAGENET_STD, 32,
        packaged=True, note="e52 continued 30 epochs of fast adversarial training at 8/255 (issue 54): 74.98% "
                            "clean, 74.96% under its noise on the lossless test set"),
    "resnet20-noise025-e36": ModelSpec("resnet20", "resnet20_cifar10jpeg_noise025_e36.safetensors",
                                       "de1231fb9ce223241d385ac888d014f5fe3595c99eb424abf5aea369b457daf7",
                                       IMAGENET_MEAN, IMAGENET_STD, 32, packaged=True,
                                       note="noise-trained 36 epochs, sigma 0.25 (pixel): 76.20% under its noise"),
    "resnet20-cifar100": ModelSpec("resnet20", "resnet20_cifar100.safetensors",
                        "5f541a1ec065f4a8b64765a73fdf2272b179a3c961e5be09d799cf7b5928b149",
                        CIFAR100_MEAN, CIFAR100_STD, 32, 100, packaged=True,
                        note="ResNet-20 trained 30 epochs from scratch on CIFAR-100 here: 65.17% on the 10,000 test images"),
    "resnet20-cifar100-noise012": ModelSpec("resnet20", "resnet20_cifar100_noise012.safetensors",
                        "8ee15491e1b7969f2493e56a62d2fffa4fc2fa62a6f4ee5402c7ea215dcff58b",
                        CIFAR100_MEAN, CIFAR100_STD, 32, 100, packaged=True,
                        note="resnet20-cifar100 trained 4 more epochs with Gaussian noise, sigma 0.12 (pixel): 40.28% clean, 53.83% under its noise"),
    "resnet56-cifar100": ModelSpec("resnet56", None, None, CIFAR100_MEAN, CIFAR100_STD, 32, 100,
                                   note="ResNet-56 for CIFAR-100 (train it: configs/train/c100-r56-std.yaml, a GPU)"),
    "resnet56": ModelSpec("resnet56", "resnet56-4bfd9763.th",
                          "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
                          IMAGENET_MEAN, IMAGENET_STD, 32, note="akamaster ResNet-56 (lossless CIFAR-10)"),
    "wrn-16-4": ModelSpec("wrn-16-4", None, None, CIFAR10_MEAN, CIFAR10_STD, 32,
                          note="WRN-16-4 for CIFAR-10, 2.75 M parameters (train it: ross train --scratch, or give --checkpoint)"),
    "wrn-28-10": ModelSpec("wrn-28-10", None, None, CIFAR10_MEAN, CIFAR10_STD, 32,
                           note="WRN-28-10 for CIFAR-10, 36.5 M parameters (a GPU: scripts/gpu_run.sh train with "
                                "RECIPES=c10png-wrn2810-s012-fast8-oe; or give --checkpoint)"),
    "mnist-cnn": ModelSpec("mnist-cnn", "mnist_lenet_hendrycks_baseline.pt",
                           "3184bed452c44c82935b96be23f5bf08d9dffec348b7222c01dc6088ebd46a4c",
                           (0.0,), (1.0,), 28, channels=1, note="MNIST CNN, plain training"),
    "mnist-cnn-oe": ModelSpec("mnist-cnn", "mnist_lenet_hendrycks_oe_tune.pt",
                              "362ccfe3c829610791cc3ed8bbfe98fcc30bd6a9c582ea5fc08a5f8fb8531bb5",
                              (0.0,), (1.0,), 28, channels=1, note="MNIST CNN, Outlier Exposure"),
    "openood-resnet18-cifar10": ModelSpec("resnet18-32x32", None, None, CIFAR10_MEAN, CIFAR10_STD, 32,
                                          note="OpenOOD v1.5 checkpoint (give --checkpoint)"),
    "openood-resnet18-cifar100": ModelSpec("resnet18-32x32", None, None, CIFAR100_MEAN, CIFAR100_STD, 32, 100,
                                           note="OpenOOD v1.5 checkpoint (give --checkpoint)"),
    "mobilenet-v2-imagenet": ModelSpec(
        "mobilenet-v2", "mobilenet_v2_imagenet_int8.safetensors",
        "0043d3ea500b7489cbe4c998cb692b94790e65624e9a78db994db9c23970e5ab", IMAGENET_MEAN, IMAGENET_STD, 224, 1000, packaged=True,
        note="torchvision's quantized MobileNetV2 (ImageNet-1K), rebuilt as a float network with its int8 weights "
             "dequantized (scripts/convert_mobilenet_v2.py); ReLU, batch norm folded"),
    "openood-resnet18-imagenet200": ModelSpec("resnet18-224x224", None, None, IMAGENET_MEAN, IMAGENET_STD, 224,
                                              200, note="OpenOOD v1.5 checkpoint (give --checkpoint)"),
}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _torch_load(path: Path):
    """``torch.load(weights_only=True)`` with errors that say which of three things is wrong:
    not a PyTorch checkpoint at all, a damaged one, or one whose pickle would run code."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: the file is empty")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: it starts with {head!r}, not with a "
                              "torch.save ZIP archive or pickle header")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        code = [ln.strip() for ln in lines if "GLOBAL" in ln] or _code_opcodes(path)
        if code:
            raise CheckpointError(f"refused to load {path}: its pickle would build objects other than tensors "
                                  f"and plain containers, which could run code ({code[0]})") from None
        detail = next((ln.strip() for ln in lines if ln.startswith("Unsupported")), lines[0] if lines else "")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unreadable pickle: {detail})") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or is truncated or corrupt ({first})") from None


#: pickle opcodes that import or call: a checkpoint holding one is refused as unsafe
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}


def _code_opcodes(path: Path) -> list[str]:
    """What a raw pickle file would import or call, read with ``pickletools`` (which parses the
    opcodes and runs nothing): e.g. ``['STACK_GLOBAL os.system']``. Empty for a pickle of plain
    data, and for a file that is not a raw pickle."""
    import pickletools
    found, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name in _CODE_OPCODES:
                    name = arg if op.name == "GLOBAL" else ".".join(strings[-2:]) if op.name == "STACK_GLOBAL" else ""
                    found.append(f"{op.name} {name}".strip())
    except Exception:  # noqa: BLE001 - not a parsable pickle: nothing to report
        pass
    return found


def load_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict safely. Accepts a plain state dict or a dict holding one under
    ``state_dict`` / ``model`` / ``net``; strips a ``module.`` prefix (DataParallel)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise CheckpointError(f"checkpoint {path} has sha256 {got[:16]}..., expected {sha256[:16]}... "
                                  "(corrupt or a different file)")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - optional dependency
            raise CheckpointError("reading .safetensors needs the safetensors package") from None
        try:
            obj = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {e}") from None
    else:
        obj = _torch_load(path)
    if isinstance(obj, dict):
        for k in ("state_dict", "model", "net"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def dequantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights stored as int8 with a per-tensor ``NAME.scale`` and ``NAME.zero_point`` (the format
    ``scripts/convert_mobilenet_v2.py`` writes) made float32: ``(q - zero_point) * scale``, exactly
    the quantized model's weights. Other entries pass unchanged; a scale without its int8 tensor
    (or the reverse) is refused."""
    out, done = {}, set()
    for k, v in state.items():
        if k.endswith((".scale", ".zero_point")):
            continue
        if v.dtype == torch.int8:
            scale, zp = state.get(f"{k}.scale"), state.get(f"{k}.zero_point")
            if scale is None or zp is None or scale.numel() != 1 or zp.numel() != 1:
                raise CheckpointError(f"int8 tensor {k!r} has no per-tensor {k}.scale and {k}.zero_point beside it")
            out[k] = (v.float() - float(zp)) * float(scale)
            done.update((f"{k}.scale", f"{k}.zero_point"))
        else:
            out[k] = v
    orphans = [k for k in state if k.endswith((".scale", ".zero_point")) and k not in done]
    if orphans:
        raise CheckpointError(f"{orphans[0]!r} has no int8 tensor {orphans[0].rsplit('.', 1)[0]!r} to dequantize")
    return out


def load_state(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Load ``state`` into ``net``; a clear error on missing/unexpected keys or shape mismatch.
    BatchNorm's ``num_batches_tracked`` counters may be absent (older checkpoints)."""
    own = net.state_dict()
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in state and not skip(k)]
    unexpected = [k for k in state if k not in own and not skip(k)]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:4]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:4]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    if problems:
        raise CheckpointError(f"{source} does not match the {type(net).__name__} architecture: "
                              + "; ".join(problems))
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net


def load_model(name: str, data_root: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", pretrained: bool = True) -> ModelWrapper:
    """A zoo model by name (weights from ``<data_root>/weights``, sha256-checked), or
    ``tv:<name>`` for a torchvision classifier (needs torchvision and a ``checkpoint``;
    ImageNet normalisation, 224 px). Returns a wrapped model in eval mode on ``device``.
    ``pretrained=False``: the architecture with random weights (training from scratch)."""
    if name.startswith("tv:"):
        return _load_torchvision(name, checkpoint, device)
    if name not in ZOO:
        if name.endswith(".py") or "/" in name or os.sep in name:
            raise ValueError(f"model {name!r} is a file: a network of your own is FILE.py:FACTORY, the function in it "
                             f"that returns (net, mean, std), e.g. --model {name}:make_model")
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)} (or your own: FILE.py:FACTORY, "
                         "MODULE:FACTORY)")
    spec = ZOO[name]
    net = ARCHS[spec.arch](num_classes=spec.num_classes)
    if not pretrained and checkpoint is None:
        model = wrap(net.to(device), spec.mean, spec.std, input_size=spec.input_size)
        model.name, model.fingerprint, model.num_classes = name, f"{name}:random-init", spec.num_classes
        return model
    if checkpoint is not None:
        path, sha = Path(checkpoint), (spec.sha256 if spec.file and Path(checkpoint).name == spec.file else None)
    elif spec.packaged:
        path, sha = PACKAGED_WEIGHTS / spec.file, spec.sha256
    elif spec.file is not None:
        from ross_ood.data import default_data_root  # $ROSS_DATA, as everywhere else
        path, sha = default_data_root(data_root) / "weights" / spec.file, spec.sha256
    else:
        raise ValueError(f"model {name!r} has no bundled weights: pass checkpoint=PATH ({spec.note})")
    load_state(net, dequantize_state(load_checkpoint(path, sha)), source=str(path))
    model = wrap(net.to(device), spec.mean, spec.std, input_size=spec.input_size)
    model.name, model.num_classes = name, spec.num_classes
    model.fingerprint = f"{name}:{(sha or sha256_file(path))[:16]}"
    return model


def _load_torchvision(name: str, checkpoint, device) -> ModelWrapper:
    try:
        import torchvision.models as tvm
    except Exception as e:  # ImportError, or the operator error of a mismatched torch build
        raise ImportError(f"model {name!r} needs torchvision (pip install ross-ood[vision]): {e}") from None
    arch = name[3:]
    if not hasattr(tvm, arch):
        raise ValueError(f"torchvision has no model {arch!r}")
    if checkpoint is None:
        raise ValueError(f"model {name!r} needs checkpoint=PATH (its state dict; nothing is downloaded)")
    net = getattr(tvm, arch)(weights=None)
    load_state(net, load_checkpoint(checkpoint), source=str(checkpoint))
    model = wrap(net.to(device), IMAGENET_MEAN, IMAGENET_STD, input_size=224)
    model.name, model.fingerprint = name, f"{name}:{sha256_file(checkpoint)[:16]}"
    return model
