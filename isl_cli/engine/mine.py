"""The mining stage: GAN proxies become new neighbour pairs (ISL-METHOD.md section 7).

Everything is frozen. Each batch builds triplets from augmented anchors, makes
proxies p' = G(a, p, n), scores them s = Dis(a, p', n), and for images with
s > tau adds every j among the 10 bank rows nearest p' with M_j . p' > r,
r = R + (1 - s)(1 - R). As in the reference (a do-while), a round always
runs its first pass, then passes repeat until the neighbour entries exceed
(round + 1) * 0.5 * N or the pass cap is reached; with `quota_check="batch"`
the quota is also checked after each batch, the first batch always running.

After each pass that is not the last, the graph so far is saved atomically to
OUT.partial.safetensors; `resume=True` (or `isl run` again) continues at the
next pass. Every pass draws from generators seeded by (seed, round, pass,
batch), so a resumed run ends bit for bit where an uninterrupted one ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isl_cli import distributed
from isl_cli.artifacts import fingerprint_tensors, read_header
from isl_cli.checkpoints import load_gan, load_neighbors, metrics_path, partial_path, save_neighbors
from isl_cli.config import MineConfig, to_dict
from isl_cli.data.store import load_split
from isl_cli.engine.common import batch_source, batch_triplets, features_inputs, open_features, plan_output
from isl_cli.engine.imagenet_note import mine_line
from isl_cli.engine.progress import Throughput, graceful_interrupt, log, make_progress
from isl_cli.engine.state import derive_seed, generator_for, load_module
from isl_cli.errors import IslError, StageInterrupted
from isl_cli.locks import writes
from isl_cli.mining import propose_pairs, quota
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.neighbors import NeighborGraph, graph_stats
from isl_cli.precision import resolve
from isl_cli.similarity_pairs import similarity_rival


@dataclass
class MineJob:
    """What `isl mine-neighbors` was asked to do."""

    config: MineConfig
    features: Path
    gan: Path
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


@writes(outputs=lambda job: [job.out, partial_path(job.out), metrics_path(job.out)],
        inputs=lambda job: [*features_inputs(job.features, job.data_dir), job.gan, job.neighbors])
def mine_neighbors(job: MineJob) -> MineResult:
    """Mine new pairs and write a neighbors artifact (old edges plus new)."""
    cfg = job.config.validate()
    precision = resolve(job.amp, job.channels_last, job.device)
    partial = partial_path(job.out)
    plan = plan_output(job.out, partial, resume=job.resume, overwrite=job.overwrite, kind="neighbors")
    if plan == "done":
        log(f"{job.out} is already complete; nothing to resume")
        return _done_result(job.out)
    start = time.perf_counter()
    loaded = open_features(job.features, job.device, job.data_dir)
    if loaded.spec.variant == "imagenet":
        log(mine_line(cfg))
    precision.prepare(loaded.model)
    meta = loaded.artifact.meta
    if not meta.get("complete", True):
        raise IslError(f"{job.features}: is an unfinished checkpoint; finish train-features first (--resume)")
    gan = load_gan(job.gan, fingerprint=loaded.fingerprint, device=job.device)
    if gan.meta.get("features_id") != meta.get("features_id"):
        raise IslError(f"{job.gan}: was trained on other features than {job.features} "
                       f"(features id {gan.meta.get('features_id')} vs {meta.get('features_id')}); "
                       "run train-gan on these features first")
    if not gan.meta.get("complete", True):
        raise IslError(f"{job.gan}: is an unfinished checkpoint; finish train-gan first (--resume)")
    dim = loaded.spec.low_dim
    generator, discriminator = Generator(dim).to(job.device), Discriminator(dim).to(job.device)
    load_module(generator, gan.with_prefix("generator."), str(job.gan))
    load_module(discriminator, gan.with_prefix("discriminator."), str(job.gan))
    generator.eval()
    discriminator.eval()

    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    n = len(train)
    base_pairs, base_rounds = _base_pairs(job, loaded, n)
    graph = NeighborGraph.from_pairs(base_pairs.to(job.device), n)
    initial_keys = graph.keys.clone()
    round_index = job.round_index if job.round_index is not None else int(meta.get("round", 0))
    target = quota(round_index, n, cfg.per_round)
    # what a checkpoint must have been made with to be continued by this job
    inputs = {"config": to_dict(cfg), "round": round_index, "features_id": meta.get("features_id"),
              "gan_id": fingerprint_tensors(*(gan[k].reshape(-1) for k in sorted(gan.tensors)
                                               if k.startswith(("generator.", "discriminator.")))),
              "base_id": fingerprint_tensors(initial_keys)}
    passes = 0
    if plan == "resume":
        graph, passes = _restore(partial, inputs, loaded.fingerprint, n, job.device)
        log(f"resuming {partial} after mining pass {passes} ({graph.num_entries()} neighbour entries)")
    source = batch_source(train, loaded.spec, train=True, batch_size=cfg.batch_size, device=job.device,
                          num_workers=cfg.num_workers)
    log(precision.describe())
    log(f"round {round_index}: mining until more than {target} neighbour entries (now {graph.num_entries()}), "
        f"at least 1 and at most {cfg.max_passes} passes")
    with torch.no_grad(), graceful_interrupt() as stop, make_progress(job.progress) as progress:
        task = progress.add_task(f"round {round_index} mining", total=source.num_batches(), stats="")
        # a do-while, as the reference: the first pass runs even when the graph already exceeds the quota
        while passes < cfg.max_passes and (passes == 0 or graph.num_entries() <= target):
            progress.reset(task, total=source.num_batches(), description=f"round {round_index} mining pass {passes + 1}")
            meter = Throughput()
            batch_gen = generator_for(cfg.seed, "mine-batches", round_index, passes)
            for step, (indices, images) in enumerate(source.batches(batch_gen)):
                draw_gen = torch.Generator(device=job.device).manual_seed(
                    derive_seed(cfg.seed, "mine-draws", round_index, passes, step))
                anchors = precision.forward(loaded.model, images)  # (b, D) fp32, eval mode
                a, p, neg, _ = batch_triplets(anchors, indices, loaded.memory, graph, cfg.num_draws, draw_gen)
                proxies = generator(a, p, neg)  # (b, D)
                scores = discriminator.score(a, proxies, neg).squeeze(1)  # (b,)
                rows, cols = propose_pairs(proxies, scores, indices, loaded.memory, cfg.tau, cfg.base_radius,
                                           cfg.top_k)  # (P,), (P,)
                # every rank adds every rank's proposals, in rank order: the graphs stay identical
                graph.add_pairs(distributed.all_gather_cat(rows), distributed.all_gather_cat(cols))
                meter.add(len(indices) * distributed.context().world)
                progress.advance(task)
                if distributed.any_rank(bool(stop), job.device):
                    kept = (f"passes 1-{passes} are saved in {partial}" if passes else
                            "no pass had finished, so nothing was saved")
                    raise StageInterrupted(f"mining interrupted in pass {passes + 1}; {kept}", job.resume_command)
                # per-batch quota (same graph on every rank); the first batch always runs
                if cfg.quota_check == "batch" and graph.num_entries() > target:
                    break
            passes += 1
            progress.update(task, stats=f"{graph.num_entries()} entries / quota {target} | {meter.rate:.0f} img/s")
            log(f"mining pass {passes}: {graph.num_entries()} neighbour entries (quota {target})")
            if passes < cfg.max_passes and graph.num_entries() <= target:  # another pass follows: checkpoint
                _save_partial(partial, graph, passes, inputs, loaded.fingerprint, n, round_index)

    reached = graph.num_entries() > target
    if reached:
        reason = f"quota reached: {graph.num_entries()} entries > {target} after {passes} passes"
    else:
        reason = (f"stopped at the cap of {cfg.max_passes} passes with {graph.num_entries()} entries, "
                  f"below the quota of {target}; writing what was found")
        log(f"[yellow]{reason}[/yellow]")
    if not distributed.same_on_all_ranks(graph.keys):
        raise IslError("data-parallel ranks mined different graphs; nothing was written")
    pairs = graph.pairs().cpu()  # (E, 2) with i < j
    is_new = ~_member(pairs[:, 0] * n + pairs[:, 1], initial_keys.cpu())
    round_added = _rounds_for(pairs, base_pairs, base_rounds, is_new, round_index, n)
    stats = _stats(graph.to("cpu"), train.labels, pairs[is_new])
    if bool((train.labels >= 0).any()):  # a diagnostic: as many pairs by plain similarity in the same bank
        stats.update(similarity_rival(loaded.memory, initial_keys, stats["new_pairs"], train.labels))
        stats["labels_note"] = "labels were used only to score these precisions, never for mining"
    stats.update({"passes": passes, "quota": target, "reason": reason})
    save_neighbors(job.out, pairs, fingerprint=loaded.fingerprint, num_images=n, round_index=round_index,
                   round_added=round_added, config=to_dict(cfg),
                   meta={"stats": stats, "features": str(job.features), "gan": str(job.gan),
                         "features_id": meta.get("features_id"), "reached_quota": reached, "complete": True})
    partial.unlink(missing_ok=True)
    return MineResult(job.out, round_index, passes, graph.num_entries(), target, reached, stats,
                      time.perf_counter() - start)


def _save_partial(path: Path, graph: NeighborGraph, passes: int, inputs: dict[str, Any], fingerprint: str,
                  n: int, round_index: int) -> None:
    """The graph after `passes` finished passes, atomically, beside the output."""
    save_neighbors(path, graph.pairs().cpu(), fingerprint=fingerprint, num_images=n, round_index=round_index,
                   config=inputs["config"], meta={"complete": False, "passes": passes, "inputs": inputs})


def _restore(path: Path, inputs: dict[str, Any], fingerprint: str, n: int,
             device: torch.device) -> tuple[NeighborGraph, int]:
    """The graph and pass count of a mining checkpoint made by the same job (else one line saying what differs)."""
    nfile = load_neighbors(path, fingerprint=fingerprint, num_images=n, allow_partial=True)
    saved = nfile.meta.get("inputs", {})
    differs = sorted(k for k in inputs if saved.get(k) != inputs[k])
    if differs:
        raise IslError(f"{path}: was made with other {', '.join(differs)} than this command; run the same "
                       "command with --resume, or --overwrite to start over")
    return NeighborGraph.from_pairs(nfile.pairs.to(device), n), int(nfile.meta.get("passes", 0))


def _done_result(out: Path) -> MineResult:
    meta = read_header(out, "neighbors").meta
    stats = meta.get("stats", {})
    return MineResult(out, int(meta.get("round", 0)), int(stats.get("passes", 0)), int(stats.get("entries", 0)),
                      int(stats.get("quota", 0)), bool(meta.get("reached_quota")), stats)


def _stats(graph: NeighborGraph, labels: torch.Tensor, new_pairs: torch.Tensor) -> dict[str, Any]:
    """Graph figures; with labels (never used for mining) the precision of pairs and its chance level."""
    known = labels >= 0  # (N,)
    raw = graph_stats(graph, labels if bool(known.any()) else None, new_pairs=new_pairs)
    stats: dict[str, Any] = {
        "entries": raw["num_entries"],
        "pairs": raw["num_pairs"],
        "new_pairs": int(new_pairs.shape[0]),
        "share_with_neighbors": raw["with_neighbors"],
        "mean_degree": raw["mean_degree"],
        "precision": raw.get("pair_precision"),
        "new_precision": raw.get("new_pair_precision"),
        "chance_precision": None,
    }
    count = int(known.sum())
    if count > 1:
        per_class = torch.bincount(labels[known]).double()  # (C,)
        stats["chance_precision"] = float((per_class * (per_class - 1)).sum() / (count * (count - 1)))
    return stats


def _base_pairs(job: MineJob, loaded, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The graph to grow: --neighbors if given, else the one the features were trained with."""
    if job.neighbors is not None:
        nfile = load_neighbors(job.neighbors, fingerprint=loaded.fingerprint, num_images=n)
        return nfile.pairs, nfile.round_added
    pairs = loaded.artifact.tensors.get("graph.pairs", torch.zeros(0, 2, dtype=torch.int64)).cpu()
    return pairs, None


def _member(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """keys (E,) in sorted_keys (S,) -> bool (E,), by binary search."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)  # (E,)
    return sorted_keys[pos] == keys


def _rounds_for(pairs: torch.Tensor, base_pairs: torch.Tensor, base_rounds: torch.Tensor | None,
                is_new: torch.Tensor, round_index: int, n: int) -> torch.Tensor:
    """The round that found each pair: new ones this round; old ones as recorded (else -1, unknown)."""
    rounds = torch.full((len(pairs),), -1, dtype=torch.int64)
    rounds[is_new] = round_index
    if base_rounds is not None and len(base_pairs):
        lo = torch.minimum(base_pairs[:, 0], base_pairs[:, 1])
        hi = torch.maximum(base_pairs[:, 0], base_pairs[:, 1])
        base_keys, order = torch.sort(lo * n + hi)
        keys = pairs[:, 0] * n + pairs[:, 1]  # (E,)
        pos = torch.searchsorted(base_keys, keys).clamp(max=len(base_keys) - 1)
        found = (base_keys[pos] == keys) & ~is_new
        rounds[found] = base_rounds[order[pos[found]]]
    return rounds
