"""Chunked weighted kNN evaluation (docs/method.md section 9).

For each query (test feature): dot-product similarity with every key (training
feature: the memory bank or recomputed features), the k most similar keys,
each weighted by exp(sim / sigma) with sigma = T (0.1 for 32x32 data, 0.07 for
ImageNet), weights summed per class, the class with the largest sum predicted.
Top-1 and top-5 accuracy are reported in PERCENT (0..100).

Memory stays bounded for 1.28M-row banks: similarities are computed for one
(query chunk x key chunk) block at a time and merged into a running top-k.
Keys may live on another device than the queries (e.g. a CPU bank and GPU
queries); each key chunk is moved to the queries' device as it is used.
Features are expected L2-normalised (|sim| <= 1), so exp(sim / T) cannot overflow.

Determinism:
- Among keys with equal similarity, the lower key index ranks first (the order
  of a stable descending sort), whatever the chunk sizes.
- Among classes with equal weight sums, the lower class index wins (again a
  stable descending sort); top-5 takes the first 5 classes of that order.

Unknown labels (-1) cannot be scored: `weighted_knn` raises ValueError when any
query or key label is -1; `can_score(labels)` lets a caller check beforehand.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

DEFAULT_K = 200
DEFAULT_QUERY_CHUNK = 1024
DEFAULT_KEY_CHUNK = 65536
TOP5 = 5


@dataclass(frozen=True)
class KnnResult:
    """Weighted-kNN accuracy for one k.

    Attributes:
        k: the number of neighbours actually used (the requested k clamped to N).
        top1: top-1 accuracy in percent (0..100).
        top5: top-5 accuracy in percent (100 when there are <= 5 classes).
        num_queries: number of queries scored.
        clamped: True when the requested k was larger than N and was clamped.
    """

    k: int
    top1: float
    top5: float
    num_queries: int
    clamped: bool = False


def can_score(labels: torch.Tensor) -> bool:
    """True when every label is known (>= 0); -1 marks an unknown label."""
    return labels.numel() == 0 or bool((labels >= 0).all())


def clamp_ks(ks: Sequence[int], n: int) -> tuple[tuple[int, ...], bool]:
    """Clamp each k to n (the number of keys).

    Returns:
        (the clamped ks in the given order, True if any was clamped).

    Raises:
        ValueError: empty ks, a k < 1, or n < 1.
    """
    ks = tuple(positive_int("k", k) for k in ks)
    if not ks:
        raise ValueError("at least one k is needed")
    if n < 1:
        raise ValueError("kNN needs at least one training (key) feature")
    clamped = tuple(min(k, n) for k in ks)
    return clamped, clamped != ks


def positive_int(name: str, value: int) -> int:
    """`value` as a Python int (numpy and torch integers accepted); ValueError unless >= 1."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def check_features(queries: torch.Tensor, keys: torch.Tensor) -> None:
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"kNN needs queries (Q, D) and keys (N, D) with the same D, got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    if keys.shape[0] < 1:
        raise ValueError("kNN needs at least one training (key) feature")


