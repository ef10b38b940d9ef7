"""The neighbour ("affinity") graph of docs/method.md section 3, held as tensors.

Every image i has a set A(i) that always contains i. Mining adds edges
symmetrically and never removes one. The graph stores only the off-diagonal
part: a sorted, duplicate-free int64 tensor `keys` of directed edges
`i * N + j` (i != j), always holding both (i, j) and (j, i). Membership of
i in A(i) is implicit. Row i's neighbours are the slice
`keys[indptr[i]:indptr[i + 1]] % N`, sorted ascending, where the CSR row
pointer `indptr` is derived on demand (a bincount of the row ids) and cached.

`keys` is never modified in place: `add_pairs` builds a new tensor, so a
caller may keep an old `graph.keys` as a snapshot.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class NeighborGraph:
    """A symmetric, grow-only neighbour graph over `num_nodes` images.

    Attributes:
        num_nodes: N, the number of images.
        keys: (E,) int64, sorted unique keys `i * N + j` of directed edges
            with i != j; symmetric, so E is even.
    """

    def __init__(self, num_nodes: int, keys: Tensor | None = None, *, device: Any = None):
        """Build a graph from directed-edge keys, validating them.

        Args:
            num_nodes: N >= 1.
            keys: (E,) int64 sorted, unique, off-diagonal and symmetric keys
                `i * N + j`; None for an empty graph.
            device: where an empty graph lives (ignored when `keys` is given).

        Raises:
            ValueError: on a bad `num_nodes` or keys that break the invariants.
        """
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
        if keys is None:
            keys = torch.empty(0, dtype=torch.int64, device=device)
        _validate_keys(keys, num_nodes)
        self.num_nodes = num_nodes
        self.keys = keys
        self._indptr: Tensor | None = None

    # ----------------------------------------------------------------- building
    @classmethod
    def empty(cls, num_nodes: int, device: Any = None) -> NeighborGraph:
        """A graph where every A(i) = {i} (round 0)."""
        return cls(num_nodes, device=device)

    @classmethod
    def from_pairs(cls, pairs: Tensor, num_nodes: int) -> NeighborGraph:
        """Build from undirected pairs: symmetrises, drops self pairs and duplicates.

        Args:
            pairs: (P, 2) integer tensor of image indices in [0, num_nodes).
            num_nodes: N.

        Raises:
            ValueError: wrong shape or dtype, or an index out of range.
        """
        if not isinstance(pairs, Tensor) or pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must be a (P, 2) tensor, got {_describe(pairs)}")
        graph = cls(num_nodes, device=pairs.device)
        graph.add_pairs(pairs[:, 0], pairs[:, 1])
        return graph

    @classmethod
    def _unchecked(cls, num_nodes: int, keys: Tensor) -> NeighborGraph:
        graph = cls.__new__(cls)
        graph.num_nodes = num_nodes
        graph.keys = keys
        graph._indptr = None
        return graph

    def to(self, device: Any) -> NeighborGraph:
        """The same graph with its tensors on `device`."""
        return NeighborGraph._unchecked(self.num_nodes, self.keys.to(device))

    @property
    def device(self) -> torch.device:
        return self.keys.device

    # ------------------------------------------------------------------ queries
    @property
    def indptr(self) -> Tensor:
        """(N + 1,) int64 CSR row pointer into `keys` (cached until the graph changes)."""
        if self._indptr is None:
            counts = torch.bincount(self.keys // self.num_nodes, minlength=self.num_nodes)  # (N,)
            indptr = torch.zeros(self.num_nodes + 1, dtype=torch.int64, device=self.keys.device)  # (N + 1,)
            torch.cumsum(counts, dim=0, out=indptr[1:])
            self._indptr = indptr
        return self._indptr

    def pairs(self) -> Tensor:
        """(E / 2, 2) int64 undirected pairs with i < j, sorted by (i, j); for storage."""
        i, j = self.keys // self.num_nodes, self.keys % self.num_nodes  # (E,), (E,)
        upper = i < j  # (E,)
        return torch.stack([i[upper], j[upper]], dim=1)  # (E / 2, 2)

    def num_entries(self) -> int:
        """Sum over i of (|A(i)| - 1): the number of directed neighbour entries."""
        return int(self.keys.numel())

    def degrees(self) -> Tensor:
        """(N,) int64 |A(i)|, self included."""
        indptr = self.indptr
        return indptr[1:] - indptr[:-1] + 1  # (N,)

    def contains(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Whether cols[b, k] is in A(rows[b]); a column equal to its row counts.

        Args:
            rows: (B,) int64 image indices.
            cols: (B, K) int64 image indices in [0, N).

        Returns:
            (B, K) bool.
        """
        is_self = cols == rows[:, None]  # (B, K)
        num_keys = self.keys.numel()
        if num_keys == 0:
            return is_self
        query = rows[:, None] * self.num_nodes + cols  # (B, K)
        pos = torch.searchsorted(self.keys, query).clamp_(max=num_keys - 1)  # (B, K)
        return is_self | (self.keys[pos] == query)  # (B, K)

    def padded_rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """A(i) for each row as a padded table, self first.

        Column 0 holds the row itself, then its neighbours in ascending order.
        Padding repeats the row index (a valid index to gather with) and is
        marked False in the mask. L = max |A(i)| over the batch (one host sync
        to learn it).

        Args:
            rows: (B,) int64 image indices.

        Returns:
            members (B, L) int64 and mask (B, L) bool.
        """
        rows = rows.reshape(-1)
        indptr = self.indptr
        start = indptr[rows]  # (B,)
        count = indptr[rows + 1] - start  # (B,)
        width = int(count.max()) if rows.numel() > 0 and self.keys.numel() > 0 else 0
        self_col = rows[:, None]  # (B, 1)
        self_mask = torch.ones_like(self_col, dtype=torch.bool)  # (B, 1)
        if width == 0:
            return self_col.clone(), self_mask
        offsets = torch.arange(width, device=rows.device)  # (L - 1,)
        valid = offsets[None, :] < count[:, None]  # (B, L - 1)
        pos = torch.where(valid, start[:, None] + offsets, 0)  # (B, L - 1)
        neighbours = torch.where(valid, self.keys[pos] % self.num_nodes, self_col)  # (B, L - 1)
        return torch.cat([self_col, neighbours], dim=1), torch.cat([self_mask, valid], dim=1)

    # ----------------------------------------------------------------- growing
    def add_pairs(self, i: Tensor, j: Tensor) -> int:
        """Insert undirected pairs (i[p], j[p]) symmetrically; never removes.

        Self pairs, duplicates and edges already present are skipped. The new
        keys are merged into the sorted `keys` by their searchsorted positions
        (no full re-sort).

        Args:
            i: (P,) integer image indices.
            j: (P,) integer image indices.

        Returns:
            The number of new undirected pairs.

        Raises:
            ValueError: shapes differ, non-integer dtype, or an index out of range.
        """
        if not isinstance(i, Tensor) or not isinstance(j, Tensor) or i.shape != j.shape or i.dim() != 1:
            raise ValueError(f"i and j must be 1-D tensors of one shape, got {_describe(i)} and {_describe(j)}")
        if i.dtype.is_floating_point or j.dtype.is_floating_point or i.dtype == torch.bool:
            raise ValueError(f"pair indices must be integers, got {i.dtype} and {j.dtype}")
        if i.numel() == 0:
            return 0
        n = self.num_nodes
        i = i.to(device=self.keys.device, dtype=torch.int64)
        j = j.to(device=self.keys.device, dtype=torch.int64)
        low = torch.minimum(i.min(), j.min())
        high = torch.maximum(i.max(), j.max())
        if bool(low < 0) or bool(high >= n):
            raise ValueError(f"pair indices must lie in [0, {n}), got values in [{int(low)}, {int(high)}]")
        off_diagonal = i != j  # (P,)
        i, j = i[off_diagonal], j[off_diagonal]
        new = torch.unique(torch.cat([i * n + j, j * n + i]))  # (Q,) sorted
        num_old = self.keys.numel()
        pos = torch.searchsorted(self.keys, new)  # (Q,)
        if num_old > 0:
            fresh = self.keys[pos.clamp(max=num_old - 1)] != new  # (Q,)
            new, pos = new[fresh], pos[fresh]
        num_new = new.numel()
        if num_new == 0:
            return 0
        new_slots = pos + torch.arange(num_new, device=new.device)  # (Q,) final positions of the new keys
        old_slot = torch.ones(num_old + num_new, dtype=torch.bool, device=new.device)  # (E',)
        old_slot[new_slots] = False
        merged = torch.empty(num_old + num_new, dtype=torch.int64, device=new.device)  # (E',)
        merged[new_slots] = new
        merged.masked_scatter_(old_slot, self.keys)  # old keys keep their order in the free slots
        self.keys = merged
        self._indptr = None
        return num_new // 2

    def __repr__(self) -> str:
        return f"NeighborGraph(num_nodes={self.num_nodes}, pairs={self.num_entries() // 2}, device={self.device})"


