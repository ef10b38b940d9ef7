"""The built-in synthetic data set: 10 coloured shapes on grey backgrounds, generated offline.

Classes differ by shape only. Within a class, the shape's colour (hue),
position, size, rotation (full turn), the background's brightness and the
pixel noise all vary, so raw pixels are a poor guide to the class (weighted
kNN on raw pixels, k = 200: 23.8% at 5,000 + 1,000, chance 10%) while the ISL
pipeline learns it.
Each shape is a signed distance field evaluated on a coordinate grid for all
images at once; coverage = clamp(0.5 - distance in pixels, 0, 1) gives
anti-aliased edges. Deterministic for a given seed, split and image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from isl_cli.data.sources.convert import one_torch_thread

SHAPE_CLASSES = ["circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "diamond", "bar"]
CHUNK = 4096


@dataclass(frozen=True)
class ShapeStyle:
    """The ranges that vary within a class (pixel units at 32x32; scaled for other sizes).

    The defaults were chosen by training the real pipeline (resnet18 width 0.25,
    instance discrimination): when colour identifies an image (random RGB shape and
    background colours, textured backgrounds) the network learns colour and its kNN
    stays at chance. Here the shape's colour is a random hue at fixed saturation and
    brightness, which the training augmentation's hue jitter scrambles, on a grey
    background of random brightness, so the shape is what identifies an image, while
    raw pixels, dominated by colour, stay a poor guide to the class.
    """

    centre: tuple[float, float] = (10.0, 22.0)
    radius: tuple[float, float] = (8.0, 12.5)
    max_angle: float = math.pi  # rotation uniform in [-max_angle, max_angle)
    background: tuple[float, float] = (0.05, 0.35)  # grey level of the background
    fg_saturation: float = 0.8  # the shape: a random hue at this saturation and value (HSV)
    fg_value: float = 0.9
    bg_slope: float = 0.0  # colour change across the background, per channel, full range
    fg_slope: float = 0.0
    stripe_amp: float = 0.0  # background stripes (random frequency, direction, phase)
    noise: tuple[float, float] = (0.02, 0.08)  # per-image range of the pixel noise std

    def __post_init__(self) -> None:
        for name in ("centre", "radius", "noise", "background"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if self.radius[0] <= 0 or self.centre[1] > 32 or self.background[1] > 1:
            raise ValueError(f"radius must be positive, centres inside 0..32 and background levels in [0, 1]")
        if not (0 <= self.fg_saturation <= 1 and 0 <= self.fg_value <= 1):
            raise ValueError("fg_saturation and fg_value must be in [0, 1]")
        if min(self.max_angle, self.bg_slope, self.fg_slope, self.stripe_amp) < 0:
            raise ValueError("angles, slopes and amplitudes must be non-negative")


DEFAULT_STYLE = ShapeStyle()


# ---------------------------------------------------------------- signed distances
# Each takes local coordinates x, y (any shape, shape radius = 1) and returns the
# signed distance in the same units (negative inside).


def _box(x: torch.Tensor, y: torch.Tensor, half_w: float, half_h: float) -> torch.Tensor:
    qx, qy = x.abs() - half_w, y.abs() - half_h  # (...)
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)  # (...)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _circle(x: torch.Tensor, y: torch.Tensor, cx: float, cy: float, r: float) -> torch.Tensor:
    return torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _polygon(x: torch.Tensor, y: torch.Tensor, vertices: list[tuple[float, float]]) -> torch.Tensor:
    """Exact signed distance to a simple polygon (distance to edges, sign by crossings)."""
    best = torch.full_like(x, float("inf"))  # (...) squared distance
    inside = torch.zeros_like(x, dtype=torch.bool)  # (...)
    count = len(vertices)
    for i in range(count):  # loop over the few edges, not over pixels
        (ax, ay), (bx, by) = vertices[i], vertices[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay  # (...)
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)  # (...)
        dx, dy = wx - ex * t, wy - ey * t  # (...)
        best = torch.minimum(best, dx * dx + dy * dy)
        crosses = (y >= ay) != (y >= by)  # (...)
        left = ex * wy > ey * wx  # (...)
        inside ^= crosses & (left == (by > ay))
    dist = torch.sqrt(best)
    return torch.where(inside, -dist, dist)


def _regular(n: int, radius: float, inner: float | None = None, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    """Vertices of a regular polygon, or of a star when `inner` is given."""
    points = []
    steps = 2 * n if inner is not None else n
    for k in range(steps):
        r = radius if inner is None or k % 2 == 0 else inner
        a = phase + 2 * math.pi * k / steps
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


_TRIANGLE = _regular(3, 1.15)
_STAR = _regular(5, 1.2, inner=0.5)
_DIAMOND = [(1.15, 0.0), (0.0, 0.58), (-1.15, 0.0), (0.0, -0.58)]
_HEART_TIP = [(-0.92, -0.08), (0.92, -0.08), (0.0, 1.05)]

SDFS: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [
    lambda x, y: _circle(x, y, 0.0, 0.0, 0.92),
    lambda x, y: _box(x, y, 0.8, 0.8),
    lambda x, y: _polygon(x, y, _TRIANGLE),
    lambda x, y: _polygon(x, y, _STAR),
    lambda x, y: torch.minimum(_box(x, y, 1.05, 0.3), _box(x, y, 0.3, 1.05)),
    lambda x, y: (torch.sqrt(x * x + y * y) - 0.72).abs() - 0.27,
    lambda x, y: torch.maximum(_circle(x, y, 0.0, 0.0, 1.0), -_circle(x, y, 0.5, -0.1, 0.78)),
    lambda x, y: torch.minimum(
        torch.minimum(_circle(x, y, -0.44, -0.32, 0.52), _circle(x, y, 0.44, -0.32, 0.52)),
        _polygon(x, y, _HEART_TIP)),
    lambda x, y: _polygon(x, y, _DIAMOND),
    lambda x, y: _box(x, y, 1.15, 0.28),
]


# ---------------------------------------------------------------- generation


def _split_seed(seed: int, split: str) -> int:
    return (seed * 1_000_003 + (0 if split == "train" else 7919)) % (2**62)


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) int64: each class n // C or n // C + 1 times, shuffled."""
    base = torch.arange(n, dtype=torch.int64) % num_classes  # (n,)
    return base[torch.randperm(n, generator=generator)]


