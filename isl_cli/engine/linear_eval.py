"""Linear-probe evaluation of a features checkpoint or an exported backbone (`isl eval-linear`).

The backbone is frozen; the features of the un-augmented training and test
images are computed once, in batches, by the same `embed` that eval-knn
--recompute uses (same preprocessing, same fast paths), either the 128-d
embedding or the pooled features before the final linear-to-D layer
(`isl_cli.models.pooled`). `isl_cli.linear_probe` then trains the classifier on
the training features only and scores the test split at the end. This uses
labels, as every accuracy does: it is a diagnostic, never a training signal.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import read_header
from isl_cli.data.store import dataset_header, load_split
from isl_cli.models.spec import BackboneSpec
from isl_cli.engine.embedding import embed
from isl_cli.engine.features_file import open_features
from isl_cli.engine.progress import log, make_progress
from isl_cli.errors import IslError
from isl_cli.linear_probe import ProbeSettings, score, train_linear_probe
from isl_cli.models.pooled import PooledFeatures
from isl_cli.precision import resolve

LAYERS = ("pooled", "embedding")
CHECKPOINT_KINDS = ("features", "backbone")


@dataclass
class LinearReport:
    """Test accuracy of the linear probe and how it was trained."""

    checkpoint: Path
    kind: str  # "features" or "backbone"
    layer: str  # "pooled" or "embedding"
    dim: int
    num_train: int
    num_test: int
    num_classes: int
    top1: float = 0.0
    top5: float = 0.0
    weight_decay: float = 0.0
    sweep: list[dict[str, float]] = field(default_factory=list)
    solver: str = ""
    num_fit: int = 0
    num_val: int = 0
    seed: int = 0
    extract_seconds: float = 0.0
    train_seconds: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checkpoint"] = str(self.checkpoint)
        out["scored"] = True
        for key in ("extract_seconds", "train_seconds", "seconds"):
            out[key] = round(out[key], 3)
        return out


@dataclass
class FrozenBackbone:
    """A backbone ready to embed a data set, from either kind of checkpoint."""

    model: torch.nn.Module
    spec: BackboneSpec
    kind: str
    data_dir: Path
    num_workers: int


def open_backbone(path: Path, device: torch.device, data_dir: Path | None) -> FrozenBackbone:
    """The frozen backbone of a features file (its own data set) or of an exported backbone (--data)."""
    kind = read_header(path).kind
    if kind not in CHECKPOINT_KINDS:
        raise IslError(f"{path}: is a {kind} artifact; eval-linear takes a features file (train-features) "
                       "or an exported backbone (isl export --what backbone)")
    if kind == "features":
        loaded = open_features(path, device, data_dir)
        workers = int(loaded.artifact.config.get("num_workers", 0))
        return FrozenBackbone(loaded.model, loaded.spec, kind, loaded.data_dir, workers)
    from isl_cli.backbone_file import load_backbone

    if data_dir is None:
        raise IslError(f"{path}: an exported backbone does not say which data set to probe; pass --data DIR")
    model, info = load_backbone(path, device)
    config = read_header(path).config
    return FrozenBackbone(model, BackboneSpec.from_meta(info, str(path)), kind, Path(data_dir),
                          int(config.get("num_workers", 0)) if isinstance(config, dict) else 0)


def is_labelled(data_dir: Path, split: str) -> bool:
    """Whether a split has images and every label known, from its header (the label values are not read)."""
    meta = dataset_header(data_dir, split).meta
    if "labelled" in meta:
        return bool(meta["labelled"]) and int(meta.get("num_images", 1)) > 0
    return load_split(data_dir, split).labelled


def _require_labels(data_dir: Path) -> None:
    for split in ("train", "test"):
        if not is_labelled(data_dir, split):
            raise IslError(f"{data_dir}: the {split} split has no labels (label -1: an unlabelled folder), "
                           "so a linear probe can be neither trained nor scored")


class _BarProgress:
    """`linear_probe.ProbeProgress` drawn as one Rich task per fit."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.task = None

    def start(self, description: str, total: int) -> None:
        self.task = self.bar.add_task(description, total=total, stats="")

    def advance(self) -> None:
        if self.task is not None:
            self.bar.advance(self.task)

    def finish(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


def evaluate_linear(checkpoint: Path, *, layer: str = "pooled", device: torch.device, data_dir: Path | None = None,
                    batch_size: int = 256, seed: int = 0, progress: bool = True,
                    settings: ProbeSettings | None = None, amp: str = "none",
                    channels_last: bool = False) -> LinearReport:
    """Linear probe (top-1, top-5 on the test split) of a checkpoint's frozen features.

    `amp` and `channels_last` set the precision of the feature extraction (isl_cli.precision); the probe is fp32.
    """
    if layer not in LAYERS:
        raise IslError(f"--layer must be {' or '.join(LAYERS)}, got {layer!r}")
    if batch_size <= 0:
        raise IslError(f"--batch-size must be positive, got {batch_size}")
    precision = resolve(amp, channels_last, device)
    start = time.perf_counter()
    frozen = open_backbone(checkpoint, device, data_dir)
    precision.prepare(frozen.model)
    fingerprint = read_header(checkpoint).fingerprint if frozen.kind == "features" else None
    _require_labels(frozen.data_dir)
    train = load_split(frozen.data_dir, "train", fingerprint=fingerprint)
    test = load_split(frozen.data_dir, "test", fingerprint=train.fingerprint)
    model, spec = frozen.model, frozen.spec
    if layer == "pooled":
        model = PooledFeatures(frozen.model)
        spec = replace(spec, low_dim=model.dim)  # embed sizes its output by spec.low_dim
    num_classes = max(len(train.classes), int(train.labels.max()) + 1)
    settings = replace(settings or ProbeSettings(), seed=seed)
    report = LinearReport(checkpoint=checkpoint, kind=frozen.kind, layer=layer, dim=spec.low_dim,
                          num_train=len(train), num_test=len(test), num_classes=num_classes, seed=seed)
    log(precision.describe())
    with make_progress(progress) as bar:
        train_x = embed(model, train, spec, device=device, batch_size=batch_size, num_workers=frozen.num_workers,
                        progress=bar, precision=precision).float()  # (N, C)
        test_x = embed(model, test, spec, device=device, batch_size=batch_size, num_workers=frozen.num_workers,
                       progress=bar, precision=precision).float()  # (Q, C)
        report.extract_seconds = time.perf_counter() - start
        try:
            result = train_linear_probe(train_x, train.labels.to(device), num_classes, settings, _BarProgress(bar))
        except ValueError as exc:
            raise IslError(f"linear probe: {exc}") from None
    report.train_seconds = time.perf_counter() - start - report.extract_seconds
    report.top1, report.top5 = score(result.classifier, test_x, test.labels.to(device))  # test labels: read here only
    report.weight_decay, report.sweep, report.solver = result.weight_decay, result.sweep, result.solver
    report.num_fit, report.num_val = result.num_fit, result.num_val
    report.seconds = time.perf_counter() - start
    return report


def final_linear_probe(features: Path, data_dir: Path, device: torch.device, progress: bool = True,
                       amp: str = "none", channels_last: bool = False) -> dict[str, Any]:
    """`isl run`'s final linear probe (pooled features) as a JSON-able dict; unlabelled data is noted, not fatal."""
    if not (is_labelled(data_dir, "train") and is_labelled(data_dir, "test")):
        return {"scored": False, "note": "labels are unknown for this data set, so the linear probe is not scored"}
    log("final evaluation: linear probe on the pooled features")
    return evaluate_linear(features, layer="pooled", device=device, data_dir=data_dir, progress=progress, amp=amp,
                           channels_last=channels_last).to_dict()
