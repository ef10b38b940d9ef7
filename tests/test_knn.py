"""Weighted kNN (docs/method.md section 9) against a brute-force oracle and a hand-computed case."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from isl_cli.knn import (DEFAULT_KEY_CHUNK, DEFAULT_QUERY_CHUNK, KnnResult, can_score, clamp_ks, prepare_knn,
                         ranked_classes_by_chunk, topk_similar, weighted_knn)

pytestmark = pytest.mark.usefixtures("one_thread")


CHUNKINGS = [
    {"query_chunk": 1024, "key_chunk": 65536},  # one block
    {"query_chunk": 7, "key_chunk": 13},  # divides neither Q nor N
    {"query_chunk": 1, "key_chunk": 300},  # one query at a time; a key chunk of 300 and one of 1
    {"query_chunk": 16, "key_chunk": 9},  # key chunks smaller than most k
    {"query_chunk": 10, "key_chunk": 300},  # a key chunk larger than k but smaller than N
]


# ---------- the oracle: full similarity matrix, full stable sort, a Python loop per query ----------
def brute_force_neighbors(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sims = queries @ keys.T  # (Q, N)
    ordered = torch.sort(sims, dim=1, descending=True, stable=True)  # equal sims: lower index first
    return ordered.values, ordered.indices


def brute_force_knn(queries, query_labels, keys, key_labels, k, temperature, num_classes):
    """Per query: k nearest, weights exp(sim / T) summed per class, classes ranked (ties: lower class)."""
    sims, idx = brute_force_neighbors(queries, keys)
    rankings, top1, top5 = [], 0, 0
    for q in range(queries.shape[0]):
        scores = [0.0] * num_classes
        for j in range(min(k, keys.shape[0])):
            key = int(idx[q, j])
            scores[int(key_labels[key])] += math.exp(float(sims[q, j]) / temperature)
        ranking = sorted(range(num_classes), key=lambda c: (-scores[c], c))[:5]
        rankings.append(ranking)
        truth = int(query_labels[q])
        top1 += ranking[0] == truth
        top5 += truth in ranking
    n = queries.shape[0]
    return rankings, 100.0 * top1 / n, 100.0 * top5 / n


def random_problem(seed: int, q: int = 41, n: int = 301, d: int = 16, classes: int = 7, quantized: bool = False):
    gen = torch.Generator().manual_seed(seed)
    if quantized:  # few distinct rows and exact products: many exact ties in similarities and class scores
        palette = torch.randint(-2, 3, (6, d), generator=gen).double() / 4  # (6, D)
        keys = palette[torch.randint(0, 6, (n,), generator=gen)]  # (N, D)
        queries = palette[torch.randint(0, 6, (q,), generator=gen)]  # (Q, D)
    else:
        keys = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(q, d, generator=gen, dtype=torch.float64), dim=1)
    key_labels = torch.randint(0, classes, (n,), generator=gen)
    query_labels = torch.randint(0, classes, (q,), generator=gen)
    return queries, query_labels, keys, key_labels


@functools.lru_cache(maxsize=None)
def cached_oracle(seed: int, quantized: bool, k: int, temperature: float):
    """The oracle's (rankings, top1, top5) for `random_problem(seed)`, shared by the chunkings."""
    queries, query_labels, keys, key_labels = random_problem(seed, quantized=quantized)
    return brute_force_knn(queries, query_labels, keys, key_labels, k, temperature, 7)


# ---------- topk_similar ----------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("quantized", [False, True])
def test_topk_similar_equals_full_sort(chunks, quantized):
    queries, _, keys, _ = random_problem(1, quantized=quantized)
    full_sims, full_idx = brute_force_neighbors(queries, keys)
    for k in (1, 5, 200, keys.shape[0]):
        sims, idx = topk_similar(queries, keys, k, **chunks)
        assert sims.shape == idx.shape == (queries.shape[0], k)
        assert idx.dtype == torch.int64
        assert torch.equal(idx, full_idx[:, :k])
        # (torch.testing.assert_close would import ~3 s of torch.distributed on first use)
        assert torch.allclose(sims, full_sims[:, :k], rtol=0, atol=1e-12)


def test_topk_similar_breaks_similarity_ties_by_lowest_index():
    keys = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])  # (6, 2)
    query = torch.tensor([[1.0, 0.0]])
    for key_chunk in (1, 2, 4, 6):
        sims, idx = topk_similar(query, keys, 3, key_chunk=key_chunk)
        assert idx.tolist() == [[1, 2, 4]]  # four keys tie at 1.0: the three lowest indices win
        assert sims.tolist() == [[1.0, 1.0, 1.0]]


