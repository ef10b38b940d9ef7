"""The mining stage: new neighbour pairs, by the GAN's proxies or by plain similarity (docs/method.md section 7).

`--miner gan` (the paper's): everything is frozen. Each batch builds triplets
from augmented anchors, makes proxies p' = G(a, p, n), scores them
s = Dis(a, p', n), and for images with s > tau adds every j among the 10 bank
rows nearest p' with M_j . p' > r, r = R + (1 - s)(1 - R). A round always
runs its first pass (a do-while, as the reference), then passes repeat until
the entries exceed (round + 1) * 0.5 * N or the pass cap (`quota_check`
"batch"/"exact": also checked after each batch, "exact" adding only what the
quota still needs; `stop_after_empty` N: N empty passes in a row end it).
What each test rejected is counted (`propose_pairs`' tally) into the stats.

`--miner similarity` (the AND-style rival): in one pass, as many of the bank's
most similar non-neighbour pairs as the quota needs.

A pass is the runner's epoch (`engine/loop.py`), saved to
OUT.partial.safetensors; a resumed run continues at the next pass and, every
draw being seeded by (seed, round, pass, batch), ends bit for bit as an
uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.artifacts import fingerprint_tensors, read_header
from isl_cli.checkpoints import load_neighbors, metrics_path, partial_path, save_neighbors
from isl_cli.config import MineConfig, to_dict
from isl_cli.data.store import load_split
from isl_cli.engine.embedding import batch_source
from isl_cli.engine.features_file import features_inputs, open_features, which_graph
from isl_cli.engine.frozen_gan import open_frozen_gan
from isl_cli.engine.imagenet_note import mine_line
from isl_cli.engine.loop import Epoch, Position, Stage, run_stage
from isl_cli.engine.mining_report import (
    ROUND_TALLY,
    mining_stats,
    rejection_line,
    rounds_for,
    stop_reason,
    tally_stats,
)
from isl_cli.engine.progress import log
from isl_cli.engine.state import derive_seed, generator_for
from isl_cli.errors import IslError
from isl_cli.locks import writes
from isl_cli.mining import first_new_pairs, pairs_for_quota, propose_pairs, quota, quota_reached
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import resolve
from isl_cli.similarity_pairs import most_similar_pairs
from isl_cli.triplets import batch_triplets


@dataclass
class MineJob:
    """What `isl mine-neighbors` was asked to do."""

    config: MineConfig
    features: Path
    gan: Path | None  # None with the similarity miner
    out: Path
    device: torch.device
    neighbors: Path | None = None
    round_index: int | None = None
    overwrite: bool = False
    progress: bool = True
    data_dir: Path | None = None  # overrides the data set folder the features record
    resume: bool = False  # continue from OUT.partial.safetensors (the passes already done)
    resume_command: str | None = None
    amp: str = "none"  # precision of the backbone forward: none | bf16 | fp16 | auto (see isl_cli.precision)
    channels_last: bool = False


@dataclass
class MineResult:
    out: Path
    round: int
    passes: int
    entries: int
    quota: int
    reached: bool
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class MineState(Position):
    """The graph being grown and the passes done."""

    graph: NeighborGraph = None  # type: ignore[assignment]
    passes: int = 0
    empty_run: int = 0  # passes in a row, the last ones, that added no pair
    tally: list[int] = field(default_factory=lambda: [0] * len(ROUND_TALLY))  # the round's counts (ROUND_TALLY)
    scores: list[float] = field(default_factory=lambda: [0.0, 0.0])  # sum and max of the round's scores s


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [*features_inputs(job.features, job.data_dir), job.gan, job.neighbors])
def mine_neighbors(job: MineJob) -> MineResult:
    """Mine new pairs and write a neighbors artifact (old edges plus new)."""
    return run_stage(MiningStage(job))


class MiningStage(Stage[MineState]):
    """mine-neighbors as a checkpointed stage whose epochs are passes (no loss, no mid-pass checkpoint)."""

    kind, label, epoch_word, checkpoint_mid_epoch = "neighbors", "mining", "pass", False

    def __init__(self, job: MineJob):
        super().__init__(job.out, job.device, resume=job.resume, overwrite=job.overwrite, progress=job.progress,
                         resume_command=job.resume_command)
        self.job, self.cfg = job, job.config.validate()
        self.precision = resolve(job.amp, job.channels_last, job.device)

    # ---- build

    def done(self) -> MineResult:
        meta = read_header(self.out, "neighbors").meta
        stats = meta.get("stats", {})
        return MineResult(self.out, int(meta.get("round", 0)), int(stats.get("passes", 0)),
                          int(stats.get("entries", 0)), int(stats.get("quota", 0)), bool(meta.get("reached_quota")),
                          stats)

    def fresh(self) -> MineState:
        self._open()
        return MineState(graph=NeighborGraph.from_pairs(self.base.pairs.to(self.device), self.n))  # grown in place

    def restore(self) -> MineState:
        """The graph and pass count of a mining checkpoint made by the same job (else one line saying what differs)."""
        self._open()
        nfile = load_neighbors(self.partial, fingerprint=self.loaded.fingerprint, num_images=self.n,
                               allow_partial=True)
        saved = nfile.meta.get("inputs", {})
        differs = sorted(k for k in self.inputs if saved.get(k) != self.inputs[k])
        if differs:
            raise IslError(f"{self.partial}: was made with other {', '.join(differs)} than this command; run the "
                           "same command with --resume, or --overwrite to start over")
        saved_meta = nfile.meta
        state = MineState(graph=NeighborGraph.from_pairs(nfile.pairs.to(self.device), self.n),
                          passes=int(saved_meta.get("passes", 0)), empty_run=int(saved_meta.get("empty_run", 0)),
                          tally=[int(v) for v in saved_meta.get("tally", [0] * len(ROUND_TALLY))],
                          scores=[float(v) for v in saved_meta.get("scores", [0.0, 0.0])])
        log(f"resuming {self.partial} after mining pass {state.passes} ({state.graph.num_entries()} neighbour entries)")
        return state

    def _open(self) -> None:
        """Features, GAN, data and the graph to grow; what a checkpoint must have been made with."""
        job, cfg = self.job, self.cfg
        self.start = time.perf_counter()
        loaded = self.loaded = open_features(job.features, job.device, job.data_dir)
        if loaded.spec.variant == "imagenet":
            log(mine_line(cfg))
        self.precision.prepare(loaded.model)
        meta = loaded.artifact.meta
        if not meta.get("complete", True):
            raise IslError(f"{job.features}: is an unfinished checkpoint; finish train-features first (--resume)")
        gan_id = None
        if cfg.miner == "gan":
            self.generator, self.discriminator, gan_id = open_frozen_gan(job.gan, job.features, loaded, job.device)
        self.train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
        self.n = n = len(self.train)
        self.base = which_graph(loaded.artifact, job.neighbors, loaded.fingerprint, n)
        self.base_graph = NeighborGraph.from_pairs(self.base.pairs.to(job.device), n)  # never modified
        self.round = job.round_index if job.round_index is not None else int(meta.get("round", 0))
        self.target = quota(self.round, n, cfg.per_round)
        self.inputs = {"config": to_dict(cfg), "round": self.round, "features_id": meta.get("features_id"),
                       "gan_id": gan_id, "base_id": fingerprint_tensors(self.base_graph.keys)}

    def begin(self, state: MineState, resumed: bool) -> None:
        cfg = self.cfg
        self.source = batch_source(self.train, self.loaded.spec, train=True, batch_size=cfg.batch_size,
                                   device=self.device, num_workers=cfg.num_workers)
        log(self.precision.describe())
        if cfg.miner == "similarity":
            log(f"round {self.round}: mining by plain similarity: the most similar non-neighbour pairs of the bank "
                f"until more than {self.target} neighbour entries (now {state.graph.num_entries()}), in one pass")
            return
        empty = f"; stop after {cfg.stop_after_empty} empty passes in a row" if cfg.stop_after_empty else ""
        log(f"round {self.round}: mining until more than {self.target} neighbour entries "
            f"(now {state.graph.num_entries()}), at least 1 and at most {cfg.max_passes} passes{empty}")

    # ---- passes

    def finished(self, state: MineState) -> bool:
        """A do-while, as the reference: the first pass runs even when the graph already exceeds the quota."""
        cfg = self.cfg
        over = quota_reached(state.graph.num_entries(), self.target)
        stalled = cfg.stop_after_empty > 0 and state.empty_run >= cfg.stop_after_empty
        one_pass = cfg.miner == "similarity" and state.passes > 0
        return state.passes >= cfg.max_passes or (state.passes > 0 and (over or stalled)) or one_pass

    def epoch_index(self, state: MineState) -> int:
        return state.passes

    def open_epoch(self, state: MineState):
        self.entries_before = state.graph.num_entries()
        if self.cfg.miner == "similarity":  # one step over the whole bank: no data
            return iter([(None, None)]), 1
        generator = generator_for(self.cfg.seed, "mine-batches", self.round, state.passes)
        return self.source.batches(generator), self.source.num_batches()

    @torch.no_grad()
    def train_one_epoch(self, state: MineState, epoch: Epoch) -> dict[str, float]:
        if self.cfg.miner == "similarity":
            return self._similarity_pass(state, epoch)
        cfg, memory, graph = self.cfg, self.loaded.memory, state.graph
        tally = torch.zeros(len(ROUND_TALLY) - 1, dtype=torch.int64, device=self.device)  # (5,) this pass
        score_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        score_max = torch.full((), float(state.scores[1]), dtype=torch.float64, device=self.device)
        for indices, images in epoch:  # this rank's slice (b,) of each batch, (b, 3, S, S)
            draws = torch.Generator(device=self.device).manual_seed(
                derive_seed(cfg.seed, "mine-draws", self.round, state.passes, epoch.step))
            anchors = self.precision.forward(self.loaded.model, images)  # (b, D) fp32, eval mode
            a, p, neg, _ = batch_triplets(anchors, indices, memory, graph, cfg.num_draws, draws)
            proxies = self.generator(a, p, neg)  # (b, D)
            scores = self.discriminator.score(a, proxies, neg).squeeze(1)  # (b,)
            rows, cols, counts = propose_pairs(proxies, scores, indices, memory, cfg.tau, cfg.base_radius,
                                               cfg.top_k)  # (P,), (P,), (5,)
            tally += counts
            score_sum += scores.double().sum()
            score_max = torch.maximum(score_max, scores.double().max())
            # every rank adds every rank's proposals, in rank order: the graphs stay identical
            rows, cols = distributed.all_gather_cat(rows), distributed.all_gather_cat(cols)  # (P,), (P,)
            if cfg.quota_check == "exact":  # no more than the quota needs, in the proposals' order
                rows, cols = first_new_pairs(rows, cols, graph, pairs_for_quota(graph.num_entries(), self.target))
            graph.add_pairs(rows, cols)
            epoch.record(len(indices))
            # per-batch quota (same graph on every rank); the first batch always runs
            if cfg.quota_check != "pass" and quota_reached(graph.num_entries(), self.target):
                break
        tally, score_sum = distributed.all_reduce_sum(tally), distributed.all_reduce_sum(score_sum)
        state.tally[:len(tally)] = [a + int(b) for a, b in zip(state.tally, tally.tolist())]
        state.scores = [state.scores[0] + float(score_sum), float(distributed.all_reduce_max(score_max))]
        return epoch.means()

    def _similarity_pass(self, state: MineState, epoch: Epoch) -> dict[str, float]:
        """The AND-style rival: as many of the most similar non-neighbour pairs as the quota needs, at once."""
        graph = state.graph
        for _ in epoch:
            wanted = pairs_for_quota(graph.num_entries(), self.target)
            pairs, _ = most_similar_pairs(self.loaded.memory, wanted, graph.keys)  # (E, 2), i < j
            graph.add_pairs(pairs[:, 0], pairs[:, 1])
            epoch.record(self.n)
        return epoch.means()

    def end_epoch(self, state: MineState, metrics: dict[str, float], epoch: Epoch) -> None:
        state.passes += 1
        added = (state.graph.num_entries() - self.entries_before) // 2
        state.tally[-1] += added
        state.empty_run = 0 if added else state.empty_run + 1
        epoch.show(f"{state.graph.num_entries()} entries / quota {self.target} | {epoch.rate:.0f} img/s")
        log(f"mining pass {state.passes}: {state.graph.num_entries()} neighbour entries (quota {self.target})")

    # ---- artifacts

    def save(self, state: MineState, path: Path, complete: bool) -> None:
        graph, n = state.graph, self.n
        if not complete:  # the graph after `passes` finished passes
            save_neighbors(path, graph.pairs().cpu(), fingerprint=self.loaded.fingerprint, num_images=n,
                           round_index=self.round, config=self.inputs["config"],
                           meta={"complete": False, "passes": state.passes, "inputs": self.inputs,
                                 "empty_run": state.empty_run, "tally": state.tally, "scores": state.scores})
            return
        cfg, target = self.cfg, self.target
        self.reached = reached = quota_reached(graph.num_entries(), target)
        reason = stop_reason(cfg, state.passes, graph.num_entries(), target, state.empty_run, reached)
        if not reached:
            log(f"[yellow]{reason}[/yellow]")
        if not distributed.same_on_all_ranks(graph.keys):
            raise IslError("data-parallel ranks mined different graphs; nothing was written")
        pairs = graph.pairs().cpu()  # (E, 2) with i < j
        base = self.base_graph.to("cpu")
        is_new = ~base.contains(pairs[:, 0], pairs[:, 1:]).squeeze(1)  # (E,)
        round_added = rounds_for(pairs, self.base.pairs, self.base.round_added, is_new, self.round, n)
        self.stats = mining_stats(graph.to("cpu"), self.train.labels, pairs[is_new], self.loaded.memory,
                                  self.base_graph.keys)
        self.stats.update({"passes": state.passes, "quota": target, "reason": reason, "miner": cfg.miner,
                           "stopped_empty": bool(cfg.stop_after_empty and state.empty_run >= cfg.stop_after_empty
                                                 and not reached)})
        if cfg.miner == "gan":
            self.stats.update(tally_stats(state.tally, state.scores))
            self.stats["rejections"] = rejection_line(self.stats["proposals"], cfg.tau)
            log(f"round {self.round} proposals: {self.stats['rejections']}")
        meta = self.loaded.artifact.meta
        save_neighbors(path, pairs, fingerprint=self.loaded.fingerprint, num_images=n, round_index=self.round,
                       round_added=round_added, config=to_dict(cfg),
                       meta={"stats": self.stats, "features": str(self.job.features),
                             "gan": str(self.job.gan) if self.job.gan else None,
                             "features_id": meta.get("features_id"), "reached_quota": reached, "complete": True})

    def result(self, state: MineState) -> MineResult:
        return MineResult(self.out, self.round, state.passes, state.graph.num_entries(), self.target, self.reached,
                          self.stats, time.perf_counter() - self.start)

