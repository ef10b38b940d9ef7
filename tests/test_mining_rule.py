"""The mining rule for one batch (docs/method.md section 7) against a loop oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isl_cli.mining import TALLY_NAMES, pairs_for_quota, propose_pairs, quota, quota_reached

import oracles


pytestmark = pytest.mark.usefixtures("one_thread")


def as_pairs(i, j):
    return list(zip(i.tolist(), j.tolist()))


def clustered_bank(seed, num_items=60, dim=6, spread=0.25):
    """Rows in a few tight clusters, so that proxies near a row have several rows above the radius."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(5, dim, generator=gen), dim=1)
    memory = centres[torch.randint(0, 5, (num_items,), generator=gen)]
    return F.normalize(memory + spread * torch.randn(num_items, dim, generator=gen), dim=1), gen


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tau, base_radius, top_k", [(0.5, 0.6, 10), (0.3, 0.3, 4), (0.5, 0.6, 100)])
def test_random_batches_match_the_loop_oracle(seed, tau, base_radius, top_k):
    memory, gen = clustered_bank(seed)
    indices = torch.randint(0, memory.shape[0], (12,), generator=gen)
    proxies = F.normalize(memory[indices] + 0.2 * torch.randn(12, memory.shape[1], generator=gen), dim=1)
    scores = torch.rand(12, generator=gen)
    i, j, _ = propose_pairs(proxies, scores, indices, memory, tau, base_radius, top_k)
    expected = oracles.propose_pairs_oracle(proxies, scores, indices, memory, tau, base_radius, top_k)
    assert as_pairs(i, j) == expected
    assert i.dtype == torch.int64 and j.dtype == torch.int64
    tally = propose_pairs(proxies, scores, indices, memory, tau, base_radius, top_k).tally
    assert dict(zip(TALLY_NAMES, tally.tolist())) == oracles.proposal_tally_oracle(
        proxies, scores, indices, memory, tau, base_radius, top_k)


def test_own_row_most_similar_is_excluded_and_does_not_use_a_slot():
    # Proxy equals image 0's own row: row 0 is the best match but must not be proposed; k = 2
    # other rows are still considered (the top-k is taken after excluding i).
    memory = F.normalize(
        torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.97, 0.24], [0.0, 1.0]]), dim=1
    )
    proxies = memory[[0]].clone()
    i, j, _ = propose_pairs(proxies, torch.tensor([1.0]), torch.tensor([0]), memory, top_k=2)
    assert as_pairs(i, j) == [(0, 1), (0, 2)]
    assert as_pairs(i, j) == oracles.propose_pairs_oracle(proxies, torch.tensor([1.0]), torch.tensor([0]), memory, top_k=2)


def test_scores_at_or_below_tau_propose_nothing_and_the_radius_grows_as_the_score_falls():
    memory = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.65, 0.76], [0.0, 1.0]]), dim=1)
    proxies = torch.tensor([[1.0, 0.0]] * 4)
    indices = torch.tensor([3, 3, 3, 3])
    scores = torch.tensor([0.5, 0.2, 1.0, 0.875])  # at tau, below, certain, in between
    i, j, _ = propose_pairs(proxies, scores, indices, memory)
    # similarities 1.0, 0.8, 0.64997: s = 1 gives r = 0.6 -> rows 0, 1, 2;
    # s = 0.875 gives r = 0.6 + 0.125 * 0.4 = 0.65 -> rows 0, 1
    assert as_pairs(i, j) == [(3, 0), (3, 1), (3, 2), (3, 0), (3, 1)]
    assert as_pairs(i, j) == oracles.propose_pairs_oracle(proxies, scores, indices, memory)
    scores_column = scores[:, None]  # (B, 1) as the discriminator returns it
    assert as_pairs(*propose_pairs(proxies, scores_column, indices, memory)[:2]) == as_pairs(i, j)


def test_radius_is_strict():
    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    i, j, _ = propose_pairs(torch.tensor([[0.6, 0.8]]), torch.tensor([1.0]), torch.tensor([0]), memory, base_radius=1.0)
    assert i.numel() == 0  # similarity 1.0 is not above r = 1.0


