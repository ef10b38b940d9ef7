"""Training augmentation applied to whole batches of stored uint8 images on any device.

The recipe is the method's (docs/method.md section 4), with torchvision's semantics:
RandomResizedCrop(S, scale, ratio) -> ColorJitter(j, j, j, j) (the four ops in a
random order per image) -> RandomGrayscale(p) -> optional horizontal flip ->
Normalize(mean, std). Every random number is drawn on a CPU `torch.Generator`
(`BatchAugment.sample`), so a seed gives the same parameters on every device;
`BatchAugment.apply` then runs vectorised on the images' device: no PIL, no
per-image Python loop.

Fidelity to torchvision's functional tensor ops on a float image in [0, 1]:

* Crop + resize is a separable resampling with one weight matrix per image and
  axis (`(B, S, H)` and `(B, S, W)`), built with the kernel of torch's
  `interpolate(mode="bilinear", align_corners=False, antialias=True)`: a
  triangle filter whose support is widened by the shrink factor when the crop
  is larger than the output, normalised to sum 1, restricted to the crop box.
  When the crop is not larger than the output (always the case for 32x32 data
  and a 32x32 output) this is exactly bilinear interpolation with source
  coordinates clamped to the crop box; when it is larger (e.g. 40x40 -> 32)
  it is torchvision's antialiased downscale, not an alias-prone approximation.
  The product runs as two batched matmuls; if a caller enables TF32 matmuls
  on CUDA (`torch.set_float32_matmul_precision("high")`), the resampling
  inherits TF32 rounding (~1e-3 relative), which is harmless for augmentation.
* Brightness, contrast and saturation are blends with zeros, the per-image
  mean of the grayscale image, and the grayscale image, each clamped to [0, 1].
  Hue goes RGB -> HSV, shifts H, and back, as torchvision does.
* The random order is applied with per-image coefficients: blends before the
  hue step, one hue pass for the whole batch, blends after it (an image whose
  op at a step is masked off uses factor 1, an exact identity). All the steps'
  coefficients are computed at once, as (B, 1, 1, 1) columns.
* Per-image choices (masked blends, hue sector, random grayscale, flip) are
  arithmetic on exact 0/1 weights (`lerp`, products with signs, mirrored
  sample positions), never `torch.where` over pixels: the result is the same
  as selecting, bit for bit, and much cheaper on the CPU.

Differences from the reference (which jitters PIL uint8 images): no rounding
to 8 bits between the ops; that is the only intended difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
CROP_ATTEMPTS = 10
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class AugmentParams:
    """Per-image random parameters of one batch (all tensors have B rows).

    Attributes:
        crop_top, crop_left, crop_height, crop_width: (B,) int64 crop boxes.
        brightness, contrast, saturation: (B,) float32 blend factors.
        hue: (B,) float32 hue shift in turns, within [-0.5, 0.5].
        order: (B, 4) int64, a permutation of 0..3 per image
            (0 brightness, 1 contrast, 2 saturation, 3 hue).
        grayscale: (B,) bool, convert to 3-channel grayscale.
        flip: (B,) bool, mirror horizontally.
    """

    crop_top: Tensor
    crop_left: Tensor
    crop_height: Tensor
    crop_width: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor
    grayscale: Tensor
    flip: Tensor

    def __len__(self) -> int:
        return len(self.crop_top)

    def rows(self, start: int, end: int) -> "AugmentParams":
        """The parameters of images start..end-1 (views, no copy)."""
        return AugmentParams(**{f.name: getattr(self, f.name)[start:end] for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "AugmentParams":
        """The same parameters on another device."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        return AugmentParams(**moved)


def _check_pair(name: str, pair: Sequence[float]) -> tuple[float, float]:
    if len(pair) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {pair!r}")
    low, high = float(pair[0]), float(pair[1])
    if not (0 < low <= high) or not math.isfinite(high):
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {pair!r}")
    return low, high


def _check_stats(name: str, values: Sequence[float], positive: bool) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (one per channel), got {values!r}")
    out = tuple(float(v) for v in values)
    if positive and min(out) <= 0:
        raise ValueError(f"{name} values must be positive, got {values!r}")
    return out  # type: ignore[return-value]