def rank_candidates(sims: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k candidates per row, by similarity descending then index ascending.

    Args:
        sims: (q, c) candidate similarities; idx: (q, c) their key indices (distinct per row).

    Returns:
        (q, min(k, c)) similarities and (q, min(k, c)) indices in that order.
    """
    by_index = torch.argsort(idx, dim=1)  # (q, c): index ascending
    sims = torch.gather(sims, 1, by_index)  # (q, c)
    idx = torch.gather(idx, 1, by_index)  # (q, c)
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]  # (q, k)
    return torch.gather(sims, 1, order), torch.gather(idx, 1, order)  # (q, k), (q, k)


def block_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of each row with the lower column winning ties at the k-th place.

    `torch.topk` picks an arbitrary subset among values tied at the boundary;
    rows with such a tie (the (k+1)-th value equals the k-th) are redone with a
    stable full sort, so the selected set is always the lowest-index one.

    Args:
        sims: (q, c) similarities; k <= c.

    Returns:
        (q, k) values and (q, k) int64 column indices (order within the set unspecified).
    """
    if k >= sims.shape[1]:
        return rank_candidates(sims, torch.arange(sims.shape[1], device=sims.device).expand_as(sims), k)
    values, idx = torch.topk(sims, k + 1, dim=1, largest=True, sorted=True)  # (q, k+1)
    tied = values[:, k] == values[:, k - 1]  # (q,) a tie straddles the boundary
    values, idx = values[:, :k], idx[:, :k]  # (q, k)
    if bool(tied.any()):  # rare: exact ties (duplicate features); once per block, not per query
        rows = tied.nonzero().squeeze(1)  # (t,)
        stable = torch.sort(sims[rows], dim=1, descending=True, stable=True)  # (t, c)
        values = values.index_put((rows,), stable.values[:, :k])  # (q, k)
        idx = idx.index_put((rows,), stable.indices[:, :k])  # (q, k)
    return values, idx


def compute_dtype(queries: torch.Tensor) -> torch.dtype:
    """float64 for float64 queries, else float32 (half-precision features are scored in float32)."""
    return torch.float64 if queries.dtype == torch.float64 else torch.float32


def make_workspace(queries: torch.Tensor, num_keys: int, query_chunk: int, key_chunk: int) -> torch.Tensor:
    """A flat buffer for one (query chunk x key chunk) similarity block, reused by every block.

    Reusing it avoids allocating (and, on a CPU, page-faulting in) a fresh block of
    up to query_chunk x key_chunk floats for each matmul.
    """
    rows = min(query_chunk, queries.shape[0])
    cols = min(key_chunk, num_keys)
    return torch.empty(rows * cols, dtype=compute_dtype(queries), device=queries.device)  # (rows * cols,)


def topk_rows(
    queries: torch.Tensor, keys: torch.Tensor, k: int, key_chunk: int, workspace: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k keys for one chunk of queries, merging key chunks into a running top-k.

    Args:
        queries: (q, D) on the compute device; keys: (N, D) on any device; 1 <= k <= N.
        key_chunk: keys per block.
        workspace: optional flat buffer of at least q x min(key_chunk, N) elements of
            the compute dtype (see `make_workspace`); allocated here when absent.

    Returns:
        (q, k) similarities (float32; float64 for float64 queries) sorted descending
        (ties: lower index first) and (q, k) int64 key indices.
    """
    device = queries.device
    dtype = compute_dtype(queries)
    queries = queries.to(dtype)  # (q, D)
    if workspace is None:
        workspace = make_workspace(queries, keys.shape[0], queries.shape[0], key_chunk)
    best_sims = queries.new_empty((queries.shape[0], 0))  # (q, 0)
    best_idx = torch.empty((queries.shape[0], 0), dtype=torch.long, device=device)  # (q, 0)
    for start in range(0, keys.shape[0], key_chunk):
        block = keys[start : start + key_chunk].to(device=device, dtype=dtype)  # (c, D)
        out = workspace[: queries.shape[0] * block.shape[0]].view(queries.shape[0], block.shape[0])  # (q, c)
        sims = torch.mm(queries, block.T, out=out)  # (q, c), valid until the next block
        sims, idx = block_topk(sims, min(k, block.shape[0]))  # (q, kc), (q, kc)
        best_sims = torch.cat([best_sims, sims], dim=1)  # (q, k + kc)
        best_idx = torch.cat([best_idx, idx + start], dim=1)  # (q, k + kc)
        best_sims, best_idx = rank_candidates(best_sims, best_idx, k)  # (q, k)
    return best_sims, best_idx


@torch.no_grad()
def topk_similar(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    key_chunk: int = DEFAULT_KEY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k keys most similar (dot product) to each query, chunked over queries and keys.

    Args:
        queries: (Q, D); keys: (N, D), any device (moved chunk by chunk to the queries' device).
        k: 1 <= k <= N.
        query_chunk, key_chunk: block sizes; peak extra memory is about
            query_chunk x key_chunk float32 similarities.

    Returns:
        sims (Q, k) float32 (float64 for float64 queries) sorted descending (equal
        similarities: lower key index first) and idx (Q, k) int64 key indices, on the
        queries' device. Keys on another device are copied block by block once per
        query chunk: keep them on the queries' device when they fit.
    """
    check_features(queries, keys)
    query_chunk = positive_int("query_chunk", query_chunk)
    key_chunk = positive_int("key_chunk", key_chunk)
    k = positive_int("k", k)
    if k > keys.shape[0]:
        raise ValueError(f"k must be an integer in 1..{keys.shape[0]} (the number of keys), got {k!r}")
    workspace = make_workspace(queries, keys.shape[0], query_chunk, key_chunk)
    starts = range(0, queries.shape[0], query_chunk)
    parts = [topk_rows(queries[s : s + query_chunk], keys, k, key_chunk, workspace) for s in starts]
    if not parts:
        empty = torch.empty((0, k), device=queries.device)
        return empty, empty.long()
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])  # (Q, k), (Q, k)


def check_labels(query_labels: torch.Tensor, key_labels: torch.Tensor, num_queries: int, num_keys: int) -> None:
    if query_labels.shape != (num_queries,) or key_labels.shape != (num_keys,):
        raise ValueError(
            f"labels must be (Q,) = ({num_queries},) and (N,) = ({num_keys},), got "
            f"{tuple(query_labels.shape)} and {tuple(key_labels.shape)}"
        )
    if query_labels.dtype.is_floating_point or key_labels.dtype.is_floating_point:
        raise ValueError("labels must be integer tensors")
    if not (can_score(query_labels) and can_score(key_labels)):
        raise ValueError(
            "kNN accuracy cannot be scored: some labels are unknown (-1); "
            "both the training and the test split need labels"
        )


