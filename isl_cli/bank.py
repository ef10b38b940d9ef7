"""The memory bank of docs/method.md section 2: one feature row per training image.

Like MoCo's queue, the bank is a registered buffer changed only by an explicit
no-grad `update` after the optimiser step; the loss is computed elsewhere from
`logits`, which always read the rows as they were before the update.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class MemoryBank(torch.nn.Module):
    """An (N, D) float32 bank with a non-parametric softmax and a momentum update.

    Attributes:
        memory: (N, D) float32 registered buffer (saved in `state_dict`).
        momentum: m in M_i <- normalise(m * M_i + (1 - m) * f_i).
    """

    memory: Tensor

    def __init__(
        self,
        num_items: int,
        dim: int = 128,
        momentum: float = 0.5,
        generator: torch.Generator | None = None,
        device: Any = None,
    ):
        """Initialise uniformly in [-s, s], s = 1 / sqrt(D / 3); rows are not normalised.

        Args:
            num_items: N >= 1, the number of training images.
            dim: D >= 1, the feature size.
            momentum: m in [0, 1].
            generator: random generator for the initial values; the values are
                drawn on its device and then moved to `device`.
            device: where the bank lives.

        Raises:
            ValueError: on a bad size or momentum.
        """
        super().__init__()
        _check_positive_int("num_items", num_items)
        _check_positive_int("dim", dim)
        _check_momentum(momentum)
        self.momentum = float(momentum)
        bound = 1.0 / math.sqrt(dim / 3.0)
        draw_device = generator.device if generator is not None else device
        values = torch.rand(num_items, dim, generator=generator, device=draw_device)  # (N, D) in [0, 1)
        memory = values.mul_(2.0 * bound).sub_(bound).to(device)  # (N, D) in [-s, s)
        self.register_buffer("memory", memory)

    @classmethod
    def from_memory(cls, memory: Tensor, momentum: float = 0.5) -> MemoryBank:
        """Wrap an existing (N, D) bank (e.g. read from a checkpoint); stored as float32.

        Raises:
            ValueError: if `memory` is not a non-empty 2-D floating tensor.
        """
        if not isinstance(memory, Tensor) or memory.dim() != 2 or not memory.dtype.is_floating_point:
            raise ValueError(f"memory must be a 2-D floating tensor, got {memory!r:.80}")
        if memory.shape[0] < 1 or memory.shape[1] < 1:
            raise ValueError(f"memory must be non-empty, got shape {tuple(memory.shape)}")
        _check_momentum(momentum)
        bank = cls.__new__(cls)
        torch.nn.Module.__init__(bank)
        bank.momentum = float(momentum)
        bank.register_buffer("memory", memory.detach().to(torch.float32).contiguous().clone())
        return bank

    @property
    def num_items(self) -> int:
        return int(self.memory.shape[0])

    @property
    def dim(self) -> int:
        return int(self.memory.shape[1])

    def logits(self, features: Tensor, temperature: float) -> Tensor:
        """z_ij = f_i . M_j / T over all N rows; gradient flows to `features` only.

        Args:
            features: (B, D) L2-normalised features.
            temperature: T > 0.

        Returns:
            (B, N) logits.
        """
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got {tuple(features.shape)}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return (features / temperature) @ self.memory.t()  # (B, N); scaling the small side is cheaper

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """M_i <- normalise(m * M_i + (1 - m) * f_i) for the batch rows, from the old rows.

        When an index appears more than once in the batch, every occurrence is
        computed from the old row and the LAST occurrence is written
        (deterministic on every device).

        Args:
            indices: (B,) int64 image indices.
            features: (B, D) features of those images (detached here).
        """
        if indices.dim() != 1 or features.dim() != 2 or features.shape != (indices.shape[0], self.dim):
            raise ValueError(
                f"update needs indices (B,) and features (B, {self.dim}), "
                f"got {tuple(indices.shape)} and {tuple(features.shape)}"
            )
        if indices.numel() == 0:
            return
        features = features.detach().to(self.memory.dtype)
        blended = self.memory[indices].mul_(self.momentum).add_(features, alpha=1.0 - self.momentum)  # (B, D)
        updated = F.normalize(blended, dim=1)  # (B, D)
        unique, inverse = torch.unique(indices, return_inverse=True)  # (U,), (B,)
        positions = torch.arange(indices.numel(), device=indices.device)  # (B,)
        last = torch.full_like(unique, -1).scatter_reduce_(0, inverse, positions, reduce="amax")  # (U,)
        self.memory.index_copy_(0, unique, updated[last])

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, dim={self.dim}, momentum={self.momentum}"


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_momentum(momentum: float) -> None:
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
