"""The mining rule of docs/method.md section 7, for one batch (the pass loop lives in the engine).

An image whose proxy the discriminator believes (s > tau) proposes as
neighbours the bank rows close to its proxy p': among the k rows most similar
to p' (i itself excluded before taking the top k), every j with
M_j . p' > r, r = R + (1 - s)(1 - R).
"""

from __future__ import annotations

import math

from torch import Tensor


def propose_pairs(
    proxies: Tensor,
    scores: Tensor,
    indices: Tensor,
    memory: Tensor,
    tau: float = 0.5,
    base_radius: float = 0.6,
    top_k: int = 10,
) -> tuple[Tensor, Tensor]:
    """Pairs (i, j) proposed by one batch.

    Args:
        proxies: (B, D) generated proxies p'.
        scores: (B,) or (B, 1) discriminator scores s = Dis(a, p', n).
        indices: (B,) int64 image indices i.
        memory: (N, D) bank.
        tau: score threshold; images with s <= tau propose nothing.
        base_radius: R.
        top_k: k; at most N - 1 candidates exist.

    Returns:
        i (P,) and j (P,) int64, row-major (by batch row, then by decreasing
        similarity); may hold pairs already in the graph (`add_pairs` skips them).
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
        return empty, empty.clone()
    similarity = proxies.detach().to(memory.dtype) @ memory.t()  # (B, N) M_j . p'
    similarity.scatter_(1, indices[:, None], float("-inf"))  # exclude i itself
    top_similarity, top_index = similarity.topk(num_candidates, dim=1)  # (B, k), (B, k)
    scores = scores.detach().to(memory.dtype)
    radius = base_radius + (1.0 - scores) * (1.0 - base_radius)  # (B,)
    keep = (scores > tau)[:, None] & (top_similarity > radius[:, None])  # (B, k)
    return indices[:, None].expand_as(top_index)[keep], top_index[keep]


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
