"""`--threads N`: the intra-op threads torch computes with, set before any work starts.

Several torch processes on one machine must share its cores: OpenMP workers
spin-wait between parallel regions, so two 2-thread processes on 2 cores slow
each other down about 5x. Give each process (cores / processes) threads.
"""

from __future__ import annotations

from isl_cli.bounds import Bounds

THREADS_BOUNDS = Bounds(1, 4096, integer=True)


def apply_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads); None keeps torch's default (OMP_NUM_THREADS or the core count)."""
    if threads is None:
        return
    THREADS_BOUNDS.check("--threads", threads)
    import torch

    torch.set_num_threads(threads)
