"""What a mining round reports: graph figures, precisions against labels (a diagnostic), the round of each pair."""

from __future__ import annotations

from typing import Any

import torch

from isl_cli.mining import TALLY_NAMES
from isl_cli.neighbors import NeighborGraph, graph_stats
from isl_cli.similarity_pairs import similarity_rival


def mining_stats(graph: NeighborGraph, labels: torch.Tensor, new_pairs: torch.Tensor, memory: torch.Tensor,
                 initial_keys: torch.Tensor) -> dict[str, Any]:
    """Graph figures; with labels (never used for mining) the precision of the new pairs, of as many pairs by
    plain similarity in the same bank `memory` (N, D), and chance."""
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
    if bool(known.any()):  # a diagnostic: as many pairs by plain similarity in the same bank
        stats.update(similarity_rival(memory, initial_keys, stats["new_pairs"], labels))
        stats["labels_note"] = "labels were used only to score these precisions, never for mining"
    return stats


def rounds_for(pairs: torch.Tensor, base_pairs: torch.Tensor, base_rounds: torch.Tensor | None,
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


#: A round's tally: `propose_pairs`' counts, then the pairs that joined the graph (the rest of the proposed ones were
#: neighbours already, or proposed twice).
ROUND_TALLY = (*TALLY_NAMES, "added")


def tally_stats(tally: list[int], scores: list[float]) -> dict[str, Any]:
    """A round's proposal counts as the report keeps them; `scores` is [sum, max] of the discriminator's scores."""
    stats: dict[str, Any] = {name: int(v) for name, v in zip(ROUND_TALLY, tally)}
    stats["rejected_known"] = stats["proposed"] - stats["added"]
    stats["score_mean"] = scores[0] / stats["images"] if stats["images"] else None
    stats["score_max"] = scores[1] if stats["images"] else None
    return {"proposals": stats}


def rejection_line(proposals: dict[str, Any], tau: float) -> str:
    """One line: what each test rejected this round, and what to try when nothing was added."""
    p = proposals
    line = (f"{p['images']} proxies scored: {p['rejected_score']} rejected by the score (s <= tau {tau:g}; mean s "
            f"{_fmt(p.get('score_mean'))}, max {_fmt(p.get('score_max'))}), {p['rejected_radius']} of "
            f"{p['candidates']} candidates outside the radius, {p['rejected_known']} of {p['proposed']} proposed "
            f"pairs already neighbours; {p['added']} pairs added")
    if p["added"]:
        return line
    if p["rejected_score"] == p["images"]:
        hint = ("the discriminator trusts no proxy: try a lower --tau, another GAN (train-gan --epochs), or "
                "--miner similarity")
    elif p["proposed"] == 0:
        hint = "no candidate lies within the radius: try a lower --base-radius, or --miner similarity"
    else:
        hint = "every proposal is a neighbour already: the GAN keeps finding the same pairs; try --miner similarity"
    return f"{line}. {hint}"


def stop_reason(cfg: Any, passes: int, entries: int, target: int, empty_run: int, reached: bool) -> str:
    """Why a round's mining ended, in one line (`cfg`: its MineConfig)."""
    if reached:
        return f"quota reached: {entries} entries > {target} after {passes} passes"
    if cfg.miner == "similarity":
        return f"every non-neighbour pair is taken: {entries} entries, below the quota of {target}"
    if cfg.stop_after_empty and empty_run >= cfg.stop_after_empty:
        return (f"stopped after {empty_run} passes in a row that added no pair ({passes} passes, {entries} entries, "
                f"below the quota of {target}); writing what was found")
    return (f"stopped at the cap of {cfg.max_passes} passes with {entries} entries, below the quota of {target}; "
            "writing what was found")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
