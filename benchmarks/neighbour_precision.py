"""The mechanism, measured: how precise must neighbours be for round 1 to gain from them?

Usage:
  isl train-features --data data/shapes --width 0.25 --epochs 30 --out runs/np/r0-features.safetensors
  python benchmarks/neighbour_precision.py --r0 runs/np/r0-features.safetensors --epochs 10 --png np.png
      [--partners 2] [--precisions 1.0 0.8 0.6 0.4 chance] [--seed 0] [--k 200] [--work-dir DIR]
      [--data DIR] [--device auto]

From one round-0 features checkpoint R0, for each precision p a hand-made
neighbours file: every training image gets m partners (--partners); a partner
shares the image's label with probability p, otherwise it is a random image of
another class ("chance" is the probability that two random distinct images
share a label, so those partners are as good as random ones). Round 1 is then
`train-features --init R0 --neighbors FILE --epochs E` (the ISL loss), and the
control is the same E epochs from R0 without neighbours (instance loss), same
seed. Every result is scored by weighted kNN with recomputed training features.
The script prints kNN top-1 per p, its gain over the control, and the
break-even precision (linear interpolation where the gain crosses 0); --png
draws the gain against p.

LABELS are used only to build these oracle neighbours (what a miner of
precision p would hand over); the method never uses labels.

The stages write into WORK_DIR (default: beside R0, `np-<R0 name>/e<E>-m<m>-s<seed>`);
run the same command again to reuse finished stages (an interrupted one resumes).
Results also go to WORK_DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from isl_cli.artifacts import read_header
from isl_cli.checkpoints import partial_path, save_neighbors
from isl_cli.config import FeaturesConfig, from_dict
from isl_cli.data.store import load_split
from isl_cli.device import resolve_device
from isl_cli.engine.baselines import pixel_baseline
from isl_cli.engine.evaluation import evaluate_checkpoint
from isl_cli.engine.features import FeaturesJob, train_features
from isl_cli.engine.state import generator_for
from isl_cli.errors import IslError
from isl_cli.neighbors import NeighborGraph
from isl_cli.similarity_pairs import pair_precision

DEFAULT_PRECISIONS = ("1.0", "0.8", "0.6", "0.4", "chance")
LABELS_NOTE = ("labels are used only to build the hand-made neighbours of this oracle experiment; "
               "the method never uses labels")


def chance_precision(labels: torch.Tensor) -> float:
    """Probability that two random distinct images share a label."""
    counts = torch.bincount(labels).double()  # (C,)
    n = float(counts.sum())
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def handmade_pairs(labels: torch.Tensor, precision: float, partners: int, generator: torch.Generator) -> torch.Tensor:
    """(N * partners, 2) pairs (i, partner): the partner shares i's label with probability `precision`.

    A same-label partner is uniform over i's class without i; otherwise it is uniform over the
    other classes' images. An image alone in its class always gets another class's image.
    """
    n = len(labels)
    order = torch.argsort(labels, stable=True)  # (N,) images grouped by class
    counts = torch.bincount(labels)  # (C,)
    starts = torch.cumsum(counts, 0) - counts  # (C,) first position of each class in `order`
    position = torch.empty(n, dtype=torch.int64)
    position[order] = torch.arange(n)  # (N,) where each image sits in `order`
    anchors = torch.arange(n).repeat_interleave(partners)  # (P,)
    cls = labels[anchors]  # (P,)
    size = counts[cls]  # (P,)
    if bool((size == n).any()):
        raise ValueError("hand-made neighbours need at least two classes")
    same = (torch.rand(len(anchors), generator=generator, dtype=torch.float64) < precision) & (size > 1)  # (P,)
    u_same = torch.rand(len(anchors), generator=generator, dtype=torch.float64)  # (P,)
    u_other = torch.rand(len(anchors), generator=generator, dtype=torch.float64)  # (P,)
    pick = torch.minimum((u_same * (size - 1)).long(), (size - 2).clamp(min=0))  # (P,) in 0..size-2
    in_class = starts[cls] + pick  # (P,)
    in_class += (in_class >= position[anchors]).long()  # skip the anchor itself
    rest = torch.minimum((u_other * (n - size)).long(), n - size - 1)  # (P,) in 0..n-size-1
    out_class = rest + size * (rest >= starts[cls]).long()  # (P,) skip the anchor's class block
    partner = order[torch.where(same, in_class, out_class)]  # (P,)
    return torch.stack([anchors, partner], dim=1)  # (P, 2)


def break_even(points: list[tuple[float, float]]) -> tuple[float | None, str]:
    """Precision where the gain crosses 0 going up (linear interpolation), and a sentence saying so.

    points: (precision, gain) pairs. The crossing is the highest one: below it neighbours do not help.
    """
    points = sorted(points)
    if not points:
        return None, "nothing measured"
    if points[-1][1] <= 0:
        return None, f"none: no precision tested helps (gain <= 0 up to p = {points[-1][0]:.2f})"
    for (p_lo, g_lo), (p_hi, g_hi) in zip(reversed(points[:-1]), reversed(points[1:])):
        if g_lo <= 0 < g_hi:
            value = p_lo + (p_hi - p_lo) * (0.0 - g_lo) / (g_hi - g_lo)
            return value, f"{value:.3f} (gain crosses 0 between p = {p_lo:.2f} and {p_hi:.2f})"
    return None, f"below {points[0][0]:.2f}: every precision tested helps"


def parse_precisions(values: list[str], chance: float) -> list[tuple[str, float]]:
    out = []
    for value in values:
        if value == "chance":
            out.append(("chance", chance))
            continue
        p = float(value)
        if not 0.0 <= p <= 1.0:
            raise SystemExit(f"neighbour_precision: precision {value} is not in [0, 1]")
        out.append((f"{p:g}", p))
    return out


def round_one(r0: Path, out: Path, data_dir: Path, cfg: FeaturesConfig, device: torch.device,
              neighbors: Path | None) -> None:
    """E epochs from R0 (with neighbours: the ISL loss), reusing a finished output, resuming a partial one."""
    if out.exists() and read_header(out, "features").meta.get("complete"):
        print(f"  {out.name}: done, reused")
        return
    train_features(FeaturesJob(config=cfg, data_dir=data_dir, out=out, device=device, init=r0, neighbors=neighbors,
                               resume=partial_path(out).exists(), round_index=1, progress=False))


def top1(path: Path, data_dir: Path, k: int, device: torch.device) -> float:
    report = evaluate_checkpoint(path, [k], recompute=True, device=device, data_dir=data_dir, progress=False)
    if not report.scored:
        raise SystemExit(f"neighbour_precision: {report.note}")
    return float(report.results[0]["top1"])


def pixel_top1(data_dir: Path, k: int, temperature: float, device: torch.device) -> float | None:
    """The centred-pixel baseline (None for a data set stored as files)."""
    try:
        report = pixel_baseline(data_dir, [k], temperature, device)
    except IslError:
        return None
    return float(report.results[0]["top1"])


def draw(png: Path, rows: list[dict], control: float, crossing: float | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = sorted(rows, key=lambda r: r["precision"])
    ax.plot([r["precision"] for r in rows], [r["gain"] for r in rows], marker="o", color="tab:blue",
            label="round 1 with neighbours minus control")
    for r in rows:
        if r["name"] == "chance":
            ax.annotate("chance", (r["precision"], r["gain"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=1)
    if crossing is not None:
        ax.axvline(crossing, color="tab:red", linestyle="--", linewidth=1, label=f"break-even p = {crossing:.2f}")
    ax.set_xlabel("neighbour precision p (share of same-label partners)")
    ax.set_ylabel("kNN top-1 gain over the control (points)")
    ax.set_title(f"{title}\ncontrol (no neighbours): {control:.1f}% top-1", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--r0", type=Path, required=True, help="round-0 features checkpoint")
    parser.add_argument("--epochs", type=int, required=True, help="E: epochs of round 1 (and of the control)")
    parser.add_argument("--partners", type=int, default=2, help="m: hand-made partners per image [2]")
    parser.add_argument("--precisions", nargs="+", default=list(DEFAULT_PRECISIONS),
                        help="precisions p to test; 'chance' = the label chance level [1.0 0.8 0.6 0.4 chance]")
    parser.add_argument("--seed", type=int, default=0, help="seed of round 1, the control and the hand-made pairs")
    parser.add_argument("--k", type=int, default=200, help="k of the weighted kNN [200]")
    parser.add_argument("--data", type=Path, default=None, help="data set folder [default: the one R0 records]")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the stages write")
    parser.add_argument("--png", type=Path, default=None, help="draw the gain against p into this PNG")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.epochs < 1 or args.partners < 1:
        raise SystemExit("neighbour_precision: --epochs and --partners must be positive")

    header = read_header(args.r0, "features")
    data_dir = args.data or Path(header.meta.get("dataset", ""))
    device = resolve_device(args.device)
    train = load_split(data_dir, "train", fingerprint=header.fingerprint)
    labels = train.labels  # (N,)
    if not train.labelled:
        raise SystemExit("neighbour_precision: the training split has unknown labels; the oracle needs them all")
    cfg = replace(from_dict(FeaturesConfig, header.config), epochs=args.epochs, seed=args.seed).validate()
    work = args.work_dir or args.r0.parent / f"np-{args.r0.stem}"
    work = work / f"e{args.epochs}-m{args.partners}-s{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    chance = chance_precision(labels)
    print(f"NOTE: {LABELS_NOTE}.")
    print(f"R0 {args.r0} on {data_dir} ({len(train)} training images), round 1: {args.epochs} epochs, "
          f"{args.partners} partners per image, seed {args.seed}, chance precision {chance:.3f}")

    r0_top1 = top1(args.r0, data_dir, args.k, device)
    control_path = work / "control-features.safetensors"
    round_one(args.r0, control_path, data_dir, cfg, device, None)
    control = top1(control_path, data_dir, args.k, device)
    rows = []
    for name, p in parse_precisions(args.precisions, chance):
        pairs = handmade_pairs(labels, p, args.partners, generator_for(args.seed, "handmade", f"{p:.6f}", args.partners))
        graph_pairs = NeighborGraph.from_pairs(pairs, len(train)).pairs()  # (E, 2) symmetric, deduplicated
        nfile = work / f"p{name}-neighbors.safetensors"
        save_neighbors(nfile, pairs, fingerprint=header.fingerprint, num_images=len(train), round_index=0,
                       meta={"handmade": {"precision": p, "partners": args.partners, "seed": args.seed},
                             "labels_note": LABELS_NOTE})
        out = work / f"p{name}-features.safetensors"
        round_one(args.r0, out, data_dir, cfg, device, nfile)
        acc = top1(out, data_dir, args.k, device)
        rows.append({"name": name, "precision": p, "realised_precision": pair_precision(graph_pairs, labels),
                     "pairs": int(len(graph_pairs)), "top1": acc, "gain": acc - control})

    crossing, sentence = break_even([(r["precision"], r["gain"]) for r in rows])
    pixels = pixel_top1(data_dir, args.k, cfg.temperature, device)
    print(f"\nweighted kNN top-1 (k={args.k}, recomputed features), %: R0 {r0_top1:.2f}, "
          f"control ({args.epochs} more epochs, no neighbours) {control:.2f}, centred pixels "
          + ("n/a (images stored as files)" if pixels is None else f"{pixels:.2f}"))
    print(f"{'p':>8} {'realised':>9} {'pairs':>8} {'top-1':>7} {'gain':>7}")
    for r in sorted(rows, key=lambda r: -r["precision"]):
        print(f"{r['name']:>8} {r['realised_precision']:>9.3f} {r['pairs']:>8} {r['top1']:>7.2f} {r['gain']:>+7.2f}")
    print(f"break-even precision: {sentence}")
    results = {"r0": str(args.r0), "data": str(data_dir), "epochs": args.epochs, "partners": args.partners,
               "seed": args.seed, "k": args.k, "chance": chance, "r0_top1": r0_top1, "control_top1": control, "pixels_top1": pixels,
               "rows": rows, "break_even": crossing, "break_even_text": sentence, "labels_note": LABELS_NOTE}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.png is not None:
        title = (f"{data_dir.name}: round 1 of {args.epochs} epochs from {args.r0.name},\n"
                 f"{args.partners} hand-made partners per image (labels used only to make them)")
        draw(args.png, rows, control, crossing, title)
        print(f"curve: {args.png}")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except IslError as exc:
        raise SystemExit(f"neighbour_precision: {exc}") from None
