"""The neighbour graph (docs/method.md section 3) against Python sets."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isl_cli.neighbors import NeighborGraph, graph_stats

import oracles


pytestmark = pytest.mark.usefixtures("one_thread")


def pairs_tensor(pairs):
    return torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)


def assert_same_as_sets(graph: NeighborGraph, sets: list[set[int]]):
    n = graph.num_nodes
    assert graph.degrees().tolist() == [len(s) for s in sets]
    assert graph.num_entries() == sum(len(s) - 1 for s in sets)
    expected_pairs = sorted((i, j) for i in range(n) for j in sets[i] if i < j)
    assert graph.pairs().tolist() == [list(p) for p in expected_pairs]
    rows = torch.arange(n)
    members, mask = graph.padded_rows(rows)
    assert members.shape[1] == max(len(s) for s in sets)
    for i in range(n):
        listed = members[i][mask[i]].tolist()
        assert listed[0] == i and listed[1:] == sorted(sets[i] - {i})
        assert (members[i][~mask[i]] == i).all()  # padding repeats the row, a valid index
    cols = torch.arange(n).expand(n, n)
    expected = torch.tensor([[j in sets[i] for j in range(n)] for i in range(n)])
    assert torch.equal(graph.contains(rows, cols), expected)
    NeighborGraph(n, graph.keys)  # the constructor re-validates every invariant


def test_empty_graph_every_set_is_the_image_itself():
    graph = NeighborGraph.empty(5)
    assert_same_as_sets(graph, [{i} for i in range(5)])
    members, mask = graph.padded_rows(torch.tensor([3, 1, 3]))
    assert members.tolist() == [[3], [1], [3]] and mask.all()


def test_from_pairs_symmetrises_and_drops_self_pairs_and_duplicates():
    pairs = [(0, 1), (1, 0), (2, 2), (3, 1), (0, 1), (4, 0)]
    graph = NeighborGraph.from_pairs(pairs_tensor(pairs), 6)
    assert graph.pairs().tolist() == [[0, 1], [0, 4], [1, 3]]
    assert_same_as_sets(graph, oracles.neighbour_sets([(0, 1), (1, 3), (0, 4)], 6))


@pytest.mark.parametrize(
    "pairs, message",
    [([(0, 5)], r"lie in \[0, 5\)"), ([(-1, 2)], r"lie in \[0, 5\)"), ([[0, 1, 2]], r"\(P, 2\)")],
)
def test_from_pairs_validates(pairs, message):
    with pytest.raises(ValueError, match=message):
        NeighborGraph.from_pairs(torch.tensor(pairs), 5)


def test_float_pairs_are_refused():
    with pytest.raises(ValueError, match="integers"):
        NeighborGraph.empty(4).add_pairs(torch.tensor([0.0]), torch.tensor([1.0]))


@pytest.mark.parametrize(
    "keys, message",
    [
        ([1, 0], "sorted"),
        ([1], "symmetric"),
        ([0, 1], "self"),  # key 0 = (0, 0)
        ([1, 2, 99], r"lie in"),
    ],
)
def test_constructor_rejects_broken_keys(keys, message):
    with pytest.raises(ValueError, match=message):
        NeighborGraph(3, torch.tensor(keys, dtype=torch.int64))


def test_add_pairs_counts_only_new_pairs_and_never_removes():
    graph = NeighborGraph.from_pairs(pairs_tensor([(0, 1), (2, 3)]), 6)
    assert graph.add_pairs(torch.tensor([1, 5, 5, 4, 2]), torch.tensor([0, 4, 4, 4, 5])) == 2  # (4,5), (2,5)
    assert graph.add_pairs(torch.tensor([0]), torch.tensor([1])) == 0
    assert graph.add_pairs(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64)) == 0
    assert_same_as_sets(graph, oracles.neighbour_sets([(0, 1), (2, 3), (4, 5), (2, 5)], 6))


def test_add_pairs_invalidates_the_cached_row_pointer():
    graph = NeighborGraph.empty(4)
    assert graph.degrees().tolist() == [1, 1, 1, 1]
    graph.add_pairs(torch.tensor([0]), torch.tensor([3]))
    assert graph.degrees().tolist() == [2, 1, 1, 2]
    members, _ = graph.padded_rows(torch.tensor([3]))
    assert members.tolist() == [[3, 0]]


def test_add_pairs_keeps_the_old_keys_tensor_intact():
    graph = NeighborGraph.from_pairs(pairs_tensor([(0, 1)]), 4)
    snapshot = graph.keys
    graph.add_pairs(torch.tensor([2]), torch.tensor([3]))
    assert snapshot.tolist() == [1, 4] and graph.keys.tolist() == [1, 4, 11, 14]


@settings(max_examples=40, deadline=None)
@given(
    num_nodes=st.integers(1, 12),
    batches=st.lists(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=15), max_size=5),
)
def test_growing_in_batches_matches_sets(num_nodes, batches):
    graph = NeighborGraph.empty(num_nodes)
    seen: list[tuple[int, int]] = []
    for batch in batches:
        batch = [(i % num_nodes, j % num_nodes) for i, j in batch]
        before = {frozenset(p) for p in seen if p[0] != p[1]}
        seen += batch
        after = {frozenset(p) for p in seen if p[0] != p[1]}
        added = graph.add_pairs(pairs_tensor(batch)[:, 0], pairs_tensor(batch)[:, 1])
        assert added == len(after - before)
    assert_same_as_sets(graph, oracles.neighbour_sets(seen, num_nodes))


def test_contains_and_padded_rows_on_a_random_graph():
    rng = random.Random(0)
    n = 30
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(40)]
    graph = NeighborGraph.from_pairs(pairs_tensor(pairs), n)
    sets = oracles.neighbour_sets(pairs, n)
    rows = torch.tensor([rng.randrange(n) for _ in range(9)])
    cols = torch.randint(0, n, (9, 17), generator=torch.Generator().manual_seed(1))
    expected = [[c in sets[r] for c in cols[b].tolist()] for b, r in enumerate(rows.tolist())]
    assert graph.contains(rows, cols).tolist() == expected
    members, mask = graph.padded_rows(rows)
    assert members.shape[1] == max(len(sets[r]) for r in rows.tolist())
    for b, r in enumerate(rows.tolist()):
        assert members[b][mask[b]].tolist() == [r] + sorted(sets[r] - {r})


def test_to_device_keeps_the_graph():
    graph = NeighborGraph.from_pairs(pairs_tensor([(0, 2)]), 3)
    moved = graph.to("cpu")
    assert moved.num_nodes == 3 and torch.equal(moved.keys, graph.keys)


def test_graph_stats_by_hand():
    # 6 images; pairs (0,1) same label, (1,2) different, (3,4) with an unknown label; image 5 alone.
    graph = NeighborGraph.from_pairs(pairs_tensor([(0, 1), (1, 2), (3, 4)]), 6)
    labels = torch.tensor([7, 7, 8, 1, -1, 2])
    stats = graph_stats(graph, labels, new_pairs=pairs_tensor([(1, 2)]))
    assert stats["num_pairs"] == 3 and stats["num_entries"] == 6
    assert stats["with_neighbors"] == pytest.approx(5 / 6)
    assert stats["mean_degree"] == pytest.approx(12 / 6)
    assert stats["pair_precision"] == pytest.approx(0.5) and stats["labelled_pairs"] == 2
    assert stats["new_pairs"] == 1 and stats["new_pair_precision"] == 0.0
    assert graph_stats(NeighborGraph.empty(3), torch.tensor([0, 1, 2]))["pair_precision"] is None
    assert "pair_precision" not in graph_stats(graph)
    with pytest.raises(ValueError, match="labels"):
        graph_stats(graph, torch.tensor([0, 1]))
