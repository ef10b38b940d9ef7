"""A features artifact opened with everything a later stage needs: its data set, backbone and graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from isl_cli.artifacts import Artifact, read_header
from isl_cli.checkpoints import load_features, load_neighbors
from isl_cli.data.store import Split, dataset_header, load_split, split_path
from isl_cli.errors import IslError
from isl_cli.models.spec import BackboneSpec, check_weights, load_module


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
    spec = BackboneSpec.from_meta(art.meta["backbone"], str(path))
    check_weights(spec, art.with_prefix("backbone."), str(path))
    model = spec.build(device)
    load_module(model, art.with_prefix("backbone."), str(path))
    model.eval()
    return LoadedFeatures(artifact=art, spec=spec, model=model, memory=art["bank.memory"], data_dir=data_dir,
                          fingerprint=train_header.fingerprint)


def features_inputs(features: Path | None, data_dir: Path | None = None) -> list[Path]:
    """What reading a features file involves: the file and its data set's splits (best effort, header only)."""
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


@dataclass
class GraphChoice:
    """The neighbour graph a stage works with, and where it came from."""

    pairs: torch.Tensor  # (E, 2) int64, on the CPU
    round_added: torch.Tensor | None  # (E,) int64: the round that found each pair, when recorded
    round: int | None  # the neighbors file's round (None: the features' own graph)


def which_graph(features: Artifact | None, neighbors: Path | None, fingerprint: str,
                num_images: int) -> GraphChoice:
    """The graph a stage works with: --neighbors when given, else the one the features were trained with (none in
    round 0, or without features)."""
    if neighbors is not None:
        nfile = load_neighbors(neighbors, fingerprint=fingerprint, num_images=num_images)
        return GraphChoice(nfile.pairs.cpu(), nfile.round_added, nfile.round)
    pairs = features.tensors.get("graph.pairs") if features is not None else None
    return GraphChoice(torch.zeros(0, 2, dtype=torch.int64) if pairs is None else pairs.cpu(), None, None)
