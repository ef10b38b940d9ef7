"""The linear probe: multinomial logistic regression on frozen, standardised features.

Pure tensors in and out (no files, no models). `train_linear_probe` sees only
the training features and labels: it holds out a share of the training rows,
fits one classifier per weight decay of a small log-spaced sweep on the rest
(strongest decay first, each fit warm-started from the previous one), keeps the
decay with the best held-out top-1, and refits it on every training row
(warm-started from that candidate). `score` then reads the test labels once, at the very end.

Memory stays bounded by the features themselves: the standardisation
x' = (x - mean) / std is folded into the classifier's weights
(x' W^T + b = x (W / std)^T + (b - (mean / std) W^T)), so no standardised copy of
the feature matrix is ever made, and every pass walks the rows in contiguous
chunks (L-BFGS leaves the held-out rows out with a 0/1 row weight; only SGD's
mini-batches and the held-out scoring gather rows).

Solvers: full-batch L-BFGS (`torch.optim.LBFGS`, strong Wolfe line search) for up
to `LBFGS_MAX_ROWS` rows, mini-batch SGD with momentum and a cosine schedule above
(ImageNet size: one L-BFGS step per full pass would be slower than a few epochs
of SGD). Both start from zero weights and are deterministic given `seed`.

The loss is the mean cross-entropy plus (weight_decay / 2) * ||W||^2 (the bias is
not decayed), W acting on standardised features. The mean and std come from all
training features (no labels involved), never from the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

DEFAULT_WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
LBFGS_MAX_ROWS = 262_144  # above this many training rows, mini-batch SGD (see the module docstring)
SOLVERS = ("auto", "lbfgs", "sgd")


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is trained; the defaults are what `isl eval-linear` uses."""

    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    val_fraction: float = 0.2  # share of the training rows held out to choose the weight decay
    solver: str = "auto"  # auto: L-BFGS up to LBFGS_MAX_ROWS training rows, SGD above
    lbfgs_iterations: int = 100  # L-BFGS iterations per fit (each may evaluate the loss more than once)
    sgd_epochs: int = 20
    sgd_batch_size: int = 1024
    sgd_lr: float = 0.1  # peak learning rate (momentum 0.9, cosine to zero)
    chunk_rows: int = 16384  # rows per chunk of a full pass
    seed: int = 0

    def validate(self) -> "ProbeSettings":
        if not self.weight_decays or any(not math.isfinite(w) or w < 0 for w in self.weight_decays):
            raise ValueError(f"weight decays must be finite and >= 0, got {self.weight_decays}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        for name in ("lbfgs_iterations", "sgd_epochs", "sgd_batch_size", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.sgd_lr > 0:
            raise ValueError(f"sgd_lr must be positive, got {self.sgd_lr}")
        return self

    def solver_for(self, rows: int) -> str:
        """"lbfgs" or "sgd" for a training set of `rows` rows."""
        if self.solver != "auto":
            return self.solver
        return "lbfgs" if rows <= LBFGS_MAX_ROWS else "sgd"


class ProbeProgress(Protocol):
    """What the probe reports while it trains (the stage draws it as a progress bar)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self) -> None: ...

    def finish(self) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class Standardizer:
    """Per-dimension mean and std of the training features: (D,) each."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, chunk_rows: int = 16384) -> "Standardizer":
        """Mean and std of (N, D) features, accumulated in float64 over chunks (no (N, D) temporary)."""
        total = torch.zeros(features.shape[1], dtype=torch.float64, device=features.device)  # (D,)
        squares = torch.zeros_like(total)  # (D,)
        for start in range(0, len(features), chunk_rows):
            chunk = features[start:start + chunk_rows].double()  # (c, D)
            total += chunk.sum(0)
            squares += chunk.square().sum(0)
        n = max(len(features), 1)
        mean = total / n  # (D,)
        var = (squares / n - mean.square()).clamp_min(0)  # (D,)
        std = var.sqrt()
        std = torch.where(std > 1e-6 * (mean.abs() + 1), std, torch.ones_like(std))  # constant dims: leave unscaled
        return cls(mean=mean.float(), std=std.float())


@dataclass
class LinearClassifier:
    """Logits = ((x - mean) / std) W^T + b, computed without a standardised copy of x."""

    standardizer: Standardizer
    weight: torch.Tensor  # (C, D), acting on standardised features
    bias: torch.Tensor  # (C,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) raw features -> (n, C) logits."""
        return folded_logits(x, self.weight, self.bias, self.standardizer)


def folded_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  standardizer: Standardizer) -> torch.Tensor:
    """Logits of standardised x with the standardisation folded into the weights: (n, D) -> (n, C)."""
    scaled = weight / standardizer.std  # (C, D)
    shift = bias - scaled @ standardizer.mean  # (C,)
    return torch.addmm(shift, x, scaled.T)  # (n, C)


