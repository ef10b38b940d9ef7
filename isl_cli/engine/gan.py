"""The GAN stage: a generator of proxy features and a triplet discriminator.

The backbone and bank are frozen. Each batch:

    1. anchors    a = backbone(augment(x)) in eval mode, no grad       (B, D)
    2. triplets   p = M_i, n = nearest of K non-neighbour draws        (B, D) each
    3. proxy      p' = G(a, p, n)                                      (B, D)
    4. D step     BCE: (a,p,n) real; (a,p,p'), (a,p',n) fake, p' detached
    5. G step     BCE: make Dis call (a,p,p') and (a,p',n) real

After each epoch the stopping rule (paper / fixed / hard cap) decides, a
checkpoint is written, and the log says which rule ended the stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.checkpoints import features_id, load_gan, partial_path, save_gan
from isl_cli.checkpoints import metrics_path
from isl_cli.engine.common import features_inputs
from isl_cli.config import GanConfig, from_dict, to_dict
from isl_cli.engine.common import (
    LoadedFeatures,
    batch_source,
    batch_triplets,
    open_features,
    plan_output,
    refuse_changed_options,
)
from isl_cli.engine.imagenet_note import gan_line
from isl_cli.engine.progress import Throughput, graceful_interrupt, log, make_progress
from isl_cli.engine.state import (
    derive_seed,
    generator_for,
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_tensors,
)
from isl_cli.engine.stopping import decide
from isl_cli.errors import IslError, StageInterrupted
from isl_cli.locks import writes
from isl_cli.losses import discriminator_loss, generator_loss
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import Precision, resolve


@dataclass
class GanJob:
    """What `isl train-gan` was asked to do."""

    config: GanConfig
    features: Path
    out: Path
    device: torch.device
    init: Path | None = None
    neighbors: Path | None = None
    resume: bool = False
    overwrite: bool = False
    round_index: int | None = None
    progress: bool = True
    resume_command: str | None = None
    data_dir: Path | None = None  # overrides the data set folder the features record
    given: frozenset[str] = frozenset()  # config fields the user typed (--lr is applied over an --init's Adam state)
    amp: str = "none"  # precision of the backbone forward: none | bf16 | fp16 | auto (see isl_cli.precision)
    channels_last: bool = False


@dataclass
class GanResult:
    out: Path
    round: int
    g_losses: list[float]
    d_losses: list[float]
    stop_reason: str
    skipped: bool = False


@dataclass
class _GanState:
    cfg: GanConfig
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    round: int
    features_id: str
    g_losses: list[float] = field(default_factory=list)
    d_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    origin: dict[str, Any] = field(default_factory=dict)
    resume_batch: int = 0  # batches already done in the epoch in progress
    partial_sums: list[float] = field(default_factory=lambda: [0.0] * 3)


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [*features_inputs(job.features, job.data_dir), job.init, job.neighbors])
def train_gan(job: GanJob) -> GanResult:
    """Run (or resume) the GAN stage and write the gan artifact."""
    precision = resolve(job.amp, job.channels_last, job.device)
    loaded = open_features(job.features, job.device, job.data_dir)
    if not loaded.artifact.meta.get("complete", True):
        raise IslError(f"{job.features}: is an unfinished checkpoint; finish train-features first (--resume)")
    partial = partial_path(job.out)
    plan = plan_output(job.out, partial, resume=job.resume, overwrite=job.overwrite, kind="gan")
    if loaded.spec.variant == "imagenet" and plan != "done":
        log(gan_line(job.config))
    if plan == "done":
        art = load_gan(job.out, fingerprint=loaded.fingerprint)
        log(f"{job.out} is already complete; nothing to resume")
        return GanResult(job.out, int(art.meta.get("round", 0)), art["g_losses"].tolist(), art["d_losses"].tolist(),
                         str(art.meta.get("stop_reason", "")), skipped=True)
    state = _restore(partial, loaded, job) if plan == "resume" else _fresh(job, loaded)
    if plan == "resume":
        refuse_changed_options(job.config, state.cfg, job.given, partial)
    graph = _graph(job, loaded)
    precision.prepare(loaded.model)
    log(precision.describe())
    if plan == "resume":
        log(f"resuming {partial} after epoch {len(state.g_losses)}")
    decision = decide(state.g_losses, state.round, max_epochs=state.cfg.max_epochs, fixed_epochs=state.cfg.epochs) \
        if state.g_losses else None
    if decision is None or not decision.stop:
        decision = _run_epochs(job, state, loaded, graph, partial, precision)
    state.stop_reason = decision.reason
    log(f"[bold]train-gan stopped after {len(state.g_losses)} epochs: {decision.reason}[/bold]")
    _save(job, state, job.out, loaded, complete=True)
    partial.unlink(missing_ok=True)
    return GanResult(job.out, state.round, state.g_losses, state.d_losses, state.stop_reason)


def _graph(job: GanJob, loaded: LoadedFeatures) -> NeighborGraph:
    """Neighbour sets the negatives avoid: the features' own graph unless --neighbors is given."""
    n = loaded.memory.shape[0]
    if job.neighbors is not None:
        from isl_cli.checkpoints import load_neighbors

        pairs = load_neighbors(job.neighbors, fingerprint=loaded.fingerprint, num_images=n).pairs
    else:
        pairs = loaded.artifact.tensors.get("graph.pairs", torch.zeros(0, 2, dtype=torch.int64))
    return NeighborGraph.from_pairs(pairs.to(job.device), n)


