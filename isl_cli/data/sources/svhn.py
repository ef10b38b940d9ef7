"""SVHN (cropped digits) from the official `train_32x32.mat` / `test_32x32.mat`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from isl_cli.data.sources.registry import DIGIT_CLASSES
from isl_cli.data.store import Split
from isl_cli.errors import IslError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one official SVHN .mat file.

    The file holds X (32, 32, 3, N) uint8 and y (N, 1) with 1..10, where 10
    means the digit 0.

    Returns:
        images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9.
    """
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, OSError ...
        raise IslError(f"{path}: not a readable SVHN .mat file ({_first_line(exc)})") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise IslError(f"{path}: no X array of shape (32, 32, 3, N) in this .mat file")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise IslError(f"{path}: y does not hold one label for each of the {x.shape[3]} images")
    labels = y.reshape(-1).astype(np.int64)  # (N,)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise IslError(f"{path}: labels outside 1..10")
    labels = np.where(labels == 10, 0, labels)  # (N,) label 10 is the digit 0
    if x.dtype != np.uint8:
        if x.min() < 0 or x.max() > 255:
            raise IslError(f"{path}: X values outside 0..255")
        x = x.astype(np.uint8)
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (N, 3, 32, 32)
    return images, torch.from_numpy(labels)


def read_svhn(train_mat: Path, test_mat: Path) -> tuple[Split, Split]:
    """Both splits of SVHN, classes "0".."9"."""
    out = []
    for split_name, path in (("train", train_mat), ("test", test_mat)):
        images, labels = read_svhn_mat(path)
        out.append(Split(labels=labels, classes=list(DIGIT_CLASSES), images=images, name="svhn", split=split_name))
    return out[0], out[1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
