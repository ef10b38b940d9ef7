"""The feature-learning stage: backbone + memory bank trained with the ISL loss.

One epoch is a permutation and augmentation drawn from a generator seeded by
(seed, epoch), then for each batch

    1. forward      f = backbone(augment(x))             (B, D), unit rows
    2. logits       z = f @ M.T / T                      (B, N), old bank
    3. loss         ISL (or plain instance loss in round 0)
    4. step         SGD
    5. bank update  M_i <- normalise(m M_i + (1 - m) f_i), no grad

After each epoch: kNN at the evaluation cadence, which steps the LR plateau
scheduler, and one JSON line of metrics. Resume, Ctrl-C, the loss sums and
the checkpoints are the runner's (`engine/loop.py`); the state's file layout
is `features_state.py`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.artifacts import atomic_write_bytes
from isl_cli.checks import training_set
from isl_cli.checkpoints import features_header, metrics_path, partial_path
from isl_cli.config import FeaturesConfig
from isl_cli.engine import features_state
from isl_cli.engine.embedding import batch_source
from isl_cli.engine.features_file import load_train_test
from isl_cli.engine.features_state import FeaturesState
from isl_cli.engine.imagenet_note import features_line
from isl_cli.engine.knn_monitor import KnnMonitor
from isl_cli.engine.loop import Epoch, Stage, refuse_changed_options, run_stage
from isl_cli.engine.progress import log
from isl_cli.engine.state import generator_for
from isl_cli.locks import writes
from isl_cli.losses import instance_loss, isl_loss
from isl_cli.precision import resolve

LOSS_TERMS = ("loss", "inst", "aff", "hp")


@dataclass
class FeaturesJob:
    """What `isl train-features` was asked to do."""

    config: FeaturesConfig
    data_dir: Path
    out: Path
    device: torch.device
    init: Path | None = None
    neighbors: Path | None = None
    resume: bool = False
    overwrite: bool = False
    round_index: int | None = None
    variant: str | None = None
    progress: bool = True
    resume_command: str | None = None
    # config fields the user typed: with --init they are applied over the restored optimiser and scheduler
    # (the others keep the restored state); with --resume they must match the checkpoint's
    given: frozenset[str] = frozenset()


@dataclass
class FeaturesResult:
    """What the stage produced."""

    out: Path
    round: int
    history: list[dict[str, Any]]
    skipped: bool = False

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [Path(job.data_dir) / "train.safetensors", Path(job.data_dir) / "test.safetensors",
                            job.init, job.neighbors])
def train_features(job: FeaturesJob) -> FeaturesResult:
    """Run (or resume) the feature-learning stage and write the features artifact."""
    return run_stage(FeaturesStage(job))


class FeaturesStage(Stage[FeaturesState]):
    """train-features as a checkpointed stage: its state, its epoch, its end of epoch."""

    kind, label, sum_names = "features", "features", LOSS_TERMS

    def __init__(self, job: FeaturesJob):
        super().__init__(job.out, job.device, resume=job.resume, overwrite=job.overwrite, progress=job.progress,
                         resume_command=job.resume_command)
        self.job = job
        resolve(job.config.amp, job.config.channels_last, job.device)  # refuses a bad --amp before any work
        self.train, self.test, self.fingerprint = load_train_test(job.data_dir)
        training_set(len(self.train), job.config.val_split, where=str(job.data_dir))

    # ---- build

    def done(self) -> FeaturesResult:
        meta = features_header(self.out).meta
        return FeaturesResult(self.out, int(meta.get("round", 0)), list(meta.get("history", [])), skipped=True)

    def fresh(self) -> FeaturesState:
        if self.job.config.variant == "imagenet":
            log(features_line(self.job.config))
        return features_state.fresh(self.job, self.train, self.fingerprint)

    def restore(self) -> FeaturesState:
        state = features_state.restore(self.partial, self.train, self.fingerprint, self.device)
        refuse_changed_options(self.job.config, state.cfg, self.job.given, self.partial)
        if state.cfg.variant == "imagenet":
            log(features_line(state.cfg))
        return state

    def begin(self, state: FeaturesState, resumed: bool) -> None:
        cfg = state.cfg
        log(state.precision.describe())
        if resumed:
            log(f"resuming {self.partial} at epoch {state.stage_epochs + 1}/{cfg.epochs}"
                + (f", batch {state.resume_batch}" if state.resume_batch else ""))
        self.source = batch_source(self.train, state.spec, train=True, batch_size=cfg.batch_size, device=self.device,
                                   num_workers=cfg.num_workers)
        self.monitor = KnnMonitor(state, self.train, self.test, self.device)
        self.plain = state.graph.num_entries() == 0
        if self.plain:
            log(f"round {state.round}: plain instance discrimination (no neighbours)")
        else:
            log(f"round {state.round}: ISL loss with {state.graph.num_entries()} neighbour entries")

    # ---- epochs

    def finished(self, state: FeaturesState) -> bool:
        return state.stage_epochs >= state.cfg.epochs

    def epoch_index(self, state: FeaturesState) -> int:
        return state.epoch

    def open_epoch(self, state: FeaturesState):
        generator = generator_for(state.cfg.seed, "features", state.epoch)
        return self.source.batches(generator, start=state.resume_batch), self.source.num_batches()

    def train_one_epoch(self, state: FeaturesState, epoch: Epoch) -> dict[str, float]:
        state.model.train()
        for indices, images in epoch:  # this rank's slice (b,) of each global batch, (b, 3, S, S)
            terms = train_step(state, indices, images, self.plain)
            epoch.record(len(indices), terms)
        return epoch.means()

    def end_epoch(self, state: FeaturesState, metrics: dict[str, float], epoch: Epoch) -> None:
        cfg = state.cfg
        rate = epoch.rate  # training images/s: read before the evaluation, whose forward passes are not training
        record: dict[str, Any] = {"round": state.round, "epoch": state.epoch + 1,
                                  "stage_epoch": state.stage_epochs + 1, **metrics,
                                  "lr": state.optimizer.param_groups[0]["lr"]}
        cadence = (state.epoch + 1) % cfg.eval_every == 0
        if cadence or state.stage_epochs + 1 == cfg.epochs:
            result = self.monitor.evaluate()
            if result is not None:
                record.update(result)
                if cadence:
                    state.scheduler.step(result["knn_top1"])
        record["seconds"] = round(epoch.seconds, 3)
        record["images_per_s"] = round(rate, 1)
        state.history.append(record)
        state.stage_epochs += 1
        write_metrics(self.out, state.history)
        knn = f", kNN top-1 {record['knn_top1']:.2f}% ({record['knn_on']})" if "knn_top1" in record else ""
        log(f"epoch {record['epoch']} (round {state.round}): loss {record['loss']:.4f}{knn}, "
            f"lr {record['lr']:.4g}, {record['images_per_s']:.0f} img/s")

    # ---- artifacts

    def save(self, state: FeaturesState, path: Path, complete: bool) -> None:
        features_state.save(state, path, complete, self.fingerprint, self.job.data_dir)

    def result(self, state: FeaturesState) -> FeaturesResult:
        write_metrics(self.out, state.history)
        return FeaturesResult(self.out, state.round, state.history)


def train_step(state: FeaturesState, indices: torch.Tensor, images: torch.Tensor,
               plain: bool) -> dict[str, torch.Tensor]:
    """One step on this rank's slice `indices` (b,) of the global batch; returns the per-image mean loss terms."""
    cfg = state.cfg
    features = state.precision.forward(state.model, images)  # (b, D) fp32: the bank, softmax and loss stay fp32
    logits = state.bank.logits(features, cfg.temperature)  # (b, N), from the old bank
    if plain:
        loss = instance_loss(logits, indices)
        zero = loss.new_zeros(())
        terms = {"loss": loss, "inst": loss.detach(), "aff": zero, "hp": zero}
    else:
        terms = isl_loss(logits, indices, state.graph, state.bank.memory, cfg.temperature, cfg.hp_weight)
    # Every term is a sum over the batch / b. Scaled by b * world / B, the gradients DDP averages over ranks
    # are those of (sum over the global batch) / B, as in one process.
    world = distributed.context().world
    loss = terms["loss"] if world == 1 else terms["loss"] * (len(indices) * world / _global_batch(indices))
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    all_indices = distributed.all_gather_cat(indices)  # (B,) in batch order on every rank
    all_features = distributed.all_gather_cat(features.detach())  # (B, D)
    state.bank.update(all_indices, all_features)  # then move the bank, the same on every rank, no grad
    return terms


def _global_batch(indices: torch.Tensor) -> int:
    """Size of the global batch this rank's slice belongs to."""
    return int(distributed.all_reduce_sum(indices.new_tensor([len(indices)]))[0])


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the JSON-lines log from the checkpoint's history (so resumes never duplicate lines)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
    atomic_write_bytes(metrics_path(out), text.encode())
