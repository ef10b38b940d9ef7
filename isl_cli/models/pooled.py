"""The backbone's features before its final linear-to-D layer ("pooled" features, what linear probes use).

Every backbone in `isl_cli.models` ends in one `NormalizedLinear` (linear to D,
then L2 norm) whose input is the representation the field probes:

| backbone                         | input of the final NormalizedLinear                       |
|----------------------------------|-----------------------------------------------------------|
| CifarResNet                      | global average pool of layer4: C4 = 512 * width (x4 for resnet50) |
| torchvision resnet18 / resnet50  | global average pool of layer4: 512 / 2048                 |
| AlexNet (cifar / imagenet)       | the second hidden layer after BN + ReLU: 1024 / 4096      |

`PooledFeatures` captures that input with a forward pre-hook, so it works for
any backbone built that way, without a second copy of any forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from isl_cli.models.resnet import NormalizedLinear


def embedding_layer(backbone: nn.Module) -> NormalizedLinear:
    """The backbone's final linear-to-D layer (its last NormalizedLinear module)."""
    heads = [m for m in backbone.modules() if isinstance(m, NormalizedLinear)]
    if not heads:
        raise ValueError(f"{type(backbone).__name__} has no final linear-to-D layer (NormalizedLinear)")
    return heads[-1]


class PooledFeatures(nn.Module):
    """Wrap a backbone: (B, 3, S, S) -> (B, C) float32, the input of its final linear-to-D layer."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = embedding_layer(backbone)

    @property
    def dim(self) -> int:
        """C, the size of the pooled features."""
        return int(self.head.in_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            self.backbone(images)
        finally:
            handle.remove()
        return captured[0].float()  # (B, C); float32 also under autocast
