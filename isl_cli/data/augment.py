"""Training augmentation applied to whole batches of stored uint8 images on any device.

The recipe is the method's (ISL-METHOD.md section 4), with torchvision's semantics:
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
* The random order is applied with per-image masks: blends before the hue
  step, one hue pass for the whole batch, blends after it (an image whose op
  at a step is masked off uses factor 1, an exact identity).

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


def resample_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
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

    Returns:
        (B, out_size, in_size) float32 weights; row o sums to 1.
    """
    device = start.device
    length_f = length.to(torch.float32)  # (B,)
    scale = length_f / out_size  # (B,)
    inv_support = 1.0 / torch.clamp(scale, min=1.0)  # (B,)
    out_pos = torch.arange(out_size, device=device, dtype=torch.float32)  # (S,)
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
    _, _, in_h, in_w = images.shape
    rows = resample_weights(top, height, in_h, output_size)  # (B, S, H)
    cols = resample_weights(left, width, in_w, output_size)  # (B, S, W)
    if flip is not None:
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)  # (B, S, W)
    out = images @ cols.transpose(1, 2)[:, None]  # (B, C, H, S)
    return rows[:, None] @ out  # (B, C, S, S)


def grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    r, g, b = images.unbind(dim=1)  # 3 x (B, H, W)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)  # (B, 1, H, W)


def _blend_step(images: Tensor, op: Tensor, active: Tensor, factors: Tensor) -> Tensor:
    """One jitter step for the images whose op there is a blend and `active` is set.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        op: (B,) int64 op id at this step.
        active: (B,) bool, images that take their op at this step (never hue).
        factors: (B, 3) float32 brightness, contrast, saturation factors.

    Returns:
        (B, 3, H, W): factor * image + (1 - factor) * reference, clamped to [0, 1],
        with reference 0, mean gray, or gray for brightness, contrast, saturation;
        inactive images get factor 1 (unchanged).
    """
    is_blend = active & (op != HUE)  # (B,)
    factor = factors.gather(1, op.clamp(max=SATURATION)[:, None]).squeeze(1)  # (B,)
    factor = torch.where(is_blend, factor, torch.ones_like(factor))  # (B,)
    rest = 1.0 - factor  # (B,) exact for factors in [0.5, 2] (Sterbenz), as torchvision's float(1 - ratio)
    gray_weight = torch.where(op == SATURATION, rest, 0.0)[:, None, None, None]  # (B, 1, 1, 1)
    mean_weight = torch.where(op == CONTRAST, rest, 0.0)[:, None, None, None]  # (B, 1, 1, 1)
    gray = grayscale(images)  # (B, 1, H, W)
    mean_gray = gray.mean(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
    reference = gray_weight * gray + mean_weight * mean_gray  # (B, 1, H, W) (1 - f) * ref, one term nonzero
    out = factor[:, None, None, None] * images + reference  # (B, 3, H, W) products rounded as torchvision's
    return out.clamp_(0.0, 1.0)


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Rotate each image's hue by its own amount (torchvision's RGB->HSV->RGB).

    The forward conversion follows torchvision's formulas; the way back uses the
    equivalent closed form c = v - v * s * clamp(min(k, 4 - k), 0, 1) with
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
    flat = maxc == minc  # (B, H, W) gray pixels: hue and saturation are 0
    chroma = maxc - minc  # (B, H, W)
    ones = torch.ones_like(maxc)
    sat = chroma / torch.where(flat, ones, maxc)  # (B, H, W)
    chroma_div = torch.where(flat, ones, chroma)  # (B, H, W)
    rc, gc, bc = (maxc - r) / chroma_div, (maxc - g) / chroma_div, (maxc - b) / chroma_div  # (B, H, W) each
    sextant = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))  # (B, H, W)
    h = sextant / 6.0 + 1.0  # (B, H, W) in [5/6, 11/6]
    h = torch.where(h >= 1.0, h - 1.0, h)  # (B, H, W) fmod(., 1)
    h = h + hue[:, None, None]  # (B, H, W) in [-0.5, 1.5)
    h = h - torch.floor(h)  # (B, H, W) mod 1
    return _hsv_to_rgb(h, sat, maxc)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(B, H, W) hue in [0, 1), saturation, value -> (B, 3, H, W) RGB."""
    h6 = h * 6.0  # (B, H, W)
    vs = v * s  # (B, H, W)
    channels = []
    for offset in (5.0, 3.0, 1.0):  # R, G, B
        k = h6 + offset  # (B, H, W) in [offset, offset + 6)
        k = torch.where(k >= 6.0, k - 6.0, k)  # (B, H, W) mod 6
        ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)  # (B, H, W)
        channels.append(torch.clamp(v - vs * ramp, 0.0, 1.0))  # (B, H, W)
    return torch.stack(channels, dim=1)  # (B, 3, H, W)


def color_jitter(images: Tensor, params: AugmentParams) -> Tensor:
    """Brightness, contrast, saturation and hue in each image's own order.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        params: parameters on the images' device.

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    order = params.order  # (B, 4)
    factors = torch.stack((params.brightness, params.contrast, params.saturation), dim=1)  # (B, 3)
    hue_step = (order == HUE).to(torch.float32).argmax(dim=1)  # (B,) position of the hue op
    for step in range(HUE):  # steps 0..2 can come before the hue op
        images = _blend_step(images, order[:, step], hue_step > step, factors)
    images = adjust_hue(images, params.hue)  # (B, 3, H, W) one pass: every image's hue op
    for step in range(1, HUE + 1):  # steps 1..3 can come after it
        images = _blend_step(images, order[:, step], hue_step < step, factors)
    return images


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t  # (B, 3, H, W)


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
    x = images.to(torch.float32) / 255.0  # (B, 3, H, W)
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
        x = images.to(torch.float32) / 255.0  # (B, 3, H, W)
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
        factors = torch.stack((params.brightness, params.contrast, params.saturation), dim=1)  # (B, 3)
        always = torch.ones(len(x), dtype=torch.bool, device=x.device)  # (B,)
        for step in range(4):
            x = _blend_step(x, params.order[:, step], always, factors)
        return x

    @staticmethod
    def _random_grayscale(x: Tensor, chosen: Tensor) -> Tensor:
        gray = grayscale(x).expand_as(x)  # (B, 3, S, S)
        return torch.where(chosen[:, None, None, None], gray, x)  # (B, 3, S, S)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Sample parameters from `generator` (CPU) and augment: (B, 3, H, W) uint8 -> (B, 3, S, S) float32."""
        _check_images(images)
        params = self.sample(len(images), images.shape[-2], images.shape[-1], generator)
        return self.apply(images, params)
