"""Benchmark: the linear probe (weight-decay sweep + final fit) on CIFAR-sized features.

Workload: 50,000 x 512 random training features (a CIFAR-10 ResNet-18's pooled
features), 10 classes, 10,000 test rows. The labels depend linearly on the
features through a random map (plus noise), so the probe has something to
learn and L-BFGS runs its full iterations. Times the whole of
`train_linear_probe` (5 weight decays on 80% of the rows, then the chosen one
on all rows) with the default solver choice ("auto": L-BFGS at this size) and,
for comparison, with mini-batch SGD. Target: auto under 60 s on 2 CPU cores.
Each figure is the best of `--repeats` runs (the machine may be shared); the
median is printed too.

Usage: python benchmarks/bench_linear_probe.py [--device cpu|cuda] [--threads 2] [--repeats 1] [--rows 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from isl_cli.linear_probe import ProbeSettings, score, train_linear_probe

TARGET_SECONDS = 60.0


def synthetic(rows: int, dim: int, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU-like features (non-negative, offset: standardisation matters) and labels from a noisy linear map."""
    features = torch.randn(rows, dim, generator=generator).clamp_min(0)  # (N, D)
    mapping = torch.randn(dim, classes, generator=generator)  # (D, C)
    noise = 4.0 * torch.randn(rows, classes, generator=generator)  # (N, C)
    labels = (features @ mapping + noise).argmax(1)  # (N,)
    return features, labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--no-sgd", action="store_true", help="time only the default (auto) solver")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    features, labels = synthetic(args.rows + 10_000, args.dim, args.classes, generator)
    train_x, train_y = features[:args.rows].to(device), labels[:args.rows].to(device)
    test_x, test_y = features[args.rows:].to(device), labels[args.rows:].to(device)
    solvers = ["auto"] + ([] if args.no_sgd else ["sgd"])
    print(f"linear probe: {args.rows} x {args.dim} features, {args.classes} classes, device {device}, "
          f"{torch.get_num_threads()} threads")
    times: dict[str, list[float]] = {s: [] for s in solvers}
    for _ in range(args.repeats):
        for solver in solvers:
            settings = ProbeSettings(solver=solver)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = train_linear_probe(train_x, train_y, args.classes, settings)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[solver].append(time.perf_counter() - start)
            top1, top5 = score(result.classifier, test_x, test_y)
            print(f"  {solver:5s} ({result.solver}): {times[solver][-1]:6.1f} s, weight decay {result.weight_decay:g}, "
                  f"test top-1 {top1:.1f}%, top-5 {top5:.1f}%")
    for solver in solvers:
        best, median = min(times[solver]), statistics.median(times[solver])
        line = f"{solver}: best {best:.1f} s, median {median:.1f} s over {len(times[solver])} run(s)"
        if solver == "auto":
            line += f"  target < {TARGET_SECONDS:.0f} s: {'PASS' if best < TARGET_SECONDS else 'FAIL'}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
