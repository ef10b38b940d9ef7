"""The GAN stage: a generator of proxy features and a triplet discriminator.

The backbone and bank are frozen. Each batch:

    1. anchors    a = backbone(augment(x)) in eval mode, no grad       (B, D)
    2. triplets   p = M_i, n = nearest of K non-neighbour draws        (B, D) each
    3. proxy      p' = G(a, p, n)                                      (B, D)
    4. D step     BCE: (a,p,n) real; (a,p,p'), (a,p',n) fake, p' detached
    5. G step     BCE: make Dis call (a,p,p') and (a,p',n) real

After each epoch the stopping rule (paper / fixed / hard cap) decides, and
the log says which rule ended the stage. Resume, Ctrl-C, the loss sums and
the checkpoints are the runner's (`engine/loop.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.checkpoints import load_gan, metrics_path, partial_path, save_gan
from isl_cli.config import GanConfig, from_dict, to_dict
from isl_cli.data.store import load_split
from isl_cli.engine.embedding import batch_source
from isl_cli.engine.features_file import features_inputs, open_features, which_graph
from isl_cli.engine.imagenet_note import gan_line
from isl_cli.engine.loop import Epoch, Position, Stage, refuse_changed_options, run_stage
from isl_cli.engine.progress import log
from isl_cli.engine.state import derive_seed, generator_for, load_optimizer, module_tensors, optimizer_tensors
from isl_cli.engine.stopping import decide
from isl_cli.errors import IslError
from isl_cli.locks import writes
from isl_cli.losses import discriminator_loss, generator_loss
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.models.spec import load_module
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import resolve
from isl_cli.triplets import batch_triplets


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
class GanState(Position):
    """Everything a GAN checkpoint restores."""

    cfg: GanConfig = None  # type: ignore[assignment]
    generator: torch.nn.Module = None  # type: ignore[assignment]
    discriminator: torch.nn.Module = None  # type: ignore[assignment]
    opt_g: torch.optim.Adam = None  # type: ignore[assignment]
    opt_d: torch.optim.Adam = None  # type: ignore[assignment]
    round: int = 0
    features_id: str = ""
    g_losses: list[float] = field(default_factory=list)
    d_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    origin: dict[str, Any] = field(default_factory=dict)


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [*features_inputs(job.features, job.data_dir), job.init, job.neighbors])
def train_gan(job: GanJob) -> GanResult:
    """Run (or resume) the GAN stage and write the gan artifact."""
    return run_stage(GanStage(job))


class GanStage(Stage[GanState]):
    """train-gan as a checkpointed stage: its networks, its epoch, its stopping rule."""

    kind, label, sum_names = "gan", "gan", ("g_loss", "d_loss")

    def __init__(self, job: GanJob):
        super().__init__(job.out, job.device, resume=job.resume, overwrite=job.overwrite, progress=job.progress,
                         resume_command=job.resume_command)
        self.job = job
        self.precision = resolve(job.amp, job.channels_last, job.device)
        self.loaded = open_features(job.features, job.device, job.data_dir)
        if not self.loaded.artifact.meta.get("complete", True):
            raise IslError(f"{job.features}: is an unfinished checkpoint; finish train-features first (--resume)")

    # ---- build

    def done(self) -> GanResult:
        art = load_gan(self.out, fingerprint=self.loaded.fingerprint)
        return GanResult(self.out, int(art.meta.get("round", 0)), art["g_losses"].tolist(),
                         art["d_losses"].tolist(), str(art.meta.get("stop_reason", "")), skipped=True)

    def fresh(self) -> GanState:
        job, loaded = self.job, self.loaded
        if loaded.spec.variant == "imagenet":
            log(gan_line(job.config))
        cfg = job.config.validate()
        torch.manual_seed(derive_seed(cfg.seed, "gan-init"))
        state = self._networks(cfg)
        state.round = int(loaded.artifact.meta.get("round", 0))
        state.features_id = str(loaded.artifact.meta.get("features_id"))
        state.origin = {"features": str(job.features), "init": str(job.init) if job.init else None}
        if job.init is not None:
            init = load_gan(job.init, fingerprint=loaded.fingerprint, device=self.device)
            _load_networks(init, state, str(job.init))
            state.origin["init_round"] = init.meta.get("round")
            if "lr" in job.given:  # typed: over the restored Adam state of both networks
                for group in (*state.opt_g.param_groups, *state.opt_d.param_groups):
                    group["lr"] = cfg.lr
                state.origin["applied_over_init"] = {"lr": cfg.lr}
                log(f"--init {job.init}: applied over the restored Adam state: --lr {cfg.lr:g}")
            elif "lr" in init.config:  # not typed: the restored rate is the previous round's; record that
                state.cfg = replace(cfg, lr=init.config["lr"]).validate()
        if job.round_index is not None:
            state.round = job.round_index
        return _wrapped(state, self.device)

    def restore(self) -> GanState:
        art = load_gan(self.partial, fingerprint=self.loaded.fingerprint, device=self.device)
        if art.meta.get("features_id") != self.loaded.artifact.meta.get("features_id"):
            raise IslError(f"{self.partial}: this checkpoint was made from other features than {self.job.features}")
        if self.loaded.spec.variant == "imagenet":
            log(gan_line(self.job.config))
        state = self._networks(from_dict(GanConfig, art.config).validate())
        refuse_changed_options(self.job.config, state.cfg, self.job.given, self.partial)
        _load_networks(art, state, str(self.partial))
        sums = [float(x) for x in art.meta.get("partial_sums", [0.0] * 3)]
        state = replace(state, round=int(art.meta.get("round", 0)), features_id=str(art.meta.get("features_id")),
                        g_losses=art["g_losses"].tolist(), d_losses=art["d_losses"].tolist(),
                        history=list(art.meta.get("history", [])), origin=dict(art.meta.get("origin", {})),
                        resume_batch=int(art.meta.get("resume_batch", 0)),
                        partial_sums=sums)
        return _wrapped(state, self.device)

    def _networks(self, cfg: GanConfig) -> GanState:
        """Freshly initialised networks and their Adam optimisers (the caller seeds)."""
        dim = self.loaded.spec.low_dim
        generator, discriminator = Generator(dim).to(self.device), Discriminator(dim).to(self.device)
        return GanState(cfg=cfg, generator=generator, discriminator=discriminator,
                        opt_g=torch.optim.Adam(generator.parameters(), lr=cfg.lr),
                        opt_d=torch.optim.Adam(discriminator.parameters(), lr=cfg.lr))

    def begin(self, state: GanState, resumed: bool) -> None:
        loaded, cfg = self.loaded, state.cfg
        chosen = which_graph(loaded.artifact, self.job.neighbors, loaded.fingerprint, loaded.memory.shape[0])
        self.graph = NeighborGraph.from_pairs(chosen.pairs.to(self.device), loaded.memory.shape[0])
        train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
        self.source = batch_source(train, loaded.spec, train=True, batch_size=cfg.batch_size, device=self.device,
                                   num_workers=cfg.num_workers)
        self.batches_per_epoch = max(1, self.source.num_batches())  # what round 0's floor in steps is counted in
        self.precision.prepare(loaded.model)
        log(self.precision.describe())
        if resumed:
            log(f"resuming {self.partial} after epoch {len(state.g_losses)}")
        if self.finished(state):
            return
        cap = cfg.epochs if cfg.epochs is not None else cfg.max_epochs
        floor = (f", round 0 at least {cfg.min_steps} steps" if cfg.min_steps and state.round == 0 and not cfg.epochs
                 else "")
        log(f"round {state.round}: training the GAN (up to {cap} epochs; "
            + (f"fixed {cfg.epochs}" if cfg.epochs else f"paper's stopping rule{floor}, cap {cfg.max_epochs}") + ")")

    # ---- epochs

    def finished(self, state: GanState) -> bool:
        """Whether the stopping rule ends the stage (and why: kept in `state.stop_reason`)."""
        if not state.g_losses:
            return False
        cfg = state.cfg
        floor = math.ceil(cfg.min_steps / self.batches_per_epoch)  # round 0's floor in epochs (0: the reference's)
        decision = decide(state.g_losses, state.round, max_epochs=cfg.max_epochs, fixed_epochs=cfg.epochs,
                          min_round0_epochs=floor)
        state.stop_reason = decision.reason
        return decision.stop

    def epoch_index(self, state: GanState) -> int:
        return len(state.g_losses)

    def open_epoch(self, state: GanState):
        generator = generator_for(state.cfg.seed, "gan-batches", state.round, len(state.g_losses))
        return self.source.batches(generator, start=state.resume_batch), self.source.num_batches()

    def train_one_epoch(self, state: GanState, epoch: Epoch) -> dict[str, float]:
        cfg, loaded = state.cfg, self.loaded
        for indices, images in epoch:  # this rank's slice (b,) of each global batch, (b, 3, S, S)
            # one draw generator per batch (epoch.step: its index in the epoch), so a resumed epoch draws the
            # same negatives
            draws = torch.Generator(device=self.device).manual_seed(
                derive_seed(cfg.seed, "gan-draws", state.round, len(state.g_losses), epoch.step))
            with torch.no_grad():
                anchors = self.precision.forward(loaded.model, images)  # (b, D) fp32, eval mode
                a, p, n, _ = batch_triplets(anchors, indices, loaded.memory, self.graph, cfg.num_draws, draws)
            epoch.record(len(indices), gan_step(state, a, p, n))
        return epoch.means()

    def end_epoch(self, state: GanState, metrics: dict[str, float], epoch: Epoch) -> None:
        g_mean, d_mean = metrics["g_loss"], metrics["d_loss"]
        state.g_losses.append(g_mean)
        state.d_losses.append(d_mean)
        state.history.append({"round": state.round, "epoch": epoch.number, "g_loss": g_mean, "d_loss": d_mean,
                              "seconds": round(epoch.seconds, 3), "images_per_s": round(epoch.rate, 1)})
        log(f"gan epoch {epoch.number} (round {state.round}): g_loss {g_mean:.4f}, d_loss {d_mean:.4f}")

    # ---- artifacts

    def save(self, state: GanState, path: Path, complete: bool) -> None:
        tensors = module_tensors("generator", distributed.unwrap(state.generator))
        tensors.update(module_tensors("discriminator", distributed.unwrap(state.discriminator)))
        g_tensors, g_info = optimizer_tensors("optim_g", state.opt_g)
        d_tensors, d_info = optimizer_tensors("optim_d", state.opt_d)
        tensors.update(g_tensors)
        tensors.update(d_tensors)
        tensors["g_losses"] = torch.tensor(state.g_losses, dtype=torch.float64)
        tensors["d_losses"] = torch.tensor(state.d_losses, dtype=torch.float64)
        meta = {"round": state.round, "epochs": len(state.g_losses), "complete": complete,
                "resume_batch": state.resume_batch, "partial_sums": state.partial_sums or [0.0] * 3,
                "stop_reason": state.stop_reason, "features_id": state.features_id, "optim_g": g_info,
                "optim_d": d_info, "history": state.history, "origin": state.origin,
                "low_dim": self.loaded.spec.low_dim, "features": str(self.job.features)}
        save_gan(path, tensors, fingerprint=self.loaded.fingerprint, config=to_dict(state.cfg), meta=meta)

    def result(self, state: GanState) -> GanResult:
        log(f"[bold]train-gan stopped after {len(state.g_losses)} epochs: {state.stop_reason}[/bold]")
        return GanResult(self.out, state.round, state.g_losses, state.d_losses, state.stop_reason)


def gan_step(state: GanState, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator step, then one generator step, on triplets (b, D) each; returns both losses."""
    fake = state.generator(a, p, n)  # (b, D) proxies p'
    state.opt_d.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(state.discriminator, a, p, n, fake)  # p' detached inside
    d_loss.backward()
    state.opt_d.step()
    state.opt_g.zero_grad(set_to_none=True)
    g_loss = generator_loss(state.discriminator, a, p, n, fake)  # through the updated discriminator
    g_loss.backward()
    state.opt_g.step()
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}


def _wrapped(state: GanState, device: torch.device) -> GanState:
    """Both networks in the data-parallel wrapper (a no-op in one process)."""
    state.generator = distributed.wrap_model(state.generator, device, sync_bn=False)
    state.discriminator = distributed.wrap_model(state.discriminator, device, sync_bn=False)
    return state


def _load_networks(art: Any, state: GanState, what: str) -> None:
    load_module(state.generator, art.with_prefix("generator."), what)
    load_module(state.discriminator, art.with_prefix("discriminator."), what)
    load_optimizer(state.opt_g, art.with_prefix("optim_g."), art.meta.get("optim_g", {}), what)
    load_optimizer(state.opt_d, art.with_prefix("optim_d."), art.meta.get("optim_d", {}), what)