def test_topk_similar_float32_and_validation():
    queries, _, keys, _ = random_problem(2)
    sims, idx = topk_similar(queries.float(), keys.float(), 10, query_chunk=8, key_chunk=50)
    assert sims.dtype == torch.float32
    assert torch.all(sims[:, :-1] >= sims[:, 1:])  # sorted descending
    with pytest.raises(ValueError, match="k must be"):
        topk_similar(queries, keys, keys.shape[0] + 1)
    with pytest.raises(ValueError, match="same D"):
        topk_similar(queries, keys[:, :3], 1)
    with pytest.raises(ValueError, match="key_chunk"):
        topk_similar(queries, keys, 1, key_chunk=0)



def knn_predict(queries, keys, key_labels, ks, temperature, *, query_chunk=DEFAULT_QUERY_CHUNK,
                key_chunk=DEFAULT_KEY_CHUNK):
    """{k: (Q, <=5) classes, best first}: the ranking `weighted_knn` scores, from the function it calls."""
    requested, used_ks, num_classes, key_labels = prepare_knn(queries, None, keys, key_labels, ks, temperature,
                                                              None, query_chunk, key_chunk)
    chunks = list(ranked_classes_by_chunk(queries, keys, key_labels, used_ks, temperature, num_classes,
                                          query_chunk, key_chunk))
    return {k: torch.cat([ranked[slot] for _, ranked in chunks]) for slot, k in enumerate(requested)}

# ---------- weighted_knn against the oracle ----------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("quantized", [False, True])
def test_weighted_knn_equals_brute_force(chunks, quantized):
    queries, query_labels, keys, key_labels = random_problem(3, quantized=quantized)
    ks = (1, 3, 20, 200)
    temperature = 0.1
    results = weighted_knn(queries, query_labels, keys, key_labels, ks, temperature, **chunks)
    predictions = knn_predict(queries, keys, key_labels, ks, temperature, **chunks)
    for k in ks:
        rankings, top1, top5 = cached_oracle(3, quantized, k, temperature)
        assert predictions[k].tolist() == rankings
        assert results[k] == KnnResult(k=k, top1=top1, top5=top5, num_queries=queries.shape[0], clamped=False)


def test_weighted_knn_float32_matches_float64_oracle():
    queries, query_labels, keys, key_labels = random_problem(4, q=60, n=500)
    results = weighted_knn(queries.float(), query_labels, keys.float(), key_labels, (10, 50), 0.07, key_chunk=64)
    for k in (10, 50):
        _, top1, top5 = brute_force_knn(queries, query_labels, keys, key_labels, k, 0.07, 7)
        assert (results[k].top1, results[k].top5) == (top1, top5)


