"""The feature-learning stage: backbone + memory bank trained with the ISL loss.

One epoch is: a permutation and augmentation drawn from a generator seeded by
(seed, epoch), then for each batch

    1. forward      f = backbone(augment(x))             (B, D), unit rows
    2. logits       z = f @ M.T / T                      (B, N), old bank
    3. loss         ISL (or plain instance loss in round 0)
    4. step         SGD
    5. bank update  M_i <- normalise(m M_i + (1 - m) f_i), no grad

After each epoch: kNN on the bank at the evaluation cadence, the LR plateau
scheduler, a checkpoint (atomic) and one JSON line of metrics. Because every
random draw comes from seeded generators, a run resumed from a checkpoint
(epoch boundary or a Ctrl-C mid-epoch) continues bit for bit on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.artifacts import atomic_write_bytes
from isl_cli.bank import MemoryBank
from isl_cli.checks import val_split_leaves_keys
from isl_cli.checkpoints import (
    features_header,
    features_id,
    load_features,
    load_neighbors,
    metrics_path,
    partial_path,
    save_features,
)
from isl_cli.config import FeaturesConfig, from_dict, to_dict
from isl_cli.data.store import Split
from isl_cli.engine.common import (
    BackboneSpec,
    batch_source,
    embed,
    load_train_test,
    plan_output,
    refuse_changed_options,
    resolve_spec,
)
from isl_cli.engine.imagenet_note import features_line
from isl_cli.engine.progress import Throughput, graceful_interrupt, log, make_progress
from isl_cli.engine.state import (
    derive_seed,
    generator_for,
    load_module,
    load_optimizer,
    load_scheduler,
    module_tensors,
    optimizer_tensors,
    scheduler_state,
)
from isl_cli.errors import IslError, StageInterrupted
from isl_cli.knn import weighted_knn
from isl_cli.locks import writes
from isl_cli.losses import instance_loss, isl_loss
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import FP32, Precision, resolve

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


@dataclass
class _State:
    """Everything a checkpoint restores."""

    cfg: FeaturesConfig
    spec: BackboneSpec
    model: torch.nn.Module  # what runs forward: the backbone, DDP-wrapped under torchrun
    bank: MemoryBank
    graph: NeighborGraph
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    round: int
    stage_epochs: int = 0  # epochs completed in this stage
    start_epoch: int = 0  # global epoch at which this stage began
    resume_batch: int = 0  # batches already done in the current epoch
    partial_sums: list[float] = field(default_factory=lambda: [0.0] * 5)
    history: list[dict[str, Any]] = field(default_factory=list)
    origin: dict[str, Any] = field(default_factory=dict)  # init / neighbors provenance
    scaler: Any = None  # torch.amp.GradScaler for --amp fp16
    precision: Precision = FP32  # of every backbone forward (--amp, --channels-last)

    @property
    def backbone(self) -> torch.nn.Module:
        """The bare backbone (for state dicts), whatever wraps it."""
        return distributed.unwrap(self.model)

    @property
    def epoch(self) -> int:
        """Global index of the epoch in progress (continues across rounds)."""
        return self.start_epoch + self.stage_epochs


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [Path(job.data_dir) / "train.safetensors", Path(job.data_dir) / "test.safetensors",
                            job.init, job.neighbors])
def train_features(job: FeaturesJob) -> FeaturesResult:
    """Run (or resume) the feature-learning stage and write the features artifact."""
    resolve(job.config.amp, job.config.channels_last, job.device)  # refuses a bad --amp before any work
    train, test, fingerprint = load_train_test(job.data_dir)
    val_split_leaves_keys(job.config.val_split, len(train))
    partial = partial_path(job.out)
    plan = plan_output(job.out, partial, resume=job.resume, overwrite=job.overwrite, kind="features")
    if plan == "done":
        header = features_header(job.out)
        log(f"{job.out} is already complete; nothing to resume")
        return FeaturesResult(job.out, int(header.meta.get("round", 0)), list(header.meta.get("history", [])),
                              skipped=True)
    if plan == "resume":
        state = _restore(partial, train, fingerprint, job.device)
        refuse_changed_options(job.config, state.cfg, job.given, partial)
        if state.cfg.variant == "imagenet":
            log(features_line(state.cfg))
        log(state.precision.describe())
        log(f"resuming {partial} at epoch {state.stage_epochs + 1}/{state.cfg.epochs}"
            + (f", batch {state.resume_batch}" if state.resume_batch else ""))
    else:
        state = _fresh_state(job, train, fingerprint)
        log(state.precision.describe())
    if state.stage_epochs >= state.cfg.epochs:
        return _finish(job, state, fingerprint, partial)
    _run_epochs(job, state, train, test, fingerprint, partial)
    return _finish(job, state, fingerprint, partial)


# --------------------------------------------------------------------------- set-up


def _fresh_state(job: FeaturesJob, train: Split, fingerprint: str) -> _State:
    cfg = job.config.validate()
    if cfg.variant == "imagenet":
        log(features_line(cfg))
    n = len(train)
    origin: dict[str, Any] = {"init": str(job.init) if job.init else None,
                              "neighbors": str(job.neighbors) if job.neighbors else None}
    init = None
    if job.init is not None:
        init = load_features(job.init, fingerprint=fingerprint, num_images=n, device=job.device)
        spec = BackboneSpec.from_meta(init.meta["backbone"])
        origin["init_id"] = init.meta.get("features_id")
    else:
        from isl_cli.data.store import dataset_header

        spec = resolve_spec(cfg.arch, cfg.width, cfg.low_dim, job.variant, dataset_header(job.data_dir).meta)
    torch.manual_seed(derive_seed(cfg.seed, "backbone-init"))
    model = spec.build(job.device)
    bank = MemoryBank(n, spec.low_dim, momentum=cfg.bank_momentum,
                      generator=generator_for(cfg.seed, "bank-init"), device=job.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    graph = NeighborGraph.empty(n, device=job.device)
    round_index = 0
    start_epoch, history = 0, []
    if init is not None:
        load_module(model, init.with_prefix("backbone."), str(job.init))
        bank.memory.copy_(init["bank.memory"])
        load_optimizer(optimizer, init.with_prefix("optim."), init.meta.get("optim", {}), str(job.init))
        load_scheduler(scheduler, init.meta.get("scheduler", {}))
        cfg = inherit_untyped(cfg, init.config, job.given)
        applied = apply_given_over_init(optimizer, scheduler, cfg, job.given)
        if applied:
            origin["applied_over_init"] = applied
            log(f"--init {job.init}: applied over the restored optimiser and scheduler: "
                + ", ".join(f"{OPTION_NAMES[k]} {v:g}" for k, v in applied.items()))
        if "graph.pairs" in init.tensors:
            graph = NeighborGraph.from_pairs(init["graph.pairs"], n).to(job.device)
        start_epoch = int(init.meta.get("total_epochs", 0))
        history = list(init.meta.get("history", []))
        round_index = int(init.meta.get("round", 0))
    if job.neighbors is not None:
        nfile = load_neighbors(job.neighbors, fingerprint=fingerprint, num_images=n)
        graph = NeighborGraph.from_pairs(nfile.pairs.to(job.device), n)
        round_index = nfile.round + 1
        origin["neighbors_entries"] = graph.num_entries()
    if job.round_index is not None:
        round_index = job.round_index
    precision = resolve(cfg.amp, cfg.channels_last, job.device)
    scaler = _make_scaler(precision, job.device, init.meta.get("scaler") if init is not None else None)
    model = _prepare_model(model, cfg, precision, job.device)
    return _State(cfg=cfg, spec=spec, model=model, bank=bank, graph=graph, optimizer=optimizer, scheduler=scheduler,
                  round=round_index, start_epoch=start_epoch, history=history, origin=origin, scaler=scaler,
                  precision=precision)


#: Settings that --init restores from the previous round (optimiser param groups, scheduler), by config field.
OPTION_NAMES = {"lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay",
                "lr_factor": "--lr-factor", "lr_patience": "--lr-patience"}


def inherit_untyped(cfg: FeaturesConfig, init_config: dict[str, Any], given: frozenset[str]) -> FeaturesConfig:
    """The restored settings the user did not type are the previous round's: record those, not the preset's."""
    inherited = {k: init_config[k] for k in OPTION_NAMES if k not in given and k in init_config}
    return replace(cfg, **inherited).validate() if inherited else cfg


def apply_given_over_init(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: FeaturesConfig,
                          given: frozenset[str]) -> dict[str, float]:
    """Put each typed optimiser/scheduler option over the state restored from --init; returns what was applied."""
    applied: dict[str, float] = {}
    for name in ("lr", "momentum", "weight_decay"):
        if name in given:
            for group in optimizer.param_groups:
                group[name] = getattr(cfg, name)
            applied[name] = getattr(cfg, name)
    if "lr" in given and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    if "lr_factor" in given:
        scheduler.factor = applied["lr_factor"] = cfg.lr_factor
    if "lr_patience" in given:
        scheduler.patience = applied["lr_patience"] = cfg.lr_patience
    return applied


def _restore(path: Path, train: Split, fingerprint: str, device: torch.device) -> _State:
    art = load_features(path, fingerprint=fingerprint, num_images=len(train), device=device)
    cfg = from_dict(FeaturesConfig, art.config).validate()
    spec = BackboneSpec.from_meta(art.meta["backbone"])
    model = spec.build(device)
    load_module(model, art.with_prefix("backbone."), str(path))
    bank = MemoryBank(len(train), spec.low_dim, momentum=cfg.bank_momentum, device=device)
    bank.memory.copy_(art["bank.memory"])
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    load_optimizer(optimizer, art.with_prefix("optim."), art.meta.get("optim", {}), str(path))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    load_scheduler(scheduler, art.meta.get("scheduler", {}))
    pairs = art.tensors.get("graph.pairs", torch.zeros(0, 2, dtype=torch.int64))
    graph = NeighborGraph.from_pairs(pairs, len(train)).to(device)
    meta = art.meta
    # partial sums are global: rank 0 carries them, the others restart their share at zero
    sums = [float(x) for x in meta.get("partial_sums", [0.0] * 5)] if distributed.context().is_main else [0.0] * 5
    precision = resolve(cfg.amp, cfg.channels_last, device)
    return _State(cfg=cfg, spec=spec, model=_prepare_model(model, cfg, precision, device), bank=bank, graph=graph,
                  optimizer=optimizer, scheduler=scheduler,
                  round=int(meta.get("round", 0)), stage_epochs=int(meta.get("stage_epochs", 0)),
                  start_epoch=int(meta.get("start_epoch", 0)), resume_batch=int(meta.get("resume_batch", 0)),
                  partial_sums=sums, history=list(meta.get("history", [])), origin=dict(meta.get("origin", {})),
                  scaler=_make_scaler(precision, device, meta.get("scaler")), precision=precision)


def _prepare_model(model: torch.nn.Module, cfg: FeaturesConfig, precision: Precision,
                   device: torch.device) -> torch.nn.Module:
    """Memory format, then the data-parallel wrapper (a no-op in one process)."""
    return distributed.wrap_model(precision.prepare(model), device, sync_bn=cfg.sync_bn)


def _make_scaler(precision: Precision, device: torch.device, state: dict[str, Any] | None):
    """A gradient scaler for fp16 autocast (bf16 and fp32 need none)."""
    if precision.amp != "fp16":
        return None
    scaler = torch.amp.GradScaler(device.type)
    if state:
        scaler.load_state_dict(state)
    return scaler


# --------------------------------------------------------------------------- training


def _run_epochs(job: FeaturesJob, state: _State, train: Split, test: Split, fingerprint: str, partial: Path) -> None:
    cfg, device = state.cfg, job.device
    source = batch_source(train, state.spec, train=True, batch_size=cfg.batch_size, device=device,
                          num_workers=cfg.num_workers)
    evaluator = _Evaluator(state, train, test, device)
    plain = state.graph.num_entries() == 0
    if plain:
        log(f"round {state.round}: plain instance discrimination (no neighbours)")
    else:
        log(f"round {state.round}: ISL loss with {state.graph.num_entries()} neighbour entries")
    batches_per_epoch = source.num_batches()
    total_steps = batches_per_epoch * (cfg.epochs - state.stage_epochs) - state.resume_batch
    with graceful_interrupt() as stop, make_progress(job.progress) as progress:
        task = progress.add_task(f"round {state.round} features", total=total_steps, stats="")
        while state.stage_epochs < cfg.epochs:
            epoch_start = time.perf_counter()
            meter = Throughput()
            sums = torch.tensor(state.partial_sums, dtype=_sum_dtype(device)).to(device)  # (5,) loss sums, count
            generator = generator_for(cfg.seed, "features", state.epoch)
            stream = source.batches(generator, start=state.resume_batch)
            step = state.resume_batch
            state.model.train()
            for indices, images in stream:
                terms = _train_step(state, indices, images, plain)
                sums += torch.stack([terms[k].detach().to(sums.dtype) * len(indices) for k in LOSS_TERMS]
                                    + [sums.new_tensor(float(len(indices)))])
                step += 1
                meter.add(len(indices) * distributed.context().world)
                progress.advance(task)
                if step % 10 == 0 or step == batches_per_epoch:
                    means = _means(distributed.all_reduce_sum(sums))
                    if not all(map(_finite, means.values())):
                        _non_finite(job, state, partial)
                    progress.update(task, description=f"round {state.round} epoch {state.epoch + 1}",
                                    stats=_stats(means, meter.rate))
                if distributed.any_rank(bool(stop), device):
                    total = distributed.all_reduce_sum(sums)
                    if not all(map(_finite, _means(total).values())):
                        _non_finite(job, state, partial)
                    state.resume_batch = step if step < batches_per_epoch else 0
                    state.partial_sums = total.tolist()
                    sums = total if distributed.context().is_main else torch.zeros_like(total)
                    if state.resume_batch == 0:
                        _end_epoch(state, evaluator, sums, meter, epoch_start, partial, fingerprint, job)
                    else:
                        _save(job, state, partial, fingerprint, complete=False)
                    raise StageInterrupted(f"stopped at epoch {state.epoch + 1}, batch {step}; "
                                           f"checkpoint saved to {partial}", job.resume_command)
            total = distributed.all_reduce_sum(sums)  # (5,) over every rank
            if not all(map(_finite, _means(total).values())):
                _non_finite(job, state, partial)
            _end_epoch(state, evaluator, total, meter, epoch_start, partial, fingerprint, job)


def _train_step(state: _State, indices: torch.Tensor, images: torch.Tensor, plain: bool) -> dict[str, torch.Tensor]:
    """One step on this rank's slice `indices` (b,) of the global batch."""
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


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _end_epoch(state: _State, evaluator: "_Evaluator", sums: torch.Tensor, meter: Throughput, epoch_start: float,
               partial: Path, fingerprint: str, job: FeaturesJob) -> None:
    cfg = state.cfg
    rate = meter.rate  # training images/s: read before the evaluation, whose forward passes are not training
    record: dict[str, Any] = {"round": state.round, "epoch": state.epoch + 1, "stage_epoch": state.stage_epochs + 1,
                              **_means(sums), "lr": state.optimizer.param_groups[0]["lr"]}
    cadence = (state.epoch + 1) % cfg.eval_every == 0
    last = state.stage_epochs + 1 == cfg.epochs
    if cadence or last:
        result = evaluator.evaluate()
        if result is not None:
            record.update(result)
            if cadence:
                state.scheduler.step(result["knn_top1"])
    record["seconds"] = round(time.perf_counter() - epoch_start, 3)
    record["images_per_s"] = round(rate, 1)
    state.history.append(record)
    state.stage_epochs += 1
    state.resume_batch = 0
    state.partial_sums = [0.0] * 5
    _save(job, state, partial, fingerprint, complete=False)
    _write_metrics(job.out, state.history)
    knn = f", kNN top-1 {record['knn_top1']:.2f}% ({record['knn_on']})" if "knn_top1" in record else ""
    log(f"epoch {record['epoch']} (round {state.round}): loss {record['loss']:.4f}{knn}, lr {record['lr']:.4g}, "
        f"{record['images_per_s']:.0f} img/s")


