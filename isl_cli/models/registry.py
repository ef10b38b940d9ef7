"""Choose and build a backbone by name: arch x variant (docs/method.md section 1).

| arch     | "cifar" (images <= 64 px)                  | "imagenet" (larger images)                    |
|----------|--------------------------------------------|-----------------------------------------------|
| resnet18 | CifarResNet, any small size, width scales  | torchvision resnet18 + fc -> D, input 224     |
| resnet50 | CifarResNet (Bottleneck), width scales     | torchvision resnet50 + fc -> D, input 224     |
| alexnet  | CIFAR AlexNet, input 32 only, width 1 only | BN AlexNet, input 227 only, width 1 only      |

Every backbone maps (B, 3, S, S) float to (B, D) L2-normalised rows.
"""

from __future__ import annotations

from torch import nn

from isl_cli.models.alexnet import CIFAR_ALEXNET_INPUT, IMAGENET_ALEXNET_INPUT, AlexNetBackbone
from isl_cli.models.resnet import CifarResNet, imagenet_resnet

from isl_cli.models.names import ARCHS, VARIANTS, check_arch_variant
SMALL_IMAGE_MAX = 64  # images up to this size use the "cifar" variants
IMAGENET_RESNET_INPUT = 224
CIFAR_INPUT = 32


def variant_for_image_size(image_size: int) -> str:
    """"cifar" for small images (<= 64 px), "imagenet" otherwise."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return "cifar" if image_size <= SMALL_IMAGE_MAX else "imagenet"


def input_size(arch: str, variant: str, image_size: int | None = None) -> int:
    """The square input side the backbone should be fed.

    Args:
        arch, variant: as in `build_backbone`.
        image_size: the data's image side. The CIFAR ResNets take it as is
            (default 32); the CIFAR AlexNet needs exactly 32.

    Returns:
        32 (or `image_size`) for the cifar variants, 224 for the ImageNet
        ResNets, 227 for the ImageNet AlexNet.

    Raises:
        ValueError: unknown names, or a data size the CIFAR AlexNet cannot take.
    """
    check_arch_variant(arch, variant)
    if variant == "imagenet":
        return IMAGENET_ALEXNET_INPUT if arch == "alexnet" else IMAGENET_RESNET_INPUT
    if image_size is None:
        return CIFAR_INPUT
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if arch == "alexnet" and image_size != CIFAR_ALEXNET_INPUT:
        raise ValueError(
            f"the CIFAR AlexNet needs {CIFAR_ALEXNET_INPUT}x{CIFAR_ALEXNET_INPUT} images "
            f"(its flatten layer is 256x4x4), got {image_size}x{image_size}; use a ResNet or resize"
        )
    return image_size


def build_backbone(arch: str, *, variant: str, low_dim: int = 128, width: float = 1.0) -> nn.Module:
    """Build a randomly initialised backbone: (B, 3, S, S) -> (B, low_dim) unit rows.

    Args:
        arch: one of ARCHS.
        variant: "cifar" or "imagenet" (see `variant_for_image_size`).
        low_dim: the feature size D.
        width: channel multiplier of the CIFAR ResNets (1.0 = the paper's,
            0.25 = 16 base channels); the other backbones accept only 1.0.

    Raises:
        ValueError: unknown names, bad low_dim/width, or width != 1.0 where unsupported.
    """
    check_arch_variant(arch, variant)
    if arch == "alexnet":
        return AlexNetBackbone(variant, low_dim=low_dim, width=width)
    if variant == "cifar":
        return CifarResNet(arch, low_dim=low_dim, width=width)
    return imagenet_resnet(arch, low_dim=low_dim, width=width)


def num_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) in a module."""
    return sum(p.numel() for p in module.parameters())
