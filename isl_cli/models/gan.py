"""The triplet GAN of docs/method.md section 6: a generator of proxy positives and a triplet discriminator.

Both are small MLPs with LeakyReLU (negative slope 0.01) between layers and
PyTorch's default initialisation (`nn.Linear`: Kaiming-uniform weights with
a = sqrt(5), biases uniform in +-1/sqrt(fan_in)); nothing is re-initialised.

State-dict keys: `net.<i>.weight` / `net.<i>.bias` with the Linear layers at
Sequential indices 0, 2 and 4.
"""

from __future__ import annotations

import torch
from torch import nn

from isl_cli.models.resnet import NormalizedLinear, validate_low_dim

LEAKY_SLOPE = 0.01


def check_features(who: str, feature_dim: int, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor is (B, feature_dim) with one shared B."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if any(len(s) != 2 or s[1] != feature_dim or s != first for s in shapes.values()):
        raise ValueError(f"{who} expects (B, {feature_dim}) tensors of one batch size, got {shapes}")


class Generator(nn.Module):
    """G: concat(a, p, n) (B, 3D) -> 2D -> D -> D, L2-normalised proxy feature p' (B, D).

    Args:
        feature_dim: the feature size D.
    """

    def __init__(self, feature_dim: int = 128):
        super().__init__()
        self.feature_dim = validate_low_dim(feature_dim)
        d = self.feature_dim
        self.net = nn.Sequential(
            nn.Linear(3 * d, 2 * d),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(2 * d, d),
            nn.LeakyReLU(LEAKY_SLOPE),
            NormalizedLinear(d, d),
        )

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """(B, D) x3 -> p' (B, D) unit rows."""
        check_features("Generator", self.feature_dim, anchor=anchor, positive=positive, negative=negative)
        return self.net(torch.cat([anchor, positive, negative], dim=1))  # (B, D)


class Discriminator(nn.Module):
    """Dis: a triplet concat(x, y, z) (B, 3D) -> D -> D/2 -> 1 -> sigmoid probability (B, 1).

    `logits` gives the pre-sigmoid score (for a numerically stable
    `binary_cross_entropy_with_logits`); `forward` is `sigmoid(logits)`.

    Args:
        feature_dim: the feature size D (at least 2, so that D/2 >= 1; D/2 rounds down).
    """

    def __init__(self, feature_dim: int = 128):
        super().__init__()
        self.feature_dim = validate_low_dim(feature_dim)
        d = self.feature_dim
        if d < 2:
            raise ValueError(f"the discriminator needs feature_dim >= 2 (hidden size D/2), got {d}")
        self.net = nn.Sequential(
            nn.Linear(3 * d, d),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(d, d // 2),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(d // 2, 1),
        )

    def logits(self, triplet: torch.Tensor) -> torch.Tensor:
        """(B, 3D) concatenated triplet -> (B, 1) pre-sigmoid scores."""
        if triplet.dim() != 2 or triplet.shape[1] != 3 * self.feature_dim:
            raise ValueError(
                f"Discriminator expects (B, {3 * self.feature_dim}) triplets, got {tuple(triplet.shape)}"
            )
        return self.net(triplet)  # (B, 1)

    def forward(self, triplet: torch.Tensor) -> torch.Tensor:
        """(B, 3D) concatenated triplet -> (B, 1) probabilities in (0, 1)."""
        return torch.sigmoid(self.logits(triplet))  # (B, 1)

    def score(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Probability for the triplet (x, y, z), each (B, D) -> (B, 1)."""
        check_features("Discriminator", self.feature_dim, x=x, y=y, z=z)
        return self(torch.cat([x, y, z], dim=1))  # (B, 1)

    def score_logits(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score for the triplet (x, y, z), each (B, D) -> (B, 1)."""
        check_features("Discriminator", self.feature_dim, x=x, y=y, z=z)
        return self.logits(torch.cat([x, y, z], dim=1))  # (B, 1)