def test_tiny_bank_and_bad_arguments():
    memory = torch.eye(2)
    i, j, _ = propose_pairs(torch.tensor([[0.0, 1.0]]), torch.tensor([0.9]), torch.tensor([0]), memory, top_k=10)
    assert as_pairs(i, j) == [(0, 1)]
    i, j, _ = propose_pairs(torch.tensor([[1.0]]), torch.tensor([0.9]), torch.tensor([0]), torch.ones(1, 1))
    assert i.numel() == 0 and j.numel() == 0
    with pytest.raises(ValueError, match="top_k"):
        propose_pairs(torch.tensor([[0.0, 1.0]]), torch.tensor([0.9]), torch.tensor([0]), memory, top_k=0)
    with pytest.raises(ValueError, match="scores"):
        propose_pairs(torch.tensor([[0.0, 1.0]]), torch.tensor([0.9, 0.2]), torch.tensor([0]), memory)


def test_quota_and_the_strict_stop():
    assert [quota(r, 1000) for r in range(4)] == [500, 1000, 1500, 2000]
    assert quota(0, 5) == 2  # 2.5 rounded down: more than 2 entries is more than 2.5
    assert quota(1, 10, per_round=0.25) == 5
    assert not quota_reached(500, quota(0, 1000)) and quota_reached(501, quota(0, 1000))
    with pytest.raises(ValueError):
        quota(-1, 10)
    with pytest.raises(ValueError):
        quota(0, 0)


def test_the_tally_counts_each_rejection_by_hand():
    memory = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.65, 0.76], [0.0, 1.0]]), dim=1)
    proxies = torch.tensor([[1.0, 0.0]] * 4)
    scores = torch.tensor([0.5, 0.2, 1.0, 0.875])  # two at or below tau; then r = 0.6 and r = 0.65
    _, _, tally = propose_pairs(proxies, scores, torch.tensor([3, 3, 3, 3]), memory, top_k=2)
    # the two trusted images see their top 2 (rows 0 and 1): all four within their radius
    assert dict(zip(TALLY_NAMES, tally.tolist())) == {
        "images": 4, "rejected_score": 2, "candidates": 4, "rejected_radius": 0, "proposed": 4}
    _, _, tally = propose_pairs(proxies, scores, torch.tensor([3, 3, 3, 3]), memory, base_radius=0.9)
    # r = 0.9 (s = 1) keeps rows 0 only; r = 0.9125 (s = 0.875) keeps row 0 only: 3 + 3 candidates, 4 outside
    assert tally.tolist() == [4, 2, 6, 4, 2]


@pytest.mark.parametrize("entries, quota_value, expected", [(0, 5, 3), (0, 4, 3), (5, 5, 1), (6, 5, 0), (40, 5, 0)])
def test_pairs_for_quota_take_the_graph_just_above_the_quota(entries, quota_value, expected):
    assert pairs_for_quota(entries, quota_value) == expected
    assert quota_reached(entries + 2 * expected, quota_value)
    assert expected == 0 or not quota_reached(entries + 2 * (expected - 1), quota_value)


def first_new_pairs_oracle(rows, cols, graph_pairs, wanted):
    """Walk the proposals in order, counting pairs new to the graph and not named before, until `wanted`."""
    seen = {(min(i, j), max(i, j)) for i, j in graph_pairs}
    count, kept = 0, 0
    for i, j in zip(rows.tolist(), cols.tolist()):
        if count >= wanted:
            break
        kept += 1
        key = (min(i, j), max(i, j))
        if i != j and key not in seen:
            seen.add(key)
            count += 1
    return kept


@pytest.mark.parametrize("seed", range(8))
def test_first_new_pairs_keep_the_shortest_prefix_the_quota_needs(seed):
    from isl_cli.mining import first_new_pairs
    from isl_cli.neighbors import NeighborGraph

    gen = torch.Generator().manual_seed(seed)
    graph_pairs = torch.randint(0, 12, (10, 2), generator=gen)
    graph = NeighborGraph.from_pairs(graph_pairs, 12)
    rows, cols = torch.randint(0, 12, (40,), generator=gen), torch.randint(0, 12, (40,), generator=gen)
    for wanted in (0, 1, 3, 10, 1000):
        kept_rows, kept_cols = first_new_pairs(rows, cols, graph, wanted)
        count = first_new_pairs_oracle(rows, cols, graph_pairs.tolist(), wanted)
        assert torch.equal(kept_rows, rows[:count]) and torch.equal(kept_cols, cols[:count])
        total_new = NeighborGraph.from_pairs(graph_pairs, 12).add_pairs(rows, cols)
        assert NeighborGraph.from_pairs(graph_pairs, 12).add_pairs(kept_rows, kept_cols) == min(wanted, total_new)