def _fresh(job: GanJob, loaded: LoadedFeatures) -> _GanState:
    cfg = job.config.validate()
    dim = loaded.spec.low_dim
    torch.manual_seed(derive_seed(cfg.seed, "gan-init"))
    generator, discriminator = Generator(dim).to(job.device), Discriminator(dim).to(job.device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr)
    round_index = int(loaded.artifact.meta.get("round", 0))
    origin: dict[str, Any] = {"features": str(job.features), "init": str(job.init) if job.init else None}
    if job.init is not None:
        init = load_gan(job.init, fingerprint=loaded.fingerprint, device=job.device)
        _load_networks(init, generator, discriminator, opt_g, opt_d, str(job.init))
        origin["init_round"] = init.meta.get("round")
        if "lr" in job.given:  # typed: over the restored Adam state of both networks
            for group in (*opt_g.param_groups, *opt_d.param_groups):
                group["lr"] = cfg.lr
            origin["applied_over_init"] = {"lr": cfg.lr}
            log(f"--init {job.init}: applied over the restored Adam state: --lr {cfg.lr:g}")
        elif "lr" in init.config:  # not typed: the restored rate is the previous round's; record that
            cfg = replace(cfg, lr=init.config["lr"]).validate()
    if job.round_index is not None:
        round_index = job.round_index
    generator, discriminator = _wrap(generator, job.device), _wrap(discriminator, job.device)
    return _GanState(cfg=cfg, generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d,
                     round=round_index, features_id=str(loaded.artifact.meta.get("features_id")), origin=origin)


def _restore(path: Path, loaded: LoadedFeatures, job: GanJob) -> _GanState:
    art = load_gan(path, fingerprint=loaded.fingerprint, device=job.device)
    if art.meta.get("features_id") != loaded.artifact.meta.get("features_id"):
        raise IslError(f"{path}: this checkpoint was made from other features than {job.features}")
    cfg = from_dict(GanConfig, art.config).validate()
    dim = loaded.spec.low_dim
    generator, discriminator = Generator(dim).to(job.device), Discriminator(dim).to(job.device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr)
    _load_networks(art, generator, discriminator, opt_g, opt_d, str(path))
    generator, discriminator = _wrap(generator, job.device), _wrap(discriminator, job.device)
    sums = [float(x) for x in art.meta.get("partial_sums", [0.0] * 3)]
    return _GanState(cfg=cfg, generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d,
                     round=int(art.meta.get("round", 0)), features_id=str(art.meta.get("features_id")),
                     g_losses=art["g_losses"].tolist(), d_losses=art["d_losses"].tolist(),
                     history=list(art.meta.get("history", [])), origin=dict(art.meta.get("origin", {})),
                     resume_batch=int(art.meta.get("resume_batch", 0)),
                     partial_sums=sums if distributed.context().is_main else [0.0] * 3)


