"""Time the batch augmentation of 32x32 uint8 images (the 32x32 training recipe).

Usage: python benchmarks/bench_augment.py [--batch 128] [--size 32] [--repeats 50] [--device cpu]
                                         [--threads N] [--profile]

Prints the median time per batch (parameter sampling on the CPU generator plus
the augmentation on the device), the images per second and the process CPU
time per batch, and the same for the evaluation path (normalise only).
--profile then prints torch.profiler's operators of `apply` (sampling excluded),
per batch, by self time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, BatchAugment, normalize


def _median_seconds(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall-clock and median process CPU seconds of one call (CPU time is
    the steadier figure on a shared machine; it sums over torch's threads)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up
        fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--profile", action="store_true", help="then print the operators of `apply` per batch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8,
                           generator=generator).to(device)  # (B, 3, H, W)
    augment = BatchAugment(args.size, CIFAR_MEAN, CIFAR_STD)

    timings = {
        "augment": _median_seconds(lambda: augment(images, generator), args.repeats, device),
        "normalize": _median_seconds(lambda: normalize(images, CIFAR_MEAN, CIFAR_STD), args.repeats, device),
    }
    print(f"device {device}, {torch.get_num_threads()} CPU threads, batch {args.batch} x 3 x {args.size} x {args.size} "
          f"uint8, median of {args.repeats}")
    for name, (wall, cpu) in timings.items():
        print(f"{name:10s}: {wall * 1e3:8.3f} ms/batch wall {args.batch / wall:10.0f} images/s   "
              f"({cpu * 1e3:.3f} ms process CPU time)")
    if args.profile:
        params = augment.sample(args.batch, args.size, args.size, generator)
        print_profile(lambda: augment.apply(images, params), args.repeats)


def print_profile(fn, repeats: int) -> None:
    """torch.profiler's operators of `repeats` calls of `fn`, by self time (totals divided by `repeats`)."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    print(f"operators of apply, per batch (self CPU time, mean of {repeats}):")
    for event in rows[:20]:
        print(f"  {event.key:28s} {event.self_cpu_time_total / repeats / 1e3:8.3f} ms  "
              f"{event.count / repeats:5.1f} calls")
    total = sum(e.self_cpu_time_total for e in rows) / repeats / 1e3
    print(f"  {'total':28s} {total:8.3f} ms")


if __name__ == "__main__":
    main()
