#!/usr/bin/env python3
"""Convert torchvision's quantized MobileNetV2 (ImageNet-1K, int8 TorchScript, as shipped by the
public repository pytorch/ios-demo-app) into the float network ``ross_ood.models.mobilenet_v2``
and write its weights as safetensors: every convolution's and the classifier's int8 weight with
its per-tensor scale and zero point (dequantized when loaded: the float weights are exactly the
quantized model's), and the float32 biases (batch norm already folded in).

    git --git-dir /work/.mirror/pytorch+ios-demo-app/repo cat-file blob \\
        b8f52b772b98a48f4d3bb14e8eb977724a66836b:PyTorchDemo/PyTorchDemo/ImageClassification/model/mobilenet_quantized.pt \\
        > /tmp/mobilenet_quantized.pt
    python scripts/convert_mobilenet_v2.py /tmp/mobilenet_quantized.pt
    python scripts/convert_mobilenet_v2.py /tmp/mobilenet_quantized.pt --check   # top-1 of both on the ID images

The TorchScript file is opened only here (``torch.jit.load`` runs its code: it is pinned by sha256
before it is opened); users and tests load the safetensors (``load_model("mobilenet-v2-imagenet")``).
``--check`` needs the packed ImageNet archives (``scripts/pack_imagenet.py``) and writes the
agreement to results/imagenet/conversion.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCE = {"repository": "pytorch/ios-demo-app", "commit": "b8f52b772b98a48f4d3bb14e8eb977724a66836b",
          "path": "PyTorchDemo/PyTorchDemo/ImageClassification/model/mobilenet_quantized.pt",
          "sha256": "2778381c5eb7639a2229bc39567cf644226e5aa3d3a1d46dfcee70b373738498", "licence": "BSD-3-Clause",
          "made_by": "trace_model.py beside it: torchvision.models.quantization.mobilenet_v2(pretrained=True, "
                     "quantize=True), traced and optimize_for_mobile'd"}
OUT = ROOT / "src" / "ross_ood" / "weights" / "mobilenet_v2_imagenet_int8.safetensors"
_HOISTED = re.compile(r"_jit_pass_hoist_conv_packed_params\.(.*)\._packed_params\.\d+$")


def _int8(name: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    if w.qscheme() != torch.per_tensor_affine:
        raise SystemExit(f"{name}: quantization scheme {w.qscheme()}, expected per-tensor affine")
    return {name: w.int_repr().contiguous(), f"{name}.scale": torch.tensor([w.q_scale()], dtype=torch.float32),
            f"{name}.zero_point": torch.tensor([w.q_zero_point()], dtype=torch.int32)}


def extract(ts) -> dict[str, torch.Tensor]:
    """The state dict (int8 weights + scales, float32 biases) of the quantized TorchScript module."""
    state: dict[str, torch.Tensor] = {}
    for node in ts.graph.nodes():
        if node.kind() != "prim::GetAttr":
            continue
        m = _HOISTED.match(node.s("name"))
        if m is None:
            continue
        w, b = getattr(ts, node.s("name")).unpack()
        state.update(_int8(f"{m.group(1)}.weight", w))
        state[f"{m.group(1)}.bias"] = b.detach().float().contiguous()
    packed = ts.classifier._modules["1"]._packed_params._c.getattr("_packed_params")
    w, b = torch.ops.quantized.linear_unpack(packed)
    state.update(_int8("classifier.1.weight", w))
    state["classifier.1.bias"] = b.detach().float().contiguous()
    return state


def check(ts, out: Path) -> dict:
    """Top-1 of the quantized original and of the converted float network on the packed ID images
    (id_val + id_test of the imagenet benchmark: all 1,300), and how often their top-1 agree."""
    from ross_ood.data import default_data_root
    from ross_ood.data.benchmarks import build_benchmark
    from ross_ood.models import load_model
    model = load_model("mobilenet-v2-imagenet")
    bench = build_benchmark("imagenet", default_data_root(None), 3, 224, num_classes=1000)
    mean, std = model.mean, model.std
    n = agree = top1_q = top1_f = 0
    t0 = time.time()
    for part in (bench.val, bench.id):
        loader = torch.utils.data.DataLoader(part, batch_size=50, num_workers=1)
        for x, y in loader:
            with torch.no_grad():
                pf = model(x).argmax(1)
                pq = torch.cat([ts((x[i:i + 1] - mean) / std) for i in range(len(x))]).argmax(1)  # traced at batch 1
            n += len(y)
            agree += int((pf == pq).sum())
            top1_f += int((pf == y).sum())
            top1_q += int((pq == y).sum())
    doc = {"images": n, "top1_quantized": top1_q / n, "top1_float": top1_f / n, "top1_agreement": agree / n,
           "data": "the 1,300 ILSVRC2012 validation images of the packed imagenet benchmark (227 px source, "
                   "resize 256, centre-crop 224)", "wall_s": round(time.time() - t0, 1),
           "weights_sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "source": SOURCE}
    dest = ROOT / "results" / "imagenet" / "conversion.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("torchscript", help="mobilenet_quantized.pt, its blob from the pinned commit")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--check", action="store_true", help="top-1 and agreement on the packed ID images")
    a = ap.parse_args(argv)
    sha = hashlib.sha256(Path(a.torchscript).read_bytes()).hexdigest()
    if sha != SOURCE["sha256"]:
        sys.exit(f"{a.torchscript}: sha256 {sha}, expected {SOURCE['sha256']} (the pinned file); not opened")
    torch.backends.quantized.engine = "qnnpack" if "qnnpack" in torch.backends.quantized.supported_engines else \
        torch.backends.quantized.engine
    ts = torch.jit.load(a.torchscript, map_location="cpu").eval()
    state = extract(ts)
    from safetensors.torch import save_file

    from ross_ood.models import dequantize_state, load_state
    from ross_ood.models.mobilenet_v2 import mobilenet_v2
    load_state(mobilenet_v2(), dequantize_state(state), source="the converted state")  # every name and shape
    out = Path(a.out)
    save_file(state, str(out), metadata={"source": json.dumps(SOURCE)})
    print(json.dumps({"file": str(out), "bytes": out.stat().st_size,
                      "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "tensors": len(state)}, indent=1))
    if a.check:
        print(json.dumps(check(ts, out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
