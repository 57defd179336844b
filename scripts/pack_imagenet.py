#!/usr/bin/env python3
"""Pack the data of the ``imagenet`` benchmark from bare git copies of five public repositories
(brought here with the ``fetch`` tool, or ``git clone --bare``) into ZIP archives with manifests:

| archive (under OUT) | what | source |
|---|---|---|
| ``imagenet/val.zip`` | 1,300 ILSVRC2012 validation images (227 px), labels 0-999 | VeriSilicon/acuity-dataset ``ILSVRC2012_VAL_SET/`` |
| ``imagenet/samples.zip`` | 1,000 ImageNet images, one per class (feature statistics) | EliSchwartz/imagenet-sample-images |
| ``imagenet-ood/textures.zip`` | 1,200 DTD images of 10 texture classes (far-OOD) | pan8915/DeepTexture ``images/`` |
| ``imagenet-ood/flowers.zip`` | 819 Oxford-102 Flowers test images (far-OOD) | udacity/aipnd-project ``refs/pull/13/head`` ``flowers/test`` |

    python scripts/pack_imagenet.py /work/.mirror [OUT]

MIRRORS holds one bare git directory per repository, named ``owner+name`` (the fetch tool's
layout: ``owner+name/repo`` or ``owner+name/repo/.git``), or give each with ``--repo NAME=GITDIR``.
OUT defaults to ``$ROSS_EXTRA_DATA``, else ``~/.cache/ross-ood``, where ``ross`` looks for the
archives (after the data root). Members are ``CLASS/FILE`` with the source bytes untouched (ZIP
stored, fixed timestamps: the same input gives the same bytes); class folders are WordNet ids for
the ImageNet sets (label = position in ``ross_ood/data/imagenet_classes.txt``), texture names for
DTD and flower names for Flowers. Each manifest records the source repository and commit, the
count, the archive's sha256 and, per member, its source path, git blob and the sha256 of its
decoded RGB pixels (``content``), by which an OOD image that is also an ID image is refused here
and when the benchmark opens. Never commit the archives.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ROOT / "src" / "ross_ood" / "data" / "imagenet_classes.txt"
SOURCES = {
    "acuity": ("VeriSilicon/acuity-dataset", "aded2e9f22cd8fe0745aa57356c68cb95457aad9", "MIT (the repository's); "
               "images: ImageNet terms of access (image-net.org)"),
    "samples": ("EliSchwartz/imagenet-sample-images", "bc69043e2862758a1906c6a24a792bb28c6bb2ff",
                "none stated; images: ImageNet terms of access"),
    "dtd": ("pan8915/DeepTexture", "522f46f683af11e93673bff29f81df14f49edfb2",
            "none stated; DTD (Cimpoi et al. 2014) is for research use"),
    "flowers": ("udacity/aipnd-project", "b85a34e5e0adb26ab4c550e4915f858a32c145ca",
                "MIT (the repository's); Oxford-102 (Nilsback & Zisserman 2008)"),
}
REFS = {"flowers": "refs/pull/13/head"}


def _git(repo: str, *args: str, binary: bool = False):
    out = subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


def _gitdir(mirrors: Path, repo: str) -> str:
    base = mirrors / repo.replace("/", "+")
    for cand in (base / "repo" / ".git", base / "repo", base):
        if (cand / "objects").is_dir():
            return str(cand)
    sys.exit(f"no bare git copy of {repo} under {base} (fetch github:{repo}, or give --repo)")


def _blobs(repo: str, commit: str, prefix: str) -> list[tuple[str, str]]:
    """(path, blob) of every file under ``prefix`` at ``commit``, sorted by path."""
    rows = [line.split(None, 3) for line in _git(repo, "ls-tree", "-r", commit, *([prefix] if prefix else [])).splitlines()]
    return sorted((path, blob) for _m, kind, blob, path in rows if kind == "blob")


def _read(repo: str, blob: str, where: str) -> bytes:
    data = _git(repo, "cat-file", "blob", blob, binary=True)
    if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != blob:
        sys.exit(f"git blob {blob} ({where}) does not match its bytes")
    return data


def pixels_sha256(data: bytes) -> str:
    """sha256 of the decoded RGB pixels (and their size): the same picture in two files hashes alike."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return hashlib.sha256(repr(img.size).encode() + img.tobytes()).hexdigest()


