"""ISL loss forward+backward versus its loop oracle and the plain instance loss.

Run: python benchmarks/bench_loss.py   (about a minute on 2 CPU cores)

Setting: N = 50,000 images, D = 128, B = 128, T = 0.1, a graph where 85% of
the images have neighbours (2 on average). Every timing includes the logits
matmul and its backward with respect to the features. Targets:
  ISL loss >= 25x faster than the loop oracle (tests/oracles.py),
  ISL loss <= 1.5x the plain instance loss,
  NeighborGraph.add_pairs for one mining batch (1,280 pairs) <= 5 ms.
The machine may be shared: each figure is the minimum over interleaved
repeats (the least disturbed run), with medians alongside. On a busy 2-core
box every multi-threaded operation can wait a scheduler slice for its second
thread, which penalises code with more (even small) operations; so the loss
ratio is also measured with one thread in CPU time, and add_pairs with one
thread.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import oracles  # noqa: E402

from isl_cli.losses import instance_loss, isl_loss  # noqa: E402
from isl_cli.neighbors import NeighborGraph  # noqa: E402

NUM_ITEMS, DIM, BATCH, TEMPERATURE = 50_000, 128, 128, 0.1
SHARE_WITH_NEIGHBOURS = 0.85


def make_benchmark_graph(num_items: int, generator: torch.Generator) -> tuple[NeighborGraph, Tensor]:
    """85% of images get 2 neighbours: each chosen image is paired with two others of the chosen set."""
    chosen = torch.randperm(num_items, generator=generator)[: int(SHARE_WITH_NEIGHBOURS * num_items)]  # (C,)
    partner = chosen[torch.randperm(chosen.numel(), generator=generator)]  # (C,)
    pairs = torch.stack([chosen, partner], dim=1)  # (C, 2): every chosen image appears twice
    return NeighborGraph.from_pairs(pairs, num_items), pairs


def time_once(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Run each function `repeats` times, alternating, after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, clock))
    return times


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    generator = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(NUM_ITEMS, DIM, generator=generator), dim=1)  # (N, D)
    features = F.normalize(torch.randn(BATCH, DIM, generator=generator), dim=1)  # (B, D)
    indices = torch.randint(0, NUM_ITEMS, (BATCH,), generator=generator)  # (B,)
    graph, pairs = make_benchmark_graph(NUM_ITEMS, generator)
    degrees = graph.degrees()
    print(
        f"N={NUM_ITEMS} D={DIM} B={BATCH}: {float((degrees > 1).double().mean()):.0%} of images have neighbours, "
        f"{float((degrees[degrees > 1] - 1).double().mean()):.2f} on average; "
        f"{int((degrees[indices] > 1).sum())}/{BATCH} batch rows have neighbours; torch threads={torch.get_num_threads()}"
    )

    def isl_step() -> None:
        f = features.clone().requires_grad_(True)
        out = isl_loss((f / TEMPERATURE) @ memory.t(), indices, graph, memory, TEMPERATURE)
        out["loss"].backward()

    def plain_step() -> None:
        f = features.clone().requires_grad_(True)
        instance_loss((f / TEMPERATURE) @ memory.t(), indices).backward()

    times = interleaved({"isl": isl_step, "plain": plain_step}, repeats=20)
    isl_best, plain_best = min(times["isl"]), min(times["plain"])
    ratio = isl_best / plain_best
    print(
        f"wall clock, {torch.get_num_threads()} threads, min of 20 interleaved runs:\n"
        f"  ISL loss fwd+bwd:      {isl_best * 1e3:8.1f} ms (median {statistics.median(times['isl']) * 1e3:.1f})\n"
        f"  instance loss fwd+bwd: {plain_best * 1e3:8.1f} ms (median {statistics.median(times['plain']) * 1e3:.1f})\n"
        f"  ISL / instance = {ratio:.2f}x (target <= 1.5x) {verdict(ratio <= 1.5)}"
    )
    # The same with one thread, in CPU time: less disturbed by other work on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = interleaved({"isl": isl_step, "plain": plain_step}, repeats=12, clock=time.process_time)
    torch.set_num_threads(threads)
    cpu_ratio = min(cpu["isl"]) / min(cpu["plain"])
    print(
        f"CPU time, 1 thread, min of 12: ISL {min(cpu['isl']) * 1e3:.1f} ms, instance {min(cpu['plain']) * 1e3:.1f} ms"
        f" -> {cpu_ratio:.2f}x (target <= 1.5x) {verdict(cpu_ratio <= 1.5)}"
    )

    # The oracle is slow: time it on a few rows and extrapolate to a batch of B. Its per-call
    # set-up (a float64 copy of the bank) is timed on its own and counted once, not per row.
    sets = oracles.neighbour_sets(pairs.tolist(), NUM_ITEMS)
    rows = 8
    t_rows = min(
        time_once(lambda: oracles.isl_loss_oracle(features, indices, sets, memory, TEMPERATURE, rows=rows))
        for _ in range(2)
    )
    setup = min(time_once(lambda: memory.double()) for _ in range(3))
    per_row = max(t_rows - setup, 0.0) / rows
    oracle_batch = setup + BATCH * per_row
    speedup = oracle_batch / isl_best
    print(
        f"loop oracle: {t_rows * 1e3:.0f} ms for {rows} rows (set-up {setup * 1e3:.0f} ms) -> "
        f"extrapolated {oracle_batch:.2f} s per batch of {BATCH} ({per_row * 1e3:.1f} ms per row)\n"
        f"ISL vs loop oracle: {speedup:.0f}x faster (target >= 25x) {verdict(speedup >= 25)}"
    )

    # One mining batch into the graph: 1,280 proposed pairs (B = 128 times k = 10).
    mining_i = torch.randint(0, NUM_ITEMS, (BATCH * 10,), generator=generator)
    mining_j = torch.randint(0, NUM_ITEMS, (BATCH * 10,), generator=generator)
    base_keys = graph.keys

    def add_batch() -> None:
        NeighborGraph._unchecked(NUM_ITEMS, base_keys).add_pairs(mining_i, mining_j)

    for threads in (torch.get_num_threads(), 1):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        add_times = interleaved({"add": add_batch}, repeats=30)["add"]
        torch.set_num_threads(previous)
        add_best = min(add_times)
        print(
            f"add_pairs, {threads} thread(s) (1,280 pairs into {graph.num_entries() // 2} pairs): {add_best * 1e3:.2f} ms "
            f"(median {statistics.median(add_times) * 1e3:.2f}; target <= 5 ms) {verdict(add_best <= 5e-3)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
