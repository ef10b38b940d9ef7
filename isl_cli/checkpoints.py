"""The layouts of the stage artifacts (features, gan, neighbors), on top of artifacts.py.

features (`isl.kind = features`), written by train-features:
    backbone.<key>   the backbone's state dict (parameters and batch-norm buffers)
    bank.memory      (N, D) float32 memory bank, one row per training image
    optim.<i>.<key>  SGD state (momentum buffers)
    meta: round, stage_epochs, total_epochs, complete, history (one record per
    epoch), optimiser param groups, scheduler state, features_id (a hash of the
    bank), the data set folder, the neighbours it trained with, the backbone spec.

gan (`isl.kind = gan`), written by train-gan:
    generator.<key>, discriminator.<key>, optim_g.*, optim_d.*,
    g_losses / d_losses (E,) float64 per-epoch means; meta: features_id, round,
    epochs, stop_reason, complete.

neighbors (`isl.kind = neighbors`), written by mine-neighbors or by hand:
    pairs        (E, 2) int64, one row per undirected pair i != j (any order)
    round_added  (E,) int64, optional: the mining round that found each pair
    metadata: isl.fingerprint (the data set's, from `isl inspect
    data/<name>/train.safetensors`), isl.meta {"num_images": N, "round": r}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import (
    Artifact,
    Expect,
    fingerprint_tensors,
    read_artifact,
    read_header,
    require_finite,
    write_artifact,
)
from isl_cli.errors import IslError


def features_id(memory: torch.Tensor) -> str:
    """Identity of a features artifact: a hash of its memory bank."""
    return fingerprint_tensors(memory)


def partial_path(out: Path) -> Path:
    """Where a stage keeps its in-progress checkpoint beside its final output."""
    out = Path(out)
    name = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(f"{name}.partial.safetensors")


def metrics_path(out: Path) -> Path:
    """The JSON-lines metrics log beside a stage's output."""
    out = Path(out)
    name = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(f"{name}.metrics.jsonl")


# --------------------------------------------------------------------------- features


def save_features(path: Path, tensors: dict[str, torch.Tensor], *, fingerprint: str,
                  config: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a features artifact (final or partial)."""
    write_artifact(path, "features", tensors, fingerprint=fingerprint, config=config, meta=meta)


def load_features(path: Path, *, fingerprint: str | None = None, num_images: int | None = None,
                  device: str | torch.device = "cpu") -> Artifact:
    """Read and validate a features artifact (bank shape against the data set size)."""
    dims = {"N": num_images} if num_images is not None else None
    art = read_artifact(path, "features", fingerprint=fingerprint,
                        expect={"bank.memory": Expect(torch.float32, ("N", "D"))}, dims=dims, device=device)
    if not art.with_prefix("backbone."):
        raise IslError(f"{path}: holds no backbone weights")
    spec = art.meta.get("backbone")
    if not isinstance(spec, dict) or "arch" not in spec:
        raise IslError(f"{path}: metadata lacks the backbone description")
    require_finite(path, {"bank.memory": art["bank.memory"]}, "memory bank")
    require_finite(path, art.with_prefix("backbone."), "backbone tensor")
    return art


def features_header(path: Path):
    """Header of a features artifact (round, ids, config) without loading tensors."""
    return read_header(path, "features")


# --------------------------------------------------------------------------- neighbors


@dataclass
class NeighborsFile:
    """A loaded neighbors artifact."""

    pairs: torch.Tensor  # (E, 2) int64
    round_added: torch.Tensor | None  # (E,) int64
    num_images: int
    round: int
    meta: dict[str, Any]
    path: Path


def save_neighbors(path: Path, pairs: torch.Tensor, *, fingerprint: str, num_images: int, round_index: int,
                   round_added: torch.Tensor | None = None, config: dict[str, Any] | None = None,
                   meta: dict[str, Any] | None = None) -> None:
    """Write a neighbors artifact: undirected pairs plus the round that found each."""
    tensors = {"pairs": pairs.to(torch.int64).reshape(-1, 2)}
    if round_added is not None:
        tensors["round_added"] = round_added.to(torch.int64)
    full_meta = {"num_images": int(num_images), "round": int(round_index), **(meta or {})}
    write_artifact(path, "neighbors", tensors, fingerprint=fingerprint, config=config or {}, meta=full_meta)


def load_neighbors(path: Path, *, fingerprint: str | None, num_images: int,
                   allow_partial: bool = False) -> NeighborsFile:
    """Read and validate a neighbors artifact against the data set it must belong to.

    A mining checkpoint (`complete` false) is refused unless `allow_partial` (mining's own resume).
    """
    art = read_artifact(path, "neighbors", fingerprint=fingerprint, expect={
        "pairs": Expect(torch.int64, ("E", 2)),
        "round_added": Expect(torch.int64, ("E",), required=False),
    })
    if art.meta.get("complete") is False and not allow_partial:
        raise IslError(f"{path}: is an unfinished mining checkpoint; finish mine-neighbors first (--resume)")
    stated = art.meta.get("num_images", num_images)
    if stated != num_images:
        raise IslError(f"{path}: made for {stated} images, but the data set has {num_images}")
    pairs = art["pairs"]
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_images):
        raise IslError(f"{path}: pair indices must lie in 0..{num_images - 1}")
    same = (pairs[:, 0] == pairs[:, 1]).nonzero()
    if len(same):
        row = int(same[0, 0])
        raise IslError(f"{path}: row {row} pairs image {int(pairs[row, 0])} with itself; every pair must join two "
                       f"different images (i != j: an image is always its own neighbour)")
    return NeighborsFile(
        pairs=pairs,
        round_added=art.tensors.get("round_added"),
        num_images=num_images,
        round=int(art.meta.get("round", 0)),
        meta=art.meta,
        path=Path(path),
    )


# --------------------------------------------------------------------------- gan


def save_gan(path: Path, tensors: dict[str, torch.Tensor], *, fingerprint: str, config: dict[str, Any],
             meta: dict[str, Any]) -> None:
    """Write a gan artifact (final or partial)."""
    write_artifact(path, "gan", tensors, fingerprint=fingerprint, config=config, meta=meta)


def load_gan(path: Path, *, fingerprint: str | None, device: str | torch.device = "cpu") -> Artifact:
    """Read and validate a gan artifact (network shapes are checked when loaded into modules)."""
    art = read_artifact(path, "gan", fingerprint=fingerprint, device=device, expect={
        "g_losses": Expect(torch.float64, ("E",)),
        "d_losses": Expect(torch.float64, ("E",)),
    })
    if not art.with_prefix("generator.") or not art.with_prefix("discriminator."):
        raise IslError(f"{path}: holds no generator or discriminator weights")
    require_finite(path, art.with_prefix("generator."), "generator tensor")
    require_finite(path, art.with_prefix("discriminator."), "discriminator tensor")
    return art
