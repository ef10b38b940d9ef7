"""Plain-similarity mining, the GAN's simplest rival: the most similar non-neighbour pairs of a bank.

A mining round adds E new pairs. The rival adds the same number E of pairs
chosen by similarity alone: the E pairs i < j with the largest M_i . M_j that
are not already neighbours. Comparing the share of same-label pairs of both
(a diagnostic that uses labels; mining never does) says whether the GAN's
proposals beat what the bank already knows.

The (N, N) similarity matrix is never held: rows are taken in chunks of about
`max_block / N`, each chunk is multiplied only with the columns to its right
(the upper triangle), and its candidates are merged into a running top E.
Once E candidates are held, a chunk contributes only the entries at least as
similar as the current E-th one (one comparison and a `nonzero`), so the work
is the matmul of the upper triangle plus a linear scan. No Python loop runs
over rows.

Order (and so the choice among equal similarities): similarity descending,
then the key i * N + j ascending, whatever the chunk size.
"""

from __future__ import annotations

import torch

DEFAULT_MAX_BLOCK = 1 << 22  # similarities held at once (16 MiB of float32; the top-k and masks need a few times that)


@torch.no_grad()
def most_similar_pairs(memory: torch.Tensor, num_pairs: int, excluded_keys: torch.Tensor | None = None, *,
                       max_block: int = DEFAULT_MAX_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """The `num_pairs` most similar pairs i < j of the rows of `memory`, excluding self and given edges.

    Args:
        memory: (N, D) bank rows (any float dtype; float64 is kept, others are computed in float32).
        num_pairs: E >= 0, how many pairs to return (fewer when fewer pairs are allowed).
        excluded_keys: optional sorted int64 keys i * N + j of existing edges (either or both
            directions, as `NeighborGraph.keys` holds them); these pairs are never chosen.
        max_block: similarities computed at once (rows per chunk = max(1, max_block // N)).

    Returns:
        pairs (E', 2) int64 with i < j and sims (E',), ordered by similarity descending
        then key ascending, on the memory's device; E' = min(E, allowed pairs).
    """
    if memory.dim() != 2:
        raise ValueError(f"memory must be (N, D), got {tuple(memory.shape)}")
    if num_pairs < 0 or max_block < 1:
        raise ValueError("num_pairs must be >= 0 and max_block >= 1")
    n, device = memory.shape[0], memory.device
    dtype = torch.float64 if memory.dtype == torch.float64 else torch.float32
    memory = memory.to(dtype)  # (N, D)
    best_sims = torch.empty(0, dtype=dtype, device=device)  # (e,)
    best_keys = torch.empty(0, dtype=torch.int64, device=device)  # (e,)
    if num_pairs == 0 or n < 2:
        return best_keys.view(0, 2), best_sims
    upper = _upper_keys(excluded_keys, n, device)  # (X,) sorted keys with i < j
    rows_per_chunk = max(1, max_block // n)
    for start in range(0, n - 1, rows_per_chunk):
        end = min(start + rows_per_chunk, n - 1)
        block = _masked_block(memory, start, end, upper)  # (c, n - start - 1); j = start + 1 + column
        full = best_sims.numel() == num_pairs
        if full:
            threshold = best_sims[-1]
        else:
            take = min(num_pairs, block.numel())
            threshold = torch.topk(block.flatten(), take).values[-1]  # the block's own take-th value
        rows, cols = torch.nonzero((block >= threshold) & (block > float("-inf")), as_tuple=True)  # (m,), (m,)
        sims = block[rows, cols]  # (m,)
        keys = (start + rows) * n + (start + 1 + cols)  # (m,)
        best_sims, best_keys = _keep_best(torch.cat([best_sims, sims]), torch.cat([best_keys, keys]), num_pairs)
    pairs = torch.stack([best_keys // n, best_keys % n], dim=1)  # (E', 2)
    return pairs, best_sims


def _upper_keys(excluded_keys: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Excluded edges as sorted unique keys i * N + j with i < j."""
    if excluded_keys is None or excluded_keys.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    keys = excluded_keys.to(device=device, dtype=torch.int64)  # (X,)
    i, j = keys // n, keys % n
    return torch.unique(torch.minimum(i, j) * n + torch.maximum(i, j))  # (X',) sorted


def _masked_block(memory: torch.Tensor, start: int, end: int, upper: torch.Tensor) -> torch.Tensor:
    """Similarities of rows start..end-1 with columns start+1..N-1; -inf where j <= i or (i, j) is an edge."""
    n = memory.shape[0]
    block = memory[start:end] @ memory[start + 1:].T  # (c, n - start - 1)
    count = end - start
    below = torch.arange(count, device=memory.device)  # (c,)
    triangle = below.unsqueeze(0) < below.unsqueeze(1)  # (c, c): column t < row r means j <= i
    block[:, :count].masked_fill_(triangle, float("-inf"))
    lo = int(torch.searchsorted(upper, start * n))
    hi = int(torch.searchsorted(upper, end * n))
    edges = upper[lo:hi]  # (x,) edges whose row lies in this chunk
    block[edges // n - start, edges % n - start - 1] = float("-inf")
    return block


def _keep_best(sims: torch.Tensor, keys: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` candidates by similarity descending, then key ascending."""
    by_key = torch.argsort(keys)  # (m,)
    sims, keys = sims[by_key], keys[by_key]  # (m,)
    order = torch.sort(sims, descending=True, stable=True).indices[:count]  # (<= count,)
    return sims[order], keys[order]


def pair_precision(pairs: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Share of pairs (P, 2) whose two images share a label, over pairs with both labels known (-1 = unknown)."""
    labels = labels.to(pairs.device)
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]  # (P,), (P,)
    known = (a >= 0) & (b >= 0)  # (P,)
    if not bool(known.any()):
        return None
    return float((a[known] == b[known]).double().mean())


def similarity_rival(memory: torch.Tensor, existing_keys: torch.Tensor, num_pairs: int,
                     labels: torch.Tensor) -> dict[str, float | int | None]:
    """Precision of `num_pairs` pairs chosen by plain similarity among non-edges (labels used only to score them)."""
    pairs, _ = most_similar_pairs(memory, num_pairs, existing_keys)  # (E', 2)
    return {"similarity_pairs": int(pairs.shape[0]),
            "similarity_precision": pair_precision(pairs, labels) if len(pairs) else None}
