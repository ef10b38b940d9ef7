"""ILSVRC-2012 as a file index: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`.

The folders are streamed with os.scandir; no image is opened (so unreadable
images are only found when training reads them). Classes are the sorted
union of the wnid folder names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from isl_cli.data.sources.imagefolder import is_image_name, scan_labelled
from isl_cli.data.store import Split
from isl_cli.errors import IslError


def read_imagenet(source: Path, name: str = "imagenet") -> tuple[Split, Split]:
    """The train and val folders as a file index (val becomes the test split)."""
    root = Path(source).expanduser().resolve()
    for folder in ("train", "val"):
        if not (root / folder).is_dir():
            raise IslError(f"{root}: no {folder}/ folder; expected ILSVRC-2012 train/<wnid>/ and val/<wnid>/")
    with os.scandir(root / "val") as it:
        if any(e.is_file() and is_image_name(e.name) for e in it):
            raise IslError(
                f"{root / 'val'}: holds images directly; sort them into val/<wnid>/ folders first "
                f"(the usual ILSVRC-2012 validation preparation)"
            )
    classes, lists = scan_labelled(root, {"train": "train", "test": "val"})
    for split, folder in (("train", "train"), ("test", "val")):
        if not lists[split].paths:
            raise IslError(f"{root / folder}: no images")
    info = {"source": str(root), "layout": "imagenet", "test_folder": "val"}
    return tuple(  # type: ignore[return-value]
        Split(labels=torch.tensor(lists[split].labels, dtype=torch.int64), classes=classes,
              paths=lists[split].paths, image_root=str(root), name=name, split=split, info=dict(info))
        for split in ("train", "test")
    )