@dataclass
class ProbeResult:
    """The trained classifier and how its weight decay was chosen."""

    classifier: LinearClassifier
    weight_decay: float
    sweep: list[dict[str, float]] = field(default_factory=list)  # {"weight_decay", "val_top1"} per candidate
    solver: str = "lbfgs"
    num_fit: int = 0  # training rows each sweep candidate was fitted on
    num_val: int = 0  # held-out training rows it was scored on


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       settings: ProbeSettings | None = None, progress: ProbeProgress | None = None) -> ProbeResult:
    """Choose the weight decay on a held-out share of the training rows, then refit it on all of them.

    Args:
        features: (N, D) float training features (not modified, not copied).
        labels: (N,) int64 in [0, num_classes).
        num_classes: C.
        settings: the sweep and the solver.
        progress: told about every fit and every step.

    Raises:
        ValueError: bad settings, shapes or labels, or fewer than 2 training rows.
    """
    settings = (settings or ProbeSettings()).validate()
    progress = progress or _Silent()
    n = _check_inputs(features, labels, num_classes)
    if n < 2:
        raise ValueError(f"a linear probe needs at least 2 training rows, got {n}")
    standardizer = Standardizer.fit(features, settings.chunk_rows)
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(n, generator=generator).to(features.device)  # (N,)
    num_val = min(max(1, round(n * settings.val_fraction)), n - 1)
    val_rows, fit_rows = order[:num_val], order[num_val:]  # (V,), (N - V,)
    solver = settings.solver_for(n)
    sweep: list[dict[str, float]] = []
    candidates: dict[float, LinearClassifier] = {}
    start_from = None
    decays = sorted(set(settings.weight_decays), reverse=True)  # strongest first: each fit warm-starts the next
    for index, decay in enumerate(decays):
        progress.start(f"probe: weight decay {decay:g} ({index + 1}/{len(decays)})",
                       _steps(solver, len(fit_rows), settings))
        candidate = fit_softmax(features, labels, num_classes, decay, standardizer, settings, solver,
                                rows=fit_rows, seed=settings.seed + 1 + index, progress=progress, init=start_from)
        progress.finish()
        top1, _ = accuracy(candidate, features, labels, rows=val_rows, chunk_rows=settings.chunk_rows)
        sweep.append({"weight_decay": decay, "val_top1": top1})
        candidates[decay] = start_from = candidate
    best = max(sweep, key=lambda row: (row["val_top1"], row["weight_decay"]))  # ties: the stronger decay
    decay = best["weight_decay"]
    progress.start(f"probe: all {n} training rows, weight decay {decay:g}", _steps(solver, n, settings))
    classifier = fit_softmax(features, labels, num_classes, decay, standardizer, settings, solver,
                             rows=None, seed=settings.seed, progress=progress, init=candidates[decay])
    progress.finish()
    return ProbeResult(classifier=classifier, weight_decay=decay, sweep=sweep, solver=solver,
                       num_fit=len(fit_rows), num_val=num_val)


def fit_softmax(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                standardizer: Standardizer, settings: ProbeSettings, solver: str, *, rows: torch.Tensor | None = None,
                seed: int = 0, progress: ProbeProgress | None = None,
                init: LinearClassifier | None = None) -> LinearClassifier:
    """Fit W (C, D) and b (C,) on the rows `rows` of the features (all rows when None), from zeros or `init`."""
    progress = progress or _Silent()
    dim = features.shape[1]
    if init is None:
        weight = torch.zeros(num_classes, dim, device=features.device)  # (C, D)
        bias = torch.zeros(num_classes, device=features.device)  # (C,)
    else:
        weight, bias = init.weight.clone(), init.bias.clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    if solver == "lbfgs":
        _fit_lbfgs(features, labels, weight, bias, weight_decay, standardizer, settings, rows, progress)
    elif solver == "sgd":
        _fit_sgd(features, labels, weight, bias, weight_decay, standardizer, settings, rows, seed, progress)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    return LinearClassifier(standardizer=standardizer, weight=weight.detach(), bias=bias.detach())


