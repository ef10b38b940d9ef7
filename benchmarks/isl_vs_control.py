"""The paper's claim, tested: ISL against its control at the same epochs, from one round 0.

Usage:
  python benchmarks/isl_vs_control.py --data DATA --work WORK [--preset cpu] [--arms control gan similarity]
      [--seed 0] [--threads N] [--break-even NP_RESULTS.json] [--png study.png] [--title NAME]

Three arms, each an `isl run` with the preset's schedule (4 rounds of 200 epochs for `cpu`), all starting from
the same round 0 (WORK/round0, trained once, adopted with `isl run --start-from`):

  control      round 0 continued without neighbours for the same total epochs (`--miner none`)
  gan          ISL: each round's GAN mines the next round's neighbours (`--miner gan`, the paper's)
  similarity   ISL with the plain-similarity miner (`--miner similarity`, AND-style)

For every arm and round it reports the weighted kNN with recomputed training features (k = 200), the pairs
mined that round with their precision next to as many pairs by plain similarity and chance, the GAN's proposal
counts (what each mining test rejected), and the final linear probe; the break-even precision comes from
`benchmarks/neighbour_precision.py`'s results.json when given (--break-even). It writes WORK/study.json and
WORK/study-table.txt (a markdown table), and with --png a plot of kNN (bank, during training) against epochs for
the three arms, with the centred-pixel and random-backbone baselines as lines.

Each `isl run` resumes where it stopped, so run the same command again after any interruption. Arms are
independent: on 2 cores, two commands with one arm each and `--threads 1` run side by side faster than one
after the other with 2 threads (start round 0 first: `--arms` with no name trains round 0 alone).

LABELS are used only to score kNN and pair precision; no run uses them for training or mining.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from isl_cli.artifacts import atomic_write_json, read_header
from isl_cli.config import PRESET_ROUNDS
from isl_cli.data.store import load_split
from isl_cli.device import resolve_device
from isl_cli.engine.embedding import embed
from isl_cli.engine.evaluation import evaluate_checkpoint
from isl_cli.engine.features_file import open_features
from isl_cli.engine.run_folder import stage_path
from isl_cli.knn import ranked_classes_by_chunk
from isl_cli.precision import resolve

BOOTSTRAP_DRAWS = 10_000

ARMS = {"control": "none", "gan": "gan", "similarity": "similarity"}
COLOURS = {"control": "tab:grey", "gan": "tab:red", "similarity": "tab:blue"}


def isl_run(args: argparse.Namespace, run_dir: Path, *extra: str) -> None:
    """One `isl run` (resumable) with the study's preset, seed and threads; stops the study if it fails."""
    command = [sys.executable, "-m", "isl_cli", "run", "--data", str(args.data), "--preset", args.preset,
               "--run-dir", str(run_dir), "--seed", str(args.seed), "--no-report", "--quiet", *extra]
    if args.threads:
        command += ["--threads", str(args.threads)]
    print("$", " ".join(command[2:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"{run_dir}: isl run failed; run this script again to resume it")


def recomputed_knn(features: Path, args: argparse.Namespace) -> dict | None:
    """kNN top-1/top-5 with recomputed training features, cached beside the file."""
    cache = features.with_suffix(".knn.json")
    if cache.exists():
        return json.loads(cache.read_text())
    if not features.exists() or not read_header(features).meta.get("complete"):
        return None
    config = read_header(features).config
    report = evaluate_checkpoint(features, [200], recompute=True, device=resolve_device(args.device),
                                 progress=False, amp=config.get("amp", "none"),
                                 channels_last=bool(config.get("channels_last")))
    result = report.results[0] if report.scored else None
    atomic_write_json(cache, result)
    return result


def test_hits(features: Path, args: argparse.Namespace) -> torch.Tensor | None:
    """(Q,) bool: whether each test image's weighted-kNN top-1 (k = 200, recomputed training features) is right.

    Cached beside the file. The same embeddings and kNN as `recomputed_knn`, kept per image so that two arms can
    be compared on the same test images.
    """
    cache = features.with_suffix(".hits.json")
    if cache.exists():
        return torch.tensor(json.loads(cache.read_text()), dtype=torch.bool)
    if not features.exists() or not read_header(features).meta.get("complete"):
        return None
    device = resolve_device(args.device)
    config = read_header(features).config
    precision = resolve(config.get("amp", "none"), bool(config.get("channels_last")), device)
    loaded = open_features(features, device)
    precision.prepare(loaded.model)
    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    test = load_split(loaded.data_dir, "test", fingerprint=loaded.fingerprint)
    queries = embed(loaded.model, test, loaded.spec, device=device, precision=precision)  # (Q, D)
    keys = embed(loaded.model, train, loaded.spec, device=device, precision=precision)  # (N, D)
    num_classes = int(train.labels.max()) + 1
    k = min(200, len(train))
    best = torch.cat([ranked[0][:, 0] for _, ranked in ranked_classes_by_chunk(
        queries, keys, train.labels.to(device), (k,), float(config.get("temperature", 0.1)), num_classes,
        query_chunk=1024, key_chunk=8192)])  # (Q,) predicted class
    hits = (best.cpu() == test.labels.cpu())  # (Q,)
    atomic_write_json(cache, hits.int().tolist())
    return hits


def paired_difference(hits: torch.Tensor, control: torch.Tensor, seed: int = 0) -> dict:
    """An arm's top-1 minus the control's on the same test images, with a 95% bootstrap interval over the images.

    The interval covers the test sample only (which images were drawn), not the training run's own spread
    (another seed), which would widen it.
    """
    diff = hits.double() - control.double()  # (Q,) in {-1, 0, 1}
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, diff.numel(), (BOOTSTRAP_DRAWS, diff.numel()), generator=generator)  # (B, Q)
    means = 100 * diff[draws].mean(dim=1)  # (B,)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"delta": 100 * float(diff.mean()), "ci95": [low, high],
            "only_arm": int((hits & ~control).sum()), "only_control": int((control & ~hits).sum())}


