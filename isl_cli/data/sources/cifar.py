"""CIFAR-10 and CIFAR-100 from their official archives (python or binary version).

The archives are read in memory (nothing is extracted). The python version
holds pickled dicts; it is unpickled only after its MD5 matched the official
archive's, and only through `_NumpyOnlyUnpickler`.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isl_cli.data.store import Split
from isl_cli.errors import IslError

IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where an official archive keeps its members and how records look."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes = b""        # python version: label list key in each batch dict
    names_key: bytes = b""        # python version: class-name list key in the meta dict
    label_bytes: int = 0          # binary version: bytes before each image
    label_column: int = 0         # binary version: which of those bytes is the label
    num_classes: int = 10


LAYOUTS: dict[tuple[str, str], CifarLayout] = {
    ("cifar10", "python"): CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        label_key=b"labels", names_key=b"label_names"),
    ("cifar100", "python"): CifarLayout(
        "cifar-100-python", ("train",), ("test",), "meta",
        label_key=b"fine_labels", names_key=b"fine_label_names", num_classes=100),
    ("cifar10", "binary"): CifarLayout(
        "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
        "batches.meta.txt", label_bytes=1, label_column=0),
    ("cifar100", "binary"): CifarLayout(
        "cifar-100-binary", ("train.bin",), ("test.bin",), "fine_label_names.txt",
        label_bytes=2, label_column=1, num_classes=100),
}

ARCHIVE_NAMES: dict[tuple[str, str], str] = {
    ("cifar10", "python"): "cifar-10-python.tar.gz",
    ("cifar10", "binary"): "cifar-10-binary.tar.gz",
    ("cifar100", "python"): "cifar-100-python.tar.gz",
    ("cifar100", "binary"): "cifar-100-binary.tar.gz",
}


def _numpy_reconstruct():
    core = getattr(np, "_core", None)
    multiarray = getattr(core, "multiarray", None) if core is not None else None
    if multiarray is None:  # numpy < 2
        from numpy.core import multiarray  # noqa: PLC0415
    return multiarray._reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The ONLY pickle reading allowed in this project (official CIFAR python archives).

    It runs only on archives whose MD5 matched the official one, and it can
    build nothing but plain containers and numpy arrays: `find_class` admits
    the three globals a pickled ndarray needs and refuses everything else.
    """

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def load_numpy_pickle(data: bytes) -> object:
    """Unpickle bytes that may hold only containers and numpy arrays (latin-1 py2 strings stay bytes)."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def archive_contents(path: Path) -> tuple[str, str] | None:
    """(data set, format) such as ("cifar10", "binary") from the member folder names; no member is read."""
    try:
        with tarfile.open(path, "r:*") as tar:
            tops = {m.name.removeprefix("./").split("/", 1)[0] for m in tar.getmembers()}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise IslError(f"{path}: not a readable tar.gz archive ({exc})") from None
    for key, layout in LAYOUTS.items():
        if layout.folder in tops:
            return key
    return None


def read_cifar_archive(path: Path, dataset: str, fmt: str) -> tuple[Split, Split]:
    """Convert an official CIFAR archive into a train and a test split.

    The caller must have verified the archive's checksum for fmt == "python".

    Args:
        path: the .tar.gz archive.
        dataset: "cifar10" or "cifar100" (CIFAR-100 keeps the 100 fine labels).
        fmt: "python" or "binary".

    Returns:
        (train, test): images (N, 3, 32, 32) uint8, labels (N,) int64.
    """
    layout = LAYOUTS[(dataset, fmt)]
    members = _read_members(path, layout)
    if fmt == "python":
        classes = _python_classes(path, members[layout.meta], layout)
        train = _python_batches(path, [members[m] for m in layout.train], layout)
        test = _python_batches(path, [members[m] for m in layout.test], layout)
    else:
        classes = _text_classes(path, members[layout.meta], layout)
        train = _binary_batches(path, [members[m] for m in layout.train], layout)
        test = _binary_batches(path, [members[m] for m in layout.test], layout)
    splits = []
    for split_name, (images, labels) in (("train", train), ("test", test)):
        splits.append(Split(labels=labels, classes=classes, images=images, name=dataset, split=split_name))
    return splits[0], splits[1]


def _read_members(path: Path, layout: CifarLayout) -> dict[str, bytes]:
    wanted = {f"{layout.folder}/{m}": m for m in (*layout.train, *layout.test, layout.meta)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    found[wanted[name]] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise IslError(f"{path}: corrupted archive ({exc})") from None
    missing = [m for m in wanted.values() if m not in found]
    if missing:
        raise IslError(f"{path}: not an official CIFAR archive: {layout.folder}/{missing[0]} is missing")
    return found


def _python_classes(path: Path, data: bytes, layout: CifarLayout) -> list[str]:
    meta = _unpickle(path, data, layout.meta)
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise IslError(f"{path}: {layout.meta} has no list of {layout.num_classes} class names")
    return [n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in names]


def _python_batches(path: Path, blobs: list[bytes], layout: CifarLayout) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for blob in blobs:
        batch = _unpickle(path, blob, "batch")
        data = batch.get(b"data") if isinstance(batch, dict) else None
        batch_labels = batch.get(layout.label_key) if isinstance(batch, dict) else None
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
            raise IslError(f"{path}: a batch has no uint8 b'data' array of {IMAGE_BYTES} columns")
        if batch_labels is None or len(batch_labels) != len(data):
            raise IslError(f"{path}: a batch has {len(data)} images but not as many {layout.label_key!r}")
        images.append(data)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return _finish(path, np.concatenate(images), np.concatenate(labels), layout)


def _binary_batches(path: Path, blobs: list[bytes], layout: CifarLayout) -> tuple[torch.Tensor, torch.Tensor]:
    record = layout.label_bytes + IMAGE_BYTES
    images, labels = [], []
    for blob in blobs:
        if not blob or len(blob) % record:
            raise IslError(f"{path}: a batch of {len(blob)} bytes is not a whole number of {record}-byte records")
        rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, record)  # (n, record)
        labels.append(rows[:, layout.label_column].astype(np.int64))
        images.append(rows[:, layout.label_bytes:])
    return _finish(path, np.concatenate(images), np.concatenate(labels), layout)


def _text_classes(path: Path, data: bytes, layout: CifarLayout) -> list[str]:
    names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(names) != layout.num_classes:
        raise IslError(f"{path}: {layout.meta} lists {len(names)} class names, expected {layout.num_classes}")
    return names


def _finish(path: Path, flat: np.ndarray, labels: np.ndarray, layout: CifarLayout) -> tuple[torch.Tensor, torch.Tensor]:
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise IslError(f"{path}: labels outside 0..{layout.num_classes - 1}")
    images = torch.from_numpy(np.ascontiguousarray(flat).reshape(-1, 3, 32, 32).copy())  # (N, 3, 32, 32)
    return images, torch.from_numpy(labels)  # (N,)


def _unpickle(path: Path, data: bytes, what: str) -> object:
    try:
        return load_numpy_pickle(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise IslError(f"{path}: {what} is not a readable CIFAR pickle ({exc})") from None