def _fit_lbfgs(features, labels, weight, bias, weight_decay, standardizer, settings, rows, progress) -> None:
    """Full-batch L-BFGS. Selected rows are weighted 1 and the others 0 over contiguous chunks of all rows:
    cheaper than gathering the selection at every evaluation, and no copy of the features."""
    if rows is None:
        mask, count = None, len(features)
    else:
        mask = torch.zeros(len(features), device=features.device)  # (N,)
        mask[rows] = 1.0
        count = len(rows)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=settings.lbfgs_iterations,
                                  history_size=10, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9)
    size = settings.chunk_rows

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        total = torch.zeros((), device=features.device)
        for start in range(0, len(features), size):
            x, y = features[start:start + size], labels[start:start + size]  # views: (c, D), (c,)
            losses = F.cross_entropy(folded_logits(x, weight, bias, standardizer), y, reduction="none")  # (c,)
            if mask is not None:
                losses = losses * mask[start:start + size]
            loss = losses.sum() / count
            loss.backward()  # gradients of the chunks add up; no (N, C) buffer is kept
            total += loss.detach()
        penalty = 0.5 * weight_decay * weight.square().sum()
        penalty.backward()
        progress.advance()
        return total + penalty.detach()

    optimizer.step(closure)


def _fit_sgd(features, labels, weight, bias, weight_decay, standardizer, settings, rows, seed, progress) -> None:
    """Mini-batch SGD (momentum 0.9, cosine schedule) over a seeded shuffle of the selected rows."""
    count = len(features) if rows is None else len(rows)
    batches = math.ceil(count / settings.sgd_batch_size)
    steps = settings.sgd_epochs * batches
    optimizer = torch.optim.SGD([weight, bias], lr=settings.sgd_lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(settings.sgd_epochs):
        order = torch.randperm(count, generator=generator).to(features.device)  # (n,)
        epoch_rows = order if rows is None else rows[order]  # (n,)
        for x, y in _chunks(features, labels, epoch_rows, settings.sgd_batch_size):
            for group in optimizer.param_groups:
                group["lr"] = settings.sgd_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            optimizer.zero_grad(set_to_none=False)
            loss = F.cross_entropy(folded_logits(x, weight, bias, standardizer), y)
            loss = loss + 0.5 * weight_decay * weight.square().sum()
            loss.backward()
            optimizer.step()
            step += 1
            progress.advance()


def _chunks(features: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None, size: int):
    """(x (c, D), y (c,)) chunks of the selected rows: views when rows is None, gathered otherwise."""
    count = len(features) if rows is None else len(rows)
    for start in range(0, count, size):
        if rows is None:
            yield features[start:start + size], labels[start:start + size]
        else:
            picked = rows[start:start + size]  # (c,)
            yield features.index_select(0, picked), labels.index_select(0, picked)


def _steps(solver: str, rows: int, settings: ProbeSettings) -> int:
    """Progress-bar total of one fit: loss evaluations (L-BFGS, at most 1.25 per iteration) or SGD steps."""
    if solver == "lbfgs":
        return settings.lbfgs_iterations * 5 // 4
    return settings.sgd_epochs * math.ceil(rows / settings.sgd_batch_size)


@torch.no_grad()
def accuracy(classifier: LinearClassifier, features: torch.Tensor, labels: torch.Tensor, *,
             rows: torch.Tensor | None = None, chunk_rows: int = 16384) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent (top-5 = top-C when there are fewer than 5 classes)."""
    k = min(5, classifier.weight.shape[0])
    hits1 = torch.zeros((), dtype=torch.int64, device=features.device)
    hits5 = torch.zeros_like(hits1)
    count = 0
    for x, y in _chunks(features, labels, rows, chunk_rows):
        top = classifier.logits(x).topk(k, dim=1).indices  # (c, k)
        match = top == y[:, None]  # (c, k)
        hits1 += match[:, 0].sum()
        hits5 += match.any(dim=1).sum()
        count += len(y)
    if count == 0:
        return 0.0, 0.0
    return 100.0 * hits1.item() / count, 100.0 * hits5.item() / count


def score(classifier: LinearClassifier, features: torch.Tensor, labels: torch.Tensor,
          chunk_rows: int = 16384) -> tuple[float, float]:
    """Top-1 and top-5 (percent) of the trained probe on the test features: the only place test labels are read."""
    _check_inputs(features, labels, None)
    return accuracy(classifier, features, labels, chunk_rows=chunk_rows)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, settings: ProbeSettings | None = None,
                 progress: ProbeProgress | None = None) -> tuple[ProbeResult, float, float]:
    """Train on the training features (the test split is not touched), then score the test split.

    Returns (the training result, test top-1 %, test top-5 %).
    """
    result = train_linear_probe(train_features, train_labels, num_classes, settings, progress)
    top1, top5 = score(result.classifier, test_features, test_labels,
                       chunk_rows=(settings or ProbeSettings()).chunk_rows)
    return result, top1, top5


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> int:
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a float (N, D) matrix, got {features.dtype} {tuple(features.shape)}")
    if labels.shape != (features.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 of shape ({features.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if num_classes is not None and len(labels):
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"training labels must lie in [0, {num_classes}), got [{low}, {high}]")
    return int(features.shape[0])
