"""The imagenet benchmark (issue 53) on tiny generated archives: the packer's format, the benchmark
that reads it (resize 256, centre-crop 224, labels in ImageNet's order, the flowers classes that are
ImageNet classes left out), its refusals, the MobileNetV2 of the zoo and a tiny network of the same
kind through ross eval / attack / certify. The real archives are never needed."""
import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ross_ood import cli
from ross_ood.data.benchmarks import IMAGENET_CLASSES, build_benchmark, read_class_list, stats_set
from ross_ood.models import CheckpointError, dequantize_state, load_model
from ross_ood.models.mobilenet_v2 import mobilenet_v2

from .test_first_hour import _one_line_exit_2

ROOT = Path(__file__).resolve().parents[1]
WNIDS = read_class_list(IMAGENET_CLASSES, 1000)
ID_CLASSES = [3, 17, 500, 999]  # labels of the tiny ID set: the folders are their WordNet ids


def _packer():
    spec = importlib.util.spec_from_file_location("pack_imagenet", ROOT / "scripts" / "pack_imagenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _jpeg(seed: int, size=(40, 30)) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pack_tiny(out: Path, n_id: int = 320, share: bool = False) -> None:
    """Tiny archives in the packer's layout: ``n_id`` ID images over ``ID_CLASSES``, 12 textures,
    12 flowers (6 of them of the 3 classes that are ImageNet classes), 8 sample images (a 32-px side, not
    square: the benchmark resizes the shorter side to 256 and crops 224). ``share``: one texture is
    an ID image."""
    pk = _packer()

    def items(rows):
        return [(m, data, [lab, f"src/{m}", "0" * 40, pk.pixels_sha256(data)]) for m, lab, data in rows]
    cols = {"members_columns": ["member", "label", "source_path", "source_git_blob_sha1", "content_sha256"]}
    ids = [(f"{WNIDS[ID_CLASSES[i % 4]]}/val_{i:04d}.JPEG", ID_CLASSES[i % 4], _jpeg(i)) for i in range(n_id)]
    pk.write_archive(out / "imagenet" / "val.zip", items(ids), {"name": "tiny-val", **cols})
    tex = [(f"{c}/{c}_{k}.jpg", c, _jpeg(1000 + 10 * j + k)) for j, c in enumerate(["banded", "bumpy", "cracked"])
           for k in range(4)]
    if share:
        tex[0] = (tex[0][0], tex[0][1], ids[5][2])
    pk.write_archive(out / "imagenet-ood" / "textures.zip", items(tex), {"name": "tiny-textures", **cols})
    flo = [(f"{c}/image_{k}.jpg", c, _jpeg(2000 + 10 * j + k))
           for j, c in enumerate(["artichoke", "barbeton_daisy", "oxeye_daisy", "rose", "lotus", "iris"]) for k in range(2)]
    pk.write_archive(out / "imagenet-ood" / "flowers.zip", items(flo), {"name": "tiny-flowers", **cols})
    sam = [(f"{WNIDS[c]}/{WNIDS[c]}_{k}.JPEG", c, _jpeg(3000 + 10 * c + k, (48, 32))) for c in ID_CLASSES
           for k in range(2)]
    pk.write_archive(out / "imagenet" / "samples.zip", items(sam), {"name": "tiny-samples", **cols})


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagenet-extra")
    pack_tiny(out)
    return out


@pytest.fixture
def extra(packed, monkeypatch):
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(packed))
    return packed


TINY_NET = '''
import torch
from ross_ood.models.mobilenet_v2 import mobilenet_v2
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

def make():
    torch.manual_seed(0)
    return mobilenet_v2(num_classes=1000, width_mult=0.25).eval(), IMAGENET_MEAN, IMAGENET_STD, 224
'''


# ---------------------------------------------------------------- the network
def test_dequantize_state_is_q_minus_zero_point_times_scale():
    q = torch.tensor([-2, 0, 3, 127], dtype=torch.int8)
    state = {"w": q, "w.scale": torch.tensor([0.5]), "w.zero_point": torch.tensor([1], dtype=torch.int32),
             "b": torch.tensor([0.25])}
    out = dequantize_state(state)
    assert out["w"].tolist() == [-1.5, -0.5, 1.0, 63.0] and out["b"].tolist() == [0.25] and set(out) == {"w", "b"}
    with pytest.raises(CheckpointError, match="int8 tensor 'w' has no per-tensor w.scale"):
        dequantize_state({"w": q})
    with pytest.raises(CheckpointError, match="'v.scale' has no int8 tensor 'v'"):
        dequantize_state({"v.scale": torch.tensor([1.0]), "v.zero_point": torch.tensor([0])})


