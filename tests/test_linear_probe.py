"""The linear probe's maths (isl_cli.linear_probe) and the pooled features of every backbone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isl_cli.linear_probe import (
    LinearClassifier,
    ProbeSettings,
    Standardizer,
    folded_logits,
    linear_probe,
    score,
    train_linear_probe,
)
from isl_cli.models.registry import ARCHS, build_backbone
from isl_cli.models.pooled import PooledFeatures

pytestmark = pytest.mark.usefixtures("one_thread")


def separable(n: int, dim: int = 8, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well separated, offset, unevenly scaled clusters: linearly separable, and standardisation matters."""
    g = torch.Generator().manual_seed(seed)
    centers = 6 * torch.randn(classes, dim, generator=g)  # (C, D)
    labels = torch.randint(0, classes, (n,), generator=g)  # (n,)
    scale = torch.logspace(-2, 2, dim)  # (D,)
    features = (centers[labels] + 0.3 * torch.randn(n, dim, generator=g) + 5) * scale  # (n, D)
    return features, labels


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_separable_features_reach_100_percent(solver):
    x, y = separable(400)
    settings = ProbeSettings(solver=solver, sgd_batch_size=32, sgd_epochs=10)
    result, top1, top5 = linear_probe(x[:300], y[:300], x[300:], y[300:], 5, settings)
    assert result.solver == solver
    assert top1 == 100.0 and top5 == 100.0
    assert [row["weight_decay"] for row in result.sweep] == sorted(settings.weight_decays, reverse=True)
    assert result.num_val == 60 and result.num_fit == 240


def test_random_labels_stay_near_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 32, generator=g)
    y = torch.randint(0, 10, (3000,), generator=g)
    _, top1, top5 = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], 10)
    assert 5.0 < top1 < 15.0  # chance 10%; 1,000 test rows: sd ~1%
    assert 40.0 < top5 < 60.0


class RecordedLabels(torch.Tensor):
    """A label tensor that notes in LOG every torch operation that touches it (attribute reads included)."""

    LOG: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.LOG.append("test labels read")
        return super().__torch_function__(func, types, args, kwargs or {})


class RecordingProgress:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self, description: str, total: int) -> None:
        self.log.append(f"start {description}")

    def advance(self) -> None:
        pass

    def finish(self) -> None:
        self.log.append("fit done")


def test_test_labels_are_read_only_after_the_sweep_and_the_final_fit():
    x, y = separable(300)
    log = RecordedLabels.LOG
    spied = y[200:].clone().as_subclass(RecordedLabels)
    log.clear()
    result, top1, _ = linear_probe(x[:200], y[:200], x[200:], spied, 5, progress=RecordingProgress(log))
    fits = [i for i, entry in enumerate(log) if entry == "fit done"]
    reads = [i for i, entry in enumerate(log) if entry == "test labels read"]
    assert len(fits) == len(ProbeSettings().weight_decays) + 1  # the sweep, then all training rows
    assert reads, "the final score must read the test labels"
    assert min(reads) > max(fits)
    assert top1 == 100.0


def test_changing_test_labels_changes_neither_the_chosen_decay_nor_the_weights():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 16, generator=g)
    y = (x[:, :3].argmax(1) + (torch.rand(500, generator=g) < 0.3).long()) % 4  # (500,) noisy: the sweep matters
    first, top1_a, _ = linear_probe(x[:400], y[:400], x[400:], y[400:], 4)
    other_labels = torch.randint(0, 4, (100,), generator=g)
    second, top1_b, _ = linear_probe(x[:400], y[:400], x[400:], other_labels, 4)
    assert first.weight_decay == second.weight_decay and first.sweep == second.sweep
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert torch.equal(first.classifier.bias, second.classifier.bias)
    assert top1_a != top1_b  # the labels did change the score, and only the score


