"""Load an exported backbone with one call (no isl checkpoint machinery needed).

    from isl_cli.backbone_file import load_backbone
    model, info = load_backbone("backbone.safetensors")   # eval mode, CPU
    features = model(images)                                # (B, D), unit rows

`info` holds the architecture and the input normalisation (mean, std, image size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import read_artifact, require_finite
from isl_cli.models.spec import BackboneSpec, check_weights, load_module


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild an exported backbone from a `backbone` artifact; returns (model in eval mode, its description)."""
    art = read_artifact(path, "backbone", device=device)
    require_finite(path, art.tensors, "backbone tensor")
    spec = BackboneSpec.from_meta(art.meta.get("backbone", {}), str(path))
    check_weights(spec, art.tensors, str(path))
    model = spec.build(torch.device(device))
    load_module(model, art.tensors, str(path))
    return model.eval(), art.meta["backbone"]
