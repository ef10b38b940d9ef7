"""Batch sources: what the training and evaluation loops iterate over.

`make_batch_source(split, ...)` returns a `BatchSource` whose `batches(generator)`
yields `(indices, images)`: global int64 image indices (B,) and normalised
float32 images (B, 3, S, S), both on the chosen device.

* `generator` given (a CPU `torch.Generator`, seeded by the caller per epoch):
  a random permutation of the source's images; a `train=True` source also
  augments them (`BatchAugment` recipe) and drops a final batch of one image
  (batch norm cannot train on it). All randomness of the epoch (permutation
  and augmentation parameters) is drawn from the generator when `batches` is
  called, so a seed gives the same batches on every device and worker count.
* `generator` None: the images in order, normalised only (evaluation,
  feature recomputation), every image kept.
* `batches(generator, start=k)` skips the first k batches without computing
  them (resuming an interrupted epoch) and yields the rest unchanged.

Tensor splits keep their uint8 images on the device (copied there once) and
augment whole batches there. File-backed splits read images with PIL in a
`DataLoader` and use torchvision pipelines (`isl_cli.data.transforms`); each
image's transform randomness is seeded from (epoch seed, image index), so the
result does not depend on `num_workers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from isl_cli.data.augment import AugmentParams, BatchAugment, normalize
from isl_cli.data.store import Split
from isl_cli.data.transforms import eval_transform, train_transform
from isl_cli import distributed
from isl_cli.errors import IslError

EVAL_SEED = -1  # sample key seed meaning "no augmentation"
SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant that spreads indices over seeds
SEED_MOD = 2**63
EPOCH_SEED_BOUND = 2**62  # torch.randint needs an int64 upper bound


def batch_bounds(count: int, batch_size: int, drop_single_tail: bool, world: int = 1) -> list[tuple[int, int]]:
    """(start, end) of consecutive batches over `count` items.

    Partial last batches are kept, except, when `drop_single_tail`, one too small
    to train batch norm on: size 1, or (data parallel over `world` ranks) smaller
    than `world` so that every rank gets an image.
    """
    bounds = [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    if drop_single_tail and bounds and bounds[-1][1] - bounds[-1][0] < max(2, world):
        bounds.pop()
    return bounds


def sample_seed(epoch_seed: int, index: int) -> int:
    """Seed of one image's transform in one epoch (a non-negative 63-bit int)."""
    return (epoch_seed + (index + 1) * SEED_MIX) % SEED_MOD


def _check_subset(subset: Tensor | Sequence[int] | None, total: int) -> Tensor:
    """Validated global indices (n,) int64 on the CPU: all images when `subset` is None."""
    if subset is None:
        return torch.arange(total, dtype=torch.int64)
    subset = torch.as_tensor(subset).cpu()
    if subset.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or subset.dim() != 1:
        raise ValueError(f"subset must be a 1-D integer tensor, got {subset.dtype} {tuple(subset.shape)}")
    subset = subset.to(torch.int64)
    if len(subset) == 0:
        raise ValueError("subset is empty")
    if int(subset.min()) < 0 or int(subset.max()) >= total:
        raise ValueError(f"subset indices must lie in [0, {total}), got [{int(subset.min())}, {int(subset.max())}]")
    if len(torch.unique(subset)) != len(subset):
        raise ValueError("subset holds repeated indices")
    return subset