def _finish(job: FeaturesJob, state: _State, fingerprint: str, partial: Path) -> FeaturesResult:
    _save(job, state, job.out, fingerprint, complete=True)
    partial.unlink(missing_ok=True)
    _write_metrics(job.out, state.history)
    return FeaturesResult(job.out, state.round, state.history)


def _save(job: FeaturesJob, state: _State, path: Path, fingerprint: str, complete: bool) -> None:
    if not distributed.same_on_all_ranks(state.bank.memory):
        raise IslError("data-parallel ranks hold different memory banks; stopping before writing a checkpoint")
    tensors = module_tensors("backbone", state.backbone)
    tensors["bank.memory"] = state.bank.memory
    tensors["graph.pairs"] = state.graph.pairs()
    optim_tensors, optim_info = optimizer_tensors("optim", state.optimizer)
    tensors.update(optim_tensors)
    meta = {
        "round": state.round,
        "stage_epochs": state.stage_epochs,
        "start_epoch": state.start_epoch,
        "total_epochs": state.epoch,
        "resume_batch": state.resume_batch,
        "partial_sums": state.partial_sums,
        "complete": complete,
        "history": state.history,
        "optim": optim_info,
        "scheduler": scheduler_state(state.scheduler),
        "features_id": features_id(state.bank.memory),
        "dataset": str(job.data_dir),
        "backbone": state.spec.to_meta(),
        "graph_entries": state.graph.num_entries(),
        "origin": state.origin,
        "world_size": distributed.context().world,
    }
    if state.scaler is not None:
        meta["scaler"] = state.scaler.state_dict()
    save_features(path, tensors, fingerprint=fingerprint, config=to_dict(state.cfg), meta=meta)


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the JSON-lines log from the checkpoint's history (so resumes never duplicate lines)."""
    import json

    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
    atomic_write_bytes(metrics_path(out), text.encode())


