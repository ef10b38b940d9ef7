"""Run under torchrun by test_distributed.py: train one epoch data-parallel, then compare every rank's bank.

Usage: torchrun --nproc_per_node=2 tests/ddp_probe.py DATA OUT REPORT
Writes REPORT (rank 0): {"world": W, "identical": bool, "max_abs_diff": float}.
"""

import json
import sys
from pathlib import Path

import torch

from isl_cli import distributed
from isl_cli.config import FeaturesConfig
from isl_cli.engine import features as stage
from isl_cli.engine import features_state

data, out, report = map(Path, sys.argv[1:4])
_, device = distributed.setup("cpu")  # joins the torchrun group
banks = []
real_save = features_state.save


def spy(state, path, complete, fingerprint, data_dir):
    banks.append(state.bank.memory.clone())  # this rank's own bank, as held in memory
    return real_save(state, path, complete, fingerprint, data_dir)


features_state.save = spy
config = FeaturesConfig(width=0.0625, low_dim=16, batch_size=48, epochs=1, eval_every=1, eval_k=20, num_workers=0)
stage.train_features(stage.FeaturesJob(config=config, data_dir=data, out=out, device=device, progress=False))
ctx = distributed.context()
gathered = [torch.empty_like(banks[-1]) for _ in range(ctx.world)]
torch.distributed.all_gather(gathered, banks[-1])
if ctx.is_main:
    diff = max((g - gathered[0]).abs().max().item() for g in gathered)
    identical = all(torch.equal(g, gathered[0]) for g in gathered)
    report.write_text(json.dumps({"world": ctx.world, "identical": identical, "max_abs_diff": diff}))
distributed.teardown()