def test_hand_computed_four_points():
    # Keys (unit vectors in 2D) and their classes:
    #   key 0 = (1, 0)     class 0
    #   key 1 = (.8, .6)   class 1
    #   key 2 = (.6, .8)   class 1
    #   key 3 = (0, 1)     class 2
    # Query A = (1, 0), true class 1: sims 1, .8, .6, 0.
    # Query B = (0, 1), true class 2: sims 0, .6, .8, 1.
    keys = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    key_labels = torch.tensor([0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    query_labels = torch.tensor([1, 2])

    # T = 0.1, k = 3. A: keys 0, 1, 2 with weights e^10 = 22026.5, e^8 = 2981.0, e^6 = 403.4
    #   class scores: c0 = 22026.5, c1 = 3384.4, c2 = 0 -> ranking [0, 1, 2]; predicted 0 (wrong),
    #   although 2 of the 3 neighbours are class 1: the weighting decides.
    # B: keys 3, 2, 1 with weights e^10, e^8, e^6 -> c2 = 22026.5, c1 = 3384.4, c0 = 0 -> [2, 1, 0] (right).
    # k = 1: A -> key 0 -> [0, 1, 2] (wrong); B -> key 3 -> [2, 0, 1] (right; classes 0 and 1 tie at 0).
    ranked = knn_predict(queries, keys, key_labels, (1, 3), temperature=0.1)
    assert ranked[3].tolist() == [[0, 1, 2], [2, 1, 0]]
    assert ranked[1].tolist() == [[0, 1, 2], [2, 0, 1]]
    results = weighted_knn(queries, query_labels, keys, key_labels, (1, 3), temperature=0.1)
    assert (results[3].top1, results[3].top5) == (50.0, 100.0)  # 3 classes: top-5 always holds the truth
    assert (results[1].top1, results[1].top5) == (50.0, 100.0)

    # T = 1, k = 3. A: weights e^1 = 2.718, e^.8 = 2.226, e^.6 = 1.822 -> c1 = 4.048 > c0 = 2.718 -> [1, 0, 2] (right).
    # B: e^1 (c2) = 2.718 < e^.8 + e^.6 (c1) = 4.048 -> [1, 2, 0] (wrong).
    ranked = knn_predict(queries, keys, key_labels, (3,), temperature=1.0)
    assert ranked[3].tolist() == [[1, 0, 2], [1, 2, 0]]
    results = weighted_knn(queries, query_labels, keys, key_labels, (3,), temperature=1.0)
    assert results[3].top1 == 50.0


def test_class_score_ties_go_to_the_lowest_class():
    keys = torch.tensor([[1.0, 0.0]] * 4)  # four identical keys: every similarity is 1
    key_labels = torch.tensor([3, 1, 3, 1])
    queries = torch.tensor([[1.0, 0.0]])
    ranked = knn_predict(queries, keys, key_labels, (1, 2, 4), temperature=0.1)
    assert ranked[1][0, 0].item() == 3  # k = 1: key 0 (lowest index among equal sims) -> class 3
    assert ranked[2].tolist() == [[1, 3, 0, 2]]  # keys 0, 1: classes 1 and 3 tie -> 1 first, then zeros 0, 2
    assert ranked[4].tolist() == [[1, 3, 0, 2]]
    results = weighted_knn(queries, torch.tensor([1]), keys, key_labels, (1, 2), temperature=0.1)
    assert (results[1].top1, results[2].top1) == (0.0, 100.0)


def test_k_larger_than_n_is_clamped():
    queries, query_labels, keys, key_labels = random_problem(5, q=9, n=6, classes=3)
    results = weighted_knn(queries, query_labels, keys, key_labels, (2, 6, 50), 0.1)
    assert results[50].k == 6 and results[50].clamped
    assert results[2].k == 2 and not results[2].clamped
    assert (results[50].top1, results[50].top5) == (results[6].top1, results[6].top5)
    assert clamp_ks((1, 5, 10), 6) == ((1, 5, 6), True)
    assert clamp_ks((1, 5), 6) == ((1, 5), False)
    with pytest.raises(ValueError):
        clamp_ks((0,), 6)
    with pytest.raises(ValueError):
        clamp_ks((), 6)


def test_unknown_labels_cannot_be_scored():
    queries, query_labels, keys, key_labels = random_problem(6, q=5, n=20)
    assert can_score(query_labels) and can_score(key_labels)
    unknown = key_labels.clone()
    unknown[3] = -1
    assert not can_score(unknown)
    with pytest.raises(ValueError, match="cannot be scored"):
        weighted_knn(queries, query_labels, keys, unknown, (5,), 0.1)
    with pytest.raises(ValueError, match="cannot be scored"):
        weighted_knn(queries, torch.full_like(query_labels, -1), keys, key_labels, (5,), 0.1)


def test_weighted_knn_validation():
    queries, query_labels, keys, key_labels = random_problem(7, q=5, n=20, classes=4)
    with pytest.raises(ValueError, match="temperature"):
        weighted_knn(queries, query_labels, keys, key_labels, (5,), 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        weighted_knn(queries, query_labels, keys, key_labels, (5,), 0.1, num_classes=int(key_labels.max()))
    with pytest.raises(ValueError, match="labels must be"):
        weighted_knn(queries, query_labels[:3], keys, key_labels, (5,), 0.1)
    with pytest.raises(ValueError, match="at least one query"):
        weighted_knn(queries[:0], query_labels[:0], keys, key_labels, (5,), 0.1)
    # a larger num_classes only adds classes that no neighbour votes for: same accuracies
    plain = weighted_knn(queries, query_labels, keys, key_labels, (5,), 0.1)
    wide = weighted_knn(queries, query_labels, keys, key_labels, (5,), 0.1, num_classes=50)
    assert (plain[5].top1, plain[5].top5) == (wide[5].top1, wide[5].top5)
