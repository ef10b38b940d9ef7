"""Backbone names and channel widths, without torch: what option checks need before any heavy import."""

from __future__ import annotations

ARCHS = ("resnet18", "resnet50", "alexnet")
VARIANTS = ("cifar", "imagenet")
CIFAR_STAGE_CHANNELS = (64, 128, 256, 512)


def scaled_channels(channels: int, width: float) -> int:
    """Channels times the width multiplier, rounded, at least 1 (64 x 0.25 -> 16)."""
    return max(1, int(round(channels * width)))


def check_arch_variant(arch: str, variant: str) -> None:
    """Raise ValueError for an unknown arch or variant name."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown backbone variant {variant!r}; choose one of {', '.join(VARIANTS)}")
