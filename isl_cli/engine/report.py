"""PNG figures of a run folder (`isl report`, and the end of `isl run`).

knn.png         kNN top-1 per epoch across rounds (round boundaries marked), with the
                baselines of baselines.json (centred pixels, random init) as lines
losses.png      the loss terms per epoch (total, instance, affinity, hard positive)
neighbors.png   neighbours per image and mined-pair precision per round (with chance and
                as many pairs chosen by plain similarity in the same bank)
gan.png         generator and discriminator losses per GAN epoch, per round
retrieval.png   test images, each with its 10 nearest training images
                (green border: same label, red: different)
embedding.png   a 2-D t-SNE map of the final round's test embeddings, coloured by class
                (isl_cli.engine.embedding_map; scikit-learn)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import read_header
from isl_cli.engine.figures import pyplot, save
from isl_cli.engine.retrieval_figure import retrieval_figure
from isl_cli.errors import IslError


def _stage_files(run_dir: Path, stage: str) -> list[tuple[int, Path]]:
    found = []
    for path in run_dir.glob(f"r*-{stage}.safetensors"):
        head = path.name.split("-", 1)[0][1:]
        if head.isdigit():
            found.append((int(head), path))
    return sorted(found)


def write_report(run_dir: Path, *, device: torch.device | None = None, num_queries: int = 8,
                 seed: int = 0, data_dir: Path | None = None, map_points: int = 2000) -> list[Path]:
    """Draw every figure the run folder has data for; returns the PNG paths.

    `map_points`: at most this many test images on embedding.png (0: no map).
    """
    run_dir = Path(run_dir)
    features = _stage_files(run_dir, "features")
    if not features:
        raise IslError(f"{run_dir}: holds no r*-features.safetensors; nothing to draw")
    last = features[-1][1]
    history = read_header(last, "features").meta.get("history", [])
    out = []
    if history:
        out.append(_knn_figure(history, run_dir / "knn.png", _baselines(run_dir)))
        out.append(_loss_figure(history, run_dir / "losses.png"))
    neighbors = _stage_files(run_dir, "neighbors")
    if neighbors:
        out.append(_neighbors_figure(neighbors, run_dir / "neighbors.png"))
    gans = _stage_files(run_dir, "gan")
    if gans:
        out.append(_gan_figure(gans, run_dir / "gan.png"))
    device = device or torch.device("cpu")
    loaded, train, test = _open_final(last, device, data_dir)
    picture = retrieval_figure(loaded, train, test, run_dir / "retrieval.png", device, num_queries, seed)
    if picture is not None:
        out.append(picture)
    if map_points > 0:
        picture = _embedding_figure(loaded, train, test, run_dir / "embedding.png", device, map_points, seed,
                                    features[-1][0])
        if picture is not None:
            out.append(picture)
    return out


def _open_final(features: Path, device: torch.device, data_dir: Path | None):
    """The final features file with its backbone, and its data set's two splits."""
    from isl_cli.data.store import load_split
    from isl_cli.engine.features_file import open_features

    loaded = open_features(features, device, data_dir)
    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    test = load_split(loaded.data_dir, "test", fingerprint=loaded.fingerprint)
    return loaded, train, test


def _embedding_figure(loaded, train, test, path: Path, device: torch.device, max_points: int, seed: int,
                      round_index: int) -> Path | None:
    from isl_cli.engine.embedding_map import write_embedding_map
    from isl_cli.engine.progress import log

    name = train.name or loaded.data_dir.name
    title = f"{name}: embeddings of the round-{round_index} backbone ({loaded.spec.arch}, D = {loaded.spec.low_dim})"
    return write_embedding_map(loaded.model, loaded.spec, train, test, path, device=device, plt=pyplot(),
                               save=save, title=title, max_points=max_points, seed=seed, log=log)


def _round_marks(ax, history: list[dict[str, Any]]) -> None:
    seen = set()
    for rec in history:
        r = rec.get("round", 0)
        if r not in seen and r > 0:
            ax.axvline(rec["epoch"] - 0.5, color="grey", linestyle=":", linewidth=1)
            ax.text(rec["epoch"] - 0.5, ax.get_ylim()[1], f" round {r}", va="top", fontsize=8, color="grey")
        seen.add(r)


