"""Small data files in the exact layouts of the official releases, for the fetch-data tests.

Each builder writes a file (or tree) and returns what the conversion must
produce: images (N, 3, H, W) uint8, labels (N,) int64 and class names.
The CIFAR python batches are written the way Python 2 wrote them (protocol 2,
every str a byte string), like the real archives.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = [f"fine{i:02d}" for i in range(100)]
CIFAR100_COARSE = [f"coarse{i:02d}" for i in range(20)]


@dataclass
class Expected:
    """What a converted data set must hold."""

    train_images: np.ndarray  # (N, 3, H, W) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------ python-2 style pickles


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, so its dispatch table can be extended
    """Writes bytes and ASCII text as Python 2 `str` (SHORT_BINSTRING / BINSTRING), like cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj) -> bytes:
    """Protocol 2 with Python 2 strings and numpy 1's module name, as in the official archives."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _random_images(rng: np.random.Generator, n: int, side: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_python_archive(path: Path, dataset: str = "cifar10", per_batch: int = 3, num_test: int = 4,
                         seed: int = 0) -> Expected:
    """cifar-10-python.tar.gz (data_batch_1..5, test_batch, batches.meta) or cifar-100-python.tar.gz."""
    rng = np.random.default_rng(seed)
    if dataset == "cifar10":
        folder, classes, label_key = "cifar-10-batches-py", CIFAR10_NAMES, b"labels"
        train_members = [f"data_batch_{i}" for i in range(1, 6)]
        sizes = [per_batch] * 5
    else:
        folder, classes, label_key = "cifar-100-python", CIFAR100_FINE, b"fine_labels"
        train_members, sizes = ["train"], [per_batch * 5]
    images, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for member, n in [*zip(train_members, sizes), ("test_batch" if dataset == "cifar10" else "test", num_test)]:
            batch_images = _random_images(rng, n)
            batch_labels = rng.integers(0, len(classes), size=n)
            batch = {
                b"batch_label": f"{member} batch".encode(),
                label_key: [int(v) for v in batch_labels],
                b"data": batch_images.reshape(n, -1),
                b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            }
            if dataset == "cifar100":
                batch[b"coarse_labels"] = [int(v) % 20 for v in batch_labels]
            _add(tar, f"{folder}/{member}", py2_pickle(batch))
            images.append(batch_images)
            labels.append(batch_labels)
        if dataset == "cifar10":
            meta = {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in classes], b"num_vis": 3072}
            _add(tar, f"{folder}/batches.meta", py2_pickle(meta))
            _add(tar, f"{folder}/readme.html", b"<html></html>")
        else:
            meta = {b"fine_label_names": [c.encode() for c in classes],
                    b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE]}
            _add(tar, f"{folder}/meta", py2_pickle(meta))
    return Expected(np.concatenate(images[:-1]), np.concatenate(labels[:-1]).astype(np.int64),
                    images[-1], labels[-1].astype(np.int64), list(classes))


def cifar_binary_archive(path: Path, dataset: str = "cifar10", per_batch: int = 3, num_test: int = 4,
                         seed: int = 1) -> Expected:
    """cifar-10-binary.tar.gz (<1 label byte><3072 pixels> records) or cifar-100-binary.tar.gz (2 label bytes)."""
    rng = np.random.default_rng(seed)
    if dataset == "cifar10":
        folder, classes = "cifar-10-batches-bin", CIFAR10_NAMES
        members = [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", num_test)]
    else:
        folder, classes = "cifar-100-binary", CIFAR100_FINE
        members = [("train.bin", per_batch * 5), ("test.bin", num_test)]
    images, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for member, n in members:
            batch_images = _random_images(rng, n)
            batch_labels = rng.integers(0, len(classes), size=n).astype(np.uint8)
            if dataset == "cifar10":
                head = batch_labels[:, None]
            else:
                head = np.stack([batch_labels % 20, batch_labels], axis=1).astype(np.uint8)  # coarse, fine
            records = np.concatenate([head, batch_images.reshape(n, -1)], axis=1)
            _add(tar, f"{folder}/{member}", records.tobytes())
            images.append(batch_images)
            labels.append(batch_labels.astype(np.int64))
        if dataset == "cifar10":
            _add(tar, f"{folder}/batches.meta.txt", ("\n".join(classes) + "\n\n").encode())
            _add(tar, f"{folder}/readme.html", b"<html></html>")
        else:
            _add(tar, f"{folder}/fine_label_names.txt", ("\n".join(classes) + "\n").encode())
            _add(tar, f"{folder}/coarse_label_names.txt", ("\n".join(CIFAR100_COARSE) + "\n").encode())
    return Expected(np.concatenate(images[:-1]), np.concatenate(labels[:-1]),
                    images[-1], labels[-1], list(classes))


# ------------------------------------------------------------------ SVHN


def svhn_mats(folder: Path, num_train: int = 7, num_test: int = 5, seed: int = 2) -> Expected:
    """train_32x32.mat and test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = digit 0)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train_32x32.mat", num_train), ("test_32x32.mat", num_test)):
        images = _random_images(rng, n)
        digits = np.arange(n) % 10  # every digit, including 0
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / name, {"X": images.transpose(2, 3, 1, 0), "y": y})
        out.append((images, digits.astype(np.int64)))
    return Expected(out[0][0], out[0][1], out[1][0], out[1][1], [str(d) for d in range(10)])


# ------------------------------------------------------------------ MNIST family


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_folder(folder: Path, num_train: int = 6, num_test: int = 4, seed: int = 3, side: int = 28) -> dict:
    """The four official .gz IDX files; returns the grey arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        arrays[prefix] = (images, labels.astype(np.int64))
    return arrays


# ------------------------------------------------------------------ image trees


def write_image(path: Path, pixels: np.ndarray) -> None:
    """pixels (H, W, 3) uint8; the suffix picks the format (PNG is lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_tree(root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (8, 8),
               suffix: str = ".png", seed: int = 4) -> dict[str, np.ndarray]:
    """root/<split>/<class>/<i><suffix>; returns {relative path: pixels (H, W, 3)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, classes in layout.items():
        for cls, count in classes.items():
            for i in range(count):
                rel = f"{split}/{cls}/{i:03d}{suffix}"
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                write_image(root / rel, pixels)
                written[rel] = pixels
    return written


# ------------------------------------------------------------------ running the CLI


def run_isl(*args: str):
    """Invoke `isl` in-process; returns typer's Result (stdout in .stdout, stderr in .stderr)."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from isl_cli.cli.app import app  # noqa: PLC0415

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line `isl: error: ...` holding every fragment."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("isl: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No debug tracebacks, no proxies, no data root from the environment (import this into test modules)."""
    for name in ("ISL_DEBUG", "ISL_DATA", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def official(monkeypatch, key: str, path: Path) -> None:
    """Make `path` count as the official file `key` ("cifar10/cifar-10-python.tar.gz")."""
    from isl_cli.data.sources import registry  # noqa: PLC0415

    monkeypatch.setitem(registry.OFFICIAL_MD5, key, md5(path))
