"""Losses (docs/method.md sections 4 and 6) against the per-sample loop oracles."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from isl_cli import losses
from isl_cli.bank import MemoryBank
from isl_cli.losses import discriminator_loss, generator_loss, instance_loss, isl_loss
from isl_cli.neighbors import NeighborGraph

import oracles

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def make_case(seed, num_items=40, dim=8, batch=10, num_pairs=25, raw_bank=False):
    gen = torch.Generator().manual_seed(seed)
    if raw_bank:  # the initial bank: uniform in [-s, s], rows not normalised
        memory = MemoryBank(num_items, dim, generator=gen).memory
    else:
        memory = F.normalize(torch.randn(num_items, dim, generator=gen), dim=1)
    features = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    indices = torch.randint(0, num_items, (batch,), generator=gen)
    rng = random.Random(seed)
    pairs = [(rng.randrange(num_items), rng.randrange(num_items)) for _ in range(num_pairs)]
    return memory, features, indices, pairs


def run_isl(memory, features, indices, pairs, temperature, hp_weight=0.5):
    num_items = memory.shape[0]
    graph = NeighborGraph.from_pairs(torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2), num_items)
    feats = features.clone().requires_grad_(True)
    out = isl_loss((feats / temperature) @ memory.t(), indices, graph, memory, temperature, hp_weight)
    out["loss"].backward()
    return {k: float(v.detach()) for k, v in out.items()}, feats.grad


def assert_matches_oracle(memory, features, indices, pairs, temperature=0.1, hp_weight=0.5):
    values, grad = run_isl(memory, features, indices, pairs, temperature, hp_weight)
    sets = oracles.neighbour_sets(pairs, memory.shape[0])
    expected, expected_grad = oracles.isl_loss_oracle(features, indices, sets, memory, temperature, hp_weight)
    for key in ("loss", "inst", "aff", "hp"):
        assert values[key] == pytest.approx(expected[key], abs=TOL), key
    assert torch.allclose(grad.double(), expected_grad, atol=TOL, rtol=0)
    return values


def test_no_image_has_neighbours_equals_instance_loss():
    memory, features, indices, _ = make_case(0)
    values = assert_matches_oracle(memory, features, indices, [])
    assert values["aff"] == 0.0 and values["hp"] == 0.0
    _, grad = run_isl(memory, features, indices, [], 0.1)
    plain, plain_grad = oracles.instance_loss_oracle(features, indices, memory, 0.1)
    assert values["loss"] == pytest.approx(plain, abs=TOL)
    assert torch.allclose(grad.double(), plain_grad, atol=TOL, rtol=0)


def test_batch_images_without_neighbours_in_a_graph_with_edges():
    memory, features, _, _ = make_case(1, num_items=30)
    indices = torch.tensor([0, 1, 2, 3])
    values = assert_matches_oracle(memory, features[:4], indices, [(10, 11), (12, 20), (25, 29)])
    assert values["aff"] == 0.0 and values["hp"] == 0.0 and values["inst"] > 0


def test_all_images_have_neighbours():
    memory, features, _, _ = make_case(2, num_items=24, batch=8)
    indices = torch.arange(8)
    pairs = [(i, (i + 5) % 24) for i in range(24)] + [(i, (i + 11) % 24) for i in range(0, 24, 3)]
    values = assert_matches_oracle(memory, features, indices, pairs)
    assert values["inst"] == 0.0 and values["aff"] > 0 and values["hp"] > 0


def test_degree_one_exactly_one_neighbour():
    memory, features, _, _ = make_case(3, num_items=20, batch=6)
    indices = torch.tensor([0, 2, 4, 6, 8, 19])
    pairs = [(2 * k, 2 * k + 1) for k in range(5)]  # image 19 has none
    values = assert_matches_oracle(memory, features, indices, pairs)
    assert values["inst"] > 0 and values["aff"] > 0


def test_image_twice_in_one_batch():
    memory, features, _, _ = make_case(4, num_items=20, batch=6)
    indices = torch.tensor([3, 7, 3, 12, 7, 3])
    assert_matches_oracle(memory, features, indices, [(3, 9), (3, 15), (7, 1), (12, 13)])


def test_neighbours_outside_the_batch():
    memory, features, _, _ = make_case(5, num_items=50, batch=5)
    indices = torch.tensor([0, 1, 2, 3, 4])
    pairs = [(0, 40), (0, 41), (1, 45), (2, 30), (2, 31), (2, 32), (3, 49)]
    assert_matches_oracle(memory, features, indices, pairs)


@pytest.mark.parametrize("seed", range(8))
def test_random_cases(seed):
    rng = random.Random(100 + seed)
    memory, features, indices, pairs = make_case(
        100 + seed,
        num_items=rng.choice([15, 33, 60]),
        dim=rng.choice([4, 8, 16]),
        batch=rng.choice([1, 7, 16]),
        num_pairs=rng.choice([0, 5, 30, 120]),
        raw_bank=seed % 2 == 1,
    )
    assert_matches_oracle(
        memory, features, indices, pairs, temperature=rng.choice([0.07, 0.1, 0.5]), hp_weight=rng.choice([0.0, 0.5, 2.0])
    )


@pytest.mark.parametrize("block_rows", [1, 3])
def test_row_blocks_of_the_hard_positive_pass_match_the_oracle(block_rows, monkeypatch):
    memory, features, indices, pairs = make_case(20, num_items=30, batch=10, num_pairs=40)
    monkeypatch.setattr(losses, "BLOCK_ELEMENTS", block_rows * 30)  # blocks of 3 rows leave a last block of 1
    assert_matches_oracle(memory, features, indices, pairs)


def test_hard_positive_is_the_most_similar_neighbour_not_the_first():
    # Image 0's neighbours 1 and 2; make 2 much closer to 0 than 1 is: the KL term must use q from row 2.
    memory = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    features = F.normalize(torch.tensor([[0.2, 0.3, 0.9]]), dim=1)
    values = assert_matches_oracle(memory, features, torch.tensor([0]), [(0, 1), (0, 2)], temperature=0.2)
    feats = features.clone()
    log_p = torch.log_softmax(feats @ memory.t() / 0.2, dim=1)
    log_q_2 = torch.log_softmax(memory[2] @ memory.t() / 0.2, dim=0)
    assert values["hp"] == pytest.approx(float(0.5 * (log_p.exp() * (log_p - log_q_2)).sum()), abs=TOL)


def test_large_norm_bank_takes_the_overflow_fallback():
    # Hard-positive logits up to 400 overflow exp in float32: the loss must still match the oracle.
    memory, features, _, _ = make_case(6, num_items=20, dim=4, batch=4)
    memory = memory * 20.0
    indices = torch.tensor([0, 1, 2, 3])
    values, grad = run_isl(memory, features, indices, [(0, 5), (1, 6), (2, 7)], temperature=1.0)
    expected, expected_grad = oracles.isl_loss_oracle(
        features, indices, oracles.neighbour_sets([(0, 5), (1, 6), (2, 7)], 20), memory, 1.0
    )
    assert all(torch.isfinite(torch.tensor(list(values.values()))))
    for key in ("loss", "inst", "aff", "hp"):
        assert values[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-3), key
    assert torch.allclose(grad.double(), expected_grad, rtol=1e-4, atol=1e-3)


def test_analytic_gradient_passes_gradcheck_for_each_part():
    memory, features, indices, pairs = make_case(7, num_items=12, dim=4, batch=6, num_pairs=6)
    memory = memory.double()
    graph = NeighborGraph.from_pairs(torch.tensor(pairs), 12)
    indices = torch.tensor([0, 1, 2, 3, 3, pairs[0][0]])
    logits = (features.double() @ memory.t() / 0.1).requires_grad_(True)

    def parts(z):
        out = isl_loss(z, indices, graph, memory, 0.1, 0.7)
        return out["inst"], out["aff"], out["hp"]

    assert torch.autograd.gradcheck(parts, (logits,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_backward_twice_gives_the_same_gradient():
    memory, features, indices, pairs = make_case(8)
    graph = NeighborGraph.from_pairs(torch.tensor(pairs), memory.shape[0])
    feats = features.clone().requires_grad_(True)
    loss = isl_loss(feats @ memory.t() / 0.1, indices, graph, memory, 0.1)["loss"]
    loss.backward(retain_graph=True)
    first = feats.grad.clone()
    loss.backward()
    assert torch.allclose(feats.grad, 2 * first)


def test_instance_loss_matches_oracle():
    memory, features, indices, _ = make_case(9)
    feats = features.clone().requires_grad_(True)
    loss = instance_loss(feats @ memory.t() / 0.07, indices)
    loss.backward()
    expected, expected_grad = oracles.instance_loss_oracle(features, indices, memory, 0.07)
    assert float(loss.detach()) == pytest.approx(expected, abs=TOL)
    assert torch.allclose(feats.grad.double(), expected_grad, atol=TOL, rtol=0)


def test_isl_loss_rejects_mismatched_shapes():
    memory, features, indices, _ = make_case(10)
    graph = NeighborGraph.empty(memory.shape[0] + 1)
    with pytest.raises(ValueError, match="columns"):
        isl_loss(features @ memory.t(), indices, graph, memory, 0.1)
    with pytest.raises(ValueError, match="indices"):
        isl_loss(features @ memory.t(), indices[:-1], NeighborGraph.empty(memory.shape[0]), memory, 0.1)


# ------------------------------------------------------------------------ GAN
def make_gan_case(seed, batch=5, dim=4):
    torch.manual_seed(seed)
    dis = torch.nn.Sequential(torch.nn.Linear(3 * dim, 6), torch.nn.LeakyReLU(0.01), torch.nn.Linear(6, 1), torch.nn.Sigmoid())
    dis = dis.double()
    gen = torch.nn.Linear(3 * dim, dim).double()
    a, p, n = (F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1) for _ in range(3))
    p_fake = F.normalize(gen(torch.cat([a, p, n], 1)), dim=1)
    return dis, gen, a, p, n, p_fake


@pytest.mark.parametrize("seed", range(3))
def test_gan_losses_match_hand_written_oracle(seed):
    dis, _, a, p, n, p_fake = make_gan_case(seed)
    with torch.no_grad():
        assert float(discriminator_loss(dis, a, p, n, p_fake)) == pytest.approx(
            float(oracles.discriminator_loss_oracle(dis, a, p, n, p_fake)), abs=1e-10
        )
        assert float(generator_loss(dis, a, p, n, p_fake)) == pytest.approx(
            float(oracles.generator_loss_oracle(dis, a, p, n, p_fake)), abs=1e-10
        )


def test_discriminator_loss_gives_no_gradient_to_the_generator():
    dis, gen, a, p, n, p_fake = make_gan_case(3)
    discriminator_loss(dis, a, p, n, p_fake).backward()
    assert all(param.grad is None for param in gen.parameters())
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in dis.parameters())


def test_generator_loss_gradient_matches_oracle():
    dis, gen, a, p, n, p_fake = make_gan_case(4)
    generator_loss(dis, a, p, n, p_fake).backward()
    got = [param.grad.clone() for param in gen.parameters()]
    gen.zero_grad()
    p_fake_again = F.normalize(gen(torch.cat([a, p, n], 1)), dim=1)
    oracles.generator_loss_oracle(dis, a, p, n, p_fake_again).backward()
    for mine, theirs in zip(got, gen.parameters()):
        assert torch.allclose(mine, theirs.grad, atol=1e-10)
        assert mine.abs().sum() > 0


def test_underflowing_member_mass_takes_the_logit_path():
    # Features of norm 20 at T = 0.1: p_ii underflows to 0 in float32 for some rows; the loss must stay exact.
    memory, features, _, _ = make_case(12, num_items=30, dim=4, batch=5)
    features = features * 20.0
    indices = torch.tensor([0, 1, 2, 3, 4])
    pairs = [(0, 9), (1, 10), (1, 11)]
    z = features @ memory.t() / 0.1
    assert (torch.softmax(z, 1)[torch.arange(5), indices] == 0).any()  # the fast path would give inf
    values, grad = run_isl(memory, features, indices, pairs, temperature=0.1)
    expected, expected_grad = oracles.isl_loss_oracle(
        features, indices, oracles.neighbour_sets(pairs, 30), memory, 0.1
    )
    for key in ("loss", "inst", "aff", "hp"):
        assert values[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-4), key
    assert torch.allclose(grad.double(), expected_grad, rtol=1e-4, atol=1e-4)
