"""The mining rule of docs/method.md section 7, for one batch (the pass loop lives in the engine).

An image whose proxy the discriminator believes (s > tau) proposes as
neighbours the bank rows close to its proxy p': among the k rows most similar
to p' (i itself excluded before taking the top k), every j with
M_j . p' > r, r = R + (1 - s)(1 - R).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from isl_cli.neighbors import NeighborGraph

#: What `propose_pairs` counts per batch, in this order (`Proposals.tally`).
TALLY_NAMES = ("images", "rejected_score", "candidates", "rejected_radius", "proposed")


class Proposals(NamedTuple):
    """The pairs one batch proposes, and why the others were not.

    rows, cols: (P,) int64 pairs (i, j), row-major (by batch row, then by decreasing similarity); they may
        hold pairs already in the graph (`add_pairs` skips them).
    tally: (5,) int64, as TALLY_NAMES: images scored; images whose score s <= tau (they propose nothing);
        candidates j examined (the top k of each image above tau); candidates with M_j . p' <= r; pairs proposed.
    """

    rows: Tensor
    cols: Tensor
    tally: Tensor


def propose_pairs(
    proxies: Tensor,
    scores: Tensor,
    indices: Tensor,
    memory: Tensor,
    tau: float = 0.5,
    base_radius: float = 0.6,
    top_k: int = 10,
) -> Proposals:
    """Pairs (i, j) proposed by one batch, with the counts of what each test rejected.

    Args:
        proxies: (B, D) generated proxies p'.
        scores: (B,) or (B, 1) discriminator scores s = Dis(a, p', n).
        indices: (B,) int64 image indices i.
        memory: (N, D) bank.
        tau: score threshold; images with s <= tau propose nothing.
        base_radius: R.
        top_k: k; at most N - 1 candidates exist.

    Returns:
        `Proposals`: i (P,) and j (P,) int64 and the (5,) tally.
    """
    batch, dim = proxies.shape
    scores = scores.reshape(-1)
    if indices.shape != (batch,) or scores.shape != (batch,) or memory.dim() != 2 or memory.shape[1] != dim:
        raise ValueError(
            f"propose_pairs needs proxies (B, D), scores (B,), indices (B,) and memory (N, D); got "
            f"{tuple(proxies.shape)}, {tuple(scores.shape)}, {tuple(indices.shape)}, {tuple(memory.shape)}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    num_candidates = min(top_k, memory.shape[0] - 1)
    if num_candidates == 0 or batch == 0:
        empty = indices.new_empty(0)
        rejected = int((scores <= tau).sum()) if batch else 0
        return Proposals(empty, empty.clone(), _tally([batch, rejected, 0, 0, 0], indices.device))
    similarity = proxies.detach().to(memory.dtype) @ memory.t()  # (B, N) M_j . p'
    similarity.scatter_(1, indices[:, None], float("-inf"))  # exclude i itself
    top_similarity, top_index = similarity.topk(num_candidates, dim=1)  # (B, k), (B, k)
    scores = scores.detach().to(memory.dtype)
    radius = base_radius + (1.0 - scores) * (1.0 - base_radius)  # (B,)
    trusted = scores > tau  # (B,)
    near = top_similarity > radius[:, None]  # (B, k)
    keep = trusted[:, None] & near  # (B, k)
    passed = trusted.sum()
    tally = torch.stack([torch.tensor(batch, device=indices.device), batch - passed, passed * num_candidates,
                         (trusted[:, None] & ~near).sum(), keep.sum()]).to(torch.int64)  # (5,)
    return Proposals(indices[:, None].expand_as(top_index)[keep], top_index[keep], tally)


def _tally(values: list[int], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)  # (5,)


def quota(round_index: int, num_images: int, per_round: float = 0.5) -> int:
    """floor((round + 1) * per_round * N): mining stops once num_entries EXCEEDS it.

    "Exceeds" is strict (`quota_reached`, which the mining stage uses); with the
    floor this equals comparing with the unrounded real bound.
    """
    if round_index < 0 or num_images < 1 or per_round <= 0:
        raise ValueError(
            f"quota needs round_index >= 0, num_images >= 1 and per_round > 0, "
            f"got {round_index}, {num_images}, {per_round}"
        )
    return math.floor((round_index + 1) * per_round * num_images)


def quota_reached(num_entries: int, quota_value: int) -> bool:
    """True when sum over i of (|A(i)| - 1) is strictly above the quota."""
    return num_entries > quota_value


def pairs_for_quota(num_entries: int, quota_value: int) -> int:
    """New pairs (two entries each) that take `num_entries` strictly above the quota; 0 when it already is."""
    return max(0, (quota_value - num_entries) // 2 + 1)


def first_new_pairs(rows: Tensor, cols: Tensor, graph: NeighborGraph, wanted: int) -> tuple[Tensor, Tensor]:
    """The shortest prefix of the proposals (P,) x 2, in their order, that holds `wanted` pairs new to the graph.

    A proposal is new when i != j, (i, j) is not an edge yet and no earlier proposal named the same pair; all
    proposals are kept when they hold fewer new pairs (the quota check `exact`).
    """
    if wanted <= 0:
        return rows[:0], cols[:0]
    order = torch.arange(len(rows), device=rows.device)  # (P,)
    keys = torch.minimum(rows, cols) * graph.num_nodes + torch.maximum(rows, cols)  # (P,)
    unique, inverse = torch.unique(keys, return_inverse=True)  # (U,), (P,)
    first = torch.full((len(unique),), len(rows), dtype=torch.int64, device=rows.device)
    first.scatter_reduce_(0, inverse, order, reduce="amin")  # (U,) first proposal of each pair
    fresh = (first[inverse] == order) & (rows != cols) & ~graph.contains(rows, cols[:, None])[:, 0]  # (P,)
    count = int(torch.searchsorted(fresh.cumsum(0), wanted)) + 1  # proposals up to the wanted-th new pair
    return rows[:count], cols[:count]
