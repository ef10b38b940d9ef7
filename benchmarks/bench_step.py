"""A whole training step with the ISL loss versus the same step with the plain instance loss.

Run: python benchmarks/bench_step.py [--repeats 15] [--device cpu|cuda] [--width 0.25]
(about two minutes on 2 CPU cores)

Setting: resnet18 (32x32 variant, --width 0.25), D = 128, B = 128, a bank of
N = 50,000 rows, the graph of bench_loss.py (85% of images have 2
neighbours). The step is the stage's own `train_step`: forward, logits over
the bank, loss, backward, SGD step, bank update. Augmentation of the 128
stored uint8 images (the 32x32 recipe, parameters drawn on the CPU) is timed
on its own and reported as a share of the step. Targets:
  ISL step <= 1.15x the instance step;
  augmentation <= 10% of the ISL step.
Each figure is the minimum over interleaved repeats (the machine may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss import BATCH, DIM, NUM_ITEMS, interleaved, make_benchmark_graph, verdict  # noqa: E402

from isl_cli.bank import MemoryBank  # noqa: E402
from isl_cli.config import FeaturesConfig  # noqa: E402
from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, BatchAugment  # noqa: E402
from isl_cli.models.spec import BackboneSpec  # noqa: E402
from isl_cli.engine.features import train_step  # noqa: E402
from isl_cli.engine.features_state import FeaturesState  # noqa: E402

STEP_TARGET, AUGMENT_TARGET = 1.15, 0.10


def parse_args(doc: str, repeats: int, extra=None) -> argparse.Namespace:
    """--repeats, --device and --width, shared by the backbone benchmarks; `extra(parser)` adds a script's own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=0.25)
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def synchronizer(device: torch.device):
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return sync


def backbone_spec(width: float) -> BackboneSpec:
    """resnet18, 32x32 variant, D = 128."""
    return BackboneSpec(arch="resnet18", variant="cifar", width=width, low_dim=DIM, image_size=32,
                        mean=tuple(CIFAR_MEAN), std=tuple(CIFAR_STD))


def stored_batch(device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """B random uint8 32x32 images (B, 3, 32, 32) and B distinct image indices (B,)."""
    stored = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    return stored, torch.randperm(NUM_ITEMS, generator=generator)[:BATCH].to(device)


def make_state(device: torch.device, width: float, generator: torch.Generator, num_items: int = NUM_ITEMS) -> FeaturesState:
    """A freshly initialised round-1 stage state, as train-features builds it, with a bank of `num_items` rows."""
    cfg = FeaturesConfig(width=width)
    spec = backbone_spec(width)
    model = spec.build(device)
    model.train()
    bank = MemoryBank(num_items, DIM, momentum=cfg.bank_momentum, generator=generator, device=device)
    graph, _ = make_benchmark_graph(num_items, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    return FeaturesState(cfg=cfg, spec=spec, model=model, bank=bank, graph=graph.to(device), optimizer=optimizer,
                         scheduler=scheduler, round=1)


def main() -> int:
    args = parse_args(__doc__, repeats=15)
    device = torch.device(args.device)
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    state = make_state(device, args.width, generator)
    stored, indices = stored_batch(device, generator)  # (B, 3, 32, 32) uint8, (B,)
    augment = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    images = augment(stored, generator)  # (B, 3, 32, 32)
    with_neighbours = int((state.graph.degrees()[indices] > 1).sum())

    def isl_step() -> None:
        train_step(state, indices, images, plain=False)
        sync()

    def instance_step() -> None:
        train_step(state, indices, images, plain=True)
        sync()

    def augment_batch() -> None:
        augment(stored, generator)
        sync()

    print(f"resnet18 width {args.width}, N={NUM_ITEMS} D={DIM} B={BATCH} on {device}, "
          f"{with_neighbours}/{BATCH} batch rows have neighbours, torch threads={torch.get_num_threads()}")
    times = interleaved({"isl": isl_step, "instance": instance_step, "augment": augment_batch},
                        repeats=args.repeats)
    best = {name: min(values) for name, values in times.items()}
    step_ratio = best["isl"] / best["instance"]
    augment_share = best["augment"] / best["isl"]
    for name, label in (("isl", "ISL step"), ("instance", "instance step"), ("augment", "augment 128 images")):
        print(f"  {label:<20} {best[name] * 1e3:8.1f} ms (median {statistics.median(times[name]) * 1e3:.1f})")
    print(f"ISL step / instance step = {step_ratio:.3f}x (target <= {STEP_TARGET}x) {verdict(step_ratio <= STEP_TARGET)}")
    print(f"augmentation / ISL step = {augment_share:.1%} (target <= {AUGMENT_TARGET:.0%}) "
          f"{verdict(augment_share <= AUGMENT_TARGET)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
