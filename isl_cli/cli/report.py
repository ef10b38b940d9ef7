"""`isl report RUN_DIR`: PNG figures of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isl_cli.bounds import Bounds
from isl_cli.cli.common import DeviceOpt, compute_device, console, within
from isl_cli.config import SEED_BOUNDS

QUERIES_BOUNDS = Bounds(1, 100, integer=True)


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `isl run` (or stage files named rR-STAGE.safetensors).", show_default=False)],
    queries: Annotated[int, typer.Option("--queries", help="Test images in the retrieval grid (at most 100).", callback=within(QUERIES_BOUNDS, "--queries"))] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Which test images the retrieval grid and the embedding map show; the t-SNE's seed.", callback=within(SEED_BOUNDS, "--seed"))] = 0,
    map_points: Annotated[int, typer.Option("--map-points", help="Test images on the embedding map (a random subset fixed by --seed); 0: no map.")] = 2000,
    data: Annotated[Path | None, typer.Option("--data", help="Data set folder \\[default: the one the run's features record, relative to where they were trained].", show_default=False)] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw PNG figures of a run: kNN accuracy per epoch across rounds, the loss terms, neighbours per image and
    mined-pair precision per round, GAN losses, a grid of test images with their 10 nearest training images
    (green border: same label, red: different), and embedding.png: a 2-D t-SNE map of the final round's test
    embeddings coloured by class (scikit-learn t-SNE: about 6 s for 1,000 points, 12 s for 2,000, on 2 CPU cores).

    Both digests of every stage file are checked first: a corrupt file is refused before any figure is drawn."""
    from isl_cli.artifacts import refuse_corrupt
    from isl_cli.engine.report import write_report
    from isl_cli.errors import IslError

    if not run_dir.is_dir():
        raise IslError(f"{run_dir}: no such run folder")
    if map_points < 0:
        raise IslError(f"--map-points must not be negative, got {map_points}")
    for stage in ("features", "gan", "neighbors"):  # what the figures come from: both digests, before any figure
        for path in sorted(run_dir.glob(f"r*-{stage}.safetensors")):
            refuse_corrupt(path)
    for path in write_report(run_dir, device=compute_device(device), num_queries=queries, seed=seed, data_dir=data,
                             map_points=map_points):
        console.print(f"wrote {path}")
