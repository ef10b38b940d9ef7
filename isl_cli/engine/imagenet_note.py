"""The line every stage logs first when it runs with the ImageNet settings (docs/method.md sections 2-7).

File-backed data sets, images over 64 px and `--variant imagenet` take the
reference's ImageNet values; these lines say so, with the values in effect.
"""

from __future__ import annotations

from typing import Any

WHY = "file-backed data, images over 64 px, or --variant imagenet"
HINT = "train-features --variant cifar for the 32x32 ones"


def features_line(cfg: Any) -> str:
    return (f"ImageNet settings ({WHY}): T {cfg.temperature:g}, {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"weight decay {cfg.weight_decay:g}, kNN every {cfg.eval_every} epochs with k {cfg.eval_k} ({HINT})")


def gan_line(cfg: Any) -> str:
    return f"ImageNet settings (the features' backbone is the ImageNet variant): batch {cfg.batch_size} ({HINT})"


def mine_line(cfg: Any) -> str:
    return (f"ImageNet settings (the features' backbone is the ImageNet variant): tau {cfg.tau:g}, "
            f"R {cfg.base_radius:g}, batch {cfg.batch_size} ({HINT})")


def run_line(features: Any, mine: Any) -> str:
    return (f"ImageNet settings ({WHY}): T {features.temperature:g}, {features.epochs} epochs a round, "
            f"batch {features.batch_size} in every stage, tau {mine.tau:g}, R {mine.base_radius:g} "
            "(--variant cifar for the 32x32 ones)")
