"""Choose the compute device once; everything else receives it."""

from __future__ import annotations

import torch

from isl_cli.errors import IslError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """Map `auto|cpu|cuda|mps` (or `cuda:N`) to an available torch device.

    `auto` picks CUDA when present, then Apple's MPS, else the CPU. It only
    resolves: joining a torchrun process group is the command's first step
    (`isl_cli.cli.common.compute_device`), not a side effect of this getter.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise IslError(f"unknown device {name!r}; choose one of auto, cpu, cuda, mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise IslError("--device cuda was asked for, but no CUDA device is available (try --device auto)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise IslError("--device mps was asked for, but MPS is not available (try --device auto)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise IslError(f"bad device {name!r}: {exc}") from None

