"""Named objects <-> flat tensor dicts for safetensors checkpoints, and seeds.

Modules, optimisers and schedulers are stored as flat `prefix.name` tensors
plus a JSON-able dict for their non-tensor state, so a checkpoint is one
safetensors file and never a pickle.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch

from isl_cli.errors import IslError


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (seed, stage, round, epoch, batch), stable across runs."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def generator_for(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from `parts`: the same parts give the same stream anywhere."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`prefix.key` -> tensor for every parameter and buffer of `module`."""
    return {f"{prefix}.{k}": v.detach() for k, v in module.state_dict().items()}


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state into tensors (`prefix.<param>.<key>`) and JSON (param groups)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value.detach()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any], what: str
) -> None:
    """Inverse of `optimizer_tensors` (tensors given without the prefix)."""
    groups = info.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise IslError(f"{what}: optimiser state does not fit this model")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    for index, entry in info.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise IslError(f"{what}: optimiser state does not fit this model ({exc})") from None


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A JSON-able copy of a scheduler's state dict."""
    return {k: v for k, v in scheduler.state_dict().items() if isinstance(v, (int, float, str, list, dict, bool, type(None)))}


def load_scheduler(scheduler: Any, state: Mapping[str, Any]) -> None:
    """Restore a scheduler from `scheduler_state` output."""
    merged = scheduler.state_dict()
    merged.update(state)
    scheduler.load_state_dict(merged)
