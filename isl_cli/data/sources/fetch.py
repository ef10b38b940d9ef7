"""The engine of `isl fetch-data`: resolve a source, convert it, save both splits.

`prepare_dataset` is what `isl fetch-data` and `isl run` call. Nothing is
written before the conversion succeeded; `save_dataset` then writes both
splits atomically, so a later stage never finds a half-written artifact.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from isl_cli import locks
from isl_cli.artifacts import check_io, read_header
from isl_cli.bounds import Bounds
from isl_cli.data.sources import registry
from isl_cli.data.sources.cifar import read_cifar_archive
from isl_cli.data.sources.convert import resize_images
from isl_cli.data.sources.download import is_cached
from isl_cli.data.sources.idx import read_idx_dataset
from isl_cli.data.sources.imagefolder import read_image_folder
from isl_cli.data.sources.imagenet import read_imagenet
from isl_cli.data.sources.locate import (
    DOWNLOADS_FOLDER,
    LocateContext,
    locate_cifar_archive,
    locate_idx_files,
    locate_svhn_files,
)
from isl_cli.data.sources.shapes import read_shapes
from isl_cli.data.sources.svhn import read_svhn
from isl_cli.data.store import Split, save_dataset, split_path
from isl_cli.errors import IslError

SIZE_BOUNDS = Bounds(8, 4096, integer=True)  # --size: the side images are resized to
NUM_IMAGES_BOUNDS = Bounds(1, 2**31 - 1, integer=True)  # shapes' --num-train / --num-test (and the memory check)


@dataclass
class FetchOutcome:
    """What `fetch_dataset` did and what the data set holds (for the summary)."""

    path: Path
    created: bool
    name: str
    folder: str
    num_train: int
    num_test: int
    image_size: int | None
    classes: list[str]
    storage: str
    fingerprint: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def prepare_dataset(name: str, root: str | Path, **options: Any) -> Path:
    """Make sure `<root>/<folder>/{train,test}.safetensors` hold data set `name`; return the folder.

    `options` are `fetch_dataset`'s keyword arguments.
    """
    return fetch_dataset(name, root, **options).path


def needs_network(name: str, source: str | Path | None = None, root: str | Path | None = None,
                  folder_name: str | None = None) -> bool:
    """Whether `prepare_dataset` with these arguments would download something.

    With `root`, a data set already prepared there, or downloads already in
    `<root>/downloads/`, need no network (their checksums are checked on use).
    """
    info = registry.dataset_info(name)
    if source is not None or not info.downloads:
        return False
    if root is not None:
        root = Path(root)
        folder = root / (folder_name or name)
        if split_path(folder, "train").is_file() and split_path(folder, "test").is_file():
            return False
        if all(is_cached(key, root / DOWNLOADS_FOLDER) for key in info.downloads):
            return False
    return True


def fetch_dataset(
    name: str,
    root: str | Path,
    source: str | Path | None = None,
    folder_name: str | None = None,
    size: int | None = None,
    force: bool = False,
    seed: int = 0,
    num_train: int = 5000,
    num_test: int = 1000,
    progress: bool = True,
    allow_download: bool = True,
    console: Console | None = None,
) -> FetchOutcome:
    """Prepare data set `name` like `prepare_dataset`, returning what was done (see `FetchOutcome`).

    Args:
        name: a registry name (shapes, cifar10, cifar100, svhn, mnist, fashion-mnist, imagefolder, imagenet).
        root: the data root.
        source: local files to use instead of downloading (required for imagefolder and imagenet).
        folder_name: folder under root (default: `name`).
        size: resize images to size x size (imagefolder: shorter side, then centre crop).
        force: re-create even when a valid data set with the same options exists.
        seed, num_train, num_test: shapes only.
        progress: show Rich progress bars on stderr.
        console: where progress and notes go (default: stderr).
        allow_download: False makes a needed download an IslError (unattended runs).

    Raises:
        IslError: bad options or input, no network, checksum mismatch, existing data made differently.
    """
    started = time.perf_counter()
    console = console or Console(stderr=True, highlight=False)
    info = registry.dataset_info(name)
    root = Path(root).expanduser()
    folder = _check_folder(folder_name or name)
    source_path = _check_options(info, source, size, num_train, num_test)
    identity = _identity(name, source_path, size, seed, num_train, num_test)
    dataset_dir = root / folder

    outputs = [split_path(dataset_dir, "train"), split_path(dataset_dir, "test")]
    check_io(outputs, [source_path] if source_path is not None and source_path.is_file() else [])
    with locks.holding(dataset_dir):  # one writer per data set folder, taken before any work
        if not force:
            existing = _existing(dataset_dir, identity, console)
            if existing is not None:
                existing.seconds = time.perf_counter() - started
                return existing

        notes: list[str] = []
        context = LocateContext(root=root, progress=progress, allow_download=allow_download, console=console,
                                notes=notes)
        train, test, extra = _convert(name, source_path, size, seed, num_train, num_test, context)
        for split in (train, test):
            split.info.update(extra)
        config = {**identity, "folder": folder, "source": str(source_path) if source_path else None, **extra}
        fingerprint = save_dataset(dataset_dir, train, test, config)
        return FetchOutcome(
            path=dataset_dir, created=True, name=name, folder=folder, num_train=len(train), num_test=len(test),
            image_size=train.image_size, classes=list(train.classes),
            storage="files" if train.file_backed else "tensor",
            fingerprint=fingerprint, seconds=time.perf_counter() - started, notes=notes,
        )


def describe_dataset(dataset_dir: str | Path) -> FetchOutcome:
    """The summary of a prepared data set, read from the two headers alone."""
    dataset_dir = Path(dataset_dir)
    train = read_header(split_path(dataset_dir, "train"), "dataset")
    test = read_header(split_path(dataset_dir, "test"), "dataset")
    if train.fingerprint != test.fingerprint:
        raise IslError(f"{dataset_dir}: train and test splits have different fingerprints")
    return FetchOutcome(
        path=dataset_dir, created=False, name=str(train.meta.get("name", "")),
        folder=str(train.config.get("folder", dataset_dir.name)),
        num_train=int(train.meta.get("num_images", 0)), num_test=int(test.meta.get("num_images", 0)),
        image_size=train.meta.get("image_size"), classes=list(train.meta.get("classes", [])),
        storage=str(train.meta.get("storage", "tensor")), fingerprint=train.fingerprint,
    )


# ----------------------------------------------------------------------------- options


def _check_folder(folder: str) -> str:
    if not folder or folder in (".", "..", DOWNLOADS_FOLDER) or "/" in folder or "\\" in folder:
        raise IslError(f"--name {folder!r}: use a plain folder name (not '{DOWNLOADS_FOLDER}', no slashes)")
    return folder


def _check_options(info: registry.DatasetInfo, source: str | Path | None, size: int | None,
                   num_train: int, num_test: int) -> Path | None:
    SIZE_BOUNDS.check("--size", size)
    if info.name == "imagenet" and size is not None:
        raise IslError("imagenet stays as image files (resized when read); --size does not apply")
    if info.name == "shapes":
        NUM_IMAGES_BOUNDS.check("--num-train", num_train)
        NUM_IMAGES_BOUNDS.check("--num-test", num_test)
    if source is None:
        if info.needs_source:
            hint = "no download exists for ImageNet; " if info.name == "imagenet" else ""
            raise IslError(f"{info.name} needs --source DIR ({hint}{info.summary})")
        return None
    if not info.takes_source:
        raise IslError(f"{info.name} is generated offline; --source does not apply")
    path = Path(source).expanduser()
    if not path.exists():
        raise IslError(f"--source {path}: no such file or folder")
    return path.resolve()


def _identity(name: str, source: Path | None, size: int | None, seed: int, num_train: int,
              num_test: int) -> dict[str, Any]:
    """The options that decide the content: equal identity = same data set."""
    identity: dict[str, Any] = {"dataset": name, "size": size}
    if name == "shapes":
        identity.update(seed=seed, num_train=num_train, num_test=num_test)
    if name in ("imagefolder", "imagenet"):
        identity["source"] = str(source)
    return identity


def _existing(dataset_dir: Path, identity: dict[str, Any], console: Console) -> FetchOutcome | None:
    """The prepared data set when valid and made with the same options; None when absent or broken."""
    train, test = split_path(dataset_dir, "train"), split_path(dataset_dir, "test")
    if not train.exists() and not test.exists():
        return None
    try:
        outcome = describe_dataset(dataset_dir)
        stored = read_header(train, "dataset").config
    except IslError as exc:
        console.print(f"[yellow]{dataset_dir}: incomplete or invalid ({exc}); re-creating it[/yellow]", soft_wrap=True)
        return None
    differing = [key for key in identity if stored.get(key) != identity[key]]
    if differing:
        what = ", ".join(f"{k} {stored.get(k)!r} (asked {identity[k]!r})" for k in differing)
        raise IslError(
            f"{dataset_dir} already holds a data set made with other options: {what}; "
            f"pass --force to replace it, or --name FOLDER to keep both"
        )
    outcome.notes.append("already prepared with these options; left as it is (--force re-creates it)")
    return outcome


# ----------------------------------------------------------------------------- conversion


def _convert(name: str, source: Path | None, size: int | None, seed: int, num_train: int, num_test: int,
             ctx: LocateContext) -> tuple[Split, Split, dict[str, Any]]:
    """Both splits of `name` plus the facts recorded in the config (format, checksum, files)."""
    if name == "shapes":
        train, test = read_shapes(num_train, num_test, seed, size or 32)
        return train, test, {"format": "generated"}
    if name == "imagefolder":
        with _progress(ctx) as advance:
            train, test = read_image_folder(source, name, size, advance)
        return train, test, {"format": "imagefolder"}
    if name == "imagenet":
        train, test = read_imagenet(source, name)
        return train, test, {"format": "imagenet"}
    if name in ("mnist", "fashion-mnist"):
        files, checked = locate_idx_files(name, source, ctx)
        classes = registry.FASHION_MNIST_CLASSES if name == "fashion-mnist" else registry.DIGIT_CLASSES
        train, test = read_idx_dataset(files, name, classes, size or 32)
        return train, test, {"format": "idx", "checksum": checked, "files": sorted(p.name for p in files.values())}
    if name == "svhn":
        train_mat, test_mat, checked = locate_svhn_files(source, ctx)
        train, test = read_svhn(train_mat, test_mat)
        extra = {"format": "svhn-mat", "checksum": checked, "files": [train_mat.name, test_mat.name]}
    else:  # cifar10, cifar100 (the registry admits no other name)
        path, fmt, checked = locate_cifar_archive(name, source, ctx)
        train, test = read_cifar_archive(path, name, fmt)
        extra = {"format": f"cifar-{fmt}", "checksum": checked, "files": [path.name]}
    if size is not None:
        for split in (train, test):
            split.images = resize_images(split.images, size)  # (N, 3, size, size)
    return train, test, extra


@contextmanager
def _progress(ctx: LocateContext) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """A factory of Rich progress tasks for long image-folder passes (None when progress is off)."""
    if not ctx.progress:
        yield None
        return
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=ctx.console, transient=True)

    def start(description: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(description, total=total)
        return lambda n: bar.advance(task, n)

    with bar:
        yield start
