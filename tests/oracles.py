"""Slow, obviously-correct oracles written straight from docs/method.md.

Each is a plain per-sample Python loop (float64 where numbers are involved),
with neighbour sets as Python sets. The vectorised code in `isl_cli` is tested
against these, and the benchmarks time them.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterable

import torch
from torch import Tensor


# ----------------------------------------------------------------- neighbours
def neighbour_sets(pairs: Iterable[tuple[int, int]], num_items: int) -> list[set[int]]:
    """A(i) for every image: i itself plus every partner in `pairs`, symmetrically."""
    sets = [{i} for i in range(num_items)]
    for i, j in pairs:
        sets[i].add(j)
        sets[j].add(i)
    return sets


# ----------------------------------------------------------------------- bank
def bank_update_oracle(memory: Tensor, indices: Tensor, features: Tensor, momentum: float) -> Tensor:
    """Section 2 update, row by row from the OLD rows; a repeated index keeps its last value."""
    old = memory.double().clone()
    new = old.clone()
    for b, i in enumerate(indices.tolist()):
        row = momentum * old[i] + (1.0 - momentum) * features[b].double()
        new[i] = row / math.sqrt(float((row * row).sum()))
    return new


# --------------------------------------------------------------------- losses
def instance_loss_oracle(features: Tensor, indices: Tensor, memory: Tensor, temperature: float):
    """(loss, d loss / d features) for sum_i -log p_ii / B, one image at a time."""
    feats = features.detach().double().clone().requires_grad_(True)
    bank = memory.double()
    total = feats.new_zeros(())
    for b, i in enumerate(indices.tolist()):
        logits = torch.mv(bank, feats[b]) / temperature  # z_ij for every j
        log_p = logits - torch.logsumexp(logits, dim=0)
        total = total - log_p[i]
    loss = total / len(indices)
    loss.backward()
    return float(loss.detach()), feats.grad


def hard_positive_oracle(i: int, members: set[int], memory: Tensor) -> int:
    """The member of A(i) minus i with the largest M_h . M_i (smallest index on ties)."""
    best, best_similarity = None, -math.inf
    for h in sorted(members - {i}):
        similarity = float(memory[h].double() @ memory[i].double())
        if similarity > best_similarity:
            best, best_similarity = h, similarity
    return best


def isl_loss_oracle(
    features: Tensor,
    indices: Tensor,
    sets: list[set[int]],
    memory: Tensor,
    temperature: float,
    hp_weight: float = 0.5,
    rows: int | None = None,
):
    """Section 4 loss, one image at a time.

    Returns ({"loss", "inst", "aff", "hp"} as floats, d loss / d features (B, D)).
    With `rows`, only the first `rows` images are processed (for timing);
    the sums are still divided by the full B.
    """
    feats = features.detach().double().clone().requires_grad_(True)
    bank = memory.double()
    batch = len(indices)
    inst = aff = hp = feats.new_zeros(())
    for b, i in enumerate(indices.tolist()[:rows]):
        logits = torch.mv(bank, feats[b]) / temperature  # z_ij for every j
        log_p = logits - torch.logsumexp(logits, dim=0)  # log p_ij
        members = sets[i]
        if len(members) == 1:
            inst = inst - log_p[i]
            continue
        mass = feats.new_zeros(())
        for j in sorted(members):
            mass = mass + torch.exp(log_p[j])
        aff = aff - torch.log(mass)
        h = hard_positive_oracle(i, members, bank)
        with torch.no_grad():
            hard_logits = torch.mv(bank, bank[h]) / temperature
            log_q = hard_logits - torch.logsumexp(hard_logits, dim=0)
        hp = hp + hp_weight * torch.sum(torch.exp(log_p) * (log_p - log_q))
    loss = (inst + aff + hp) / batch
    loss.backward()
    parts = {"loss": loss, "inst": inst / batch, "aff": aff / batch, "hp": hp / batch}
    return {k: float(v.detach()) for k, v in parts.items()}, feats.grad


def bce_oracle(probabilities: Tensor, target: float) -> Tensor:
    """Mean over rows of -(t log x + (1 - t) log(1 - x)), written out."""
    total = probabilities.new_zeros(())
    values = probabilities.reshape(-1)
    for x in values:
        total = total - (target * torch.log(x) + (1.0 - target) * torch.log(1.0 - x))
    return total / len(values)


def discriminator_loss_oracle(dis: Callable[[Tensor], Tensor], a, p, n, p_fake) -> Tensor:
    """(BCE(real, 1) + (BCE((a,p,p'), 0) + BCE((a,p',n), 0)) / 2) / 2."""
    real = bce_oracle(dis(torch.cat([a, p, n], 1)), 1.0)
    fake_1 = bce_oracle(dis(torch.cat([a, p, p_fake], 1)), 0.0)
    fake_2 = bce_oracle(dis(torch.cat([a, p_fake, n], 1)), 0.0)
    return (real + (fake_1 + fake_2) / 2) / 2


def generator_loss_oracle(dis: Callable[[Tensor], Tensor], a, p, n, p_fake) -> Tensor:
    """(BCE((a,p,p'), 1) + BCE((a,p',n), 1)) / 2."""
    return (bce_oracle(dis(torch.cat([a, p, p_fake], 1)), 1.0) + bce_oracle(dis(torch.cat([a, p_fake, n], 1)), 1.0)) / 2


# ------------------------------------------------------------------- triplets
def draw_non_neighbors_oracle(i: int, members: set[int], num_items: int, num_draws: int, rng: random.Random) -> list[int]:
    """K uniform draws from 0..N-1, each redrawn until it falls outside A(i)."""
    draws = []
    for _ in range(num_draws):
        j = rng.randrange(num_items)
        while j in members:
            j = rng.randrange(num_items)
        draws.append(j)
    return draws


def nearest_negative_oracle(anchor: Tensor, draws: list[int], memory: Tensor) -> int:
    """The drawn j with the largest M_j . a (first one on ties)."""
    best, best_score = None, -math.inf
    for j in draws:
        score = float(memory[j].double() @ anchor.double())
        if score > best_score:
            best, best_score = j, score
    return best


def triplet_negatives_oracle(anchors, indices, memory, sets, num_draws, rng, rows: int | None = None) -> list[int]:
    """Draws and nearest negative for each image (the first `rows` images if given)."""
    num_items = memory.shape[0]
    chosen = []
    for b, i in enumerate(indices.tolist()[:rows]):
        draws = draw_non_neighbors_oracle(i, sets[i], num_items, num_draws, rng)
        chosen.append(nearest_negative_oracle(anchors[b], draws, memory))
    return chosen


# --------------------------------------------------------------------- mining
def propose_pairs_oracle(proxies, scores, indices, memory, tau=0.5, base_radius=0.6, top_k=10) -> list[tuple[int, int]]:
    """Section 7 for one batch: every (i, j) proposed, in batch order then by similarity."""
    pairs = []
    num_items = memory.shape[0]
    for b, i in enumerate(indices.tolist()):
        s = float(scores.reshape(-1)[b])
        if not s > tau:
            continue
        radius = base_radius + (1.0 - s) * (1.0 - base_radius)
        similarity = {j: float(memory[j].double() @ proxies[b].double()) for j in range(num_items) if j != i}
        ranked = sorted(similarity, key=lambda j: -similarity[j])[:top_k]
        pairs.extend((i, j) for j in ranked if similarity[j] > radius)
    return pairs


def proposal_tally_oracle(proxies, scores, indices, memory, tau=0.5, base_radius=0.6, top_k=10) -> dict[str, int]:
    """What each test of section 7 rejects in one batch, counted one image and one candidate at a time."""
    tally = {"images": 0, "rejected_score": 0, "candidates": 0, "rejected_radius": 0, "proposed": 0}
    num_items = memory.shape[0]
    for b, i in enumerate(indices.tolist()):
        tally["images"] += 1
        s = float(scores.reshape(-1)[b])
        if not s > tau:
            tally["rejected_score"] += 1
            continue
        radius = base_radius + (1.0 - s) * (1.0 - base_radius)
        similarity = {j: float(memory[j].double() @ proxies[b].double()) for j in range(num_items) if j != i}
        for j in sorted(similarity, key=lambda j: -similarity[j])[:top_k]:
            tally["candidates"] += 1
            tally["rejected_radius" if not similarity[j] > radius else "proposed"] += 1
    return tally


def similarity_miner_oracle(memory, pairs, quota_value) -> set[tuple[int, int]]:
    """The AND-style rival by brute force: add the most similar non-neighbour pairs i < j (similarity descending,
    then (i, j) ascending), one at a time, until the entries 2 x |pairs| exceed the quota."""
    edges = {(min(i, j), max(i, j)) for i, j in pairs.tolist() if i != j}
    n = memory.shape[0]
    candidates = [(-float(memory[i].double() @ memory[j].double()), i, j)
                  for i in range(n) for j in range(i + 1, n) if (i, j) not in edges]
    for _, i, j in sorted(candidates):
        if 2 * len(edges) > quota_value:
            break
        edges.add((i, j))
    return edges
