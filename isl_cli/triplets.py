"""Feature triplets of docs/method.md section 5: anchor, positive and nearest non-neighbour.

For image i with fresh feature a: the positive is its bank row M_i; K indices
are drawn uniformly with replacement from 0..N-1, every draw that falls in
A(i) (i included) being redrawn; the negative is the drawn row with the
largest M_j . a.

Determinism: all draws come from `generator` (in a fixed order: one (B, K)
draw, then one draw per redraw round for the rejected slots in row-major
order), so the same generator state gives the same negatives. Draws are made
on the generator's device and moved to the device of `indices`; pass a CPU
generator for CPU tensors and a CUDA generator for CUDA tensors to avoid the
copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from isl_cli import distributed
from isl_cli.errors import IslError
from isl_cli.neighbors import NeighborGraph

#: Redraw rounds before the remaining rejected draws are sampled exactly from
#: the complement of A(i) (same distribution; bounds the loop when A(i) is large).
MAX_REDRAW_ROUNDS = 8
#: Upper bound on the elements of one temporary (chunk, N) or (chunk, K, D) block.
CHUNK_ELEMENTS = 1 << 24


def draw_non_neighbors(
    indices: Tensor,
    graph: NeighborGraph,
    num_draws: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """K uniform draws per image from the images outside A(i).

    Args:
        indices: (B,) int64 image indices.
        graph: the neighbour graph (A(i) includes i).
        num_draws: K >= 1.
        generator: random generator (see the module docstring).

    Returns:
        (B, K) int64 indices j with j not in A(indices[b]).

    Raises:
        ValueError: if K < 1 or some A(i) covers all N images.
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive int, got {num_draws!r}")
    num_items = graph.num_nodes
    batch = indices.shape[0]
    if batch > 0 and bool((graph.degrees()[indices] >= num_items).any()):
        raise ValueError(
            f"no valid negative: some image's neighbour set covers all {num_items} images"
        )
    draws = _randint(num_items, (batch, num_draws), generator, indices.device)  # (B, K)
    rejected = graph.contains(indices, draws)  # (B, K)
    for _ in range(MAX_REDRAW_ROUNDS):
        rows, cols = rejected.nonzero(as_tuple=True)  # (R,), (R,)
        if rows.numel() == 0:
            return draws
        fresh = _randint(num_items, (rows.numel(),), generator, indices.device)  # (R,)
        draws[rows, cols] = fresh
        rejected[rows, cols] = graph.contains(indices[rows], fresh[:, None])[:, 0]
    rows, cols = rejected.nonzero(as_tuple=True)  # (R,), (R,)
    if rows.numel() > 0:
        draws[rows, cols] = _draw_from_complement(indices[rows], graph, generator)
    return draws


def _draw_from_complement(rows: Tensor, graph: NeighborGraph, generator: torch.Generator | None) -> Tensor:
    """One uniform draw per entry from {0..N-1} minus A(rows[r]), without rejection.

    With A(i) sorted as a_0 < a_1 < ..., the u-th non-member (u uniform in
    [0, N - |A(i)|)) is u + #{m : a_m - m <= u}.

    Args:
        rows: (R,) int64 image indices.

    Returns:
        (R,) int64.
    """
    num_items = graph.num_nodes
    members, mask = graph.padded_rows(rows)  # (R, L), (R, L)
    members = members.masked_fill(~mask, num_items).sort(dim=1).values  # (R, L) padding (N) last
    shifted = members - torch.arange(members.shape[1], device=rows.device)  # (R, L)
    shifted = shifted.masked_fill(members == num_items, num_items)  # (R, L) non-decreasing
    free = num_items - mask.sum(dim=1)  # (R,) number of non-members
    uniform = torch.rand(rows.shape, generator=generator, device=_gen_device(generator, rows.device))
    rank = torch.minimum((uniform.to(rows.device) * free).long(), free - 1)  # (R,)
    skipped = torch.searchsorted(shifted, rank[:, None], right=True)[:, 0]  # (R,)
    return rank + skipped


def nearest_negatives(anchors: Tensor, draws: Tensor, memory: Tensor) -> Tensor:
    """For each row, the drawn index j with the largest M_j . a (first on ties).

    Gathers the drawn rows and takes batched dot products when K * D is small
    next to N; otherwise multiplies the anchors with the whole bank and
    gathers the K columns. Either way in chunks of rows so that temporaries
    stay below CHUNK_ELEMENTS elements.

    Args:
        anchors: (B, D) anchor features.
        draws: (B, K) int64 candidate indices.
        memory: (N, D) bank.

    Returns:
        (B,) int64 chosen indices.
    """
    batch, num_draws = draws.shape
    num_items, dim = memory.shape
    if anchors.shape != (batch, dim):
        raise ValueError(f"anchors must be ({batch}, {dim}), got {tuple(anchors.shape)}")
    anchors = anchors.detach().to(memory.dtype)
    gather_first = num_draws * dim < num_items
    per_row = num_draws * dim if gather_first else num_items
    chunk = max(1, CHUNK_ELEMENTS // per_row)
    best = []
    for start in range(0, batch, chunk):  # a few chunks of rows, not a loop over images
        rows_a, rows_d = anchors[start : start + chunk], draws[start : start + chunk]  # (C, D), (C, K)
        if gather_first:
            scores = torch.einsum("ckd,cd->ck", memory[rows_d], rows_a)  # (C, K)
        else:
            scores = (rows_a @ memory.t()).gather(1, rows_d)  # (C, K)
        best.append(rows_d.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1))  # (C,)
    return torch.cat(best) if best else draws.new_empty(0)


def batch_triplets(anchors: Tensor, indices: Tensor, memory: Tensor, graph: NeighborGraph, num_draws: int,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Anchor, positive M_i and nearest non-neighbour M_n for this rank's slice of a batch (section 5).

    The K draws are made for the whole global batch from `generator` and then
    sliced, so data-parallel ranks draw exactly the negatives one process would.

    Args:
        anchors: (b, D) features of augmented views (no gradient needed).
        indices: (b,) int64 image indices of this rank's slice.
        memory: (N, D) bank.
        graph: neighbour graph.
        num_draws: K.
        generator: random generator for the draws.

    Returns:
        a (b, D), p (b, D) = memory[indices], n (b, D) = memory[neg_idx], neg_idx (b,) int64.
    """
    all_indices, start = distributed.all_gather_with_offset(indices)  # (B,), offset of this slice
    try:
        draws = draw_non_neighbors(all_indices, graph, num_draws, generator)[start:start + len(indices)]  # (b, K)
    except ValueError as exc:  # an image whose neighbour set holds every image has no negative
        raise IslError(f"{exc}, so no negative can be drawn for it: the neighbour graph is too dense "
                       "(mine with a higher --tau or --base-radius)") from None
    negative_index = nearest_negatives(anchors, draws, memory)  # (b,)
    return anchors, memory[indices], memory[negative_index], negative_index


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    values = torch.randint(high, shape, generator=generator, device=_gen_device(generator, device))
    return values.to(device)