def class_ranking(neighbor_labels: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Classes ordered by summed neighbour weight (descending; ties: lower class first).

    Args:
        neighbor_labels: (q, k) int64 class of each neighbour; weights: (q, k) float.

    Returns:
        (q, min(5, C)) the best classes per query, best first.
    """
    scores = weights.new_zeros((weights.shape[0], num_classes))  # (q, C)
    scores.scatter_add_(1, neighbor_labels, weights)  # (q, C)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (q, C)
    return order[:, :TOP5]  # (q, min(5, C))


def prepare_knn(
    queries: torch.Tensor,
    query_labels: torch.Tensor | None,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int | None,
    query_chunk: int,
    key_chunk: int,
) -> tuple[tuple[int, ...], tuple[int, ...], int, torch.Tensor]:
    """Validate the inputs of a kNN evaluation.

    Returns:
        (requested ks, ks clamped to N, number of classes C, key labels as int64 on the queries' device).
    """
    check_features(queries, keys)
    positive_int("query_chunk", query_chunk)
    positive_int("key_chunk", key_chunk)
    if queries.shape[0] < 1:
        raise ValueError("kNN needs at least one query (test) feature")
    if query_labels is None:
        query_labels = key_labels.new_zeros((queries.shape[0],))  # (Q,) stand-in: predictions only
    check_labels(query_labels, key_labels, queries.shape[0], keys.shape[0])
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    requested = tuple(positive_int("k", k) for k in ks)
    used_ks, _ = clamp_ks(requested, keys.shape[0])
    key_labels = key_labels.to(device=queries.device, dtype=torch.long)  # (N,)
    top_label = int(key_labels.max())
    num_classes = top_label + 1 if num_classes is None else positive_int("num_classes", num_classes)
    if num_classes <= top_label:
        raise ValueError(f"num_classes ({num_classes}) must exceed every training label (max {top_label})")
    return requested, used_ks, num_classes, key_labels


def ranked_classes_by_chunk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    used_ks: tuple[int, ...],
    temperature: float,
    num_classes: int,
    query_chunk: int,
    key_chunk: int,
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Yield (start row, [best classes (q, min(5, C)) for each k]) per query chunk.

    One top-k search with the largest k per chunk; each k uses its first k neighbours.
    """
    k_max = max(used_ks)
    workspace = make_workspace(queries, keys.shape[0], query_chunk, key_chunk)
    for start in range(0, queries.shape[0], query_chunk):
        chunk = queries[start : start + query_chunk]  # (q, D)
        sims, idx = topk_rows(chunk, keys, k_max, key_chunk, workspace)  # (q, kmax), (q, kmax)
        neighbor_labels = key_labels[idx]  # (q, kmax)
        weights = torch.exp(sims / temperature)  # (q, kmax)
        yield start, [class_ranking(neighbor_labels[:, :k], weights[:, :k], num_classes) for k in used_ks]


@torch.no_grad()
def weighted_knn(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    ks: Sequence[int] = (DEFAULT_K,),
    temperature: float = 0.1,
    num_classes: int | None = None,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    key_chunk: int = DEFAULT_KEY_CHUNK,
) -> dict[int, KnnResult]:
    """Weighted-kNN top-1/top-5 accuracy (percent) for several k in one pass.

    One top-k search with the largest k, then each k uses its first k neighbours.

    Args:
        queries: (Q, D) test features (unit rows); the computation runs on their device.
        query_labels: (Q,) int test labels.
        keys: (N, D) training features (unit rows), any device.
        key_labels: (N,) int training labels.
        ks: the k values; each larger than N is clamped to N.
        temperature: sigma in the weight exp(sim / sigma) (0.1 for 32x32 data, 0.07 for ImageNet).
        num_classes: C; default max(training label) + 1. Query labels >= C are simply never predicted.
        query_chunk, key_chunk: block sizes (see `topk_similar`).

    Returns:
        {requested k: KnnResult}; the result's `k` is the k used (clamped to N)
        and `clamped` says whether it was clamped, so the caller can warn.

    Raises:
        ValueError: shapes, empty inputs, bad k/temperature/num_classes, or
            unknown (-1) labels in either split.
    """
    requested, used_ks, num_classes, key_labels = prepare_knn(
        queries, query_labels, keys, key_labels, ks, temperature, num_classes, query_chunk, key_chunk
    )
    device = queries.device
    query_labels = query_labels.to(device=device, dtype=torch.long)  # (Q,)
    top1_hits = torch.zeros(len(used_ks), dtype=torch.long, device=device)  # (K,)
    top5_hits = torch.zeros(len(used_ks), dtype=torch.long, device=device)  # (K,)
    chunks = ranked_classes_by_chunk(
        queries, keys, key_labels, used_ks, temperature, num_classes, query_chunk, key_chunk
    )
    for start, ranked in chunks:
        truth = query_labels[start : start + query_chunk].unsqueeze(1)  # (q, 1)
        for slot, best in enumerate(ranked):  # best: (q, <=5)
            top1_hits[slot] += (best[:, :1] == truth).sum()
            top5_hits[slot] += (best == truth).any(dim=1).sum()

    total = queries.shape[0]
    top1 = (top1_hits.double() * 100.0 / total).tolist()
    top5 = (top5_hits.double() * 100.0 / total).tolist()
    return {
        asked: KnnResult(k=used, top1=top1[slot], top5=top5[slot], num_queries=total, clamped=used != asked)
        for slot, (asked, used) in enumerate(zip(requested, used_ks))
    }
