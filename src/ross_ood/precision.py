"""Mixed precision: one place that says what ``--precision`` means on which device.

``fp32`` runs as written. ``bf16`` wraps the network's forward in ``torch.autocast`` with
bfloat16; ``fp16`` does the same with float16 on CUDA only (the CPU has no fast float16
convolutions), and training then needs a loss scale (``grad_scaler``). Scores and metrics stay
float32/float64: autocast only changes the precision inside the network; what callers report is
cast back.

``auto`` (the attacks' default) is bf16 only where bf16 is *measured* faster for the network at
hand on this machine, else fp32. bfloat16 is fast only on hardware that has it: on a CPU with
AVX-512 BF16 or AMX (Intel Sapphire Rapids, AMD Zen 4 and later) or a recent GPU, ResNet-20's
forward + backward runs about 1.8x faster than in float32; on the many CPUs without it (AVX2
only: AMD before Zen 4, Intel client chips) bfloat16 is emulated and runs 10-20x *slower*
(``benchmarks/bench_precision.py``). A capability flag does not tell the whole story (oneDNN's
kernels, thread counts and the network's shape decide), so ``measure_speeds`` times it: one
forward + backward of the network on a small batch in each precision (ResNet-20: 0.3 s where bf16
is native, 1.7 s where it is emulated), cached
per machine and network (``$XDG_CACHE_HOME/ross-ood/precision.json``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ross_ood.validate import check_choice

__all__ = ["PRECISIONS", "check_precision", "autocast", "grad_scaler", "network_precision", "PrecisionChoice",
           "resolve_precision", "measure_speeds", "cpu_info", "BF16_MARGIN"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: ``auto`` picks bf16 only when it takes at most this share of float32's time (1.25x faster):
#: where the two are close the choice would follow timing noise, and float32 is the exact one
BF16_MARGIN = 0.8
#: the format of the speed cache (a JSON object: key -> {"fp32": ms, "bf16": ms, ...})
CACHE_FORMAT = "ross-ood-precision-speeds/1"


def check_precision(precision: str, device: str | torch.device | None = None) -> str:
    """``precision`` if it is known and runs on ``device`` (fp16 needs CUDA)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp16" and device is not None and torch.device(device).type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device (the CPU has no fast float16 kernels); "
                         "use 'auto' (bf16 where this CPU runs it faster, else fp32) or 'bf16' on the CPU")
    return precision


def autocast(precision: str, device: str | torch.device):
    """The context that runs a forward pass at ``precision`` (fp32, bf16, fp16) on ``device``."""
    check_precision(precision, device)
    if precision == "auto":
        raise ValueError("precision 'auto' must be resolved first (precision.resolve_precision)")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device):
    """A loss scaler for fp16 training on CUDA (float16 gradients underflow without one);
    None otherwise (bf16 has float32's exponent range and needs none)."""
    if precision == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


@contextlib.contextmanager
def network_precision(model, precision: str):
    """Run ``model``'s network (a ``ModelWrapper``) at ``precision`` inside the block: autocast
    around the network only, its logits and features cast back to float32, so that the scores
    computed from them (a softmax near 1, say) keep float32's resolution. Restored on exit."""
    check_precision(precision, model.device)
    if precision == "auto":
        precision = resolve_precision("auto", model).precision
    old = model.precision
    model.precision = precision
    try:
        yield model
    finally:
        model.precision = old


# ---------------------------------------------------------------- the measured choice
@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU this process runs on: torch's dispatch level, the model name and the bf16 ISA flags
    (Linux /proc/cpuinfo; empty elsewhere). Stored runs record it (bf16 attack steps are
    bit-reproducible on one machine, not across CPUs), and it keys the speed cache. Read once per
    process (callers copy it)."""
    name, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name" and val.strip():
                name = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
                break
    except OSError:
        pass
    return {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": sorted(flags & {"amx_bf16", "avx512_bf16"})}


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``resolve_precision`` chose: ``precision`` runs; ``requested`` was asked for;
    ``ms`` the measured ms per image of forward + backward per precision (empty where nothing
    was measured); ``reason`` one line saying why."""

    precision: str
    requested: str
    ms: dict
    reason: str

    def record(self) -> dict:
        return {"precision": self.precision, "requested": self.requested,
                "ms_per_image": {k: round(v, 4) for k, v in self.ms.items()}, "reason": self.reason}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = cpu_info()
    return f"{info['cpu']} ({info['cpu_capability']}; {','.join(info['cpu_bf16']) or 'no bf16 ISA'})"