def _baselines(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "baselines.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _baseline_lines(ax, baselines: dict[str, Any], eval_k: int | None) -> None:
    """A horizontal line per scored baseline: top-1 at the training evaluations' k when it was scored, else its first k."""
    from isl_cli.engine.baselines import describe

    for key, colour in (("pixels", "tab:grey"), ("random", "tab:brown")):
        report = baselines.get(key) or {}
        results = report.get("results") or []
        if not report.get("scored") or not results:
            continue
        res = next((r for r in results if r["k"] == eval_k), results[0])
        ax.axhline(res["top1"], color=colour, linestyle="-.", linewidth=1.2,
                   label=f"{describe(report)} top-1 (k={res['k']})")


def _knn_figure(history: list[dict[str, Any]], path: Path, baselines: dict[str, Any] | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    evals = [h for h in history if "knn_top1" in h]
    rounds = sorted({h.get("round", 0) for h in evals})
    for r in rounds:
        pts = [h for h in evals if h.get("round", 0) == r]
        ax.plot([h["epoch"] for h in pts], [h["knn_top1"] for h in pts], marker="o", label=f"round {r} top-1")
        ax.plot([h["epoch"] for h in pts], [h["knn_top5"] for h in pts], marker=".", linestyle="--", alpha=0.5,
                label=f"round {r} top-5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted kNN accuracy (%)")
    ax.set_title("kNN accuracy during training (memory bank vs. test split)")
    ax.grid(alpha=0.3)
    _baseline_lines(ax, baselines or {}, _eval_k(path.parent))
    if evals or baselines:
        ax.legend(fontsize=8)
    _round_marks(ax, history)
    return save(fig, path)


def _eval_k(run_dir: Path) -> int | None:
    path = run_dir / "config.json"
    try:
        return int(json.loads(path.read_text())["config"]["features"]["eval_k"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _loss_figure(history: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    for key, label in (("loss", "total"), ("inst", "instance (|A|=1)"), ("aff", "affinity (|A|>1)"),
                       ("hp", "hard-positive KL")):
        values = [h.get(key, 0.0) for h in history]
        if any(values):
            ax.plot(epochs, values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per image)")
    ax.set_title("feature-learning loss terms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _round_marks(ax, history)
    return save(fig, path)


def _neighbors_figure(files: list[tuple[int, Path]], path: Path) -> Path:
    plt = pyplot()
    rounds, per_image, precision, new_precision, chance, similarity = [], [], [], [], [], []
    for r, file in files:
        meta = read_header(file, "neighbors").meta
        stats = meta.get("stats", {})
        n = meta.get("num_images") or 1
        rounds.append(r)
        per_image.append(stats.get("entries", 0) / n)
        precision.append(_pct(stats.get("precision")))
        new_precision.append(_pct(stats.get("new_precision")))
        chance.append(_pct(stats.get("chance_precision")))
        similarity.append(_pct(stats.get("similarity_precision")))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(rounds, per_image, color="tab:blue")
    left.set_xlabel("round")
    left.set_ylabel("neighbours per image")
    left.set_title("neighbour sets after mining")
    left.set_xticks(rounds)
    if any(v is not None for v in precision):
        right.plot(rounds, precision, marker="o", label="all pairs")
        right.plot(rounds, new_precision, marker="s", label="pairs new this round")
        if any(v is not None for v in similarity):
            right.plot(rounds, similarity, marker="^", linestyle=":", color="tab:green",
                       label="as many by plain similarity")
        # a mark as well as a line: a run with one mining round has no line to draw
        right.plot(rounds, chance, linestyle="--", marker="_", markersize=14, color="grey", label="chance")
        right.set_ylim(0, 100)
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no labels: precision unknown", ha="center", va="center", transform=right.transAxes)
    right.set_xlabel("round")
    right.set_ylabel("same-label pairs (%)")
    right.set_title("mined-pair precision (labels used only here)")
    right.set_xticks(rounds)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _pct(value) -> float | None:
    return None if value is None else 100.0 * float(value)


def _gan_figure(files: list[tuple[int, Path]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for r, file in files:
        meta = read_header(file, "gan").meta
        hist = meta.get("history", [])
        xs = [offset + h["epoch"] for h in hist]
        ax.plot(xs, [h["g_loss"] for h in hist], marker="o", color="tab:red", label="generator" if r == files[0][0] else None)
        ax.plot(xs, [h["d_loss"] for h in hist], marker="o", color="tab:blue", label="discriminator" if r == files[0][0] else None)
        if xs:
            ax.axvspan(xs[0] - 0.5, xs[-1] + 0.5, color="grey", alpha=0.06 * (1 + r % 2))
            ax.text((xs[0] + xs[-1]) / 2, ax.get_ylim()[1], f"round {r}\n{meta.get('stop_reason', '')[:40]}",
                    ha="center", va="top", fontsize=7)
            offset = xs[-1]
    ax.set_xlabel("GAN epoch (all rounds)")
    ax.set_ylabel("BCE loss (epoch mean)")
    ax.set_title("GAN losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
