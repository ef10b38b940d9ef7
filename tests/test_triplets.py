"""Triplet sampling (docs/method.md section 5): negatives avoid A(i), are uniform, and nearest."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from isl_cli import triplets
from isl_cli.neighbors import NeighborGraph
from isl_cli.triplets import batch_triplets, draw_non_neighbors, nearest_negatives

import oracles


pytestmark = pytest.mark.usefixtures("one_thread")


def graph_of(pairs, n):
    return NeighborGraph.from_pairs(torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2), n)


@settings(max_examples=40, deadline=None)
@given(
    num_nodes=st.integers(2, 25),
    pairs=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=60),
    rows=st.lists(st.integers(0, 24), min_size=1, max_size=6),
    num_draws=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
def test_negatives_are_never_neighbours_nor_self(num_nodes, pairs, rows, num_draws, seed):
    pairs = [(i % num_nodes, j % num_nodes) for i, j in pairs]
    sets = oracles.neighbour_sets(pairs, num_nodes)
    indices = torch.tensor([r % num_nodes for r in rows])
    graph = graph_of(pairs, num_nodes)
    if any(len(sets[i]) == num_nodes for i in indices.tolist()):
        with pytest.raises(ValueError, match="covers all"):
            draw_non_neighbors(indices, graph, num_draws, torch.Generator().manual_seed(seed))
        return
    draws = draw_non_neighbors(indices, graph, num_draws, torch.Generator().manual_seed(seed))
    assert draws.shape == (len(rows), num_draws) and draws.dtype == torch.int64
    for b, i in enumerate(indices.tolist()):
        assert not any(j in sets[i] for j in draws[b].tolist())
        assert all(0 <= j < num_nodes for j in draws[b].tolist())
    again = draw_non_neighbors(indices, graph, num_draws, torch.Generator().manual_seed(seed))
    assert torch.equal(draws, again)  # same generator state, same draws


def test_draws_are_uniform_over_the_non_neighbours():
    n = 20
    graph = graph_of([(5, 3), (5, 7), (5, 11), (0, 1)], n)
    indices = torch.tensor([5] * 16)
    draws = draw_non_neighbors(indices, graph, 512, torch.Generator().manual_seed(1234))
    allowed = [j for j in range(n) if j not in {5, 3, 7, 11}]
    counts = torch.bincount(draws.reshape(-1), minlength=n)
    assert counts[[5, 3, 7, 11]].sum() == 0
    observed = counts[allowed].double().numpy()
    assert observed.sum() == 16 * 512
    assert chisquare(observed).pvalue > 0.001


def test_exact_complement_sampler_is_uniform_and_used_after_the_redraw_rounds():
    # A(0) covers all but 2 of 40 images: rejection keeps failing, the exact sampler finishes the job.
    n = 40
    graph = graph_of([(0, j) for j in range(1, n) if j not in (17, 31)], n)
    draws = draw_non_neighbors(torch.tensor([0, 0, 0]), graph, 2000, torch.Generator().manual_seed(7))
    assert set(draws.unique().tolist()) == {17, 31}
    counts = torch.bincount(draws.reshape(-1), minlength=n)[[17, 31]].double().numpy()
    assert chisquare(counts).pvalue > 0.001
    # the sampler alone, on rows of different sizes
    graph = graph_of([(1, 2), (1, 4), (3, 0)], 6)
    rows = torch.tensor([1] * 3000 + [3] * 3000 + [5] * 3000)
    picked = triplets._draw_from_complement(rows, graph, torch.Generator().manual_seed(3))
    for row, allowed in ((1, [0, 3, 5]), (3, [1, 2, 4, 5]), (5, [0, 1, 2, 3, 4])):
        mine = picked[rows == row]
        assert set(mine.tolist()) == set(allowed)
        assert chisquare(torch.bincount(mine, minlength=6)[allowed].double().numpy()).pvalue > 0.001


def test_only_one_non_neighbour_left():
    graph = graph_of([(2, j) for j in range(6) if j not in (2, 4)], 6)
    draws = draw_non_neighbors(torch.tensor([2]), graph, 50, torch.Generator().manual_seed(0))
    assert draws.unique().tolist() == [4]


def test_a_neighbour_set_covering_everything_is_refused():
    graph = graph_of([(0, 1), (0, 2)], 3)
    with pytest.raises(ValueError, match="covers all 3 images"):
        draw_non_neighbors(torch.tensor([1, 0]), graph, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num_draws"):
        draw_non_neighbors(torch.tensor([1]), graph, 0)


@pytest.mark.parametrize(
    "num_items, dim, num_draws, chunk",
    [
        (200, 4, 6, 1 << 24),  # K * D < N: gather the drawn rows, then batched dot products
        (30, 8, 50, 1 << 24),  # K * D >= N: one product with the whole bank, then gather
        (200, 4, 6, 30),  # tiny chunks of rows, gather path
        (30, 8, 50, 40),  # tiny chunks of rows, full-product path
    ],
)
def test_nearest_negatives_equals_the_loop_oracle(num_items, dim, num_draws, chunk, monkeypatch):
    monkeypatch.setattr(triplets, "CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(num_items + num_draws)
    memory = F.normalize(torch.randn(num_items, dim, generator=gen), dim=1)
    anchors = F.normalize(torch.randn(9, dim, generator=gen), dim=1)
    draws = torch.randint(0, num_items, (9, num_draws), generator=gen)
    got = nearest_negatives(anchors, draws, memory)
    expected = [oracles.nearest_negative_oracle(anchors[b], draws[b].tolist(), memory) for b in range(9)]
    assert got.tolist() == expected


def test_batch_triplets_returns_anchor_own_row_and_nearest_allowed_negative():
    n, dim = 30, 6
    gen = torch.Generator().manual_seed(11)
    memory = F.normalize(torch.randn(n, dim, generator=gen), dim=1)
    # image 0's nearest row in the whole bank is its neighbour 1: it must never be the negative
    memory[1] = memory[0]
    graph = graph_of([(0, 1), (4, 5)], n)
    indices = torch.tensor([0, 4, 7])
    anchors = memory[indices].clone()
    a, p, negative, neg_idx = batch_triplets(anchors, indices, memory, graph, 400, torch.Generator().manual_seed(2))
    assert torch.equal(a, anchors) and torch.equal(p, memory[indices]) and torch.equal(negative, memory[neg_idx])
    sets = oracles.neighbour_sets([(0, 1), (4, 5)], n)
    for b, i in enumerate(indices.tolist()):
        assert neg_idx[b].item() not in sets[i]
        # with 400 draws over 28 allowed rows, every allowed row is drawn: the negative is the best allowed one
        allowed = [j for j in range(n) if j not in sets[i]]
        assert neg_idx[b].item() == oracles.nearest_negative_oracle(anchors[b], allowed, memory)


def test_batch_triplets_agrees_with_the_loop_oracle_when_the_draws_cover_every_row():
    # The oracle and the vectorised code use different random streams; compare what does not depend on them.
    rng = random.Random(5)
    n = 25
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(30)]
    sets = oracles.neighbour_sets(pairs, n)
    memory = F.normalize(torch.randn(n, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    indices = torch.tensor([rng.randrange(n) for _ in range(6)])
    anchors = F.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    chosen = oracles.triplet_negatives_oracle(anchors, indices, memory, sets, 300, random.Random(0))
    _, _, _, neg_idx = batch_triplets(anchors, indices, memory, graph_of(pairs, n), 300, torch.Generator().manual_seed(0))
    assert neg_idx.tolist() == chosen  # 300 draws over <= 25 rows find the best allowed row in both
