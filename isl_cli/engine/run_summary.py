"""summary.json of `isl run`: per-round figures read back from the artifacts' metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isl_cli.artifacts import read_header
from isl_cli.config import RunConfig
from isl_cli.engine.imagenet_note import run_line
from isl_cli.engine.run_folder import BASELINES_FILE, CONFIG_FILE, FINAL_FILE, FINAL_LINEAR_FILE, stage_path


def summarize(run_dir: Path, rounds: int) -> dict[str, Any]:
    """Per-round figures from the artifacts' metadata (kNN, neighbours, precision, time)."""
    timings = load_timings(run_dir)
    rows = []
    for r in range(rounds):
        row: dict[str, Any] = {"round": r}
        features = stage_path(run_dir, r, "features")
        if features.exists():
            meta = read_header(features).meta
            evals = [h for h in meta.get("history", []) if h.get("round") == r and "knn_top1" in h]
            if evals:
                row.update(knn_top1=evals[-1]["knn_top1"], knn_top5=evals[-1]["knn_top5"], knn_on=evals[-1]["knn_on"])
            row["epochs"] = int(meta.get("stage_epochs", 0))
            n = None
            if meta.get("graph_entries") is not None:
                n = _num_images(features)
                row["neighbors_per_image"] = meta["graph_entries"] / n if n else None
        gan = stage_path(run_dir, r, "gan")
        if gan.exists():
            gmeta = read_header(gan).meta
            row["gan_epochs"] = gmeta.get("epochs")
            row["gan_stop_reason"] = gmeta.get("stop_reason")
        neighbors = stage_path(run_dir, r, "neighbors")
        if neighbors.exists():
            nmeta = read_header(neighbors).meta
            stats = nmeta.get("stats", {})
            n = nmeta.get("num_images")
            row["mined_entries"] = stats.get("entries")
            row["mined_neighbors_per_image"] = stats.get("entries", 0) / n if n else None
            for key in ("precision", "new_precision", "chance_precision", "share_with_neighbors", "new_pairs",
                        "passes", "similarity_precision", "similarity_pairs", "miner", "reason", "stopped_empty",
                        "proposals", "rejections"):
                row[f"mined_{key}"] = stats.get(key)
            row["mined_reached_quota"] = nmeta.get("reached_quota")
        row["seconds"] = sum(v for k, v in timings.items() if k.startswith(f"r{r}-"))
        rows.append(row)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "rounds": rows}
    final = run_dir / FINAL_FILE
    if final.exists():
        summary["final"] = json.loads(final.read_text())
    if (run_dir / FINAL_LINEAR_FILE).exists():
        summary["final_linear"] = json.loads((run_dir / FINAL_LINEAR_FILE).read_text())
    baselines = run_dir / BASELINES_FILE
    if baselines.exists():
        summary["baselines"] = json.loads(baselines.read_text())
    summary["total_seconds"] = sum(timings.values())
    config = _run_config(run_dir)
    if config is not None:
        imagenet = config.features.variant == "imagenet"
        summary["settings"] = "imagenet" if imagenet else "cifar"
        summary["settings_note"] = run_line(config.features, config.mine) if imagenet else None
    return summary


def _run_config(run_dir: Path) -> RunConfig | None:
    """The run's resolved config from config.json (None when absent or unreadable)."""
    from isl_cli.config import FeaturesConfig, MineConfig, from_dict

    try:
        config = json.loads((Path(run_dir) / CONFIG_FILE).read_text())["config"]
        return RunConfig(features=from_dict(FeaturesConfig, config["features"]),
                         mine=from_dict(MineConfig, config["mine"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _num_images(features: Path) -> int | None:
    info = read_header(features).tensors.get("bank.memory")
    return info.shape[0] if info else None


def load_timings(run_dir: Path) -> dict[str, float]:
    """Seconds per stage so far (`timings.json`; empty when absent or unreadable)."""
    path = run_dir / "timings.json"
    if path.exists():
        try:
            return {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError):
            return {}
    return {}
