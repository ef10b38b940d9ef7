"""Pieces every stage shares: the backbone spec, data for a features file, embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.artifacts import Artifact
from isl_cli.checkpoints import load_features
from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from isl_cli.data.batches import make_batch_source
from isl_cli.data.store import Split, dataset_header, load_split
from isl_cli.engine.state import load_module
from isl_cli.errors import IslError
from isl_cli.models.registry import build_backbone, input_size, variant_for_image_size
from isl_cli.precision import FP32, Precision


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to rebuild a backbone and feed it: stored in artifact metadata."""

    arch: str
    variant: str
    width: float
    low_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_meta(self) -> dict[str, Any]:
        return {"arch": self.arch, "variant": self.variant, "width": self.width, "low_dim": self.low_dim,
                "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "BackboneSpec":
        try:
            return cls(arch=str(meta["arch"]), variant=str(meta["variant"]), width=float(meta["width"]),
                       low_dim=int(meta["low_dim"]), image_size=int(meta["image_size"]),
                       mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IslError(f"backbone description in metadata is incomplete ({exc})") from None

    def build(self, device: torch.device) -> torch.nn.Module:
        try:
            model = build_backbone(self.arch, variant=self.variant, low_dim=self.low_dim, width=self.width)
        except ValueError as exc:
            raise IslError(str(exc)) from None
        return model.to(device)


def resolve_spec(arch: str, width: float, low_dim: int, variant: str | None, split_header_meta: dict[str, Any]) -> BackboneSpec:
    """The backbone for a data set: its image size picks the variant unless told."""
    stored = split_header_meta.get("image_size")
    file_backed = split_header_meta.get("storage") == "files"
    if variant is None:
        variant = "imagenet" if file_backed or stored is None else variant_for_image_size(int(stored))
    if variant == "cifar":
        if stored is None:
            raise IslError("this data set is stored as files of varying size; re-run fetch-data with --size 32 "
                           "to use a 32x32 backbone, or use --variant imagenet")
        try:
            size = input_size(arch, "cifar", image_size=int(stored))
        except ValueError as exc:
            raise IslError(str(exc)) from None
        mean, std = CIFAR_MEAN, CIFAR_STD
    elif variant == "imagenet":
        size = input_size(arch, "imagenet")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise IslError(f"unknown variant {variant!r}; choose cifar or imagenet")
    return BackboneSpec(arch=arch, variant=variant, width=width, low_dim=low_dim, image_size=size,
                        mean=tuple(mean), std=tuple(std))


def batch_source(split: Split, spec: BackboneSpec, *, train: bool, batch_size: int, device: torch.device,
                 num_workers: int, subset: torch.Tensor | None = None):
    """The batches of a split for this backbone (augmented for training)."""
    return make_batch_source(split, train=train, batch_size=batch_size, device=device, output_size=spec.image_size,
                             mean=spec.mean, std=spec.std, imagenet_style=spec.variant == "imagenet",
                             num_workers=num_workers, subset=subset)


@torch.no_grad()
def embed(model: torch.nn.Module, split: Split, spec: BackboneSpec, *, device: torch.device, batch_size: int = 256,
          num_workers: int = 0, subset: torch.Tensor | None = None, progress=None,
          precision: Precision = FP32) -> torch.Tensor:
    """Features of un-augmented images, backbone in eval mode: (n, D) float32 on `device`."""
    was_training = model.training
    model.eval()
    source = batch_source(split, spec, train=False, batch_size=batch_size, device=device,
                          num_workers=num_workers, subset=subset)
    task = progress.add_task("embed", total=source.num_batches(), stats="") if progress is not None else None
    chunks = [torch.zeros(0, spec.low_dim, device=device)]
    for _, images in source.batches(None):
        chunks.append(precision.forward(model, images))  # (b, D)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    model.train(was_training)
    return distributed.all_gather_cat(torch.cat(chunks))  # (n, D): every rank's slices, in order


@dataclass
class LoadedFeatures:
    """A features artifact with its data set and rebuilt backbone."""

    artifact: Artifact
    spec: BackboneSpec
    model: torch.nn.Module
    memory: torch.Tensor  # (N, D)
    data_dir: Path
    fingerprint: str


def open_features(path: Path, device: torch.device, data_dir: Path | None = None) -> LoadedFeatures:
    """Load a features artifact, its backbone (eval mode) and locate its data set."""
    from isl_cli.artifacts import read_header

    header = read_header(path, "features")
    recorded = data_dir is None
    data_dir = Path(data_dir or header.meta.get("dataset", ""))
    if not str(data_dir):
        raise IslError(f"{path}: does not say which data set it was trained on; pass --data")
    if recorded and not (data_dir / "train.safetensors").exists():
        raise IslError(f"{path}: its data set folder {data_dir} (as recorded, relative to where train-features "
                       f"ran) is not here; pass --data DIR")
    train_header = dataset_header(data_dir, "train")
    if train_header.fingerprint != header.fingerprint:
        raise IslError(f"{path}: was trained on a different data set than {data_dir} "
                       f"(fingerprint {header.fingerprint} vs {train_header.fingerprint})")
    art = load_features(path, fingerprint=train_header.fingerprint,
                        num_images=int(train_header.meta.get("num_images", 0)) or None, device=device)
    spec = BackboneSpec.from_meta(art.meta["backbone"])
    model = spec.build(device)
    load_module(model, art.with_prefix("backbone."), str(path))
    model.eval()
    return LoadedFeatures(artifact=art, spec=spec, model=model, memory=art["bank.memory"], data_dir=data_dir,
                          fingerprint=train_header.fingerprint)


def features_inputs(features: Path | None, data_dir: Path | None = None) -> list[Path]:
    """What reading a features file involves: the file and its data set's splits (best effort, header only)."""
    from isl_cli.artifacts import read_header
    from isl_cli.data.store import split_path

    if features is None:
        return []
    found = [Path(features)]
    if data_dir is None:
        try:
            data_dir = Path(read_header(features, "features").meta.get("dataset", "") or "")
        except IslError:
            return found  # the stage itself reports the bad file
    if str(data_dir):
        found += [split_path(Path(data_dir), "train"), split_path(Path(data_dir), "test")]
    return found


def load_train_test(data_dir: Path) -> tuple[Split, Split, str]:
    """Both splits of a data set and its fingerprint (the splits must agree)."""
    train = load_split(data_dir, "train")
    test = load_split(data_dir, "test", fingerprint=train.fingerprint)
    return train, test, train.fingerprint


def plan_output(out: Path, partial: Path, *, resume: bool, overwrite: bool, kind: str) -> str:
    """Decide how a checkpointed stage starts: "fresh", "resume" (from `partial`) or "done".

    Never destroys anything: an existing output or an interrupted run's checkpoint
    is only replaced with --overwrite.
    """
    from isl_cli.artifacts import read_header, refuse_existing

    if resume:
        if partial.exists():
            return "resume"
        if out.exists():
            if read_header(out, kind).meta.get("complete"):
                return "done"
            raise IslError(f"{out}: is not a finished {kind} file and no checkpoint is beside it")
        raise IslError(f"nothing to resume: neither {partial} nor {out} exists")
    if partial.exists() and not overwrite:
        raise IslError(f"{partial}: an interrupted run of this stage is here; add --resume to continue it, "
                       "or --overwrite to start over")
    refuse_existing(out, overwrite)
    return "fresh"


def refuse_changed_options(asked: Any, saved: Any, given: frozenset[str], partial: Path) -> None:
    """--resume continues with the checkpoint's settings: a typed option that differs is refused, not dropped."""
    differs = sorted(k for k in given if hasattr(saved, k) and getattr(asked, k) != getattr(saved, k))
    if differs:
        shown = ", ".join(f"--{k.replace('_', '-')} {getattr(asked, k)} (checkpoint: {getattr(saved, k)})"
                          for k in differs)
        raise IslError(f"{partial}: --resume continues with the checkpoint's settings, but {shown} was given; "
                       "drop the option, or --overwrite to start over with it")


def batch_triplets(anchors: torch.Tensor, indices: torch.Tensor, memory: torch.Tensor, graph,
                   num_draws: int, generator: torch.Generator):
    """Triplets (a, p, n, neg_idx) for this rank's slice of a batch (ISL-METHOD.md section 5).

    The K draws are made for the whole global batch from `generator` and then
    sliced, so data-parallel ranks draw exactly the negatives one process would.
    """
    from isl_cli.triplets import draw_non_neighbors, nearest_negatives

    all_indices, start = distributed.all_gather_with_offset(indices)  # (B,), offset of this slice
    try:
        draws = draw_non_neighbors(all_indices, graph, num_draws, generator)[start:start + len(indices)]  # (b, K)
    except ValueError as exc:  # an image whose neighbour set holds every image has no negative
        raise IslError(f"{exc}, so no negative can be drawn for it: the neighbour graph is too dense "
                       "(mine with a higher --tau or --base-radius)") from None
    negatives = nearest_negatives(anchors, draws, memory)  # (b,)
    return anchors, memory[indices], memory[negatives], negatives
