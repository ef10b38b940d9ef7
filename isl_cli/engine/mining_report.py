"""What a mining round reports: graph figures, precisions against labels (a diagnostic), the round of each pair."""

from __future__ import annotations

from typing import Any

import torch

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
