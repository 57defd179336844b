"""Model wrapper: pixel-space input validation, normalisation, logits and penultimate features.

Every image entering ross-ood is a float tensor in pixel space ``[0, 1]`` of shape
``B x C x H x W``. The wrapper owns the model's mean/std normalisation, so data never
carries it, and exposes the penultimate features ``h`` and the last linear layer
``(W, b)`` that some scores (fDBD) need.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["ModelWrapper", "Outputs", "wrap", "check_images", "model_fingerprint"]


@dataclass
class Outputs:
    """One forward pass: logits ``(B, K)`` and penultimate features ``(B, D)`` (or None)."""

    logits: torch.Tensor
    features: torch.Tensor | None = None


def check_images(x: torch.Tensor, channels: int | None = None, name: str = "x", slack: float = 0.0,
                 size: int | None = None) -> None:
    """Raise ValueError naming the problem when ``x`` is not a valid image batch: a
    floating-point tensor (B, C, H, W) of finite pixels in [0, 1], whatever the noise space
    (images are always pixel-space; normalisation happens inside the model). ``slack``
    widens the range to [-slack, 1 + slack] (attack iterates in normalised units are not
    clipped to [0, 1]); 0-255 images stay refused."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have rank 4 (B, C, H, W); got rank {x.dim()} with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [0, 1]; got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels but the model expects {channels} "
                         f"(shape {tuple(x.shape)})")
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"{name} has images of {x.shape[-2]} x {x.shape[-1]} pixels but the model takes {size} x {size} "
                         "(resize them first: nothing is resized silently)")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    with torch.no_grad():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(torch.isinf(x).sum())
            raise ValueError(f"{name} contains non-finite pixels: {n_nan} NaN and {n_inf} Inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -slack or hi > 1.0 + slack:
            raise ValueError(f"{name} has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}); "
                             "ross-ood expects pixel-space images in [0, 1] and normalises them itself")


def _logits(out) -> torch.Tensor:
    """The network's output, refused by name unless it is a logits tensor (B, K)."""
    if not isinstance(out, torch.Tensor):
        hint = ("; name the logits with ross_ood.wrap(net, mean, std, output=KEY), KEY one of "
                + ", ".join(repr(k) for k in out) if isinstance(out, dict) else
                "; name the logits with ross_ood.wrap(net, mean, std, output=INDEX), e.g. output=0"
                if isinstance(out, (tuple, list)) else "")
        raise TypeError(f"the network's forward returned a {type(out).__name__}, not a logits tensor (B, K){hint}")
    if out.dim() != 2:
        raise ValueError(f"the network returned a tensor of shape {tuple(out.shape)}; ross_ood.wrap needs logits "
                         "of shape (B, K)")
    if out.shape[1] < 2:
        raise ValueError(f"the network returned {out.shape[1]} output column: OOD scores read class logits (B, K) "
                         "with K >= 2 classes (MSP would be 1.0 and fDBD 0.0 for every input); for a binary "
                         "classifier with one logit z, return torch.cat([-z, z], 1)")
    return out


class ModelWrapper(nn.Module):
    """Wraps a classifier ``net`` that expects normalised input.

    ``forward(x)`` takes pixel-space images in ``[0, 1]`` and returns logits.
    ``outputs(x)`` returns logits and penultimate features (the input of the last linear
    layer, captured by a forward pre-hook). The last linear layer is found automatically
    as the ``nn.Linear`` whose output *is* the network's output, or named with ``linear``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 linear: str | None = None, input_size: int | None = None, output: str | int | None = None):
        super().__init__()
        dtypes = sorted({str(p.dtype) for p in net.parameters() if p.is_floating_point()})
        if len(dtypes) > 1 or (dtypes and dtypes[0] not in ("torch.float32", "torch.float64")):
            raise ValueError(f"the network's parameters are {', '.join(dtypes)}; ross-ood runs networks in float32 "
                             "(or float64): cast with net.float(); for bf16 / fp16 arithmetic use "
                             "ross_ood.precision.network_precision on the wrapped model")
        # the wrapper follows the network's dtype: inputs and normalisation are cast to it
        dtype = torch.float64 if dtypes == ["torch.float64"] else torch.float32
        mean_t = torch.as_tensor(mean, dtype=dtype).flatten()
        std_t = torch.as_tensor(std, dtype=dtype).flatten()
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} entries but std has {std_t.numel()}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        if not bool(torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
            raise ValueError(f"mean and std must be finite, got mean {mean_t.tolist()}, std {std_t.tolist()}")
        if bool((mean_t < 0).any() or (mean_t > 1).any()):
            raise ValueError(f"mean is in pixel units of [0, 1] images (e.g. mean 0.4914, std 0.2470); got "
                             f"mean {mean_t.tolist()}, std {std_t.tolist()}: divide 0-255 statistics by 255")
        first_conv = next((m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first_conv is not None and first_conv.in_channels != mean_t.numel():
            raise ValueError(f"mean and std have {mean_t.numel()} entries but the network's first convolution "
                             f"takes {first_conv.in_channels} input channels: give one mean and std per channel")
        self.net = net
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))
        self.channels = int(mean_t.numel())
        self.input_size = input_size
        if output is not None and (isinstance(output, bool) or not isinstance(output, (str, int))):
            raise TypeError(f"output names the logits in the network's output: a dict key (str) or a tuple index "
                            f"(int), got {output!r}")
        self.output = output
        self._linear_name = linear
        self._linear: nn.Linear | None = None
        if linear is not None:
            modules = dict(net.named_modules())
            if linear not in modules:
                raise ValueError(f"no module named {linear!r} in the network; linear layers: "
                                 f"{[n for n, m in modules.items() if isinstance(m, nn.Linear)]}")
            if not isinstance(modules[linear], nn.Linear):
                raise ValueError(f"module {linear!r} is a {type(modules[linear]).__name__}, not nn.Linear")
            self._linear = modules[linear]

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    #: on the CPU, feed the network channels-last input: oneDNN's convolutions then run about
    #: 1.6x faster forward and 1.15x forward+backward on the CIFAR ResNets (measured by
    #: ``benchmarks/bench_cpu.py``); logits differ from the contiguous layout by float rounding
    #: (~1e-6). The network's own weights are left as they are (they are the caller's).
    channels_last: bool = True
    #: the network's arithmetic: "fp32", or "bf16" / "fp16" autocast (set through
    #: ``precision.network_precision``); the logits and features come back as float32, so every
    #: score (softmax, energy, ...) is computed in float32 from them
    precision: str = "fp32"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x)
        if self.channels_last and z.dim() == 4 and z.device.type == "cpu":
            z = z.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return _logits(self._select(self.net(z)))
        from ross_ood.precision import autocast
        with autocast(self.precision, z.device):
            return _logits(self._select(self.net(z))).float()

    def _select(self, out):
        """The logits of the network's raw output: itself, or ``out[self.output]`` of a dict or tuple."""
        if self.output is None:
            return out
        if isinstance(out, dict):
            if self.output not in out:
                raise ValueError(f"output {self.output!r}: the network returned a dict with keys "
                                 f"{', '.join(repr(k) for k in out)}")
            return out[self.output]
        if isinstance(out, (tuple, list)):
            if not isinstance(self.output, int) or not -len(out) <= self.output < len(out):
                raise ValueError(f"output {self.output!r}: the network returned a {type(out).__name__} of {len(out)}; "
                                 f"give an index in [0, {len(out)})")
            return out[self.output]
        raise ValueError(f"output {self.output!r} selects from a dict or tuple, but the network returned a "
                         f"{type(out).__name__}")

    def check(self, x: torch.Tensor, name: str = "x") -> None:
        check_images(x, self.channels, name=name, size=self.input_size)

    def prepare(self, x: torch.Tensor, name: str = "x", slack: float = 0.0) -> torch.Tensor:
        """Check ``x`` (``check_images``) and move it to the model's device and floating-point
        type (float64 input is cast; gradients flow through the cast)."""
        check_images(x, self.channels, name=name, slack=slack, size=self.input_size)
        return x.to(self.device, self.mean.dtype)

    # ----------------------------------------------------------- linear layer
    def _find_linear(self, x: torch.Tensor) -> nn.Linear:
        found: list[tuple[str, nn.Linear, torch.Tensor]] = []
        hooks = []
        for name, mod in self.net.named_modules():
            if isinstance(mod, nn.Linear):
                hooks.append(mod.register_forward_hook(
                    lambda m, i, o, name=name: found.append((name, m, o))))
        try:
            with torch.no_grad():
                out = _logits(self._select(self.net(self.normalize(x[:1]))))
        finally:
            for h in hooks:
                h.remove()
        hits = [(n, m) for n, m, o in found if o is out]
        if len(hits) != 1:
            names = [n for n, _, _ in found]
            raise ValueError(
                "cannot tell which linear layer produces the logits "
                f"(linear layers run: {names or 'none'}; their output is not returned unchanged). "
                "Name it with linear='<module name>'.")
        self._linear_name = hits[0][0]
        return hits[0][1]

    def linear_layer(self, x: torch.Tensor | None = None) -> nn.Linear:
        """The last linear layer (weights ``(K, D)``); ``x`` is a sample input for auto-detection."""
        if self._linear is None:
            if x is None:
                size = self.input_size or 32
                x = torch.zeros(1, self.channels, size, size, device=self.device)
            self._linear = self._find_linear(x)
        return self._linear

    @property
    def linear_name(self) -> str | None:
        return self._linear_name

    # -------------------------------------------------------- logits+features
    def outputs(self, x: torch.Tensor, features: bool = True) -> Outputs:
        """Logits and (optionally) penultimate features for pixel-space ``x``."""
        if not features:
            return Outputs(self(x), None)
        lin = self.linear_layer(x)
        captured: list[torch.Tensor] = []
        hook = lin.register_forward_pre_hook(lambda m, inp: captured.append(inp[0]))
        try:
            logits = self(x)
        finally:
            hook.remove()
        if not captured:
            raise RuntimeError(f"the linear layer {self._linear_name!r} did not run in the forward pass")
        feats = captured[-1]
        return Outputs(logits, feats.flatten(1).float())


def wrap(net: nn.Module, mean: Sequence[float], std: Sequence[float], *, linear: str | None = None,
         input_size: int | None = None, output: str | int | None = None) -> ModelWrapper:
    """Wrap ``net`` (expecting normalised input) so that it takes pixel-space images in [0, 1].

    Parameters
    ----------
    net : torch.nn.Module
        A classifier returning logits for normalised input.
    mean, std : sequence of float
        Per-channel normalisation the network was trained with; the wrapper computes
        ``(x - mean) / std`` itself, so data stays in [0, 1] everywhere. ``std`` also sets the
        units of ``sigma`` and ``eps`` in ``normalized`` space (sigma * std_c per channel).
    linear : str, optional
        Name of the last linear layer (its input are the penultimate features fDBD needs);
        by default the ``nn.Linear`` whose output is the network's output.
    input_size : int, optional
        Side length of the (square) input images: images of another size are refused by name.
        Without it, the first images a call sees set the size for that call (and 32 is used to
        find the linear layer).
    output : str or int, optional
        Where the logits are in the network's output when its forward returns a dict
        (``output="logits"``) or a tuple (``output=0``); by default the output is the logits.

    Returns
    -------
    ModelWrapper
        In eval mode, its buffers on ``net``'s device.
    """
    if isinstance(net, ModelWrapper):
        raise TypeError("net is already a ModelWrapper")
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}: wrap a function in an nn.Module "
                        "whose forward calls it (its parameters are needed for the device and the last linear layer)")
    meta = next((t for t in [*net.parameters(), *net.buffers()] if t.device.type == "meta"), None)
    if meta is not None:
        raise ValueError("the network's weights are on the meta device (shapes without data, e.g. built under "
                         "torch.device('meta') or an empty-weights context): load its weights first "
                         "(net.load_state_dict(state, assign=True) or net.to_empty(device='cpu') and a load), then wrap")
    w = ModelWrapper(net, mean, std, linear=linear, input_size=input_size, output=output)
    try:
        dev = next(net.parameters()).device
        w = w.to(dev)
    except StopIteration:
        pass
    return w.eval()


def model_fingerprint(model: ModelWrapper) -> str:
    """What identifies a model's numbers: the zoo's name and checkpoint hash when it has one,
    else a hash of its state dict (parameters, buffers, normalisation)."""
    fp = getattr(model, "fingerprint", None)
    if fp:
        return fp
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
