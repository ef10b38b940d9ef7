"""The checkpointed-stage runner: the machinery every training stage shares.

A stage (features, GAN, mining) says how to build its state, how to train one
epoch, what to do at the end of an epoch and how to save itself; `run_stage`
does the rest, the same way for all of them:

    1. plan      fresh, resume from OUT.partial.safetensors, or already done
    2. build     the stage's fresh state, or its state restored from the checkpoint
    3. epochs    `train_one_epoch` over an `Epoch`, which owns the resume position,
                 Ctrl-C / SIGTERM, the partial loss sums and the non-finite stop;
                 then `end_epoch`, and a checkpoint unless the stage is finished
    4. finish    the final artifact; the checkpoint is removed

Every random draw comes from generators seeded by (seed, stage, epoch, batch),
so a stage resumed from a checkpoint ends bit for bit where an uninterrupted
one ends (on the CPU).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar

import torch

from isl_cli import distributed
from isl_cli.artifacts import read_header, refuse_existing
from isl_cli.checkpoints import partial_path
from isl_cli.engine.progress import StopFlag, Throughput, graceful_interrupt, log, make_progress
from isl_cli.errors import IslError, StageInterrupted

S = TypeVar("S", bound="Position")
CHECK_EVERY = 10  # batches between the non-finite checks (and progress-bar stats) within an epoch


@dataclass
class Position:
    """Where a stage stands: what every stage's state carries for the runner (and its checkpoint)."""

    resume_batch: int = 0  # batches already done in the epoch in progress
    partial_sums: list[float] = field(default_factory=list)  # the epoch's loss sums so far, then the image count


class Stage(ABC, Generic[S]):
    """One checkpointed stage: the hooks `run_stage` calls, in that order."""

    kind: str  # artifact kind of the output: features | gan | neighbors
    label: str  # of the progress bar and the log lines
    sum_names: tuple[str, ...] = ()  # per-image mean terms an epoch sums (the loss first)
    epoch_word: str = "epoch"  # what the log calls one pass over the data
    checkpoint_mid_epoch: bool = True  # Ctrl-C saves within an epoch (else: back to the last finished one)

    def __init__(self, out: Path, device: torch.device, *, resume: bool, overwrite: bool, progress: bool,
                 resume_command: str | None):
        self.out, self.partial, self.device = Path(out), partial_path(out), device
        self.resume, self.overwrite, self.progress, self.resume_command = resume, overwrite, progress, resume_command

    @abstractmethod
    def done(self) -> Any:
        """The result of an output that is already complete."""

    @abstractmethod
    def fresh(self) -> S:
        """The state a new run starts from."""

    @abstractmethod
    def restore(self) -> S:
        """The state saved in `self.partial`."""

    def begin(self, state: S, resumed: bool) -> None:
        """Set up before the first epoch (data, evaluation) and say what runs."""

    @abstractmethod
    def finished(self, state: S) -> bool:
        """Whether no epoch is left."""

    @abstractmethod
    def epoch_index(self, state: S) -> int:
        """0-based index of the epoch in progress (the log's and the seeds')."""

    @abstractmethod
    def open_epoch(self, state: S) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], int]:
        """This epoch's batches (from `state.resume_batch` on) and the epoch's number of batches."""

    @abstractmethod
    def train_one_epoch(self, state: S, epoch: "Epoch") -> dict[str, float]:
        """Every batch of `epoch`, each reported with `epoch.record`; returns `epoch.means()`."""

    @abstractmethod
    def end_epoch(self, state: S, metrics: dict[str, float], epoch: "Epoch") -> None:
        """After an epoch: evaluate, decide, record its metrics in the state."""

    @abstractmethod
    def save(self, state: S, path: Path, complete: bool) -> None:
        """Write the state (a checkpoint, or the final artifact when `complete`)."""

    @abstractmethod
    def result(self, state: S) -> Any:
        """What the stage returns once its artifact is written."""

    def interrupted(self, number: int, step: int, saved: bool) -> str:
        """The line a Ctrl-C in epoch `number` (1-based) prints, after `step` batches of it."""
        where = f"{self.label} {self.epoch_word} {number}"
        if saved:
            return f"stopped in {where} at batch {step}; checkpoint saved to {self.partial}"
        if step < 0:
            return f"stopped after {where}; checkpoint saved to {self.partial}"
        kept = (f"the last finished {self.epoch_word} is saved in {self.partial}" if self.partial.exists()
                else "nothing was saved yet")
        return f"stopped in {where} at batch {step}; {kept}"

    def non_finite(self, number: int) -> str:
        """The line a non-finite loss in epoch `number` (1-based) prints."""
        kept = self.partial if self.partial.exists() else "none (no epoch finished yet)"
        return (f"non-finite loss in {self.label} {self.epoch_word} {number}: the stage stopped and saved nothing "
                f"new; last good checkpoint: {kept} (try a lower --lr)")