def arm_rows(arm: str, run_dir: Path, rounds: int, args: argparse.Namespace) -> list[dict]:
    """Per round: recomputed kNN at its end and what was mined after it."""
    rows = []
    for r in range(rounds):
        features = stage_path(run_dir, r, "features")
        knn = recomputed_knn(features, args)
        if knn is None:
            break
        row = {"arm": arm, "round": r, "epochs": int(read_header(features).meta.get("total_epochs", 0)),
               "knn_top1": knn["top1"], "knn_top5": knn["top5"]}
        control = stage_path(args.work / "control", r, "features")
        if arm != "control" and r > 0:  # round 0 is one file for every arm
            hits, control_hits = test_hits(features, args), test_hits(control, args)
            if hits is not None and control_hits is not None:
                row["vs_control"] = paired_difference(hits, control_hits, args.seed)
        neighbors = stage_path(run_dir, r, "neighbors")
        if neighbors.exists():
            stats = read_header(neighbors).meta.get("stats", {})
            row.update({k: stats.get(k) for k in ("new_pairs", "new_precision", "similarity_precision",
                                                  "chance_precision", "passes", "reason", "proposals")})
        gan = stage_path(run_dir, r, "gan")
        if gan.exists():
            meta = read_header(gan).meta
            row.update(gan_epochs=meta.get("epochs"), gan_stop=meta.get("stop_reason"))
        rows.append(row)
    return rows


def curve(run_dir: Path, rounds: int) -> list[tuple[int, float]]:
    """(epoch, bank kNN top-1) during training, from the last finished round's history (it holds every round)."""
    for r in reversed(range(rounds)):
        features = stage_path(run_dir, r, "features")
        if features.exists():
            history = read_header(features).meta.get("history", [])
            return [(h["epoch"], h["knn_top1"]) for h in history if "knn_top1" in h]
    return []


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def baselines(work: Path) -> dict[str, float]:
    """Top-1 of the centred pixels and the random-init backbone (k = 200), from round 0's run."""
    found = read_json(work / "round0" / "baselines.json") or {}
    return {name: report["results"][0]["top1"] for name, report in found.items()
            if report.get("scored") and report.get("results")}


def break_even(path: Path | None) -> float | None:
    if path is None:
        return None
    results = json.loads(Path(path).read_text())
    return results.get("break_even")


