"""Data parallelism through torch.distributed: one process per device, started by torchrun.

`torchrun --nproc_per_node=G -m isl_cli <stage> ...` sets RANK / WORLD_SIZE /
LOCAL_RANK; `setup` then joins the process group (NCCL on GPUs, gloo on CPU)
and gives each rank its device. Without those variables everything here is a
no-op for a single process.

How a stage uses it:
* `--batch-size` is the GLOBAL batch: every rank draws the same permutation and
  augmentation parameters, and takes its contiguous slice of each batch
  (`shard_bounds`), so batches mean what they mean in one process.
* Features and indices are all-gathered in rank order, so every rank's memory
  bank receives the same update each step; mined pairs are all-gathered the
  same way, so every rank adds the same edges (mining runs on all ranks with
  gathered results).
* Batch norm is synchronised over the global batch (`sync_batch_norm`).
* Only rank 0 writes artifacts and logs; all ranks read checkpoints to resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from isl_cli.errors import IslError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CONTEXT = DistContext()


def context() -> DistContext:
    """The current context (single process unless `setup` joined a group)."""
    return _CONTEXT


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device_name: str) -> tuple[DistContext, torch.device] | None:
    """Join the torchrun process group if there is one; returns (context, this rank's device) or None."""
    global _CONTEXT
    if not launched_by_torchrun():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise IslError("--device cuda was asked for, but no CUDA device is available")
    backend = "nccl" if wants_cuda else "gloo"
    device = torch.device("cuda", local_rank) if wants_cuda else torch.device("cpu")
    if wants_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _CONTEXT = DistContext(rank=rank, world=world, local_rank=local_rank, backend=backend)
    return _CONTEXT, device


def teardown() -> None:
    """Leave the process group (end of the command)."""
    global _CONTEXT, _BN_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT, _BN_GROUP = DistContext(), None


def shard_bounds(start: int, end: int, ctx: DistContext | None = None) -> tuple[int, int]:
    """This rank's contiguous slice of the global batch [start, end)."""
    ctx = ctx or _CONTEXT
    size = end - start
    return start + size * ctx.rank // ctx.world, start + size * (ctx.rank + 1) // ctx.world


def barrier() -> None:
    if _CONTEXT.enabled:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order (first dims may differ)."""
    if not _CONTEXT.enabled:
        return tensor
    count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(_CONTEXT.world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(_CONTEXT.world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)])


def all_gather_with_offset(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`all_gather_cat`, plus where this rank's rows start in the result."""
    if not _CONTEXT.enabled:
        return tensor, 0
    gathered = all_gather_cat(tensor)
    sizes = all_gather_cat(torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device))
    return gathered, int(sizes[: _CONTEXT.rank].sum())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); identity for one process."""
    return _all_reduce(tensor, dist.ReduceOp.SUM if _CONTEXT.enabled else None)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (e.g. a Ctrl-C seen by one rank)."""
    if not _CONTEXT.enabled:
        return flag
    return bool(all_reduce_max(torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)).item())


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over ranks (on a copy); identity for one process."""
    return _all_reduce(tensor, dist.ReduceOp.MAX if _CONTEXT.enabled else None)


def _all_reduce(tensor: torch.Tensor, op) -> torch.Tensor:
    if not _CONTEXT.enabled:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=op)
    return out


def same_on_all_ranks(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is bit-identical on every rank (a cheap two-number checksum)."""
    if not _CONTEXT.enabled:
        return True
    flat = tensor.detach().reshape(-1).double()
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device).remainder_(997)
    mine = torch.stack([flat.sum(), (flat * weights).sum()])
    lowest, highest = mine.clone(), mine.clone()
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    dist.all_reduce(highest, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lowest, highest))


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """DistributedDataParallel over this rank's device, with batch norm over the global batch."""
    if not _CONTEXT.enabled:
        return model
    if sync_bn:
        model = sync_batch_norm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (for state dicts)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm statistics over the global batch: torch's SyncBatchNorm on GPUs, `GlobalBatchNorm` on CPU.

    Both keep the BatchNorm parameter and buffer names, so checkpoints stay interchangeable.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_batch_norm(model)


def _swap_batch_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        swapped = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        # the same Parameter and buffer objects, so an optimiser built before the swap still updates them
        if module.affine:
            swapped.weight, swapped.bias = module.weight, module.bias
        swapped.running_mean, swapped.running_var = module.running_mean, module.running_var
        swapped.num_batches_tracked = module.num_batches_tracked
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        module.add_module(name, _swap_batch_norm(child))
    return module


_BN_GROUP = None


def _bn_group():
    """A process group of its own for batch-norm statistics, so that their collectives (also run in the
    backward pass) never interleave with DDP's gradient all-reduces on the default group."""
    global _BN_GROUP
    if _BN_GROUP is None:
        _BN_GROUP = dist.new_group(backend=_CONTEXT.backend or None)
    return _BN_GROUP


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover every rank's part of the batch (works on gloo/CPU).

    Sums and sums of squares are all-reduced with the differentiable
    `torch.distributed.nn.functional.all_reduce`, so gradients flow across ranks
    exactly as in one process over the whole batch. Any input rank (2-D to 5-D).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _CONTEXT.enabled):
            return super().forward(x)
        dtype = x.dtype
        if dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # statistics in fp32 under bf16/fp16 autocast; fp32 and fp64 untouched
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        # two passes (mean, then squared deviations) as one process computes it: E[x^2] - E[x]^2 in fp32
        # loses digits when the mean is large against the spread
        sums = _sum_over_ranks(torch.cat([x.sum(dims), x.new_full((1,), float(x.numel() // x.shape[1]))]))
        count = sums[-1]
        mean = sums[:-1] / count  # (C,)
        centred = x - mean.reshape(shape)
        var = _sum_over_ranks((centred * centred).sum(dims)) / count  # (C,) biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(dtype)  # activations stay in the autocast dtype, as torch's batch norm gives them


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum) on the batch-norm group."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # the differentiable all_reduce is flagged deprecated, not yet replaced
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor, group=_bn_group())
