"""The raw-pixel baseline: weighted kNN on the stored pixels, to compare learned features with.

Usage: python benchmarks/raw_pixels_knn.py DATA_DIR [--k 200 --k 20]

Each image becomes its flattened uint8 pixels as floats, L2-normalised (the
same unit-norm similarity the features use); the test split is classified by
the weighted kNN of ISL-METHOD.md section 9 (T = 0.1) over the training split.
Only for data sets stored as tensors (fetch-data's 32x32 sets).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from isl_cli.data.store import load_split
from isl_cli.knn import weighted_knn


def raw_features(split) -> torch.Tensor:
    """(N, 3*H*W) unit-norm pixel vectors."""
    return F.normalize(split.images.float().flatten(1), dim=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--k", type=int, action="append", default=None)
    args = parser.parse_args()
    ks = args.k or [200]
    train = load_split(args.data_dir, "train")
    test = load_split(args.data_dir, "test", fingerprint=train.fingerprint)
    if train.images is None:
        raise SystemExit(f"{args.data_dir}: stored as files; this baseline needs a tensor data set")
    results = weighted_knn(raw_features(test), test.labels, raw_features(train), train.labels, ks, 0.1,
                           num_classes=int(train.labels.max()) + 1)
    for k in sorted(results):
        print(f"{args.data_dir}: raw pixels, weighted kNN k={k}: top-1 {results[k].top1:.1f}%, "
              f"top-5 {results[k].top5:.1f}% ({len(train)} train, {len(test)} test)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
