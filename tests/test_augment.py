"""Batch augmentation against torchvision's functional ops, image by image.

Tolerance: outputs are compared after normalisation (values divided by ~0.2),
with an absolute tolerance of 5e-5 (about 1e-5 in [0, 1] pixel units). The
observed differences are ~4e-6: float rounding in the resampling matmuls, in
blend factors, and in the closed-form HSV->RGB used for hue.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats
from torchvision.transforms import RandomResizedCrop

from isl_cli.data.augment import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    BatchAugment,
    adjust_hue,
    normalize,
    resized_crop,
    sample_crop_boxes,
)

ATOL = 5e-5
OP_NAMES = ("brightness", "contrast", "saturation", "hue")


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g)


def _reference(image: torch.Tensor, p: AugmentParams, i: int, size: int, mean, std, grayscale_first: bool):
    """torchvision's functional ops on one float image, in that image's order."""
    x = image.to(torch.float32) / 255.0
    x = TF.resized_crop(x, int(p.crop_top[i]), int(p.crop_left[i]), int(p.crop_height[i]), int(p.crop_width[i]),
                        [size, size])
    if p.flip[i]:
        x = TF.hflip(x)
    if grayscale_first and p.grayscale[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    ops = {
        0: lambda t: TF.adjust_brightness(t, float(p.brightness[i])),
        1: lambda t: TF.adjust_contrast(t, float(p.contrast[i])),
        2: lambda t: TF.adjust_saturation(t, float(p.saturation[i])),
        3: lambda t: TF.adjust_hue(t, float(p.hue[i])),
    }
    for op in p.order[i].tolist():
        x = ops[op](x)
    if not grayscale_first and p.grayscale[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return TF.normalize(x, list(mean), list(std))


def _with_all_orders(p: AugmentParams) -> AugmentParams:
    """Give image k the k-th of the 24 op orders, and alternate grayscale and flip."""
    n = len(p)
    perms = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.int64)  # (24, 4)
    alternate = torch.arange(n) % 2 == 0  # (n,)
    return dataclasses.replace(
        p, order=perms[torch.arange(n) % 24], grayscale=alternate, flip=torch.arange(n) % 3 == 0)


@pytest.mark.parametrize(
    "n, height, width, size, hflip, grayscale_first",
    [
        (24, 32, 32, 32, False, False),  # the 32x32 recipe, every op order once
        (24, 40, 40, 32, True, True),  # crops larger than the output: antialiased shrink
        (1, 40, 40, 32, False, False),  # a single image
        (6, 20, 36, 16, True, False),  # non-square input
    ],
)
def test_apply_matches_torchvision_per_image(n, height, width, size, hflip, grayscale_first):
    images = _images(n, height, width)
    aug = BatchAugment(size, CIFAR_MEAN, CIFAR_STD, hflip=hflip, grayscale_first=grayscale_first)
    params = aug.sample(n, height, width, torch.Generator().manual_seed(1))
    params = _with_all_orders(params)
    out = aug.apply(images, params)
    assert out.shape == (n, 3, size, size) and out.dtype == torch.float32
    for i in range(n):
        expected = _reference(images[i], params, i, size, CIFAR_MEAN, CIFAR_STD, grayscale_first)
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


def test_large_crops_are_shrunk_with_antialiasing():
    """A 40x40 -> 32 batch must use the antialiased kernel, not plain bilinear."""
    images = _images(8, 40, 40)
    x = images.float() / 255.0
    full = torch.zeros(8, dtype=torch.int64)
    side = torch.full((8,), 40, dtype=torch.int64)
    ours = resized_crop(x, full, full, side, side, 32)  # (8, 3, 32, 32)
    antialiased = TF.resize(x, [32, 32], antialias=True)
    plain = TF.resize(x, [32, 32], antialias=False)
    torch.testing.assert_close(ours, antialiased, atol=1e-5, rtol=0)
    assert (ours - plain).abs().max() > 1e-2


def test_hue_matches_torchvision_including_gray_and_saturated_pixels():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 6, 6, generator=g)
    x[:, :, 0, 0] = 0.5  # gray pixel (max == min)
    x[:, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # pure red
    x[:, :, 0, 2] = torch.tensor([0.2, 0.9, 0.9])  # ties between max channels
    x[:, :, 0, 3] = 0.0
    hue = torch.linspace(-0.5, 0.5, 8)
    ours = adjust_hue(x, hue)
    for i in range(8):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], float(hue[i])), atol=1e-5, rtol=0)


def test_no_jitter_only_crops_grayscales_and_normalises():
    images = _images(5, 32, 32)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, jitter=0.0)
    params = aug.sample(5, 32, 32, torch.Generator().manual_seed(2))
    assert torch.all(params.brightness == 1) and torch.all(params.hue == 0)
    out = aug.apply(images, params)
    for i in range(5):
        x = TF.resized_crop(images[i].float() / 255, int(params.crop_top[i]), int(params.crop_left[i]),
                            int(params.crop_height[i]), int(params.crop_width[i]), [32, 32])
        if params.grayscale[i]:
            x = TF.rgb_to_grayscale(x, 3)
        torch.testing.assert_close(out[i], TF.normalize(x, list(CIFAR_MEAN), list(CIFAR_STD)), atol=ATOL, rtol=0)


def test_hue_off_skips_hue_and_keeps_blend_order():
    images = _images(24, 16, 16)
    aug = BatchAugment(16, IMAGENET_MEAN, IMAGENET_STD, jitter=(0.4, 0.4, 0.4, 0.0))
    params = _with_all_orders(aug.sample(24, 16, 16, torch.Generator().manual_seed(4)))
    assert torch.all(params.hue == 0)
    out = aug.apply(images, params)
    for i in range(24):
        expected = _reference(images[i], params, i, 16, IMAGENET_MEAN, IMAGENET_STD, False)
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


def test_per_image_choices_are_exact_selections():
    """Grayscale, flip and masked-off steps are exact (0/1 weights, mirrored sample positions), not blends."""
    images = _images(24, 40, 40)
    unit = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # no normalisation: channels stay comparable
    gray_aug = BatchAugment(32, *unit, grayscale_p=1.0)
    out = gray_aug(images, torch.Generator().manual_seed(13))  # (24, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])

    pixelwise = BatchAugment(32, *unit, jitter=(0.4, 0.0, 0.4, 0.4), grayscale_p=0.5, hflip=True)  # no image mean
    params = pixelwise.sample(24, 40, 40, torch.Generator().manual_seed(14))
    flipped = pixelwise.apply(images, dataclasses.replace(params, flip=torch.ones(24, dtype=torch.bool)))
    plain = pixelwise.apply(images, dataclasses.replace(params, flip=torch.zeros(24, dtype=torch.bool)))
    assert torch.equal(flipped, plain.flip(-1))


def _torchvision_crop_from_uniforms(u_area, u_ratio, u_top, u_left, height, width, scale, ratio):
    """torchvision's get_params loop, fed with given uniforms instead of its RNG."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for attempt in range(len(u_area)):
        target_area = height * width * float(scale[0] + (scale[1] - scale[0]) * u_area[attempt])
        aspect = float(torch.exp(torch.tensor(log_lo + (log_hi - log_lo) * u_ratio[attempt], dtype=torch.float32)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("height, width", [(32, 32), (12, 64), (5, 80), (40, 24)])
def test_crop_sampler_equals_torchvision_loop_on_same_uniforms(height, width):
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    g = torch.Generator().manual_seed(5)
    n = 300
    u_area, u_ratio = torch.rand(n, 10, generator=g), torch.rand(n, 10, generator=g)
    u_top, u_left = torch.rand(n, generator=g), torch.rand(n, generator=g)
    area_fraction = scale[0] + (scale[1] - scale[0]) * u_area  # (n, 10) float32, as sample() builds it
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    log_ratio = log_lo + (log_hi - log_lo) * u_ratio
    top, left, h, w = sample_crop_boxes(area_fraction, log_ratio, u_top, u_left, height, width, ratio)
    for i in range(n):
        expected = _torchvision_crop_from_uniforms(
            u_area[i].tolist(), u_ratio[i].tolist(), float(u_top[i]), float(u_left[i]), height, width, scale, ratio)
        assert (int(top[i]), int(left[i]), int(h[i]), int(w[i])) == expected, i


def test_crop_sampler_boxes_are_valid_and_within_scale_and_ratio():
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    p = aug.sample(4000, 32, 32, torch.Generator().manual_seed(6))
    h, w, top, left = p.crop_height, p.crop_width, p.crop_top, p.crop_left
    assert torch.all((h > 0) & (h <= 32) & (w > 0) & (w <= 32))
    assert torch.all((top >= 0) & (top + h <= 32) & (left >= 0) & (left + w <= 32))
    area = (h * w).float() / 1024
    assert area.min() >= 0.15 and area.max() <= 1.0  # scale 0.2-1.0 up to integer rounding
    aspect = w.float() / h.float()
    assert aspect.min() >= 0.6 and aspect.max() <= 1.6  # ratio 3/4-4/3 up to rounding
    assert top.max() > 10 and left.max() > 10  # placements spread over the image


def _torchvision_boxes(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    image = torch.zeros(3, height, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        boxes = [RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    return torch.tensor(boxes, dtype=torch.float64)  # (n, 4) top, left, h, w


@pytest.mark.parametrize("height, width", [(32, 32), (12, 64)])
def test_crop_sampler_distribution_matches_torchvision_get_params(height, width):
    n = 3000
    theirs = _torchvision_boxes(n, height, width, seed=7)  # (n, 4)
    p = BatchAugment(32, CIFAR_MEAN, CIFAR_STD).sample(n, height, width, torch.Generator().manual_seed(8))
    ours = torch.stack([p.crop_top, p.crop_left, p.crop_height, p.crop_width], dim=1).double()  # (n, 4)
    features = {
        "area": lambda b: b[:, 2] * b[:, 3],
        "aspect": lambda b: b[:, 3] / b[:, 2],
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
    }
    for name, feature in features.items():
        result = stats.ks_2samp(feature(ours).numpy(), feature(theirs).numpy(), method="asymp")
        assert result.pvalue > 1e-3, (name, result)
    fallback = torch.tensor([0, 0, height, width], dtype=torch.float64)
    if height != width:  # a wide image: many draws fail all ten attempts
        centre_w = round(height * 4 / 3)
        fallback = torch.tensor([0, (width - centre_w) // 2, height, centre_w], dtype=torch.float64)
    ours_fb = (ours == fallback).all(1).double().mean()
    theirs_fb = (theirs == fallback).all(1).double().mean()
    sigma = math.sqrt(max(float(theirs_fb) * (1 - float(theirs_fb)), 1e-4) / n)
    assert abs(float(ours_fb) - float(theirs_fb)) < 5 * sigma + 1e-3


def test_colour_parameters_follow_colorjitter_and_grayscale_distributions():
    n = 5000
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, hflip=True)
    p = aug.sample(n, 32, 32, torch.Generator().manual_seed(9))
    for name in ("brightness", "contrast", "saturation"):
        values = getattr(p, name)
        assert values.min() >= 0.6 and values.max() <= 1.4 and abs(float(values.mean()) - 1.0) < 0.02
    assert p.hue.min() >= -0.4 and p.hue.max() <= 0.4 and abs(float(p.hue.mean())) < 0.02
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    assert len(torch.unique(p.order, dim=0)) == 24
    first_counts = torch.bincount(p.order[:, 0], minlength=4).double() / n
    assert torch.all((first_counts - 0.25).abs() < 0.03)
    assert abs(float(p.grayscale.double().mean()) - 0.2) < 0.03
    assert abs(float(p.flip.double().mean()) - 0.5) < 0.03
    no_flip = BatchAugment(32, CIFAR_MEAN, CIFAR_STD).sample(200, 32, 32, torch.Generator().manual_seed(9))
    assert not no_flip.flip.any()


def test_same_seed_same_batch_and_other_seed_differs():
    images = _images(16, 32, 32)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    a = aug(images, torch.Generator().manual_seed(11))
    b = aug(images, torch.Generator().manual_seed(11))
    c = aug(images, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_output_shape_dtype_device_and_parameter_dtypes():
    images = _images(3, 40, 40)
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    params = aug.sample(3, 40, 40, torch.Generator().manual_seed(0))
    assert params.crop_top.dtype == torch.int64 and params.order.shape == (3, 4)
    assert params.grayscale.dtype == torch.bool and params.hue.dtype == torch.float32
    out = aug.apply(images, params)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32 and out.device == images.device
    assert torch.isfinite(out).all()
    assert len(params.rows(1, 3)) == 2 and torch.equal(params.rows(1, 3).hue, params.hue[1:3])


def test_normalize_matches_torchvision_with_and_without_resize():
    images = _images(4, 40, 40)
    x = images.float() / 255.0
    same = normalize(images, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(same, TF.normalize(x, list(CIFAR_MEAN), list(CIFAR_STD)), atol=1e-6, rtol=0)
    assert torch.equal(normalize(images, CIFAR_MEAN, CIFAR_STD, output_size=40), same)
    for size in (32, 48):
        resized = TF.normalize(TF.resize(x, [size, size], antialias=True), list(CIFAR_MEAN), list(CIFAR_STD))
        ours = normalize(images, CIFAR_MEAN, CIFAR_STD, output_size=size)
        assert ours.shape == (4, 3, size, size)
        torch.testing.assert_close(ours, resized, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(output_size=0),
        dict(scale=(0.5, 0.2)),
        dict(scale=(0.2, 1.5)),
        dict(ratio=(0.0, 1.0)),
        dict(jitter=(0.4, 0.4, 0.4, 0.6)),
        dict(jitter=-0.1),
        dict(grayscale_p=1.5),
        dict(std=(0.2, 0.0, 0.2)),
        dict(mean=(0.5, 0.5)),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs):
    args = dict(output_size=32, mean=CIFAR_MEAN, std=CIFAR_STD) | kwargs
    with pytest.raises(ValueError):
        BatchAugment(**args)


def test_apply_and_sample_reject_bad_inputs():
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    params = aug.sample(2, 32, 32, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        aug.apply(torch.rand(2, 3, 32, 32), params)  # float, not uint8
    with pytest.raises(ValueError):
        aug.apply(_images(3, 32, 32), params)  # 3 images, 2 rows
    with pytest.raises(ValueError):
        aug.sample(2, 32, 32, None)  # type: ignore[arg-type]


def test_apply_stays_on_the_images_device_without_reading_values_back():
    """On the meta device any host read (.item(), .tolist(), bool()) would raise."""
    images = _images(4, 40, 40).to("meta")
    aug = BatchAugment(32, CIFAR_MEAN, CIFAR_STD, hflip=True)
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    assert normalize(images, CIFAR_MEAN, CIFAR_STD, output_size=32).device.type == "meta"
