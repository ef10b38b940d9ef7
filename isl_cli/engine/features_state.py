"""The state of train-features: built fresh (or from --init), restored from a checkpoint, saved.

The features artifact's layout (checkpoints.py) holds all of it: backbone,
bank, graph, optimiser, scheduler, the position in the stage and its history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.bank import MemoryBank
from isl_cli.checkpoints import features_id, load_features, save_features
from isl_cli.config import FeaturesConfig, from_dict, to_dict
from isl_cli.data.store import Split, dataset_header
from isl_cli.engine.features_file import which_graph
from isl_cli.engine.loop import Position
from isl_cli.engine.over_init import OPTION_NAMES, apply_given_over_init, inherit_untyped
from isl_cli.engine.progress import log
from isl_cli.engine.state import (
    derive_seed,
    generator_for,
    load_optimizer,
    load_scheduler,
    module_tensors,
    optimizer_tensors,
    scheduler_state,
)
from isl_cli.errors import IslError
from isl_cli.models.spec import BackboneSpec, check_weights, load_module, resolve_spec
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import FP32, Precision, resolve


@dataclass
class FeaturesState(Position):
    """Everything a features checkpoint restores."""

    cfg: FeaturesConfig = None  # type: ignore[assignment]
    spec: BackboneSpec = None  # type: ignore[assignment]
    model: torch.nn.Module = None  # type: ignore[assignment]  # what runs forward: DDP-wrapped under torchrun
    bank: MemoryBank = None  # type: ignore[assignment]
    graph: NeighborGraph = None  # type: ignore[assignment]
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau = None  # type: ignore[assignment]
    round: int = 0
    stage_epochs: int = 0  # epochs completed in this stage
    start_epoch: int = 0  # global epoch at which this stage began
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


def fresh(job: Any, train: Split, fingerprint: str) -> FeaturesState:
    """A new stage: a seeded backbone and bank, or the ones --init carries over; the graph of --neighbors."""
    cfg = job.config.validate()
    n, device = len(train), job.device
    origin: dict[str, Any] = {"init": str(job.init) if job.init else None,
                              "neighbors": str(job.neighbors) if job.neighbors else None}
    init = None
    if job.init is not None:
        init = load_features(job.init, fingerprint=fingerprint, num_images=n, device=device)
        spec = BackboneSpec.from_meta(init.meta["backbone"], str(job.init))
        check_weights(spec, init.with_prefix("backbone."), str(job.init))
        origin["init_id"] = init.meta.get("features_id")
    else:
        spec = resolve_spec(cfg.arch, cfg.width, cfg.low_dim, job.variant, dataset_header(job.data_dir).meta)
    torch.manual_seed(derive_seed(cfg.seed, "backbone-init"))
    model = spec.build(device)
    bank = MemoryBank(n, spec.low_dim, momentum=cfg.bank_momentum,
                      generator=generator_for(cfg.seed, "bank-init"), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    graph = NeighborGraph.empty(n, device=device)
    round_index, start_epoch, history = 0, 0, []
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
        start_epoch = int(init.meta.get("total_epochs", 0))
        history = list(init.meta.get("history", []))
        round_index = int(init.meta.get("round", 0))
    if init is not None or job.neighbors is not None:
        chosen = which_graph(init, job.neighbors, fingerprint, n)
        graph = NeighborGraph.from_pairs(chosen.pairs.to(device), n)
        if chosen.round is not None:  # a neighbors file: the round after the one that mined it
            round_index = chosen.round + 1
            origin["neighbors_entries"] = graph.num_entries()
    if job.round_index is not None:
        round_index = job.round_index
    precision = resolve(cfg.amp, cfg.channels_last, device)
    scaler = _make_scaler(precision, device, init.meta.get("scaler") if init is not None else None)
    return FeaturesState(cfg=cfg, spec=spec, model=_prepare_model(model, cfg, precision, device), bank=bank,
                         graph=graph, optimizer=optimizer, scheduler=scheduler, round=round_index,
                         start_epoch=start_epoch, history=history, origin=origin, scaler=scaler, precision=precision)


def restore(path: Path, train: Split, fingerprint: str, device: torch.device) -> FeaturesState:
    """The state a features checkpoint holds, ready to continue."""
    art = load_features(path, fingerprint=fingerprint, num_images=len(train), device=device)
    cfg = from_dict(FeaturesConfig, art.config).validate()
    spec = BackboneSpec.from_meta(art.meta["backbone"], str(path))
    check_weights(spec, art.with_prefix("backbone."), str(path))
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
    sums = [float(x) for x in meta.get("partial_sums", [0.0] * 5)]
    precision = resolve(cfg.amp, cfg.channels_last, device)
    return FeaturesState(cfg=cfg, spec=spec, model=_prepare_model(model, cfg, precision, device), bank=bank,
                         graph=graph, optimizer=optimizer, scheduler=scheduler,
                         round=int(meta.get("round", 0)), stage_epochs=int(meta.get("stage_epochs", 0)),
                         start_epoch=int(meta.get("start_epoch", 0)), resume_batch=int(meta.get("resume_batch", 0)),
                         partial_sums=sums, history=list(meta.get("history", [])),
                         origin=dict(meta.get("origin", {})),
                         scaler=_make_scaler(precision, device, meta.get("scaler")), precision=precision)


def save(state: FeaturesState, path: Path, complete: bool, fingerprint: str, data_dir: Path) -> None:
    """Write the state as a features artifact: a checkpoint, or the stage's output when `complete`."""
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
        "partial_sums": state.partial_sums or [0.0] * 5,
        "complete": complete,
        "history": state.history,
        "optim": optim_info,
        "scheduler": scheduler_state(state.scheduler),
        "features_id": features_id(state.bank.memory),
        "dataset": str(data_dir),
        "backbone": state.spec.to_meta(),
        "graph_entries": state.graph.num_entries(),
        "origin": state.origin,
        "world_size": distributed.context().world,
    }
    if state.scaler is not None:
        meta["scaler"] = state.scaler.state_dict()
    save_features(path, tensors, fingerprint=fingerprint, config=to_dict(state.cfg), meta=meta)


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