def test_deterministic_by_seed_and_features_untouched():
    x, y = separable(200)
    before = x.clone()
    for solver in ("lbfgs", "sgd"):
        runs = [train_linear_probe(x, y, 5, ProbeSettings(solver=solver, seed=s, sgd_epochs=2)) for s in (3, 3, 4)]
        assert torch.equal(runs[0].classifier.weight, runs[1].classifier.weight)
        assert runs[0].sweep == runs[1].sweep
        assert not torch.equal(runs[0].classifier.weight, runs[2].classifier.weight)  # another held-out split
    assert torch.equal(x, before)


def test_standardizer_and_folded_logits_match_explicit_standardisation():
    x, _ = separable(100)
    stats = Standardizer.fit(x, chunk_rows=7)
    assert torch.allclose(stats.mean, x.mean(0), rtol=1e-5)
    assert torch.allclose(stats.std, x.std(0, unbiased=False), rtol=1e-4)
    w, b = torch.randn(5, x.shape[1]), torch.randn(5)
    explicit = ((x - x.mean(0)) / x.std(0, unbiased=False)) @ w.T + b  # (n, C)
    assert torch.allclose(folded_logits(x, w, b, stats), explicit, rtol=1e-4, atol=1e-3)
    constant = torch.ones(10, 3)
    assert torch.equal(Standardizer.fit(constant).std, torch.ones(3))  # no division by zero


def test_lbfgs_minimises_the_stated_objective():
    """At the L-BFGS solution the gradient of mean CE + wd/2 ||W||^2 (standardised features) vanishes."""
    x, y = separable(150, classes=3)
    y = torch.where(torch.rand(150, generator=torch.Generator().manual_seed(5)) < 0.2, (y + 1) % 3, y)  # not separable
    settings = ProbeSettings(weight_decays=(1e-2,))
    result = train_linear_probe(x, y, 3, settings)
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    w = result.classifier.weight.clone().requires_grad_(True)
    b = result.classifier.bias.clone().requires_grad_(True)
    loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * 1e-2 * w.square().sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3


def test_top5_counts_and_fewer_than_five_classes():
    stats = Standardizer(mean=torch.zeros(2), std=torch.ones(2))
    classifier = LinearClassifier(stats, weight=torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]),
                                  bias=torch.zeros(3))
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 1.0]])
    top1, top5 = score(classifier, x, torch.tensor([0, 0, 2]))
    assert top1 == pytest.approx(100 / 3) and top5 == 100.0  # 3 classes: top-5 is top-3


def test_bad_inputs_raise_value_error():
    x, y = separable(20)
    with pytest.raises(ValueError, match="labels must lie"):
        train_linear_probe(x, y, 2)
    with pytest.raises(ValueError, match="at least 2"):
        train_linear_probe(x[:1], y[:1], 5)
    with pytest.raises(ValueError, match="solver"):
        train_linear_probe(x, y, 5, ProbeSettings(solver="adam"))
    with pytest.raises(ValueError, match="val_fraction"):
        train_linear_probe(x, y, 5, ProbeSettings(val_fraction=1.0))


# ---------- pooled features of every backbone ----------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_pooled_features_are_the_input_of_the_final_linear_layer(arch, variant):
    torch.manual_seed(0)
    width = 0.125 if (arch != "alexnet" and variant == "cifar") else 1.0
    model = build_backbone(arch, variant=variant, low_dim=16, width=width).eval()
    side = {"alexnet": 227 if variant == "imagenet" else 32}.get(arch, 32 if variant == "cifar" else 64)
    images = torch.randn(2, 3, side, side)
    pooled = PooledFeatures(model).eval()
    with torch.no_grad():
        got = pooled(images)  # (2, C)
        if arch == "alexnet":
            expected = model.head[:6](torch.flatten(model.features(images), 1))  # after the 2nd BN + ReLU
            head = model.head[6]
        elif variant == "cifar":
            x = model.relu(model.bn1(model.conv1(images)))
            expected = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(x))))), 1)
            head = model.fc
        else:
            x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
            expected = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(x))))), 1)
            head = model.fc
        assert pooled.dim == head.in_features == got.shape[1]
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(head(got), model(images), atol=1e-5)  # the head maps them to the embedding
    assert not model.fc._forward_pre_hooks if hasattr(model, "fc") else not model.head[6]._forward_pre_hooks
