"""MNIST and Fashion-MNIST from the official IDX files (gzip-compressed or not).

IDX layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, then each dimension as a big-endian uint32, then the data.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from isl_cli.data.sources.convert import grey_to_rgb
from isl_cli.data.store import Split
from isl_cli.errors import IslError

# (split, kind) -> official file name without ".gz"
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, name: str = "IDX file") -> np.ndarray:
    """Decode raw IDX bytes into an array (a copy in native byte order)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IslError(f"{name}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IslError(f"{name}: not an IDX file (bad dimension count {ndim})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise IslError(f"{name}: holds {len(data) - header} data bytes, its header {list(shape)} says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_file(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when it starts with the gzip magic."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IslError(f"{path}: corrupted or unreadable ({exc})") from None
    return parse_idx(raw, str(path))


def find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """The four IDX files in `folder` (name.gz preferred, plain name accepted)."""
    found: dict[tuple[str, str], Path] = {}
    missing: list[str] = []
    for key, stem in IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}.gz")
    if missing:
        raise IslError(f"{folder}: missing {', '.join(missing)} (the official IDX files)")
    return found


def read_idx_dataset(files: dict[tuple[str, str], Path], name: str, classes: list[str],
                     size: int = 32) -> tuple[Split, Split]:
    """Both splits from the four IDX files; grey images become RGB `size` x `size`."""
    out = []
    for split_name in ("train", "test"):
        images = read_idx_file(files[(split_name, "images")])
        labels = read_idx_file(files[(split_name, "labels")])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IslError(f"{files[(split_name, 'images')]}: expected uint8 images (N, H, W), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise IslError(f"{files[(split_name, 'labels')]}: {len(labels)} labels for {len(images)} images")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise IslError(f"{files[(split_name, 'labels')]}: labels outside 0..{len(classes) - 1}")
        out.append(Split(labels=torch.from_numpy(labels), classes=list(classes),
                         images=grey_to_rgb(images, size), name=name, split=split_name))
    return out[0], out[1]
