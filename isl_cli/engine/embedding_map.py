"""embedding.png: a 2-D t-SNE map of a run's test embeddings, coloured by class (drawn by `isl report`).

The embeddings are the final round's backbone applied to the un-augmented test images (the training images when
there is no test split), at most `max_points` of them, a random subset fixed by the seed. scikit-learn's t-SNE lays
them out (PCA initialisation, perplexity 30 or less for very few points) in one thread: on 2 busy cores, 2 OpenMP
threads took 37 s for 1,000 points where one took 4.5 s (their barriers spin-wait). t-SNE keeps neighbourhoods, not distances: tight, separate clusters of one colour mean the features group a
class together; the gaps between clusters and their sizes mean little.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from isl_cli.data.store import Split
from isl_cli.engine.embedding import embed

#: Points on the map by default: t-SNE of 2,000 points costs seconds on 2 CPU cores.
MAX_POINTS = 2000
#: Fewer points than this make no map worth drawing.
MIN_POINTS = 5
PERPLEXITY = 30.0
MISSING = "embedding.png skipped: scikit-learn is not installed (pip install scikit-learn)"


@dataclass
class EmbeddingMap:
    """The 2-D layout of some embeddings, their labels (-1 = unknown) and what it cost."""

    coords: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,) int
    classes: list[str]
    split: str  # "test" or "train"
    total: int  # images in that split
    embed_seconds: float
    tsne_seconds: float


def tsne_available() -> bool:
    """Whether scikit-learn's t-SNE can be imported."""
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return False
    return True


def choose_points(count: int, max_points: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most `max_points` of `count` images, a random subset fixed by `seed`."""
    if count <= max_points:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values


def tsne_2d(features: np.ndarray, seed: int, threads: int = 1) -> np.ndarray:
    """(n, D) float features -> (n, 2) t-SNE coordinates (deterministic for a seed on one machine)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(PERPLEXITY, (len(features) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=threads):
        return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def embedding_map(model: torch.nn.Module, spec, train: Split, test: Split, *, device: torch.device,
                  max_points: int = MAX_POINTS, seed: int = 0) -> EmbeddingMap | None:
    """Embed at most `max_points` test images (training images without a test split) and lay them out in 2-D.

    Returns None when there are fewer than MIN_POINTS images to show.
    """
    split, name = (test, "test") if len(test) else (train, "train")
    chosen = choose_points(len(split), max_points, seed)
    if len(chosen) < MIN_POINTS:
        return None
    start = time.perf_counter()
    features = embed(model, split, spec, device=device, subset=chosen).float().cpu().numpy()  # (n, D)
    embedded = time.perf_counter()
    coords = tsne_2d(features, seed)  # (n, 2)
    labels = split.labels[chosen].numpy() if split.labels is not None else np.full(len(chosen), -1)
    return EmbeddingMap(coords=coords, labels=labels, classes=list(split.classes or []), split=name,
                        total=len(split), embed_seconds=embedded - start, tsne_seconds=time.perf_counter() - embedded)


def draw(plt, layout: EmbeddingMap, title: str):
    """A scatter of the layout coloured by class, with a legend of class names; returns the figure."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    labels = layout.labels
    known = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if not known:
        ax.scatter(layout.coords[:, 0], layout.coords[:, 1], s=8, color="tab:blue", alpha=0.7, linewidths=0)
        ax.text(0.01, 0.99, "labels unknown: one colour", transform=ax.transAxes, va="top", fontsize=8)
    else:
        colours = _colours(plt, len(known))
        for colour, label in zip(colours, known):
            mask = labels == label
            name = layout.classes[label] if label < len(layout.classes) else str(label)
            ax.scatter(layout.coords[mask, 0], layout.coords[mask, 1], s=8, color=colour, alpha=0.75, linewidths=0,
                       label=f"{name} ({int(mask.sum())})")
        if (labels < 0).any():
            mask = labels < 0
            ax.scatter(layout.coords[mask, 0], layout.coords[mask, 1], s=8, color="lightgrey", linewidths=0,
                       label=f"unknown ({int(mask.sum())})")
        if len(known) <= 30:
            ax.legend(fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    shown = len(labels)
    subset = f"all {shown}" if shown == layout.total else f"{shown} of {layout.total} (random, fixed seed)"
    ax.set_xlabel(f"t-SNE of {subset} {layout.split} embeddings; neighbourhoods are kept, distances between "
                  "clusters are not", fontsize=8)
    return fig


def _colours(plt, count: int) -> list:
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("turbo")(i / max(count - 1, 1)) for i in range(count)]


def write_embedding_map(model: torch.nn.Module, spec, train: Split, test: Split, path: Path, *, device: torch.device,
                        plt, save: Callable, title: str, max_points: int = MAX_POINTS, seed: int = 0,
                        log: Callable[[str], None] = print) -> Path | None:
    """Draw embedding.png; None (and one log line saying why) when it cannot be drawn."""
    if not tsne_available():
        log(MISSING)
        return None
    layout = embedding_map(model, spec, train, test, device=device, max_points=max_points, seed=seed)
    if layout is None:
        log(f"embedding.png skipped: fewer than {MIN_POINTS} images to show")
        return None
    log(f"embedding map: {len(layout.labels)} {layout.split} images embedded in {layout.embed_seconds:.1f} s, "
        f"t-SNE in {layout.tsne_seconds:.1f} s")
    return save(draw(plt, layout, title), path)