def sample_crop_boxes(
    area_fraction: Tensor, log_ratio: Tensor, top_uniform: Tensor, left_uniform: Tensor,
    height: int, width: int, ratio: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's RandomResizedCrop.get_params, for all images and attempts at once.

    Args:
        area_fraction: (B, A) float32 target area fractions, one per attempt.
        log_ratio: (B, A) float32 log aspect ratios (width / height).
        top_uniform, left_uniform: (B,) float32 uniforms in [0, 1) that place the box.
        height, width: image size.
        ratio: (low, high) aspect-ratio bounds, used by the central-crop fallback.

    Returns:
        top, left, crop height, crop width: four (B,) int64 tensors. Each image
        takes its first attempt with 0 < w <= width and 0 < h <= height, placed
        uniformly; images with no valid attempt take the central crop with the
        aspect ratio clamped to `ratio`.
    """
    area = area_fraction.double() * float(height * width)  # (B, A)
    aspect = torch.exp(log_ratio).double()  # (B, A), exp in float32 as torchvision
    crop_w = torch.round(torch.sqrt(area * aspect)).long()  # (B, A)
    crop_h = torch.round(torch.sqrt(area / aspect)).long()  # (B, A)
    valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)  # (B, A)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1) first valid attempt
    any_valid = valid.any(dim=1)  # (B,)
    h = crop_h.gather(1, first).squeeze(1)  # (B,)
    w = crop_w.gather(1, first).squeeze(1)  # (B,)
    top = torch.floor(top_uniform.double() * (height - h + 1)).long()  # (B,)
    left = torch.floor(left_uniform.double() * (width - w + 1)).long()  # (B,)
    top = torch.minimum(top, height - h)  # (B,) guard against u * n rounding up to n
    left = torch.minimum(left, width - w)  # (B,)

    fallback_h, fallback_w = _central_crop_size(height, width, ratio)
    fallback_top, fallback_left = (height - fallback_h) // 2, (width - fallback_w) // 2
    top = torch.where(any_valid, top, torch.full_like(top, fallback_top))  # (B,)
    left = torch.where(any_valid, left, torch.full_like(left, fallback_left))  # (B,)
    h = torch.where(any_valid, h, torch.full_like(h, fallback_h))  # (B,)
    w = torch.where(any_valid, w, torch.full_like(w, fallback_w))  # (B,)
    return top, left, h, w


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback box: the whole image, aspect ratio clamped to `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def resample_weights(start: Tensor, length: Tensor, in_size: int, out_size: int,
                     flip: Tensor | None = None) -> Tensor:
    """Per-image interpolation matrices for a crop along one axis, then resize.

    The kernel is torch's bilinear `interpolate` with `align_corners=False` and
    `antialias=True`: output pixel o samples the crop at centre
    c = scale * (o + 0.5), scale = length / out_size; input pixel j of the crop
    weighs max(0, 1 - |j + 0.5 - c| / max(scale, 1)); weights are normalised
    over the pixels inside the crop.

    Args:
        start: (B,) int64 first pixel of the crop.
        length: (B,) int64 crop length (>= 1).
        in_size: image length along the axis.
        out_size: output length.
        flip: optional (B,) bool; those images' output pixel o samples at the
            centre of pixel out_size - 1 - o (a mirrored output, exactly).

    Returns:
        (B, out_size, in_size) float32 weights; row o sums to 1.
    """
    device = start.device
    length_f = length.to(torch.float32)  # (B,)
    scale = length_f / out_size  # (B,)
    inv_support = 1.0 / torch.clamp(scale, min=1.0)  # (B,)
    out_pos = torch.arange(out_size, device=device, dtype=torch.float32)  # (S,)
    if flip is not None:
        out_pos = out_pos + flip[:, None] * (out_size - 1 - 2 * out_pos)  # (B, S) small integers, exact
    centre = scale[:, None] * (out_pos + 0.5)  # (B, S) in crop coordinates
    rel = torch.arange(in_size, device=device)[None, :] - start[:, None]  # (B, I) int64
    dist = (rel.to(torch.float32)[:, None, :] - centre[:, :, None] + 0.5) * inv_support[:, None, None]  # (B, S, I)
    weights = torch.clamp(1.0 - dist.abs(), min=0.0)  # (B, S, I)
    inside = (rel >= 0) & (rel < length[:, None])  # (B, I)
    weights = weights * inside[:, None, :]  # (B, S, I)
    return weights / weights.sum(dim=-1, keepdim=True)  # (B, S, I)


def resized_crop(images: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                 output_size: int, flip: Tensor | None = None) -> Tensor:
    """Crop each image to its box and resize it to (output_size, output_size).

    Args:
        images: (B, C, H, W) float images.
        top, left, height, width: (B,) int64 boxes, on the images' device.
        output_size: side S of the output.
        flip: optional (B,) bool; mirror those outputs horizontally.

    Returns:
        (B, C, S, S) float32.
    """
    batch, channels, in_h, in_w = images.shape
    rows = resample_weights(top, height, in_h, output_size)  # (B, S, H)
    cols = resample_weights(left, width, in_w, output_size, flip)  # (B, S, W)
    out = torch.bmm(images.reshape(batch, channels * in_h, in_w), cols.transpose(1, 2))  # (B, C * H, S)
    return rows[:, None] @ out.view(batch, channels, in_h, output_size)  # (B, C, S, S)


def grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    r, g, b = images.unbind(dim=1)  # 3 x (B, H, W)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)  # (B, 1, H, W)


@dataclass(frozen=True)
class BlendSteps:
    """Per-image coefficients of K masked jitter steps, each as (K, B, 1, 1, 1).

    Step k maps x to clamp(factor * x + gray_weight * gray(x) + mean_weight * mean(gray(x)), 0, 1):
    at most one of the two weights of an image is nonzero (1 - factor), and an
    image that takes no blend at step k has factor 1 and both weights 0.
    """

    factor: Tensor
    gray_weight: Tensor
    mean_weight: Tensor

    @staticmethod
    def build(ops: Tensor, active: Tensor, factors: Tensor) -> "BlendSteps":
        """Coefficients from the op ids (B, K) int64, the `active` mask (B, K) bool
        (images that take their op at that step; a hue op is never a blend) and the
        (B, 3) brightness, contrast, saturation factors."""
        is_blend = active & (ops != HUE)  # (B, K)
        factor = factors.gather(1, ops.clamp(max=SATURATION))  # (B, K)
        factor = torch.where(is_blend, factor, torch.ones_like(factor))  # (B, K)
        rest = 1.0 - factor  # (B, K) exact for factors in [0.5, 2] (Sterbenz), as torchvision's float(1 - ratio)
        gray_weight = torch.where(ops == SATURATION, rest, 0.0)  # (B, K)
        mean_weight = torch.where(ops == CONTRAST, rest, 0.0)  # (B, K)
        columns = (t.t()[:, :, None, None, None] for t in (factor, gray_weight, mean_weight))  # (K, B, 1, 1, 1)
        return BlendSteps(*columns)

    def __len__(self) -> int:
        return len(self.factor)

    def apply(self, images: Tensor, step: int) -> Tensor:
        """Step `step` on (B, 3, H, W) floats in [0, 1]: a new (B, 3, H, W) tensor.

        The products are rounded as torchvision's blend rounds them: factor * x,
        then + (1 - factor) * reference.
        """
        gray = grayscale(images)  # (B, 1, H, W)
        mean_term = self.mean_weight[step] * gray.mean(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
        reference = self.gray_weight[step] * gray + mean_term  # (B, 1, H, W) (1 - f) * ref, one term nonzero
        out = images * self.factor[step]  # (B, 3, H, W)
        return out.add_(reference).clamp_(0.0, 1.0)


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Rotate each image's hue by its own amount (torchvision's RGB->HSV->RGB).

    The forward conversion follows torchvision's formulas; its sector choice
    (red, else green, else blue holds the maximum) is made with 0/1 signs of
    the channel distances to the maximum, and `lerp` on them. The way back uses
    the equivalent closed form c = v - v * s * clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B (no six-way gather), equal to
    torchvision's sector formula up to float rounding.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        hue: (B,) shifts in turns.

    Returns:
        (B, 3, H, W).
    """
    r, g, b = images.unbind(dim=1)  # 3 x (B, H, W)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (B, H, W) value
    minc = torch.minimum(torch.minimum(r, g), b)  # (B, H, W)
    chroma = maxc - minc  # (B, H, W) >= 0
    flat = 1.0 - torch.sign(chroma)  # (B, H, W) 1 for gray pixels (hue and saturation 0), else 0
    sat = chroma / (maxc + flat)  # (B, H, W) a gray pixel divides 0 by a nonzero number
    dist = (maxc.unsqueeze(1) - images) / (chroma + flat).unsqueeze(1)  # (B, 3, H, W) >= 0, 0 where max
    rc, gc, bc = dist.unbind(dim=1)  # 3 x (B, H, W)
    below_r, below_g = torch.sign(rc), torch.sign(gc)  # (B, H, W) 1 where the channel is not the max
    green_or_blue = torch.lerp(2.0 + rc - bc, 4.0 + gc - rc, below_g)  # (B, H, W)
    sextant = torch.lerp(bc - gc, green_or_blue, below_r)  # (B, H, W) in [-1, 5]
    h = torch.frac(sextant / 6.0 + 1.0)  # (B, H, W) fmod(., 1) of [5/6, 11/6], exact
    h = h + hue[:, None, None]  # (B, H, W) in [-0.5, 1.5)
    h = h - torch.floor(h)  # (B, H, W) mod 1
    return _hsv_to_rgb(h, sat, maxc)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(B, H, W) hue in [0, 1], saturation, value -> (B, 3, H, W) RGB.

    Channel n (5, 3, 1 for R, G, B) is v - v * s * clamp(min(k, 4 - k), 0, 1)
    with k = (6h + n) mod 6. The mod is unrolled, bit for bit: R has k + 6 in
    [5, 11] and its ramp is clamp(min(k - 6, 10 - k), 0, 1) (0 below 6); G and
    B have k + 6 in [1, 9] and theirs is clamp(4 - k, 0, 1) + clamp(k - 6, 0, 1),
    one term 0.
    """
    h6 = h * 6.0  # (B, H, W)
    ramp = torch.empty((len(h), 3, *h.shape[1:]), dtype=h.dtype, device=h.device)  # (B, 3, H, W)
    red = h6 + 5.0  # (B, H, W) in [5, 11]
    torch.minimum(red - 6.0, 10.0 - red, out=ramp[:, 0])  # (B, H, W)
    green_blue = h6.unsqueeze(1) + torch.tensor((3.0, 1.0), device=h.device).view(1, 2, 1, 1)  # (B, 2, H, W)
    torch.add((4.0 - green_blue).clamp_(0.0, 1.0), (green_blue - 6.0).clamp_(0.0, 1.0), out=ramp[:, 1:])
    ramp[:, 0].clamp_(0.0, 1.0)  # (B, H, W) the red ramp's clamp
    out = v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp  # (B, 3, H, W)
    return out.clamp_(0.0, 1.0)


def color_jitter(images: Tensor, params: AugmentParams) -> Tensor:
    """Brightness, contrast, saturation and hue in each image's own order.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        params: parameters on the images' device.

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    order = params.order  # (B, 4)
    hue_step = (order == HUE).to(torch.float32).argmax(dim=1, keepdim=True)  # (B, 1) position of the hue op
    steps = torch.arange(HUE + 1, device=order.device)  # (4,)
    before = order[:, :HUE], hue_step > steps[:HUE]  # (B, 3) ops and masks of steps 0..2, before the hue op
    after = order[:, 1:], hue_step < steps[1:]  # (B, 3) steps 1..3, after it
    blends = BlendSteps.build(torch.cat((before[0], after[0]), dim=1), torch.cat((before[1], after[1]), dim=1),
                              _blend_factors(params))  # 6 steps
    for step in range(HUE):
        images = blends.apply(images, step)
    images = adjust_hue(images, params.hue)  # (B, 3, H, W) one pass: every image's hue op
    for step in range(HUE, len(blends)):
        images = blends.apply(images, step)
    return images


def _blend_factors(params: AugmentParams) -> Tensor:
    """(B, 3) brightness, contrast, saturation factors."""
    return torch.stack((params.brightness, params.contrast, params.saturation), dim=1)


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(images - mean) / std per channel, in place (images is the caller's own float tensor)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return images.sub_(mean_t).div_(std_t)  # (B, 3, H, W)


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float], output_size: int | None = None) -> Tensor:
    """Evaluation path: uint8 -> float in [0, 1] -> (resize) -> normalise.

    Args:
        images: (B, 3, H, W) uint8 on any device.
        mean, std: per-channel statistics.
        output_size: resize to (S, S) with antialiased bilinear when the images
            are not already that size; None keeps the stored size.

    Returns:
        (B, 3, S, S) float32 on the images' device.
    """
    _check_images(images)
    x = images.to(torch.float32).div_(255.0)  # (B, 3, H, W)
    _, _, in_h, in_w = x.shape
    if output_size is not None and (in_h, in_w) != (output_size, output_size):
        zero = torch.zeros(1, dtype=torch.int64, device=x.device)  # (1,)
        rows = resample_weights(zero, zero + in_h, in_h, output_size)  # (1, S, H)
        cols = resample_weights(zero, zero + in_w, in_w, output_size)  # (1, S, W)
        x = rows[:, None] @ (x @ cols.transpose(1, 2)[:, None])  # (B, 3, S, S)
    return _normalise(x, mean, std)