def hsv_to_rgb(hue: torch.Tensor, saturation: float, value: float) -> torch.Tensor:
    """(n,) hues in [0, 1) at one saturation and value -> (n, 3) RGB in [0, 1]."""
    def channel(offset: float) -> torch.Tensor:
        k = (offset + hue * 6) % 6  # (n,)
        return value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    return torch.stack([channel(5), channel(3), channel(1)], dim=-1)  # (n, 3)


def generate_shapes(n: int, seed: int = 0, split: str = "train", image_size: int = 32,
                    style: ShapeStyle = DEFAULT_STYLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate `n` shape images (deterministic for seed, split and size).

    Args:
        n: number of images (classes balanced: n // 10 or one more each).
        seed: random seed; train and test use different streams of it.
        split: "train" or "test".
        image_size: side in pixels (the geometry scales with it).
        style: the ranges that vary within a class.

    Returns:
        images (n, 3, S, S) uint8 and labels (n,) int64 indexing SHAPE_CLASSES.
    """
    with one_torch_thread():
        return _generate(n, seed, split, image_size, style)


def _generate(n: int, seed: int, split: str, image_size: int, style: ShapeStyle) -> tuple[torch.Tensor, torch.Tensor]:
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8, got n={n}, image_size={image_size}")
    gen = torch.Generator().manual_seed(_split_seed(seed, split))
    s = float(image_size)
    unit = s / 32.0  # geometry is designed at 32x32
    st = style
    labels = balanced_labels(n, len(SHAPE_CLASSES), gen)  # (n,)
    lo, hi = st.centre
    centre = (torch.rand(n, 2, generator=gen) * (hi - lo) + lo) * unit  # (n, 2) pixels
    lo, hi = st.radius
    radius = (torch.rand(n, generator=gen) * (hi - lo) + lo) * unit  # (n,) pixels
    angle = (torch.rand(n, generator=gen) * 2 - 1) * st.max_angle  # (n,)
    lo, hi = st.background
    bg = (torch.rand(n, 1, generator=gen) * (hi - lo) + lo).expand(n, 3)  # (n, 3) grey
    fg = hsv_to_rgb(torch.rand(n, generator=gen), st.fg_saturation, st.fg_value)  # (n, 3) random hue
    bg_slope = (torch.rand(n, 2, 3, generator=gen) - 0.5) * st.bg_slope  # (n, 2, 3) colour change across the image
    fg_slope = (torch.rand(n, 2, 3, generator=gen) - 0.5) * st.fg_slope  # (n, 2, 3)
    stripe_amp = torch.rand(n, 1, generator=gen) * st.stripe_amp  # (n, 1)
    stripe_freq = (torch.rand(n, generator=gen) * 3.5 + 1.5) * (2 * math.pi / s)  # (n,) radians per pixel
    stripe_dir = torch.rand(n, generator=gen) * (2 * math.pi)  # (n,)
    stripe_phase = torch.rand(n, generator=gen) * (2 * math.pi)  # (n,)
    lo, hi = st.noise
    noise_std = torch.rand(n, generator=gen) * (hi - lo) + lo  # (n,)

    coords = torch.arange(image_size, dtype=torch.float32) + 0.5  # (S,)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) each
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)  # (n, 3, S, S)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        m = sl.stop - sl.start
        dx = gx[None] - centre[sl, 0, None, None]  # (m, S, S) pixels
        dy = gy[None] - centre[sl, 1, None, None]  # (m, S, S)
        cos, sin = angle[sl].cos()[:, None, None], angle[sl].sin()[:, None, None]  # (m, 1, 1)
        r = radius[sl, None, None]  # (m, 1, 1)
        lx, ly = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r  # (m, S, S) local, radius 1
        dist = torch.empty(m, image_size, image_size)  # (m, S, S)
        chunk_labels = labels[sl]  # (m,)
        for c, sdf in enumerate(SDFS):  # loop over the 10 classes, each vectorised over its images
            mask = chunk_labels == c  # (m,)
            if mask.any():
                dist[mask] = sdf(lx[mask], ly[mask]) * r[mask]  # (k, S, S) pixels
        alpha = (0.5 - dist).clamp(0, 1)[:, None]  # (m, 1, S, S) anti-aliased coverage

        ux, uy = (dx / s)[:, None], (dy / s)[:, None]  # (m, 1, S, S) in image widths
        back = bg[sl, :, None, None] + bg_slope[sl, 0, :, None, None] * ux + bg_slope[sl, 1, :, None, None] * uy
        wave = (stripe_freq[sl, None, None] * (gx[None] * stripe_dir[sl].cos()[:, None, None]
                                               + gy[None] * stripe_dir[sl].sin()[:, None, None])
                + stripe_phase[sl, None, None]).sin()  # (m, S, S)
        back = back + stripe_amp[sl, :, None, None] * wave[:, None]  # (m, 3, S, S)
        front = fg[sl, :, None, None] + fg_slope[sl, 0, :, None, None] * ux + fg_slope[sl, 1, :, None, None] * uy
        picture = back * (1 - alpha) + front * alpha  # (m, 3, S, S)
        noise = torch.randn(m, 3, image_size, image_size, generator=gen) * noise_std[sl, None, None, None]
        images[sl] = ((picture + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels


def read_shapes(num_train: int = 5000, num_test: int = 1000, seed: int = 0, image_size: int = 32):
    """Both splits of the shapes data set as `Split`s."""
    from isl_cli.data.store import Split  # noqa: PLC0415  (keeps this module importable alone)

    out = []
    for split, n in (("train", num_train), ("test", num_test)):
        images, labels = generate_shapes(n, seed=seed, split=split, image_size=image_size)
        out.append(Split(labels=labels, classes=list(SHAPE_CLASSES), images=images, name="shapes", split=split,
                         info={"generator": "isl shapes", "seed": seed, "image_size": image_size}))
    return out[0], out[1]
