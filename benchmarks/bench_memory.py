"""Peak memory of one ISL loss step over the bank, measured at several N, fitted and extrapolated.

Run: python benchmarks/bench_memory.py [--batch 256] [--device cpu|cuda]
(about a minute on 2 CPU cores)

What is measured: the memory that the logits over all N bank rows, the ISL
loss (with the hard-positive term, every batch row having neighbours) and its
backward to the features add on top of the bank itself, for one batch. On
CPU it is the peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs) minus the resident set before the step, each N in a
fresh process; on CUDA it is torch.cuda.max_memory_allocated. The script
fits bytes = a * B * N + c and prints the prediction for the ImageNet
bank (N = 1,281,167) next to the model 3 * 4 * B * N bytes: logits, softmax
and the hard-positive logits are the only (B, N) fp32 buffers alive at the
peak (the backward reuses the last in place). Under --amp the loss still runs
in fp32, so the figure holds there too; the bank adds 4 * N * D bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

IMAGENET_N, DIM = 1_281_167, 128
SIZES = (50_000, 100_000, 200_000, 400_000)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(num_items: int, batch: int, device: torch.device) -> int:
    """Peak extra bytes of one ISL loss forward + backward at this N (run in a fresh process)."""
    from isl_cli.losses import isl_loss
    from isl_cli.neighbors import NeighborGraph

    generator = torch.Generator().manual_seed(0)
    memory = torch.empty(num_items, DIM).normal_(generator=generator)  # (N, D), no temporaries
    memory.div_(memory.norm(dim=1, keepdim=True))
    memory = memory.to(device)
    chosen = torch.arange(num_items)
    pairs = torch.stack([chosen, chosen.roll(1)], dim=1)  # (N, 2): every image has 2 neighbours
    graph = NeighborGraph.from_pairs(pairs, num_items).to(device)
    indices = torch.randperm(num_items, generator=generator)[:batch].to(device)  # (B,)
    features = torch.nn.functional.normalize(torch.randn(batch, DIM, generator=generator), dim=1).to(device)
    features.requires_grad_(True)

    def step() -> None:
        logits = (features / 0.1) @ memory.t()  # (B, N)
        isl_loss(logits, indices, graph, memory, 0.1)["loss"].backward()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
    step()
    return (_status_kib("VmHWM") - before) * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child is not None:
        print(json.dumps({"bytes": measure(args.child, args.batch, device)}))
        return 0

    rows = []
    for num_items in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(num_items), "--batch", str(args.batch),
                              "--device", args.device], check=True, capture_output=True, text=True).stdout
        peak = json.loads(out.strip().splitlines()[-1])["bytes"]
        rows.append((num_items, peak))
        print(f"N={num_items:>9,}  B={args.batch}: peak extra {peak / 2**20:8.1f} MiB "
              f"= {peak / (args.batch * num_items):.2f} bytes per B*N")
    xs = torch.tensor([float(args.batch * n) for n, _ in rows], dtype=torch.float64)
    ys = torch.tensor([float(b) for _, b in rows], dtype=torch.float64)
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    intercept = float(ys.mean() - slope * xs.mean())
    predicted = slope * args.batch * IMAGENET_N + intercept
    model = 12 * args.batch * IMAGENET_N
    print(f"fit: bytes = {slope:.2f} * B * N + {intercept / 2**20:.1f} MiB")
    print(f"N={IMAGENET_N:,} (ImageNet), B={args.batch}: predicted {predicted / 2**30:.2f} GiB; "
          f"model 3 x 4 bytes x B x N = {model / 2**30:.2f} GiB; the bank adds {4 * IMAGENET_N * DIM / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