def _speed_key(model) -> str:
    """What the measured speeds depend on: the device (the CPU's name, torch's dispatch level and
    its bf16 flags, or the GPU's name), torch's version and thread count, the environment variables
    that cap the instruction set, and the network's class, size and input shape (not its weights)."""
    from ross_ood.store import stable_key
    net = getattr(model, "net", model)
    size = model.input_size or 32
    return stable_key({
        "device": _device_name(model.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")},
        "net": f"{type(net).__module__}.{type(net).__qualname__}",
        "params": sum(p.numel() for p in net.parameters()), "input": [model.channels, size, size],
        "batch": _BATCH})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: images per timed forward + backward: at 16 bf16's lead on ResNet-20 is smaller and noisier (1.3-1.7x
#: on a Zen 4 core) than at the attacks' batches (1.7-2x at 32-128), at 32 it is theirs
_BATCH = 32


def measure_speeds(model, precisions=("fp32", "bf16"), *, batch: int = _BATCH, repeats: int = 3) -> dict:
    """ms per image of one forward + backward of ``model`` (a ``ModelWrapper``: the input gradient
    of the summed log-sum-exp of the logits, what an attack step on Energy does) on ``batch``
    seeded random images of its input shape, the best of ``repeats`` after one warm-up, per
    precision. A precision 10x slower than the first one's best in its warm-up, or 3x in a timing, stops
    there (emulated bf16 costs seconds per pass on a large network)."""
    size = model.input_size or 32
    x = torch.rand(batch, model.channels, size, size, generator=torch.Generator().manual_seed(0)).to(model.device)
    out: dict = {}
    for p in precisions:
        best = float("inf")
        for r in range(repeats + 1):
            xr = x.clone().requires_grad_(True)
            _sync(model.device)
            t0 = time.perf_counter()
            with torch.enable_grad(), network_precision(model, p):
                z = model(xr)
            torch.autograd.grad(z.float().logsumexp(1).sum(), xr)
            _sync(model.device)
            t = time.perf_counter() - t0
            if r:
                best = min(best, t)
            if out and t > (3 if r else 10) * min(out.values()) * batch / 1e3:
                best = min(best, t)  # clearly slower (emulated bf16 is 10-25x): one timing says so, even the warm-up
                break
        out[p] = best / batch * 1e3
    return out


_MEMO: dict = {}


def _cache_path() -> Path:
    env = os.environ.get("ROSS_PRECISION_CACHE")
    if env:
        return Path(env)
    from ross_ood.store import user_cache_dir
    return user_cache_dir("precision.json")


def _cached_speeds(model) -> dict:
    """``measure_speeds`` of fp32 and bf16 for ``model``, from this process's memo or the cache
    file (a missing, unreadable or foreign file is measured afresh and rewritten)."""
    key = _speed_key(model)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_path()
    table: dict = {}
    try:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("format") == CACHE_FORMAT and isinstance(doc.get("speeds"), dict):
            table = doc["speeds"]
    except (OSError, ValueError):
        pass
    got = table.get(key)
    if not (isinstance(got, dict) and all(isinstance(got.get(p), (int, float)) and got[p] > 0
                                          for p in ("fp32", "bf16"))):
        ms = measure_speeds(model)
        got = {**ms, "device": _device_name(model.device), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "measured": time.strftime("%Y-%m-%d")}
        table[key] = got
        try:
            from ross_ood.store import atomic_write_text
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "speeds": table}, indent=1, sort_keys=True))
        except OSError:  # a read-only home: the measurement still holds for this process
            pass
    _MEMO[key] = got
    return got


_WARNED: set = set()


def resolve_precision(precision: str, model) -> PrecisionChoice:
    """The precision that runs ``model``'s network (a ``ModelWrapper``) when ``precision`` is asked.

    ``auto``: bf16 where it is measured to take at most ``BF16_MARGIN`` of float32's time on this
    device (``measure_speeds``, cached), else fp32; ``fp16`` is never chosen (opt-in, CUDA only).
    ``fp32`` and ``fp16`` run as asked. ``bf16`` runs as asked; where it is measured slower than
    float32, one warning line gives both speeds."""
    check_precision(precision, model.device)
    if precision in ("fp32", "fp16"):
        return PrecisionChoice(precision, precision, {}, "as asked")
    ms = {p: float(v) for p, v in _cached_speeds(model).items() if p in ("fp32", "bf16")}
    speeds = f"bf16 {ms['bf16']:.3g} vs fp32 {ms['fp32']:.3g} ms per image, forward + backward"
    where = _device_name(model.device)
    if precision == "bf16":
        if ms["bf16"] > ms["fp32"] and (where, ms["bf16"]) not in _WARNED:
            _WARNED.add((where, ms["bf16"]))
            warnings.warn(f"precision bf16 is {ms['bf16'] / ms['fp32']:.1f}x slower than fp32 on this device "
                          f"({speeds}, {where}); it runs as asked (precision auto picks the faster)", stacklevel=2)
        return PrecisionChoice("bf16", "bf16", ms, "as asked")
    if ms["bf16"] <= BF16_MARGIN * ms["fp32"]:
        return PrecisionChoice("bf16", "auto", ms, f"bf16 measured {ms['fp32'] / ms['bf16']:.2f}x faster ({speeds})")
    return PrecisionChoice("fp32", "auto", ms, f"bf16 not measured at least {1 / BF16_MARGIN:.2f}x faster "
                           f"({speeds})")