def graph_stats(graph: NeighborGraph, labels: Tensor | None = None, new_pairs: Tensor | None = None) -> dict:
    """Summary figures of a neighbour graph, for logs and reports.

    Args:
        graph: the graph.
        labels: optional (N,) int64 ground-truth labels, -1 = unknown. Used only
            to measure precision, never by the method.
        new_pairs: optional (P, 2) pairs (e.g. those added by the last mining
            pass) whose precision is reported separately.

    Returns:
        dict with `num_pairs` (undirected), `num_entries`, `with_neighbors`
        (share of images with at least one neighbour), `mean_degree` (mean
        |A(i)|); with labels also `pair_precision` (share of undirected pairs
        whose images share a label, over pairs with both labels known; None
        when there is no such pair) and `labelled_pairs`; with new_pairs also
        `new_pairs`, `new_pair_precision` and `new_labelled_pairs`.
    """
    degrees = graph.degrees()  # (N,)
    stats: dict[str, Any] = {
        "num_pairs": graph.num_entries() // 2,
        "num_entries": graph.num_entries(),
        "with_neighbors": float((degrees > 1).double().mean()),
        "mean_degree": float(degrees.double().mean()),
    }
    if labels is None:
        return stats
    labels = labels.reshape(-1).to(graph.device)
    if labels.numel() != graph.num_nodes:
        raise ValueError(f"labels must have {graph.num_nodes} entries, got {labels.numel()}")
    stats["pair_precision"], stats["labelled_pairs"] = _pair_precision(graph.pairs(), labels)
    if new_pairs is not None:
        new_pairs = new_pairs.to(graph.device).reshape(-1, 2)
        stats["new_pairs"] = int(new_pairs.shape[0])
        stats["new_pair_precision"], stats["new_labelled_pairs"] = _pair_precision(new_pairs, labels)
    return stats


def _pair_precision(pairs: Tensor, labels: Tensor) -> tuple[float | None, int]:
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]  # (P,), (P,)
    known = (a >= 0) & (b >= 0)  # (P,)
    num_known = int(known.sum())
    if num_known == 0:
        return None, 0
    return float((a[known] == b[known]).double().mean()), num_known


def _validate_keys(keys: Tensor, num_nodes: int) -> None:
    if not isinstance(keys, Tensor) or keys.dim() != 1 or keys.dtype != torch.int64:
        raise ValueError(f"keys must be a 1-D int64 tensor, got {_describe(keys)}")
    if keys.numel() == 0:
        return
    if bool(keys[0] < 0) or bool(keys[-1] >= num_nodes * num_nodes):
        raise ValueError(f"keys must lie in [0, {num_nodes}**2)")
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError("keys must be sorted and unique")
    i, j = keys // num_nodes, keys % num_nodes
    if bool((i == j).any()):
        raise ValueError("keys must not hold self pairs (A(i) contains i implicitly)")
    mirrored = torch.sort(j * num_nodes + i).values
    if not torch.equal(mirrored, keys):
        raise ValueError("keys must be symmetric: (i, j) present without (j, i)")


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__
