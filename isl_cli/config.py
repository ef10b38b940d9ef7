"""Frozen configs of each stage, with the paper's defaults, and named presets.

Defaults are the reference implementation's (ISL-METHOD.md). `paper_defaults`
picks the 32x32 or the ImageNet values; the `quick` preset shrinks the work
for a CPU. Every field can be overridden from the command line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from isl_cli.errors import IslError

PRESETS = ("paper", "quick")


@dataclass(frozen=True)
class FeaturesConfig:
    """train-features: backbone, memory bank, ISL loss, SGD, LR plateau schedule."""

    arch: str = "resnet18"
    variant: str = "cifar"  # cifar (32x32 backbones) or imagenet
    width: float = 1.0
    low_dim: int = 128
    image_size: int = 32  # network input side
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 0.1
    bank_momentum: float = 0.5
    hp_weight: float = 0.5
    eval_every: int = 5
    eval_k: int = 200
    lr_factor: float = 0.8
    lr_patience: int = 1
    val_split: float = 0.0
    seed: int = 0
    num_workers: int = 4
    amp: str = "none"  # none | bf16 | fp16 | auto: autocast of every backbone forward (bank and loss stay fp32)
    channels_last: bool = False
    sync_bn: bool = True  # data parallel: batch norm over the global batch

    def validate(self) -> "FeaturesConfig":
        _positive(self, "epochs", "batch_size", "low_dim", "eval_every", "eval_k", "image_size")
        _positive_float(self, "width", "lr", "temperature")
        if not 0.0 <= self.bank_momentum < 1.0:
            raise IslError(f"--bank-momentum must be in [0, 1), got {self.bank_momentum}")
        if not 0.0 <= self.val_split < 1.0:
            raise IslError(f"--val-split must be in [0, 1), got {self.val_split}")
        if not all(_finite_at_least_zero(v) for v in (self.weight_decay, self.momentum, self.hp_weight)):
            raise IslError("--weight-decay, --momentum and --hp-weight must be finite and not negative, got "
                           f"{self.weight_decay}, {self.momentum} and {self.hp_weight}")
        if not 0.0 < self.lr_factor < 1.0:
            raise IslError(f"--lr-factor must be in (0, 1), got {self.lr_factor}")
        if self.lr_patience < 0:
            raise IslError(f"--lr-patience must not be negative, got {self.lr_patience}")
        if self.amp not in ("none", "bf16", "fp16", "auto"):
            raise IslError(f"--amp must be none, bf16, fp16 or auto, got {self.amp!r}")
        if self.variant not in ("cifar", "imagenet"):
            raise IslError(f"--variant must be cifar or imagenet, got {self.variant!r}")
        _workers(self)
        return self


@dataclass(frozen=True)
class GanConfig:
    """train-gan: triplet GAN on frozen features."""

    batch_size: int = 128
    lr: float = 1e-4
    num_draws: int = 4096
    max_epochs: int = 200
    epochs: int | None = None  # fixed number of epochs instead of the paper's rule
    seed: int = 0
    num_workers: int = 4

    def validate(self) -> "GanConfig":
        _positive(self, "batch_size", "num_draws", "max_epochs")
        _positive_float(self, "lr")
        if self.epochs is not None and self.epochs <= 0:
            raise IslError(f"--epochs must be positive, got {self.epochs}")
        _workers(self)
        return self


@dataclass(frozen=True)
class MineConfig:
    """mine-neighbors: GAN proxies turned into new neighbour pairs."""

    batch_size: int = 128
    num_draws: int = 4096
    tau: float = 0.5
    base_radius: float = 0.6
    top_k: int = 10
    per_round: float = 0.5
    max_passes: int = 200
    quota_check: str = "pass"  # pass: after each pass, as the method says; batch: also after each batch
    seed: int = 0
    num_workers: int = 4

    def validate(self) -> "MineConfig":
        _positive(self, "batch_size", "num_draws", "top_k", "max_passes")
        if self.quota_check not in ("pass", "batch"):
            raise IslError(f"--quota-check must be pass or batch, got {self.quota_check!r}")
        if not 0.0 <= self.tau < 1.0:
            raise IslError(f"--tau must be in [0, 1), got {self.tau}")
        if not 0.0 <= self.base_radius <= 1.0:
            raise IslError(f"--base-radius must be in [0, 1], got {self.base_radius}")
        if not math.isfinite(self.per_round) or self.per_round <= 0:
            raise IslError(f"--per-round must be positive and finite, got {self.per_round}")
        _workers(self)
        return self


@dataclass(frozen=True)
class RunConfig:
    """The whole schedule: rounds of train-features, train-gan, mine-neighbors."""

    dataset: str = "shapes"
    preset: str = "paper"
    rounds: int = 4
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    eval_ks: tuple[int, ...] = (200,)

    def validate(self) -> "RunConfig":
        if self.rounds <= 0:
            raise IslError(f"--rounds must be positive, got {self.rounds}")
        if not self.eval_ks or any(k <= 0 for k in self.eval_ks):
            raise IslError(f"--k must be positive, got {', '.join(map(str, self.eval_ks)) or 'none'}")
        self.features.validate()
        self.gan.validate()
        self.mine.validate()
        return self


def paper_features(imagenet: bool) -> FeaturesConfig:
    """The paper's feature-learning settings for 32x32 data or ImageNet."""
    if imagenet:
        return FeaturesConfig(
            variant="imagenet", image_size=224, epochs=100, batch_size=256, weight_decay=1e-4,
            temperature=0.07, eval_every=2, eval_k=1,
        )
    return FeaturesConfig()


