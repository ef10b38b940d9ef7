"""The whole ISL schedule (`isl run`): rounds of features, GAN, mining; then evaluation.

Round r = 0..R-1 writes, in the run folder:

    r{r}-features.safetensors    train-features (round 0: plain instance discrimination)
    r{r}-gan.safetensors         train-gan        (not in the last round)
    r{r}-neighbors.safetensors   mine-neighbors   (not in the last round)

then `final-knn.json` (eval-knn --recompute on the last features), with
`--linear-probe` also `final-linear.json` (eval-linear on them), `summary.json`
and the report's PNGs. Before round 0 the two baselines (centred pixels, the
randomly initialised backbone) are scored once and kept in `baselines.json`.
The backbone, bank, optimiser, scheduler and GAN carry
over across rounds, as in the paper's code. Running the same command again
continues where it stopped: finished stages are skipped, an interrupted one
resumes from its checkpoint, so the result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import atomic_write_json, read_header
from isl_cli.checkpoints import partial_path
from isl_cli.config import RunConfig, to_dict
from isl_cli.engine.evaluation import evaluate_checkpoint
from isl_cli.engine.features import FeaturesJob, train_features
from isl_cli.engine.gan import GanJob, train_gan
from isl_cli.engine.imagenet_note import run_line
from isl_cli.engine.mine import MineJob, mine_neighbors
from isl_cli.engine.progress import log
from isl_cli.errors import IslError
from isl_cli.precision import resolve

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
FINAL_FILE = "final-knn.json"
FINAL_LINEAR_FILE = "final-linear.json"
BASELINES_FILE = "baselines.json"


@dataclass
class RunJob:
    """What `isl run` was asked to do."""

    config: RunConfig
    data_dir: Path
    run_dir: Path
    device: torch.device
    overwrite: bool = False
    progress: bool = True
    resume_command: str | None = None
    linear_probe: bool = False  # also the final linear probe (final-linear.json)


def stage_path(run_dir: Path, round_index: int, stage: str) -> Path:
    """`run_dir/r{round}-{stage}.safetensors`."""
    return Path(run_dir) / f"r{round_index}-{stage}.safetensors"


def run_schedule(job: RunJob) -> dict[str, Any]:
    """Run (or continue) every stage of every round, then evaluate and summarise."""
    cfg = job.config.validate()
    _refuse_data_inside_run_dir(job)
    _claim_run_dir(job)
    log(resolve(cfg.features.amp, cfg.features.channels_last, job.device).describe())  # every stage's precision
    if cfg.features.variant == "imagenet":
        log(run_line(cfg.features, cfg.mine))
    timings: dict[str, float] = _load_timings(job.run_dir)
    _baselines(job)
    last = cfg.rounds - 1
    for r in range(cfg.rounds):
        features = stage_path(job.run_dir, r, "features")
        _timed(timings, f"r{r}-features", lambda: _features(job, r, features))
        if r == last:
            break
        gan = stage_path(job.run_dir, r, "gan")
        _timed(timings, f"r{r}-gan", lambda: _gan(job, r, features, gan))
        neighbors = stage_path(job.run_dir, r, "neighbors")
        _timed(timings, f"r{r}-mine", lambda: _mine(job, r, features, gan, neighbors))
        atomic_write_json(job.run_dir / "timings.json", timings)
    final = stage_path(job.run_dir, last, "features")
    final_path = job.run_dir / FINAL_FILE
    if not final_path.exists():
        log("final evaluation: weighted kNN with recomputed training features")
        start = time.perf_counter()
        report = evaluate_checkpoint(final, list(cfg.eval_ks), recompute=True, device=job.device,
                                     data_dir=job.data_dir, progress=job.progress, **_precision(job))
        timings["final-eval"] = time.perf_counter() - start
        atomic_write_json(final_path, report.to_dict())
    if job.linear_probe and not (job.run_dir / FINAL_LINEAR_FILE).exists():
        from isl_cli.engine.linear_eval import final_linear_probe

        start = time.perf_counter()
        probe = final_linear_probe(final, job.data_dir, job.device, progress=job.progress, **_precision(job))
        timings["final-linear"] = time.perf_counter() - start
        atomic_write_json(job.run_dir / FINAL_LINEAR_FILE, probe)
    atomic_write_json(job.run_dir / "timings.json", timings)
    summary = summarize(job.run_dir, cfg.rounds)
    atomic_write_json(job.run_dir / SUMMARY_FILE, summary)
    return summary


# --------------------------------------------------------------------------- stages


def _baselines(job: RunJob) -> None:
    """Score centred pixels and the random-init backbone once per run folder (`baselines.json`)."""
    from isl_cli.data.store import dataset_header
    from isl_cli.engine.baselines import pixel_baseline, random_init_baseline
    from isl_cli.engine.common import resolve_spec

    path = job.run_dir / BASELINES_FILE
    if path.exists():
        return
    cfg = job.config.features
    ks, device = list(job.config.eval_ks), job.device
    log("baselines: weighted kNN of centred pixels and of the randomly initialised backbone")
    try:
        pixels = pixel_baseline(job.data_dir, ks, cfg.temperature, device).to_dict()
    except IslError as exc:  # a file-backed data set: say why, keep going
        pixels = {"source": "pixels", "scored": False, "note": str(exc), "results": []}
    spec = resolve_spec(cfg.arch, cfg.width, cfg.low_dim, cfg.variant, dataset_header(job.data_dir).meta)
    random = random_init_baseline(job.data_dir, ks, cfg.temperature, device, spec=spec, seed=cfg.seed,
                                  num_workers=cfg.num_workers, progress=job.progress,
                                  precision=resolve(cfg.amp, cfg.channels_last, device)).to_dict()
    atomic_write_json(path, {"pixels": pixels, "random": random})


def _features(job: RunJob, r: int, out: Path) -> None:
    if _complete(out):
        log(f"round {r}: {out.name} done, skipping")
        return
    init = stage_path(job.run_dir, r - 1, "features") if r > 0 else None
    neighbors = stage_path(job.run_dir, r - 1, "neighbors") if r > 0 else None
    train_features(FeaturesJob(
        config=job.config.features, data_dir=job.data_dir, out=out, device=job.device, init=init,
        neighbors=neighbors, resume=partial_path(out).exists(), round_index=r,
        variant=job.config.features.variant, progress=job.progress, resume_command=job.resume_command,
    ))


def _gan(job: RunJob, r: int, features: Path, out: Path) -> None:
    if _complete(out):
        log(f"round {r}: {out.name} done, skipping")
        return
    init = stage_path(job.run_dir, r - 1, "gan") if r > 0 else None
    train_gan(GanJob(config=job.config.gan, features=features, out=out, device=job.device, init=init,
                     resume=partial_path(out).exists(), round_index=r, progress=job.progress,
                     resume_command=job.resume_command, **_precision(job)))


def _mine(job: RunJob, r: int, features: Path, gan: Path, out: Path) -> None:
    if out.exists():
        log(f"round {r}: {out.name} done, skipping")
        return
    mine_neighbors(MineJob(config=job.config.mine, features=features, gan=gan, out=out, device=job.device,
                           round_index=r, progress=job.progress, resume=partial_path(out).exists(),
                           resume_command=job.resume_command, **_precision(job)))


def _precision(job: RunJob) -> dict[str, Any]:
    """Every stage's backbone runs at the features config's precision (--amp, --channels-last)."""
    return {"amp": job.config.features.amp, "channels_last": job.config.features.channels_last}


def _complete(path: Path) -> bool:
    return path.exists() and bool(read_header(path).meta.get("complete"))


def _timed(timings: dict[str, float], key: str, stage) -> None:
    start = time.perf_counter()
    stage()
    timings[key] = timings.get(key, 0.0) + (time.perf_counter() - start)


def _load_timings(run_dir: Path) -> dict[str, float]:
    path = run_dir / "timings.json"
    if path.exists():
        try:
            return {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError):
            return {}
    return {}


# --------------------------------------------------------------------------- run folder


def _claim_run_dir(job: RunJob) -> None:
    """Record the resolved config; refuse to mix with a folder that holds a different one."""
    run_dir = job.run_dir
    record = {"config": to_dict(job.config), "data_dir": str(job.data_dir)}
    path = run_dir / CONFIG_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = None
        if existing != json.loads(json.dumps(record)):
            if not job.overwrite:
                diff = _config_diff(existing, record)
                raise IslError(f"{run_dir} holds a run with a different config ({diff}); use another --run-dir, "
                               "or --overwrite to discard that run")
            _clear(run_dir)
    elif run_dir.exists() and any(run_dir.glob("r*-*.safetensors")):
        if not job.overwrite:
            raise IslError(f"{run_dir} holds stage files but no {CONFIG_FILE}; use another --run-dir or --overwrite")
        _clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def _refuse_data_inside_run_dir(job: RunJob) -> None:
    """The run folder may be emptied (--overwrite): it must never hold the data set it reads."""
    data, run = Path(job.data_dir).resolve(), Path(job.run_dir).resolve()
    if data == run or run in data.parents:
        raise IslError(f"--run-dir {job.run_dir} holds the data set folder {job.data_dir}, which the run reads "
                       "(and --overwrite would delete); choose another --run-dir")


def _clear(run_dir: Path) -> None:
    from isl_cli import distributed

    log(f"[yellow]--overwrite: discarding the previous run in {run_dir}[/yellow]")
    if not distributed.context().is_main:
        distributed.barrier()
        return
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    distributed.barrier()


def _config_diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unreadable config.json"
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k))
    shown = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------- summary


def summarize(run_dir: Path, rounds: int) -> dict[str, Any]:
    """Per-round figures from the artifacts' metadata (kNN, neighbours, precision, time)."""
    timings = _load_timings(run_dir)
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
                        "passes", "similarity_precision", "similarity_pairs"):
                row[f"mined_{key}"] = stats.get(key)
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