def run_stage(stage: Stage[S]) -> Any:
    """Run (or resume) a stage to its artifact: plan, build, epochs, finish."""
    # 1. plan
    plan = plan_output(stage.out, stage.partial, resume=stage.resume, overwrite=stage.overwrite, kind=stage.kind)
    if plan == "done":
        log(f"{stage.out} is already complete; nothing to resume")
        return stage.done()
    # 2. build
    state = stage.restore() if plan == "resume" else stage.fresh()
    stage.begin(state, resumed=plan == "resume")
    # 3. epochs
    with graceful_interrupt() as stop, make_progress(stage.progress) as bar:
        task = bar.add_task(stage.label, total=None, stats="")
        while not stage.finished(state):
            batches, num_batches = stage.open_epoch(state)
            bar.reset(task, total=num_batches, completed=state.resume_batch,
                      description=f"{stage.label} epoch {stage.epoch_index(state) + 1}")
            epoch = Epoch(stage, state, batches, num_batches, stop, bar, task)
            metrics = stage.train_one_epoch(state, epoch)
            state.resume_batch, state.partial_sums = 0, [0.0] * (len(stage.sum_names) + 1)
            stage.end_epoch(state, metrics, epoch)
            if stage.finished(state):
                break
            stage.save(state, stage.partial, complete=False)
            if epoch.stopping:
                raise StageInterrupted(stage.interrupted(epoch.number, -1, saved=False), stage.resume_command)
    # 4. finish
    stage.save(state, stage.out, complete=True)
    stage.partial.unlink(missing_ok=True)
    return stage.result(state)


