"""ResNet backbones: CIFAR-style (32x32) built from torchvision's blocks, and torchvision's ImageNet ResNets.

Both end in a linear map to D followed by L2 normalisation (docs/method.md section 1).

State-dict key layout (an exporter relies on it):
- CIFAR ResNets (`CifarResNet`) use torchvision's names: `conv1`, `bn1`,
  `layer1..layer4` (torchvision `BasicBlock`/`Bottleneck` modules, shortcut
  projection as `downsample.0` conv 1x1 + `downsample.1` BN) and the head `fc`
  (weight (D, C), bias (D,)). The stem is a 3x3 stride-1 conv; there is no max-pool.
- ImageNet ResNets are the very `torchvision.models.resnet18/resnet50` modules
  with `fc` replaced by a `NormalizedLinear(in_features, D)`. Every key is
  torchvision's own; only `fc.weight` (D, 512 or 2048) and `fc.bias` (D,)
  change shape, so the state dict minus `fc.*` loads into
  `torchvision.models.resnet18(weights=None)` (or resnet50) unchanged.

Initialisation: CIFAR ResNets keep PyTorch's default initialisation (as the
reference's CIFAR models do); ImageNet ResNets keep torchvision's (Kaiming
normal convs, BN weight 1 / bias 0); the heads use `nn.Linear`'s default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from isl_cli.models.names import CIFAR_STAGE_CHANNELS, scaled_channels

CIFAR_BLOCKS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
IMAGENET_BUILDERS = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
}


class NormalizedLinear(nn.Linear):
    """A linear map whose output rows are L2-normalised: (B, in) -> (B, out) unit rows.

    Keeps `nn.Linear`'s parameter names (`weight`, `bias`) and default initialisation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), dim=1)  # (B, out)


def validate_low_dim(low_dim: int) -> int:
    """Return `low_dim` as an int, or raise ValueError unless it is a positive integer."""
    if isinstance(low_dim, bool) or not isinstance(low_dim, int) or low_dim < 1:
        raise ValueError(f"low_dim (the feature size D) must be a positive integer, got {low_dim!r}")
    return low_dim


def validate_width(width: float) -> float:
    """Return `width` as a float, or raise ValueError unless it is finite and > 0."""
    try:
        value = float(width)
    except (TypeError, ValueError):
        raise ValueError(f"width must be a positive number, got {width!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"width must be a positive, finite number, got {width!r}")
    return value


def check_image_batch(x: torch.Tensor, who: str) -> None:
    """Raise ValueError unless `x` is a (B, 3, H, W) batch."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{who} expects images of shape (B, 3, H, W), got {tuple(x.shape)}")


class CifarResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, four stages, GAP, linear to D, L2 norm.

    Accepts any small square (or not) input size: global average pooling removes
    the spatial size (32x32 gives 4x4 maps before pooling).

    Args:
        arch: "resnet18" (BasicBlock, 2-2-2-2) or "resnet50" (Bottleneck, 3-4-6-3).
        low_dim: the feature size D.
        width: channel multiplier; stage channels are max(1, round(c * width)) for
            c in 64-128-256-512 (x4 at the output of Bottleneck stages).
    """

    def __init__(self, arch: str = "resnet18", low_dim: int = 128, width: float = 1.0):
        super().__init__()
        if arch not in CIFAR_BLOCKS:
            raise ValueError(f"unknown CIFAR ResNet {arch!r}; choose one of {', '.join(CIFAR_BLOCKS)}")
        low_dim = validate_low_dim(low_dim)
        width = validate_width(width)
        block, depths = CIFAR_BLOCKS[arch]
        planes = [scaled_channels(c, width) for c in CIFAR_STAGE_CHANNELS]
        self.arch = arch
        self.low_dim = low_dim
        self.width = width
        self.stage_channels = tuple(planes)

        self.conv1 = nn.Conv2d(3, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = planes[0]
        stages = []
        for index, (stage_planes, depth) in enumerate(zip(planes, depths)):
            stride = 1 if index == 0 else 2
            stage, in_channels = make_stage(block, in_channels, stage_planes, depth, stride)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = NormalizedLinear(in_channels, low_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, D) unit rows."""
        check_image_batch(x, "CifarResNet")
        x = self.relu(self.bn1(self.conv1(x)))  # (B, C0, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C4, H/8, W/8)
        x = torch.flatten(self.avgpool(x), 1)  # (B, C4)
        return self.fc(x)  # (B, D)


def make_stage(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int, depth: int, stride: int
) -> tuple[nn.Sequential, int]:
    """One ResNet stage of `depth` torchvision blocks; the first may stride and project.

    Returns the stage and its output channel count (planes * block.expansion).
    """
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, planes, stride=stride, downsample=downsample)]
    blocks += [block(out_channels, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), out_channels


def imagenet_resnet(arch: str = "resnet18", low_dim: int = 128, width: float = 1.0) -> nn.Module:
    """torchvision's resnet18/resnet50 (random init) with `fc` -> NormalizedLinear(C, D).

    The result is a `torchvision.models.ResNet`; its forward is torchvision's.
    (B, 3, 224, 224) -> (B, D) unit rows (any size >= 32 works through its adaptive pool).

    Raises:
        ValueError: unknown arch, bad low_dim, or width != 1.0 (torchvision's
            ImageNet ResNets have a fixed channel plan; width applies to the
            32x32 "cifar" ResNets only).
    """
    if arch not in IMAGENET_BUILDERS:
        raise ValueError(f"unknown ImageNet ResNet {arch!r}; choose one of {', '.join(IMAGENET_BUILDERS)}")
    low_dim = validate_low_dim(low_dim)
    if validate_width(width) != 1.0:
        raise ValueError(
            f"width {width} is not supported for the ImageNet-size {arch}: it is torchvision's "
            "model with its fixed channel plan; width applies only to the 32x32 ('cifar') ResNets"
        )
    model = IMAGENET_BUILDERS[arch](weights=None)
    model.fc = NormalizedLinear(model.fc.in_features, low_dim)
    return model
