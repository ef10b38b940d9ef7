"""The memory bank (docs/method.md section 2) against the row-by-row oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from isl_cli.bank import MemoryBank

import oracles


pytestmark = pytest.mark.usefixtures("one_thread")


def test_initial_values_are_uniform_in_the_reference_range_and_not_normalised():
    bank = MemoryBank(2000, 12, generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(12 / 3)
    memory = bank.memory
    assert memory.shape == (2000, 12) and memory.dtype == torch.float32
    assert memory.min() >= -bound and memory.max() <= bound
    assert memory.min() < -0.95 * bound and memory.max() > 0.95 * bound  # spans the whole range
    assert abs(float(memory.mean())) < 0.01
    assert float(memory.var()) == pytest.approx(bound**2 / 3, rel=0.05)  # variance of U(-s, s)
    norms = memory.norm(dim=1)
    assert norms.std() > 0.05  # rows are not normalised


def test_same_generator_seed_gives_the_same_bank_and_the_buffer_is_saved():
    first = MemoryBank(50, 8, generator=torch.Generator().manual_seed(3))
    second = MemoryBank(50, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.memory, second.memory)
    assert set(first.state_dict()) == {"memory"}
    assert not first.memory.requires_grad


@pytest.mark.parametrize("kwargs", [{"num_items": 0}, {"num_items": 5, "dim": 0}, {"num_items": 5, "momentum": 1.5}])
def test_constructor_validates(kwargs):
    with pytest.raises(ValueError):
        MemoryBank(**kwargs)


def test_logits_are_dot_products_over_temperature_with_gradient_to_features_only():
    bank = MemoryBank(30, 6, generator=torch.Generator().manual_seed(1))
    features = F.normalize(torch.randn(4, 6), dim=1).requires_grad_(True)
    logits = bank.logits(features, 0.07)
    expected = features.detach().double() @ bank.memory.double().t() / 0.07
    assert logits.shape == (4, 30)
    assert torch.allclose(logits.double(), expected, atol=1e-5)
    logits.sum().backward()
    assert torch.allclose(features.grad, bank.memory.sum(0).expand(4, 6) / 0.07, atol=1e-4)
    assert bank.memory.grad is None
    with pytest.raises(ValueError, match="features"):
        bank.logits(torch.zeros(4, 5), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        bank.logits(features, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_update_matches_the_row_by_row_oracle(seed):
    gen = torch.Generator().manual_seed(seed)
    bank = MemoryBank(20, 5, momentum=0.5 if seed % 2 == 0 else 0.8, generator=gen)
    indices = torch.randint(0, 20, (12,), generator=gen)  # repeats are likely
    features = F.normalize(torch.randn(12, 5, generator=gen), dim=1)
    expected = oracles.bank_update_oracle(bank.memory, indices, features, bank.momentum)
    bank.update(indices, features)
    assert torch.allclose(bank.memory.double(), expected, atol=1e-6)
    touched = torch.zeros(20, dtype=torch.bool)
    touched[indices] = True
    assert torch.allclose(bank.memory[touched].norm(dim=1), torch.ones(int(touched.sum())), atol=1e-6)


def test_repeated_index_last_occurrence_wins_from_the_old_row():
    bank = MemoryBank.from_memory(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), momentum=0.5)
    bank.update(torch.tensor([0, 1, 0]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
    # row 0: last occurrence f = (-1, 0) blended with the OLD row (1, 0) gives (0, 0) -> normalise(0) = 0
    assert torch.equal(bank.memory[0], torch.zeros(2))
    assert torch.allclose(bank.memory[1], F.normalize(torch.tensor([0.5, 0.5]), dim=0))


def test_update_ignores_the_graph_of_the_features():
    bank = MemoryBank(10, 4, generator=torch.Generator().manual_seed(2))
    features = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    bank.update(torch.tensor([1, 2, 3]), features)
    assert not bank.memory.requires_grad and bank.memory.grad_fn is None


def test_from_memory_copies_and_round_trips_the_state_dict():
    source = MemoryBank(15, 4, generator=torch.Generator().manual_seed(5))
    copy = MemoryBank.from_memory(source.memory.double(), momentum=0.3)
    assert copy.memory.dtype == torch.float32 and torch.equal(copy.memory, source.memory)
    assert copy.momentum == 0.3 and copy.num_items == 15 and copy.dim == 4
    copy.memory[0] = 0.0
    assert not torch.equal(copy.memory, source.memory)  # no aliasing
    fresh = MemoryBank(15, 4)
    fresh.load_state_dict(source.state_dict())
    assert torch.equal(fresh.memory, source.memory)
    with pytest.raises(ValueError, match="2-D"):
        MemoryBank.from_memory(torch.zeros(3))
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank.from_memory(torch.zeros(3, 2), momentum=-0.1)