def paper_gan(imagenet: bool) -> GanConfig:
    """The paper's GAN settings: the reference's one loader gives the GAN its batch (256 on ImageNet)."""
    return GanConfig(batch_size=256) if imagenet else GanConfig()


def paper_mine(imagenet: bool) -> MineConfig:
    """The paper's mining settings (tau, R, and the one loader's batch) for 32x32 data or ImageNet."""
    return MineConfig(tau=0.3, base_radius=0.3, batch_size=256) if imagenet else MineConfig()


PRESET_ROUNDS = {"paper": 4, "quick": 2}


def preset_configs(preset: str, imagenet: bool) -> tuple[FeaturesConfig, GanConfig, MineConfig]:
    """Configs of a named preset: `paper` (the reference's) or `quick` (a CPU in minutes)."""
    if preset not in PRESETS:
        raise IslError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    features, gan, mine = paper_features(imagenet), paper_gan(imagenet), paper_mine(imagenet)
    if preset == "quick":
        # sized so that `isl run --preset quick` shows learning on shapes in under 5 minutes on 2 CPU cores:
        # the fast path, width 0.25, 2 rounds of 16 epochs; a GAN of 8 epochs at 3x the paper's Adam rate (at the
        # paper's rate 8 epochs of 5,000 images propose no pair); mining capped at 3 passes, quota per batch
        features = replace(features, width=0.25, epochs=16, eval_every=4, num_workers=2,
                           amp="auto", channels_last=True)  # the fast path: bf16 where native, channels-last
        gan = replace(gan, epochs=8, lr=3e-4, num_draws=1024)
        mine = replace(mine, num_draws=1024, max_passes=3, quota_check="batch")
    return features, gan, mine


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (nested ones included)."""
    return asdict(config)


def from_dict(cls: type, data: dict[str, Any]):
    """Build a config from a dict, ignoring unknown keys (older/newer files)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def override(config: Any, **changes: Any):
    """`replace` that ignores None values (options the user did not give)."""
    given = {k: v for k, v in changes.items() if v is not None}
    return replace(config, **given) if given else config


def given_fields(**changes: Any) -> frozenset[str]:
    """Names of the options the user gave (the CLI passes None for the others)."""
    return frozenset(k for k, v in changes.items() if v is not None)


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is None or not math.isfinite(value) or value <= 0:  # NaN: `nan <= 0` is False
            raise IslError(f"--{name.replace('_', '-')} must be positive and finite, got {value}")


def _workers(cfg: Any) -> None:
    if cfg.num_workers < 0:
        raise IslError(f"--workers must not be negative, got {cfg.num_workers}")


def _finite_at_least_zero(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _positive_float(cfg: Any, *names: str) -> None:
    _positive(cfg, *names)
