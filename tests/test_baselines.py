"""Baselines: centred pixels against a brute-force loop; the random-init backbone is deterministic by seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY, assert_error_line
from isl_cli.data.store import Split, save_dataset
from isl_cli.engine.baselines import centred_pixels, pixel_baseline, pixel_mean, random_backbone, random_init_baseline
from isl_cli.models.spec import BackboneSpec
from isl_cli.engine.embedding import embed
from isl_cli.engine.features_file import load_train_test

CPU = torch.device("cpu")


def _handmade(folder: Path) -> Path:
    """3 classes of 2x2 RGB images on a large common offset, 12 (8 of class 0) + 6 images.

    Uncentred, every pair of images has a cosine near 1, so with all 12 keys voting
    the weights are nearly equal and the large class wins every vote; centred, the
    class patterns decide.
    """
    gen = torch.Generator().manual_seed(5)
    patterns = torch.tensor([[30, -30, 0, 0], [0, 30, -30, 0], [0, 0, 30, -30]], dtype=torch.float32)  # (3, 4)

    def make(labels: torch.Tensor, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(labels)
        pixels = offset + patterns[labels].repeat(1, 3) + torch.randint(-12, 13, (count, 12), generator=gen)  # (n, 12)
        return pixels.clamp(0, 255).to(torch.uint8).view(count, 3, 2, 2), labels

    train_images, train_labels = make(torch.tensor([0] * 8 + [1, 2] * 2), 200.0)
    test_images, test_labels = make(torch.arange(6) % 3, 180.0)  # another offset: only the TRAINING mean is used
    classes = ["a", "b", "c"]
    train = Split(images=train_images, labels=train_labels, classes=classes, name="handmade", split="train")
    test = Split(images=test_images, labels=test_labels, classes=classes, name="handmade", split="test")
    save_dataset(folder, train, test)
    return folder


def _oracle_vectors(images: torch.Tensor, mean: list[float] | None) -> list[list[float]]:
    out = []
    for image in images:
        values = [float(v) for v in image.flatten().tolist()]
        if mean is not None:
            values = [v - m for v, m in zip(values, mean)]
        norm = math.sqrt(sum(v * v for v in values))
        out.append([v / norm for v in values] if norm > 0 else values)
    return out


def _oracle_knn(queries, query_labels, keys, key_labels, k: int, temperature: float) -> tuple[float, float]:
    """Weighted kNN by plain loops: (top-1 %, top-5 %), ties by lower index / lower class."""
    num_classes = max(key_labels) + 1
    top1 = top5 = 0
    for q, truth in zip(queries, query_labels):
        sims = [sum(a * b for a, b in zip(q, key)) for key in keys]
        order = sorted(range(len(keys)), key=lambda j: (-sims[j], j))[:k]
        scores = [0.0] * num_classes
        for j in order:
            scores[key_labels[j]] += math.exp(sims[j] / temperature)
        ranked = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        top1 += ranked[0] == truth
        top5 += truth in ranked[:5]
    return 100.0 * top1 / len(queries), 100.0 * top5 / len(queries)


def test_centred_pixels_match_a_brute_force_loop(tmp_path):
    data = _handmade(tmp_path / "handmade")
    train, test, _ = load_train_test(data)
    n = len(train)
    mean = [sum(float(train.images[i].flatten()[p]) for i in range(n)) / n for p in range(12)]
    assert torch.allclose(pixel_mean(train.images, chunk=5), torch.tensor(mean), atol=1e-5)
    engine_test = centred_pixels(test.images, pixel_mean(train.images), chunk=4)  # (6, 12)
    assert torch.allclose(engine_test, torch.tensor(_oracle_vectors(test.images, mean)), atol=1e-6)

    keys, queries = _oracle_vectors(train.images, mean), _oracle_vectors(test.images, mean)
    report = pixel_baseline(data, [1, 3, 12], 0.1, CPU)
    assert report.scored and report.source == "pixels"
    for row in report.results:
        expected = _oracle_knn(queries, test.labels.tolist(), keys, train.labels.tolist(), row["k"], 0.1)
        assert (row["top1"], row["top5"]) == pytest.approx(expected)
    # the test is able to fail: without centring, every vote of all 12 keys goes to the large class
    raw = _oracle_knn(_oracle_vectors(test.images, None), test.labels.tolist(),
                      _oracle_vectors(train.images, None), train.labels.tolist(), 12, 0.1)
    assert [row["top1"] for row in report.results] == [100.0, 100.0, 100.0] and raw[0] < 50.0


def test_eval_knn_cli_scores_the_pixel_baseline_like_the_engine(tmp_path, cli):
    data = _handmade(tmp_path / "handmade")
    result = cli("eval-knn", "--baseline", "pixels", "--data", data, "--k", "3", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["source"] == "pixels" and record["checkpoint"] is None
    assert record["results"] == pixel_baseline(data, [3], 0.1, CPU).results


def test_random_init_features_are_deterministic_by_seed(tiny_data):
    spec = BackboneSpec(arch="resnet18", variant="cifar", width=0.0625, low_dim=16, image_size=32,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    train, _, _ = load_train_test(tiny_data)
    before = torch.get_rng_state()
    feats = [embed(random_backbone(spec, seed, CPU), train, spec, device=CPU) for seed in (0, 0, 1)]  # (N, D) each
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left alone
    assert torch.equal(feats[0], feats[1])
    assert not torch.allclose(feats[0], feats[2], atol=1e-3)
    first = random_init_baseline(tiny_data, [5, 20], 0.1, CPU, spec=spec, seed=0, progress=False)
    again = random_init_baseline(tiny_data, [5, 20], 0.1, CPU, spec=spec, seed=0, progress=False)
    assert first.scored and first.results == again.results
    assert first.details["seed"] == 0 and first.details["width"] == 0.0625


def test_random_baseline_takes_the_checkpoint_backbone_and_its_round0_start(tiny_data, tmp_path, cli):
    """With a CHECKPOINT, the random baseline is the network train-features started from (same seed)."""
    from isl_cli.engine.features import FeaturesJob
    from isl_cli.engine.features_state import fresh
    from isl_cli.config import FeaturesConfig

    out = tmp_path / "r0.safetensors"
    trained = cli("train-features", "--data", tiny_data, "--out", out, "--epochs", "1", "--seed", "4", *TINY)
    assert trained.exit_code == 0, trained.output
    result = cli("eval-knn", out, "--baseline", "random", "--k", "5", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)["details"]
    assert (details["width"], details["low_dim"], details["seed"]) == (0.0625, 16, 4)
    cfg = FeaturesConfig(width=0.0625, low_dim=16, seed=4)
    state = fresh(FeaturesJob(config=cfg, data_dir=tiny_data, out=tmp_path / "x.safetensors", device=CPU),
                         load_train_test(tiny_data)[0], "")
    spec = BackboneSpec.from_meta(details | {"image_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3})
    ours = random_backbone(spec, 4, CPU).state_dict()
    for key, value in state.backbone.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_baseline_bad_input_is_one_line(tiny_data, tmp_path, cli):
    assert_error_line(cli("eval-knn", "--device", "cpu"), "CHECKPOINT", "--baseline")
    assert_error_line(cli("eval-knn", "--baseline", "pixels", "--data", tiny_data, "--width", "0.5"),
                      "--width", "--baseline random")
    assert_error_line(cli("eval-knn", "--baseline", "pixel", "--data", tiny_data), "pixels, random")
    assert_error_line(cli("eval-knn", "--baseline", "pixels", "--data", tiny_data, "--recompute"), "--recompute")
    assert_error_line(cli("eval-knn", "--baseline", "pixels"), "--data")
    files = tmp_path / "files"
    labels = torch.tensor([0, 1])
    save_dataset(files, Split(paths=["a.png", "b.png"], image_root=str(tmp_path), labels=labels, classes=["x", "y"]),
                 Split(paths=["c.png", "d.png"], image_root=str(tmp_path), labels=labels, classes=["x", "y"],
                       split="test"))
    assert_error_line(cli("eval-knn", "--baseline", "pixels", "--data", files), "as files", "tensors")
