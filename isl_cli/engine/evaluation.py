"""Weighted-kNN evaluation of a features checkpoint (bank or recomputed features)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from isl_cli.data.store import Split, load_split
from isl_cli.engine.embedding import embed
from isl_cli.engine.features_file import open_features
from isl_cli.engine.progress import log, make_progress
from isl_cli.knn import clamp_ks, weighted_knn
from isl_cli.precision import resolve


@dataclass
class EvalReport:
    """kNN accuracies of one checkpoint, or why they could not be scored."""

    checkpoint: Path | None  # None for a baseline
    source: str  # "bank" or "recomputed"; a baseline's name ("pixels", "random")
    num_train: int
    num_test: int
    temperature: float
    results: list[dict[str, Any]] = field(default_factory=list)  # {"k", "top1", "top5"} in percent
    scored: bool = True
    note: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # what a baseline was computed from

    def to_dict(self) -> dict[str, Any]:
        record = {"checkpoint": None if self.checkpoint is None else str(self.checkpoint), "source": self.source,
                  "num_train": self.num_train, "num_test": self.num_test, "temperature": self.temperature,
                  "results": self.results, "scored": self.scored, "note": self.note,
                  "seconds": round(self.seconds, 3)}
        if self.details:
            record["details"] = self.details
        return record


def evaluate_checkpoint(checkpoint: Path, ks: Sequence[int], *, recompute: bool, device: torch.device,
                        data_dir: Path | None = None, batch_size: int = 256, progress: bool = True,
                        temperature: float | None = None, amp: str = "none", channels_last: bool = False) -> EvalReport:
    """Weighted kNN (docs/method.md section 9) of the test split against the training features.

    `amp` and `channels_last` set the precision of the backbone forwards (see isl_cli.precision); the kNN is fp32.
    """
    start = time.perf_counter()
    precision = resolve(amp, channels_last, device)
    loaded = open_features(checkpoint, device, data_dir)
    precision.prepare(loaded.model)
    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    test = load_split(loaded.data_dir, "test", fingerprint=loaded.fingerprint)
    temperature = temperature or float(loaded.artifact.config.get("temperature", 0.1))
    report = EvalReport(checkpoint=checkpoint, source="recomputed" if recompute else "bank",
                        num_train=len(train), num_test=len(test), temperature=temperature)
    if not train.labelled or not test.labelled or len(test) == 0:
        report.scored = False
        report.note = ("labels are unknown for this data set (an unlabelled folder), so kNN accuracy cannot be scored"
                       if len(test) == 0 or not train.labelled or not test.labelled else "")
        report.seconds = time.perf_counter() - start
        return report
    workers = int(loaded.artifact.config.get("num_workers", 0))
    log(precision.describe())
    with make_progress(progress) as bar:
        queries = embed(loaded.model, test, loaded.spec, device=device, batch_size=batch_size,
                        num_workers=workers, progress=bar, precision=precision)  # (Q, D)
        keys = (embed(loaded.model, train, loaded.spec, device=device, batch_size=batch_size,
                      num_workers=workers, progress=bar, precision=precision) if recompute
                else loaded.memory)  # (N, D)
    score_features(report, queries, test, keys, train, ks)
    report.seconds = time.perf_counter() - start
    return report


def score_features(report: EvalReport, queries: torch.Tensor, test: Split, keys: torch.Tensor, train: Split,
                   ks: Sequence[int]) -> None:
    """Fill `report.results`: weighted kNN of queries (Q, D) against keys (N, D) at each k (clamped to N)."""
    ks_used, clamped = clamp_ks(list(ks), len(train))
    if clamped:
        log(f"[yellow]warning: k larger than the {len(train)} training images was clamped to {len(train)}[/yellow]")
    device = queries.device
    results = weighted_knn(queries, test.labels.to(device), keys, train.labels.to(device), ks_used,
                           report.temperature, num_classes=int(train.labels.max()) + 1)
    report.results = [{"k": k, "top1": results[k].top1, "top5": results[k].top5} for k in sorted(set(ks_used))]