def _thumb(data: bytes) -> np.ndarray:
    """A 16 x 16 grey thumbnail of the centre square, standardised: near-duplicates across
    rescaling correlate above 0.97."""
    img = Image.open(io.BytesIO(data)).convert("L")
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    a = np.asarray(img.crop((left, top, left + s, top + s)).resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel()
    return (a - a.mean()) / (a.std() + 1e-9)


def write_archive(dest: Path, items: list[tuple[str, bytes, list]], meta: dict) -> dict:
    """``items``: (member, bytes, manifest row after the member name). Writes DEST and DEST.json."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.part")
    rows = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for member, data, row in items:
            z.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
            rows.append([member, *row])
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, dest)
    manifest = {**meta, "count": len(rows), "archive": dest.name, "sha256": sha, "members": rows}
    dest.with_suffix(".json").write_text(json.dumps(manifest))
    print(f"{dest}: {len(rows)} images, sha256 {sha}", flush=True)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mirrors", type=Path, help="folder of bare git copies named owner+name")
    ap.add_argument("out", nargs="?", type=Path, default=Path(os.environ.get("ROSS_EXTRA_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "ross-ood")))
    a = ap.parse_args(argv)
    wnids = [line.split()[0] for line in CLASSES.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        sys.exit(f"{CLASSES}: {len(wnids)} class ids ({len(set(wnids))} distinct), expected 1000")
    repos = {k: _gitdir(a.mirrors, v[0]) for k, v in SOURCES.items()}
    for k, (name, commit, _) in SOURCES.items():
        got = _git(repos[k], "rev-parse", REFS.get(k, commit)).strip()
        if got != commit:
            sys.exit(f"{name}: {REFS.get(k, 'the pinned commit')} is {got}, expected {commit}")
    row_cols = ["member", "label", "source_path", "source_git_blob_sha1", "content_sha256"]

    def meta(key: str, name: str, what: str, extra: dict) -> dict:
        repo, commit, licence = SOURCES[key]
        return {"name": name, "what": what, "source": f"github {repo} at {commit}", "licence": licence,
                "format": "zip, stored; members CLASS/FILE, source bytes untouched", "members_columns": row_cols,
                **extra}

    # ID: the ILSVRC2012 validation images, labels from dataset.txt (Caffe order = sorted WordNet ids)
    repo, commit = repos["acuity"], SOURCES["acuity"][1]
    words = _git(repo, "show", f"{commit}:ILSVRC2012_VAL_SET/synset_words.txt").split("\n")
    if [w.split()[0] for w in words if w.strip()] != wnids:
        sys.exit("ILSVRC2012_VAL_SET/synset_words.txt does not list the 1,000 classes of imagenet_classes.txt in order")
    blobs = dict(_blobs(repo, commit, "ILSVRC2012_VAL_SET/data"))
    id_items, id_content, id_thumbs = [], {}, {}
    for line in _git(repo, "show", f"{commit}:ILSVRC2012_VAL_SET/dataset.txt").splitlines():
        if not line.strip():
            continue
        rel, label = (s.strip() for s in line.split(","))
        path = "ILSVRC2012_VAL_SET/data/" + rel.removeprefix("./data/")
        data, label = _read(repo, blobs[path], path), int(label)
        content = pixels_sha256(data)
        member = f"{wnids[label]}/{Path(path).name}"
        id_items.append((member, data, [label, path, blobs[path], content]))
        id_content[content] = member
        id_thumbs.setdefault(label, []).append((member, _thumb(data)))
    id_items.sort(key=lambda t: t[0])
    write_archive(a.out / "imagenet" / "val.zip", id_items, meta(
        "acuity", "imagenet-val1300", "1,300 ILSVRC2012 validation images, prescaled to 227 x 227 by the source; "
        "labels from its dataset.txt (0-999, sorted WordNet ids)", {"classes_file": "ross_ood/data/imagenet_classes.txt"}))

    def ood(key: str, prefix: str, dest: str, what: str, classes_of) -> None:
        repo, commit = repos[key], _git(repos[key], "rev-parse", REFS.get(key, SOURCES[key][1])).strip()
        items = []
        for path, blob in _blobs(repo, commit, prefix):
            if not path.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            data = _read(repo, blob, path)
            content = pixels_sha256(data)
            if content in id_content:
                sys.exit(f"{path} of {SOURCES[key][0]} is the ID image {id_content[content]}: refused")
            cls = classes_of(path)
            items.append((f"{cls}/{Path(path).name}", data, [cls, path, blob, content]))
        write_archive(a.out / dest, items, meta(key, Path(dest).stem, what, {}))

    ood("dtd", "images", "imagenet-ood/textures.zip", "Describable Textures (DTD), 10 of its 47 classes x 120 images",
        lambda p: p.split("/")[1])
    names = json.loads(_git(repos["flowers"], "show", f"{SOURCES['flowers'][1]}:cat_to_name.json"))
    ood("flowers", "flowers/test", "imagenet-ood/flowers.zip", "Oxford-102 Flowers, the project's test split "
        "(the benchmark leaves out the 3 classes that are ImageNet classes)",
        lambda p: names[p.split("/")[2]].replace(" ", "_"))

    # feature statistics: one image per class; refused if one is (a rescaled copy of) an ID image
    repo, commit = repos["samples"], SOURCES["samples"][1]
    items, near = [], []
    index = {w: k for k, w in enumerate(wnids)}
    for path, blob in _blobs(repo, commit, ""):
        if not path.endswith(".JPEG"):
            continue
        wnid = path.split("_")[0]
        data = _read(repo, blob, path)
        content = pixels_sha256(data)
        if content in id_content:
            sys.exit(f"{path} of {SOURCES['samples'][0]} is the ID image {id_content[content]}: refused")
        t = _thumb(data)
        for member, u in id_thumbs.get(index[wnid], []):
            if float(t @ u) / t.size > 0.97:
                near.append(f"{path} ~ {member}")
        items.append((f"{wnid}/{path}", data, [index[wnid], path, blob, content]))
    if near:
        sys.exit(f"{len(near)} sample image(s) look like ID images (16 px thumbnails correlate > 0.97): {near[:3]}")
    if len(items) != 1000 or len({m.split('/')[0] for m, _, _ in items}) != 1000:
        sys.exit(f"expected one sample image for each of the 1,000 classes, found {len(items)}")
    write_archive(a.out / "imagenet" / "samples.zip", items, meta(
        "samples", "imagenet-samples1000", "1,000 ImageNet images, one per class (its README: 'one random image per "
        "image-net class'); none is an ID image (exact pixels, and 16 px thumbnails within the class)",
        {"classes_file": "ross_ood/data/imagenet_classes.txt"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