class Epoch:
    """One epoch's batches, as the stage trains on them.

    Owns what every stage does around its step: the position in the epoch (a
    resumed epoch starts at `state.resume_batch`), the partial sums of the loss
    terms (float64, summed over ranks at the end), the non-finite stop, the
    progress bar and Ctrl-C: a stop request saves a mid-epoch checkpoint and
    raises `StageInterrupted`; at the epoch's last batch it lets the epoch end
    (and be saved) first.
    """

    def __init__(self, stage: Stage, state: Position, batches: Iterator, num_batches: int, stop: StopFlag,
                 bar: Any, task: Any):
        self.stage, self.state, self.batches, self.num_batches = stage, state, batches, num_batches
        self.stop, self.bar, self.task = stop, bar, task
        self.number = stage.epoch_index(state) + 1  # 1-based, for the log
        self.step = state.resume_batch  # batches done in this epoch
        self.stopping = False
        self.start = time.perf_counter()
        self.meter = Throughput()  # training images/s (every rank's)
        zeros = [0.0] * (len(stage.sum_names) + 1)
        # partial sums are global: rank 0 carries a resumed epoch's, the others restart their share at zero
        start_sums = (state.partial_sums or zeros) if distributed.context().is_main else zeros
        dtype = torch.float32 if stage.device.type == "mps" else torch.float64
        self.sums = torch.tensor(start_sums, dtype=dtype).to(stage.device)  # (terms + 1,): sums, then the count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices (b,), images (b, 3, S, S)) of this rank's slice of each remaining batch."""
        return iter(self.batches)

    def record(self, batch_size: int, terms: dict[str, torch.Tensor] | None = None) -> None:
        """After a step on `batch_size` images: its per-image mean `terms`, the progress, a Ctrl-C."""
        if self.stage.sum_names:
            self.sums += torch.stack([terms[k].detach().to(self.sums.dtype) * batch_size for k in self.stage.sum_names]
                                     + [self.sums.new_tensor(float(batch_size))])
        self.step += 1
        self.meter.add(batch_size * distributed.context().world)
        self.bar.advance(self.task)
        if self.stage.sum_names and (self.step % CHECK_EVERY == 0 or self.step == self.num_batches):
            means = self._means(distributed.all_reduce_sum(self.sums))
            self.show(_stats(means, self.meter.rate))
        if distributed.any_rank(bool(self.stop), self.stage.device):
            self.stopping = True
            if self.step < self.num_batches:
                self._stop_within()

    def show(self, stats: str) -> None:
        """Text beside the progress bar."""
        self.bar.update(self.task, stats=stats)

    def means(self) -> dict[str, float]:
        """The epoch's per-image mean of each term over every rank (stops on a non-finite one)."""
        if not self.stage.sum_names:
            return {}
        return self._means(distributed.all_reduce_sum(self.sums))

    @property
    def rate(self) -> float:
        """Training images/s of this epoch so far."""
        return self.meter.rate

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def _stop_within(self) -> None:
        """Ctrl-C within the epoch: save the position and the sums so far (if the stage can), then stop."""
        saved = self.stage.checkpoint_mid_epoch
        if saved:
            total = distributed.all_reduce_sum(self.sums)
            self._means(total)  # never checkpoint a non-finite sum
            self.state.resume_batch, self.state.partial_sums = self.step, total.tolist()
            self.stage.save(self.state, self.stage.partial, complete=False)
        raise StageInterrupted(self.stage.interrupted(self.number, self.step, saved=saved), self.stage.resume_command)

    def _means(self, total: torch.Tensor) -> dict[str, float]:
        values = total.tolist()
        count = max(values[-1], 1.0)
        means = {k: values[i] / count for i, k in enumerate(self.stage.sum_names)}
        if not all(map(math.isfinite, means.values())):
            raise IslError(self.stage.non_finite(self.number))
        return means


def _stats(means: dict[str, float], rate: float) -> str:
    """The progress bar's text: every term that is not zero, and the rate."""
    return " ".join(f"{k} {v:.3f}" for k, v in means.items() if v) + f" | {rate:.0f} img/s"


def plan_output(out: Path, partial: Path, *, resume: bool, overwrite: bool, kind: str) -> str:
    """Decide how a checkpointed stage starts: "fresh", "resume" (from `partial`) or "done".

    Never destroys anything: an existing output or an interrupted run's checkpoint
    is only replaced with --overwrite.
    """
    if resume:
        if partial.exists():
            return "resume"
        if out.exists():
            if read_header(out, kind).meta.get("complete"):
                return "done"
            raise IslError(f"{out}: is not a finished {kind} file and no checkpoint is beside it")
        raise IslError(f"nothing to resume: neither {partial} nor {out} exists")
    if partial.exists() and not overwrite:
        raise IslError(f"{partial}: an interrupted run of this stage is here; add --resume to continue it, "
                       "or --overwrite to start over")
    refuse_existing(out, overwrite)
    return "fresh"


def refuse_changed_options(asked: Any, saved: Any, given: frozenset[str], partial: Path) -> None:
    """--resume continues with the checkpoint's settings: a typed option that differs is refused, not dropped."""
    differs = sorted(k for k in given if hasattr(saved, k) and getattr(asked, k) != getattr(saved, k))
    if differs:
        shown = ", ".join(f"--{k.replace('_', '-')} {getattr(asked, k)} (checkpoint: {getattr(saved, k)})"
                          for k in differs)
        raise IslError(f"{partial}: --resume continues with the checkpoint's settings, but {shown} was given; "
                       "drop the option, or --overwrite to start over with it")
