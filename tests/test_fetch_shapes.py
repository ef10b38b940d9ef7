"""The synthetic shapes data set: deterministic, balanced, 10 distinct shapes."""

from __future__ import annotations

import itertools

import pytest

import torch
from archive_builders import clean_env, run_isl  # noqa: F401  (clean_env is an autouse fixture)

from isl_cli.data.sources.shapes import (
    DEFAULT_STYLE,
    SDFS,
    SHAPE_CLASSES,
    ShapeStyle,
    balanced_labels,
    generate_shapes,
    hsv_to_rgb,
)
from isl_cli.data.store import load_split


def test_same_seed_same_images_other_seed_or_split_other_images():
    a_images, a_labels = generate_shapes(40, seed=3)
    b_images, b_labels = generate_shapes(40, seed=3)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert not torch.equal(a_images, generate_shapes(40, seed=4)[0])
    assert not torch.equal(a_images, generate_shapes(40, seed=3, split="test")[0])


def test_classes_are_balanced():
    _, labels = generate_shapes(53, seed=0)
    counts = torch.bincount(labels, minlength=10)
    assert counts.sum() == 53 and counts.min() == 5 and counts.max() == 6
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(torch.bincount(balanced_labels(1000, 10, gen)), torch.full((10,), 100))


def test_images_vary_within_a_class():
    images, labels = generate_shapes(200, seed=1)
    circles = images[labels == 0].float()  # (k, 3, 32, 32)
    colour = circles.mean(dim=(2, 3))  # (k, 3)
    assert colour.std(dim=0).min() > 20  # backgrounds and colours differ a lot
    assert images.dtype == torch.uint8 and images.shape == (200, 3, 32, 32)


def test_the_ten_shapes_differ_in_outline():
    """At a fixed pose every pair of shape masks differs clearly (IoU below 0.85)."""
    coords = torch.linspace(-1.6, 1.6, 161)
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # (G, G)
    masks = [sdf(x, y) < 0 for sdf in SDFS]  # 10 x (G, G)
    assert len(masks) == len(SHAPE_CLASSES) == 10
    for (i, a), (j, b) in itertools.combinations(enumerate(masks), 2):
        iou = (a & b).sum() / (a | b).sum()
        assert iou < 0.85, (SHAPE_CLASSES[i], SHAPE_CLASSES[j], float(iou))
    for mask in masks:
        assert mask.any() and not mask[0].any() and not mask[-1].any()  # inside somewhere, not at the border


def test_shape_colour_contrasts_with_the_background():
    hues = torch.linspace(0, 1, 721)[:-1]  # (n,) every hue
    colours = hsv_to_rgb(hues, DEFAULT_STYLE.fg_saturation, DEFAULT_STYLE.fg_value)  # (n, 3)
    assert colours.min() >= 0 and colours.max() <= 1
    assert torch.allclose(hsv_to_rgb(torch.tensor([0.0, 1 / 3, 2 / 3]), 1.0, 1.0), torch.eye(3))  # red, green, blue
    for grey in DEFAULT_STYLE.background:  # the darkest and brightest background
        distance = (colours - grey).norm(dim=1)  # (n,)
        assert distance.min() >= 0.45


def test_other_image_sizes():
    images, _ = generate_shapes(10, seed=0, image_size=48)
    assert images.shape == (10, 3, 48, 48)


def test_cli_default_is_5000_train_1000_test(tmp_path):
    result = run_isl("fetch-data", "shapes", "--root", tmp_path)
    assert result.exit_code == 0, result.stderr
    train, test = load_split(tmp_path / "shapes", "train"), load_split(tmp_path / "shapes", "test")
    assert train.images.shape == (5000, 3, 32, 32) and test.images.shape == (1000, 3, 32, 32)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 500))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 100))
    assert train.classes == SHAPE_CLASSES and "5,000 / 1,000" in result.stdout


def test_style_is_validated_and_threads_are_restored():
    with pytest.raises(ValueError):
        ShapeStyle(radius=(9.0, 5.0))
    with pytest.raises(ValueError):
        ShapeStyle(fg_saturation=1.5)
    before = torch.get_num_threads()
    generate_shapes(5, seed=0)
    assert torch.get_num_threads() == before
    grey, _ = generate_shapes(20, seed=0, style=ShapeStyle(fg_saturation=0.0, noise=(0.0, 0.0)))
    assert (grey.max(dim=1).values.int() - grey.min(dim=1).values.int()).max() <= 1  # all grey: R = G = B
