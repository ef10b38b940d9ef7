"""benchmarks/neighbour_precision.py: the hand-made neighbours have the asked precision; the break-even rule."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "neighbour_precision.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("neighbour_precision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("precision", [1.0, 0.7, 0.3, 0.0])
def test_handmade_pairs_have_the_asked_precision(bench, precision):
    labels = torch.randint(0, 7, (4000,), generator=torch.Generator().manual_seed(1))  # (N,)
    labels[17] = 7  # a class of one image: its partners come from other classes
    pairs = bench.handmade_pairs(labels, precision, 3, torch.Generator().manual_seed(2))  # (3N, 2)
    assert pairs.shape == (12000, 2)
    assert torch.equal(pairs[:, 0], torch.arange(4000).repeat_interleave(3))
    assert bool((pairs[:, 0] != pairs[:, 1]).all()) and int(pairs.min()) >= 0 and int(pairs.max()) < 4000
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]  # (3N,)
    assert float(same.double().mean()) == pytest.approx(precision, abs=0.02)
    assert not bool(same[pairs[:, 0] == 17].any())
    # partners are spread: same-label ones over the class, the others over every other class
    assert len(torch.unique(pairs[:, 1])) > 0.8 * 4000 * (1 - math.exp(-3))  # 3 uniform draws per image


def test_chance_precision_is_the_share_of_same_label_pairs(bench):
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    expected = sum(int(labels[i] == labels[j]) for i, j in pairs) / len(pairs)
    assert bench.chance_precision(labels) == pytest.approx(expected)


def test_break_even_interpolates_the_highest_crossing(bench):
    value, text = bench.break_even([(0.1, -1.0), (0.4, -2.0), (0.6, 1.0), (0.8, 2.0), (1.0, 3.0)])
    assert value == pytest.approx(0.4 + 0.2 * 2 / 3) and "0.40" in text
    value, _ = bench.break_even([(0.1, 0.5), (0.4, -1.0), (1.0, 2.0)])  # helps at chance by luck: highest crossing
    assert value == pytest.approx(0.4 + 0.6 / 3)
    assert bench.break_even([(0.1, -1.0), (1.0, 0.0)])[0] is None
    value, text = bench.break_even([(0.1, 0.2), (1.0, 3.0)])
    assert value is None and "every precision" in text
