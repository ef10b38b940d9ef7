"""Run under torchrun by test_distributed.py: one DDP step (float64) against one process on the whole batch.

Usage: torchrun --nproc_per_node=2 tests/ddp_grad_probe.py REPORT
Writes REPORT (rank 0): {"max_rel_grad_diff": float, "max_rel_running_var_diff": float}.
"""

import copy
import json
import sys
from pathlib import Path

import torch

from isl_cli import distributed
from isl_cli.models.registry import build_backbone

report = Path(sys.argv[1])
ctx, device = distributed.setup("cpu")  # joins the torchrun group
torch.manual_seed(0)
model = build_backbone("resnet18", variant="cifar", low_dim=16, width=0.0625).double()
reference = copy.deepcopy(model)  # one process, plain BatchNorm, whole batch
parallel = distributed.wrap_model(model, device)  # DDP + batch norm over the global batch
generator = torch.Generator().manual_seed(1)
images = torch.randn(12, 3, 32, 32, generator=generator, dtype=torch.float64)  # (B, 3, 32, 32)
weights = torch.randn(12, 16, generator=generator, dtype=torch.float64)  # (B, D)
lo, hi = distributed.shard_bounds(0, 12)
# the engine's scaling: this rank's sum / B, times world (DDP averages over ranks)
((parallel(images[lo:hi]) * weights[lo:hi]).sum() / 12 * ctx.world).backward()
((reference(images) * weights).sum() / 12).backward()
pairs = list(zip(distributed.unwrap(parallel).parameters(), reference.parameters()))
grad = max(((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp(min=1e-30)).item() for p, q in pairs)
var = max(((a.running_var - b.running_var).abs().max() / b.running_var.abs().max()).item()
          for a, b in zip(distributed.unwrap(parallel).modules(), reference.modules())
          if isinstance(b, torch.nn.BatchNorm2d))
if ctx.is_main:
    report.write_text(json.dumps({"max_rel_grad_diff": grad, "max_rel_running_var_diff": var}))
distributed.teardown()
