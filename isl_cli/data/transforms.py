"""torchvision pipelines for file-backed data (PIL images opened from disk).

Two recipes (docs/method.md section 4):

* ImageNet style (`imagenet_style=True`): training = RandomResizedCrop(S,
  scale 0.2-1.0), RandomGrayscale(0.2), ColorJitter(0.4 x4),
  RandomHorizontalFlip, ToTensor, Normalize; evaluation = Resize(256) (shorter
  side) + CenterCrop(S): CenterCrop(224) for the ResNets, CenterCrop(227) for the
  AlexNet, as in the reference.
* Small images (folders fed to the 32x32 backbones): training =
  RandomResizedCrop(S, scale 0.2-1.0), ColorJitter(0.4 x4), RandomGrayscale(0.2),
  ToTensor, Normalize (no flip); evaluation = Resize(S) (shorter side) +
  CenterCrop(S), which keeps the whole of a square image.

All randomness comes from torch's global generator, which the dataset seeds per
sample (see `isl_cli.data.batches`).
"""

from __future__ import annotations

from typing import Sequence

from torchvision import transforms as T

TRAIN_SCALE = (0.2, 1.0)
JITTER = 0.4
GRAYSCALE_P = 0.2
IMAGENET_EVAL_RESIZE = 256  # the reference's Resize(256), for both 224 and 227 crops


def _check_size(output_size: int) -> int:
    if int(output_size) != output_size or output_size < 1:
        raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
    return int(output_size)


def eval_resize_size(output_size: int, imagenet_style: bool) -> int:
    """Shorter-side size before the centre crop: 256 for the ImageNet recipe (at least S), else S."""
    output_size = _check_size(output_size)
    return max(IMAGENET_EVAL_RESIZE, output_size) if imagenet_style else output_size


def train_transform(output_size: int, mean: Sequence[float], std: Sequence[float], imagenet_style: bool) -> T.Compose:
    """PIL image -> augmented, normalised (3, S, S) float32 tensor."""
    output_size = _check_size(output_size)
    crop = T.RandomResizedCrop(output_size, scale=TRAIN_SCALE)
    jitter = T.ColorJitter(JITTER, JITTER, JITTER, JITTER)
    gray = T.RandomGrayscale(p=GRAYSCALE_P)
    tail = [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    if imagenet_style:
        return T.Compose([crop, gray, jitter, T.RandomHorizontalFlip(), *tail])
    return T.Compose([crop, jitter, gray, *tail])


def eval_transform(output_size: int, mean: Sequence[float], std: Sequence[float], imagenet_style: bool) -> T.Compose:
    """PIL image -> resized, centre-cropped, normalised (3, S, S) float32 tensor."""
    output_size = _check_size(output_size)
    return T.Compose([
        T.Resize(eval_resize_size(output_size, imagenet_style)),
        T.CenterCrop(output_size),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])