def _non_finite(job: FeaturesJob, state: _State, partial: Path) -> None:
    kept = partial if partial.exists() else (job.init or "none (no epoch finished yet)")
    raise IslError(f"non-finite loss in round {state.round}, epoch {state.epoch + 1}: the stage stopped and saved "
                   f"nothing new; last good checkpoint: {kept} (try a lower --lr)")


def _means(sums: torch.Tensor) -> dict[str, float]:
    values = sums.tolist()
    count = max(values[4], 1.0)
    return {k: values[i] / count for i, k in enumerate(LOSS_TERMS)}


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _stats(means: dict[str, float], rate: float) -> str:
    parts = [f"loss {means['loss']:.3f}", f"inst {means['inst']:.3f}"]
    if means["aff"] or means["hp"]:
        parts += [f"aff {means['aff']:.3f}", f"hp {means['hp']:.3f}"]
    return " ".join(parts) + f" | {rate:.0f} img/s"


# --------------------------------------------------------------------------- evaluation


class _Evaluator:
    """kNN during training: test split (the reference) or a fraction of the training images as queries (still
    trained on; only their labels leave the kNN keys)."""

    def __init__(self, state: _State, train: Split, test: Split, device: torch.device):
        self.state, self.train, self.test, self.device = state, train, test, device
        cfg = state.cfg
        self.mode = "val" if cfg.val_split > 0 else "test"
        self.labels = train.labels.to(device)
        self.warned = False
        if self.mode == "val":
            perm = torch.randperm(len(train), generator=generator_for(cfg.seed, "val-split"))
            count = max(1, int(round(cfg.val_split * len(train))))
            self.queries = perm[:count].sort().values
            keep = torch.ones(len(train), dtype=torch.bool)
            keep[self.queries] = False
            self.keys = keep.nonzero().squeeze(1).to(device)
        self.can_score = train.labelled and (self.mode == "val" or (len(test) > 0 and test.labelled))

    def evaluate(self) -> dict[str, Any] | None:
        if not self.can_score:
            if not self.warned:
                log("[yellow]no labels: kNN accuracy cannot be scored, so the LR scheduler never steps[/yellow]")
                self.warned = True
            return None
        cfg, state = self.state.cfg, self.state
        memory = state.bank.memory
        if self.mode == "val":
            queries = embed(state.model, self.train, state.spec, device=self.device, batch_size=256,
                            num_workers=cfg.num_workers, subset=self.queries, precision=state.precision)
            query_labels = self.labels[self.queries.to(self.device)]
            keys, key_labels = memory[self.keys], self.labels[self.keys]
        else:
            queries = embed(state.model, self.test, state.spec, device=self.device, batch_size=256,
                            num_workers=cfg.num_workers, precision=state.precision)
            query_labels = self.test.labels.to(self.device)
            keys, key_labels = memory, self.labels
        k = min(cfg.eval_k, len(keys))
        result = weighted_knn(queries, query_labels, keys, key_labels, [k], cfg.temperature,
                              num_classes=int(self.labels.max()) + 1)[k]
        return {"knn_top1": result.top1, "knn_top5": result.top5, "knn_k": k, "knn_on": self.mode}