class BatchSource(ABC):
    """Batches of (global indices, normalised images) on one device.

    Attributes:
        num_images: images in the source (the subset's size when restricted).
        indices: (num_images,) int64 CPU global indices of those images, in order.
        batch_size: images per full batch.
        train: augment and drop a size-1 tail in shuffled epochs.
        output_size: side S of the yielded images.
        device: where the batches are yielded.
    """

    def __init__(self, indices: Tensor, *, train: bool, batch_size: int, device: torch.device | str,
                 output_size: int) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(output_size) != output_size or output_size < 1:
            raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
        if train and len(indices) < 2:
            raise ValueError(f"a training source needs at least 2 images, got {len(indices)}")
        self.indices = indices
        self.num_images = len(indices)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.output_size = int(output_size)
        self.device = torch.device(device)
        self.dist = distributed.context()  # data parallel: each rank yields its slice of every batch

    def num_batches(self, shuffled: bool | None = None) -> int:
        """Batches per epoch: of a shuffled epoch (generator given) or, with
        `shuffled=False`, of an in-order pass. Defaults to the source's mode
        (shuffled for a training source)."""
        shuffled = self.train if shuffled is None else shuffled
        return len(batch_bounds(self.num_images, self.batch_size, drop_single_tail=shuffled and self.train,
                                world=self.dist.world))

    def _epoch_bounds(self, shuffled: bool, start: int) -> list[tuple[int, int]]:
        """This epoch's batches from `start` on; under data parallelism, this rank's slice of each."""
        if int(start) != start or start < 0:
            raise ValueError(f"start must be a non-negative batch number, got {start!r}")
        bounds = batch_bounds(self.num_images, self.batch_size, drop_single_tail=shuffled and self.train,
                              world=self.dist.world)[start:]
        if self.dist.enabled:
            bounds = [distributed.shard_bounds(lo, hi, self.dist) for lo, hi in bounds]
            if not (shuffled and self.train):  # an in-order pass may leave a rank nothing of a short tail
                bounds = [(lo, hi) for lo, hi in bounds if hi > lo]
        return bounds

    @abstractmethod
    def batches(self, generator: torch.Generator | None, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (indices (B,) int64, images (B, 3, S, S) float32), both on `device`.

        Args:
            generator: CPU generator for a shuffled (and, for a training
                source, augmented) epoch; None for an in-order, normalised pass.
                All of the epoch's randomness is drawn from it by this call.
            start: skip the first `start` batches without computing them (to
                resume an epoch); the remaining batches are exactly those of
                the full epoch with the same generator state.
        """


class TensorBatchSource(BatchSource):
    """Batches from uint8 images held on the device.

    Args:
        images: (n, 3, H, W) uint8, the source's images (already restricted to
            the subset), copied to `device` once here.
        indices: (n,) int64 global index of each row of `images`.
        augment: the training augmentation (used when `train` and shuffled).
        mean, std: normalisation for un-augmented batches.
        train, batch_size, device, output_size: see `BatchSource`.
    """

    def __init__(self, images: Tensor, indices: Tensor, *, augment: BatchAugment, mean: Sequence[float],
                 std: Sequence[float], train: bool, batch_size: int, device: torch.device | str,
                 output_size: int) -> None:
        super().__init__(indices, train=train, batch_size=batch_size, device=device, output_size=output_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or len(images) != len(indices):
            raise ValueError(f"images must be uint8 ({len(indices)}, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.augment = augment
        self.mean, self.std = tuple(mean), tuple(std)
        self._images = images.to(self.device)  # (n, 3, H, W) uint8, once
        self._indices = indices.to(self.device)  # (n,)

    def batches(self, generator: torch.Generator | None, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if generator is None:
            return self._in_order(self._epoch_bounds(False, start))
        if generator.device.type != "cpu":
            raise ValueError("batches needs a CPU torch.Generator (or None for an in-order pass)")
        order = torch.randperm(self.num_images, generator=generator)  # (n,) CPU
        params = None
        if self.train:
            height, width = self._images.shape[-2:]
            params = self.augment.sample(self.num_images, height, width, generator)  # row k: image order[k]
            params = params.to(self.device, non_blocking=True)
        return self._shuffled(self._epoch_bounds(True, start), order.to(self.device), params)

    def _in_order(self, bounds: list[tuple[int, int]]) -> Iterator[tuple[Tensor, Tensor]]:
        for start, end in bounds:
            images = normalize(self._images[start:end], self.mean, self.std, self.output_size)  # (B, 3, S, S)
            yield self._indices[start:end], images

    def _shuffled(self, bounds: list[tuple[int, int]], order: Tensor,
                  params: AugmentParams | None) -> Iterator[tuple[Tensor, Tensor]]:
        for start, end in bounds:
            rows = order[start:end]  # (B,) positions in the source
            raw = self._images[rows]  # (B, 3, H, W) uint8
            if params is None:
                images = normalize(raw, self.mean, self.std, self.output_size)  # (B, 3, S, S)
            else:
                images = self.augment.apply(raw, params.rows(start, end))  # (B, 3, S, S)
            yield self._indices[rows], images


class ImageFileDataset(Dataset):
    """Images on disk, keyed by (global index, seed); seed EVAL_SEED = no augmentation.

    Args:
        root: folder the paths are relative to.
        paths: relative path of every image of the split (global indexing).
        train_tf, eval_tf: PIL -> (3, S, S) tensor pipelines.
    """

    def __init__(self, root: Path, paths: Sequence[str], train_tf, eval_tf) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.train_tf = train_tf
        self.eval_tf = eval_tf

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise IslError(f"{path}: cannot read image ({exc})") from None

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Tensor]:
        index, seed = key
        image = self.load(index)
        if seed == EVAL_SEED:
            return index, self.eval_tf(image)
        with torch.random.fork_rng(devices=[]):  # leave the caller's CPU RNG as it was
            torch.default_generator.manual_seed(seed)  # CPU only: never touch a CUDA RNG
            return index, self.train_tf(image)


class FileBatchSource(BatchSource):
    """Batches read from image files by a DataLoader.

    Args:
        root: folder the paths are relative to.
        paths: relative paths of all the split's images.
        indices: (n,) int64 global indices of the source's images.
        mean, std: normalisation statistics.
        imagenet_style: ImageNet recipe (else the small-image recipe), see
            `isl_cli.data.transforms`.
        num_workers: DataLoader worker processes (0 = read in this process).
        train, batch_size, device, output_size: see `BatchSource`.
    """

    def __init__(self, root: Path, paths: Sequence[str], indices: Tensor, *, mean: Sequence[float],
                 std: Sequence[float], imagenet_style: bool, num_workers: int, train: bool, batch_size: int,
                 device: torch.device | str, output_size: int) -> None:
        super().__init__(indices, train=train, batch_size=batch_size, device=device, output_size=output_size)
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.num_workers = int(num_workers)
        self.dataset = ImageFileDataset(
            root, paths,
            train_transform(output_size, mean, std, imagenet_style),
            eval_transform(output_size, mean, std, imagenet_style),
        )

    def batches(self, generator: torch.Generator | None, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        shuffled = generator is not None
        if shuffled:
            if generator.device.type != "cpu":
                raise ValueError("batches needs a CPU torch.Generator (or None for an in-order pass)")
            order = self.indices[torch.randperm(self.num_images, generator=generator)].tolist()
            epoch_seed = int(torch.randint(0, EPOCH_SEED_BOUND, (1,), generator=generator))
            seeds = [sample_seed(epoch_seed, i) for i in order] if self.train else [EVAL_SEED] * len(order)
        else:
            order = self.indices.tolist()
            seeds = [EVAL_SEED] * len(order)
        keys = list(zip(order, seeds))
        key_batches = [keys[first:end] for first, end in self._epoch_bounds(shuffled, start)]
        return self._load(key_batches)

    def _load(self, key_batches: list[list[tuple[int, int]]]) -> Iterator[tuple[Tensor, Tensor]]:
        pin = self.device.type == "cuda"
        # A private generator for the loader's own worker-seed draw, so the caller's global RNG is untouched
        # (every sample reseeds its transform itself).
        loader = DataLoader(self.dataset, batch_sampler=key_batches, num_workers=self.num_workers, pin_memory=pin,
                            generator=torch.Generator().manual_seed(0))
        iterator = iter(loader)
        message = None
        try:
            for indices, images in iterator:
                yield indices.to(self.device, non_blocking=pin), images.to(self.device, non_blocking=pin)
        except IslError as exc:  # from a worker the message carries its traceback: keep the original line
            lines = [line for line in str(exc).splitlines() if line.strip()]
            message = (lines[-1] if lines else str(exc)).split("IslError: ", 1)[-1]
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:  # stop workers now, not whenever the traceback is collected
                shutdown()
            del iterator
        if message is not None:
            raise IslError(message)

def make_batch_source(
    split: Split,
    *,
    train: bool,
    batch_size: int,
    device: torch.device | str,
    output_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    imagenet_style: bool = False,
    num_workers: int = 0,
    subset: Tensor | None = None,
) -> BatchSource:
    """The batch source for a stored split.

    Args:
        split: tensor-backed or file-backed split.
        train: augment (and drop a size-1 tail) when iterated with a generator.
        batch_size: images per batch.
        device: where batches are yielded (tensor splits keep their images there).
        output_size: side S of the yielded images.
        mean, std: normalisation statistics.
        imagenet_style: the ImageNet recipe (grayscale before jitter, horizontal
            flip; for files also Resize(256) + CenterCrop(S) at evaluation).
        num_workers: DataLoader workers for file-backed splits (ignored otherwise).
        subset: optional (n,) int64 global indices the source is restricted to;
            yielded indices stay global.

    Raises:
        ValueError: bad arguments. IslError: a file-backed split whose image folder is missing.
    """
    indices = _check_subset(subset, len(split))
    common = dict(train=train, batch_size=batch_size, device=device, output_size=output_size)
    if split.file_backed:
        root = Path(split.image_root) if split.image_root else None
        if root is None or not root.is_dir():
            raise IslError(f"image folder {split.image_root!r} of data set {split.name!r} not found; "
                           "fetch the data set again or move the folder back")
        return FileBatchSource(root, split.paths or [], indices, mean=mean, std=std, imagenet_style=imagenet_style,
                               num_workers=num_workers, **common)
    augment = BatchAugment(output_size, mean, std, hflip=imagenet_style, grayscale_first=imagenet_style)
    images = split.images if subset is None else split.images[indices]  # (n, 3, H, W) uint8
    return TensorBatchSource(images, indices, augment=augment, mean=mean, std=std, **common)