def markdown(title: str, rows: list[dict], finals: dict, base: dict, even: float | None) -> str:
    """The study's table: per arm and round, kNN and mining; then the final figures."""
    lines = [f"### {title}", "",
             f"Baselines (kNN top-1, k = 200): centred pixels {base.get('pixels', float('nan')):.1f}, random-init "
             f"backbone {base.get('random', float('nan')):.1f}. Break-even precision (from round 0's end): "
             + ("-" if even is None else f"{100 * even:.0f}%") + ".", "",
             "| arm | round | epochs | kNN top-1 (recomputed) | vs control, paired (95% CI) | pairs mined "
             "| precision mined / similarity / chance "
             "| GAN proposals: scored / rejected by score / by radius / known / added |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        pct = [row.get(k) for k in ("new_precision", "similarity_precision", "chance_precision")]
        shown = " / ".join("-" if v is None else f"{100 * v:.1f}" for v in pct) if row.get("new_pairs") is not None \
            else ""
        p = row.get("proposals") or {}
        proposals = (f"{p['images']} / {p['rejected_score']} / {p['rejected_radius']} of {p['candidates']} / "
                     f"{p['rejected_known']} / {p['added']}") if p else ""
        paired = row.get("vs_control")
        versus = f"{paired['delta']:+.1f} ({paired['ci95'][0]:+.1f} to {paired['ci95'][1]:+.1f})" if paired else ""
        lines.append(f"| {row['arm']} | {row['round']} | {row['epochs']} | {row['knn_top1']:.2f} | {versus} | "
                     f"{row.get('new_pairs', '') if row.get('new_pairs') is not None else ''} | {shown} | {proposals} |")
    lines += ["", "| arm | final kNN top-1 | vs control | final linear probe top-1 | time after round 0 (min) |",
              "| --- | --- | --- | --- | --- |"]
    control = finals.get("control", {}).get("knn")
    for arm, final in finals.items():
        knn, linear = final.get("knn"), final.get("linear")
        delta = "" if knn is None or control is None or arm == "control" else f"{knn - control:+.2f}"
        lines.append(f"| {arm} | {'-' if knn is None else f'{knn:.2f}'} | {delta} | "
                     f"{'-' if linear is None else f'{linear:.2f}'} | {final.get('minutes', 0):.0f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, title: str, curves: dict, rows: list[dict], base: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, points in curves.items():
        if points:
            wide = arm == "control"  # drawn wide underneath: where an arm equals the control it stays visible
            ax.plot(*zip(*points), color=COLOURS[arm], lw=3.0 if wide else 1.2, alpha=0.5 if wide else 1.0,
                    label=f"{arm} (bank kNN during training)")
        ends = [(r["epochs"], r["knn_top1"]) for r in rows if r["arm"] == arm]
        if ends:
            ax.plot(*zip(*ends), "o", color=COLOURS[arm], ms=5, label=f"{arm}: recomputed, end of each round")
    for name, style in (("pixels", "--"), ("random", ":")):
        if name in base:
            ax.axhline(base[name], color="black", ls=style, lw=1,
                       label=f"{'centred pixels' if name == 'pixels' else 'random-init backbone'} {base[name]:.1f}")
    ax.set_xlabel("epochs (all rounds)")
    ax.set_ylabel("weighted kNN top-1 % (k = 200)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="A data set folder made by isl fetch-data.")
    parser.add_argument("--work", type=Path, required=True, help="Folder of the study's runs and results.")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--break-even", type=Path, default=None,
                        help="results.json of benchmarks/neighbour_precision.py run from round 0's end.")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--title", default=None)
    parser.add_argument("--report-only", action="store_true", help="Train nothing: report what is finished.")
    parser.add_argument("--round0", type=Path, default=None,
                        help="A finished round-0 features file made with the preset's options, adopted as round 0.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = PRESET_ROUNDS[args.preset]
    args.round0_from = ["--start-from", str(args.round0)] if args.round0 else []
    round0 = args.work / "round0"
    if not args.report_only:
        if not (round0 / "final-knn.json").exists():  # finished: arms started side by side skip it
            isl_run(args, round0, "--rounds", "1", "--no-linear-probe", *args.round0_from)
        for arm in args.arms:
            isl_run(args, args.work / arm, "--miner", ARMS[arm], "--start-from",
                    str(stage_path(round0, 0, "features")))
    rows, finals, curves = [], {}, {}
    for arm in ARMS:
        run_dir = args.work / arm
        if not run_dir.exists():
            continue
        rows += arm_rows(arm, run_dir, rounds, args)
        curves[arm] = curve(run_dir, rounds)
        knn, linear = read_json(run_dir / "final-knn.json"), read_json(run_dir / "final-linear.json")
        timings = read_json(run_dir / "timings.json") or {}
        finals[arm] = {"knn": knn["results"][0]["top1"] if knn and knn.get("scored") else None,
                       "linear": linear.get("top1") if linear and linear.get("scored") else None,
                       "minutes": sum(v for k, v in timings.items() if k != "r0-features") / 60}
    base, even = baselines(args.work), break_even(args.break_even)
    title = args.title or f"{args.data.name}: ISL against its control ({args.preset} preset, seed {args.seed})"
    text = markdown(title, rows, finals, base, even)
    atomic_write_json(args.work / "study.json", {"rows": rows, "finals": finals, "baselines": base,
                                                 "break_even_precision": even, "curves": curves})
    (args.work / "study-table.txt").write_text(text)
    print(text)
    if args.png:
        plot(args.png, title, curves, rows, base)
        print(f"figure: {args.png}")


if __name__ == "__main__":
    main()
