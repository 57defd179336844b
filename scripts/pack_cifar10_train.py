#!/usr/bin/env python3
"""Pack the lossless CIFAR-10 training set (``train/<class>/*.png`` of the public repository
cyizhuo/CIFAR-10-dataset) from a bare git copy into ``OUT/cifar10-png/train.zip`` with its
manifest ``train.json``, in the layout of the data root's ``cifar10-png/test.zip``: members
``CLASS/NNNN.png`` (NNNN numbers a class's files in sorted order of their source names), stored,
PNG bytes untouched, fixed timestamps (the same input gives the same bytes), and a manifest with
the archive's sha256 and every member's source file and git blob.

    python scripts/pack_cifar10_train.py /work/.mirror/cyizhuo+CIFAR-10-dataset/repo ~/.cache/ross-ood

OUT defaults to ``$ROSS_EXTRA_DATA``, else ``~/.cache/ross-ood``, where ``ross train --benchmark
cifar10`` looks for it (the shared data root is read-only). Never commit the archive.
Standard library only: it runs before the project is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EXPECTED = 5000  # images per class in the official training split


def _git(repo: str, *args: str, binary: bool = False):
    out = subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", help="bare git directory of cyizhuo/CIFAR-10-dataset")
    ap.add_argument("out", nargs="?", default=os.environ.get("ROSS_EXTRA_DATA")
                    or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "ross-ood"))
    ap.add_argument("--rev", default="HEAD")
    a = ap.parse_args(argv)
    commit = _git(a.repo, "rev-parse", a.rev).strip()
    rows = [line.split(None, 3) for line in _git(a.repo, "ls-tree", "-r", commit, "train").splitlines()]
    by_class: dict[str, list[tuple[str, str]]] = {c: [] for c in CLASSES}
    for _mode, kind, blob, path in rows:
        parts = path.split("/")
        if kind != "blob" or len(parts) != 3 or not parts[2].endswith(".png"):
            continue
        if parts[1] not in by_class:
            sys.exit(f"unexpected class folder {parts[1]!r} in {path}")
        by_class[parts[1]].append((parts[2], blob))
    counts = {c: len(v) for c, v in by_class.items()}
    if any(n != EXPECTED for n in counts.values()):
        sys.exit(f"expected {EXPECTED} images per class, found {counts}")
    dest = Path(a.out) / "cifar10-png"
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "train.zip.part"
    members = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for label, c in enumerate(CLASSES):
            for k, (name, blob) in enumerate(sorted(by_class[c]), 1):
                data = _git(a.repo, "cat-file", "blob", blob, binary=True)
                if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != blob:
                    sys.exit(f"git blob {blob} ({c}/{name}) does not match its bytes")
                member = f"{c}/{k:04d}.png"
                z.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
                members.append([member, label, name, blob])
            print(f"{c}: {counts[c]}", flush=True)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, dest / "train.zip")
    manifest = {"name": "cifar10-png-train",
                "source": f"github cyizhuo/CIFAR-10-dataset at {commit}, path train/<class>/<original CIFAR filename>.png",
                "licence": "none stated in repo (README cites https://www.cs.toronto.edu/~kriz/cifar.html)",
                "count": len(members), "classes": counts, "class_names_label_order": CLASSES,
                "archive": "train.zip", "sha256": sha,
                "format": "zip, stored; members CLASS/NNNN.png (NNNN numbers a class's files in sorted order of "
                          "their source names); PNG bytes untouched (lossless)",
                "members_columns": ["member", "label", "source_filename", "source_git_blob_sha1"],
                "members": members}
    (dest / "train.json").write_text(json.dumps(manifest))
    print(f"{dest / 'train.zip'}: {len(members)} images, sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