def test_the_zoo_mobilenet_v2_holds_the_quantized_weights_exactly():
    """The packaged weights load (sha256-checked), 1,000 classes at 224 px, and every weight is an
    int8 level of its tensor's scale (the dequantized original, not a re-rounding of it)."""
    from safetensors.torch import load_file

    from ross_ood.models import PACKAGED_WEIGHTS, ZOO
    model = load_model("mobilenet-v2-imagenet")
    assert model.num_classes == 1000 and model.input_size == 224
    raw = load_file(str(PACKAGED_WEIGHTS / ZOO["mobilenet-v2-imagenet"].file))
    w = model.net.classifier[1].weight.detach()
    scale, zp = float(raw["classifier.1.weight.scale"]), float(raw["classifier.1.weight.zero_point"])
    levels = w / scale + zp
    assert torch.allclose(levels, levels.round(), atol=1e-3) and float(levels.abs().max()) <= 128
    assert torch.equal(levels.round().to(torch.int8), raw["classifier.1.weight"])
    with torch.no_grad():
        out = model(torch.full((2, 3, 224, 224), 0.5))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_a_checkpoint_of_another_width_is_refused(tmp_path):
    from safetensors.torch import save_file
    save_file(mobilenet_v2(width_mult=0.5).state_dict(), str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatches .*features.0.0.weight"):
        load_model("mobilenet-v2-imagenet", checkpoint=tmp_path / "half.safetensors")


def test_mobilenet_v2_layout_matches_torchvision_names_and_sizes():
    """Names of the quantized file's packed parameters, and the paper's channel table: 3.5 M
    parameters at width 1 (torchvision: 3,504,872)."""
    net = mobilenet_v2()
    sd = net.state_dict()
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
              "features.2.conv.0.0.weight", "features.2.conv.2.weight", "features.18.0.weight", "classifier.1.weight"):
        assert k in sd, k
    conv_channels = sum(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    # torchvision's 3,504,872 count 2 batch-norm parameters per conv channel, the folded net one bias
    assert sum(p.numel() for p in net.parameters()) == 3_504_872 - conv_channels
    assert sd["classifier.1.weight"].shape == (1000, 1280) and sd["features.18.0.weight"].shape == (1280, 320, 1, 1)


# ---------------------------------------------------------------- the benchmark
def test_the_benchmark_reads_the_packed_archives(extra, tmp_path):
    b = build_benchmark("imagenet", tmp_path, 3, 224, num_classes=1000)
    assert {k: len(v) for k, v in b.sets().items()} == {"id_val": 300, "id_test": 20, "textures": 12, "flowers": 6}
    assert b.groups == {"textures": "far", "flowers": "far"}
    assert "FAR-OOD ONLY" in b.notes[0]
    assert any("flowers: 6 of 12 images" in n for n in b.notes)
    x, y = b.id[0]
    assert x.shape == (3, 224, 224) and y in ID_CLASSES
    assert sorted({b.id[i][1] for i in range(len(b.id))}) == ID_CLASSES  # labels = positions in the class list
    # resize the shorter side (30 px) to 256, centre-crop 224: the same as doing it by hand
    raw = Image.open(io.BytesIO(zipfile.ZipFile(extra / "imagenet" / "val.zip").read(b.id.base.members[
        int(b.id.indices[0])]))).convert("RGB")
    w, h = raw.size
    big = raw.resize((round(256 * w / h), 256), Image.BILINEAR)
    left, top = (big.width - 224) // 2, (big.height - 224) // 2
    ref = torch.from_numpy(np.array(big.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1).float() / 255
    assert (x - ref).abs().max() < 1.5 / 255
    s = stats_set("imagenet", tmp_path)
    assert len(s) == 8 and sorted(set(s.labels.tolist())) == ID_CLASSES


def test_a_missing_archive_is_named_with_the_packing_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError) as e:
        build_benchmark("imagenet", tmp_path, 3, 224)
    msg = str(e.value)
    assert "\n" not in msg and "imagenet/val.zip" in msg and "scripts/pack_imagenet.py" in msg


def test_an_archive_that_does_not_match_its_manifest_is_refused(tmp_path, monkeypatch):
    pack_tiny(tmp_path, n_id=8)
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path))
    man = tmp_path / "imagenet-ood" / "flowers.json"
    doc = json.loads(man.read_text())
    doc["sha256"] = hashlib.sha256(b"another file").hexdigest()
    man.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"flowers.zip: sha256 .* does not match its manifest"):
        build_benchmark("imagenet", tmp_path, 3, 224)


