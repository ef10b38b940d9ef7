"""--init with typed options: what the user typed goes over the optimiser and scheduler restored from it.

The options the user did not type keep the restored state, and the config
records the previous round's values for them, not the preset's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from isl_cli.config import FeaturesConfig


#: Settings that --init restores from the previous round (optimiser param groups, scheduler), by config field.
OPTION_NAMES = {"lr": "--lr", "momentum": "--momentum", "weight_decay": "--weight-decay",
                "lr_factor": "--lr-factor", "lr_patience": "--lr-patience"}


def inherit_untyped(cfg: FeaturesConfig, init_config: dict[str, Any], given: frozenset[str]) -> FeaturesConfig:
    """The restored settings the user did not type are the previous round's: record those, not the preset's."""
    inherited = {k: init_config[k] for k in OPTION_NAMES if k not in given and k in init_config}
    return replace(cfg, **inherited).validate() if inherited else cfg


def apply_given_over_init(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: FeaturesConfig,
                          given: frozenset[str]) -> dict[str, float]:
    """Put each typed optimiser/scheduler option over the state restored from --init; returns what was applied."""
    applied: dict[str, float] = {}
    for name in ("lr", "momentum", "weight_decay"):
        if name in given:
            for group in optimizer.param_groups:
                group[name] = getattr(cfg, name)
            applied[name] = getattr(cfg, name)
    if "lr" in given and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    if "lr_factor" in given:
        scheduler.factor = applied["lr_factor"] = cfg.lr_factor
    if "lr_patience" in given:
        scheduler.patience = applied["lr_patience"] = cfg.lr_patience
    return applied
