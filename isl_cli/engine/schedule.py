"""The whole ISL schedule (`isl run`): rounds of features, GAN, mining; then evaluation.

Round r = 0..R-1 writes, in the run folder:

    r{r}-features.safetensors    train-features (round 0: plain instance discrimination)
    r{r}-gan.safetensors         train-gan        (not in the last round; only with --miner gan)
    r{r}-neighbors.safetensors   mine-neighbors   (not in the last round; not with --miner none)

With --miner none (the control of a study) later rounds continue instance
discrimination without neighbours; with `start_from` the run adopts a
finished round-0 features file instead of training round 0 (so that several
runs compare their miners from one round 0).

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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import atomic_write_json, read_header
from isl_cli.checkpoints import partial_path
from isl_cli.config import RunConfig
from isl_cli.engine.evaluation import evaluate_checkpoint
from isl_cli.engine.features import FeaturesJob, train_features
from isl_cli.engine.gan import GanJob, train_gan
from isl_cli.engine.imagenet_note import run_line
from isl_cli.engine.mine import MineJob, mine_neighbors
from isl_cli.engine.progress import log
from isl_cli.engine.round0 import adopt_round0
from isl_cli.engine.run_folder import (
    BASELINES_FILE,
    FINAL_FILE,
    FINAL_LINEAR_FILE,
    SUMMARY_FILE,
    claim_run_dir,
    refuse_data_inside_run_dir,
    stage_path,
)
from isl_cli.engine.run_summary import load_timings, summarize
from isl_cli.errors import IslError
from isl_cli.precision import resolve



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
    start_from: Path | None = None  # a finished round-0 features file to adopt instead of training round 0


def run_schedule(job: RunJob) -> dict[str, Any]:
    """Run (or continue) every stage of every round, then evaluate and summarise."""
    cfg = job.config.validate()
    refuse_data_inside_run_dir(job.data_dir, job.run_dir)
    claim_run_dir(job.run_dir, job.config, job.data_dir, job.overwrite, job.start_from)
    log(resolve(cfg.features.amp, cfg.features.channels_last, job.device).describe())  # every stage's precision
    if cfg.features.variant == "imagenet":
        log(run_line(cfg.features, cfg.mine))
    timings: dict[str, float] = load_timings(job.run_dir)
    _baselines(job)
    if job.start_from is not None:
        adopt_round0(job.start_from, stage_path(job.run_dir, 0, "features"), cfg.features, job.data_dir)
    last = cfg.rounds - 1
    for r in range(cfg.rounds):
        features = stage_path(job.run_dir, r, "features")
        _timed(timings, f"r{r}-features", lambda: _features(job, r, features))
        atomic_write_json(job.run_dir / "timings.json", timings)
        if r == last or cfg.mine.miner == "none":  # the control neither trains a GAN nor mines
            continue
        gan = stage_path(job.run_dir, r, "gan") if cfg.mine.miner == "gan" else None  # similarity: no GAN
        if gan is not None:
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
    from isl_cli.models.spec import resolve_spec

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
    mined = r > 0 and job.config.mine.miner != "none"  # the control: later rounds continue without neighbours
    neighbors = stage_path(job.run_dir, r - 1, "neighbors") if mined else None
    train_features(FeaturesJob(
        config=job.config.features, data_dir=job.data_dir, out=out, device=job.device, init=init,
        neighbors=neighbors, resume=partial_path(out).exists(), round_index=r,
        variant=job.config.features.variant, progress=job.progress, resume_command=job.resume_command,
    ))


def _gan(job: RunJob, r: int, features: Path, out: Path) -> None:
    if _complete(out):
        log(f"round {r}: {out.name} done, skipping")
        return
    init = stage_path(job.run_dir, r - 1, "gan") if r > 0 else None  # the GAN carries over, as in the paper
    train_gan(GanJob(config=job.config.gan, features=features, out=out, device=job.device, init=init,
                     resume=partial_path(out).exists(), round_index=r, progress=job.progress,
                     resume_command=job.resume_command, **_precision(job)))


def _mine(job: RunJob, r: int, features: Path, gan: Path | None, out: Path) -> None:
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
