"""Benchmark: chunked weighted kNN vs the bare similarity matmul it cannot avoid.

Workload: 10,000 queries x 50,000 keys, D = 128, k = 200, 10 classes, T = 0.1
(a CIFAR-sized evaluation). The baseline is `queries_chunk @ keys_chunk.T`
over the SAME chunking that `weighted_knn` uses (query_chunk x key_chunk
blocks, results discarded), so the ratio measures what top-k, the merge and the
class vote add on top of the matmul. Target: ratio <= 2 (PASS/FAIL is judged
against this plain `@` baseline). A stricter baseline is printed too: the same
blocks written by `torch.mm(..., out=buffer)` into one reused buffer, as
`weighted_knn` itself does (on a CPU a fresh 200 MB block per matmul costs
page faults that the reused buffer avoids). Each timing is the best of
`--repeats` runs, the three workloads interleaved (the machine may be shared).

Usage: python benchmarks/bench_knn.py [--device cpu|cuda] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from isl_cli.knn import DEFAULT_KEY_CHUNK, DEFAULT_QUERY_CHUNK, weighted_knn

TARGET_RATIO = 2.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(fns: list, device: torch.device, repeats: int) -> list[float]:
    """Shortest wall time of each function over `repeats` interleaved rounds (after one warm-up each)."""
    best = [float("inf")] * len(fns)
    for round_index in range(repeats + 1):
        for slot, fn in enumerate(fns):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_index > 0:  # round 0 warms up
                best[slot] = min(best[slot], time.perf_counter() - start)
    return best


def chunked_matmul(queries: torch.Tensor, keys: torch.Tensor, query_chunk: int, key_chunk: int) -> None:
    """The similarity blocks alone, in weighted_knn's chunking (a fresh tensor per block)."""
    for qs in range(0, queries.shape[0], query_chunk):
        for ks in range(0, keys.shape[0], key_chunk):
            queries[qs : qs + query_chunk] @ keys[ks : ks + key_chunk].T  # (q, c), discarded


def chunked_matmul_into_buffer(queries: torch.Tensor, keys: torch.Tensor, query_chunk: int, key_chunk: int) -> None:
    """The same blocks written into one reused buffer."""
    buffer = torch.empty(min(query_chunk, queries.shape[0]) * min(key_chunk, keys.shape[0]), device=queries.device)
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]  # (q, D)
        for ks in range(0, keys.shape[0], key_chunk):
            block = keys[ks : ks + key_chunk]  # (c, D)
            torch.mm(q, block.T, out=buffer[: q.shape[0] * block.shape[0]].view(q.shape[0], block.shape[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (0: torch's default)")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--query-chunk", type=int, default=DEFAULT_QUERY_CHUNK)
    parser.add_argument("--key-chunk", type=int, default=DEFAULT_KEY_CHUNK)
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=gen), dim=1).to(device)
    keys = torch.nn.functional.normalize(torch.randn(args.keys, args.dim, generator=gen), dim=1).to(device)
    query_labels = torch.randint(0, args.classes, (args.queries,), generator=gen).to(device)
    key_labels = torch.randint(0, args.classes, (args.keys,), generator=gen).to(device)

    matmul_s, buffered_s, knn_s = best_times(
        [
            lambda: chunked_matmul(queries, keys, args.query_chunk, args.key_chunk),
            lambda: chunked_matmul_into_buffer(queries, keys, args.query_chunk, args.key_chunk),
            lambda: weighted_knn(
                queries, query_labels, keys, key_labels, (args.k,), 0.1,
                query_chunk=args.query_chunk, key_chunk=args.key_chunk,
            ),
        ],
        device,
        args.repeats,
    )
    ratio = knn_s / matmul_s
    print(
        f"device={device} threads={torch.get_num_threads()} Q={args.queries} N={args.keys} D={args.dim} "
        f"k={args.k} C={args.classes} chunks={args.query_chunk}x{args.key_chunk}"
    )
    print(f"similarity matmul alone, q @ k.T (same chunking):   {matmul_s:.3f} s")
    print(f"similarity matmul alone, mm into a reused buffer:   {buffered_s:.3f} s")
    print(f"weighted_knn (matmul + top-k + merge + vote):       {knn_s:.3f} s")
    print(f"ratio vs the reused-buffer matmul: {knn_s / buffered_s:.2f} (for information)")
    print(f"ratio vs q @ k.T {ratio:.2f} (target <= {TARGET_RATIO:.1f}): {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")


if __name__ == "__main__":
    main()