def test_an_ood_archive_holding_an_id_image_is_refused(tmp_path, monkeypatch):
    pack_tiny(tmp_path, n_id=8, share=True)
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"textures.zip: its image banded/banded_0.jpg is the ID image .*val_0005"):
        build_benchmark("imagenet", tmp_path, 3, 224)


def test_a_class_list_that_is_not_1000_long_is_refused(tmp_path):
    bad = tmp_path / "classes.txt"
    bad.write_text("\n".join(WNIDS[:999]) + "\n")
    with pytest.raises(ValueError, match="has 999 classes, expected 1000"):
        read_class_list(bad, 1000)
    bad.write_text("\n".join(WNIDS[:999] + [WNIDS[0]]) + "\n")
    with pytest.raises(ValueError, match=f"lists class '{WNIDS[0]}' twice"):
        read_class_list(bad, 1000)


def test_the_packer_refuses_an_ood_image_that_is_an_id_image():
    """The packer's content hash: the decoded pixels, not the bytes (a re-encoding hashes alike)."""
    pk = _packer()
    png = io.BytesIO()
    Image.open(io.BytesIO(_jpeg(7))).save(png, format="PNG")
    assert pk.pixels_sha256(png.getvalue()) == pk.pixels_sha256(_jpeg(7)) != pk.pixels_sha256(_jpeg(8))


# ---------------------------------------------------------------- the command line
def test_a_32px_model_on_imagenet_and_the_reverse_are_refused(extra, tmp_path, capsys):
    common = ["--detectors", "msp", "--limit", "2", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "o")]
    _one_line_exit_2(capsys, ["eval", "--benchmark", "imagenet", "--model", "resnet20-noise012-e52", *common],
                     "images of 32 px", "benchmark 'imagenet'", "224 px")
    _one_line_exit_2(capsys, ["eval", "--benchmark", "cifar10", "--model", "mobilenet-v2-imagenet", *common],
                     "images of 224 px", "benchmark 'cifar10'", "32 px")


def test_missing_archives_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROSS_EXTRA_DATA", str(tmp_path / "nothing"))
    _one_line_exit_2(capsys, ["eval", "--benchmark", "imagenet", "--detectors", "msp", "--no-progress",
                              "--out", str(tmp_path / "o")], "imagenet/val.zip", "scripts/pack_imagenet.py")


@pytest.mark.slow
def test_eval_attack_and_certify_on_imagenet_with_a_tiny_network_of_the_same_kind(extra, tmp_path, capsys):
    """End to end at 224 px and 1,000 classes: clean table with a statistics score (fitted on the
    sample images at the benchmark's resize) and a smoothed one; the paper's transfer attack; a
    certificate."""
    net = tmp_path / "tiny_mnv2.py"
    net.write_text(TINY_NET)
    common = ["--benchmark", "imagenet", "--model", f"{net}:make", "--limit", "4", "--no-progress", "--device", "cpu",
              "--data-root", str(tmp_path), "--stats-cache", str(tmp_path / "stats"), "--bootstrap", "0"]
    out = tmp_path / "eval"
    assert cli.main(["eval", *common, "--detectors", "msp,react,median-energy", "-N", "3", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {d["name"] for d in res["detectors"]} == {"msp", "react", "median-energy"}
    assert res["set_sizes"] == {"id_val": 4, "id_test": 4, "textures": 4, "flowers": 4}
    assert "FAR-OOD ONLY" in " ".join(res["notes"])
    rec = [json.loads(__import__("safetensors").safe_open(str(p), "pt").metadata()["record"])
           for p in (tmp_path / "stats").glob("*.safetensors")]
    assert len(rec) == 1 and rec[0]["pre_size"] == 256 and "samples.zip" in rec[0]["train"]
    att = tmp_path / "attack"
    assert cli.main(["attack", *common, "--detectors", "msp", "--eps", "2", "--target", "transfer",
                     "--objective", "min", "--transfer-steps", "2", "--out", str(att)]) == 0
    assert (att / "results.json").is_file()
    cert = tmp_path / "cert"
    assert cli.main(["certify", *common, "--detectors", "median-energy", "--sigma", "0.25", "-N", "20",
                     "--radii", "0.25", "--out", str(cert)]) == 0
    assert (cert / "results.json").is_file()
