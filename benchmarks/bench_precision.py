"""Every stage's backbone pass in fp32 and on the fast path (bf16 autocast, channels-last), side by side.

Run: python benchmarks/bench_precision.py [--repeats 10] [--device cpu|cuda] [--width 0.25]
                                          [--amp auto|bf16] [--no-channels-last] [--threads N] [--profile]
(about three minutes on 2 CPU cores at width 0.25)

Setting: resnet18 (32x32 variant), D = 128, B = 128, N = 50,000 (--num-images;
5,000 for shapes and cifar10-mini), the graph of bench_loss.py. The bank, the
softmax over N and the ISL loss stay fp32 by design, so the larger N, the more
of the fast step they take (--profile shows the split). Each stage is timed with its own code, from stored uint8 images:
  train step       augmentation + train-features' `train_step` (forward, logits over
                   the bank, ISL loss, backward, SGD, bank update), round 1
  GAN / mining     augmentation + the backbone forward in eval mode, no grad: the
  forward          forward of every GAN batch and every mining batch (the same pass)
  recompute        un-augmented images, B = 256, eval mode, no grad: eval-knn
                   --recompute, export of embeddings, the kNN during training
  backbone step    the ceiling of the train step's ratio: the backbone's own forward,
  alone            backward and SGD step on an already augmented batch, with a plain
                   sum-of-squares loss (no augmentation, no bank, no ISL loss)
fp32 and fast run in one process, interleaved, each with its own model; each
figure is images/s from the minimum over the repeats (the machine may be
shared). Targets on an idle machine: the train step and the GAN/mining forward
at least 2x faster on the fast path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss import BATCH, NUM_ITEMS, interleaved, verdict  # noqa: E402
from bench_step import backbone_spec, make_state, parse_args, stored_batch, synchronizer  # noqa: E402

from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, BatchAugment, normalize  # noqa: E402
from isl_cli.engine import features  # noqa: E402
from isl_cli.precision import FP32, Precision, resolve  # noqa: E402
from isl_cli.threads import apply_threads  # noqa: E402

TARGET = 2.0
EVAL_BATCH = 256


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amp", default="auto", help="the fast path's --amp (auto or bf16)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    parser.add_argument("--num-images", type=int, default=NUM_ITEMS,
                        help="bank rows N [50,000 as CIFAR-10; shapes and cifar10-mini have 5,000]")
    parser.add_argument("--profile", action="store_true",
                        help="then print torch.profiler's table of 10 fast-path train steps (what is left)")


def stage_functions(precision: Precision, device: torch.device, width: float, stored: torch.Tensor,
                    indices: torch.Tensor, seed: int, num_items: int) -> dict[str, Callable[[], None]]:
    """The timed passes at one precision, each with its own freshly built model."""
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(seed)
    augment = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    state = make_state(device, width, generator, num_items)
    state.model = precision.prepare(state.model)
    state.precision = precision
    frozen = precision.prepare(backbone_spec(width).build(device).eval())
    plain = normalize(stored.repeat(2, 1, 1, 1)[:EVAL_BATCH], CIFAR_MEAN, CIFAR_STD)  # (256, 3, 32, 32) float
    bare = precision.prepare(backbone_spec(width).build(device).train())
    bare_sgd = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9)
    augmented = augment(stored, generator)  # (B, 3, 32, 32) float, drawn once

    def train_step() -> None:
        features.train_step(state, indices, augment(stored, generator), plain=False)
        sync()

    @torch.no_grad()
    def gan_forward() -> None:
        precision.forward(frozen, augment(stored, generator))  # (B, D)
        sync()

    @torch.no_grad()
    def recompute() -> None:
        precision.forward(frozen, plain)  # (256, D)
        sync()

    def backbone_step() -> None:
        loss = precision.forward(bare, augmented).square().sum()
        bare_sgd.zero_grad(set_to_none=True)
        loss.backward()
        bare_sgd.step()
        sync()

    return {"train step": train_step, "GAN / mining forward": gan_forward, "recompute forward": recompute,
            "backbone step alone": backbone_step}


def main() -> int:
    args = parse_args(__doc__, repeats=10, extra=options)
    apply_threads(args.threads)
    device = torch.device(args.device)
    fast = resolve(args.amp, args.channels_last, device)
    stored, indices = stored_batch(device, torch.Generator().manual_seed(0))  # (B, 3, 32, 32) uint8, (B,)
    indices = indices % args.num_images  # (B,) rows of a smaller bank (repeats are allowed)
    runs = {which: stage_functions(precision, device, args.width, stored, indices, seed=1, num_items=args.num_images)
            for which, precision in (("fp32", FP32), ("fast", fast))}
    fns = {(stage, which): fn for which, table in runs.items() for stage, fn in table.items()}
    print(f"resnet18 width {args.width}, B={BATCH} (recompute {EVAL_BATCH}), N={args.num_images} on {device}, "
          f"torch threads={torch.get_num_threads()}; fast path: {fast.describe()}")
    times = interleaved({f"{stage}|{which}": fn for (stage, which), fn in fns.items()}, repeats=args.repeats)
    ok = True
    print(f"  {'stage':<22} {'fp32 img/s':>11} {'fast img/s':>11} {'ratio':>7}   (medians: fp32 / fast)")
    for stage in runs["fp32"]:
        batch = EVAL_BATCH if stage.startswith("recompute") else BATCH
        best = {which: min(times[f"{stage}|{which}"]) for which in runs}
        median = {which: statistics.median(times[f"{stage}|{which}"]) for which in runs}
        ratio = best["fp32"] / best["fast"]
        if stage in ("train step", "GAN / mining forward"):
            ok &= ratio >= TARGET
        print(f"  {stage:<22} {batch / best['fp32']:11.0f} {batch / best['fast']:11.0f} {ratio:6.2f}x   "
              f"({batch / median['fp32']:.0f} / {batch / median['fast']:.0f})")
    print(f"train step and GAN/mining forward at least {TARGET}x faster on the fast path: {verdict(ok)}")
    if args.profile:
        print_profile(runs["fast"]["train step"])
    return 0


def print_profile(step: Callable[[], None], steps: int = 10) -> None:
    """torch.profiler's operators of `steps` fast-path train steps, by self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    raise SystemExit(main())
