"""Image folders: `DIR/train/<class>/*` + `DIR/test/<class>/*` (or `val/`), or a flat folder.

Labelled layout: the class list is the sorted union of the class folder names
of both splits, so labels agree across splits. Flat layout (images directly in
DIR): labels are unknown (-1, no classes), every image is in the train split
and the test split is empty.

Storage: uint8 tensors when `size` is given (shorter side to `size`, centre
crop) or when all images share one square size; a file index (paths relative
to DIR, images not decoded) for mixed sizes without `size`, or when the
tensors would exceed `TENSOR_LIMIT_BYTES`. Unreadable images are refused:
the error lists the first few and nothing is written.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from isl_cli.data.store import Split
from isl_cli.errors import IslError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})
TENSOR_LIMIT_BYTES = 4 * 1024**3
MAX_LISTED = 5
TEST_FOLDERS = ("test", "val")

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


@dataclass
class FileList:
    """Images of one split, as paths relative to the data root, with labels (-1 = unknown)."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: str, prefix: str, _ancestors: frozenset = frozenset()) -> Iterator[str]:
    """Image files under `folder` (recursively, sorted), as `prefix/relative/path`.

    A symbolic link that cannot be resolved (a loop) or a folder link back to one
    of its own parents is refused with one line naming it.
    """
    try:
        here = os.stat(folder)
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise IslError(f"{folder}: cannot list ({exc.strerror or exc})") from None
    ancestors = _ancestors | {(here.st_dev, here.st_ino)}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
            target = entry.stat() if is_dir else None
        except OSError as exc:
            raise IslError(f"{entry.path}: cannot be read ({exc.strerror or exc}); remove or fix this link") from None
        if is_dir:
            if (target.st_dev, target.st_ino) in ancestors:
                raise IslError(f"{entry.path}: links back to a folder that contains it (a loop); remove this link")
            yield from walk_images(entry.path, f"{prefix}/{entry.name}", ancestors)
        elif is_file and is_image_name(entry.name):
            yield f"{prefix}/{entry.name}"


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class folder names of one split; loose images there are an error."""
    names: list[str] = []
    loose: list[str] = []
    try:
        with os.scandir(split_dir) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    names.append(entry.name)
                elif entry.is_file() and is_image_name(entry.name):
                    loose.append(entry.name)
    except OSError as exc:
        raise IslError(f"{split_dir}: cannot list ({exc.strerror or exc})") from None
    if loose:
        raise IslError(
            f"{split_dir}: holds images outside class folders (e.g. {sorted(loose)[0]}); "
            f"expected {split_dir.name}/<class>/<image>"
        )
    return sorted(names)


def scan_labelled(root: Path, split_dirs: dict[str, str]) -> tuple[list[str], dict[str, FileList]]:
    """List `root/<dir>/<class>/**` for each split; labels index the sorted union of class names."""
    per_split = {split: class_folders(root / folder) for split, folder in split_dirs.items()}
    classes = sorted(set().union(*per_split.values()))
    index = {name: i for i, name in enumerate(classes)}
    lists: dict[str, FileList] = {}
    for split, folder in split_dirs.items():
        files = FileList()
        for name in per_split[split]:
            for rel in walk_images(str(root / folder / name), f"{folder}/{name}"):
                files.paths.append(rel)
                files.labels.append(index[name])
        lists[split] = files
    return classes, lists


def detect_layout(root: Path) -> tuple[str, str | None]:
    """("labelled", "test" | "val") or ("flat", None); IslError otherwise."""
    if not root.is_dir():
        raise IslError(f"{root}: not a folder")
    if (root / "train").is_dir():
        for folder in TEST_FOLDERS:
            if (root / folder).is_dir():
                return "labelled", folder
        raise IslError(f"{root}: has train/ but no test/ or val/ folder beside it")
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except OSError as exc:
        raise IslError(f"{root}: cannot list ({exc.strerror or exc})") from None
    if any(e.is_file() and is_image_name(e.name) for e in entries):
        return "flat", None
    if any(e.is_dir() and not e.name.startswith(".") for e in entries):
        raise IslError(
            f"{root}: expected train/<class>/ and test/<class>/ (or val/) folders, or images directly in it"
        )
    raise IslError(f"{root}: empty folder (no images)")


def read_image(path: str, size: int | None) -> np.ndarray:
    """Decode one image as RGB (H, W, 3) uint8; with `size`: shorter side to size, centre crop."""
    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            img.draft(img.mode, (size, size))  # fast DCT downscale, still >= size on both sides
        rgb = img.convert("RGB")
    if size is not None:
        w, h = rgb.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8)


def image_size_of(path: str) -> tuple[int, int]:
    """(width, height) from the image header alone."""
    with Image.open(path) as img:
        return img.size


_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def _refuse_unreadable(root: Path, bad: list[str]) -> None:
    if bad:
        shown = ", ".join(bad[:MAX_LISTED]) + (" ..." if len(bad) > MAX_LISTED else "")
        raise IslError(f"{root}: {len(bad)} unreadable image(s), refused (fix or remove them): {shown}")


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def probe_sizes(root: Path, paths: list[str], progress: Progress | None = None) -> list[tuple[int, int]]:
    """Header sizes of all images; refuses unreadable ones."""
    advance = progress("reading image headers", len(paths)) if progress else None

    def probe(rel: str) -> tuple[int, int] | None:
        try:
            return image_size_of(str(root / rel))
        except _READ_ERRORS:
            return None
        finally:
            if advance:
                advance(1)

    with ThreadPoolExecutor(_workers()) as pool:
        sizes = list(pool.map(probe, paths, chunksize=64))
    _refuse_unreadable(root, [p for p, s in zip(paths, sizes) if s is None])
    return sizes  # type: ignore[return-value]


def decode_all(root: Path, paths: list[str], side: int, size: int | None,
               progress: Progress | None = None) -> torch.Tensor:
    """Decode images into (N, 3, side, side) uint8, resizing when `size` is set; refuses unreadable ones."""
    out = np.empty((len(paths), 3, side, side), dtype=np.uint8)  # (N, 3, S, S)
    advance = progress("decoding images", len(paths)) if progress else None

    def load(i: int) -> str | None:
        try:
            pixels = read_image(str(root / paths[i]), size)  # (S, S, 3)
            if pixels.shape != (side, side, 3):
                return paths[i]
            out[i] = pixels.transpose(2, 0, 1)
            return None
        except _READ_ERRORS:
            return paths[i]
        finally:
            if advance:
                advance(1)

    with ThreadPoolExecutor(_workers()) as pool:
        failed = [p for p in pool.map(load, range(len(paths)), chunksize=64) if p is not None]
    _refuse_unreadable(root, failed)
    return torch.from_numpy(out)


def read_image_folder(source: Path, name: str, size: int | None = None,
                      progress: Progress | None = None) -> tuple[Split, Split]:
    """Convert an image folder into a train and a test split (see the module docstring)."""
    root = Path(source).expanduser().resolve()
    layout, test_folder = detect_layout(root)
    if layout == "labelled":
        classes, lists = scan_labelled(root, {"train": "train", "test": test_folder})
    else:
        flat = sorted(e.name for e in os.scandir(root) if e.is_file() and is_image_name(e.name))
        classes, lists = [], {"train": FileList(flat, [-1] * len(flat)), "test": FileList()}
    if not lists["train"].paths:
        raise IslError(f"{root}/train: no images" if layout == "labelled" else f"{root}: no images")
    all_paths = lists["train"].paths + lists["test"].paths
    info = {"source": str(root), "layout": layout, "test_folder": test_folder, "resize": size}

    if size is not None:
        need = len(all_paths) * 3 * size * size
        if need > TENSOR_LIMIT_BYTES:
            raise IslError(
                f"{root}: {len(all_paths)} images at {size}x{size} need {need / 2**30:.1f} GiB, over the "
                f"{TENSOR_LIMIT_BYTES / 2**30:.0f} GiB limit; use a smaller --size, or none to keep a file index"
            )
        side: int | None = size
    else:
        sizes = probe_sizes(root, all_paths, progress)
        first = sizes[0]
        uniform = first[0] == first[1] and all(s == first for s in sizes)
        fits = len(all_paths) * 3 * first[0] * first[1] <= TENSOR_LIMIT_BYTES
        side = first[0] if uniform and fits else None
        if side is None:
            info["why_files"] = "mixed image sizes" if not uniform else "too large for tensors"

    splits = []
    if side is not None:
        images = decode_all(root, all_paths, side, size, progress)  # (N, 3, S, S)
        n_train = len(lists["train"].paths)
        parts = {"train": images[:n_train], "test": images[n_train:]}
        for split in ("train", "test"):
            splits.append(Split(labels=torch.tensor(lists[split].labels, dtype=torch.int64), classes=classes,
                                images=parts[split], name=name, split=split, info=dict(info)))
    else:
        for split in ("train", "test"):
            splits.append(Split(labels=torch.tensor(lists[split].labels, dtype=torch.int64), classes=classes,
                                paths=lists[split].paths, image_root=str(root), name=name, split=split,
                                info=dict(info)))
    return splits[0], splits[1]
