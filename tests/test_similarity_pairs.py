"""Plain-similarity mining (the GAN's rival) against a brute-force loop over every pair."""

from __future__ import annotations

import pytest
import torch

from isl_cli.neighbors import NeighborGraph
from isl_cli.similarity_pairs import most_similar_pairs, pair_precision, similarity_rival


def _oracle(memory: torch.Tensor, count: int, edges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every pair i < j not in `edges`, by similarity descending then (i, j) ascending; the first `count`."""
    n = memory.shape[0]
    scored = []
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) in edges:
                continue
            sim = sum(float(a) * float(b) for a, b in zip(memory[i], memory[j]))
            scored.append((-sim, i * n + j, (i, j)))
    return [pair for _, _, pair in sorted(scored)[:count]]


def _integer_bank(n: int, d: int, seed: int) -> torch.Tensor:
    """Small integers in float64: every dot product is exact, and many tie."""
    return torch.randint(-2, 3, (n, d), generator=torch.Generator().manual_seed(seed)).double()  # (n, d)


@pytest.mark.parametrize("max_block", [1, 7, 40, 10_000])
def test_most_similar_pairs_match_the_loop_whatever_the_chunks(max_block):
    memory = _integer_bank(23, 4, seed=1)
    graph = NeighborGraph.from_pairs(torch.tensor([[0, 5], [7, 3], [10, 11], [22, 1]]), 23)
    edges = {(0, 5), (3, 7), (10, 11), (1, 22)}
    for count in (0, 1, 9, 60, 300):
        pairs, sims = most_similar_pairs(memory, count, graph.keys, max_block=max_block)
        expected = _oracle(memory, count, edges)
        assert [tuple(p) for p in pairs.tolist()] == expected, (max_block, count)
        assert torch.equal(sims, (memory[pairs[:, 0]] * memory[pairs[:, 1]]).sum(1))
    allowed = 23 * 22 // 2 - len(edges)
    assert len(most_similar_pairs(memory, 1000, graph.keys, max_block=max_block)[0]) == allowed


def test_float32_unit_bank_and_excluded_keys_in_one_direction():
    memory = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    best, _ = most_similar_pairs(memory, 5)
    excluded = torch.sort(best[:2, 0] * 30 + best[:2, 1]).values  # (2,) keys i < j only
    again, _ = most_similar_pairs(memory, 3, excluded, max_block=64)
    assert again.tolist() == best[2:5].tolist()
    assert bool((again[:, 0] < again[:, 1]).all())


def test_precision_and_rival_figures():
    labels = torch.tensor([0, 0, 1, 1, -1])
    assert pair_precision(torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]]), labels) == pytest.approx(2 / 3)
    assert pair_precision(torch.tensor([[0, 4]]), labels) is None
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    graph = NeighborGraph.from_pairs(torch.tensor([[0, 1]]), 5)
    rival = similarity_rival(memory, graph.keys, 1, labels)  # the best non-edge is (2, 3): same label
    assert rival == {"similarity_pairs": 1, "similarity_precision": 1.0}
    assert similarity_rival(memory, graph.keys, 0, labels) == {"similarity_pairs": 0, "similarity_precision": None}
