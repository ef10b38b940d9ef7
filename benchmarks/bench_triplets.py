"""Triplet sampling (draws + nearest negative) versus its loop oracle.

Run: python benchmarks/bench_triplets.py   (under a minute on 2 CPU cores)

Setting: N = 50,000, D = 128, B = 128, K = 4,096 draws per image, the same
graph as bench_loss.py (85% of images with 2 neighbours). Target: the
vectorised sampler is at least 25x faster than the per-image loop oracle of
tests/oracles.py (timed on a few images and extrapolated to a batch).
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import oracles  # noqa: E402
from bench_loss import DIM, NUM_ITEMS, make_benchmark_graph, interleaved, time_once, verdict  # noqa: E402

from isl_cli.triplets import batch_triplets  # noqa: E402

BATCH, NUM_DRAWS = 128, 4096


def main() -> int:
    generator = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(NUM_ITEMS, DIM, generator=generator), dim=1)  # (N, D)
    anchors = F.normalize(torch.randn(BATCH, DIM, generator=generator), dim=1)  # (B, D)
    indices = torch.randint(0, NUM_ITEMS, (BATCH,), generator=generator)  # (B,)
    graph, pairs = make_benchmark_graph(NUM_ITEMS, generator)
    draw_generator = torch.Generator().manual_seed(1)
    print(f"N={NUM_ITEMS} D={DIM} B={BATCH} K={NUM_DRAWS}; torch threads={torch.get_num_threads()}")

    def sample() -> None:
        batch_triplets(anchors, indices, memory, graph, NUM_DRAWS, draw_generator)

    times = interleaved({"sample": sample}, repeats=10)["sample"]
    best = min(times)
    print(f"vectorised triplets: {best * 1e3:.1f} ms per batch (median {statistics.median(times) * 1e3:.1f})")

    sets = oracles.neighbour_sets(pairs.tolist(), NUM_ITEMS)
    rows = 3
    rng = random.Random(0)
    t_rows = min(
        time_once(lambda: oracles.triplet_negatives_oracle(anchors, indices, memory, sets, NUM_DRAWS, rng, rows=rows))
        for _ in range(2)
    )
    oracle_batch = t_rows * BATCH / rows  # no per-call set-up: the oracle's cost is all per image
    speedup = oracle_batch / best
    print(
        f"loop oracle: {t_rows * 1e3:.0f} ms for {rows} images -> extrapolated {oracle_batch:.2f} s per batch "
        f"of {BATCH} ({t_rows / rows * 1e3:.1f} ms per image)\n"
        f"vectorised vs loop oracle: {speedup:.0f}x faster (target >= 25x) {verdict(speedup >= 25)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
