"""What rebuilds a backbone: its description (stored in every artifact's metadata) and its weights.

No file I/O here: the artifacts layer reads the files, this module builds the
network from what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import math

import torch

from isl_cli.bounds import Bounds
from isl_cli.config import FeaturesConfig, field_bounds
from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from isl_cli.errors import IslError
from isl_cli.models.registry import build_backbone, input_size, variant_for_image_size

IMAGE_SIZE_BOUNDS = Bounds(1, 4096, integer=True)


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to rebuild a backbone and feed it: stored in artifact metadata."""

    arch: str
    variant: str
    width: float
    low_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_meta(self) -> dict[str, Any]:
        return {"arch": self.arch, "variant": self.variant, "width": self.width, "low_dim": self.low_dim,
                "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], source: str | None = None) -> "BackboneSpec":
        """The description stored in a file's metadata, every field checked (`source` names the file)."""
        prefix = f"{source}: " if source else ""
        try:
            spec = cls(arch=str(meta["arch"]), variant=str(meta["variant"]), width=float(meta["width"]),
                       low_dim=int(meta["low_dim"]), image_size=int(meta["image_size"]),
                       mean=tuple(float(v) for v in meta["mean"]), std=tuple(float(v) for v in meta["std"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise IslError(f"{prefix}backbone description in metadata is incomplete ({exc})") from None
        problem = spec.problem()
        if problem is not None:
            raise IslError(f"{prefix}backbone description in metadata is invalid: {problem}")
        return spec

    def problem(self) -> str | None:
        """What makes this description unbuildable (the ranges of the options that made it), or None."""
        try:
            expected = input_size(self.arch, self.variant, self.image_size if self.variant == "cifar" else None)
        except ValueError as exc:
            return str(exc)
        for name, value, bounds in (("width", self.width, field_bounds(FeaturesConfig, "width")),
                                    ("low_dim", self.low_dim, field_bounds(FeaturesConfig, "low_dim")),
                                    ("image_size", self.image_size, IMAGE_SIZE_BOUNDS)):
            if not bounds.contains(value):
                return f"{name} {value} is not {bounds.describe()}"
        if self.image_size != expected:
            return f"image_size {self.image_size}, but a {self.variant} {self.arch} takes {expected}"
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in self.mean + self.std) \
                or min(self.std) <= 0:
            return f"mean {list(self.mean)} and std {list(self.std)} must be 3 finite values each, std positive"
        return None

    def build(self, device: torch.device) -> torch.nn.Module:
        try:
            model = build_backbone(self.arch, variant=self.variant, low_dim=self.low_dim, width=self.width)
        except ValueError as exc:
            raise IslError(str(exc)) from None
        return model.to(device)


def resolve_spec(arch: str, width: float, low_dim: int, variant: str | None, split_header_meta: dict[str, Any]) -> BackboneSpec:
    """The backbone for a data set: its image size picks the variant unless told."""
    stored = split_header_meta.get("image_size")
    file_backed = split_header_meta.get("storage") == "files"
    if variant is None:
        variant = "imagenet" if file_backed or stored is None else variant_for_image_size(int(stored))
    if variant == "cifar":
        if stored is None:
            raise IslError("this data set is stored as files of varying size; re-run fetch-data with --size 32 "
                           "to use a 32x32 backbone, or use --variant imagenet")
        try:
            size = input_size(arch, "cifar", image_size=int(stored))
        except ValueError as exc:
            raise IslError(str(exc)) from None
        mean, std = CIFAR_MEAN, CIFAR_STD
    elif variant == "imagenet":
        size = input_size(arch, "imagenet")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise IslError(f"unknown variant {variant!r}; choose cifar or imagenet")
    return BackboneSpec(arch=arch, variant=variant, width=width, low_dim=low_dim, image_size=size,
                        mean=tuple(mean), std=tuple(std))


def check_weights(spec: BackboneSpec, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse stored weights that do not fit their description before any memory is spent on the network: the
    described backbone is built on PyTorch's meta device (nothing allocated) and its keys and shapes compared."""
    try:
        with torch.device("meta"):
            model = build_backbone(spec.arch, variant=spec.variant, low_dim=spec.low_dim, width=spec.width)
    except ValueError as exc:
        raise IslError(f"{what}: {exc}") from None
    _refuse_mismatch(model.state_dict(), tensors, what)


def load_module(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Load a state dict, turning a key or shape mismatch into an IslError."""
    _refuse_mismatch(module.state_dict(), tensors, what)
    module.load_state_dict(dict(tensors), strict=True)


def _refuse_mismatch(own: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise IslError(f"{what}: weights do not fit this architecture ({detail})")
    for key, value in tensors.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise IslError(f"{what}: weights do not fit this architecture (weight {key} has shape "
                           f"{list(value.shape)}, the model needs {list(own[key].shape)})")