class BatchAugment:
    """The training augmentation for batches of uint8 images.

    Args:
        output_size: side S of the square output.
        mean, std: per-channel normalisation statistics.
        scale: RandomResizedCrop area-fraction range.
        ratio: RandomResizedCrop aspect-ratio (width / height) range.
        jitter: ColorJitter strength, one float for all four ops or a
            (brightness, contrast, saturation, hue) tuple; 0 turns an op off.
        grayscale_p: probability of RandomGrayscale.
        hflip: mirror half of the images (the 32x32 recipe has no flip).
        grayscale_first: apply RandomGrayscale before ColorJitter (the ImageNet
            recipe's order) instead of after it (the 32x32 recipe's order).
    """

    def __init__(
        self,
        output_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        jitter: float | Sequence[float] = 0.4,
        grayscale_p: float = 0.2,
        hflip: bool = False,
        grayscale_first: bool = False,
    ) -> None:
        if int(output_size) != output_size or output_size < 1:
            raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
        self.output_size = int(output_size)
        self.mean = _check_stats("mean", mean, positive=False)
        self.std = _check_stats("std", std, positive=True)
        self.scale = _check_pair("scale", scale)
        if self.scale[1] > 1.0:
            raise ValueError(f"scale must lie within (0, 1], got {scale!r}")
        self.ratio = _check_pair("ratio", ratio)
        strengths = (float(jitter),) * 4 if isinstance(jitter, (int, float)) else tuple(float(j) for j in jitter)
        if len(strengths) != 4 or min(strengths) < 0:
            raise ValueError(f"jitter must be >= 0, one value or four, got {jitter!r}")
        if strengths[HUE] > 0.5:
            raise ValueError(f"hue jitter must be at most 0.5, got {strengths[HUE]}")
        self.jitter = strengths
        if not 0.0 <= grayscale_p <= 1.0:
            raise ValueError(f"grayscale_p must lie in [0, 1], got {grayscale_p}")
        self.grayscale_p = float(grayscale_p)
        self.hflip = bool(hflip)
        self.grayscale_first = bool(grayscale_first)

    def __repr__(self) -> str:
        return (f"BatchAugment(output_size={self.output_size}, scale={self.scale}, ratio={self.ratio}, "
                f"jitter={self.jitter}, grayscale_p={self.grayscale_p}, hflip={self.hflip}, "
                f"grayscale_first={self.grayscale_first})")

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of n images of size (height, width) from a CPU generator.

        The draws are a fixed sequence of vectorised `torch.rand` calls, so the
        same generator state gives the same parameters on every device.

        Returns:
            AugmentParams on the CPU.
        """
        if generator is None or generator.device.type != "cpu":
            raise ValueError("sample needs a CPU torch.Generator (parameters are drawn on the CPU)")
        if n < 1 or height < 1 or width < 1:
            raise ValueError(f"need n, height, width >= 1, got {n}, {height}, {width}")
        low_s, high_s = self.scale
        low_r, high_r = math.log(self.ratio[0]), math.log(self.ratio[1])
        area_fraction = low_s + (high_s - low_s) * torch.rand(n, CROP_ATTEMPTS, generator=generator)  # (n, A)
        log_ratio = low_r + (high_r - low_r) * torch.rand(n, CROP_ATTEMPTS, generator=generator)  # (n, A)
        place = torch.rand(n, 2, generator=generator)  # (n, 2) top, left uniforms
        top, left, crop_h, crop_w = sample_crop_boxes(
            area_fraction, log_ratio, place[:, 0], place[:, 1], height, width, self.ratio)

        uniforms = torch.rand(n, 4, generator=generator)  # (n, 4) brightness, contrast, saturation, hue
        strength = torch.tensor(self.jitter)  # (4,)
        low = torch.cat([torch.clamp(1.0 - strength[:3], min=0.0), -strength[3:]])  # (4,)
        high = torch.cat([1.0 + strength[:3], strength[3:]])  # (4,)
        jitter = low + (high - low) * uniforms  # (n, 4)
        order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # (n, 4) random permutations
        coins = torch.rand(n, 2, generator=generator)  # (n, 2) grayscale, flip
        return AugmentParams(
            crop_top=top, crop_left=left, crop_height=crop_h, crop_width=crop_w,
            brightness=jitter[:, 0], contrast=jitter[:, 1], saturation=jitter[:, 2], hue=jitter[:, 3],
            order=order,
            grayscale=coins[:, 0] < self.grayscale_p,
            flip=(coins[:, 1] < 0.5) & self.hflip,
        )

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Augment a batch with given parameters.

        Args:
            images: (B, 3, H, W) uint8 on any device.
            params: B images' parameters (any device; moved to the images').

        Returns:
            (B, 3, S, S) float32, normalised, on the images' device.
        """
        _check_images(images)
        if len(params) != len(images):
            raise ValueError(f"{len(params)} parameter rows for {len(images)} images")
        params = params.to(images.device, non_blocking=True)
        x = images.to(torch.float32).div_(255.0)  # (B, 3, H, W)
        x = resized_crop(x, params.crop_top, params.crop_left, params.crop_height, params.crop_width,
                         self.output_size, params.flip)  # (B, 3, S, S)
        if self.grayscale_first:
            x = self._random_grayscale(x, params.grayscale)
        if any(self.jitter):
            x = self._jitter(x, params)
        if not self.grayscale_first:
            x = self._random_grayscale(x, params.grayscale)
        return _normalise(x, self.mean, self.std)  # (B, 3, S, S)

    def _jitter(self, x: Tensor, params: AugmentParams) -> Tensor:
        if self.jitter[HUE] > 0:
            return color_jitter(x, params)
        # Hue off (torchvision skips it): each blend runs at its own step, hue's step is a no-op.
        always = torch.ones_like(params.order, dtype=torch.bool)  # (B, 4)
        blends = BlendSteps.build(params.order, always, _blend_factors(params))  # 4 steps
        for step in range(len(blends)):
            x = blends.apply(x, step)
        return x

    @staticmethod
    def _random_grayscale(x: Tensor, chosen: Tensor) -> Tensor:
        """Replace the chosen images by their 3-channel grayscale, in place (x is the caller's own tensor)."""
        gray = grayscale(x).expand_as(x)  # (B, 3, S, S)
        weight = chosen.to(x.dtype)[:, None, None, None]  # (B, 1, 1, 1) exactly 0 or 1
        return x.lerp_(gray, weight)  # (B, 3, S, S)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Sample parameters from `generator` (CPU) and augment: (B, 3, H, W) uint8 -> (B, 3, S, S) float32."""
        _check_images(images)
        params = self.sample(len(images), images.shape[-2], images.shape[-1], generator)
        return self.apply(images, params)