def _wrap(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return distributed.wrap_model(network, device, sync_bn=False)


def _load_networks(art, generator, discriminator, opt_g, opt_d, what: str) -> None:
    load_module(generator, art.with_prefix("generator."), what)
    load_module(discriminator, art.with_prefix("discriminator."), what)
    load_optimizer(opt_g, art.with_prefix("optim_g."), art.meta.get("optim_g", {}), what)
    load_optimizer(opt_d, art.with_prefix("optim_d."), art.meta.get("optim_d", {}), what)


def _run_epochs(job: GanJob, state: _GanState, loaded: LoadedFeatures, graph: NeighborGraph, partial: Path,
                precision: Precision):
    cfg, device = state.cfg, job.device
    from isl_cli.data.store import load_split

    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    source = batch_source(train, loaded.spec, train=True, batch_size=cfg.batch_size, device=device,
                          num_workers=cfg.num_workers)
    memory = loaded.memory
    cap = cfg.epochs if cfg.epochs is not None else cfg.max_epochs
    log(f"round {state.round}: training the GAN (up to {cap} epochs; "
        + (f"fixed {cfg.epochs}" if cfg.epochs else f"paper's stopping rule, cap {cfg.max_epochs}") + ")")
    with graceful_interrupt() as stop, make_progress(job.progress) as progress:
        task = progress.add_task(f"round {state.round} gan", total=source.num_batches(), stats="")
        while True:
            epoch = len(state.g_losses)
            progress.reset(task, total=source.num_batches(), description=f"round {state.round} gan epoch {epoch + 1}")
            meter, start = Throughput(), time.perf_counter()
            sums = torch.tensor(state.partial_sums, dtype=torch.float32 if device.type == "mps" else torch.float64
                                ).to(device)  # (3,) g, d, count
            batch_gen = generator_for(cfg.seed, "gan-batches", state.round, epoch)
            stream = source.batches(batch_gen, start=state.resume_batch)
            step = state.resume_batch
            progress.advance(task, step)
            for indices, images in stream:
                # one draw generator per batch, so a resumed epoch draws the same negatives
                draw_gen = torch.Generator(device=device).manual_seed(
                    derive_seed(cfg.seed, "gan-draws", state.round, epoch, step))
                with torch.no_grad():
                    anchors = precision.forward(loaded.model, images)  # (b, D) fp32, eval mode
                    a, p, n, _ = batch_triplets(anchors, indices, memory, graph, cfg.num_draws, draw_gen)
                g_loss, d_loss = _gan_step(state, a, p, n)
                sums += torch.stack([g_loss.to(sums.dtype) * len(indices), d_loss.to(sums.dtype) * len(indices),
                                     sums.new_tensor(float(len(indices)))])
                meter.add(len(indices) * distributed.context().world)
                step += 1
                progress.advance(task)
                stopping = distributed.any_rank(bool(stop), device)
                if stopping and step < source.num_batches():
                    total = distributed.all_reduce_sum(sums)
                    state.resume_batch, state.partial_sums = step, total.tolist()
                    if not all(map(_finite, state.partial_sums)):
                        raise IslError("non-finite GAN loss; stopped and saved nothing new")
                    _save(job, state, partial, loaded, complete=False)
                    raise StageInterrupted(f"stopped in GAN epoch {epoch + 1} at batch {step}; "
                                           f"checkpoint saved to {partial}", job.resume_command)
            state.resume_batch, state.partial_sums = 0, [0.0] * 3
            sums = distributed.all_reduce_sum(sums)  # (3,) over every rank
            g_mean, d_mean = (sums[:2] / sums[2]).tolist()
            if not (_finite(g_mean) and _finite(d_mean)):
                raise IslError(f"non-finite GAN loss in epoch {epoch + 1}; stopped and saved nothing new "
                               f"(last good checkpoint: {partial if partial.exists() else 'none'})")
            state.g_losses.append(g_mean)
            state.d_losses.append(d_mean)
            decision = decide(state.g_losses, state.round, max_epochs=cfg.max_epochs, fixed_epochs=cfg.epochs)
            state.history.append({"round": state.round, "epoch": epoch + 1, "g_loss": g_mean, "d_loss": d_mean,
                                  "seconds": round(time.perf_counter() - start, 3),
                                  "images_per_s": round(meter.rate, 1)})
            progress.update(task, stats=f"g {g_mean:.4f} d {d_mean:.4f} | {meter.rate:.0f} img/s")
            log(f"gan epoch {epoch + 1} (round {state.round}): g_loss {g_mean:.4f}, d_loss {d_mean:.4f}")
            state.stop_reason = decision.reason
            if decision.stop:
                return decision
            _save(job, state, partial, loaded, complete=False)
            if stopping:
                raise StageInterrupted(f"stopped after GAN epoch {epoch + 1}; checkpoint saved to {partial}",
                                       job.resume_command)


def _gan_step(state: _GanState, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor):
    fake = state.generator(a, p, n)  # (B, D) proxies p'
    state.opt_d.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(state.discriminator, a, p, n, fake)  # p' detached inside
    d_loss.backward()
    state.opt_d.step()
    state.opt_g.zero_grad(set_to_none=True)
    g_loss = generator_loss(state.discriminator, a, p, n, fake)  # through the updated discriminator
    g_loss.backward()
    state.opt_g.step()
    return g_loss.detach(), d_loss.detach()


def _save(job: GanJob, state: _GanState, path: Path, loaded: LoadedFeatures, complete: bool) -> None:
    tensors = module_tensors("generator", distributed.unwrap(state.generator))
    tensors.update(module_tensors("discriminator", distributed.unwrap(state.discriminator)))
    g_tensors, g_info = optimizer_tensors("optim_g", state.opt_g)
    d_tensors, d_info = optimizer_tensors("optim_d", state.opt_d)
    tensors.update(g_tensors)
    tensors.update(d_tensors)
    tensors["g_losses"] = torch.tensor(state.g_losses, dtype=torch.float64)
    tensors["d_losses"] = torch.tensor(state.d_losses, dtype=torch.float64)
    meta = {"round": state.round, "epochs": len(state.g_losses), "complete": complete,
            "resume_batch": state.resume_batch, "partial_sums": state.partial_sums,
            "stop_reason": state.stop_reason, "features_id": state.features_id, "optim_g": g_info,
            "optim_d": d_info, "history": state.history, "origin": state.origin,
            "low_dim": loaded.spec.low_dim, "features": str(job.features)}
    save_gan(path, tensors, fingerprint=loaded.fingerprint, config=to_dict(state.cfg), meta=meta)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
