"""AlexNet backbones with batch norm: the CIFAR (32x32) one and the ImageNet (227x227) one.

Both end in Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear to D -> L2 norm
(docs/method.md section 1). Convolutions carry no bias (a batch norm follows each);
all layers keep PyTorch's default initialisation.

CIFAR layer plan (`features`, input 32x32 only: the flatten needs 256 x 4 x 4 = 4096):
    conv 3x3 pad 1: 3->64, BN, ReLU, max-pool 2x2            32 -> 16
    conv 3x3 pad 1: 64->192, BN, ReLU, max-pool 2x2          16 -> 8
    conv 3x3 pad 1: 192->384, BN, ReLU
    conv 3x3 pad 1: 384->256, BN, ReLU
    conv 3x3 pad 1: 256->256, BN, ReLU, max-pool 2x2          8 -> 4
    `head`: Linear 4096->1024, BN, ReLU, Linear 1024->1024, BN, ReLU, Linear 1024->D, L2 norm

ImageNet layer plan (input 227x227 only: the flatten needs 256 x 6 x 6 = 9216):
    conv 11x11 stride 4 pad 2: 3->64, BN, ReLU               227 -> 56 (the reference's padding)
    max-pool 3x3 stride 2                                      56 -> 27
    conv 5x5 pad 2: 64->192, BN, ReLU                          27
    max-pool 3x3 stride 2                                      27 -> 13
    conv 3x3 pad 1: 192->384, 384->256, 256->256 (BN, ReLU)    13
    max-pool 3x3 stride 2                                      13 -> 6
    `head`: Linear 9216->4096, BN, ReLU, Linear 4096->4096, BN, ReLU, Linear 4096->D, L2 norm

State-dict keys: `features.<i>.*` and `head.<i>.*` (nn.Sequential indices); the
last head layer (`head.6`) is the D-sized projection.
"""

from __future__ import annotations

import torch
from torch import nn

from isl_cli.models.resnet import NormalizedLinear, check_image_batch, validate_low_dim, validate_width

CIFAR_ALEXNET_INPUT = 32
IMAGENET_ALEXNET_INPUT = 227


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
) -> list[nn.Module]:
    """Conv (no bias) -> BatchNorm2d -> ReLU, as a list to splice into a Sequential."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def projection_head(in_features: int, hidden: int, low_dim: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear to D -> L2 norm."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        NormalizedLinear(hidden, low_dim),
    )


class AlexNetBackbone(nn.Module):
    """AlexNet with batch norm; forward (B, 3, S, S) -> (B, D) unit rows.

    Args:
        variant: "cifar" (input 32) or "imagenet" (input 227).
        low_dim: the feature size D.
        width: must be 1.0 (the AlexNets have a fixed channel plan).
    """

    def __init__(self, variant: str = "cifar", low_dim: int = 128, width: float = 1.0):
        super().__init__()
        low_dim = validate_low_dim(low_dim)
        if validate_width(width) != 1.0:
            raise ValueError(f"width {width} is not supported for alexnet (fixed channel plan); use width 1.0")
        if variant == "cifar":
            self.features = nn.Sequential(
                *conv_bn_relu(3, 64, 3, padding=1),
                nn.MaxPool2d(2),
                *conv_bn_relu(64, 192, 3, padding=1),
                nn.MaxPool2d(2),
                *conv_bn_relu(192, 384, 3, padding=1),
                *conv_bn_relu(384, 256, 3, padding=1),
                *conv_bn_relu(256, 256, 3, padding=1),
                nn.MaxPool2d(2),
            )
            self.head = projection_head(256 * 4 * 4, 1024, low_dim)
            self.input_size = CIFAR_ALEXNET_INPUT
        elif variant == "imagenet":
            self.features = nn.Sequential(
                *conv_bn_relu(3, 64, 11, stride=4, padding=2),
                nn.MaxPool2d(3, stride=2),
                *conv_bn_relu(64, 192, 5, padding=2),
                nn.MaxPool2d(3, stride=2),
                *conv_bn_relu(192, 384, 3, padding=1),
                *conv_bn_relu(384, 256, 3, padding=1),
                *conv_bn_relu(256, 256, 3, padding=1),
                nn.MaxPool2d(3, stride=2),
            )
            self.head = projection_head(256 * 6 * 6, 4096, low_dim)
            self.input_size = IMAGENET_ALEXNET_INPUT
        else:
            raise ValueError(f"unknown AlexNet variant {variant!r}; choose 'cifar' or 'imagenet'")
        self.variant = variant
        self.low_dim = low_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float with S = self.input_size -> (B, D) unit rows."""
        check_image_batch(x, "AlexNet")
        if x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(
                f"the {self.variant} AlexNet needs {self.input_size}x{self.input_size} images "
                f"(its flatten layer has a fixed size), got {x.shape[2]}x{x.shape[3]}"
            )
        x = self.features(x)  # (B, 256, s, s): s = 4 (cifar) or 6 (imagenet)
        return self.head(torch.flatten(x, 1))  # (B, D)
