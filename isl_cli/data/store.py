"""Stored data sets: a train and a test split as `dataset` artifacts.

Layout under the data root: `<root>/<name>/train.safetensors` and
`<root>/<name>/test.safetensors`. A split is held either as tensors
(`images` uint8 (N, 3, H, W) plus `labels` int64 (N,), label -1 = unknown) or,
for ImageNet and large image folders, as a file index (`path_bytes` uint8,
`path_offsets` int64 (N+1,), `labels`), with the image folder in the metadata.
Both splits carry the same fingerprint: a hash of both splits' content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import (
    ArtifactWrite,
    Expect,
    fingerprint_tensors,
    read_artifact,
    read_header,
    strings_to_tensors,
    tensors_to_strings,
    write_artifacts,
)
from isl_cli.errors import IslError

SPLITS = ("train", "test")


@dataclass
class Split:
    """One split in memory.

    Attributes:
        images: (N, 3, H, W) uint8, or None for a file-backed split.
        labels: (N,) int64; -1 where the label is unknown.
        classes: class names, index = label.
        paths: file paths relative to `image_root` (file-backed splits only).
        image_root: folder that `paths` are relative to.
        name: data set name (e.g. "shapes").
        fingerprint: the data set's fingerprint (set by `load_split`).
        split: "train" or "test".
        info: free-form facts about the source (URL, checksum, resize, skipped files).
    """

    labels: torch.Tensor
    classes: list[str]
    images: torch.Tensor | None = None
    paths: list[str] | None = None
    image_root: str | None = None
    name: str = ""
    split: str = "train"
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # filled when loaded from disk

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("a split holds either images or paths, not both or neither")
        n = len(self.images) if self.images is not None else len(self.paths)
        if self.labels.shape != (n,):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {n} images")
        if self.images is not None:
            if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
                raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def file_backed(self) -> bool:
        return self.images is None

    @property
    def image_size(self) -> int | None:
        """Side of the stored square images; None for file-backed splits."""
        if self.images is None:
            return None
        return int(self.images.shape[-1]) if self.images.shape[-1] == self.images.shape[-2] else None

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def dataset_fingerprint(train: Split, test: Split) -> str:
    """A content hash of both splits (images or paths, labels, class names)."""
    parts: list[torch.Tensor] = []
    extra: list[str] = []
    for split in (train, test):
        if split.images is not None:
            parts.append(split.images)
        else:
            blob, offsets = strings_to_tensors(split.paths or [])
            parts.extend([blob, offsets])
            extra.append(split.image_root or "")
        parts.append(split.labels)
        extra.append("\x1f".join(split.classes))
    return fingerprint_tensors(*parts, extra="\x1e".join(extra))


def split_path(dataset_dir: Path, split: str) -> Path:
    return Path(dataset_dir) / f"{split}.safetensors"


def save_dataset(dataset_dir: str | Path, train: Split, test: Split, config: dict[str, Any] | None = None) -> str:
    """Write both splits as one atomic write (neither is renamed into place unless both were written whole, so a
    full disk never leaves one split without the other); returns the fingerprint."""
    dataset_dir = Path(dataset_dir)
    fingerprint = dataset_fingerprint(train, test)
    writes = []
    for split in (test, train):
        tensors: dict[str, torch.Tensor] = {"labels": split.labels.to(torch.int64)}
        if split.images is not None:
            tensors["images"] = split.images
        else:
            tensors["path_bytes"], tensors["path_offsets"] = strings_to_tensors(split.paths or [])
        meta = {
            "name": split.name,
            "split": split.split,
            "classes": split.classes,
            "num_images": len(split),
            "storage": "files" if split.file_backed else "tensor",
            "image_size": split.image_size,
            "image_root": split.image_root,
            "labelled": split.labelled,
            "info": split.info,
        }
        writes.append(ArtifactWrite(split_path(dataset_dir, split.split), "dataset", tensors,
                                    fingerprint=fingerprint, config=config or {}, meta=meta))
    write_artifacts(writes)
    return fingerprint


def load_split(dataset_dir: str | Path, split: str = "train", fingerprint: str | None = None) -> Split:
    """Load one split; raises IslError with a clear line when absent or invalid."""
    dataset_dir = Path(dataset_dir)
    path = split_path(dataset_dir, split)
    if not path.exists():
        if not dataset_dir.exists():
            raise IslError(f"{dataset_dir}: no such data set folder; run `isl fetch-data` first")
        raise IslError(f"{path}: no such file; run `isl fetch-data` for this data set first")
    header = read_header(path, "dataset")
    storage = header.meta.get("storage", "tensor")
    if storage == "files":
        expect = {
            "labels": Expect(torch.int64, ("N",)),
            "path_bytes": Expect(torch.uint8, (None,)),
            "path_offsets": Expect(torch.int64, ("N1",)),
        }
    else:
        expect = {"labels": Expect(torch.int64, ("N",)), "images": Expect(torch.uint8, ("N", 3, None, None))}
    art = read_artifact(path, "dataset", fingerprint=fingerprint, expect=expect)
    meta = art.meta
    classes = list(meta.get("classes", []))
    _check_contents(path, split, art["labels"], classes)
    common = dict(
        labels=art["labels"],
        classes=classes,
        name=str(meta.get("name", dataset_dir.name)),
        split=str(meta.get("split", split)),
        info=dict(meta.get("info", {})),
        fingerprint=art.fingerprint,
    )
    if storage == "files":
        offsets = art["path_offsets"]
        if len(offsets) != len(art["labels"]) + 1:
            raise IslError(f"{path}: path_offsets has {len(offsets)} entries for {len(art['labels'])} labels")
        paths = tensors_to_strings(art["path_bytes"], offsets)
        return Split(paths=paths, image_root=meta.get("image_root"), **common)
    return Split(images=art["images"], **common)


def _check_contents(path: Path, split: str, labels: torch.Tensor, classes: list[str]) -> None:
    """A training split with images, and every label -1 (unknown) or an index into the class list."""
    if split == "train" and len(labels) == 0:
        raise IslError(f"{path}: holds no images; nothing can be trained or compared with it "
                       "(re-create the data set from a source with images)")
    if len(labels) and (int(labels.min()) < -1 or int(labels.max()) >= len(classes)):
        bad = int(labels.min()) if int(labels.min()) < -1 else int(labels.max())
        known = f"0..{len(classes) - 1}" if classes else "none: the class list is empty"
        raise IslError(f"{path}: label {bad} is outside the class list (labels {known}; -1 = unknown)")


def check_dataset_folder(dataset_dir: str | Path, option: str = "--data") -> None:
    """Refuse a path that is not a prepared data set folder, with one line saying what it is instead."""
    path = Path(dataset_dir)
    where = f"{option} {path}"
    if not os.path.lexists(path):
        raise IslError(f"{where}: no such folder; prepare the data set with `isl fetch-data`")
    try:
        path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise IslError(f"{where}: is a symbolic link that leads nowhere (dangling, or a loop)") from None
    if not path.is_dir():
        raise IslError(f"{where}: is not a folder (a data set is a folder holding train.safetensors and "
                       "test.safetensors, written by `isl fetch-data`)")
    missing = [f"{name}.safetensors" for name in SPLITS if not split_path(path, name).is_file()]
    if missing:
        raise IslError(f"{where}: is not a data set folder (no {' or '.join(missing)}); prepare one with "
                       "`isl fetch-data`")
    for name in SPLITS:
        read_header(split_path(path, name), "dataset")


def train_size(dataset_dir: str | Path) -> int | None:
    """Images in a data set's training split, from its header (None when the split is not there yet)."""
    path = split_path(Path(dataset_dir), "train")
    if not path.is_file():
        return None
    labels = read_header(path, "dataset").tensors.get("labels")
    return None if labels is None or len(labels.shape) != 1 else labels.shape[0]


def dataset_header(dataset_dir: str | Path, split: str = "train"):
    """The header of one split (fingerprint, classes, size) without loading images."""
    path = split_path(Path(dataset_dir), split)
    if not path.exists():
        raise IslError(f"{path}: no such file; run `isl fetch-data` for this data set first")
    return read_header(path, "dataset")
